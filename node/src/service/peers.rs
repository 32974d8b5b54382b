//! The peer protocol's server side: raft RPCs, streamed snapshots, forwarded proposals, read
//! indexes and status, each for the scope it names.

use scopekeeper_transport::frame::{expect_frame, read_end, write_frame};
use scopekeeper_transport::limits::PEER_FRAME_BYTES_MAX;
use scopekeeper_transport::{Error as TransportError, RecvStream, SendStream};
use tokio::io::AsyncWriteExt;

use crate::limits;
use crate::node::Node;
use crate::peer::{ClientAnswer, NodeStatus, PeerRequest, PeerResponse};
use crate::scope::Scope;
use crate::scope::snapshot::SnapshotFile;
use std::sync::Arc;

pub(super) async fn refuse_unknown_peer(
    id: u64,
    mut send: SendStream,
) -> Result<(), TransportError> {
    let why = format!("node {id} is neither a configured peer nor a member of this cluster");
    tracing::warn!("refused a peer request: {why}");
    write_frame(&mut send, &PeerResponse::Invalid(why), PEER_FRAME_BYTES_MAX).await?;
    send.finish()
        .map_err(|_| TransportError::Closed("peer stream closed early".into()))
}

/// Serves one stream from a peer node; `from` is the node its certificate names.
pub(super) async fn serve_peer_stream(
    node: &Node,
    from: Option<u64>,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<(), TransportError> {
    let request: PeerRequest = match expect_frame(&mut recv, PEER_FRAME_BYTES_MAX).await {
        Ok(r) => r,
        Err(e) => {
            let _ = write_frame(
                &mut send,
                &PeerResponse::Invalid(e.to_string()),
                PEER_FRAME_BYTES_MAX,
            )
            .await;
            let _ = send.finish();
            return Err(e);
        }
    };
    let response = match request {
        PeerRequest::Snapshot {
            scope,
            replica,
            joining,
            vote,
            meta,
            len,
        } => {
            let target = node.scope_for_replica(scope, replica, joining).await;
            receive_snapshot(node, target, scope, vote, meta, len, &mut recv).await
        }
        PeerRequest::AppendStream {
            scope,
            replica,
            joining,
        } => {
            let target = node.scope_for_replica(scope, replica, joining).await;
            let hearing = from.map(|id| (node.0.peers.liveness().clone(), id));
            return crate::scope::append_stream::serve(target, hearing, send, recv).await;
        }
        PeerRequest::Subscribe { scope } => {
            crate::watches::serve_subscription(node, scope, &mut send).await?;
            return send
                .finish()
                .map_err(|_| TransportError::Closed("feed stream closed early".into()));
        }
        // One request per stream: its end comes with it.
        other => match read_end(&mut recv) {
            Ok(()) => handle_peer(node, other).await,
            Err(e) => PeerResponse::Invalid(e.to_string()),
        },
    };
    write_frame(&mut send, &response, PEER_FRAME_BYTES_MAX).await?;
    send.finish()
        .map_err(|_| TransportError::Closed("peer stream closed early".into()))
}

fn scope_of(node: &Node, scope: u64) -> Result<Arc<Scope>, String> {
    node.scope(scope).ok_or_else(|| {
        if node.is_started() {
            format!("node {} does not replicate scope {scope}", node.id())
        } else {
            format!("node {} is still starting", node.id())
        }
    })
}

/// A scope woken for raft traffic that needs its ticker: anything but an empty append, which
/// is the leader's last heartbeats (or a commit index) reaching a follower it just quiesced.
fn awake(node: &Node, scope: u64) -> Result<Arc<Scope>, String> {
    let s = scope_of(node, scope)?;
    s.wake();
    Ok(s)
}

async fn handle_peer(node: &Node, request: PeerRequest) -> PeerResponse {
    match request {
        PeerRequest::Vote { scope, rpc } => match awake(node, scope) {
            Ok(s) => PeerResponse::Vote(s.raft.vote(rpc).await.map_err(|e| e.to_string())),
            Err(e) => PeerResponse::Invalid(e),
        },
        PeerRequest::PreVote { scope, rpc } => match awake(node, scope) {
            Ok(s) => PeerResponse::Vote(s.raft.pre_vote(rpc).await.map_err(|e| e.to_string())),
            Err(e) => PeerResponse::Invalid(e),
        },
        PeerRequest::Heartbeat { .. } => PeerResponse::Alive,
        PeerRequest::ReplicaRemoved {
            scope,
            replica,
            route,
        } => match node.retire_removed(scope, replica, route).await {
            Ok(retired) => PeerResponse::Retired(retired),
            Err(e) => PeerResponse::Invalid(format!("{e:#}")),
        },
        PeerRequest::Quiesce {
            scope,
            leader,
            term,
            last_log_index,
        } => match scope_of(node, scope) {
            Ok(s) => PeerResponse::Quiesced(crate::liveness::follow_quiesce(
                &s,
                leader,
                term,
                last_log_index,
            )),
            Err(e) => PeerResponse::Invalid(e),
        },
        PeerRequest::TransferLeader { scope, rpc } => match awake(node, scope) {
            Ok(s) => PeerResponse::TransferLeader(
                s.raft
                    .handle_transfer_leader(rpc)
                    .await
                    .map_err(|e| e.to_string()),
            ),
            Err(e) => PeerResponse::Invalid(e),
        },
        PeerRequest::ProposeTxn {
            scope,
            principal,
            session,
            txn,
            zxid_floor,
        } => match scope_of(node, scope) {
            Ok(s) => PeerResponse::Txn(s.propose_txn(principal, session, txn, zxid_floor).await),
            Err(e) => PeerResponse::Invalid(e),
        },
        PeerRequest::ProposePolicy {
            scope,
            principal,
            set,
        } => match scope_of(node, scope) {
            Ok(s) => {
                let nodes = crate::placement::eligible(node).await;
                PeerResponse::Command(s.propose_policy(principal, set, nodes).await)
            }
            Err(e) => PeerResponse::Invalid(e),
        },
        PeerRequest::ProposeDelegation {
            scope,
            principal,
            path,
            policy,
        } => match scope_of(node, scope) {
            Ok(s) => {
                let nodes = crate::placement::eligible(node).await;
                PeerResponse::Command(s.propose_delegation(principal, path, policy, nodes).await)
            }
            Err(e) => PeerResponse::Invalid(e),
        },
        PeerRequest::ProposeSeal { scope, into } => match scope_of(node, scope) {
            Ok(s) => PeerResponse::Command(s.propose_seal(into).await),
            Err(e) => PeerResponse::Invalid(e),
        },
        PeerRequest::ProposeAbsorb { scope, absorb } => match scope_of(node, scope) {
            Ok(s) => PeerResponse::Command(s.propose_absorb(absorb).await),
            Err(e) => PeerResponse::Invalid(e),
        },
        PeerRequest::ProposeNodes { principal, change } => {
            match scope_of(node, crate::storage::ROOT_SCOPE) {
                Ok(s) => PeerResponse::Command(s.propose_nodes(principal, change).await),
                Err(e) => PeerResponse::Invalid(e),
            }
        }
        PeerRequest::Client {
            principal,
            session,
            request,
            hops,
        } => {
            let (response, served_by) =
                super::handle_routed(node, &principal, session, request, hops).await;
            PeerResponse::Client(Box::new(ClientAnswer {
                response,
                served_by,
            }))
        }
        PeerRequest::TouchSessions {
            scope,
            holder,
            claim,
            touches,
            hops,
        } => PeerResponse::Touched(
            crate::sessions::touch_here(node, scope, holder, claim, &touches, hops).await,
        ),
        PeerRequest::ReadIndex { scope } => match scope_of(node, scope) {
            Ok(s) => PeerResponse::ReadIndex(s.read_index().await),
            Err(e) => PeerResponse::Invalid(e),
        },
        PeerRequest::Status { from } => PeerResponse::Status(status(node, from)),
        PeerRequest::Snapshot { .. }
        | PeerRequest::Subscribe { .. }
        | PeerRequest::AppendStream { .. } => {
            PeerResponse::Invalid("a streaming request in the wrong place".into())
        }
    }
}

fn status(node: &Node, from: u64) -> NodeStatus {
    let config = &node.0.config;
    let Some(root) = node.root() else {
        return NodeStatus {
            id: config.id,
            cluster: config.cluster.clone(),
            initialized: false,
            voters: vec![],
            acked_by_asker: None,
        };
    };
    let acked_by_asker = root
        .metrics(|m| {
            let asker = m
                .membership_config
                .membership()
                .nodes()
                .find(|(_, n)| n.node == from)
                .map(|(replica, _)| *replica)?;
            m.replication.as_ref()?.get(&asker).cloned().flatten()
        })
        .map(|log_id| log_id.index());
    NodeStatus {
        id: config.id,
        cluster: config.cluster.clone(),
        initialized: root.is_initialized(),
        voters: root.voters(),
        acked_by_asker,
    }
}

async fn receive_snapshot(
    node: &Node,
    target: Result<Arc<Scope>, String>,
    scope: u64,
    vote: crate::scope::types::Vote,
    meta: crate::scope::types::SnapshotMeta,
    len: u64,
    recv: &mut RecvStream,
) -> PeerResponse {
    let s = match target {
        Ok(s) => s,
        Err(e) => return PeerResponse::Invalid(e),
    };
    s.wake();
    let dir = node.0.store.dir().join("snapshots").join("incoming");
    let path = dir.join(format!("{scope}-{:016x}.partial", rand::random::<u64>()));
    let received = async {
        tokio::fs::create_dir_all(&dir).await?;
        let mut file = tokio::fs::File::create(&path).await?;
        let mut remaining = len;
        let mut chunk = vec![0u8; limits::SNAPSHOT_CHUNK_BYTES];
        while remaining > 0 {
            let want = remaining.min(chunk.len() as u64) as usize;
            let n =
                tokio::time::timeout(limits::SNAPSHOT_IDLE_TIMEOUT, recv.read(&mut chunk[..want]))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "snapshot transfer stalled",
                        )
                    })?
                    .map_err(std::io::Error::other)?
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("snapshot ended {remaining} bytes early"),
                        )
                    })?;
            file.write_all(&chunk[..n]).await?;
            remaining -= n as u64;
        }
        file.sync_all().await?;
        Ok::<(), std::io::Error>(())
    }
    .await;
    let response = match received {
        Err(e) => PeerResponse::Snapshot(Err(format!("receiving snapshot: {e}"))),
        Ok(()) => {
            let snapshot = openraft::Snapshot {
                meta,
                snapshot: SnapshotFile { path: path.clone() },
            };
            PeerResponse::Snapshot(
                s.raft
                    .install_full_snapshot(vote, snapshot)
                    .await
                    .map_err(|e| e.to_string()),
            )
        }
    };
    let _ = tokio::fs::remove_file(&path).await;
    response
}
