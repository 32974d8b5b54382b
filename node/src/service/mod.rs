//! What a node answers: peers (`peers`: raft traffic, forwarded writes, read indexes, status)
//! and native clients (here). One stream per request; the first frame says what it is.

use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use scopekeeper_client::limits as client_limits;
use scopekeeper_client::proto::{ApiError, ErrorCode, Reply, Request, Response};
use scopekeeper_transport::frame::{expect_frame, write_frame};
use scopekeeper_transport::limits::CLIENT_FRAME_BYTES_MAX;
use scopekeeper_transport::{
    Alpn, Connection, Error as TransportError, Principal, RecvStream, SendStream,
};

use crate::limits;
use crate::node::Node;
use crate::peer::{PeerRequest, PeerResponse, Refusal};
use crate::scope::Scope;
use crate::scope::types::{CommandOutcome, CommandResult, SetPolicy, TxnResult};
use crate::tree::{Outcome, Txn};

mod peers;

use peers::{refuse_unknown_peer, serve_peer_stream};

pub async fn accept_loop(node: Node) {
    while let Some(incoming) = node.0.endpoint.accept().await {
        let node = node.clone();
        tokio::spawn(async move {
            match node.0.endpoint.handshake(incoming).await {
                Ok(conn) => serve_connection(node, conn).await,
                Err(e) => tracing::warn!("{e}"),
            }
        });
    }
}

async fn serve_connection(node: Node, conn: Connection) {
    loop {
        let (send, recv) = match conn.accept_stream().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(remote = %conn.remote_address(), "connection ended: {e}");
                return;
            }
        };
        let node = node.clone();
        let principal = conn.principal.clone();
        let alpn = conn.alpn;
        tokio::spawn(async move {
            let result = match (alpn, &principal) {
                (Alpn::Peer, Principal::Node { id }) if !node.knows_peer(*id) => {
                    refuse_unknown_peer(*id, send).await
                }
                (Alpn::Peer, _) => serve_peer_stream(&node, send, recv).await,
                (Alpn::Client, _) => serve_client_stream(&node, &principal, send, recv).await,
            };
            if let Err(e) = result {
                tracing::debug!(?principal, "stream failed: {e}");
            }
        });
    }
}

// ---- native clients ----

async fn serve_client_stream(
    node: &Node,
    principal: &Principal,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<(), TransportError> {
    let response: Response =
        match expect_frame::<Request>(&mut recv, client_limits::REQUEST_BYTES_MAX).await {
            Ok(request) => handle_client(node, &policy_principal(principal), request).await,
            Err(e) => Err(ApiError::new(
                ErrorCode::MarshallingError,
                format!("unreadable request: {e}"),
            )),
        };
    match write_frame(&mut send, &response, CLIENT_FRAME_BYTES_MAX).await {
        Err(TransportError::FrameTooLarge { len, cap }) => {
            let too_large: Response = Err(ApiError::new(
                ErrorCode::MarshallingError,
                format!("the reply of {len} bytes exceeds the {cap}-byte limit of one frame"),
            ));
            write_frame(&mut send, &too_large, CLIENT_FRAME_BYTES_MAX).await?;
        }
        other => other?,
    }
    send.finish()
        .map_err(|_| TransportError::Closed("client stream closed early".into()))
}

fn starting(node: &Node) -> ApiError {
    ApiError::new(
        ErrorCode::ConnectionLoss,
        format!("node {} is still starting; retry", node.id()),
    )
}

/// The identity policies see: a client certificate's CN and roles, or a node's name.
pub fn policy_principal(principal: &Principal) -> crate::policy::admission::Principal {
    match principal {
        Principal::Client { id, roles } => crate::policy::admission::Principal {
            id: id.clone(),
            roles: roles.clone(),
        },
        Principal::Node { id } => crate::policy::admission::Principal {
            id: format!("node-{id}"),
            roles: vec!["node".into()],
        },
    }
}

/// The scope rooted exactly at `path`. Only the root scope exists until delegation arrives.
fn scope_rooted_at<'a>(node: &'a Node, root: &'a Scope, path: &str) -> Result<&'a Scope, ApiError> {
    crate::tree::checked_path(path)?;
    if path != "/" {
        return Err(ApiError::new(
            ErrorCode::NoNode,
            format!(
                "no scope is rooted at {path}; node {} has one scope, rooted at /",
                node.id()
            ),
        ));
    }
    Ok(root)
}

pub async fn handle_client(
    node: &Node,
    principal: &crate::policy::admission::Principal,
    request: Request,
) -> Response {
    let root = node.root().ok_or_else(|| starting(node))?;
    match request {
        Request::Write(op) => match propose_txn(node, root, Txn::Single(op), principal)
            .await?
            .outcome
        {
            Outcome::Single(r) => r.map(Reply::Write),
            Outcome::Multi(_) => Err(ApiError::new(
                ErrorCode::SystemError,
                "a single op produced a multi result",
            )),
        },
        Request::Multi(ops) => {
            if ops.len() > client_limits::MULTI_OPS_MAX {
                return Err(ApiError::new(
                    ErrorCode::BadArguments,
                    format!(
                        "a multi of {} ops exceeds the limit of {}",
                        ops.len(),
                        client_limits::MULTI_OPS_MAX
                    ),
                ));
            }
            match propose_txn(node, root, Txn::Multi(ops), principal)
                .await?
                .outcome
            {
                Outcome::Multi(slots) => Ok(Reply::Multi(slots)),
                Outcome::Single(_) => Err(ApiError::new(
                    ErrorCode::SystemError,
                    "a multi produced a single result",
                )),
            }
        }
        Request::GetData { path } => {
            linearize(node, root).await?;
            let (data, stat) = root.view().read().tree.get_data(&path)?;
            Ok(Reply::Data { data, stat })
        }
        Request::Exists { path } => {
            linearize(node, root).await?;
            Ok(Reply::Exists(root.view().read().tree.exists(&path)?))
        }
        Request::GetChildren { path } => {
            linearize(node, root).await?;
            let (children, stat) = root.view().read().tree.get_children(&path)?;
            Ok(Reply::Children { children, stat })
        }
        Request::NodeInfo => Ok(Reply::NodeInfo(node_info(node, root))),
        Request::Sync { path } => {
            crate::tree::checked_path(&path)?;
            linearize(node, root).await?;
            Ok(Reply::Synced)
        }
        Request::SetPolicy {
            scope,
            component,
            params,
            mode,
        } => {
            let target = scope_rooted_at(node, root, &scope)?;
            let set = SetPolicy {
                component,
                params,
                mode,
            };
            match propose_policy(node, target, set, principal).await?.outcome {
                CommandOutcome::PolicySet(r) => r.map(|info| Reply::Policy(Some(info))),
                other => Err(unexpected_outcome(other)),
            }
        }
        Request::GetPolicy { scope } => {
            let target = scope_rooted_at(node, root, &scope)?;
            linearize(node, target).await?;
            let state = target.view().read();
            Ok(Reply::Policy(
                state.governance.active.as_ref().map(|a| a.info.clone()),
            ))
        }
        Request::PolicyHistory { scope } => {
            let target = scope_rooted_at(node, root, &scope)?;
            linearize(node, target).await?;
            Ok(Reply::PolicyHistory(
                target.view().read().governance.history.clone(),
            ))
        }
    }
}

fn unexpected_outcome(outcome: CommandOutcome) -> ApiError {
    ApiError::new(
        ErrorCode::SystemError,
        format!("unexpected outcome {outcome:?}"),
    )
}

fn node_info(node: &Node, root: &Scope) -> scopekeeper_client::proto::NodeInfo {
    let judged = root.view().read().governance.judged;
    let metrics = root.raft.metrics();
    let m = metrics.borrow_watched();
    scopekeeper_client::proto::NodeInfo {
        id: node.id(),
        leader: m.current_leader,
        term: m.current_term,
        voters: root.voters(),
        applied_index: m.last_applied.map_or(0, |l| l.index()),
        committed_index: m.local_committed.map_or(0, |l| l.index()),
        snapshot_index: m.snapshot.map_or(0, |l| l.index()),
        purged_index: m.purged.map_or(0, |l| l.index()),
        znodes: root.view().read().tree.len() as u64,
        policy_judged: judged.entries,
        policy_fuel: judged.fuel,
        policy_digest: judged.digest,
    }
}

fn connection_loss(why: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::ConnectionLoss, why.to_string())
}

/// Sends a proposal to the scope's leader, wherever it is, and retries only where it surely
/// did not take effect (no leader yet, leader moved before taking it, peer unreachable before
/// the request was sent); an unknown outcome is reported as `ConnectionLoss`.
async fn through_leader<T, Local, LocalFuture, Remote>(
    node: &Node,
    scope: &Scope,
    local: Local,
    remote: Remote,
) -> Result<T, ApiError>
where
    Local: Fn() -> LocalFuture,
    LocalFuture: std::future::Future<Output = Result<T, Refusal>>,
    Remote: Fn(u64) -> PeerRequest,
    T: TryFrom<PeerResponse, Error = Refusal>,
{
    let deadline = Instant::now() + limits::WRITE_TIMEOUT;
    loop {
        let attempt = match scope.leader() {
            Some((leader, _)) if leader == node.id() => local().await,
            Some((leader, addr)) => match node.0.peers.call(leader, &addr, &remote(leader)).await {
                Ok(response) => T::try_from(response),
                // Never reached the leader: safe to try again once the leadership settles.
                Err(e @ (TransportError::Connect { .. } | TransportError::Unreachable { .. })) => {
                    tracing::debug!("forwarding to node {leader}: {e}");
                    Err(Refusal::NotLeader { leader: None })
                }
                Err(e) => Err(Refusal::Unknown(format!(
                    "forwarding to node {leader}: {e}"
                ))),
            },
            None => Err(Refusal::NotLeader { leader: None }),
        };
        match attempt {
            Ok(result) => return Ok(result),
            Err(Refusal::Throttled) => {
                return Err(ApiError::new(
                    ErrorCode::Throttled,
                    "too many writes in flight; retry with backoff",
                ));
            }
            Err(Refusal::Rejected(e)) => return Err(e),
            Err(Refusal::Unknown(why)) => return Err(connection_loss(why)),
            Err(Refusal::NotLeader { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(Refusal::NotLeader { .. }) => {
                return Err(connection_loss(format!(
                    "scope {} has no leader; retry later",
                    scope.id
                )));
            }
        }
    }
}

impl TryFrom<PeerResponse> for TxnResult {
    type Error = Refusal;
    fn try_from(response: PeerResponse) -> Result<Self, Refusal> {
        match response {
            PeerResponse::Txn(result) => result,
            other => Err(Refusal::Unknown(format!(
                "the leader answered a write with {other:?}"
            ))),
        }
    }
}

impl TryFrom<PeerResponse> for CommandResult {
    type Error = Refusal;
    fn try_from(response: PeerResponse) -> Result<Self, Refusal> {
        match response {
            PeerResponse::Policy(result) => result,
            other => Err(Refusal::Unknown(format!(
                "the leader answered a policy change with {other:?}"
            ))),
        }
    }
}

async fn propose_txn(
    node: &Node,
    scope: &Scope,
    txn: Txn,
    principal: &crate::policy::admission::Principal,
) -> Result<TxnResult, ApiError> {
    through_leader(
        node,
        scope,
        || scope.propose_txn(principal.clone(), txn.clone(), 0),
        |_| PeerRequest::ProposeTxn {
            scope: scope.id,
            principal: principal.clone(),
            txn: txn.clone(),
            zxid_floor: 0,
        },
    )
    .await
}

async fn propose_policy(
    node: &Node,
    scope: &Scope,
    set: SetPolicy,
    principal: &crate::policy::admission::Principal,
) -> Result<CommandResult, ApiError> {
    through_leader(
        node,
        scope,
        || scope.propose_policy(principal.clone(), set.clone()),
        |_| PeerRequest::ProposePolicy {
            scope: scope.id,
            principal: principal.clone(),
            set: set.clone(),
        },
    )
    .await
}

/// Makes this node's view of the scope at least as new as any write acknowledged before the
/// call: the leader confirms its leadership with a quorum and names an index; we wait for it.
async fn linearize(node: &Node, scope: &Scope) -> Result<(), ApiError> {
    let deadline = Instant::now() + limits::WRITE_TIMEOUT;
    loop {
        let attempt = match scope.leader() {
            Some((leader, _)) if leader == node.id() => scope.read_index().await,
            Some((leader, addr)) => match node
                .0
                .peers
                .call(leader, &addr, &PeerRequest::ReadIndex { scope: scope.id })
                .await
            {
                Ok(PeerResponse::ReadIndex(r)) => r,
                Ok(other) => Err(Refusal::Unknown(format!(
                    "node {leader} answered a read index with {other:?}"
                ))),
                Err(e) => {
                    tracing::debug!("read index from node {leader}: {e}");
                    Err(Refusal::NotLeader { leader: None })
                }
            },
            None => Err(Refusal::NotLeader { leader: None }),
        };
        match attempt {
            Ok(index) => {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(100));
                return scope
                    .wait_applied(index, left)
                    .await
                    .map_err(|r| connection_loss(format!("{r:?}")));
            }
            Err(Refusal::NotLeader { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(r) => {
                return Err(connection_loss(format!(
                    "no linearizable read possible: {r:?}"
                )));
            }
        }
    }
}
