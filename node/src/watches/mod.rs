//! Watches live on the node the client is connected to (DESIGN section 8). The [`WatchTable`]
//! says who watches what; this module feeds it: one feed per scope some watch depends on,
//! from the scope's own change feed where this node replicates it, else from a stream opened
//! to one of its anchors. Events go to the session's stream in order, and a reply that reveals
//! a change waits until the node has passed on that scope's events up to the reply's zxid.
//!
//! A feed that lags, breaks or sees its scope's state replaced by a snapshot re-checks the
//! scope's watches against the tree, as ZooKeeper's `SetWatches` does after a reconnect: a
//! watch whose node changed after the zxid it was armed at fires then.

pub mod table;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scopekeeper_client::proto::{
    ApiError, ArmedWatch, ErrorCode, Reply, Request, Response, WatchEvent, WatchKind,
};
use tokio::sync::{broadcast, watch};

use crate::node::Node;
use crate::peer::PeerRequest;
use crate::scope::state_machine::FeedItem;
use crate::storage::ScopeId;
use crate::tree::Change;
pub use table::WatchTable;

struct Feed {
    /// The scope's last zxid whose events have been passed on.
    delivered: watch::Sender<i64>,
    /// Where the feed's items began, once its source is open: changes at or below it came
    /// before the subscription and never pass through the feed.
    started: watch::Sender<Option<i64>>,
    task: tokio::task::AbortHandle,
}

#[derive(Default)]
pub struct Watches {
    table: Mutex<WatchTable>,
    feeds: Mutex<HashMap<ScopeId, Feed>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Watches {
    pub fn has_session(&self, session: i64) -> bool {
        lock(&self.table).has_session(session)
    }

    pub fn drop_session(&self, session: i64) {
        lock(&self.table).drop_session(session);
    }

    pub fn remove(&self, session: i64, p: &str, kind: Option<WatchKind>) -> usize {
        lock(&self.table).remove(session, p, kind)
    }

    /// Watches held on this node, every session's.
    pub fn held(&self) -> usize {
        lock(&self.table).len()
    }

    pub fn count(&self, session: i64, p: &str, kind: Option<WatchKind>) -> usize {
        lock(&self.table).count(session, p, kind)
    }
}

/// Passes events to the sessions they are for.
fn deliver(node: &Node, events: Vec<(i64, WatchEvent)>) {
    for (session, event) in events {
        node.0.sessions.push_event(session, event);
    }
}

/// Reads `path` for a watch of `kind` and leaves the watch, for a client's `Watch` request.
pub async fn watch(
    node: &Node,
    principal: &crate::policy::admission::Principal,
    session: i64,
    path: &str,
    kind: WatchKind,
) -> Response {
    crate::tree::checked_path(path)?;
    let guess = node.route(path).scope;
    lock(&node.0.watches.table).add(session, path, kind, guess)?;
    ensure_feed(node, guess);
    let read = match kind {
        WatchKind::Data => Request::GetData { path: path.into() },
        WatchKind::Child => Request::GetChildren { path: path.into() },
        WatchKind::Exist | WatchKind::Persistent | WatchKind::PersistentRecursive => {
            Request::Exists { path: path.into() }
        }
    };
    let (response, served_by) = Box::pin(crate::service::handle_routed(
        node,
        principal,
        session,
        Request::AtZxid(Box::new(read)),
        crate::limits::FORWARD_HOPS_MAX,
    ))
    .await;
    let (reply, zxid) = match (response, served_by) {
        (Ok(Reply::AtZxid { reply, zxid }), Some(route)) => match *reply {
            Ok(reply) => (reply, (route.scope, zxid)),
            Err(e) => {
                lock(&node.0.watches.table).remove(session, path, Some(kind));
                return Err(e);
            }
        },
        (Ok(other), _) => {
            lock(&node.0.watches.table).remove(session, path, Some(kind));
            return Err(ApiError::new(
                ErrorCode::SystemError,
                format!("a watch's read answered {other:?}"),
            ));
        }
        (Err(e), _) => {
            lock(&node.0.watches.table).remove(session, path, Some(kind));
            return Err(e);
        }
    };
    let (scope, zxid) = zxid;
    // An exists watch on a node that exists is a data watch.
    let kind = match (&reply, kind) {
        (Reply::Exists(Some(_)), WatchKind::Exist) => WatchKind::Data,
        _ => kind,
    };
    ensure_feed(node, scope);
    if kind == WatchKind::PersistentRecursive {
        follow_scopes_below(node, path).await;
    }
    let missed = lock(&node.0.watches.table).arm(session, path, kind, scope, zxid);
    deliver(node, missed);
    // A change after the read that came before the feed's subscription would never reach
    // the watch through the feed: look at the node again.
    let start = feed_start(node, scope).await;
    if start.is_none_or(|s| s > zxid) && node.0.watches.count(session, path, Some(kind)) > 0 {
        recheck(node, principal, session, path, kind, zxid).await?;
    }
    wait_delivered(node, scope, zxid).await;
    Ok(Reply::Watched {
        reply: Box::new(reply),
        zxid,
    })
}

/// Serves a request of a session that holds watches here: through `AtZxid`, so the reply
/// waits for the events it must follow.
pub async fn ordered(
    node: &Node,
    principal: &crate::policy::admission::Principal,
    session: i64,
    request: Request,
) -> Response {
    let sequential = matches!(request, Request::Sequential { .. });
    let (response, served_by) = Box::pin(crate::service::handle_routed(
        node,
        principal,
        session,
        Request::AtZxid(Box::new(request)),
        crate::limits::FORWARD_HOPS_MAX,
    ))
    .await;
    let (reply, zxid) = match (response?, served_by) {
        (Reply::AtZxid { reply, zxid }, Some(route)) => {
            wait_delivered(node, route.scope, zxid).await;
            (reply, zxid)
        }
        (Reply::AtZxid { reply, zxid }, None) => (reply, zxid),
        (other, _) => return Ok(other),
    };
    if sequential {
        // A sequential read is answered with the zxid it was read at, here too.
        return Ok(Reply::AtZxid { reply, zxid });
    }
    *reply
}

/// Re-arms a resumed session's watches here: each fires at once if its node changed after it
/// was armed (ZooKeeper's `SetWatches` rules), else waits here.
pub async fn set_watches(
    node: &Node,
    principal: &crate::policy::admission::Principal,
    session: i64,
    watches: Vec<ArmedWatch>,
) -> Response {
    for w in watches {
        recheck(node, principal, session, &w.path, w.kind, w.zxid).await?;
    }
    Ok(Reply::Synced)
}

/// Reads the node a watch is on and fires the watch if the node changed after `since`;
/// otherwise arms it anew at the read.
async fn recheck(
    node: &Node,
    principal: &crate::policy::admission::Principal,
    session: i64,
    path: &str,
    kind: WatchKind,
    since: i64,
) -> Result<(), ApiError> {
    crate::tree::checked_path(path)?;
    let read = match kind {
        WatchKind::Child => Request::GetChildren { path: path.into() },
        _ => Request::Exists { path: path.into() },
    };
    let (response, served_by) = Box::pin(crate::service::handle_routed(
        node,
        principal,
        0,
        Request::AtZxid(Box::new(read)),
        crate::limits::FORWARD_HOPS_MAX,
    ))
    .await;
    let (Reply::AtZxid { reply, zxid }, Some(route)) = (response?, served_by) else {
        return Err(ApiError::new(
            ErrorCode::SystemError,
            "a watch's re-check got no zxid",
        ));
    };
    let stat = match *reply {
        Ok(Reply::Exists(stat)) => stat,
        Ok(Reply::Children { stat, .. }) => Some(stat),
        Err(e) if e.code == ErrorCode::NoNode => None,
        Ok(other) => {
            return Err(ApiError::new(
                ErrorCode::SystemError,
                format!("a watch's re-check answered {other:?}"),
            ));
        }
        Err(e) => return Err(e),
    };
    let event = |kind| WatchEvent {
        kind,
        path: path.to_string(),
        zxid,
    };
    use scopekeeper_client::proto::EventKind;
    // An exists watch is on a node that did not exist; a data watch on one that did.
    let fired = match (kind, stat) {
        (WatchKind::Persistent | WatchKind::PersistentRecursive, _) => None,
        (WatchKind::Exist, Some(_)) => Some(event(EventKind::NodeCreated)),
        (WatchKind::Exist, None) => None,
        (WatchKind::Data | WatchKind::Child, None) => Some(event(EventKind::NodeDeleted)),
        (WatchKind::Data, Some(s)) if s.mzxid > since => Some(event(EventKind::NodeDataChanged)),
        (WatchKind::Child, Some(s)) if s.pzxid > since => {
            Some(event(EventKind::NodeChildrenChanged))
        }
        _ => None,
    };
    let mut table = lock(&node.0.watches.table);
    match fired {
        Some(e) => {
            table.remove(session, path, Some(kind));
            drop(table);
            deliver(node, vec![(session, e)]);
        }
        None => {
            table.remove(session, path, Some(kind));
            table.add(session, path, kind, route.scope)?;
            let missed = table.arm(session, path, kind, route.scope, zxid);
            drop(table);
            deliver(node, missed);
            ensure_feed(node, route.scope);
        }
    }
    Ok(())
}

/// Waits until the feed of `scope` has passed on its events up to `zxid`; if it does not in
/// time, re-checks the scope's watches against the tree instead.
async fn wait_delivered(node: &Node, scope: ScopeId, zxid: i64) {
    let delivered = lock(&node.0.watches.feeds)
        .get(&scope)
        .map(|f| f.delivered.subscribe());
    let Some(mut delivered) = delivered else {
        return;
    };
    let caught_up =
        tokio::time::timeout(crate::limits::FEED_WAIT, delivered.wait_for(|d| *d >= zxid))
            .await
            .is_ok_and(|r| r.is_ok());
    if !caught_up {
        tracing::debug!(
            scope,
            zxid,
            "a watch feed fell behind; re-checking its watches"
        );
        resync(node, scope).await;
    }
}

/// Where `scope`'s feed began, waiting for it to open (at most `FEED_WAIT`).
async fn feed_start(node: &Node, scope: ScopeId) -> Option<i64> {
    let started = lock(&node.0.watches.feeds)
        .get(&scope)
        .map(|f| f.started.subscribe())?;
    let mut started = started;
    let opened =
        tokio::time::timeout(crate::limits::FEED_WAIT, started.wait_for(|s| s.is_some())).await;
    match opened {
        Ok(Ok(s)) => *s,
        _ => None,
    }
}

/// Re-checks every armed watch counted in `scope`'s zxids.
async fn resync(node: &Node, scope: ScopeId) {
    let armed = lock(&node.0.watches.table).armed(Some(scope), None);
    recheck_all(node, armed).await;
}

async fn recheck_all(node: &Node, armed: Vec<(i64, String, WatchKind, i64)>) {
    let principal = crate::sessions::node_principal(node);
    for (session, path, kind, since) in armed {
        if let Err(e) = recheck(node, &principal, session, &path, kind, since).await {
            tracing::debug!(path, "re-checking a watch: {e}");
        }
    }
}

/// Subscribes to every scope below `path` (a recursive watch sees their changes too).
async fn follow_scopes_below(node: &Node, path: &str) {
    let principal = crate::sessions::node_principal(node);
    let mut queue = vec![node.route(path).root];
    while let Some(root) = queue.pop() {
        let request = Request::ScopeInfo { path: root };
        let served = Box::pin(crate::service::handle_client(node, &principal, 0, request)).await;
        if let Ok(Reply::Scope(info)) = served {
            ensure_feed(node, info.id);
            queue.extend(
                info.children
                    .into_iter()
                    .map(|(p, _)| p)
                    .filter(|p| scopekeeper_client::path::is_within(p, path)),
            );
        }
    }
}

/// A feed whose source cannot be opened re-checks its watches on every this many attempts
/// (200 ms apart).
const FEED_RECHECK_EVERY: u32 = 10;

/// Starts the feed of `scope` unless it runs.
fn ensure_feed(node: &Node, scope: ScopeId) {
    let mut feeds = lock(&node.0.watches.feeds);
    if feeds.get(&scope).is_some_and(|f| !f.task.is_finished()) {
        return;
    }
    let (delivered, _) = watch::channel(i64::MIN);
    let (started, _) = watch::channel(None);
    let task = tokio::spawn(run_feed(
        node.clone(),
        scope,
        delivered.clone(),
        started.clone(),
    ))
    .abort_handle();
    feeds.insert(
        scope,
        Feed {
            delivered,
            started,
            task,
        },
    );
}

/// Stops feeds no watch needs.
fn prune_feeds(node: &Node) {
    let table = lock(&node.0.watches.table);
    if !table.is_empty() {
        return;
    }
    drop(table);
    for (_, feed) in lock(&node.0.watches.feeds).drain() {
        feed.task.abort();
    }
}

/// Where a feed's items come from.
enum Source {
    Local(broadcast::Receiver<Arc<FeedItem>>),
    /// The send side is held open: closing it is how this node unsubscribes.
    Remote {
        _send: scopekeeper_transport::SendStream,
        recv: scopekeeper_transport::RecvStream,
    },
}

impl Source {
    /// The next item; `Err` when items were lost (lag, broken stream).
    async fn next(&mut self) -> Result<Arc<FeedItem>, String> {
        match self {
            Source::Local(rx) => rx.recv().await.map_err(|e| e.to_string()),
            Source::Remote { recv, .. } => scopekeeper_transport::frame::read_frame::<FeedItem>(
                recv,
                scopekeeper_transport::limits::PEER_FRAME_BYTES_MAX,
            )
            .await
            .map_err(|e| e.to_string())?
            .map(Arc::new)
            .ok_or_else(|| "the anchor closed the feed".to_string()),
        }
    }
}

/// A source of the scope's items, and the zxid up to which its changes came before it: the
/// feed has nothing to wait for up to there.
async fn open_source(node: &Node, scope: ScopeId) -> Option<(Source, i64)> {
    if let Some(s) = node.scope(scope).filter(|s| s.is_initialized()) {
        let (rx, published) = s.changes();
        return Some((Source::Local(rx), published));
    }
    let route = node.route_of(scope)?;
    for anchor in route.anchors.iter().filter(|a| a.node != node.id()) {
        let Ok((mut send, recv)) = node.0.peers.open_stream(anchor.node, &anchor.addr).await else {
            continue;
        };
        let request = PeerRequest::Subscribe { scope };
        if scopekeeper_transport::frame::write_frame(
            &mut send,
            &request,
            scopekeeper_transport::limits::PEER_FRAME_BYTES_MAX,
        )
        .await
        .is_ok()
        {
            let mut source = Source::Remote { _send: send, recv };
            // The anchor's first item says where its feed starts.
            let Ok(first) = source.next().await else {
                continue;
            };
            return Some((source, first.zxid));
        }
    }
    None
}

async fn run_feed(
    node: Node,
    scope: ScopeId,
    delivered: watch::Sender<i64>,
    started: watch::Sender<Option<i64>>,
) {
    let mut first = true;
    let mut failures = 0u32;
    loop {
        let Some((mut source, published)) = open_source(&node, scope).await else {
            // The scope may be gone (merged into its parent): re-checking its watches finds
            // where their paths are governed now and moves them there. Then, or if it is only
            // unreachable for a while, try again.
            if failures.is_multiple_of(FEED_RECHECK_EVERY) {
                resync(&node, scope).await;
                if lock(&node.0.watches.table)
                    .armed(Some(scope), None)
                    .is_empty()
                {
                    return;
                }
            }
            failures = failures.wrapping_add(1);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        failures = 0;
        // A watch armed at or below `published` has nothing more to wait for; what changed
        // between its read and the subscription is found by the re-check below.
        delivered.send_modify(|d| *d = (*d).max(published));
        started.send_replace(Some(published));
        // Whatever happened while no feed ran is found by re-checking.
        if !first {
            resync(&node, scope).await;
        }
        first = false;
        loop {
            let item = match source.next().await {
                Ok(item) => item,
                Err(why) => {
                    tracing::debug!(scope, "watch feed interrupted: {why}");
                    break;
                }
            };
            if item.reset {
                resync(&node, scope).await;
            }
            let mut carved = Vec::new();
            let events: Vec<(i64, WatchEvent)> = {
                let mut table = lock(&node.0.watches.table);
                item.changes
                    .iter()
                    .flat_map(|(zxid, change)| {
                        if let Change::Carved(p) | Change::Absorbed(p) = change {
                            carved.push(p.clone());
                        }
                        table.apply(scope, *zxid, change)
                    })
                    .collect()
            };
            deliver(&node, events);
            delivered.send_replace(item.zxid);
            for p in carved {
                follow_carve(&node, &p).await;
            }
            prune_feeds(&node);
        }
    }
}

/// A subtree moved to a child scope (or back from one that merged): its watches now count in
/// the zxids of the scope that has it and hear from that scope's feed; recursive watches
/// above it hear from there too.
async fn follow_carve(node: &Node, p: &str) {
    let armed = lock(&node.0.watches.table).armed(None, Some(p));
    recheck_all(node, armed).await;
    let recursive_above = lock(&node.0.watches.table)
        .armed(None, None)
        .into_iter()
        .any(|(_, w, kind, _)| {
            kind == WatchKind::PersistentRecursive && scopekeeper_client::path::is_within(p, &w)
        });
    if recursive_above {
        follow_scopes_below(node, p).await;
    }
}

/// Serves a peer's `Subscribe`: this scope's feed items, until the peer goes.
pub async fn serve_subscription(
    node: &Node,
    scope: ScopeId,
    send: &mut scopekeeper_transport::SendStream,
) -> Result<(), scopekeeper_transport::Error> {
    let Some(s) = node.scope(scope).filter(|s| s.is_initialized()) else {
        return Err(scopekeeper_transport::Error::Closed(format!(
            "node {} does not replicate scope {scope}",
            node.id()
        )));
    };
    let (mut rx, published) = s.changes();
    // Where the subscriber's items start.
    let start = crate::scope::state_machine::FeedItem {
        zxid: published,
        changes: Vec::new(),
        reset: false,
    };
    scopekeeper_transport::frame::write_frame(
        send,
        &start,
        scopekeeper_transport::limits::PEER_FRAME_BYTES_MAX,
    )
    .await?;
    loop {
        let item = match rx.recv().await {
            Ok(item) => item,
            // The subscriber re-checks after any gap; end the stream so it knows.
            Err(_) => return Ok(()),
        };
        scopekeeper_transport::frame::write_frame(
            send,
            &*item,
            scopekeeper_transport::limits::PEER_FRAME_BYTES_MAX,
        )
        .await?;
    }
}
