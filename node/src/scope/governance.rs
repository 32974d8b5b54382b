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
use crate::policy::admission::{PolicyAdmission, Principal, RunVerdict};
use crate::policy::engine::{PolicyEngine, Supply};
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
    supply: Supply,
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
    admission.supply = supply;
    while let Err(fault) = admission.prepare() {
        attempt += 1;
        host_fault(attempt, log_index, hash, &fault);
    }
    let mut applied = Vec::with_capacity(proposals.len());
    let fault = |applied: &Vec<Applied>, fault: String| {
        HostFault(format!(
            "policy {hash} failed in the host at log index {log_index} after {} of {} transactions: {fault}",
            applied.len(),
            proposals.len()
        ))
    };
    while applied.len() < proposals.len() {
        let next = &proposals[applied.len()..];
        if let Some(result) = apply_unjudged(tree, stamp, &next[0]) {
            applied.push(result);
            continue;
        }
        let run = next.iter().take_while(|p| is_client_txn(&p.txn)).count();
        if run == 0 || admission.asks_each_op() {
            // A delegation (its carve cannot be taken back), or every op after a trap.
            admission.ask();
            let result = apply_judged(tree, stamp, &next[0], &mut admission)
                .map_err(|f| fault(&applied, f))?;
            applied.push(result);
            continue;
        }
        judge_run(tree, stamp, &next[..run], &mut admission, &mut applied)
            .map_err(|f| fault(&applied, f))?;
    }
    let outcomes: Vec<&crate::tree::Outcome> = applied.iter().map(|a| &a.outcome).collect();
    governance
        .judged
        .record(log_index, admission.fuel_used(), &outcomes);
    Ok(applied)
}

/// A client's transaction: what a run judged in one call is made of (see `PolicyAdmission`).
fn is_client_txn(txn: &Txn) -> bool {
    matches!(txn, Txn::Single(_) | Txn::Multi(_))
}

/// Applies a run of client transactions tentatively, records their ops, and has the policy
/// judge them in one call. Keeps the transactions up to the first denied one, which is
/// applied again with the verdicts given (so it fails as it would have, judged alone), and
/// takes back those after it: the caller goes on from there. After a trap, takes back the
/// whole run, for the caller to apply one op per call. At least one transaction is applied
/// unless the policy trapped.
fn judge_run(
    tree: &mut Tree,
    stamp: Stamp,
    run: &[Proposal],
    admission: &mut PolicyAdmission<'_>,
    applied: &mut Vec<Applied>,
) -> Result<(), String> {
    admission.record();
    // Each transaction's result, how to take it back, and where its recorded ops begin.
    let mut tentative = Vec::with_capacity(run.len());
    for proposal in run {
        admission.set_principal(&proposal.principal);
        let first_op = admission.recorded();
        let auth = proposal.principal.auth();
        let (result, undo) =
            tree.apply_tentatively(stamp, proposal.session, auth, &proposal.txn, admission);
        tentative.push((result, undo, first_op));
    }
    let verdict = if admission.recorded() == 0 {
        RunVerdict::Admitted
    } else {
        admission.judge_recorded()?
    };
    let (keep, replay) = match verdict {
        RunVerdict::Admitted => (run.len(), None),
        RunVerdict::Trapped => (0, None),
        RunVerdict::DeniedAt { at, verdicts } => {
            let denied = tentative
                .iter()
                .rposition(|(_, _, first_op)| *first_op <= at)
                .expect("the first transaction's ops begin at 0");
            let first_op = tentative[denied].2;
            (denied, Some(verdicts[first_op..].to_vec()))
        }
    };
    while tentative.len() > keep {
        let (_, undo, _) = tentative.pop().expect("longer than keep");
        tree.retract(undo);
    }
    applied.extend(tentative.into_iter().map(|(result, _, _)| result));
    if let Some(verdicts) = replay {
        admission.replay(verdicts);
        applied.push(apply_judged(tree, stamp, &run[keep], admission)?);
    }
    Ok(())
}

/// Applies one proposal, judged as `admission`'s hook stands. `Err` is a host fault.
fn apply_judged(
    tree: &mut Tree,
    stamp: Stamp,
    proposal: &Proposal,
    admission: &mut PolicyAdmission<'_>,
) -> Result<Applied, String> {
    admission.set_principal(&proposal.principal);
    let auth = proposal.principal.auth();
    let result = tree.apply_by(stamp, proposal.session, auth, &proposal.txn, admission);
    match admission.host_fault.take() {
        Some(fault) => Err(fault),
        None => Ok(result),
    }
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

#[cfg(test)]
mod tests {
    use scopekeeper_client::proto::{CreateMode, Op};

    use super::*;
    use crate::policy::PolicyMode;
    use crate::policy::build::repository_component;
    use crate::scope::types::SetPolicy;
    use crate::tree::Outcome;

    fn principal(id: &str, roles: &[&str]) -> Principal {
        Principal {
            id: id.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ids: Vec::new(),
        }
    }

    /// Entries of client transactions drawn from a fixed generator: creates under a few
    /// parents (so `max_children` counts what earlier ops of the entry created), data of 0 to
    /// 7 bytes, deletes, sets and multis, from two principals with different roles.
    fn entries(seed: u64) -> Vec<Vec<Proposal>> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let who = [principal("alice", &[]), principal("bob", &["writer"])];
        (0..12)
            .map(|_| {
                let len = 1 + next(30) as usize;
                (0..len)
                    .map(|_| {
                        let op = |next: &mut dyn FnMut(u64) -> u64| {
                            let parent = ["/a", "/b", "/prod"][next(3) as usize];
                            let path = format!("{parent}/n{}", next(6));
                            let data = vec![b'x'; next(8) as usize];
                            match next(6) {
                                0 => Op::create(parent, Vec::new(), CreateMode::Persistent),
                                1 => Op::Delete { path, version: -1 },
                                2 => Op::SetData {
                                    path,
                                    data,
                                    version: -1,
                                },
                                _ => Op::create(&path, data, CreateMode::Persistent),
                            }
                        };
                        let txn = if next(5) == 0 {
                            Txn::Multi(vec![op(&mut next), op(&mut next)])
                        } else {
                            Txn::Single(op(&mut next))
                        };
                        Proposal {
                            principal: who[next(2) as usize].clone(),
                            session: 0,
                            txn,
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// What judging one op per call gives: the reference a run judged in one call must match.
    fn one_op_per_call(
        engine: &PolicyEngine,
        active: &ActivePolicy,
        tree: &mut Tree,
        entry: EntryContext<'_>,
        proposals: &[Proposal],
    ) -> Vec<Applied> {
        let compiled = engine
            .compiled(active.hash, &active.component)
            .expect("compiles");
        let mut admission = PolicyAdmission::new(
            engine,
            &compiled,
            &active.info.params,
            active.info.mode,
            &Principal::default(),
            entry.log_index,
            entry.stamp.time_ms,
            entry.scope_root,
        );
        proposals
            .iter()
            .map(|p| {
                admission.set_principal(&p.principal);
                let auth = p.principal.auth();
                tree.apply_by(entry.stamp, p.session, auth, &p.txn, &mut admission)
            })
            .collect()
    }

    #[test]
    fn a_run_judged_in_one_call_matches_one_op_per_call() {
        let engine = PolicyEngine::new().expect("engine");
        let admin = principal("root", &[crate::policy::ADMIN_ROLE]);
        let limits = r#"{"max_data_bytes": 4, "max_children": 3}"#;
        let roles = r#"{"rules": [{"prefix": "/prod", "role": "writer"}]}"#;
        for (name, params, mode) in [
            ("limits", limits, PolicyMode::Enforce),
            ("limits", limits, PolicyMode::Audit),
            ("roles", roles, PolicyMode::Enforce),
            // A trap in a run: the run is taken back and judged one op per call, the op that
            // traps denied with every later op of the entry, as one call per op would.
            ("hostile", "trap-under-b", PolicyMode::Enforce),
        ] {
            let component = repository_component(name).expect("builds");
            let mut governance = Governance::default();
            let set = SetPolicy {
                component,
                params: params.into(),
                mode,
            };
            let stamp = Stamp {
                zxid_hint: 0,
                time_ms: 1_000,
            };
            governance.install(&admin, &set, 1, stamp, 0);
            let active = governance.active.clone().expect("installed");
            let (mut batched, mut reference) = (Tree::new(), Tree::new());
            let mut denied = 0;
            for (i, proposals) in entries(7).iter().enumerate() {
                let entry = EntryContext {
                    stamp: Stamp {
                        zxid_hint: 0,
                        time_ms: 1_000 + i as i64,
                    },
                    log_index: 2 + i as u64,
                    scope_root: "/",
                    writes_per_sec: 0,
                    ms_since_split: 0,
                    ms_since_write: 0,
                };
                // Where the instance comes from changes nothing the policy decides.
                let supply = if i % 2 == 0 {
                    Supply::MadeAhead
                } else {
                    Supply::OnTheSpot
                };
                let got = apply_txns(
                    &engine,
                    &mut governance,
                    &mut batched,
                    entry,
                    proposals,
                    supply,
                )
                .expect("no host fault");
                let want = one_op_per_call(&engine, &active, &mut reference, entry, proposals);
                assert_eq!(got, want, "{name} {mode:?}, entry {i}");
                assert_eq!(batched, reference, "{name} {mode:?}, entry {i}");
                denied += got
                    .iter()
                    .filter(|a| match &a.outcome {
                        Outcome::Single(Err(e)) => e.code == ErrorCode::PolicyDenied,
                        _ => false,
                    })
                    .count();
            }
            // The entries exercise the path that takes transactions back (a denial after
            // admitted ops of the same run), except in audit mode, which denies nothing.
            assert_eq!(
                denied > 0,
                mode == PolicyMode::Enforce,
                "{name} {mode:?}: {denied} denied"
            );
        }
    }
}
