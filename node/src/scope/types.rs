//! The openraft type configuration of a scope, and what its log carries.

use std::fmt;

use scopekeeper_client::proto::{ApiError, PolicyInfo};
use serde::{Deserialize, Serialize};

use crate::policy::PolicyMode;
use crate::policy::admission::Principal;
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
}

/// One client's transaction and who sent it (the identity the policy judges).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub principal: Principal,
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
    /// Blank and membership entries.
    Nothing,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResult {
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
