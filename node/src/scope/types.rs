//! The openraft type configuration of a scope, and what its log carries.

use std::fmt;

use scopekeeper_client::proto::{ApiError, PolicyInfo};
use serde::{Deserialize, Serialize};

use crate::policy::PolicyMode;
use crate::policy::admission::Principal;
use crate::tree::{Outcome, Stamp, Txn};

/// An entry of a scope's log: stamped by the leader, carrying who proposed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub stamp: Stamp,
    /// The client's identity, which the scope's policy judges.
    pub principal: Principal,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Client operations, judged by the active policy and applied to the tree.
    Txn(Txn),
    /// Replaces the scope's policy from the next entry on. Authorized by the cluster's admin
    /// role, never by the policy it replaces.
    SetPolicy(SetPolicy),
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
            Body::Txn(Txn::Single(op)) => write!(f, "op on {}", op.path()),
            Body::Txn(Txn::Multi(ops)) => write!(f, "multi of {}", ops.len()),
            Body::SetPolicy(p) => write!(f, "set policy ({} bytes)", p.component.len()),
        }
    }
}

/// What applying a command produced, handed back to the proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    pub zxid: i64,
    pub outcome: CommandOutcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandOutcome {
    Txn(Outcome),
    PolicySet(Result<PolicyInfo, ApiError>),
    /// Blank and membership entries.
    Nothing,
}

openraft::declare_raft_types!(
    /// A scope's raft types: commands in, results out, nodes addressed by `BasicNode.addr`.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = openraft::BasicNode,
);

pub type Raft = openraft::Raft<TypeConfig, super::state_machine::ScopeStateMachine>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
