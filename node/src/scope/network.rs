//! openraft's network for one scope, over the shared peer connections.

use std::future::Future;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendError,
    StreamAppendResult, TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{RaftNetworkFactory, RaftNetworkV2};
use scopekeeper_transport::Error as TransportError;
use scopekeeper_transport::frame::{expect_last_frame, write_frame};
use scopekeeper_transport::limits::PEER_FRAME_BYTES_MAX;
use tokio::io::AsyncReadExt;

use super::append_stream;
use super::snapshot::SnapshotFile;
use super::state_machine::ScopeView;
use super::types::{TypeConfig, Vote};
use crate::limits::{SNAPSHOT_CHUNK_BYTES, SNAPSHOT_IDLE_TIMEOUT};
use crate::peer::{PeerRequest, PeerResponse, Peers};
use crate::storage::ScopeId;

type StreamItem = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

#[derive(Clone)]
pub struct ScopeNetwork {
    pub scope: ScopeId,
    pub peers: Arc<Peers>,
    /// The scope's state, to tell first members from joining ones.
    pub view: ScopeView,
}

/// The way to one member of the group: its replica (raft) id, and the node that holds it.
pub struct PeerLink {
    scope: ScopeId,
    /// The target's raft id in this scope.
    replica: u64,
    /// The node holding it, whose certificate the connection checks.
    node: u64,
    addr: String,
    peers: Arc<Peers>,
    view: ScopeView,
}

impl RaftNetworkFactory<TypeConfig> for ScopeNetwork {
    type Network = PeerLink;

    async fn new_client(&mut self, target: u64, node: &super::types::AnchorNode) -> PeerLink {
        PeerLink {
            scope: self.scope,
            replica: target,
            node: node.node,
            addr: node.addr.clone(),
            peers: self.peers.clone(),
            view: self.view.clone(),
        }
    }
}

fn rpc_error(e: TransportError) -> RPCError<TypeConfig> {
    if e.is_connectivity() {
        RPCError::Unreachable(Unreachable::new(&e))
    } else {
        RPCError::Network(NetworkError::new(&e))
    }
}

fn remote_error(what: &str, message: String) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
        "{what}: {message}"
    ))))
}

impl PeerLink {
    /// Whether the target joined after the scope was created (and may start empty).
    fn joining(&self) -> bool {
        self.replica > self.view.read().genesis_high
    }

    async fn call(
        &self,
        request: PeerRequest,
        option: &RPCOption,
    ) -> Result<PeerResponse, RPCError<TypeConfig>> {
        match tokio::time::timeout(
            option.hard_ttl(),
            self.peers.call(self.node, &self.addr, &request),
        )
        .await
        {
            Ok(result) => result.map_err(rpc_error),
            Err(_) => Err(RPCError::Unreachable(Unreachable::new(
                &std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "node {} did not answer within {:?}",
                        self.node,
                        option.hard_ttl()
                    ),
                ),
            ))),
        }
    }

    /// One raft RPC: `pick` takes the expected answer out of the response, or hands back
    /// whatever else came.
    async fn rpc<T>(
        &self,
        what: &str,
        request: PeerRequest,
        option: &RPCOption,
        pick: impl FnOnce(PeerResponse) -> Result<Result<T, String>, PeerResponse>,
    ) -> Result<T, RPCError<TypeConfig>> {
        match pick(self.call(request, option).await?) {
            Ok(answer) => answer.map_err(|e| remote_error(what, e)),
            Err(other) => Err(remote_error(what, format!("unexpected answer {other:?}"))),
        }
    }

    async fn send_snapshot(
        &self,
        vote: Vote,
        snapshot: &openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>,
    ) -> Result<SnapshotResponse<TypeConfig>, TransportError> {
        let mut file = tokio::fs::File::open(&snapshot.snapshot.path)
            .await
            .map_err(|e| TransportError::io(&snapshot.snapshot.path, e))?;
        let len = file
            .metadata()
            .await
            .map_err(|e| TransportError::io(&snapshot.snapshot.path, e))?
            .len();
        let (mut send, mut recv) = self.peers.open_stream(self.node, &self.addr).await?;
        let header = PeerRequest::Snapshot {
            scope: self.scope,
            replica: self.replica,
            joining: self.joining(),
            vote,
            meta: snapshot.meta.clone(),
            len,
        };
        write_frame(&mut send, &header, PEER_FRAME_BYTES_MAX).await?;
        let mut chunk = vec![0u8; SNAPSHOT_CHUNK_BYTES];
        loop {
            let n = file
                .read(&mut chunk)
                .await
                .map_err(|e| TransportError::io(&snapshot.snapshot.path, e))?;
            if n == 0 {
                break;
            }
            tokio::time::timeout(SNAPSHOT_IDLE_TIMEOUT, send.write_all(&chunk[..n]))
                .await
                .map_err(|_| TransportError::Closed("snapshot transfer stalled".into()))?
                .map_err(|e| TransportError::Closed(e.to_string()))?;
        }
        send.finish()
            .map_err(|_| TransportError::Closed("stream closed while sending".into()))?;
        match expect_last_frame::<PeerResponse>(&mut recv, PEER_FRAME_BYTES_MAX).await? {
            PeerResponse::Snapshot(Ok(resp)) => Ok(resp),
            PeerResponse::Snapshot(Err(e)) | PeerResponse::Invalid(e) => {
                Err(TransportError::Malformed(e))
            }
            other => Err(TransportError::Malformed(format!(
                "unexpected answer to a snapshot: {other:?}"
            ))),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerLink {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        // openraft replicates through `stream_append`; a lone request goes the same way.
        let last = rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id);
        let mut answers = self
            .stream_append(futures::stream::iter([rpc]), option)
            .await?;
        match answers.next().await {
            Some(Ok(Ok(matching))) if matching == last => Ok(AppendEntriesResponse::Success),
            Some(Ok(Ok(matching))) => Ok(AppendEntriesResponse::PartialSuccess(matching)),
            Some(Ok(Err(StreamAppendError::Conflict(_)))) => Ok(AppendEntriesResponse::Conflict),
            Some(Ok(Err(StreamAppendError::HigherVote(vote)))) => {
                Ok(AppendEntriesResponse::HigherVote(vote))
            }
            Some(Err(e)) => Err(e),
            None => Err(remote_error(
                "append",
                "the follower ended the stream without an answer".into(),
            )),
        }
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, StreamItem>, RPCError<TypeConfig>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            let header = PeerRequest::AppendStream {
                scope: self.scope,
                replica: self.replica,
                joining: self.joining(),
            };
            let opened = append_stream::open(
                &self.peers,
                self.node,
                &self.addr,
                &header,
                input,
                option.hard_ttl(),
            )
            .await;
            let answers = match opened {
                Ok(answers) => answers,
                Err(e) => {
                    // openraft backs off inside the request stream, which a session that
                    // never opened has not polled: without this pause a down follower is
                    // retried in a busy loop (measured: 550,000 attempts in a minute).
                    tokio::time::sleep(option.soft_ttl()).await;
                    return Err(rpc_error(e));
                }
            };
            let answers = answers.map(|answered| match answered {
                Ok(Ok(result)) => Ok(result),
                Ok(Err(why)) => Err(remote_error("append", why)),
                Err(e) => Err(rpc_error(e)),
            });
            Ok(answers.boxed())
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let request = PeerRequest::Vote {
            scope: self.scope,
            rpc,
        };
        self.rpc("vote", request, &option, |r| match r {
            PeerResponse::Vote(answer) => Ok(answer),
            other => Err(other),
        })
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let request = PeerRequest::PreVote {
            scope: self.scope,
            rpc,
        };
        self.rpc("pre-vote", request, &option, |r| match r {
            PeerResponse::Vote(answer) => Ok(answer),
            other => Err(other),
        })
        .await
    }

    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let request = PeerRequest::TransferLeader {
            scope: self.scope,
            rpc,
        };
        self.rpc("transfer leader", request, &option, |r| match r {
            PeerResponse::TransferLeader(answer) => Ok(answer),
            other => Err(other),
        })
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        // No overall deadline: a large snapshot takes as long as it takes. Each chunk has an
        // idle timeout instead, and replication may cancel the transfer.
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = self.send_snapshot(vote, &snapshot) => result.map_err(|e| {
                if e.is_connectivity() {
                    StreamingError::Unreachable(Unreachable::new(&e))
                } else {
                    StreamingError::Network(NetworkError::new(&e))
                }
            }),
        }
    }
}
