//! The openraft type configuration of a scope, and what its log carries.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::tree::{Outcome, Stamp, Txn};

/// A client transaction as it enters a scope's log, stamped by the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub stamp: Stamp,
    pub txn: Txn,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.txn {
            Txn::Single(op) => write!(f, "{:?} {}", std::mem::discriminant(op), op.path()),
            Txn::Multi(ops) => write!(f, "multi of {}", ops.len()),
        }
    }
}

/// What applying a command produced, handed back to the proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    pub zxid: i64,
    pub outcome: Outcome,
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
