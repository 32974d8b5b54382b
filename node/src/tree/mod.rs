//! The znode tree: ZooKeeper's data model as a pure, deterministic state machine.
//!
//! No I/O, no clock, no randomness, no hash-map iteration: `apply` is a function of the tree and
//! the transaction (which carries its zxid hint and leader-stamped time). Storage reads the
//! paths a transaction touched from [`Applied::touched`] and persists them; it never needs to
//! diff the tree.

pub mod acl;
mod apply;
#[cfg(test)]
mod delegation_test;
#[cfg(test)]
mod model_test;
pub mod session;
#[cfg(test)]
mod session_test;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use scopekeeper_client::proto::{
    Acl, ApiError, ErrorCode, MultiSlot, NodeKind, Op, OpResult, Stat, perms,
};
use scopekeeper_client::{limits, path};
use serde::{Deserialize, Serialize};

pub use acl::AuthInfo;
pub use apply::Tentative;
pub use session::{SessionBook, SessionOutcome, SessionTxn};

/// One znode: its data and Stat. Children are kept as names for `getChildren`, and the extent
/// of the subtree it roots for splits; the persisted form ([`StoredZnode`]) leaves both out
/// because they follow from the paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Znode {
    pub data: Vec<u8>,
    pub stat: Stat,
    /// Empty for the open ACL (see [`acl`]).
    pub acl: Vec<Acl>,
    pub children: BTreeSet<String>,
    /// This znode and everything below it in this tree (subtrees delegated elsewhere are
    /// counted by their own scopes). Kept by the tree as it changes, so carving a subtree or
    /// sizing a split's candidates needs no pass over the subtree. Set by the tree: whatever a
    /// znode arrives with is overwritten.
    pub extent: Extent,
}

impl Znode {
    /// Its persisted form.
    pub fn stored(&self) -> StoredZnode {
        StoredZnode {
            data: self.data.clone(),
            stat: self.stat,
            acl: self.acl.clone(),
        }
    }

    /// Its persisted form, borrowed: for encoding without copying the data.
    pub fn stored_ref(&self) -> StoredZnodeRef<'_> {
        StoredZnodeRef {
            data: &self.data,
            stat: self.stat,
            acl: &self.acl,
        }
    }
}

impl From<StoredZnode> for Znode {
    /// A znode back from storage, a snapshot or a merging scope; its children follow from the
    /// paths around it and are filled in by the tree.
    fn from(z: StoredZnode) -> Self {
        Znode {
            data: z.data,
            stat: z.stat,
            acl: z.acl,
            children: BTreeSet::new(),
            extent: Extent::default(),
        }
    }
}

/// A [`StoredZnode`] borrowed from a [`Znode`]; it encodes to the same bytes.
#[derive(Serialize)]
pub struct StoredZnodeRef<'a> {
    #[serde(with = "serde_bytes")]
    pub data: &'a [u8],
    pub stat: Stat,
    pub acl: &'a [Acl],
}

/// A znode as stored on disk and in snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredZnode {
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    pub stat: Stat,
    /// Empty for the open ACL.
    pub acl: Vec<Acl>,
}

/// A transaction as it appears in the log: one op, or an atomic multi.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Txn {
    Single(Op),
    Multi(Vec<Op>),
    /// Hands the subtree at `path` to a new child scope (created empty first if missing).
    Delegate {
        path: String,
    },
    /// Session bookkeeping; proposed by nodes, never judged by a policy.
    Session(SessionTxn),
    /// Deletes the container or TTL node at `path` created at `czxid`, if it is still due:
    /// a container that had children and has none left, a TTL node unchanged and childless
    /// for its TTL. Proposed by the scope's leader; never judged by a policy.
    Reap {
        path: String,
        czxid: i64,
    },
}

impl Txn {
    /// About how many bytes the transaction takes in an entry, for batching.
    pub fn approx_bytes(&self) -> usize {
        let op_bytes = |op: &Op| op.path().len() + op.data_len() + 16;
        match self {
            Txn::Single(op) => op_bytes(op),
            Txn::Multi(ops) => ops.iter().map(op_bytes).sum::<usize>() + 8,
            Txn::Delegate { path } | Txn::Reap { path, .. } => path.len() + 16,
            Txn::Session(_) => 64,
        }
    }
}

/// What the leader stamps on a transaction before it enters the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Lower bound for the zxid (DESIGN section 6): `max(now_ms << 20, last seen + 1)`.
    pub zxid_hint: i64,
    /// Leader-stamped wall-clock time in ms, used for ctime and mtime.
    pub time_ms: i64,
}

/// The outcome of applying one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub zxid: i64,
    pub outcome: Outcome,
    /// Paths whose znode was created, changed or deleted, in order, possibly repeated.
    pub touched: Vec<String>,
    /// What a successful `Txn::Delegate` took out, for the child scope.
    pub carved: Option<Carved>,
    /// What watchers are told, in order: empty if the transaction failed.
    pub changes: Vec<Change>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Single(Result<OpResult, ApiError>),
    Multi(Vec<MultiSlot>),
    Delegated(Result<(), ApiError>),
    Session(Result<SessionOutcome, ApiError>),
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        match self {
            Outcome::Single(r) => r.is_ok(),
            Outcome::Multi(slots) => slots.iter().all(|s| matches!(s, MultiSlot::Done(_))),
            Outcome::Delegated(r) => r.is_ok(),
            Outcome::Session(r) => r.is_ok(),
        }
    }
}

/// A change a watch can see, ZooKeeper's event types.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    Created(String),
    Deleted(String),
    DataChanged(String),
    ChildrenChanged(String),
    /// The subtree moved to a child scope: its changes come from there from now on.
    Carved(String),
    /// The subtree came back from a child scope that merged: its changes come from here.
    Absorbed(String),
}

impl Change {
    pub fn path(&self) -> &str {
        match self {
            Change::Created(p)
            | Change::Deleted(p)
            | Change::DataChanged(p)
            | Change::ChildrenChanged(p)
            | Change::Carved(p)
            | Change::Absorbed(p) => p,
        }
    }
}

/// The tree of one scope: the znode at the scope's root and everything below it, except
/// subtrees delegated to child scopes. A delegated path stays listed among its parent's
/// children (so `getChildren`, numChildren and cversion stay right) but its znode and
/// everything below belong to the child scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    root: String,
    nodes: BTreeMap<String, Znode>,
    delegated: BTreeSet<String>,
    last_zxid: i64,
    /// Sum of every znode's data length, kept as the tree changes.
    data_bytes: u64,
    /// Ephemeral nodes by owning session; follows from the Stats.
    ephemerals: BTreeMap<i64, BTreeSet<String>>,
    /// Container and TTL nodes, which the leader reaps; follows from the Stats.
    reapable: BTreeSet<String>,
    /// Killed sessions and carved ephemerals; persisted beside the znodes.
    book: SessionBook,
}

/// How much a subtree holds: its znodes (its root included) and their data bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extent {
    pub znodes: u64,
    pub bytes: u64,
}

impl Extent {
    /// One znode of `bytes` data bytes.
    fn one(bytes: usize) -> Self {
        Extent {
            znodes: 1,
            bytes: bytes as u64,
        }
    }

    fn add(&mut self, other: Extent) {
        self.znodes += other.znodes;
        self.bytes += other.bytes;
    }

    fn take(&mut self, other: Extent) {
        self.znodes -= other.znodes;
        self.bytes -= other.bytes;
    }
}

/// A subtree taken out of a tree by [`Tree::carve`], to seed a child scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Carved {
    pub root: String,
    /// The subtree's znodes as they were in the parent (the root's children include
    /// delegated names, as the parent listed them).
    pub nodes: BTreeMap<String, Znode>,
    /// Delegations below `root`, which move with it.
    pub delegated: Vec<String>,
    /// The parent's last zxid when it was carved: the child's zxids continue from it.
    pub last_zxid: i64,
    /// The parent's killed sessions, and the carve records of the delegations that moved.
    pub book: SessionBook,
    /// Carved znodes that are not persistent, with their owner: the child indexes them.
    pub indexed: Vec<(String, i64)>,
}

/// What an admission hook sees of the tree when an op is about to run. The target's and the
/// parent's stats are looked up only when asked for: a scope without a policy never asks, and
/// those two searches of the ordered map were 3.1% of a node's CPU samples at 64 clients
/// creating (perf, dev cluster, no policy).
#[derive(Clone, Copy, Debug)]
pub struct OpView<'a> {
    tree: &'a Tree,
    path: &'a str,
}

impl<'a> OpView<'a> {
    /// The tree as it is now, around `path`.
    pub fn of(tree: &'a Tree, path: &'a str) -> Self {
        OpView { tree, path }
    }

    /// The node the op names, before the op.
    pub fn target(&self) -> Option<&'a Stat> {
        self.tree.nodes.get(self.path).map(|z| &z.stat)
    }

    /// Its parent, before the op.
    pub fn parent(&self) -> Option<&'a Stat> {
        path::parent(self.path)
            .and_then(|p| self.tree.nodes.get(p))
            .map(|z| &z.stat)
    }

    pub fn znodes(&self) -> u64 {
        self.tree.nodes.len() as u64
    }

    pub fn data_bytes(&self) -> u64 {
        self.tree.data_bytes
    }
}

/// Decides whether an op may run. Called once per op, after its path is found valid and before
/// it changes anything; in a multi, later ops see what earlier ones did. Implementations must be
/// deterministic: the same ops and views give the same answers on every replica.
pub trait Admit {
    fn admit(&mut self, op: &Op, view: OpView<'_>) -> Result<(), ApiError>;
    /// Whether the subtree at `path` may become a child scope; `view.target` is its root.
    fn admit_delegation(&mut self, path: &str, view: OpView<'_>) -> Result<(), ApiError>;
}

/// Admits everything: a scope without a policy.
pub struct AdmitAll;

impl Admit for AdmitAll {
    fn admit(&mut self, _op: &Op, _view: OpView<'_>) -> Result<(), ApiError> {
        Ok(())
    }
    fn admit_delegation(&mut self, _path: &str, _view: OpView<'_>) -> Result<(), ApiError> {
        Ok(())
    }
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

impl Tree {
    /// A tree holding only the root znode, whose Stat is all zeros as in ZooKeeper.
    pub fn new() -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            "/".to_string(),
            Znode {
                data: Vec::new(),
                stat: Stat::default(),
                acl: Vec::new(),
                children: BTreeSet::new(),
                extent: Extent::one(0),
            },
        );
        Tree {
            root: "/".to_string(),
            nodes,
            delegated: BTreeSet::new(),
            last_zxid: 0,
            data_bytes: 0,
            ephemerals: BTreeMap::new(),
            reapable: BTreeSet::new(),
            book: SessionBook::default(),
        }
    }

    /// A stand-in for a scope replica that has not received its state yet: only a root znode
    /// with a zero Stat. Never served: the replica has no membership until its first snapshot.
    pub fn placeholder(root: &str) -> Self {
        let mut tree = Tree::new();
        if root != "/" {
            let z = tree.nodes.remove("/").expect("a new tree has a root");
            tree.nodes.insert(root.to_string(), z);
            tree.root = root.to_string();
        }
        tree
    }

    /// Rebuilds the tree of the scope rooted at `root` from stored znodes (any order), its
    /// delegated paths and the last zxid applied. The root scope's root znode is created if
    /// missing (a fresh cluster); any other scope's must be stored.
    pub fn from_stored(
        root: &str,
        last_zxid: i64,
        stored: impl IntoIterator<Item = (String, StoredZnode)>,
        delegated: impl IntoIterator<Item = String>,
    ) -> Result<Self, String> {
        let mut nodes: BTreeMap<String, Znode> = BTreeMap::new();
        for (p, z) in stored {
            path::validate(&p, false).map_err(|e| format!("stored znode: {e}"))?;
            if !path::is_within(&p, root) {
                return Err(format!(
                    "stored znode {p} is outside the scope rooted at {root}"
                ));
            }
            nodes.insert(p, z.into());
        }
        if root == "/" {
            nodes.entry("/".to_string()).or_insert_with(|| Znode {
                data: Vec::new(),
                stat: Stat::default(),
                acl: Vec::new(),
                children: BTreeSet::new(),
                extent: Extent::default(),
            });
        }
        if !nodes.contains_key(root) {
            return Err(format!("the scope's root znode {root} is missing"));
        }
        let delegated: BTreeSet<String> = delegated.into_iter().collect();
        let listed: Vec<String> = nodes
            .keys()
            .filter(|p| p.as_str() != root)
            .chain(delegated.iter())
            .cloned()
            .collect();
        for p in listed {
            let parent = path::parent(&p).unwrap_or("/").to_string();
            let Some(parent_node) = nodes.get_mut(&parent) else {
                return Err(format!("stored znode {p} has no parent {parent}"));
            };
            parent_node.children.insert(path::name(&p).to_string());
        }
        let data_bytes = nodes.values().map(|z| z.data.len() as u64).sum();
        fill_extents(&mut nodes);
        let mut tree = Tree {
            root: root.to_string(),
            nodes,
            delegated,
            last_zxid,
            data_bytes,
            ephemerals: BTreeMap::new(),
            reapable: BTreeSet::new(),
            book: SessionBook::default(),
        };
        let kinds: Vec<(String, i64)> = tree
            .nodes
            .iter()
            .map(|(p, z)| (p.clone(), z.stat.ephemeral_owner))
            .collect();
        for (p, owner) in kinds {
            tree.index(&p, owner);
        }
        tree.check_invariants()?;
        Ok(tree)
    }

    /// The tree of a new child scope, from what its parent carved out.
    pub fn from_carved(carved: Carved) -> Result<Self, String> {
        let data_bytes = match carved.nodes.get(&carved.root) {
            Some(z) => z.extent.bytes,
            None => return Err(format!("the carved root znode {} is missing", carved.root)),
        };
        let mut tree = Tree {
            data_bytes,
            root: carved.root,
            nodes: carved.nodes,
            delegated: carved.delegated.into_iter().collect(),
            last_zxid: carved.last_zxid,
            ephemerals: BTreeMap::new(),
            reapable: BTreeSet::new(),
            book: carved.book,
        };
        for (p, owner) in carved.indexed {
            tree.index(&p, owner);
        }
        // Carved from a tree that kept its invariants; checking costs a pass over the subtree.
        #[cfg(debug_assertions)]
        tree.check_invariants()?;
        Ok(tree)
    }

    /// What the scope remembers of sessions, for persistence.
    pub fn session_book(&self) -> &SessionBook {
        &self.book
    }

    /// Restores the session book read back from storage.
    pub fn set_session_book(&mut self, book: SessionBook) {
        self.book = book;
    }

    /// The ephemeral nodes `session` owns here, in path order.
    pub fn ephemerals_of(&self, session: i64) -> impl Iterator<Item = &String> {
        self.ephemerals.get(&session).into_iter().flatten()
    }

    /// Container and TTL nodes due for reaping at leader time `now_ms`, with their czxid.
    pub fn due_for_reaping(&self, now_ms: i64) -> Vec<(String, i64)> {
        self.reapable
            .iter()
            .filter_map(|p| self.nodes.get(p).map(|z| (p, z)))
            .filter(|(_, z)| reap_due(&z.stat, now_ms))
            .map(|(p, z)| (p.clone(), z.stat.czxid))
            .collect()
    }

    /// Adds `p` to the indexes its `ephemeralOwner` puts it in.
    fn index(&mut self, p: &str, owner: i64) {
        match NodeKind::of(owner) {
            NodeKind::Persistent => {}
            NodeKind::Ephemeral { session } => {
                self.ephemerals
                    .entry(session)
                    .or_default()
                    .insert(p.to_string());
            }
            NodeKind::Container | NodeKind::Ttl { .. } => {
                self.reapable.insert(p.to_string());
            }
        }
    }

    fn unindex(&mut self, p: &str, owner: i64) {
        match NodeKind::of(owner) {
            NodeKind::Persistent => {}
            NodeKind::Ephemeral { session } => {
                if let Some(paths) = self.ephemerals.get_mut(&session) {
                    paths.remove(p);
                    if paths.is_empty() {
                        self.ephemerals.remove(&session);
                    }
                }
            }
            NodeKind::Container | NodeKind::Ttl { .. } => {
                self.reapable.remove(p);
            }
        }
    }

    /// Inserts a leaf znode that is not there (a create, or a delete undone), keeping the
    /// byte count, the extents above it and the indexes.
    fn insert_node(&mut self, p: String, mut z: Znode) {
        debug_assert!(
            z.children.is_empty(),
            "insert_node of {p}, which has children"
        );
        z.extent = Extent::one(z.data.len());
        self.data_bytes += z.data.len() as u64;
        self.extents_above(&p, |e| e.add(z.extent));
        self.index(&p, z.stat.ephemeral_owner);
        let replaced = self.nodes.insert(p, z);
        assert!(replaced.is_none(), "insert_node over an existing znode");
    }

    /// Removes a leaf znode, keeping the byte count, the extents above it and the indexes.
    fn remove_node(&mut self, p: &str) -> Option<Znode> {
        let z = self.nodes.remove(p)?;
        debug_assert_eq!(z.extent.znodes, 1, "remove_node of {p}, which has children");
        self.data_bytes -= z.data.len() as u64;
        self.extents_above(p, |e| e.take(z.extent));
        self.unindex(p, z.stat.ephemeral_owner);
        Some(z)
    }

    /// Keeps the data bytes when a znode's data changes from `old` to `new` bytes.
    fn data_changed(&mut self, p: &str, old: usize, new: usize) {
        self.data_bytes = self.data_bytes - old as u64 + new as u64;
        let change = |e: &mut Extent| e.bytes = e.bytes - old as u64 + new as u64;
        if let Some(z) = self.nodes.get_mut(p) {
            change(&mut z.extent);
        }
        self.extents_above(p, change);
    }

    /// Changes the extent of every znode above `p` in this tree, up to the root: a write
    /// costs a lookup per level, and any subtree's size is then at hand.
    fn extents_above(&mut self, p: &str, mut change: impl FnMut(&mut Extent)) {
        if p == self.root {
            return;
        }
        for a in path::ancestors_and_self(p).skip(1) {
            let z = self
                .nodes
                .get_mut(a)
                .expect("a znode's ancestors up to the root are in its tree");
            change(&mut z.extent);
            if a == self.root {
                break;
            }
        }
    }

    /// The path of the scope's root znode.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Paths delegated to child scopes, in order.
    pub fn delegated(&self) -> &BTreeSet<String> {
        &self.delegated
    }

    /// Whether this tree governs `p`: at or below its root and not in a delegated subtree.
    /// A delegated path itself belongs to the child scope.
    pub fn owns(&self, p: &str) -> Result<(), ApiError> {
        if !path::is_within(p, &self.root) {
            return Err(ApiError::new(
                ErrorCode::WrongScope,
                format!("{p} is outside the scope rooted at {}", self.root),
            ));
        }
        if self.delegated.is_empty() {
            return Ok(());
        }
        match path::ancestors_and_self(p)
            .take_while(|a| *a != self.root)
            .find(|a| self.delegated.contains(*a))
        {
            Some(d) => Err(ApiError::new(
                ErrorCode::WrongScope,
                format!("{p} is in {d}, which is delegated to another scope"),
            )),
            None => Ok(()),
        }
    }

    /// The subtrees under the root's children that this scope governs, by child name, in
    /// name order, with their extents: a split's candidates. Delegated children are not among
    /// them (their whole extent left with the carve).
    pub fn subtrees(&self) -> Subtrees<'_> {
        self.subtrees_after(None)
    }

    /// [`Tree::subtrees`] from the child named after `after` on: a walk resumed where an
    /// earlier one stopped (whether or not `after` is still there).
    pub fn subtrees_after(&self, after: Option<&str>) -> Subtrees<'_> {
        let (prefix, end) = below(&self.root);
        let from = match after {
            // Names such as `after-x` sort between `after` and its subtree, which the walk
            // steps over when it meets it.
            Some(name) => Bound::Excluded(format!("{prefix}{name}")),
            None => Bound::Included(prefix.clone()),
        };
        let range = self
            .nodes
            .range::<str, _>((from.as_ref().map(String::as_str), end_bound(&end)));
        Subtrees {
            nodes: &self.nodes,
            prefix: prefix.len(),
            range,
            end,
        }
    }

    /// The delegated path that `p` falls in, if any.
    pub fn delegation_of(&self, p: &str) -> Option<&str> {
        path::ancestors_and_self(p)
            .take_while(|a| *a != self.root)
            .find_map(|a| self.delegated.get(a).map(String::as_str))
    }

    /// Moves the znode at `at` and everything below it out of this tree, leaving `at`
    /// delegated: still listed by its parent, governed elsewhere. Changes no Stat here (the
    /// parent's children do not change) and consumes no zxid. The removed paths are those of
    /// [`Carved::nodes`]; storage deletes them from there (a split can move a million).
    pub fn carve(&mut self, at: &str) -> Result<Carved, ApiError> {
        checked_path(at)?;
        self.owns(at)?;
        if at == self.root {
            return Err(ApiError::new(
                ErrorCode::BadArguments,
                format!("{at} is already the root of its scope"),
            ));
        }
        if let NodeKind::Ephemeral { .. } = NodeKind::of(self.node(at)?.stat.ephemeral_owner) {
            return Err(ApiError::new(
                ErrorCode::BadArguments,
                format!("{at} is ephemeral; it cannot be the root of a scope"),
            ));
        }
        // The subtree is `at` and the keys [`below`] it. Splitting the map's ranges off costs a walk
        // down the tree and a merge of the two outer parts, not a removal per znode; the
        // extents kept on every znode and the indexes of non-persistent ones spare a pass
        // over the subtree, which every later write to this scope would wait for.
        let (below_from, below_to) = below(at);
        let mut from_root = self.nodes.split_off(at);
        let mut below = from_root.split_off(&below_from);
        let after = match &below_to {
            Some(to) => below.split_off(to),
            None => BTreeMap::new(),
        };
        let root_node = from_root.remove(at).expect("owns() found it above");
        join(&mut self.nodes, from_root);
        join(&mut self.nodes, after);
        let extent = root_node.extent;
        below.insert(at.to_string(), root_node);
        self.data_bytes -= extent.bytes;
        self.extents_above(at, |e| e.take(extent));
        let subtree = (Bound::Included(below_from.as_str()), end_bound(&below_to));
        let within = |paths: &BTreeSet<String>| -> Vec<String> {
            let root = paths.get(at).into_iter();
            root.chain(paths.range::<str, _>(subtree))
                .cloned()
                .collect()
        };
        let mut owners = BTreeSet::new();
        let mut carved_kinds: Vec<String> = within(&self.reapable);
        for (session, paths) in &self.ephemerals {
            let carved = within(paths);
            if !carved.is_empty() {
                owners.insert(*session);
                carved_kinds.extend(carved);
            }
        }
        let mut indexed = Vec::with_capacity(carved_kinds.len());
        for p in carved_kinds {
            let owner = below
                .get(&p)
                .expect("an indexed znode in the subtree was carved with it")
                .stat
                .ephemeral_owner;
            self.unindex(&p, owner);
            indexed.push((p, owner));
        }
        let delegated: Vec<String> = self
            .delegated
            .iter()
            .filter(|d| path::is_within(d, at))
            .cloned()
            .collect();
        let mut book = SessionBook {
            closed: self.book.closed.clone(),
            carved: BTreeMap::new(),
        };
        for d in &delegated {
            self.delegated.remove(d);
            if let Some(sessions) = self.book.carved.remove(d) {
                book.carved.insert(d.clone(), sessions);
            }
        }
        self.delegated.insert(at.to_string());
        if !owners.is_empty() {
            self.book.carved.insert(at.to_string(), owners);
        }
        Ok(Carved {
            root: at.to_string(),
            nodes: below,
            delegated,
            last_zxid: self.last_zxid,
            book,
            indexed,
        })
    }

    /// Takes back the subtree at `at`, delegated to a child scope that now merges into this
    /// one: `znodes` are the child's, as it last had them (it must have no child scopes of its
    /// own). Returns the paths written.
    pub fn absorb(
        &mut self,
        at: &str,
        znodes: Vec<(String, StoredZnode)>,
        book: &SessionBook,
        last_zxid: i64,
    ) -> Result<Vec<String>, String> {
        if !self.delegated.contains(at) {
            return Err(format!(
                "{at} is not delegated by the scope rooted at {}",
                self.root
            ));
        }
        if self
            .delegated
            .iter()
            .any(|d| d != at && path::is_within(d, at))
        {
            return Err(format!("scopes below {at} would lose their parent"));
        }
        let mut nodes: BTreeMap<String, Znode> = BTreeMap::new();
        for (p, z) in znodes {
            if !path::is_within(&p, at) || self.nodes.contains_key(&p) {
                return Err(format!("{p} cannot come back with {at}"));
            }
            nodes.insert(p, z.into());
        }
        if !nodes.contains_key(at) {
            return Err(format!("the merging scope's root {at} is missing"));
        }
        let names: Vec<(String, String)> = nodes
            .keys()
            .filter(|p| p.as_str() != at)
            .map(|p| {
                let parent = path::parent(p).unwrap_or("/").to_string();
                (parent, path::name(p).to_string())
            })
            .collect();
        for (parent, name) in names {
            match nodes.get_mut(&parent) {
                Some(z) => {
                    z.children.insert(name);
                }
                None => return Err(format!("{parent}/{name} came back without its parent")),
            }
        }
        self.delegated.remove(at);
        self.book.carved.remove(at);
        for (session, when) in &book.closed {
            self.book.closed.entry(*session).or_insert(*when);
        }
        self.last_zxid = self.last_zxid.max(last_zxid);
        fill_extents(&mut nodes);
        let extent = nodes.get(at).expect("checked above").extent;
        self.data_bytes += extent.bytes;
        self.extents_above(at, |e| e.add(extent));
        let mut touched = Vec::with_capacity(nodes.len());
        for (p, z) in nodes {
            self.index(&p, z.stat.ephemeral_owner);
            touched.push(p.clone());
            self.nodes.insert(p, z);
        }
        Ok(touched)
    }

    pub fn last_zxid(&self) -> i64 {
        self.last_zxid
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Sum of every znode's data length.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    pub fn get(&self, p: &str) -> Option<&Znode> {
        self.nodes.get(p)
    }

    /// The stored form of a znode, for persistence: `None` if it does not exist.
    pub fn stored(&self, p: &str) -> Option<StoredZnode> {
        self.nodes.get(p).map(Znode::stored)
    }

    /// Every znode in path order, for snapshots.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Znode)> {
        self.nodes.iter()
    }

    pub fn get_data(&self, p: &str) -> Result<(Vec<u8>, Stat), ApiError> {
        checked_path(p)?;
        self.owns(p)?;
        let z = self.node(p)?;
        Ok((z.data.clone(), z.stat))
    }

    pub fn exists(&self, p: &str) -> Result<Option<Stat>, ApiError> {
        checked_path(p)?;
        self.owns(p)?;
        Ok(self.nodes.get(p).map(|z| z.stat))
    }

    pub fn get_children(&self, p: &str) -> Result<(Vec<String>, Stat), ApiError> {
        checked_path(p)?;
        self.owns(p)?;
        let z = self.node(p)?;
        Ok((z.children.iter().cloned().collect(), z.stat))
    }

    /// How many znodes lie strictly below `p` here, and the delegated roots below it (their
    /// znodes are counted by their own scopes).
    pub fn descendants(&self, p: &str) -> Result<(u64, Vec<String>), ApiError> {
        checked_path(p)?;
        self.owns(p)?;
        self.node(p)?;
        let is_below = |q: &String| q != p && path::is_within(q, p);
        let count = if p == "/" {
            self.nodes.len() as u64 - 1
        } else {
            let (from, to) = below(p);
            let keys = (Bound::Included(from.as_str()), end_bound(&to));
            self.nodes.range::<str, _>(keys).count() as u64
        };
        let delegated = self
            .delegated
            .iter()
            .filter(|d| is_below(d))
            .cloned()
            .collect();
        Ok((count, delegated))
    }

    /// Gives the just-created `/zookeeper/config` the ACL version 3.8's has: -1 (its
    /// `DataTree.addConfigNode` sets the ACL with version -1). Part of applying the entry that
    /// creates it, so every replica does the same.
    pub fn mark_config_node(&mut self, p: &str) {
        if let Some(z) = self.nodes.get_mut(p) {
            z.stat.aversion = -1;
        }
    }

    /// Checks that `auth` holds one of `perm`'s bits on the znode at `p` (ZooKeeper's read
    /// checks: READ for getData, getChildren and getAllChildrenNumber, READ or ADMIN for
    /// getACL). A missing node passes: the read itself then answers `NoNode`, as in ZooKeeper.
    pub fn permit(&self, p: &str, perm: i32, auth: AuthInfo<'_>) -> Result<(), ApiError> {
        match self.nodes.get(p) {
            Some(z) => acl::check(&z.acl, perm, auth, p),
            None => Ok(()),
        }
    }

    /// A node's ACL as `auth` may see it, and its Stat: needs READ or ADMIN; without ADMIN,
    /// digest hashes are hidden.
    pub fn get_acl(&self, p: &str, auth: AuthInfo<'_>) -> Result<(Vec<Acl>, Stat), ApiError> {
        checked_path(p)?;
        self.owns(p)?;
        let z = self.node(p)?;
        acl::check(&z.acl, perms::READ | perms::ADMIN, auth, p)?;
        let shown = match acl::check(&z.acl, perms::ADMIN, auth, p) {
            Ok(()) => acl::visible(&z.acl),
            Err(_) => acl::redacted(&z.acl),
        };
        Ok((shown, z.stat))
    }

    fn node(&self, p: &str) -> Result<&Znode, ApiError> {
        self.nodes
            .get(p)
            .ok_or_else(|| ApiError::new(ErrorCode::NoNode, format!("no node at {p}")))
    }

    /// Checks what must hold after every apply: every znode is within the root and outside
    /// every delegation; each child listed exists here or is delegated; each node's parent
    /// lists it; `numChildren` and `dataLength` agree with what they count; the byte count,
    /// extents and indexes agree with the znodes.
    pub fn check_invariants(&self) -> Result<(), String> {
        let data_bytes: u64 = self.nodes.values().map(|z| z.data.len() as u64).sum();
        if data_bytes != self.data_bytes {
            return Err(format!("data_bytes {} != {data_bytes}", self.data_bytes));
        }
        let counted = counted_extents(&self.nodes);
        for ((p, z), extent) in self.nodes.iter().zip(counted) {
            if z.extent != extent {
                return Err(format!(
                    "{p}: the extent kept {:?} differs from the one counted {extent:?}",
                    z.extent
                ));
            }
        }
        let mut ephemerals: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
        let mut reapable = BTreeSet::new();
        for (p, z) in &self.nodes {
            match NodeKind::of(z.stat.ephemeral_owner) {
                NodeKind::Persistent => {}
                NodeKind::Ephemeral { session } => {
                    ephemerals.entry(session).or_default().insert(p.clone());
                }
                NodeKind::Container | NodeKind::Ttl { .. } => {
                    reapable.insert(p.clone());
                }
            }
        }
        if ephemerals != self.ephemerals || reapable != self.reapable {
            return Err(format!(
                "the indexes differ from the Stats: ephemerals {:?} != {ephemerals:?}, \
                 reapable {:?} != {reapable:?}",
                self.ephemerals, self.reapable
            ));
        }
        if !self.nodes.contains_key(&self.root) {
            return Err(format!("root {} is missing", self.root));
        }
        for d in &self.delegated {
            if *d == self.root || !path::is_within(d, &self.root) {
                return Err(format!(
                    "delegation {d} is not below the root {}",
                    self.root
                ));
            }
            let listed = path::parent(d)
                .and_then(|p| self.nodes.get(p))
                .is_some_and(|pz| pz.children.contains(path::name(d)));
            if !listed {
                return Err(format!("delegation {d} is not listed by its parent"));
            }
        }
        for (p, z) in &self.nodes {
            if let Err(e) = self.owns(p) {
                return Err(format!("znode {p} is not governed here: {}", e.message));
            }
            if z.stat.num_children as usize != z.children.len() {
                return Err(format!(
                    "{p}: numChildren {} != {}",
                    z.stat.num_children,
                    z.children.len()
                ));
            }
            if z.stat.data_length as usize != z.data.len() {
                return Err(format!(
                    "{p}: dataLength {} != {}",
                    z.stat.data_length,
                    z.data.len()
                ));
            }
            for c in &z.children {
                let child = path::join(p, c);
                if !self.nodes.contains_key(&child) && !self.delegated.contains(&child) {
                    return Err(format!("{p} lists missing child {c}"));
                }
            }
            if *p == self.root {
                continue;
            }
            if let Some(parent) = path::parent(p) {
                let listed = self
                    .nodes
                    .get(parent)
                    .is_some_and(|pz| pz.children.contains(path::name(p)));
                if !listed {
                    return Err(format!("{p} is not listed by its parent"));
                }
            }
        }
        Ok(())
    }
}

/// Whether a container or TTL node is due for reaping at leader time `now_ms`, as
/// ZooKeeper's `ContainerManager` decides: a container once it had children and has none; a
/// TTL node when childless and unchanged for its TTL.
pub fn reap_due(stat: &Stat, now_ms: i64) -> bool {
    if stat.num_children != 0 {
        return false;
    }
    match NodeKind::of(stat.ephemeral_owner) {
        NodeKind::Container => stat.cversion > 0,
        NodeKind::Ttl { ttl_ms } => now_ms.saturating_sub(stat.mtime) > ttl_ms,
        _ => false,
    }
}

/// The path whose scope governs `op`: its own, except for a sequential create, whose znode is
/// named only when it is applied and lands beside the others of its parent's children.
pub fn governing_path(op: &Op) -> &str {
    match op {
        Op::Create { path, mode, .. } if mode.is_sequential() => path::parent(path).unwrap_or("/"),
        other => other.path(),
    }
}

/// Validates a path given to a read or a non-sequential write.
pub fn checked_path(p: &str) -> Result<(), ApiError> {
    check_path_len(p)?;
    path::validate(p, false)
}

pub(crate) fn check_path_len(p: &str) -> Result<(), ApiError> {
    if p.len() > limits::PATH_BYTES_MAX {
        return Err(ApiError::new(
            ErrorCode::BadArguments,
            format!(
                "path of {} bytes exceeds the limit of {}",
                p.len(),
                limits::PATH_BYTES_MAX
            ),
        ));
    }
    Ok(())
}

/// The keys strictly below `root`, as a start and an exclusive end: `root/` to `root0` ('0'
/// follows '/', and names such as `root-x` sort between `root` and `root/`). For the root `/`:
/// from `/` itself, which callers skip, to the end. The one place this ordering is relied on.
fn below(root: &str) -> (String, Option<String>) {
    if root == "/" {
        ("/".to_string(), None)
    } else {
        (format!("{root}/"), Some(format!("{root}0")))
    }
}

fn end_bound(end: &Option<String>) -> Bound<&str> {
    match end {
        Some(end) => Bound::Excluded(end.as_str()),
        None => Bound::Unbounded,
    }
}

/// The root's children with their extents ([`Tree::subtrees`]): the znodes below the root in
/// key order, stepping over each child's own subtree with one seek, so a scope with a million
/// children costs a walk over them and one with a few deep ones a seek per child, never a
/// lookup per child.
pub struct Subtrees<'a> {
    nodes: &'a BTreeMap<String, Znode>,
    /// Length of the children's common prefix (`root/`, or `/`).
    prefix: usize,
    range: std::collections::btree_map::Range<'a, String, Znode>,
    end: Option<String>,
}

impl<'a> Iterator for Subtrees<'a> {
    type Item = (&'a str, Extent);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (p, z) = self.range.next()?;
            let Some(name) = p.get(self.prefix..).filter(|n| !n.is_empty()) else {
                continue;
            };
            match name.find('/') {
                None => return Some((name, z.extent)),
                // Below a child already given (it sorts before everything under it): past
                // the rest of that child's subtree, which is one run of keys.
                Some(slash) => {
                    let skip_to = format!("{}0", &p[..self.prefix + slash]);
                    self.range = self
                        .nodes
                        .range::<str, _>((Bound::Included(skip_to.as_str()), end_bound(&self.end)));
                }
            }
        }
    }
}

/// Every znode's extent counted over `nodes`, in the map's order. Walked backwards, a znode
/// comes after everything below it (a path sorts after its ancestors), so each extent is
/// complete when its znode is reached, and only the extents of parents not yet reached are
/// held.
fn counted_extents(nodes: &BTreeMap<String, Znode>) -> Vec<Extent> {
    let mut from_children: BTreeMap<&str, Extent> = BTreeMap::new();
    let mut counted = Vec::with_capacity(nodes.len());
    for (p, z) in nodes.iter().rev() {
        let mut extent = from_children.remove(p.as_str()).unwrap_or_default();
        extent.add(Extent::one(z.data.len()));
        if let Some(parent) = path::parent(p) {
            from_children.entry(parent).or_default().add(extent);
        }
        counted.push(extent);
    }
    counted.reverse();
    counted
}

/// Sets every znode's extent from the others in `nodes`: a tree loaded or taken back.
fn fill_extents(nodes: &mut BTreeMap<String, Znode>) {
    let counted = counted_extents(nodes);
    for (z, extent) in nodes.values_mut().zip(counted) {
        z.extent = extent;
    }
}

/// Puts `other`'s entries into `map` (their keys do not overlap). `BTreeMap::append` rebuilds
/// the whole map; when one side is much smaller, inserting it into the other costs only its
/// own size: a carve near either end of a large scope leaves most of the map untouched.
fn join<V>(map: &mut BTreeMap<String, V>, mut other: BTreeMap<String, V>) {
    if other.len() > map.len() {
        std::mem::swap(map, &mut other);
    }
    if other.len().saturating_mul(16) < map.len() {
        map.extend(other);
    } else {
        map.append(&mut other);
    }
}
