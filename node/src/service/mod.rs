//! What a node answers: peers (`peers`: raft traffic, forwarded writes, read indexes, status)
//! and native clients (here). One stream per request; the first frame says what it is.

use std::time::{Duration, Instant};

use scopekeeper_client::limits as client_limits;
use scopekeeper_client::proto::{
    ApiError, ErrorCode, MultiSlot, Op, Reply, Request, Response, SessionRequest, perms,
};
use scopekeeper_transport::frame::{expect_frame, read_end, write_frame};
use scopekeeper_transport::limits::CLIENT_FRAME_BYTES_MAX;
use scopekeeper_transport::{
    Alpn, Connection, Error as TransportError, Principal, RecvStream, SendStream,
};

use crate::directory::Route;
use crate::limits;
use crate::node::Node;
use crate::peer::{PeerRequest, PeerResponse, Refusal};
use crate::scope::Scope;
use crate::scope::types::{CommandOutcome, CommandResult, SetPolicy, TxnResult};
use crate::tree::{Outcome, SessionOutcome, SessionTxn, Txn};

mod peers;
mod session;

use peers::{refuse_unknown_peer, serve_peer_stream};
pub use session::serve_request as serve_session_request;

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
    // The session the connection's session stream opened: every stream acts for it.
    let session = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
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
        let session = session.clone();
        tokio::spawn(async move {
            let result = match (alpn, &principal) {
                (Alpn::Peer, Principal::Node { id }) if !node.knows_peer(*id) => {
                    refuse_unknown_peer(*id, send).await
                }
                (Alpn::Peer, Principal::Node { id }) => {
                    node.0.peers.liveness().heard(*id);
                    serve_peer_stream(&node, Some(*id), send, recv).await
                }
                (Alpn::Peer, _) => serve_peer_stream(&node, None, send, recv).await,
                (Alpn::Client, _) => {
                    serve_client_stream(&node, &principal, &session, send, recv).await
                }
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
    session: &std::sync::atomic::AtomicI64,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<(), TransportError> {
    let response: Response =
        match expect_frame::<Request>(&mut recv, client_limits::REQUEST_BYTES_MAX).await {
            Ok(Request::Connect { resume, timeout_ms }) => {
                let connect = session::Connect { resume, timeout_ms };
                return session::serve(node, connect, session, send, recv).await;
            }
            Ok(request) => {
                let id = session.load(std::sync::atomic::Ordering::Acquire);
                let principal = policy_principal(principal);
                // One request per stream: its end comes with it.
                let response = match read_end(&mut recv) {
                    Err(e) => Err(ApiError::new(ErrorCode::MarshallingError, e.to_string())),
                    Ok(()) if id != 0 => {
                        session::serve_request(node, &principal, id, request).await
                    }
                    Ok(()) => handle_client(node, &principal, id, request).await,
                };
                if id != 0 {
                    return write_response(&mut send, &response, true, node, id).await;
                }
                response
            }
            Err(e) => Err(ApiError::new(
                ErrorCode::MarshallingError,
                format!("unreadable request: {e}"),
            )),
        };
    write_response(&mut send, &response, false, node, 0).await
}

/// Writes a response, as a `SessionResponse` on a connection with a session; a reply over
/// the frame limit becomes an error saying so.
async fn write_response(
    send: &mut SendStream,
    response: &Response,
    in_session: bool,
    node: &Node,
    session: i64,
) -> Result<(), TransportError> {
    let mut written = write_one(send, response.clone(), in_session, node, session).await;
    if let Err(TransportError::FrameTooLarge { len, cap }) = written {
        let too_large: Response = Err(ApiError::new(
            ErrorCode::MarshallingError,
            format!("the reply of {len} bytes exceeds the {cap}-byte limit of one frame"),
        ));
        written = write_one(send, too_large, in_session, node, session).await;
    }
    written?;
    send.finish()
        .map_err(|_| TransportError::Closed("client stream closed early".into()))
}

async fn write_one(
    send: &mut SendStream,
    response: Response,
    in_session: bool,
    node: &Node,
    session: i64,
) -> Result<(), TransportError> {
    if in_session {
        let events = node.0.sessions.events_queued(session);
        let framed = scopekeeper_client::proto::SessionResponse { events, response };
        write_frame(send, &framed, CLIENT_FRAME_BYTES_MAX).await
    } else {
        write_frame(send, &response, CLIENT_FRAME_BYTES_MAX).await
    }
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
        // A native client's identity is its certificate: ZooKeeper's x509 scheme.
        Principal::Client { id, roles } => crate::policy::admission::Principal {
            id: id.clone(),
            roles: roles.clone(),
            ids: vec![scopekeeper_client::proto::Id::new("x509", id)],
        },
        Principal::Node { id } => crate::policy::admission::Principal {
            id: format!("node-{id}"),
            roles: vec![crate::policy::NODE_ROLE.into()],
            ids: Vec::new(),
        },
    }
}

/// Serves a request for `principal`, acting for `session` (0: none).
pub async fn handle_client(
    node: &Node,
    principal: &crate::policy::admission::Principal,
    session: i64,
    request: Request,
) -> Response {
    handle_routed(node, principal, session, request, limits::FORWARD_HOPS_MAX)
        .await
        .0
}

/// The path whose scope serves a request.
fn routing_path(request: &Request) -> &str {
    match request {
        Request::Write { op, .. } => crate::tree::governing_path(op),
        Request::Multi { ops, .. } => ops.first().map_or("/", crate::tree::governing_path),
        Request::GetData { path }
        | Request::Exists { path }
        | Request::GetChildren { path }
        | Request::Sync { path }
        | Request::CreateScope { path, .. }
        | Request::MergeScope { path }
        | Request::ScopeInfo { path }
        | Request::Descendants { path }
        | Request::GetAcl { path }
        | Request::Ephemerals { root: path, .. } => path,
        Request::SetPolicy { scope, .. }
        | Request::GetPolicy { scope }
        | Request::PolicyHistory { scope } => scope,
        Request::NodeInfo | Request::Nodes | Request::ChangeNode(_) | Request::Connect { .. } => {
            "/"
        }
        Request::Session(SessionRequest::Kill { root, .. }) => root,
        Request::Session(_) => "/zookeeper/sessions",
        Request::Watch { path, .. } | Request::RemoveWatches { path, .. } => path,
        Request::SetWatches { .. } => "/",
        Request::AtZxid(inner) => routing_path(inner),
        Request::Sequential { read, .. } => routing_path(read),
    }
}

/// `request` with a sequential read in it made linearizable (still answered with the zxid it
/// was read at): for another node, whose replica may be behind one this client read from (or
/// synced) here.
fn linearizable(request: &Request) -> std::borrow::Cow<'_, Request> {
    use std::borrow::Cow;
    match request {
        Request::Sequential { read, .. } => Cow::Owned(Request::AtZxid(read.clone())),
        Request::AtZxid(inner) => match &**inner {
            Request::Sequential { read, .. } => Cow::Owned(Request::AtZxid(read.clone())),
            _ => Cow::Borrowed(request),
        },
        other => Cow::Borrowed(other),
    }
}

/// The path a session request concerns: its record's, or the killed scope's root.
fn session_path(request: &SessionRequest) -> String {
    match request {
        SessionRequest::Kill { root, .. } => root.clone(),
        other => crate::tree::session::record_path(other.id()),
    }
}

/// Whether the request creates an ephemeral node, which its session must register first.
fn creates_ephemeral(request: &Request) -> bool {
    let ephemeral = |op: &Op| matches!(op, Op::Create { mode, .. } if mode.is_ephemeral());
    match request {
        Request::Write { op, .. } => ephemeral(op),
        Request::Multi { ops, .. } => ops.iter().any(ephemeral),
        Request::AtZxid(inner) => creates_ephemeral(inner),
        _ => false,
    }
}

fn is_wrong_scope(response: &Response) -> bool {
    match response {
        Err(e) => e.code == ErrorCode::WrongScope,
        Ok(Reply::Multi { slots, .. }) => slots
            .iter()
            .any(|s| matches!(s, MultiSlot::Failed(ErrorCode::WrongScope))),
        Ok(Reply::AtZxid { reply, .. }) => is_wrong_scope(reply),
        Ok(_) => false,
    }
}

/// Serves a request on the scope that governs its path: here if this node replicates it,
/// otherwise forwarded whole to one of its anchors (at most `hops` more times). A stale route
/// is refused by the scope it reaches (`WrongScope`); the directory learns better and the
/// request goes again. Returns the response and the route of the scope that served it.
pub(super) async fn handle_routed(
    node: &Node,
    principal: &crate::policy::admission::Principal,
    session: i64,
    request: Request,
    hops: u8,
) -> (Response, Option<Route>) {
    if !node.is_started() {
        return (Err(starting(node)), None);
    }
    if request == Request::NodeInfo {
        return (Ok(Reply::NodeInfo(node_info(node))), None);
    }
    if let Request::Connect { .. } = request {
        return (
            Err(ApiError::new(
                ErrorCode::BadArguments,
                "Connect opens a session stream; send it as the first frame of its own stream",
            )),
            None,
        );
    }
    let path = match &request {
        Request::Session(s) => session_path(s),
        Request::AtZxid(inner) => match &**inner {
            Request::Session(s) => session_path(s),
            other => routing_path(other).to_string(),
        },
        other => routing_path(other).to_string(),
    };
    let ephemeral = session != 0 && creates_ephemeral(&request);
    let mut last = None;
    for attempt in 1..=limits::ROUTE_ATTEMPTS_MAX as u32 {
        let route = node.route(&path);
        let multi = match &request {
            Request::AtZxid(inner) => &**inner,
            other => other,
        };
        if let Request::Multi { ops, .. } = multi
            && let Err(spanning) = check_one_scope(node, ops)
        {
            return (Err(spanning), None);
        }
        if ephemeral
            && let Err(e) = crate::sessions::ensure_registered(node, session, &route.root).await
        {
            return (Err(e), None);
        }
        let local = local_scope(node, &route).await;
        if local.is_none() && node.has_merged(route.scope) {
            // Its parent took the subtree back while the request waited; resolve again.
            continue;
        }
        let (response, served_by) = match &local {
            Some(scope) => (
                serve_local(node, scope, principal, session, &request).await,
                Some(scope.view().read().route()),
            ),
            None if hops == 0 => {
                return (
                    Err(ApiError::new(
                        ErrorCode::WrongScope,
                        format!(
                            "node {} does not replicate scope {} (rooted at {}) and the request \
                             was forwarded too often; retry",
                            node.id(),
                            route.scope,
                            route.root
                        ),
                    )),
                    None,
                );
            }
            None => {
                let request = linearizable(&request);
                forward(node, &route, principal, session, &request, hops - 1).await
            }
        };
        if !is_wrong_scope(&response) {
            if let Some(r) = &served_by {
                node.learn_route(r.clone());
            }
            return (response, served_by);
        }
        // The route was stale. The scope that refused knows where the path went if it
        // delegated it; otherwise the route is dropped and resolution falls back to a parent.
        let better = local.and_then(|s| s.view().read().delegation_of(&path).cloned());
        match better {
            Some(child) => node.learn_route(child),
            None => node.forget_route(&route.root),
        }
        last = Some(response);
        // A scope just created may not be open everywhere yet.
        tokio::time::sleep(limits::ROUTE_RETRY_PAUSE * attempt).await;
    }
    let exhausted = ApiError::new(
        ErrorCode::WrongScope,
        format!("could not find the scope governing {path}; retry"),
    );
    (last.unwrap_or(Err(exhausted)), None)
}

/// The scope `route` names, if this node serves it: open and a member of its group. A node
/// that is an anchor but has not opened the scope yet (its apply of the delegation is a moment
/// behind, or it waits for its first snapshot) waits a little rather than forward in circles.
async fn local_scope(node: &Node, route: &Route) -> Option<std::sync::Arc<Scope>> {
    let ready = || node.scope(route.scope).filter(|s| s.is_initialized());
    if !route.anchors.iter().any(|a| a.node == node.id()) {
        return ready();
    }
    let deadline = Instant::now() + limits::SCOPE_OPEN_WAIT;
    loop {
        if let Some(scope) = ready() {
            return Some(scope);
        }
        // A scope merged away is not coming back.
        if Instant::now() > deadline || node.has_merged(route.scope) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A multi must stay within one scope until cross-scope commit exists.
fn check_one_scope(node: &Node, ops: &[Op]) -> Result<(), ApiError> {
    let routes = node.routes(ops.iter().map(crate::tree::governing_path));
    let Some(home) = routes.first() else {
        return Ok(());
    };
    match ops.iter().zip(&routes).find(|(_, r)| r.scope != home.scope) {
        None => Ok(()),
        Some((op, other)) => Err(ApiError::new(
            ErrorCode::Unimplemented,
            format!(
                "a multi must stay within one scope: {} is in the scope rooted at {}, {} in the \
                 one rooted at {}; split it into one multi per scope",
                ops[0].path(),
                home.root,
                op.path(),
                other.root
            ),
        )),
    }
}

/// Sends a request to an anchor of `route`'s scope, trying the next anchor only when the
/// request surely was not delivered.
async fn forward(
    node: &Node,
    route: &Route,
    principal: &crate::policy::admission::Principal,
    session: i64,
    request: &Request,
    hops: u8,
) -> (Response, Option<Route>) {
    let message = PeerRequest::Client {
        principal: principal.clone(),
        session,
        request: request.clone(),
        hops,
    };
    let mut why = format!(
        "scope {} (rooted at {}) has no known anchors",
        route.scope, route.root
    );
    for anchor in route.anchors.iter().filter(|a| a.node != node.id()) {
        match node.0.peers.call(anchor.node, &anchor.addr, &message).await {
            Ok(PeerResponse::Client(answer)) => return (answer.response, answer.served_by),
            Ok(PeerResponse::Invalid(e)) => why = format!("node {}: {e}", anchor.node),
            Ok(other) => why = format!("node {} answered {other:?}", anchor.node),
            Err(e @ (TransportError::Connect { .. } | TransportError::Unreachable { .. })) => {
                why = format!("node {}: {e}", anchor.node);
            }
            Err(e) => {
                return (
                    Err(connection_loss(format!(
                        "forwarding to node {}: {e}; the outcome is unknown",
                        anchor.node
                    ))),
                    None,
                );
            }
        }
    }
    (Err(connection_loss(why)), None)
}

/// A request served by a scope this node replicates.
async fn serve_local(
    node: &Node,
    scope: &Scope,
    principal: &crate::policy::admission::Principal,
    session: i64,
    request: &Request,
) -> Response {
    let caller = Caller { principal, session };
    match request {
        Request::Write { op, after_zxid } => {
            check_not_bookkeeping(principal, std::slice::from_ref(op))?;
            let applied =
                propose_txn(node, scope, Txn::Single(op.clone()), *after_zxid, &caller).await?;
            let zxid = applied.zxid;
            match applied.outcome {
                Outcome::Single(r) => r.map(|result| Reply::Write { result, zxid }),
                other => Err(ApiError::new(
                    ErrorCode::SystemError,
                    format!("a single op produced {other:?}"),
                )),
            }
        }
        Request::Multi { ops, after_zxid } => {
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
            check_not_bookkeeping(principal, ops)?;
            let applied =
                propose_txn(node, scope, Txn::Multi(ops.clone()), *after_zxid, &caller).await?;
            let zxid = applied.zxid;
            match applied.outcome {
                Outcome::Multi(slots) => Ok(Reply::Multi { slots, zxid }),
                other => Err(ApiError::new(
                    ErrorCode::SystemError,
                    format!("a multi produced {other:?}"),
                )),
            }
        }
        Request::Descendants { path } => {
            linearize(node, scope).await?;
            let (count, delegated) = scope.view().read().tree.descendants(path)?;
            Ok(Reply::Descendants { count, delegated })
        }
        Request::Ephemerals { root, prefix } => {
            linearize(node, scope).await?;
            let state = scope.view().read();
            // Refuses (`WrongScope`) unless this scope governs `root`.
            state.tree.exists(root)?;
            // A string prefix, as ZooKeeper's getEphemerals takes it.
            let paths = state
                .tree
                .ephemerals_of(session)
                .filter(|p| p.starts_with(prefix.as_str()))
                .cloned()
                .collect();
            Ok(Reply::Paths(paths))
        }
        Request::GetData { .. } | Request::Exists { .. } | Request::GetChildren { .. } => {
            linearize(node, scope).await?;
            read_tree(&scope.view().read().tree, request, principal.auth())
        }
        Request::Sequential { .. } => serve_at_zxid(node, scope, principal, session, request).await,
        Request::GetAcl { path } => {
            linearize(node, scope).await?;
            let (acl, stat) = scope.view().read().tree.get_acl(path, principal.auth())?;
            Ok(Reply::Acl { acl, stat })
        }
        Request::NodeInfo => Ok(Reply::NodeInfo(node_info(node))),
        Request::Sync { path } => {
            crate::tree::checked_path(path)?;
            linearize(node, scope).await?;
            scope.view().read().tree.owns(path)?;
            Ok(Reply::Synced)
        }
        Request::SetPolicy {
            scope: root,
            component,
            params,
            mode,
        } => {
            rooted_at(scope, root)?;
            let set = SetPolicy {
                component: component.clone(),
                params: params.clone(),
                mode: *mode,
            };
            match propose_policy(node, scope, set, principal).await?.outcome {
                CommandOutcome::PolicySet(r) => r.map(|info| Reply::Policy(Some(info))),
                other => Err(unexpected_outcome(other)),
            }
        }
        Request::GetPolicy { scope: root } => {
            linearize(node, scope).await?;
            rooted_at(scope, root)?;
            let state = scope.view().read();
            Ok(Reply::Policy(
                state.governance.active.as_ref().map(|a| a.info.clone()),
            ))
        }
        Request::PolicyHistory { scope: root } => {
            linearize(node, scope).await?;
            rooted_at(scope, root)?;
            Ok(Reply::PolicyHistory(
                scope.view().read().governance.history.clone(),
            ))
        }
        Request::CreateScope { path, policy } => {
            crate::tree::checked_path(path)?;
            let policy = policy.as_ref().map(|p| SetPolicy {
                component: p.component.clone(),
                params: p.params.clone(),
                mode: p.mode,
            });
            match propose_delegation(node, scope, path, policy, principal)
                .await?
                .outcome
            {
                CommandOutcome::Delegated(r) => r.map(|route| Reply::ScopeCreated(route.scope)),
                other => Err(unexpected_outcome(other)),
            }
        }
        Request::MergeScope { path } => {
            crate::scope::governance::check_admin(principal, "merging a scope")?;
            rooted_at(scope, path)?;
            let into = crate::merge::mergeable(node, scope)
                .map_err(|why| ApiError::new(ErrorCode::BadArguments, why))?;
            let sealed = through_leader(
                node,
                scope,
                || scope.propose_seal(into),
                |_| PeerRequest::ProposeSeal {
                    scope: scope.id,
                    into,
                },
            )
            .await?;
            match sealed.outcome {
                CommandOutcome::Merge(Ok(())) => {
                    // The leader's state is final now: hand it over at once rather than at
                    // the merge loop's next tick. Elsewhere the leader's loop does it.
                    if scope.raft.is_leader() && scope.view().read().sealed.is_some() {
                        crate::merge::hand_over(node, scope, into).await;
                    }
                    Ok(Reply::Synced)
                }
                CommandOutcome::Merge(Err(e)) => Err(e),
                other => Err(unexpected_outcome(other)),
            }
        }
        Request::ScopeInfo { path } => {
            linearize(node, scope).await?;
            rooted_at(scope, path)?;
            Ok(Reply::Scope(scope_info(scope)))
        }
        Request::Nodes => {
            linearize(node, scope).await?;
            rooted_at(scope, "/")?;
            Ok(Reply::Nodes(
                scope.view().read().nodes.values().cloned().collect(),
            ))
        }
        Request::Connect { .. }
        | Request::Watch { .. }
        | Request::RemoveWatches { .. }
        | Request::SetWatches { .. } => Err(ApiError::new(
            ErrorCode::BadArguments,
            "sessions and watches are served by the node the client is connected to, on a \
             connection with a session",
        )),
        Request::AtZxid(inner) => serve_at_zxid(node, scope, principal, session, inner).await,
        Request::Session(request) => {
            if !principal.has_role(crate::policy::NODE_ROLE) {
                return Err(ApiError::new(
                    ErrorCode::NoAuth,
                    "session bookkeeping is for the cluster's nodes",
                ));
            }
            let txn = Txn::Session(session_txn(request));
            let applied = propose_txn(node, scope, txn, 0, &caller).await?;
            match applied.outcome {
                Outcome::Session(Ok(SessionOutcome::Killed { chase })) => {
                    Ok(Reply::SessionDone { chase })
                }
                Outcome::Session(Ok(SessionOutcome::Done)) => {
                    Ok(Reply::SessionDone { chase: Vec::new() })
                }
                Outcome::Session(Err(e)) => Err(e),
                other => Err(ApiError::new(
                    ErrorCode::SystemError,
                    format!("session bookkeeping produced {other:?}"),
                )),
            }
        }
        Request::ChangeNode(change) => {
            rooted_at(scope, "/")?;
            let outcome = through_leader(
                node,
                scope,
                || scope.propose_nodes(principal.clone(), change.clone()),
                |_| PeerRequest::ProposeNodes {
                    principal: principal.clone(),
                    change: change.clone(),
                },
            )
            .await?;
            match outcome.outcome {
                CommandOutcome::NodesChanged(r) => r.map(|()| Reply::Synced),
                other => Err(unexpected_outcome(other)),
            }
        }
    }
}

/// Serves `request` and answers `Reply::AtZxid` with the zxid it saw: a read's, taken with
/// the read (whatever the read found); a write's own. A read that could not be made (no
/// leader, a malformed request) fails outright, with no zxid.
async fn serve_at_zxid(
    node: &Node,
    scope: &Scope,
    principal: &crate::policy::admission::Principal,
    session: i64,
    request: &Request,
) -> Response {
    let (read, seen) = match request {
        Request::GetData { .. } | Request::Exists { .. } | Request::GetChildren { .. } => {
            (request, None)
        }
        Request::Sequential { seen, read } => {
            tree_read(read)?;
            (&**read, Some(*seen))
        }
        Request::AtZxid(_) => {
            return Err(ApiError::new(
                ErrorCode::BadArguments,
                "AtZxid inside AtZxid",
            ));
        }
        other => {
            let response = Box::pin(serve_local(node, scope, principal, session, other)).await;
            let zxid = match &response {
                Ok(Reply::Write { zxid, .. } | Reply::Multi { zxid, .. }) => *zxid,
                _ => scope.view().read().tree.last_zxid(),
            };
            return Ok(Reply::AtZxid {
                reply: Box::new(response),
                zxid,
            });
        }
    };
    match seen {
        Some(seen) => catch_up(node, scope, seen).await?,
        None => linearize(node, scope).await?,
    }
    let state = scope.view().read();
    Ok(Reply::AtZxid {
        reply: Box::new(read_tree(&state.tree, read, principal.auth())),
        zxid: state.tree.last_zxid(),
    })
}

/// Makes this node's view of the scope hold every write a client that has seen zxid `seen`
/// could know of (ZooKeeper's read guarantee): at once if the replica has applied that zxid,
/// since zxids rise within a scope and a child scope's start above its parent's at the split;
/// else through a linearizable read index, as a quiet scope's replica may never reach it.
/// A replica cut off from its leader answers nothing from itself (ZooKeeper's timeliness: a
/// server without a leader stops serving), so how stale a read can be stays bounded.
async fn catch_up(node: &Node, scope: &Scope, seen: i64) -> Result<(), ApiError> {
    let applied = scope.view().read().tree.last_zxid();
    if applied >= seen && follows_live_leader(node, scope) {
        return Ok(());
    }
    linearize(node, scope).await
}

/// Whether the replica's leader was heard from within `NODE_DEAD_AFTER`: this node's, by a
/// quorum's acknowledgement; another's, by anything it sent here or answered
/// (`PeerLiveness`).
fn follows_live_leader(node: &Node, scope: &Scope) -> bool {
    use openraft::Instant as _;
    enum Leader {
        Unknown,
        Me { acked_lately: bool },
        Node(u64),
    }
    let leader = scope.metrics(|m| match m.current_leader {
        None => Leader::Unknown,
        Some(leader) if leader == m.id => Leader::Me {
            acked_lately: m
                .last_quorum_acked
                .as_ref()
                .is_some_and(|at| at.elapsed() < limits::NODE_DEAD_AFTER),
        },
        Some(leader) => match m.membership_config.membership().get_node(&leader) {
            Some(n) => Leader::Node(n.node),
            None => Leader::Unknown,
        },
    });
    match leader {
        Leader::Unknown => false,
        Leader::Me { acked_lately } => acked_lately,
        Leader::Node(id) => node.0.peers.liveness().heard_lately(id, Instant::now()),
    }
}

/// Refuses anything but a getData, exists or getChildren, which `Sequential` carries.
fn tree_read(read: &Request) -> Result<(), ApiError> {
    match read {
        Request::GetData { .. } | Request::Exists { .. } | Request::GetChildren { .. } => Ok(()),
        other => Err(ApiError::new(
            ErrorCode::BadArguments,
            format!("a sequential read carries getData, exists or getChildren, not {other:?}"),
        )),
    }
}

/// A getData, exists or getChildren answered from `tree`, with ZooKeeper's READ check for
/// `auth` (exists is not checked, as in ZooKeeper).
fn read_tree(
    tree: &crate::tree::Tree,
    request: &Request,
    auth: crate::tree::AuthInfo<'_>,
) -> Response {
    match request {
        Request::GetData { path } => {
            tree.permit(path, perms::READ, auth)?;
            let (data, stat) = tree.get_data(path)?;
            Ok(Reply::Data { data, stat })
        }
        Request::Exists { path } => Ok(Reply::Exists(tree.exists(path)?)),
        Request::GetChildren { path } => {
            tree.permit(path, perms::READ, auth)?;
            let (children, stat) = tree.get_children(path)?;
            Ok(Reply::Children { children, stat })
        }
        other => Err(ApiError::new(
            ErrorCode::SystemError,
            format!("{other:?} is not a tree read"),
        )),
    }
}

/// Who a proposal is from and which session it acts for.
struct Caller<'a> {
    principal: &'a crate::policy::admission::Principal,
    session: i64,
}

fn session_txn(request: &SessionRequest) -> SessionTxn {
    match request.clone() {
        SessionRequest::Open { id, timeout_ms } => SessionTxn::Open { id, timeout_ms },
        SessionRequest::Register { id, root } => SessionTxn::Register { id, root },
        SessionRequest::Chase { id, roots } => SessionTxn::Chase { id, roots },
        SessionRequest::Closing { id } => SessionTxn::Closing { id },
        SessionRequest::Kill { id, .. } => SessionTxn::Kill { id },
        SessionRequest::Forget { id } => SessionTxn::Forget { id },
    }
}

/// Session records are the nodes' bookkeeping: clients read them but never write them.
fn check_not_bookkeeping(
    principal: &crate::policy::admission::Principal,
    ops: &[Op],
) -> Result<(), ApiError> {
    match ops
        .iter()
        .find(|op| crate::tree::session::is_session_path(op.path()))
    {
        Some(op) if !principal.has_role(crate::policy::NODE_ROLE) => Err(ApiError::new(
            ErrorCode::NoAuth,
            format!(
                "{} is a session record, kept by the cluster; clients only read it",
                op.path()
            ),
        )),
        _ => Ok(()),
    }
}

/// Checks that `scope` is the one rooted exactly at `path`; `WrongScope` if `path` was
/// delegated elsewhere, so the caller finds the right one.
fn rooted_at(scope: &Scope, path: &str) -> Result<(), ApiError> {
    crate::tree::checked_path(path)?;
    let state = scope.view().read();
    if state.identity.root == path {
        return Ok(());
    }
    state.tree.owns(path)?;
    Err(ApiError::new(
        ErrorCode::NoNode,
        format!(
            "no scope is rooted at {path}; it is governed by the scope rooted at {} \
             (`scopekeeper scope list` shows every scope)",
            state.identity.root
        ),
    ))
}

fn scope_info(scope: &Scope) -> scopekeeper_client::proto::ScopeInfo {
    let leader = scope.leader().map(|(id, _)| id);
    let state = scope.view().read();
    scopekeeper_client::proto::ScopeInfo {
        id: state.identity.id,
        root: state.identity.root.clone(),
        parent: state.identity.parent,
        epoch: state.identity.epoch,
        anchors: {
            let membership = state.membership.membership();
            membership
                .voter_ids()
                .filter_map(|r| membership.get_node(&r).map(|n| n.node))
                .collect()
        },
        leader,
        policy: state.governance.active.as_ref().map(|a| a.info.clone()),
        znodes: state.tree.len() as u64,
        data_bytes: state.tree.data_bytes(),
        applied_index: state.last_applied.map_or(0, |l| l.index()),
        children: state
            .delegations
            .iter()
            .map(|(p, r)| (p.clone(), r.scope))
            .collect(),
    }
}

fn unexpected_outcome(outcome: CommandOutcome) -> ApiError {
    ApiError::new(
        ErrorCode::SystemError,
        format!("unexpected outcome {outcome:?}"),
    )
}

fn node_info(node: &Node) -> scopekeeper_client::proto::NodeInfo {
    let scopes = node
        .scopes()
        .iter()
        .map(|scope| {
            let leader = scope.leader().map(|(id, _)| id);
            let voters = scope.voters();
            let applied_index = scope.metrics(|m| m.last_applied.map_or(0, |l| l.index()));
            let state = scope.view().read();
            scopekeeper_client::proto::HostedScope {
                id: scope.id,
                root: state.identity.root.clone(),
                epoch: state.identity.epoch,
                leader,
                voters,
                applied_index,
                znodes: state.tree.len() as u64,
                quiescent: scope.is_quiescent(),
            }
        })
        .collect();
    let Some(root) = node.root() else {
        return scopekeeper_client::proto::NodeInfo {
            id: node.id(),
            leader: None,
            term: 0,
            voters: vec![],
            applied_index: 0,
            committed_index: 0,
            snapshot_index: 0,
            purged_index: 0,
            znodes: 0,
            policy_judged: 0,
            policy_fuel: 0,
            policy_digest: 0,
            scopes,
        };
    };
    let (judged, znodes) = {
        let state = root.view().read();
        (state.governance.judged, state.tree.len() as u64)
    };
    let leader = root.leader().map(|(id, _)| id);
    let voters = root.voters();
    let index = |l: Option<&crate::scope::types::LogId>| l.map_or(0, |l| l.index());
    let (term, applied_index, committed_index, snapshot_index, purged_index) = root.metrics(|m| {
        (
            m.current_term,
            index(m.last_applied.as_ref()),
            index(m.local_committed.as_ref()),
            index(m.snapshot.as_ref()),
            index(m.purged.as_ref()),
        )
    });
    scopekeeper_client::proto::NodeInfo {
        id: node.id(),
        leader,
        term,
        voters,
        applied_index,
        committed_index,
        snapshot_index,
        purged_index,
        znodes,
        policy_judged: judged.entries,
        policy_fuel: judged.fuel,
        policy_digest: judged.digest,
        scopes,
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
            PeerResponse::Command(result) => result,
            other => Err(Refusal::Unknown(format!(
                "the leader answered a policy change or delegation with {other:?}"
            ))),
        }
    }
}

async fn propose_txn(
    node: &Node,
    scope: &Scope,
    txn: Txn,
    after_zxid: i64,
    caller: &Caller<'_>,
) -> Result<TxnResult, ApiError> {
    let Caller { principal, session } = *caller;
    through_leader(
        node,
        scope,
        || scope.propose_txn(principal.clone(), session, txn.clone(), after_zxid),
        |_| PeerRequest::ProposeTxn {
            scope: scope.id,
            principal: principal.clone(),
            session,
            txn: txn.clone(),
            zxid_floor: after_zxid,
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
    let nodes = crate::placement::eligible(node).await;
    through_leader(
        node,
        scope,
        || scope.propose_policy(principal.clone(), set.clone(), nodes.clone()),
        |_| PeerRequest::ProposePolicy {
            scope: scope.id,
            principal: principal.clone(),
            set: set.clone(),
        },
    )
    .await
}

async fn propose_delegation(
    node: &Node,
    scope: &Scope,
    path: &str,
    policy: Option<SetPolicy>,
    principal: &crate::policy::admission::Principal,
) -> Result<CommandResult, ApiError> {
    let nodes = crate::placement::eligible(node).await;
    through_leader(
        node,
        scope,
        || {
            scope.propose_delegation(
                principal.clone(),
                path.to_string(),
                policy.clone(),
                nodes.clone(),
            )
        },
        |_| PeerRequest::ProposeDelegation {
            scope: scope.id,
            principal: principal.clone(),
            path: path.to_string(),
            policy: policy.clone(),
        },
    )
    .await
}

/// Hands a sealed child's final state to the leader of its parent `scope` (see `merge`).
pub(crate) async fn propose_absorb(
    node: &Node,
    scope: &Scope,
    absorb: crate::scope::types::Absorb,
) -> Result<CommandResult, ApiError> {
    let absorb = Box::new(absorb);
    through_leader(
        node,
        scope,
        || scope.propose_absorb(absorb.clone()),
        |_| PeerRequest::ProposeAbsorb {
            scope: scope.id,
            absorb: absorb.clone(),
        },
    )
    .await
}

/// Makes this node's view of the scope at least as new as any write acknowledged before the
/// call: the leader confirms its leadership with a quorum and names an index; we wait for it.
/// Concurrent reads of the scope share the leader's answer (`scope::read_rounds`).
async fn linearize(node: &Node, scope: &Scope) -> Result<(), ApiError> {
    let deadline = Instant::now() + limits::WRITE_TIMEOUT;
    loop {
        let (asking, id) = (node.clone(), scope.id);
        let attempt = scope
            .reads
            .read_index(move || leader_read_index(asking.clone(), id))
            .await;
        let refusal = match attempt {
            Ok(index) => {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(100));
                match scope.wait_applied(index, left).await {
                    Ok(()) => return Ok(()),
                    Err(r) => r,
                }
            }
            Err(r) => r,
        };
        // Its anchors close a merged scope as they apply its parent's Absorb, so its leader
        // and the quorum for a read vanish; the parent serves the path now, or soon.
        if scope.view().read().sealed.is_some() {
            return Err(ApiError::new(
                ErrorCode::WrongScope,
                format!(
                    "scope {} is merging into its parent ({refusal:?}); retry",
                    scope.id
                ),
            ));
        }
        match refusal {
            Refusal::NotLeader { .. } if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            r => {
                return Err(connection_loss(format!(
                    "no linearizable read possible: {r:?}"
                )));
            }
        }
    }
}

/// The index a linearizable read of `scope` must see, from its leader, here or by RPC.
async fn leader_read_index(node: Node, scope: crate::storage::ScopeId) -> Result<u64, Refusal> {
    let Some(scope) = node.scope(scope) else {
        return Err(Refusal::NotLeader { leader: None });
    };
    match scope.leader() {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_sequential_read_is_linearizable() {
        let read = Request::GetData { path: "/a".into() };
        let sequential = Request::Sequential {
            seen: 7,
            read: Box::new(read.clone()),
        };
        let at_zxid = Request::AtZxid(Box::new(read.clone()));
        assert_eq!(*linearizable(&sequential), at_zxid);
        let ordered = Request::AtZxid(Box::new(sequential));
        assert_eq!(*linearizable(&ordered), at_zxid);
        // Anything else goes as it is, unchanged and uncopied.
        let plain = Request::AtZxid(Box::new(read));
        assert!(
            matches!(linearizable(&plain), std::borrow::Cow::Borrowed(r) if std::ptr::eq(r, &plain))
        );
        assert_eq!(routing_path(&ordered), "/a");
    }

    #[test]
    fn a_sequential_read_carries_only_tree_reads() {
        assert!(tree_read(&Request::Exists { path: "/a".into() }).is_ok());
        let sync = Request::Sync { path: "/a".into() };
        let refused = tree_read(&sync).err().map(|e| e.code);
        assert_eq!(refused, Some(ErrorCode::BadArguments));
    }
}
