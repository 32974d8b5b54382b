//! A scope's state machine: the tree in memory, every znode and the applied position persisted
//! in fjall in one batch per apply, snapshots as files.
//!
//! Apply is boring on purpose: decode, judge (`governance`), `Tree::apply`, write what it
//! touched, answer. Nothing here reads a clock or depends on which node runs it.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};

use super::genesis::{self, Newborns};
use super::governance::{self, ActivePolicy, Governance, GovernanceMeta};
use super::load::Load;
use super::snapshot::{self, SnapshotFile};
use super::snapshot_builder::{Frozen, SnapshotBuilder};
use super::tenure::Tenure;
use super::types::{
    Body, CommandOutcome, CommandResult, LogId, Proposal, SetPolicy, SnapshotMeta,
    StoredMembership, TxnResult, TypeConfig, child_scope_id, genesis_log_id,
};
use crate::directory::{Anchor, Route, ScopeIdentity};
use crate::policy::admission::Principal;
use crate::policy::engine::{PolicyEngine, Supply};
use crate::storage::{ScopeId, Store, corrupt, decode, encode, io_err, key};
use crate::tree::{Outcome, Stamp, Txn};
use crate::tree::{StoredZnode, Tree};
use scopekeeper_client::ApiError;
use scopekeeper_client::proto::{ClusterNode, NodeChange};

pub(super) const APPLIED: &[u8] = b"applied";

/// The state machine's position, place in the namespace and governance, persisted with the
/// tree in the same batch.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct AppliedMeta {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    last_zxid: i64,
    governance: GovernanceMeta,
    pub(super) identity: ScopeIdentity,
    /// Child scopes by the path delegated to them.
    delegations: BTreeMap<String, Route>,
    replica_high: u64,
    genesis_high: u64,
    nodes: BTreeMap<u64, ClusterNode>,
    load: Load,
    last_split_ms: i64,
    sessions: crate::tree::SessionBook,
    sealed: Option<ScopeId>,
    absorbed: BTreeSet<ScopeId>,
    /// Set while a new child's znode rows are still its parent's (see `genesis`).
    pub(super) genesis_from: Option<ScopeId>,
}

impl AppliedMeta {
    /// The persisted form of a scope's state, without its znodes.
    pub(super) fn of(state: &ScopeState) -> AppliedMeta {
        AppliedMeta {
            last_applied: state.last_applied,
            membership: state.membership.clone(),
            last_zxid: state.tree.last_zxid(),
            governance: state.governance.meta(),
            identity: state.identity.clone(),
            delegations: state.delegations.clone(),
            replica_high: state.replica_high,
            genesis_high: state.genesis_high,
            nodes: state.nodes.clone(),
            load: state.load.clone(),
            last_split_ms: state.last_split_ms,
            sessions: state.tree.session_book().clone(),
            sealed: state.sealed,
            absorbed: state.absorbed.clone(),
            genesis_from: None,
        }
    }
}

/// What readers see: the tree, the policy, and how far the log has been applied.
pub struct ScopeState {
    pub tree: Tree,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub governance: Governance,
    pub identity: ScopeIdentity,
    pub delegations: BTreeMap<String, Route>,
    /// The highest raft id any replica of the scope has had: a new replica takes a higher one,
    /// so no id is ever reused.
    pub replica_high: u64,
    /// The highest raft id among the scope's first members: a replica above it was added later
    /// and starts empty; one at or below it gets its state from the scope's creation.
    pub genesis_high: u64,
    /// The cluster's nodes (the root scope's state only; empty elsewhere).
    pub nodes: BTreeMap<u64, ClusterNode>,
    /// Write rates, for split decisions.
    pub load: Load,
    /// Leader-stamped time the scope was created or last split off a child.
    pub last_split_ms: i64,
    /// Set once the scope is merging into this parent scope: it takes no more writes, and its
    /// state is final for the parent to take back.
    pub sealed: Option<ScopeId>,
    /// Child scopes that merged back: a replica of one still on this node (a crash came
    /// between the merge and its retirement) is retired when found.
    pub absorbed: BTreeSet<ScopeId>,
}

impl ScopeState {
    /// The position a snapshot of this state stands at.
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
        }
    }

    /// The route to this scope, with its anchors from its current membership.
    pub fn route(&self) -> Route {
        Route {
            scope: self.identity.id,
            root: self.identity.root.clone(),
            epoch: self.identity.epoch,
            anchors: anchors_of(&self.membership),
        }
    }

    /// The delegation covering `p`, if `p` is in a child scope.
    pub fn delegation_of(&self, p: &str) -> Option<&Route> {
        self.tree
            .delegation_of(p)
            .and_then(|d| self.delegations.get(d))
    }
}

/// A membership's voters and learners, as anchors.
pub fn anchors_of(membership: &StoredMembership) -> Vec<Anchor> {
    membership
        .membership()
        .nodes()
        .map(|(_, anchor)| Anchor {
            node: anchor.node,
            addr: anchor.addr.clone(),
        })
        .collect()
}

/// What a scope's apply tells the node it runs on, after the batch is durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScopeEvent {
    /// A child scope was written to this node's storage by `parent`'s apply.
    Delegated { parent: ScopeId, child: ScopeId },
    /// `parent` took back the state of its child scope `child`, which is no more: a replica
    /// of it here is retired.
    Absorbed { parent: ScopeId, child: ScopeId },
    /// A snapshot replaced the scope's state; its delegations may name scopes this node must
    /// now replicate.
    SnapshotInstalled { scope: ScopeId },
    /// A membership entry was applied: the raft ids of every member before and after it. A
    /// replica in `before` but not `after` was removed.
    MembershipChanged {
        scope: ScopeId,
        before: BTreeSet<u64>,
        after: BTreeSet<u64>,
    },
}

pub type ScopeEvents = tokio::sync::mpsc::UnboundedSender<ScopeEvent>;

/// Shared, read-mostly access to a scope's state.
#[derive(Clone)]
pub struct ScopeView(Arc<RwLock<ScopeState>>);

impl ScopeView {
    pub fn read(&self) -> RwLockReadGuard<'_, ScopeState> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, ScopeState> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct ScopeStateMachine {
    scope: ScopeId,
    store: Store,
    engine: PolicyEngine,
    view: ScopeView,
    snapshot_dir: PathBuf,
    events: Option<ScopeEvents>,
    newborns: Newborns,
    /// Paths changed in memory whose rows are not written yet: while the scope's rows were
    /// still its parent's (see `genesis`), and, after its birth, by the batches of plain
    /// transactions whose rows are written together (see `apply`).
    unpersisted: Arc<std::sync::Mutex<BTreeSet<String>>>,
    /// Entries applied since the rows and the applied position were last written.
    deferred_entries: usize,
    feed: ChangeFeed,
    /// Every write of this replica's rows and snapshot files goes through it.
    tenure: Tenure,
}

/// What one apply changed, for watches: published once the changes are visible (and
/// committed in the log), in apply order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedItem {
    /// The scope's last zxid after it: every change up to here has been published.
    pub zxid: i64,
    /// Each change with the zxid of its transaction, in order.
    pub changes: Vec<(i64, crate::tree::Change)>,
    /// The state was replaced by a snapshot: changes in between are unknown.
    pub reset: bool,
}

/// The scope's stream of [`FeedItem`]s. A subscriber that falls `FEED_ITEMS_MAX` behind
/// misses items and is told so (`Lagged`); it must re-check what it watches.
///
/// The channel exists only while somebody listens: its buffer is `FEED_ITEMS_MAX` slots
/// allocated up front (about 125 KB), and most replicas of a node with many scopes are never
/// watched through it (heaptrack, 100 scopes on the dev cluster: 41 MB of 908).
#[derive(Clone)]
pub struct ChangeFeed(std::sync::Arc<std::sync::Mutex<FeedState>>);

struct FeedState {
    /// The zxid of the last item sent, updated under the same lock as the send, so a
    /// subscriber learns exactly where its items start.
    published: i64,
    sender: Option<tokio::sync::broadcast::Sender<std::sync::Arc<FeedItem>>>,
}

impl ChangeFeed {
    fn new(published: i64) -> ChangeFeed {
        ChangeFeed(std::sync::Arc::new(std::sync::Mutex::new(FeedState {
            published,
            sender: None,
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The items from now on, and the zxid up to which every earlier item was sent: every
    /// change above it comes through the receiver.
    pub fn subscribe(
        &self,
    ) -> (
        tokio::sync::broadcast::Receiver<std::sync::Arc<FeedItem>>,
        i64,
    ) {
        let mut state = self.state();
        let receiver = state
            .sender
            .get_or_insert_with(|| {
                tokio::sync::broadcast::Sender::new(crate::limits::FEED_ITEMS_MAX)
            })
            .subscribe();
        (receiver, state.published)
    }

    fn publish(&self, item: FeedItem) {
        let mut state = self.state();
        state.published = state.published.max(item.zxid);
        // Nobody listening is the usual case; the last listener gone, the buffer goes too.
        if let Some(sender) = &state.sender {
            if sender.receiver_count() == 0 {
                state.sender = None;
            } else {
                let _ = sender.send(std::sync::Arc::new(item));
            }
        }
    }

    /// Whether anyone follows the feed: watches on this node, or a feed stream to another.
    fn has_listeners(&self) -> bool {
        self.state()
            .sender
            .as_ref()
            .is_some_and(|s| s.receiver_count() > 0)
    }
}

fn load_component(store: &Store, hash: &crate::policy::PolicyHash) -> io::Result<Arc<Vec<u8>>> {
    let bytes = store
        .policies
        .get(hash.0)
        .map_err(|e| io_err("reading a policy component", e))?
        .ok_or_else(|| {
            corrupt(
                "policy components",
                &format!("the active policy {hash} is missing"),
            )
        })?;
    let body = crate::storage::unseal("policy component", &bytes)?.to_vec();
    if crate::policy::PolicyHash::of(&body) != *hash {
        return Err(corrupt(
            "policy components",
            "a component does not match its hash",
        ));
    }
    Ok(Arc::new(body))
}

/// The scope's tree as its rows in storage hold it. Rows below a delegation are a new child's
/// that its creation has not moved yet (see `genesis`): not this scope's.
fn load_tree(store: &Store, scope: ScopeId, meta: &AppliedMeta) -> io::Result<Tree> {
    let mut stored = Vec::new();
    for guard in store.tree.prefix(scope.to_be_bytes()) {
        let (k, v) = guard
            .into_inner()
            .map_err(|e| io_err("reading the tree", e))?;
        let path = String::from_utf8(k[8..].to_vec())
            .map_err(|_| corrupt("znode key", "path is not UTF-8"))?;
        if is_delegated(&path, &meta.delegations) {
            continue;
        }
        stored.push((path, decode::<StoredZnode>("znode", &v)?));
    }
    let tree = if stored.is_empty() && meta.last_applied.is_none() {
        Tree::placeholder(&meta.identity.root)
    } else {
        Tree::from_stored(
            &meta.identity.root,
            meta.last_zxid,
            stored,
            meta.delegations.keys().cloned(),
        )
        .map_err(|e| corrupt("tree", &e))?
    };
    Ok(tree)
}

/// Whether `p` is a delegated path or below one.
fn is_delegated(p: &str, delegations: &BTreeMap<String, Route>) -> bool {
    let mut at = Some(p);
    while let Some(q) = at {
        if delegations.contains_key(q) {
            return true;
        }
        at = scopekeeper_client::path::parent(q);
    }
    false
}

/// The scopes whose state this node's storage holds, in id order.
pub fn stored_scope_ids(store: &Store) -> io::Result<Vec<ScopeId>> {
    let mut ids = Vec::new();
    for guard in store.sm_meta.iter() {
        let k = guard
            .key()
            .map_err(|e| io_err("listing stored scopes", e))?;
        if k.len() == 8 + APPLIED.len() && &k[8..] == APPLIED {
            let mut id = [0u8; 8];
            id.copy_from_slice(&k[..8]);
            ids.push(u64::from_be_bytes(id));
        }
    }
    Ok(ids)
}

impl ScopeStateMachine {
    /// Loads the scope's tree from fjall, first finishing any snapshot install a crash
    /// interrupted (a snapshot file newer than the applied position). A scope with nothing
    /// stored yet starts as `fresh` says (a replica waiting for its first snapshot).
    pub fn open(
        store: Store,
        scope: ScopeId,
        engine: PolicyEngine,
        fresh: ScopeIdentity,
        events: Option<ScopeEvents>,
        newborns: Newborns,
    ) -> io::Result<Self> {
        let snapshot_dir = snapshot::scope_dir(&store, scope);
        snapshot::remove_temporaries(&snapshot_dir)?;
        let mut meta: AppliedMeta = match store
            .sm_meta
            .get(key(scope, APPLIED))
            .map_err(|e| io_err("reading the applied position", e))?
        {
            Some(v) => decode("applied position", &v)?,
            None => AppliedMeta {
                identity: fresh,
                ..AppliedMeta::default()
            },
        };
        let carved = newborns
            .take(scope)
            .filter(|c| c.last_applied == meta.last_applied && c.identity == meta.identity);
        let mut tree = match carved {
            Some(c) => c.tree,
            None => {
                if let Some(parent) = meta.genesis_from {
                    genesis::finish_from_parent_rows(&store, scope, parent, &mut meta)?;
                }
                load_tree(&store, scope, &meta)?
            }
        };
        tree.set_session_book(meta.sessions.clone());
        let governance = Governance {
            active: match &meta.governance.active {
                Some((hash, info)) => Some(ActivePolicy {
                    hash: *hash,
                    info: info.clone(),
                    component: load_component(&store, hash)?,
                }),
                None => None,
            },
            history: meta.governance.history.clone(),
            judged: meta.governance.judged,
        };
        // Everything the stored tree holds happened before anyone could subscribe.
        let feed = ChangeFeed::new(tree.last_zxid());
        let sm = ScopeStateMachine {
            scope,
            store,
            engine,
            view: ScopeView(Arc::new(RwLock::new(ScopeState {
                tree,
                last_applied: meta.last_applied,
                membership: meta.membership,
                governance,
                identity: meta.identity,
                delegations: meta.delegations,
                replica_high: meta.replica_high,
                genesis_high: meta.genesis_high,
                nodes: meta.nodes,
                load: meta.load,
                last_split_ms: meta.last_split_ms,
                sealed: meta.sealed,
                absorbed: meta.absorbed,
            }))),
            snapshot_dir,
            events,
            newborns,
            unpersisted: Default::default(),
            deferred_entries: 0,
            feed,
            tenure: Tenure::begin(),
        };
        if let Some(path) = snapshot::newest(&sm.snapshot_dir)? {
            let header = snapshot::read_header(&path)?;
            if header.meta.last_log_id > meta.last_applied {
                tracing::warn!(
                    scope,
                    "finishing a snapshot install interrupted by a crash: {}",
                    path.display()
                );
                sm.load_snapshot_into_store(&path)?;
            }
        }
        Ok(sm)
    }

    pub fn view(&self) -> ScopeView {
        self.view.clone()
    }

    pub fn feed(&self) -> ChangeFeed {
        self.feed.clone()
    }

    /// The replica's tenure, for its log to share.
    pub fn tenure(&self) -> Tenure {
        self.tenure.clone()
    }

    /// The scope as it is now, for a snapshot read from its rows rather than from memory
    /// (see `snapshot_builder`); `None` if its rows do not hold all of it yet. Called between
    /// two applies, when every applied change is in the rows.
    fn freeze(&self) -> Option<Frozen> {
        let unpersisted = !self
            .unpersisted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        if unpersisted || self.newborns.is_pending(self.scope) {
            return None;
        }
        let state = self.view.read();
        let meta = state.snapshot_meta();
        let header = snapshot::header(&meta, &state)
            .inspect_err(|e| tracing::warn!(scope = self.scope, "encoding a snapshot header: {e}"))
            .ok()?;
        Some(Frozen {
            meta,
            header,
            rows: self.store.db.snapshot(),
            delegated: state.tree.delegated().clone(),
            znodes: state.tree.len() as u64,
        })
    }

    /// Adds the applied position and governance to `batch`, so they commit with the data.
    fn record_applied(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        state: &ScopeState,
    ) -> io::Result<()> {
        let meta = AppliedMeta::of(state);
        batch.insert(
            &self.store.sm_meta,
            key(self.scope, APPLIED),
            encode("applied position", &meta)?,
        );
        Ok(())
    }

    /// Adds the rows of `paths` as `state` has them to `batch` (a removal for a path gone).
    /// A znode carved off by this batch (`created`) keeps its row here, as the carve left it,
    /// until its new scope's birth moves it.
    fn write_rows(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        state: &ScopeState,
        paths: &BTreeSet<String>,
        created: &[(ScopeState, genesis::FirstSnapshot)],
    ) -> io::Result<()> {
        for p in paths {
            let k = key(self.scope, p.as_bytes());
            let carved = || created.iter().find_map(|(child, _)| child.tree.get(p));
            match state.tree.get(p).or_else(carved) {
                Some(z) => batch.insert(&self.store.tree, k, encode("znode", &z.stored_ref())?),
                None => batch.remove(&self.store.tree, k),
            }
        }
        Ok(())
    }

    /// Writes what earlier applies left unwritten (see `apply`), so that the rows and the
    /// applied position hold exactly the applied state. A scope not born yet has nothing of
    /// its own to write.
    fn persist_deferred(&mut self) -> io::Result<()> {
        if self.newborns.is_pending(self.scope) {
            return Ok(());
        }
        let touched =
            std::mem::take(&mut *self.unpersisted.lock().unwrap_or_else(|e| e.into_inner()));
        if touched.is_empty() && self.deferred_entries == 0 {
            return Ok(());
        }
        let mut batch = self.store.db.batch();
        {
            let state = self.view.read();
            self.write_rows(&mut batch, &state, &touched, &[])?;
            self.record_applied(&mut batch, &state)?;
        }
        let written = self.tenure.write("persisting deferred rows", || {
            batch
                .commit()
                .map_err(|e| io_err("persisting deferred rows", e))
        });
        if let Err(e) = written {
            // Not written: keep them for the next try.
            self.unpersisted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(touched);
            return Err(e);
        }
        self.deferred_entries = 0;
        Ok(())
    }

    fn notify(&self, event: ScopeEvent) {
        if let Some(events) = &self.events {
            // The node is shutting down if nobody listens; the state is durable either way.
            let _ = events.send(event);
        }
    }

    /// Writes a new child's meta into `batch`, marked as having its znode rows still under
    /// this scope's keys (`genesis` moves them once the batch is durable), and its policy.
    fn write_child_meta(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        child: &ScopeState,
    ) -> io::Result<()> {
        if let Some(active) = &child.governance.active {
            batch.insert(
                &self.store.policies,
                active.hash.0,
                crate::storage::seal(&active.component),
            );
        }
        let meta = AppliedMeta {
            genesis_from: Some(self.scope),
            ..AppliedMeta::of(child)
        };
        batch.insert(
            &self.store.sm_meta,
            key(child.identity.id, APPLIED),
            encode("applied position", &meta)?,
        );
        Ok(())
    }

    /// Replaces the scope's rows in fjall and its in-memory state with a snapshot's, in one
    /// atomic batch.
    fn load_snapshot_into_store(&self, path: &std::path::Path) -> io::Result<()> {
        let contents = snapshot::decode(path)?;
        let header = contents.header;
        let mut tree = Tree::from_stored(
            &header.identity.root,
            header.last_zxid,
            contents.znodes.clone(),
            header.delegations.keys().cloned(),
        )
        .map_err(|e| corrupt("snapshot tree", &e))?;
        tree.set_session_book(header.sessions.clone());
        let mut batch = self.store.db.batch();
        for guard in self.store.tree.prefix(self.scope.to_be_bytes()) {
            let k = guard.key().map_err(|e| io_err("reading the tree", e))?;
            batch.remove(&self.store.tree, k);
        }
        for (p, z) in &contents.znodes {
            batch.insert(
                &self.store.tree,
                key(self.scope, p.as_bytes()),
                encode("znode", z)?,
            );
        }
        let governance = Governance {
            active: contents.policy.map(|(hash, info, component)| ActivePolicy {
                hash,
                info,
                component: Arc::new(component),
            }),
            history: header.history.clone(),
            judged: header.judged,
        };
        if let Some(active) = &governance.active {
            batch.insert(
                &self.store.policies,
                active.hash.0,
                crate::storage::seal(&active.component),
            );
        }
        let state = ScopeState {
            tree,
            last_applied: header.meta.last_log_id,
            membership: header.meta.last_membership.clone(),
            governance,
            identity: header.identity.clone(),
            delegations: header.delegations.clone(),
            replica_high: header.replica_high,
            genesis_high: header.genesis_high,
            nodes: header.nodes.clone(),
            load: header.load.clone(),
            last_split_ms: header.last_split_ms,
            sealed: header.sealed,
            absorbed: header.absorbed,
        };
        self.record_applied(&mut batch, &state)?;
        self.tenure.write("installing a snapshot", || {
            batch
                .commit()
                .map_err(|e| io_err("installing a snapshot", e))
        })?;
        self.store.sync_now()?;
        let zxid = state.tree.last_zxid();
        *self.view.write() = state;
        // The rows are the snapshot's now.
        self.unpersisted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.feed.publish(FeedItem {
            zxid,
            changes: Vec::new(),
            reset: true,
        });
        Ok(())
    }
}

/// Milliseconds from `then` to `now` of leader-stamped time; 0 if the clock stepped back.
fn ms_since(then: i64, now: i64) -> u64 {
    u64::try_from(now.saturating_sub(then)).unwrap_or(0)
}

/// Who a split is proposed by, as the scope's policy sees the `delegate` mutation.
fn split_principal() -> Principal {
    Principal {
        id: "scope-split".into(),
        roles: vec!["system".into()],
        ids: Vec::new(),
    }
}

/// Counts a committed transaction's writes in the scope's load figures.
fn record_load(state: &mut ScopeState, txn: &Txn, time_ms: i64) {
    let root = state.identity.root.clone();
    let ops: &[scopekeeper_client::proto::Op] = match txn {
        Txn::Single(op) => std::slice::from_ref(op),
        Txn::Multi(ops) => ops,
        Txn::Delegate { .. } | Txn::Session(_) | Txn::Reap { .. } => &[],
    };
    for op in ops {
        if !matches!(op, scopekeeper_client::proto::Op::Check { .. }) {
            state
                .load
                .record(&root, crate::tree::governing_path(op), time_ms);
        }
    }
}

/// Nodes in the root scope's membership are in the registry: the bootstrap voters register
/// themselves this way, with the labels their configuration gave them.
fn register_members(state: &mut ScopeState) {
    for (_, anchor) in state.membership.membership().nodes() {
        state
            .nodes
            .entry(anchor.node)
            .or_insert_with(|| ClusterNode {
                id: anchor.node,
                addr: anchor.addr.clone(),
                labels: anchor.labels.clone(),
                draining: false,
            });
    }
}

/// Applies a change to the node registry. Deterministic checks only.
fn change_nodes(
    state: &mut ScopeState,
    principal: &Principal,
    change: &NodeChange,
) -> Result<(), ApiError> {
    use scopekeeper_client::ErrorCode;
    governance::check_admin(principal, "changing the cluster's nodes")?;
    if state.identity.id != crate::storage::ROOT_SCOPE {
        return Err(ApiError::new(
            ErrorCode::BadArguments,
            "the node registry lives in the root scope",
        ));
    }
    let missing =
        |id: u64| ApiError::new(ErrorCode::NoNode, format!("node {id} is not registered"));
    match change {
        NodeChange::Join { id, addr, labels } => match state.nodes.get_mut(id) {
            Some(known) if known.addr != *addr => Err(ApiError::new(
                ErrorCode::NodeExists,
                format!(
                    "node {id} is registered at {}; a node that lost its data must join under a new id",
                    known.addr
                ),
            )),
            Some(known) => {
                known.labels = labels.clone();
                known.draining = false;
                Ok(())
            }
            None => {
                state.nodes.insert(
                    *id,
                    ClusterNode {
                        id: *id,
                        addr: addr.clone(),
                        labels: labels.clone(),
                        draining: false,
                    },
                );
                Ok(())
            }
        },
        NodeChange::Drain { id } => {
            let node = state.nodes.get_mut(id).ok_or_else(|| missing(*id))?;
            node.draining = true;
            Ok(())
        }
        NodeChange::Forget { id } => {
            let node = state.nodes.get(id).ok_or_else(|| missing(*id))?;
            if !node.draining {
                return Err(ApiError::new(
                    ErrorCode::BadArguments,
                    format!(
                        "node {id} must be drained first (`scopekeeper node remove` does both)"
                    ),
                ));
            }
            if state
                .membership
                .membership()
                .nodes()
                .any(|(_, a)| a.node == *id)
            {
                return Err(ApiError::new(
                    ErrorCode::NotEmpty,
                    format!(
                        "node {id} still anchors the root scope; wait for placement to move it"
                    ),
                ));
            }
            state.nodes.remove(id);
            Ok(())
        }
    }
}

/// What a sealed scope answers every transaction: it is merging, and its parent will govern
/// the path in a moment, so the serving node routes the request again.
fn sealed_refusal(root: &str, txn: &Txn) -> Outcome {
    use scopekeeper_client::ErrorCode;
    use scopekeeper_client::proto::MultiSlot;
    let error = || {
        ApiError::new(
            ErrorCode::WrongScope,
            format!("the scope rooted at {root} is merging into its parent; retry"),
        )
    };
    match txn {
        Txn::Multi(ops) => Outcome::Multi(
            ops.iter()
                .map(|_| MultiSlot::Failed(ErrorCode::WrongScope))
                .collect(),
        ),
        Txn::Session(_) => Outcome::Session(Err(error())),
        Txn::Delegate { .. } => Outcome::Delegated(Err(error())),
        Txn::Single(_) | Txn::Reap { .. } => Outcome::Single(Err(error())),
    }
}

/// Applies a Seal entry: the scope takes no more writes, for good. `into` is the scope its
/// leader found delegating it (the one it was created from, or one split from that); the
/// parent's apply of the Absorb checks the delegation itself.
fn seal(state: &mut ScopeState, into: ScopeId) -> Result<(), ApiError> {
    use scopekeeper_client::ErrorCode;
    if state.identity.parent.is_none() {
        return Err(ApiError::new(
            ErrorCode::BadArguments,
            format!(
                "the scope rooted at {} has no parent to merge into",
                state.identity.root
            ),
        ));
    }
    if !state.delegations.is_empty() {
        return Err(ApiError::new(
            ErrorCode::BadArguments,
            format!(
                "the scope rooted at {} has child scopes; they must merge into it first",
                state.identity.root
            ),
        ));
    }
    state.sealed = Some(into);
    Ok(())
}

/// Applies an Absorb entry: a sealed child's final state comes back into this scope's tree.
/// Refused unless the child is still delegated here (a second Absorb of the same child is
/// refused: it merged already). The entry carries the state, so the anchors need not match
/// here; the merge loop asks for the same anchors before it seals.
fn absorb_child(
    state: &mut ScopeState,
    absorb: &crate::scope::types::Absorb,
    touched: &mut BTreeSet<String>,
) -> Result<(), ApiError> {
    use scopekeeper_client::ErrorCode;
    let refuse = |why: String| Err(ApiError::new(ErrorCode::BadArguments, why));
    match state.delegations.get(&absorb.root) {
        Some(route) if route.scope == absorb.child => {}
        _ => {
            return refuse(format!(
                "{} is not delegated to scope {} here",
                absorb.root, absorb.child
            ));
        }
    }
    let paths = state
        .tree
        .absorb(
            &absorb.root,
            absorb.znodes.clone(),
            &absorb.book,
            absorb.last_zxid,
        )
        .map_err(|e| ApiError::new(ErrorCode::BadArguments, e))?;
    touched.extend(paths);
    state.delegations.remove(&absorb.root);
    state.absorbed.insert(absorb.child);
    state.identity.epoch += 1;
    Ok(())
}

/// Who decided a delegation, which says what it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DelegationKind {
    /// An admin's `scope create`: the admin role and this scope's policy's consent.
    Admin,
    /// A split the scope decided itself: its policy's consent, no role.
    Split,
    /// A session scope: the cluster's bookkeeping, no policy at all.
    Session,
}

/// A Delegate entry, as apply sees it.
struct Delegation<'a> {
    stamp: Stamp,
    kind: DelegationKind,
    principal: &'a Principal,
    path: &'a str,
    policy: Option<&'a SetPolicy>,
    log_index: u64,
}

/// Session scopes sit right below `/zookeeper/sessions`, carved from the root scope.
fn session_scope_allowed(p: &str) -> Result<(), ApiError> {
    use scopekeeper_client::ErrorCode;
    if scopekeeper_client::path::parent(p) == Some(crate::tree::session::SESSIONS_ROOT) {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::BadArguments,
        format!(
            "{p} cannot be a session scope: those sit right below {}",
            crate::tree::session::SESSIONS_ROOT
        ),
    ))
}

impl ScopeStateMachine {
    /// The policies a batch of entries is judged by: the active one, and any an entry of the
    /// batch sets.
    fn policies_to_judge(
        &self,
        entries: &[EntryResponder<TypeConfig>],
    ) -> Vec<(crate::policy::PolicyHash, Arc<Vec<u8>>)> {
        let active =
            (self.view.read().governance.active.as_ref()).map(|a| (a.hash, a.component.clone()));
        let set = entries
            .iter()
            .filter_map(|(entry, _)| match &entry.payload {
                EntryPayload::Normal(command) => match &command.body {
                    Body::SetPolicy { set, .. } => Some((
                        crate::policy::PolicyHash::of(&set.component),
                        Arc::new(set.component.clone()),
                    )),
                    _ => None,
                },
                _ => None,
            });
        active.into_iter().chain(set).collect()
    }

    /// Carves a session scope out with no policy judging, creating the znodes above it.
    fn carve_session_scope(
        &self,
        state: &mut ScopeState,
        stamp: Stamp,
        at: &str,
        touched: &mut BTreeSet<String>,
    ) -> crate::tree::Applied {
        let mut above: Vec<&str> = scopekeeper_client::path::ancestors_and_self(at)
            .skip(1)
            .take_while(|a| *a != state.identity.root)
            .collect();
        above.reverse();
        use scopekeeper_client::proto::{Acl, CreateMode, Id, Op, perms};
        let mut wanted: Vec<(&str, Vec<Acl>)> =
            above.into_iter().map(|p| (p, Vec::new())).collect();
        // ZooKeeper's other reserved znodes come with the first session scope: clients read
        // `/zookeeper/config` (read-only to everyone, as in 3.8) and `/zookeeper/quota`.
        if state.identity.root == "/" {
            let read_only = vec![Acl {
                perms: perms::READ,
                id: Id::new("world", "anyone"),
            }];
            wanted.push((crate::tree::session::ZOOKEEPER_QUOTA, Vec::new()));
            wanted.push((crate::tree::session::ZOOKEEPER_CONFIG, read_only));
        }
        for (p, acl) in wanted {
            if state.tree.get(p).is_none() {
                let create = Txn::Single(Op::Create {
                    path: p.to_string(),
                    data: Vec::new(),
                    mode: CreateMode::Persistent,
                    acl,
                });
                touched.extend(state.tree.apply(stamp, &create).touched);
                if p == crate::tree::session::ZOOKEEPER_CONFIG {
                    state.tree.mark_config_node(p);
                }
            }
        }
        state.tree.apply(
            stamp,
            &Txn::Delegate {
                path: at.to_string(),
            },
        )
    }

    /// Applies a Delegate entry: checks, the tree's carve (judged by this scope's policy), the
    /// child's starting state written into the same batch, and the delegation recorded here.
    /// `Err` is a host fault (apply halts); a refusal is the inner `Err`.
    fn apply_delegation(
        &self,
        state: &mut ScopeState,
        batch: &mut fjall::OwnedWriteBatch,
        (touched, changes): (&mut BTreeSet<String>, &mut Vec<(i64, crate::tree::Change)>),
        d: Delegation<'_>,
        created: &mut Vec<(ScopeState, genesis::FirstSnapshot)>,
    ) -> io::Result<Result<Route, ApiError>> {
        if state.sealed.is_some() {
            return Ok(Err(ApiError::new(
                scopekeeper_client::ErrorCode::WrongScope,
                format!(
                    "the scope rooted at {} is merging into its parent; retry",
                    state.identity.root
                ),
            )));
        }
        let checked = match (d.policy, d.kind) {
            (_, DelegationKind::Session) => session_scope_allowed(d.path),
            (Some(set), _) => governance::check_policy_change(d.principal, set),
            (None, DelegationKind::Split) => Ok(()),
            (None, DelegationKind::Admin) => {
                governance::check_admin(d.principal, "creating a scope")
            }
        };
        if let Err(refused) = checked {
            return Ok(Err(refused));
        }
        let proposal = Proposal {
            principal: d.principal.clone(),
            session: 0,
            txn: Txn::Delegate {
                path: d.path.to_string(),
            },
        };
        let entry = governance::EntryContext {
            stamp: d.stamp,
            log_index: d.log_index,
            scope_root: &state.identity.root,
            writes_per_sec: state.load.scope_per_sec(),
            ms_since_split: ms_since(state.last_split_ms, d.stamp.time_ms),
            ms_since_write: ms_since(state.load.now_sec.saturating_mul(1000), d.stamp.time_ms),
        };
        let carving = std::time::Instant::now();
        let mut applied = if d.kind == DelegationKind::Session {
            vec![self.carve_session_scope(state, d.stamp, d.path, touched)]
        } else {
            // Rare: its instance is made on the spot, whoever waits for it.
            governance::apply_txns(
                &self.engine,
                &mut state.governance,
                &mut state.tree,
                entry,
                std::slice::from_ref(&proposal),
                Supply::OnTheSpot,
            )
            .map_err(|fault| {
                tracing::error!(scope = self.scope, "apply halts: {}", fault.0);
                io::Error::other(fault.0)
            })?
        };
        let carve_ms = carving.elapsed().as_millis() as u64;
        let carved_at = std::time::Instant::now();
        let Some(applied) = applied.pop() else {
            return Err(io::Error::other("a delegation produced no result"));
        };
        touched.extend(applied.touched);
        changes.extend(applied.changes.into_iter().map(|c| (applied.zxid, c)));
        let carved = match (applied.carved, applied.outcome) {
            (Some(carved), _) => carved,
            (None, Outcome::Delegated(Err(refused))) => return Ok(Err(refused)),
            (None, other) => {
                return Err(io::Error::other(format!("a delegation produced {other:?}")));
            }
        };
        let znodes = carved.nodes.len();
        let tree = Tree::from_carved(carved).map_err(|e| corrupt("carved subtree", &e))?;
        let child_id = child_scope_id(self.scope, d.log_index);
        let moved: Vec<String> = state
            .delegations
            .keys()
            .filter(|p| scopekeeper_client::path::is_within(p, d.path))
            .cloned()
            .collect();
        let delegations: BTreeMap<String, Route> = moved
            .into_iter()
            .filter_map(|p| state.delegations.remove_entry(&p))
            .collect();
        let governance = match d.policy {
            _ if d.kind == DelegationKind::Session => Governance::default(),
            Some(set) => {
                let mut g = Governance::default();
                g.install(d.principal, set, 0, d.stamp, applied.zxid);
                g
            }
            None => state.governance.inherited(),
        };
        let child = ScopeState {
            tree,
            last_applied: Some(genesis_log_id()),
            membership: StoredMembership::new(
                Some(genesis_log_id()),
                state.membership.membership().clone(),
            ),
            governance,
            identity: ScopeIdentity {
                id: child_id,
                root: d.path.to_string(),
                parent: Some(self.scope),
                epoch: 1,
            },
            delegations,
            replica_high: state.replica_high,
            genesis_high: state
                .membership
                .membership()
                .nodes()
                .map(|(r, _)| *r)
                .max()
                .unwrap_or(0),
            nodes: BTreeMap::new(),
            load: Load::default(),
            last_split_ms: d.stamp.time_ms,
            sealed: None,
            absorbed: BTreeSet::new(),
        };
        self.write_child_meta(batch, &child)?;
        let file = genesis::FirstSnapshot::of(&self.store, &child)?;
        let route = child.route();
        state.delegations.insert(d.path.to_string(), route.clone());
        state.identity.epoch += 1;
        state.last_split_ms = d.stamp.time_ms;
        created.push((child, file));
        tracing::info!(
            scope = self.scope,
            child = child_id,
            path = d.path,
            znodes,
            carve_ms,
            built_ms = carved_at.elapsed().as_millis() as u64,
            "delegated a subtree to a new scope"
        );
        Ok(Ok(route))
    }
}

/// How many times a follower's apply steps behind the runnable tasks before it starts. Each
/// yield lets one more hop of a leader's answer run first (its apply, the waiting request, the
/// connection's driver). Measured on the 2-core dev cluster, 1-client creates, p50 over 4-5
/// alternating rounds: 0.67 ms without yields, 0.62 ms with 3, 0.60 ms with 6; with the `open`
/// policy 0.74, 0.64 and 0.64 ms. 64-client throughput was no lower with 4 than without.
const FOLLOWER_APPLY_YIELDS: usize = 4;

impl RaftStateMachine<TypeConfig> for ScopeStateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let state = self.view.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let entries: Vec<EntryResponder<TypeConfig>> = entries.try_collect().await?;
        if entries.iter().all(|(_, responder)| responder.is_none()) && !self.feed.has_listeners() {
            // Nobody waits for these entries here: this replica is a follower (or they are
            // the leader's own blanks) and no watch follows its changes. Tasks already
            // runnable on this node go first, most often a leader's answer to a client, in
            // this scope's process or another scope this node leads. A follower learns of a
            // commit as its leader answers the client, so its apply otherwise takes the cores
            // that answer needs. A watched scope's events wait for this apply, so it does not
            // step back.
            for _ in 0..FOLLOWER_APPLY_YIELDS {
                tokio::task::yield_now().await;
            }
        }
        // Taking a child back writes rows under this scope's keys where a child still being
        // born here has its rows: its birth goes first.
        for (entry, _) in &entries {
            if let EntryPayload::Normal(command) = &entry.payload
                && let Body::Absorb(absorb) = &command.body
            {
                self.newborns.until_born(absorb.child).await;
            }
        }
        // Before its birth a new scope applies transactions in memory only; anything else
        // waits for its rows.
        let only_txns = entries.iter().all(|(entry, _)| match &entry.payload {
            EntryPayload::Blank => true,
            EntryPayload::Normal(command) => matches!(command.body, Body::Txns(_)),
            EntryPayload::Membership(_) => false,
        });
        if !only_txns {
            self.newborns.until_born(self.scope).await;
        }
        // Compiling a policy takes long: never under the state's lock, nor on this worker.
        for (hash, component) in self.policies_to_judge(&entries) {
            self.engine.compile_ahead(hash, component).await;
        }
        let unborn = self.newborns.is_pending(self.scope);
        let applied = entries.len();
        let persist;
        let answered = entries.iter().any(|(_, responder)| responder.is_some());
        let mut responses = Vec::with_capacity(entries.len());
        let mut batch = self.store.db.batch();
        let mut created = Vec::new();
        let mut absorbed = Vec::new();
        let mut membership_changes = Vec::new();
        let mut changes = Vec::new();
        let last_zxid;
        {
            let mut state = self.view.write();
            let state = &mut *state;
            let mut touched = BTreeSet::new();
            for (entry, responder) in entries {
                let log_id = entry.log_id();
                assert!(
                    Some(&log_id) > state.last_applied.as_ref(),
                    "apply must move forward"
                );
                let outcome = match entry.payload {
                    EntryPayload::Blank => CommandOutcome::Nothing,
                    EntryPayload::Normal(command) => match &command.body {
                        Body::Txns(proposals) if state.sealed.is_some() => {
                            let zxid = state.tree.last_zxid();
                            CommandOutcome::Txns(
                                proposals
                                    .iter()
                                    .map(|p| TxnResult {
                                        zxid,
                                        outcome: sealed_refusal(&state.identity.root, &p.txn),
                                    })
                                    .collect(),
                            )
                        }
                        Body::Txns(proposals) => {
                            let entry = governance::EntryContext {
                                stamp: command.stamp,
                                log_index: log_id.index(),
                                scope_root: &state.identity.root,
                                writes_per_sec: state.load.scope_per_sec(),
                                ms_since_split: ms_since(
                                    state.last_split_ms,
                                    command.stamp.time_ms,
                                ),
                                ms_since_write: ms_since(
                                    state.load.now_sec.saturating_mul(1000),
                                    command.stamp.time_ms,
                                ),
                            };
                            let supply = if responder.is_some() {
                                Supply::MadeAhead
                            } else {
                                Supply::OnTheSpot
                            };
                            let applied = governance::apply_txns(
                                &self.engine,
                                &mut state.governance,
                                &mut state.tree,
                                entry,
                                proposals,
                                supply,
                            )
                            .map_err(|fault| {
                                tracing::error!(scope = self.scope, "apply halts: {}", fault.0);
                                io::Error::other(fault.0)
                            })?;
                            let results = applied
                                .into_iter()
                                .zip(proposals)
                                .map(|(a, proposal)| {
                                    touched.extend(a.touched);
                                    changes.extend(a.changes.into_iter().map(|c| (a.zxid, c)));
                                    if Outcome::succeeded(&a.outcome) {
                                        record_load(state, &proposal.txn, command.stamp.time_ms);
                                    }
                                    TxnResult {
                                        zxid: a.zxid,
                                        outcome: a.outcome,
                                    }
                                })
                                .collect();
                            CommandOutcome::Txns(results)
                        }
                        Body::SetPolicy { principal, set } => {
                            let zxid = state.tree.last_zxid();
                            let result = state.governance.set_policy(
                                principal,
                                set,
                                log_id.index(),
                                command.stamp,
                                zxid,
                            );
                            if let Some(active) =
                                state.governance.active.as_ref().filter(|_| result.is_ok())
                            {
                                batch.insert(
                                    &self.store.policies,
                                    active.hash.0,
                                    crate::storage::seal(&active.component),
                                );
                                tracing::info!(scope = self.scope, log_index = log_id.index(), policy = %active.hash, mode = ?active.info.mode, "policy replaced");
                            }
                            CommandOutcome::PolicySet(result)
                        }
                        Body::Delegate {
                            principal,
                            path,
                            policy,
                        } => CommandOutcome::Delegated(self.apply_delegation(
                            state,
                            &mut batch,
                            (&mut touched, &mut changes),
                            Delegation {
                                stamp: command.stamp,
                                kind: DelegationKind::Admin,
                                principal,
                                path,
                                policy: policy.as_ref(),
                                log_index: log_id.index(),
                            },
                            &mut created,
                        )?),
                        Body::Split { path } => CommandOutcome::Delegated(self.apply_delegation(
                            state,
                            &mut batch,
                            (&mut touched, &mut changes),
                            Delegation {
                                stamp: command.stamp,
                                kind: DelegationKind::Split,
                                principal: &split_principal(),
                                path,
                                policy: None,
                                log_index: log_id.index(),
                            },
                            &mut created,
                        )?),
                        Body::SessionScope { path } => {
                            CommandOutcome::Delegated(self.apply_delegation(
                                state,
                                &mut batch,
                                (&mut touched, &mut changes),
                                Delegation {
                                    stamp: command.stamp,
                                    kind: DelegationKind::Session,
                                    principal: &split_principal(),
                                    path,
                                    policy: None,
                                    log_index: log_id.index(),
                                },
                                &mut created,
                            )?)
                        }
                        Body::Nodes { principal, change } => {
                            CommandOutcome::NodesChanged(change_nodes(state, principal, change))
                        }
                        Body::Seal { into } => CommandOutcome::Merge(seal(state, *into)),
                        Body::Absorb(absorb) => {
                            let result = absorb_child(state, absorb, &mut touched);
                            if result.is_ok() {
                                changes.push((
                                    state.tree.last_zxid(),
                                    crate::tree::Change::Absorbed(absorb.root.clone()),
                                ));
                            }
                            if result.is_ok() {
                                absorbed.push(absorb.child);
                                tracing::info!(
                                    scope = self.scope,
                                    child = absorb.child,
                                    root = absorb.root,
                                    znodes = absorb.znodes.len(),
                                    "a child scope merged back"
                                );
                            }
                            CommandOutcome::Merge(result)
                        }
                    },
                    EntryPayload::Membership(m) => {
                        let members_before: BTreeSet<u64> = state
                            .membership
                            .membership()
                            .nodes()
                            .map(|(r, _)| *r)
                            .collect();
                        let voters_before: BTreeSet<u64> =
                            state.membership.membership().voter_ids().collect();
                        state.membership = StoredMembership::new(Some(log_id), m);
                        let voters_after: BTreeSet<u64> =
                            state.membership.membership().voter_ids().collect();
                        // A route's anchors are its voters: a new set is a new epoch.
                        if voters_before != voters_after && !voters_before.is_empty() {
                            state.identity.epoch += 1;
                        }
                        state.replica_high = state.replica_high.max(
                            state
                                .membership
                                .membership()
                                .nodes()
                                .map(|(r, _)| *r)
                                .max()
                                .unwrap_or(0),
                        );
                        if state.genesis_high == 0 {
                            // The first membership: the bootstrap voters.
                            state.genesis_high = state.replica_high;
                        }
                        if state.identity.id == crate::storage::ROOT_SCOPE {
                            register_members(state);
                        }
                        let members_after: BTreeSet<u64> = state
                            .membership
                            .membership()
                            .nodes()
                            .map(|(r, _)| *r)
                            .collect();
                        membership_changes.push((members_before, members_after));
                        CommandOutcome::Nothing
                    }
                };
                state.last_applied = Some(log_id);
                if let Some(responder) = responder {
                    let zxid = state.tree.last_zxid();
                    responses.push((responder, CommandResult { zxid, outcome }));
                }
            }
            let mut unpersisted = self.unpersisted.lock().unwrap_or_else(|e| e.into_inner());
            self.deferred_entries += applied;
            // Rows are written for several batches of plain transactions at once: a row
            // changed by each of them is written once, and the log holds the entries in
            // between (a restart applies them again from the persisted applied position).
            // Anything else, and every so often, writes at once. Before the birth nothing is
            // written: the rows are still the parent's.
            let defer = unborn
                || (only_txns
                    && self.deferred_entries < crate::limits::ROWS_DEFERRED_ENTRIES_MAX
                    && unpersisted.len() + touched.len() < crate::limits::ROWS_DEFERRED_PATHS_MAX);
            if defer {
                // One insert per path: `BTreeSet::append` rebuilds the whole set, and the set
                // grows over up to `ROWS_DEFERRED_ENTRIES_MAX` entries while each brings a few
                // paths (it was 4% of the dev cluster's CPU samples at 64 clients creating).
                unpersisted.extend(std::mem::take(&mut touched));
            } else {
                touched.append(&mut unpersisted);
                drop(unpersisted);
                self.write_rows(&mut batch, state, &touched, &created)?;
                self.record_applied(&mut batch, state)?;
                self.deferred_entries = 0;
            }
            persist = !defer;
            last_zxid = state.tree.last_zxid();
        }
        let committing = std::time::Instant::now();
        // A child is expected only with its parent's batch: a closed replica does neither.
        self.tenure.write("persisting applied entries", || {
            for (child, first) in &created {
                self.newborns
                    .expect(child.identity.id, self.scope, first.meta.clone());
            }
            if persist {
                batch
                    .commit()
                    .map_err(|e| io_err("persisting applied entries", e))?;
            }
            Ok(())
        })?;
        if !created.is_empty() {
            tracing::info!(
                scope = self.scope,
                commit_ms = committing.elapsed().as_millis() as u64,
                "committed a delegation"
            );
        }
        self.feed.publish(FeedItem {
            zxid: last_zxid,
            changes,
            reset: false,
        });
        for (before, after) in membership_changes {
            self.notify(ScopeEvent::MembershipChanged {
                scope: self.scope,
                before,
                after,
            });
        }
        for child in absorbed {
            self.notify(ScopeEvent::Absorbed {
                parent: self.scope,
                child,
            });
        }
        for (child, file) in created {
            genesis::spawn(
                self.store.clone(),
                self.scope,
                child,
                file,
                self.newborns.clone(),
                self.events.clone(),
            );
        }
        for (responder, result) in responses {
            responder.send(result);
        }
        // The next entry answered here finds an instance made ahead; followers make their own.
        if answered
            && let Some((hash, component)) =
                (self.view.read().governance.active.as_ref()).map(|a| (a.hash, a.component.clone()))
        {
            self.engine.prepare_ahead(hash, component);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // The builder reads the rows; without them it encodes from memory, under the lock.
        if let Err(e) = self.persist_deferred() {
            tracing::warn!(
                scope = self.scope,
                "writing deferred rows before a snapshot: {e}"
            );
        }
        SnapshotBuilder {
            scope: self.scope,
            store: self.store.clone(),
            snapshot_dir: self.snapshot_dir.clone(),
            tenure: self.tenure.clone(),
            newborns: self.newborns.clone(),
            view: self.view.clone(),
            frozen: self.freeze(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        // The install replaces every row under this scope's keys, which still hold the rows of
        // a child being born here.
        self.newborns.until_children_born(self.scope).await;
        self.newborns.until_born(self.scope).await;
        // The file goes into place first; if we crash before the batch below, `open` finishes
        // the install from it.
        let target = self.snapshot_dir.join(snapshot::file_name(meta));
        if snapshot.path != target {
            let bytes = std::fs::read(&snapshot.path)?;
            let header = snapshot::read_header(&snapshot.path)?;
            if header.meta.last_log_id != meta.last_log_id {
                return Err(corrupt(
                    "received snapshot",
                    "its header disagrees with its meta",
                ));
            }
            self.tenure.write("writing a received snapshot", || {
                snapshot::write_atomically(&target, &bytes)
            })?;
        }
        self.load_snapshot_into_store(&target)?;
        snapshot::remove_older(&self.snapshot_dir, &target)?;
        self.notify(ScopeEvent::SnapshotInstalled { scope: self.scope });
        tracing::info!(
            scope = self.scope,
            "installed snapshot {}",
            target.display()
        );
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>>, io::Error> {
        // A new scope's first snapshot is written by its birth, behind its start: raft may
        // know it before the file exists (a send that finds no file is retried).
        if let Some(meta) = self.newborns.owed_first_snapshot(self.scope) {
            let path = self.snapshot_dir.join(snapshot::file_name(&meta));
            return Ok(Some(openraft::Snapshot {
                meta,
                snapshot: SnapshotFile { path },
            }));
        }
        let Some(path) = snapshot::newest(&self.snapshot_dir)? else {
            return Ok(None);
        };
        let header = snapshot::read_header(&path)?;
        Ok(Some(openraft::Snapshot {
            meta: header.meta,
            snapshot: SnapshotFile { path },
        }))
    }
}

#[cfg(test)]
mod tests {
    use futures::stream;
    use openraft::entry::RaftEntry;
    use openraft::{RaftSnapshotBuilder, storage::RaftStateMachine};
    use scopekeeper_client::proto::{CreateMode, Op};

    use super::*;
    use crate::scope::types::{Command, Entry};
    use crate::tree::{Stamp, Txn};

    fn create(index: u64, path: &str) -> Result<EntryResponder<TypeConfig>, io::Error> {
        let command = Command {
            stamp: Stamp {
                zxid_hint: index as i64,
                time_ms: 0,
            },
            body: Body::Txns(vec![crate::scope::types::Proposal {
                principal: Default::default(),
                session: 0,
                txn: Txn::Single(Op::Create {
                    path: path.into(),
                    data: b"d".to_vec(),
                    mode: CreateMode::Persistent,
                    acl: Vec::new(),
                }),
            }]),
        };
        Ok((
            Entry::new_normal(
                openraft::testing::log_id::<TypeConfig>(1, 1, index),
                command,
            ),
            None,
        ))
    }

    fn engine() -> PolicyEngine {
        PolicyEngine::new().expect("policy engine")
    }

    /// Raft's state-machine worker outlives `Raft::shutdown`: an apply it runs after the
    /// replica was closed and deleted must not bring the scope back as rows with no tree.
    #[tokio::test]
    async fn a_closed_replica_writes_nothing_after_its_rows_are_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let mut sm = ScopeStateMachine::open(
            store.clone(),
            7,
            engine(),
            Default::default(),
            None,
            Default::default(),
        )
        .expect("sm");
        sm.apply(stream::iter(vec![create(1, "/a")]))
            .await
            .expect("apply");
        let mut builder = sm.get_snapshot_builder().await;
        assert_eq!(stored_scope_ids(&store).expect("ids"), vec![7]);

        sm.tenure().end();
        store.remove_scope(7).expect("remove");
        let late = sm.apply(stream::iter(vec![create(2, "/b")])).await;
        assert!(late.is_err(), "an apply after the close was persisted");
        assert!(builder.build_snapshot().await.is_err());
        assert_eq!(
            stored_scope_ids(&store).expect("ids"),
            Vec::<ScopeId>::new()
        );
        assert!(!snapshot::scope_dir(&store, 7).exists());
        drop(sm);
        drop(builder);
        drop(store);
        let reopened = Store::open(dir.path()).expect("reopen");
        assert_eq!(
            stored_scope_ids(&reopened).expect("ids"),
            Vec::<ScopeId>::new()
        );
    }

    #[tokio::test]
    async fn an_install_interrupted_after_the_file_is_finished_on_reopen() {
        let leader_dir = tempfile::tempdir().expect("tempdir");
        let leader_store = Store::open(leader_dir.path()).expect("store");
        let mut leader = ScopeStateMachine::open(
            leader_store,
            7,
            engine(),
            Default::default(),
            None,
            Default::default(),
        )
        .expect("sm");
        let entries = vec![create(1, "/a"), create(2, "/a/b"), create(3, "/c")];
        leader.apply(stream::iter(entries)).await.expect("apply");
        let snapshot = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("snapshot");

        // The follower crashed after placing the file and before the fjall batch.
        let follower_dir = tempfile::tempdir().expect("tempdir");
        let follower_store = Store::open(follower_dir.path()).expect("store");
        let target = follower_dir
            .path()
            .join("snapshots/7")
            .join(snapshot::file_name(&snapshot.meta));
        std::fs::create_dir_all(target.parent().expect("dir")).expect("mkdir");
        std::fs::copy(&snapshot.snapshot.path, &target).expect("copy");
        std::fs::write(target.with_extension("tmp"), b"half-written").expect("stale temporary");

        let follower = ScopeStateMachine::open(
            follower_store.clone(),
            7,
            engine(),
            Default::default(),
            None,
            Default::default(),
        )
        .expect("reopen finishes the install");
        assert_eq!(follower.view().read().tree, leader.view().read().tree);
        assert_eq!(
            follower.view().read().last_applied,
            snapshot.meta.last_log_id
        );
        assert!(
            !target.with_extension("tmp").exists(),
            "stale temporaries are removed"
        );
        // And the rows are in fjall: a second reopen needs no snapshot.
        std::fs::remove_file(&target).expect("remove");
        let again = ScopeStateMachine::open(
            follower_store,
            7,
            engine(),
            Default::default(),
            None,
            Default::default(),
        )
        .expect("reopen");
        assert_eq!(again.view().read().tree, leader.view().read().tree);
    }

    /// Scope 7 with /a, /a/b, /ab and /c, then /a split off at log index 5 into a child that
    /// is never born here (as if the node crashed right after the carve): the child's rows are
    /// still the parent's.
    async fn split_with_an_unborn_child(store: &Store) -> ScopeStateMachine {
        let newborns = Newborns::default();
        newborns.crash_before_births();
        let mut parent = ScopeStateMachine::open(
            store.clone(),
            7,
            engine(),
            Default::default(),
            None,
            newborns,
        )
        .expect("sm");
        let split = Command {
            stamp: Stamp {
                zxid_hint: 5,
                time_ms: 0,
            },
            body: Body::Split { path: "/a".into() },
        };
        let entries = vec![
            create(1, "/a"),
            create(2, "/a/b"),
            create(3, "/ab"),
            create(4, "/c"),
            Ok((
                Entry::new_normal(openraft::testing::log_id::<TypeConfig>(1, 1, 5), split),
                None,
            )),
        ];
        parent.apply(stream::iter(entries)).await.expect("apply");
        parent
    }

    #[tokio::test]
    async fn a_split_interrupted_before_its_child_is_born_is_finished_by_the_childs_opening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let parent = split_with_an_unborn_child(&store).await;
        let child = crate::scope::types::child_scope_id(7, 5);
        let parent_tree = parent.view().read().tree.clone();
        assert!(parent_tree.get("/a/b").is_none() && parent_tree.get("/ab").is_some());
        drop(parent);

        // The parent's rows still hold the child's znodes; the parent does not load them.
        let reopen = |id| {
            ScopeStateMachine::open(
                store.clone(),
                id,
                engine(),
                Default::default(),
                None,
                Default::default(),
            )
        };
        let parent = reopen(7).expect("the parent reopens");
        assert_eq!(parent.view().read().tree, parent_tree);
        // The child's opening moves them.
        let born = reopen(child).expect("the child's opening finishes its birth");
        let view = born.view();
        let state = view.read();
        assert_eq!(state.identity.root, "/a");
        assert_eq!(
            state.tree.get("/a/b").map(|z| z.data.clone()),
            Some(b"d".to_vec())
        );
        assert!(state.tree.get("/ab").is_none());
        drop(state);
        drop(born);
        let again = reopen(child).expect("a second opening needs the parent's rows no more");
        assert!(again.view().read().tree.get("/a/b").is_some());
        assert_eq!(reopen(7).expect("parent").view().read().tree, parent_tree);
        let leftover = store.tree.prefix(key(7, b"/a/")).count();
        assert_eq!(leftover, 0, "the parent's rows of the child are gone");
    }

    /// A snapshot is read from the rows as they were when its builder was made, while applies
    /// go on; the rows of a subtree carved off to a child that is not born yet are skipped.
    #[tokio::test]
    async fn a_snapshot_is_the_scope_as_it_was_when_its_builder_was_made() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let mut sm = split_with_an_unborn_child(&store).await;
        assert!(store.tree.contains_key(key(7, b"/a/b")).expect("read"));

        let mut builder = sm.get_snapshot_builder().await;
        assert!(builder.frozen.is_some(), "read from the rows");
        let expected = {
            let view = sm.view();
            let state = view.read();
            snapshot::encode(&state.snapshot_meta(), &state).expect("encode")
        };
        sm.apply(stream::iter(vec![create(6, "/d")]))
            .await
            .expect("apply");
        let built = builder.build_snapshot().await.expect("snapshot");
        let bytes = std::fs::read(&built.snapshot.path).expect("read the file");
        assert!(
            bytes == expected,
            "the snapshot differs from the state it was made at"
        );
        let paths: Vec<String> = snapshot::decode(&built.snapshot.path)
            .expect("decode")
            .znodes
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(paths, vec!["/", "/ab", "/c"]);
    }

    /// Rows of plain transactions are written together, every so often and before a
    /// snapshot; whenever a restart finds them, they and the applied position agree, and the
    /// log holds the rest.
    #[tokio::test]
    async fn deferred_rows_always_agree_with_the_applied_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let open = || {
            ScopeStateMachine::open(
                store.clone(),
                7,
                engine(),
                Default::default(),
                None,
                Default::default(),
            )
            .expect("sm")
        };
        let restarted = || {
            let sm = open();
            let view = sm.view();
            let state = view.read();
            let paths: Vec<String> = state.tree.iter().map(|(p, _)| p.clone()).collect();
            (state.last_applied.map(|l| l.index()), paths)
        };
        let mut sm = open();
        sm.apply(stream::iter(vec![create(1, "/a")]))
            .await
            .expect("apply");
        sm.apply(stream::iter(vec![create(2, "/b"), create(3, "/a/c")]))
            .await
            .expect("apply");
        assert_eq!(
            restarted(),
            (None, vec!["/".to_string()]),
            "nothing written yet"
        );

        let _builder = sm.get_snapshot_builder().await;
        assert_eq!(
            restarted(),
            (
                Some(3),
                ["/", "/a", "/a/c", "/b"].map(String::from).to_vec()
            ),
            "a snapshot's builder writes them first"
        );

        let last = 3 + crate::limits::ROWS_DEFERRED_ENTRIES_MAX as u64;
        for index in 4..=last {
            sm.apply(stream::iter(vec![create(index, &format!("/n{index}"))]))
                .await
                .expect("apply");
            let (applied, paths) = restarted();
            let applied = applied.expect("written before");
            assert!(applied == 3 || applied == last, "written at {applied}");
            assert_eq!(
                paths.len() as u64,
                4 + applied - 3,
                "rows of entries up to {applied}"
            );
        }
        assert_eq!(
            restarted().0,
            Some(last),
            "written once enough entries waited"
        );
    }
}
