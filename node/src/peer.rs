//! The node-to-node protocol (ALPN `scopekeeper-peer/1`): every message names its scope, so many
//! scopes share one connection per peer pair. These types are serialized with postcard and are
//! versioned by the ALPN string.

use std::net::SocketAddr;
use std::sync::Arc;

use openraft::raft::{
    SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use scopekeeper_transport::{
    Error as TransportError, Pool, RecvStream, SendStream, limits, node_name,
};
use serde::{Deserialize, Serialize};

use scopekeeper_client::ApiError;
use scopekeeper_client::proto::{Request, Response};

use crate::directory::Route;
use crate::liveness::PeerLiveness;

use crate::policy::admission::Principal;
use crate::scope::types::{CommandResult, SetPolicy, SnapshotMeta, TxnResult, TypeConfig, Vote};
use crate::storage::ScopeId;
use crate::tree::Txn;

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// `replica` is the target's raft id: a node asked to hold a scope it does not have yet
    /// (a new anchor) opens an empty replica under that id and waits for a snapshot.
    /// Opens a replication session: the leader's AppendEntries requests follow on the same
    /// stream, the follower's answers come back in order (`scope::append_stream`).
    AppendStream {
        scope: ScopeId,
        replica: u64,
        /// Whether the target was added after the scope's creation (so it starts empty);
        /// a first member gets its state from the scope's creation and must wait for it.
        joining: bool,
    },
    Vote {
        scope: ScopeId,
        rpc: VoteRequest<TypeConfig>,
    },
    PreVote {
        scope: ScopeId,
        rpc: VoteRequest<TypeConfig>,
    },
    TransferLeader {
        scope: ScopeId,
        rpc: TransferLeaderRequest<TypeConfig>,
    },
    /// A snapshot follows on the same stream as `len` raw bytes.
    Snapshot {
        scope: ScopeId,
        replica: u64,
        joining: bool,
        vote: Vote,
        meta: SnapshotMeta,
        len: u64,
    },
    /// A client's transaction forwarded to the node believed to lead the scope, with the
    /// client's identity as the forwarding node established it.
    ProposeTxn {
        scope: ScopeId,
        principal: Principal,
        session: i64,
        txn: Txn,
        zxid_floor: i64,
    },
    /// A policy replacement forwarded to the scope's leader.
    ProposePolicy {
        scope: ScopeId,
        principal: Principal,
        set: SetPolicy,
    },
    /// A scope creation forwarded to the leader of the scope that governs `path` now.
    ProposeDelegation {
        scope: ScopeId,
        principal: Principal,
        path: String,
        policy: Option<SetPolicy>,
    },
    /// A node registry change forwarded to the root scope's leader.
    ProposeNodes {
        principal: Principal,
        change: scopekeeper_client::proto::NodeChange,
    },
    /// An operator's merge: seal `scope` to merge into its parent `into`, at its leader.
    ProposeSeal { scope: ScopeId, into: ScopeId },
    /// A sealed child scope's final state, forwarded to the leader of its parent `scope`.
    ProposeAbsorb {
        scope: ScopeId,
        absorb: Box<crate::scope::types::Absorb>,
    },
    /// A client request forwarded whole to a node that anchors the scope it concerns, by a
    /// node that does not. `hops` bounds how often it may be forwarded again.
    Client {
        principal: Principal,
        session: i64,
        request: Request,
        hops: u8,
    },
    /// Keepalives for sessions recorded in a session scope, for its leader: (id, timeout),
    /// from `holder`, which holds their clients; with `claim` (a resume) it takes them over.
    /// A node that does not lead passes it on to the leader it knows, `hops` more times.
    TouchSessions {
        scope: ScopeId,
        holder: u64,
        claim: bool,
        touches: Vec<(i64, i32)>,
        hops: u8,
    },
    /// Streams the scope's change feed (`FeedItem` frames) until the subscriber closes its
    /// side; the stream ends early if the subscriber fell behind.
    Subscribe { scope: ScopeId },
    /// Asks the leader for a log index that a linearizable read must wait for.
    ReadIndex { scope: ScopeId },
    /// Asks whether the node has joined a cluster, and what it knows of the asking node.
    Status { from: u64 },
    /// Node-level liveness, one per peer per tick, standing in for the heartbeats of every
    /// quiescent scope the two nodes share.
    Heartbeat { from: u64 },
    /// A scope's leader tells a node that its replica `replica` was removed from the scope's
    /// committed membership, and where the scope lives now.
    ReplicaRemoved {
        scope: ScopeId,
        replica: u64,
        route: Route,
    },
    /// The leader of an idle, fully replicated scope asks a follower to park its raft ticker.
    Quiesce {
        scope: ScopeId,
        leader: u64,
        term: u64,
        last_log_index: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    Vote(Result<VoteResponse<TypeConfig>, String>),
    TransferLeader(Result<TransferLeaderResponse<TypeConfig>, String>),
    Snapshot(Result<SnapshotResponse<TypeConfig>, String>),
    Txn(Result<TxnResult, Refusal>),
    /// The outcome of a policy change or delegation.
    Command(Result<CommandResult, Refusal>),
    Client(Box<ClientAnswer>),
    ReadIndex(Result<u64, Refusal>),
    /// Which touched sessions have ended or moved to another node.
    Touched(Result<crate::sessions::Touched, String>),
    Status(NodeStatus),
    Alive,
    /// Whether the follower parked its ticker (it did not if it disagrees about the leader,
    /// the term or the log).
    Quiesced(bool),
    /// Whether the node had that replica and retired it.
    Retired(bool),
    /// The request was malformed or named something this node does not have.
    Invalid(String),
}

/// A forwarded client request's response, and the route of the scope that served it, so the
/// forwarding node can go there directly next time.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClientAnswer {
    pub response: Response,
    pub served_by: Option<Route>,
}

/// Why a scope did not take a write or a read-index request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// This node does not lead the scope; the leader, if known, is given.
    NotLeader { leader: Option<(u64, String)> },
    /// Too many proposals are in flight on the leader.
    Throttled,
    /// The outcome is unknown (timeout, leader change after the entry was appended, shutdown).
    Unknown(String),
    /// Refused before it could be committed; nothing happened.
    Rejected(ApiError),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: u64,
    pub cluster: String,
    /// Whether the node's root scope has a membership (it belongs to a cluster).
    pub initialized: bool,
    pub voters: Vec<u64>,
    /// If this node leads the root scope: the highest log index the asking node has
    /// acknowledged. Non-zero means the asker held a log before, which an empty data
    /// directory has lost.
    pub acked_by_asker: Option<u64>,
}

/// Dials peers by address, proving their identity `node-<id>.<cluster>`.
pub struct Peers {
    pool: Pool,
    cluster: String,
    liveness: Arc<PeerLiveness>,
}

impl Peers {
    pub fn new(pool: Pool, cluster: &str) -> Self {
        Peers {
            pool,
            cluster: cluster.to_string(),
            liveness: Default::default(),
        }
    }

    /// When each peer was last heard from; every answer a call gets is recorded here.
    pub fn liveness(&self) -> &Arc<PeerLiveness> {
        &self.liveness
    }

    async fn resolve(addr: &str) -> Result<SocketAddr, TransportError> {
        if let Ok(sock) = addr.parse() {
            return Ok(sock);
        }
        tokio::net::lookup_host(addr)
            .await
            .ok()
            .and_then(|mut it| it.next())
            .ok_or_else(|| TransportError::Config(format!("cannot resolve peer address {addr}")))
    }

    /// One request, one response.
    pub async fn call(
        &self,
        target: u64,
        addr: &str,
        request: &PeerRequest,
    ) -> Result<PeerResponse, TransportError> {
        let sock = Self::resolve(addr).await?;
        let name = node_name(target, &self.cluster);
        let conn = self.pool.get(sock, &name).await?;
        let result = conn.call(request, limits::PEER_FRAME_BYTES_MAX).await;
        match &result {
            // Any answer, a refusal too, shows the peer's node at work.
            Ok(_) => self.liveness.heard(target),
            Err(e) if e.is_connectivity() => self.pool.invalidate(sock, &name).await,
            Err(_) => {}
        }
        result
    }

    /// A fresh stream to a peer, for transfers that do not fit one frame.
    pub async fn open_stream(
        &self,
        target: u64,
        addr: &str,
    ) -> Result<(SendStream, RecvStream), TransportError> {
        let sock = Self::resolve(addr).await?;
        let name = node_name(target, &self.cluster);
        let conn = self.pool.get(sock, &name).await?;
        let stream = conn.open_stream().await;
        if stream.is_err() {
            self.pool.invalidate(sock, &name).await;
        }
        stream
    }
}
