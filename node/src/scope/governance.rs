//! A scope's policy state, and applying entries under it.
//!
//! `SetPolicy` is authorized by the admin role, never by the policy it replaces, so no policy
//! can lock its scope forever. A committed policy that this host cannot run is a host fault:
//! apply halts and retries the same entry; it never skips it or judges it differently.

use std::sync::Arc;
use std::time::Duration;

use scopekeeper_client::proto::{ApiError, ErrorCode, PolicyInfo};
use serde::{Deserialize, Serialize};

use super::types::{Proposal, SetPolicy};
use crate::limits;
use crate::policy::admission::{PolicyAdmission, Principal};
use crate::policy::engine::PolicyEngine;
use crate::policy::{ADMIN_ROLE, NODE_ROLE, PolicyHash};
use crate::tree::{AdmitAll, Applied, Outcome, Stamp, Tree, Txn};

/// The policy judging a scope's entries now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivePolicy {
    pub hash: PolicyHash,
    pub info: PolicyInfo,
    pub component: Arc<Vec<u8>>,
}

/// The persisted form of a scope's governance, without component bytes (those live in the
/// `policies` keyspace, content-addressed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovernanceMeta {
    pub active: Option<(PolicyHash, PolicyInfo)>,
    pub history: Vec<PolicyInfo>,
    pub judged: Judged,
}

/// What the scope's policies have done, as replicated state: every anchor computes the same
/// values from the same log, so comparing them compares verdicts and fuel entry by entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Judged {
    /// Entries a policy judged.
    pub entries: u64,
    /// Fuel those judgements burnt.
    pub fuel: u64,
    /// FNV-1a over (log index, fuel, outcome) of every judged entry, chained.
    pub digest: u64,
}

impl Judged {
    fn record(&mut self, log_index: u64, fuel: u64, outcome: &[&crate::tree::Outcome]) {
        self.entries += 1;
        self.fuel += fuel;
        let mut h = if self.digest == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.digest
        };
        let encoded = postcard::to_stdvec(outcome).unwrap_or_default();
        for byte in log_index
            .to_be_bytes()
            .iter()
            .chain(&fuel.to_be_bytes())
            .chain(&encoded)
        {
            h ^= u64::from(*byte);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.digest = h;
    }
}

/// A scope's governance in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Governance {
    pub active: Option<ActivePolicy>,
    pub history: Vec<PolicyInfo>,
    pub judged: Judged,
}

impl Governance {
    /// The active policy's hash, component and parameters, for a leader-only call (placement,
    /// split, merge) made off the state's lock.
    pub fn active_code(&self) -> Option<(PolicyHash, Arc<Vec<u8>>, String)> {
        self.active
            .as_ref()
            .map(|a| (a.hash, a.component.clone(), a.info.params.clone()))
    }

    pub fn meta(&self) -> GovernanceMeta {
        GovernanceMeta {
            active: self.active.as_ref().map(|a| (a.hash, a.info.clone())),
            history: self.history.clone(),
            judged: self.judged,
        }
    }

    /// Applies a SetPolicy entry. Every check here is deterministic.
    pub fn set_policy(
        &mut self,
        principal: &Principal,
        set: &SetPolicy,
        log_index: u64,
        stamp: Stamp,
        zxid: i64,
    ) -> Result<PolicyInfo, ApiError> {
        check_policy_change(principal, set)?;
        Ok(self.install(principal, set, log_index, stamp, zxid))
    }

    /// Makes `set` the active policy; the caller has checked it with [`check_policy_change`].
    pub fn install(
        &mut self,
        principal: &Principal,
        set: &SetPolicy,
        log_index: u64,
        stamp: Stamp,
        zxid: i64,
    ) -> PolicyInfo {
        let hash = PolicyHash::of(&set.component);
        let info = PolicyInfo {
            hash: hash.hex(),
            params: set.params.clone(),
            mode: set.mode,
            log_index,
            zxid,
            set_by: principal.id.clone(),
            time_ms: stamp.time_ms,
            component_bytes: set.component.len() as u64,
        };
        self.active = Some(ActivePolicy {
            hash,
            info: info.clone(),
            component: Arc::new(set.component.clone()),
        });
        self.history.push(info.clone());
        if self.history.len() > limits::POLICY_HISTORY_MAX {
            let excess = self.history.len() - limits::POLICY_HISTORY_MAX;
            self.history.drain(..excess);
        }
        info
    }

    /// The governance a child scope starts with when it inherits this scope's policy: the
    /// same active policy, and its history starting from it.
    pub fn inherited(&self) -> Governance {
        Governance {
            active: self.active.clone(),
            history: self.active.iter().map(|a| a.info.clone()).collect(),
            judged: Judged::default(),
        }
    }
}

/// Whether `principal` may set `set` as a scope's policy (on a scope, or on a new child
/// scope). Deterministic: the same answer on every anchor.
pub fn check_policy_change(principal: &Principal, set: &SetPolicy) -> Result<(), ApiError> {
    check_admin(principal, "replacing a scope's policy")?;
    if set.component.len() > limits::POLICY_BYTES_MAX
        || set.params.len() > limits::POLICY_PARAMS_BYTES_MAX
    {
        return Err(ApiError::new(
            ErrorCode::BadArguments,
            "policy or parameters over their size limits",
        ));
    }
    Ok(())
}

/// Whether `principal` holds the cluster's admin role, needed to change what governs a scope.
pub fn check_admin(principal: &Principal, what: &str) -> Result<(), ApiError> {
    if principal.has_role(ADMIN_ROLE) {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::NoAuth,
        format!(
            "{what} requires the {ADMIN_ROLE:?} role; {:?} has roles {:?}",
            principal.id, principal.roles
        ),
    ))
}

/// What a policy is told about the entry it judges.
#[derive(Clone, Copy, Debug)]
pub struct EntryContext<'a> {
    pub stamp: Stamp,
    pub log_index: u64,
    pub scope_root: &'a str,
    /// The scope's write rate when the entry began (replicated load figures).
    pub writes_per_sec: u64,
    /// Leader-stamped ms since the scope was created or last split.
    pub ms_since_split: u64,
    /// Leader-stamped ms since the scope's last write.
    pub ms_since_write: u64,
}

/// Why an entry could not be applied: the host failed in the middle of it.
#[derive(Debug)]
pub struct HostFault(pub String);

/// Applies an entry's transactions in order under the active policy, if any: one instance for
/// the whole entry (a fresh one after a trap), one zxid per transaction.
///
/// Host faults before anything is applied (the component does not compile, no instance can be
/// had) are retried here, in place. A fault after some transactions were applied cannot be
/// undone cheaply, so it halts the scope's apply (`Err`); the entry is applied again after a
/// restart. Either way the entry is never skipped.
pub fn apply_txns(
    engine: &PolicyEngine,
    governance: &mut Governance,
    tree: &mut Tree,
    entry: EntryContext<'_>,
    proposals: &[Proposal],
) -> Result<Vec<Applied>, HostFault> {
    let EntryContext {
        stamp,
        log_index,
        scope_root,
        writes_per_sec,
        ms_since_split,
        ms_since_write,
    } = entry;
    let Some((hash, component, params, mode)) = governance.active.as_ref().map(|a| {
        (
            a.hash,
            a.component.clone(),
            a.info.params.clone(),
            a.info.mode,
        )
    }) else {
        return Ok(proposals
            .iter()
            .map(|p| {
                apply_unjudged(tree, stamp, p).unwrap_or_else(|| {
                    let auth = p.principal.auth();
                    tree.apply_by(stamp, p.session, auth, &p.txn, &mut AdmitAll)
                })
            })
            .collect());
    };
    let mut attempt = 0u32;
    let compiled = loop {
        attempt += 1;
        match engine.compiled(hash, &component) {
            Ok(c) => break c,
            Err(e) => host_fault(
                attempt,
                log_index,
                hash,
                &format!("the committed policy does not compile here: {e}"),
            ),
        }
    };
    let nobody = Principal::default();
    let mut admission = PolicyAdmission::new(
        engine,
        &compiled,
        &params,
        mode,
        &nobody,
        log_index,
        stamp.time_ms,
        scope_root,
    );
    admission.writes_per_sec = writes_per_sec;
    admission.ms_since_split = ms_since_split;
    admission.ms_since_write = ms_since_write;
    while let Err(fault) = admission.prepare() {
        attempt += 1;
        host_fault(attempt, log_index, hash, &fault);
    }
    let mut applied = Vec::with_capacity(proposals.len());
    for proposal in proposals {
        if let Some(result) = apply_unjudged(tree, stamp, proposal) {
            applied.push(result);
            continue;
        }
        admission.principal = &proposal.principal;
        let auth = proposal.principal.auth();
        let result = tree.apply_by(stamp, proposal.session, auth, &proposal.txn, &mut admission);
        if let Some(fault) = admission.host_fault.take() {
            return Err(HostFault(format!(
                "policy {hash} failed in the host at log index {log_index} after {} of {} transactions: {fault}",
                applied.len(),
                proposals.len()
            )));
        }
        applied.push(result);
    }
    let outcomes: Vec<&crate::tree::Outcome> = applied.iter().map(|a| &a.outcome).collect();
    governance
        .judged
        .record(log_index, admission.fuel_used(), &outcomes);
    Ok(applied)
}

/// Session bookkeeping and reaping are the cluster's own transactions: no policy judges them,
/// and only a node may propose them. `None` for a client's transaction.
fn apply_unjudged(tree: &mut Tree, stamp: Stamp, proposal: &Proposal) -> Option<Applied> {
    if !matches!(proposal.txn, Txn::Session(_) | Txn::Reap { .. }) {
        return None;
    }
    if proposal.principal.has_role(NODE_ROLE) {
        return Some(tree.apply_as(stamp, proposal.session, &proposal.txn, &mut AdmitAll));
    }
    let refused = ApiError::new(
        ErrorCode::NoAuth,
        format!(
            "session bookkeeping and reaping are proposed by nodes only; {:?} has roles {:?}",
            proposal.principal.id, proposal.principal.roles
        ),
    );
    // A refused transaction still takes its zxid, as every transaction does.
    let mut applied = tree.apply(stamp, &Txn::Multi(Vec::new()));
    applied.outcome = match proposal.txn {
        Txn::Session(_) => Outcome::Session(Err(refused)),
        _ => Outcome::Single(Err(refused)),
    };
    Some(applied)
}

/// Halts this anchor's apply for a moment. The entry is retried, never skipped.
fn host_fault(attempt: u32, log_index: u64, hash: PolicyHash, why: &str) {
    if attempt == 1 || attempt.is_power_of_two() {
        tracing::error!(log_index, policy = %hash, attempt, "policy host fault; apply halts and retries: {why}");
    }
    std::thread::sleep(Duration::from_millis(200).min(Duration::from_millis(10) * attempt));
}
