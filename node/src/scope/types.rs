//! The openraft type configuration of a scope, and what its log carries.

use std::fmt;

use scopekeeper_client::proto::{ApiError, NodeChange, PolicyInfo};
use serde::{Deserialize, Serialize};

use crate::directory::Route;
use crate::policy::PolicyMode;
use crate::policy::admission::Principal;
use crate::storage::ScopeId;
use crate::tree::{Outcome, Stamp, Txn};

/// An entry of a scope's log, stamped by the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub stamp: Stamp,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Client transactions, batched by the leader: one policy instance judges all of them,
    /// and each gets its own zxid, in order.
    Txns(Vec<Proposal>),
    /// Replaces the scope's policy from the next entry on. Authorized by the cluster's admin
    /// role, never by the policy it replaces. Never batched with anything.
    SetPolicy {
        principal: Principal,
        set: SetPolicy,
    },
    /// Creates a child scope at `path` on this scope's anchors: the subtree there moves into
    /// it, under `policy` (or this scope's own policy if `None`). Needs the admin role and the
    /// admission of this scope's policy (a `delegate` mutation). Never batched.
    Delegate {
        principal: Principal,
        path: String,
        policy: Option<SetPolicy>,
    },
    /// The scope splits itself: the subtree at `path` becomes a child scope on the same
    /// anchors, under the same policy. Proposed by the scope's leader when its policy's
    /// `split` says so (or by an admin's `scope split`); no principal approves it.
    Split { path: String },
    /// Creates the session scope at `path` (below `/zookeeper/sessions`, creating the
    /// znodes above it), on this scope's anchors and with no policy: session records are the
    /// cluster's bookkeeping, judged by no policy. Proposed by a node of the root scope.
    SessionScope { path: String },
    /// The scope stops taking writes (or creating scopes) to merge into its parent scope
    /// `into`, for good: its state is final, and its leader hands it to the parent in an
    /// `Absorb`. Proposed by the scope's leader when its policy's `merge` says so; refused
    /// while the scope has child scopes.
    Seal { into: ScopeId },
    /// A sealed child scope merges back: its final state, taken back into this scope's tree.
    /// Proposed by the child's leader; refused unless the child is still delegated here.
    Absorb(Box<Absorb>),
    /// Changes the cluster's node registry; root scope only, admin role.
    Nodes {
        principal: Principal,
        change: NodeChange,
    },
}

/// A child scope's whole state as it merges back into its parent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Absorb {
    pub child: ScopeId,
    pub root: String,
    pub last_zxid: i64,
    pub znodes: Vec<(String, crate::tree::StoredZnode)>,
    pub book: crate::tree::SessionBook,
}

/// One client's transaction, who sent it (the identity the policy judges) and the session it
/// acts for (0: none), which owns the ephemerals it creates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub principal: Principal,
    pub session: i64,
    pub txn: Txn,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetPolicy {
    #[serde(with = "serde_bytes")]
    pub component: Vec<u8>,
    pub params: String,
    pub mode: PolicyMode,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.body {
            Body::Txns(proposals) => write!(f, "{} transactions", proposals.len()),
            Body::SetPolicy { set, .. } => write!(f, "set policy ({} bytes)", set.component.len()),
            Body::Delegate { path, .. } => write!(f, "delegate {path}"),
            Body::Nodes { change, .. } => write!(f, "{change:?}"),
            Body::Split { path } => write!(f, "split at {path}"),
            Body::SessionScope { path } => write!(f, "session scope at {path}"),
            Body::Seal { into } => write!(f, "seal to merge into {into}"),
            Body::Absorb(a) => write!(f, "absorb scope {} at {}", a.child, a.root),
        }
    }
}

/// What applying a command produced, handed back to the proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The scope's last zxid after the entry.
    pub zxid: i64,
    pub outcome: CommandOutcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandOutcome {
    /// One result per proposal, in order.
    Txns(Vec<TxnResult>),
    PolicySet(Result<PolicyInfo, ApiError>),
    /// The new child scope's route.
    Delegated(Result<Route, ApiError>),
    NodesChanged(Result<(), ApiError>),
    /// A Seal or Absorb entry: done, or refused (deterministically, so it is final).
    Merge(Result<(), ApiError>),
    /// Blank and membership entries.
    Nothing,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResult {
    pub zxid: i64,
    pub outcome: Outcome,
}

/// A member of a scope's raft group: which node holds it, where to reach it, and the labels of
/// its node (zone, tier), which the scope's policy sees when it judges quorums and placement.
/// A replica's raft id is its own and never reused within the scope (the root scope's first
/// replicas take their node's id); `node` says where it lives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorNode {
    pub node: u64,
    pub addr: String,
    pub labels: std::collections::BTreeMap<String, String>,
}

impl AnchorNode {
    pub fn new(
        node: u64,
        addr: impl Into<String>,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Self {
        AnchorNode {
            node,
            addr: addr.into(),
            labels,
        }
    }
}

impl fmt::Display for AnchorNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} at {}", self.node, self.addr)?;
        for (k, v) in &self.labels {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

openraft::declare_raft_types!(
    /// A scope's raft types: commands in, results out, members addressed by `AnchorNode.addr`.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = AnchorNode,
);

pub type Raft = openraft::Raft<TypeConfig, super::state_machine::ScopeStateMachine>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;

/// The log position a scope created by delegation starts from: every anchor writes the same
/// state at it (what the parent carved out), as if a snapshot at index 0, so the group needs
/// no `initialize` and a replica that missed it gets a snapshot from the leader.
pub fn genesis_log_id() -> LogId {
    use openraft::vote::RaftLeaderIdExt;
    LogId::new(
        <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(0, 0),
        0,
    )
}

/// The id of the scope created by the delegation at `log_index` of `parent`: deterministic on
/// every anchor, and never reused (a hash of a position no other entry has).
pub fn child_scope_id(parent: crate::storage::ScopeId, log_index: u64) -> crate::storage::ScopeId {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"scopekeeper/child-scope/v1");
    h.update(parent.to_be_bytes());
    h.update(log_index.to_be_bytes());
    let digest = h.finalize();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    // Positive as an i64 (shown in JSON and to ZooKeeper tooling), and never the root's 0.
    (u64::from_be_bytes(id) >> 1).max(1)
}
