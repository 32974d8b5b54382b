//! Sessions (DESIGN section 8): minted by the node a client connects to, recorded in a session
//! scope chosen by the id, kept alive by the nodes' batched keepalives, expired by the session
//! scope's leader, and ended by killing the session's ephemerals in every scope it registered.
//!
//! - A session id is the minting node's id in the top 16 bits and a counter started from the
//!   clock at boot (16 per ms) below: unique without asking anyone. The password is an HMAC of
//!   the id under the cluster's session secret, so any node checks a resume without a lookup.
//! - The client's liveness is its node's business: the node notes each ping and request, and
//!   every `KEEPALIVE_TICK` sends one `TouchSessions` per session scope for the sessions it
//!   heard from. Deadlines live in the memory of the session scope's leader; a new leader
//!   gives every session a full timeout, as ZooKeeper's does.
//! - A session is held by one node at a time: a resume claims it for the resuming node, and
//!   the leader answers keepalives from any other node with "moved"; that node closes its
//!   connection for the session, as a ZooKeeper server does on `SessionMovedException`.
//! - Ephemerals: before a scope applies the first ephemeral create of a session, the serving
//!   node registers the scope's root in the session's record; once the record says closing, no
//!   registration succeeds. Ending a session marks the record closing, kills the session in
//!   every registered scope (each deletes its ephemerals through its own log and refuses new
//!   ones), chases the child scopes that took ephemerals with them, then forgets the record.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use scopekeeper_client::proto::{
    ApiError, ErrorCode, Reply, Request, ServerFrame, SessionCredentials, SessionGranted,
    SessionRequest,
};
use tokio::sync::mpsc;

use crate::limits;
use crate::node::Node;
use crate::peer::{PeerRequest, PeerResponse};
use crate::policy::admission::Principal;
use crate::scope::Scope;
use crate::storage::ScopeId;
use crate::tree::session::{
    SESSION_SCOPES, SESSIONS_ROOT, SessionRecord, record_path, session_scope_root,
};

/// Bytes of a session password, as ZooKeeper's.
pub const PASSWORD_BYTES: usize = 16;

/// A client connected to this node with a session.
struct Attached {
    timeout_ms: i32,
    /// Heard from since the last keepalive tick.
    heard: bool,
    /// Which session stream holds it: a resume elsewhere or here replaces it.
    stream: u64,
    frames: mpsc::Sender<ServerFrame>,
    /// Event frames queued on the stream so far.
    events: u64,
    /// When the session scope last confirmed a keepalive of this session from here.
    confirmed: Instant,
}

/// When the session scope's leader expires a session it has heard of, and which node holds
/// its client (unknown until a keepalive or resume after this node became leader).
struct Clock {
    deadline: Instant,
    holder: Option<u64>,
}

/// What a session scope's leader answers a `TouchSessions`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Touched {
    /// Sessions that have ended.
    pub ended: Vec<i64>,
    /// Sessions another node has claimed since: the toucher must let go of their clients.
    pub moved: Vec<i64>,
}

pub struct Sessions {
    node_id: u64,
    secret: Vec<u8>,
    counter: AtomicI64,
    streams: AtomicI64,
    attached: Mutex<HashMap<i64, Attached>>,
    /// (session, scope root) pairs known to be in the session's record.
    registered: Mutex<HashSet<(i64, String)>>,
    /// Deadlines, per session scope this node leads.
    clocks: Mutex<HashMap<ScopeId, HashMap<i64, Clock>>>,
    /// Sessions whose ending this node is carrying out.
    ending: Mutex<HashSet<i64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sessions {
    pub fn new(node_id: u64, secret: Vec<u8>) -> Sessions {
        let boot_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Sessions {
            node_id,
            secret,
            counter: AtomicI64::new((boot_ms << 4) & LOW_BITS),
            streams: AtomicI64::new(0),
            attached: Mutex::new(HashMap::new()),
            registered: Mutex::new(HashSet::new()),
            clocks: Mutex::new(HashMap::new()),
            ending: Mutex::new(HashSet::new()),
        }
    }

    /// A new session id and its password.
    pub fn mint(&self) -> SessionCredentials {
        let low = self.counter.fetch_add(1, Ordering::Relaxed) & LOW_BITS;
        let id = ((self.node_id as i64) << 48) | low;
        SessionCredentials {
            id,
            password: self.password(id),
        }
    }

    /// The session's password: HMAC-SHA256 of its id under the cluster's secret, truncated.
    pub fn password(&self, id: i64) -> Vec<u8> {
        hmac_sha256(&self.secret, &id.to_be_bytes())[..PASSWORD_BYTES].to_vec()
    }

    fn check_password(&self, creds: &SessionCredentials) -> Result<(), ApiError> {
        // Not secret-dependent timing: compare every byte.
        let expected = self.password(creds.id);
        let same = expected.len() == creds.password.len()
            && expected
                .iter()
                .zip(&creds.password)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::SessionExpired,
            format!(
                "session {:#x}: wrong password; open a new session",
                creds.id
            ),
        ))
    }

    /// Takes a session on for a client stream; returns the stream's tag for [`Sessions::detach`].
    pub fn attach(&self, id: i64, timeout_ms: i32, frames: mpsc::Sender<ServerFrame>) -> u64 {
        let stream = self.streams.fetch_add(1, Ordering::Relaxed) as u64;
        lock(&self.attached).insert(
            id,
            Attached {
                timeout_ms,
                heard: true,
                stream,
                frames,
                events: 0,
                confirmed: Instant::now(),
            },
        );
        stream
    }

    /// Queues a watch event on the session's stream. A client too slow to take its events
    /// loses its stream (it resumes and re-arms its watches), never the node's memory.
    pub fn push_event(&self, id: i64, event: scopekeeper_client::proto::WatchEvent) {
        let mut attached = lock(&self.attached);
        let Some(a) = attached.get_mut(&id) else {
            return;
        };
        match a.frames.try_send(ServerFrame::Event(event)) {
            Ok(()) => a.events += 1,
            Err(_) => {
                tracing::warn!(
                    session = format!("{id:#x}"),
                    "the client does not take its watch events; closing its session stream"
                );
                attached.remove(&id);
            }
        }
    }

    /// Event frames queued for the session so far: a reply follows them.
    pub fn events_queued(&self, id: i64) -> u64 {
        lock(&self.attached).get(&id).map_or(0, |a| a.events)
    }

    /// The stream ended; the session lives on until it expires or is resumed. Whether the
    /// stream still held the session here (a resume may have replaced it).
    pub fn detach(&self, id: i64, stream: u64) -> bool {
        let mut attached = lock(&self.attached);
        if attached.get(&id).is_some_and(|a| a.stream == stream) {
            attached.remove(&id);
            return true;
        }
        false
    }

    /// The client of `id` was heard from: its session is kept alive at the next tick.
    pub fn heard(&self, id: i64) {
        if let Some(a) = lock(&self.attached).get_mut(&id) {
            a.heard = true;
        }
    }

    /// Tells the client of `id`, if connected here, that its session ended, and lets go of it.
    fn end_attached(&self, id: i64, why: ApiError) {
        if let Some(a) = lock(&self.attached).remove(&id) {
            let _ = a.frames.try_send(ServerFrame::Ended(why));
        }
        lock(&self.registered).retain(|(s, _)| *s != id);
    }

    /// Sessions heard from since the last tick, grouped by their session scope's root.
    fn take_heard(&self) -> HashMap<String, Vec<(i64, i32)>> {
        let mut out: HashMap<String, Vec<(i64, i32)>> = HashMap::new();
        for (id, a) in lock(&self.attached).iter_mut() {
            if std::mem::take(&mut a.heard) {
                out.entry(session_scope_root(*id))
                    .or_default()
                    .push((*id, a.timeout_ms));
            }
        }
        out
    }

    /// The session scope took these sessions' keepalives.
    fn confirmed(&self, ids: &[i64], at: Instant) {
        let mut attached = lock(&self.attached);
        for id in ids {
            if let Some(a) = attached.get_mut(id) {
                a.confirmed = at;
            }
        }
    }

    /// Lets go of the streams of sessions whose keepalives have not reached their session
    /// scope for two thirds of their timeout: this node cannot keep them alive (it is cut off,
    /// as a ZooKeeper server without a quorum is), so their clients had better resume on
    /// another node before the session expires. Returns the sessions let go.
    fn release_unconfirmed(&self, now: Instant) -> Vec<i64> {
        let mut attached = lock(&self.attached);
        let stale: Vec<i64> = attached
            .iter()
            .filter(|(_, a)| {
                let timeout = Duration::from_millis(a.timeout_ms.max(0) as u64);
                now.saturating_duration_since(a.confirmed)
                    > (timeout * 2 / 3).max(limits::KEEPALIVE_TICK * 3)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &stale {
            // Dropping the only sender ends the stream; the session itself lives on.
            attached.remove(id);
        }
        stale
    }

    pub fn attached_count(&self) -> usize {
        lock(&self.attached).len()
    }
}

const LOW_BITS: i64 = (1 << 48) - 1;

/// Within the node's bounds, as ZooKeeper negotiates between its min and max.
pub fn negotiate(timeout_ms: i32) -> i32 {
    timeout_ms.clamp(
        limits::SESSION_TIMEOUT_MIN_MS,
        limits::SESSION_TIMEOUT_MAX_MS,
    )
}

/// Who a node is when it writes session bookkeeping.
pub fn node_principal(node: &Node) -> Principal {
    crate::service::policy_principal(&scopekeeper_transport::Principal::Node { id: node.id() })
}

/// Sends a session request to the scope that governs its path, as this node.
async fn bookkeeping(node: &Node, request: SessionRequest) -> Result<Vec<String>, ApiError> {
    let principal = node_principal(node);
    // Boxed: a client's request reaches here from the service's routing, and this routes.
    let served = Box::pin(crate::service::handle_client(
        node,
        &principal,
        0,
        Request::Session(request),
    ));
    match served.await? {
        Reply::SessionDone { chase } => Ok(chase),
        other => Err(ApiError::new(
            ErrorCode::SystemError,
            format!("session bookkeeping answered {other:?}"),
        )),
    }
}

/// The session's record, read linearizably; `None` once it is forgotten.
async fn read_record(node: &Node, id: i64) -> Result<Option<SessionRecord>, ApiError> {
    let principal = node_principal(node);
    let request = Request::GetData {
        path: record_path(id),
    };
    match crate::service::handle_client(node, &principal, 0, request).await {
        Ok(Reply::Data { data, .. }) => SessionRecord::decode(&data).map(Some),
        Ok(other) => Err(ApiError::new(
            ErrorCode::SystemError,
            format!("reading a session record answered {other:?}"),
        )),
        Err(e) if e.code == ErrorCode::NoNode => Ok(None),
        Err(e) => Err(e),
    }
}

/// The roots of the scopes where the session may hold ephemerals, as its record lists them.
pub async fn registered_roots(node: &Node, id: i64) -> Result<Vec<String>, ApiError> {
    let record = read_record(node, id).await?.ok_or_else(|| expired(id))?;
    Ok(record.roots.into_iter().collect())
}

fn moved(id: i64) -> ApiError {
    ApiError::new(
        ErrorCode::SessionMoved,
        format!("session {id:#x} was resumed on another node"),
    )
}

fn expired(id: i64) -> ApiError {
    ApiError::new(
        ErrorCode::SessionExpired,
        format!("session {id:#x} has expired or was closed; open a new one"),
    )
}

/// Opens a new session and records it in its session scope.
pub async fn open(node: &Node, timeout_ms: i32) -> Result<SessionGranted, ApiError> {
    let timeout_ms = negotiate(timeout_ms);
    let credentials = node.0.sessions.mint();
    let deadline = Instant::now() + limits::WRITE_TIMEOUT;
    loop {
        let request = SessionRequest::Open {
            id: credentials.id,
            timeout_ms,
        };
        match bookkeeping(node, request).await {
            Ok(_) => break,
            // The session scopes are created right after the cluster is; wait for them.
            Err(e) if e.code == ErrorCode::NoNode && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(SessionGranted {
        credentials,
        timeout_ms,
        node: node.id(),
    })
}

/// Resumes a session on this node: the password must match and the session must still be
/// open; its deadline starts over.
pub async fn resume(
    node: &Node,
    credentials: SessionCredentials,
    timeout_ms: i32,
) -> Result<SessionGranted, ApiError> {
    node.0.sessions.check_password(&credentials)?;
    let id = credentials.id;
    let record = read_record(node, id).await?.ok_or_else(|| expired(id))?;
    if record.closing {
        return Err(expired(id));
    }
    let root = session_scope_root(id);
    let touched = touch(node, &root, vec![(id, record.timeout_ms)], true).await?;
    if touched.ended.contains(&id) {
        return Err(expired(id));
    }
    let _ = timeout_ms;
    Ok(SessionGranted {
        credentials,
        timeout_ms: record.timeout_ms,
        node: node.id(),
    })
}

/// Makes sure the session's record lists the scope rooted at `root` before an ephemeral of
/// the session is proposed there.
pub async fn ensure_registered(node: &Node, id: i64, root: &str) -> Result<(), ApiError> {
    let key = (id, root.to_string());
    if lock(&node.0.sessions.registered).contains(&key) {
        return Ok(());
    }
    bookkeeping(
        node,
        SessionRequest::Register {
            id,
            root: root.to_string(),
        },
    )
    .await?;
    lock(&node.0.sessions.registered).insert(key);
    Ok(())
}

/// Ends a session everywhere: closing, every registered scope (and the scopes their
/// ephemerals were carved into) killed, the record forgotten. Idempotent: any node may run it
/// again after a failure.
pub async fn end(node: &Node, id: i64) -> Result<(), ApiError> {
    let sessions = &node.0.sessions;
    if !lock(&sessions.ending).insert(id) {
        return Ok(());
    }
    let result = end_inner(node, id).await;
    lock(&sessions.ending).remove(&id);
    result
}

async fn end_inner(node: &Node, id: i64) -> Result<(), ApiError> {
    match bookkeeping(node, SessionRequest::Closing { id }).await {
        Ok(_) => {}
        Err(e) if e.code == ErrorCode::SessionExpired => return Ok(()),
        Err(e) => return Err(e),
    }
    let Some(record) = read_record(node, id).await? else {
        return Ok(());
    };
    let mut todo: Vec<String> = record.roots.iter().cloned().collect();
    let mut seen: BTreeSet<String> = record.roots.clone();
    while let Some(root) = todo.pop() {
        let chase = bookkeeping(
            node,
            SessionRequest::Kill {
                id,
                root: root.clone(),
            },
        )
        .await?;
        let fresh: Vec<String> = chase.into_iter().filter(|c| !seen.contains(c)).collect();
        if !fresh.is_empty() {
            // Recorded before they are killed, so a retry after a crash finds them.
            bookkeeping(
                node,
                SessionRequest::Chase {
                    id,
                    roots: fresh.clone(),
                },
            )
            .await?;
            seen.extend(fresh.iter().cloned());
            todo.extend(fresh);
        }
    }
    bookkeeping(node, SessionRequest::Forget { id }).await?;
    node.0.sessions.end_attached(id, expired(id));
    node.0.watches.drop_session(id);
    tracing::info!(
        session = format!("{id:#x}"),
        scopes = seen.len(),
        "session ended"
    );
    Ok(())
}

/// Ends a session at its client's request.
pub async fn close(node: &Node, id: i64) -> Result<(), ApiError> {
    lock(&node.0.sessions.attached).remove(&id);
    end(node, id).await
}

/// Refreshes the deadlines of `touches` at the leader of the session scope rooted at `root`;
/// returns the sessions that have ended.
/// Keeps `touches` (id, timeout) alive in the session scope rooted at `root`; with `claim`,
/// they are held here from now on.
async fn touch(
    node: &Node,
    root: &str,
    touches: Vec<(i64, i32)>,
    claim: bool,
) -> Result<Touched, ApiError> {
    let route = node.route(root);
    if route.root != root {
        // Not learnt yet: ask the root scope, which refuses with the delegation.
        let _ = read_record(node, touches.first().map_or(0, |t| t.0)).await;
    }
    let route = node.route(root);
    let mut why = format!("no anchor of session scope {root} answered");
    for anchor in &route.anchors {
        let answer = if anchor.node == node.id() {
            touch_here(node, route.scope, node.id(), claim, &touches, 1).await
        } else {
            let request = PeerRequest::TouchSessions {
                scope: route.scope,
                holder: node.id(),
                claim,
                touches: touches.clone(),
                hops: 1,
            };
            match node.0.peers.call(anchor.node, &anchor.addr, &request).await {
                Ok(PeerResponse::Touched(r)) => r,
                Ok(other) => Err(format!("node {} answered {other:?}", anchor.node)),
                Err(e) => Err(format!("node {}: {e}", anchor.node)),
            }
        };
        match answer {
            Ok(ended) => return Ok(ended),
            Err(e) => why = e,
        }
    }
    Err(ApiError::new(ErrorCode::ConnectionLoss, why))
}

/// A `TouchSessions` reaching this node: handled if it leads the scope, else passed to the
/// leader it knows (`hops` more times).
pub async fn touch_here(
    node: &Node,
    scope: ScopeId,
    holder: u64,
    claim: bool,
    touches: &[(i64, i32)],
    hops: u8,
) -> Result<Touched, String> {
    let Some(s) = node.scope(scope).filter(|s| s.is_initialized()) else {
        return Err(format!(
            "node {} does not replicate session scope {scope}",
            node.id()
        ));
    };
    match s.leader() {
        Some((leader, _)) if leader == node.id() => {
            // A leader cut off from its voters still believes it leads for a while; only one
            // whose lease (or a quorum round) confirms it may keep sessions alive.
            s.read_index().await.map_err(|e| {
                format!("session scope {scope}: leadership not confirmed ({e:?}); retry")
            })?;
            touch_as_leader(node, &s, holder, claim, touches)
        }
        Some((leader, addr)) if hops > 0 => {
            let request = PeerRequest::TouchSessions {
                scope,
                holder,
                claim,
                touches: touches.to_vec(),
                hops: hops - 1,
            };
            match node.0.peers.call(leader, &addr, &request).await {
                Ok(PeerResponse::Touched(r)) => r,
                Ok(other) => Err(format!("node {leader} answered {other:?}")),
                Err(e) => Err(format!("node {leader}: {e}")),
            }
        }
        _ => Err(format!("session scope {scope} has no leader here; retry")),
    }
}

/// Whether this replica has applied everything its log holds: only then may an absent record
/// mean a session that ended.
fn caught_up(scope: &Scope) -> bool {
    scope.metrics(|m| m.last_applied.map(|l| l.index()) >= m.last_log_index)
}

fn touch_as_leader(
    node: &Node,
    scope: &Scope,
    holder: u64,
    claim: bool,
    touches: &[(i64, i32)],
) -> Result<Touched, String> {
    if !caught_up(scope) {
        return Err("the session scope's new leader is catching up; retry".into());
    }
    let now = Instant::now();
    let mut answer = Touched::default();
    let state = scope.view().read();
    let mut clocks = lock(&node.0.sessions.clocks);
    let clocks = clocks.entry(scope.id).or_default();
    for &(id, timeout_ms) in touches {
        let open = state
            .tree
            .get(&record_path(id))
            .and_then(|z| SessionRecord::decode(&z.data).ok())
            .is_some_and(|r| !r.closing);
        if !open {
            answer.ended.push(id);
            continue;
        }
        let held_elsewhere = clocks
            .get(&id)
            .and_then(|c| c.holder)
            .is_some_and(|h| h != holder);
        if held_elsewhere && !claim {
            answer.moved.push(id);
            continue;
        }
        clocks.insert(
            id,
            Clock {
                deadline: now + Duration::from_millis(timeout_ms.max(0) as u64),
                holder: Some(holder),
            },
        );
    }
    Ok(answer)
}

/// Every `KEEPALIVE_TICK`: this node's keepalives, and, for the session scopes it leads, the
/// expiry of sessions nobody kept alive.
pub async fn run(node: Node) {
    let mut tick = tokio::time::interval(limits::KEEPALIVE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        keep_alive(&node).await;
        expire(&node);
    }
}

async fn keep_alive(node: &Node) {
    let heard = node.0.sessions.take_heard();
    let mut calls = Vec::new();
    for (root, touches) in heard {
        let node = node.clone();
        calls.push(async move {
            let asked = Instant::now();
            let ids: Vec<i64> = touches.iter().map(|t| t.0).collect();
            match touch(&node, &root, touches, false).await {
                Ok(touched) => {
                    node.0.sessions.confirmed(&ids, asked);
                    for id in touched.ended {
                        node.0.sessions.end_attached(id, expired(id));
                        node.0.watches.drop_session(id);
                    }
                    for id in touched.moved {
                        tracing::info!(
                            session = format!("{id:#x}"),
                            "the session resumed on another node; closing its connection here"
                        );
                        node.0.sessions.end_attached(id, moved(id));
                        node.0.watches.drop_session(id);
                    }
                }
                Err(e) => tracing::debug!("keepalive to session scope {root}: {e}"),
            }
        });
    }
    futures::future::join_all(calls).await;
    for id in node.0.sessions.release_unconfirmed(Instant::now()) {
        node.0.watches.drop_session(id);
        tracing::info!(
            session = format!("{id:#x}"),
            "the session scope has not confirmed this session's keepalives; \
             closing its stream so the client resumes on another node"
        );
    }
}

/// The session scopes this node leads: expire what is overdue, finish what is closing.
fn expire(node: &Node) {
    let now = Instant::now();
    let mut led = HashSet::new();
    for scope in node.scopes() {
        let root = scope.view().read().identity.root.clone();
        if scopekeeper_client::path::parent(&root) != Some(SESSIONS_ROOT) {
            continue;
        }
        let leads = scope.leader().is_some_and(|(l, _)| l == node.id());
        if !leads || !caught_up(&scope) {
            continue;
        }
        led.insert(scope.id);
        let mut due = Vec::new();
        {
            let state = scope.view().read();
            let Ok((names, _)) = state.tree.get_children(&root) else {
                continue;
            };
            let mut clocks = lock(&node.0.sessions.clocks);
            let clocks = clocks.entry(scope.id).or_default();
            let present: HashSet<i64> = names
                .iter()
                .filter_map(|n| u64::from_str_radix(n, 16).ok().map(|id| id as i64))
                .collect();
            clocks.retain(|id, _| present.contains(id));
            for id in present {
                match clocks.get(&id) {
                    Some(c) if c.deadline <= now => due.push(id),
                    Some(_) => {}
                    None => {
                        // First sight (a new leader): a full timeout, or at once if closing.
                        let record = state
                            .tree
                            .get(&record_path(id))
                            .and_then(|z| SessionRecord::decode(&z.data).ok());
                        match record {
                            Some(r) if !r.closing => {
                                let timeout = Duration::from_millis(r.timeout_ms.max(0) as u64);
                                clocks.insert(
                                    id,
                                    Clock {
                                        deadline: now + timeout,
                                        holder: None,
                                    },
                                );
                            }
                            _ => due.push(id),
                        }
                    }
                }
            }
        }
        for id in due {
            if lock(&node.0.sessions.ending).contains(&id) {
                continue;
            }
            let node = node.clone();
            tokio::spawn(async move {
                match end(&node, id).await {
                    Ok(()) => {}
                    Err(e) => tracing::warn!(
                        session = format!("{id:#x}"),
                        "ending an expired session failed; retrying: {e}"
                    ),
                }
            });
        }
    }
    lock(&node.0.sessions.clocks).retain(|scope, _| led.contains(scope));
}

/// Creates the session scopes once the root scope has a leader here; a no-op elsewhere and
/// once they exist.
pub async fn create_session_scopes(node: Node) {
    let wanted: Vec<String> = (0..SESSION_SCOPES as i64).map(session_scope_root).collect();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(root) = node.root() else {
            continue;
        };
        if !root.is_initialized() {
            continue;
        }
        let missing: Vec<String> = {
            let state = root.view().read();
            wanted
                .iter()
                .filter(|p| !state.delegations.contains_key(*p))
                .cloned()
                .collect()
        };
        if missing.is_empty() {
            return;
        }
        if root.leader().is_none_or(|(l, _)| l != node.id()) {
            continue;
        }
        for path in missing {
            match root.propose_session_scope(path.clone()).await {
                Ok(_) => tracing::info!(path, "session scope created"),
                Err(e) => tracing::debug!(path, "creating a session scope: {e:?}"),
            }
        }
    }
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Reads the cluster's session secret: hex, at least 16 bytes.
pub fn load_secret(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading the cluster's session secret {}; `scopekeeper certs ca` writes one beside the CA, \
             and every node needs the same",
            path.display()
        )
    })?;
    let hex = text.trim();
    if hex.len() < 32 || hex.len() % 2 != 0 {
        anyhow::bail!(
            "{}: a session secret is an even number of hex digits, at least 32",
            path.display()
        );
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&hex[i..i + 2], 16)
                .with_context(|| format!("{}: not hex", path.display()))
        })
        .collect()
}

/// Writes a new random session secret into a certificates directory, beside the CA.
pub fn write_secret(certs_dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let path = certs_dir.join(crate::config::SESSION_SECRET_FILE);
    std::fs::write(&path, hex + "\n").with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn ids_carry_the_node_and_passwords_check() {
        let sessions = Sessions::new(7, vec![1; 32]);
        let a = sessions.mint();
        let b = sessions.mint();
        assert_ne!(a.id, b.id);
        assert_eq!(a.id >> 48, 7);
        assert!(a.id > 0);
        assert!(sessions.check_password(&a).is_ok());
        let forged = SessionCredentials {
            id: b.id,
            password: a.password.clone(),
        };
        assert_eq!(
            sessions.check_password(&forged).map_err(|e| e.code),
            Err(ErrorCode::SessionExpired)
        );
        let other_cluster = Sessions::new(7, vec![2; 32]);
        assert!(other_cluster.check_password(&a).is_err());
    }

    #[test]
    fn timeouts_are_negotiated_into_bounds() {
        assert_eq!(negotiate(1), limits::SESSION_TIMEOUT_MIN_MS);
        assert_eq!(negotiate(i32::MAX), limits::SESSION_TIMEOUT_MAX_MS);
        assert_eq!(negotiate(5_000), 5_000);
    }
}
