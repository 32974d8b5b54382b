//! The znode tree: ZooKeeper's data model as a pure, deterministic state machine.
//!
//! No I/O, no clock, no randomness, no hash-map iteration: `apply` is a function of the tree and
//! the transaction (which carries its zxid hint and leader-stamped time). Storage reads the
//! paths a transaction touched from [`Applied::touched`] and persists them; it never needs to
//! diff the tree.

mod apply;
#[cfg(test)]
mod model_test;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use scopekeeper_client::proto::{ApiError, ErrorCode, MultiSlot, Op, OpResult, Stat};
use scopekeeper_client::{limits, path};
use serde::{Deserialize, Serialize};

/// One znode: its data and Stat. Children are kept as names for `getChildren`; the persisted form
/// ([`StoredZnode`]) leaves them out because they follow from the paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Znode {
    pub data: Vec<u8>,
    pub stat: Stat,
    pub children: BTreeSet<String>,
}

/// A znode as stored on disk and in snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredZnode {
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    pub stat: Stat,
}

/// A transaction as it appears in the log: one op, or an atomic multi.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Txn {
    Single(Op),
    Multi(Vec<Op>),
}

impl Txn {
    /// About how many bytes the transaction takes in an entry, for batching.
    pub fn approx_bytes(&self) -> usize {
        let op_bytes = |op: &Op| op.path().len() + op.data_len() + 16;
        match self {
            Txn::Single(op) => op_bytes(op),
            Txn::Multi(ops) => ops.iter().map(op_bytes).sum::<usize>() + 8,
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
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Single(Result<OpResult, ApiError>),
    Multi(Vec<MultiSlot>),
}

/// The tree of one scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    nodes: BTreeMap<String, Znode>,
    last_zxid: i64,
    /// Sum of every znode's data length, kept as the tree changes.
    data_bytes: u64,
}

/// What an admission hook sees of the tree when an op is about to run.
#[derive(Clone, Copy, Debug)]
pub struct OpView<'a> {
    /// The node the op names, before the op.
    pub target: Option<&'a Stat>,
    /// Its parent, before the op.
    pub parent: Option<&'a Stat>,
    pub znodes: u64,
    pub data_bytes: u64,
}

/// Decides whether an op may run. Called once per op, after its path is found valid and before
/// it changes anything; in a multi, later ops see what earlier ones did. Implementations must be
/// deterministic: the same ops and views give the same answers on every replica.
pub trait Admit {
    fn admit(&mut self, op: &Op, view: OpView<'_>) -> Result<(), ApiError>;
}

/// Admits everything: a scope without a policy.
pub struct AdmitAll;

impl Admit for AdmitAll {
    fn admit(&mut self, _op: &Op, _view: OpView<'_>) -> Result<(), ApiError> {
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
                children: BTreeSet::new(),
            },
        );
        Tree {
            nodes,
            last_zxid: 0,
            data_bytes: 0,
        }
    }

    /// Rebuilds a tree from stored znodes (any order) and the last zxid applied.
    pub fn from_stored(
        last_zxid: i64,
        stored: impl IntoIterator<Item = (String, StoredZnode)>,
    ) -> Result<Self, String> {
        let mut nodes: BTreeMap<String, Znode> = BTreeMap::new();
        for (p, z) in stored {
            path::validate(&p, false).map_err(|e| format!("stored znode: {e}"))?;
            let node = Znode {
                data: z.data,
                stat: z.stat,
                children: BTreeSet::new(),
            };
            nodes.insert(p, node);
        }
        nodes.entry("/".to_string()).or_insert_with(|| Znode {
            data: Vec::new(),
            stat: Stat::default(),
            children: BTreeSet::new(),
        });
        let paths: Vec<String> = nodes
            .keys()
            .filter(|p| p.as_str() != "/")
            .cloned()
            .collect();
        for p in paths {
            let parent = path::parent(&p).unwrap_or("/").to_string();
            let Some(parent_node) = nodes.get_mut(&parent) else {
                return Err(format!("stored znode {p} has no parent {parent}"));
            };
            parent_node.children.insert(path::name(&p).to_string());
        }
        let data_bytes = nodes.values().map(|z| z.data.len() as u64).sum();
        let tree = Tree {
            nodes,
            last_zxid,
            data_bytes,
        };
        tree.check_invariants()?;
        Ok(tree)
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
        self.nodes.get(p).map(|z| StoredZnode {
            data: z.data.clone(),
            stat: z.stat,
        })
    }

    /// Every znode in path order, for snapshots.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Znode)> {
        self.nodes.iter()
    }

    pub fn get_data(&self, p: &str) -> Result<(Vec<u8>, Stat), ApiError> {
        checked_path(p)?;
        let z = self.node(p)?;
        Ok((z.data.clone(), z.stat))
    }

    pub fn exists(&self, p: &str) -> Result<Option<Stat>, ApiError> {
        checked_path(p)?;
        Ok(self.nodes.get(p).map(|z| z.stat))
    }

    pub fn get_children(&self, p: &str) -> Result<(Vec<String>, Stat), ApiError> {
        checked_path(p)?;
        let z = self.node(p)?;
        Ok((z.children.iter().cloned().collect(), z.stat))
    }

    fn node(&self, p: &str) -> Result<&Znode, ApiError> {
        self.nodes
            .get(p)
            .ok_or_else(|| ApiError::new(ErrorCode::NoNode, format!("no node at {p}")))
    }

    /// Checks what must hold after every apply: each child listed exists, each node's parent
    /// lists it, and `numChildren` and `dataLength` agree with what they count.
    pub fn check_invariants(&self) -> Result<(), String> {
        let data_bytes: u64 = self.nodes.values().map(|z| z.data.len() as u64).sum();
        if data_bytes != self.data_bytes {
            return Err(format!("data_bytes {} != {data_bytes}", self.data_bytes));
        }
        for (p, z) in &self.nodes {
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
                if !self.nodes.contains_key(&child) {
                    return Err(format!("{p} lists missing child {c}"));
                }
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
