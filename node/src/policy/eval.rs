//! Evaluating a policy: one fresh instance per log entry (a reused instance would burn fuel that
//! depends on its history), a fixed fuel budget, and a clear line between a deterministic trap
//! (the same on every anchor: deny) and a host fault (ours: stop and retry, never skip).

use wasmtime::Store;

use super::engine::{Compiled, PolicyEngine, Refused};
use super::wit::Policy;
use super::wit::exports::scopekeeper::policy::rules as wit;
use crate::limits;

/// What went wrong while evaluating.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The guest trapped or ran out of fuel: deterministic, so a denial everywhere.
    #[error("the policy trapped: {0}")]
    Trap(String),
    /// The host failed (e.g. could not allocate an instance): apply must stop, not skip.
    #[error("the policy host failed: {0}")]
    HostFault(String),
}

fn classify(e: wasmtime::Error) -> EvalError {
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        return EvalError::Trap(trap.to_string());
    }
    // Guest panics surface as traps with context; anything without a trap code is ours.
    EvalError::HostFault(format!("{e:#}"))
}

/// One entry's evaluation: a fresh instance and its fuel.
pub struct EntryEvaluation {
    store: Store<()>,
    policy: Policy,
    fuel_budget: u64,
    /// Set once the instance trapped; every later op of the entry is denied with it.
    trapped: Option<String>,
}

impl EntryEvaluation {
    /// A fresh instance for one entry: the one made ahead for this policy if there is one.
    pub fn begin(engine: &PolicyEngine, compiled: &Compiled, fuel: u64) -> Result<Self, EvalError> {
        match engine.take_ready(compiled.hash, fuel) {
            Some(ready) => Ok(ready),
            None => Self::instantiate(engine, compiled, fuel),
        }
    }

    /// A fresh instance made now.
    pub(super) fn instantiate(
        engine: &PolicyEngine,
        compiled: &Compiled,
        fuel: u64,
    ) -> Result<Self, EvalError> {
        let mut store = Store::new(engine.engine(), ());
        store
            .set_fuel(fuel)
            .map_err(|e| EvalError::HostFault(format!("{e:#}")))?;
        let policy = compiled.pre.instantiate(&mut store).map_err(classify)?;
        Ok(EntryEvaluation {
            store,
            policy,
            fuel_budget: fuel,
            trapped: None,
        })
    }

    /// Judges `ops` in order: their verdicts, up to and including the first denial.
    pub fn admit(
        &mut self,
        params: &str,
        entry: &wit::Entry,
        principals: &[wit::Principal],
        ops: &[wit::JudgedOp],
    ) -> Result<Vec<wit::Verdict>, EvalError> {
        if let Some(trap) = &self.trapped {
            return Err(EvalError::Trap(trap.clone()));
        }
        let answer = self.policy.scopekeeper_policy_rules().call_admit(
            &mut self.store,
            params,
            entry,
            principals,
            ops,
        );
        let err = match answer {
            Ok(verdicts) => match answered(ops.len(), &verdicts) {
                Ok(()) => return Ok(verdicts),
                // The guest broke the contract: as deterministic as a trap, and handled as one.
                Err(why) => EvalError::Trap(why),
            },
            Err(e) => classify(e),
        };
        if let EvalError::Trap(t) = &err {
            self.trapped = Some(t.clone());
        }
        Err(err)
    }

    /// As [`EntryEvaluation::admit`], for one op.
    pub fn admit_one(
        &mut self,
        params: &str,
        entry: &wit::Entry,
        principal: &wit::Principal,
        op: wit::JudgedOp,
    ) -> Result<wit::Verdict, EvalError> {
        let op = wit::JudgedOp { principal: 0, ..op };
        let mut verdicts = self.admit(params, entry, std::slice::from_ref(principal), &[op])?;
        Ok(verdicts.remove(0))
    }

    /// Fuel burnt so far by this entry.
    pub fn fuel_used(&self) -> u64 {
        self.fuel_budget - self.store.get_fuel().unwrap_or(0)
    }
}

/// Whether `verdicts` answer `ops` ops as `admit` promises: one each, in order, ending early
/// only at a denial.
fn answered(ops: usize, verdicts: &[wit::Verdict]) -> Result<(), String> {
    let denied_last = matches!(
        verdicts.last(),
        Some(wit::Verdict {
            decision: wit::Decision::Deny(_),
            ..
        })
    );
    if verdicts.len() == ops || (verdicts.len() < ops && denied_last) {
        Ok(())
    } else {
        Err(format!(
            "the policy answered {} verdicts for {ops} ops; admit answers each op up to the first denial",
            verdicts.len()
        ))
    }
}

/// Runs the policy's `validate-params` on a fresh instance.
pub fn validate_params(
    engine: &PolicyEngine,
    compiled: &Compiled,
    params: &str,
) -> Result<(), Refused> {
    let mut store = Store::new(engine.engine(), ());
    store
        .set_fuel(limits::POLICY_FUEL_VALIDATE)
        .map_err(|e| Refused::Trapped(format!("{e:#}")))?;
    let policy = compiled
        .pre
        .instantiate(&mut store)
        .map_err(|e| Refused::Trapped(format!("{e:#}")))?;
    match policy
        .scopekeeper_policy_rules()
        .call_validate_params(&mut store, params)
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(why)) => Err(Refused::BadParams(why)),
        Err(e) => Err(Refused::Trapped(format!("{e:#}"))),
    }
}
