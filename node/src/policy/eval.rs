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

    pub fn admit(
        &mut self,
        params: &str,
        mutation: &wit::Mutation,
        principal: &wit::Principal,
        context: &wit::Context,
    ) -> Result<wit::Verdict, EvalError> {
        if let Some(trap) = &self.trapped {
            return Err(EvalError::Trap(trap.clone()));
        }
        match self.policy.scopekeeper_policy_rules().call_admit(
            &mut self.store,
            params,
            mutation,
            principal,
            context,
        ) {
            Ok(verdict) => Ok(verdict),
            Err(e) => {
                let err = classify(e);
                if let EvalError::Trap(t) = &err {
                    self.trapped = Some(t.clone());
                }
                Err(err)
            }
        }
    }

    /// Fuel burnt so far by this entry.
    pub fn fuel_used(&self) -> u64 {
        self.fuel_budget - self.store.get_fuel().unwrap_or(0)
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
