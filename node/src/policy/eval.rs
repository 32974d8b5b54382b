//! Evaluating a policy: one fresh instance per log entry (a reused instance would burn fuel that
//! depends on its history), a fixed fuel budget, and a clear line between a deterministic trap
//! (the same on every anchor: deny) and a host fault (ours: stop and retry, never skip).

use wasmtime::Store;
use wasmtime::component::{ComponentExportIndex, Func, InstancePre, TypedFunc};

use super::engine::{Compiled, PolicyEngine, Refused, Supply};
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

/// The interface a policy exports, as `policy-sdk/wit/policy.wit` names it.
const RULES_INTERFACE: &str = "scopekeeper:policy/rules@0.4.0";

/// `admit`'s parameters and results, as `TypedFunc` sees them.
type AdmitParams<'a> = (
    &'a str,
    &'a wit::Entry,
    &'a [wit::Principal],
    &'a [wit::JudgedOp],
);
type AdmitResults = (Vec<wit::Verdict>,);

/// Where a component exports `admit`, after checking, in one instance made for the purpose,
/// that its type is exactly what [`EntryEvaluation::admit`] calls it with. Every later
/// instance of the component has the same type, so calls need not check it again.
pub(super) fn admit_export(
    engine: &PolicyEngine,
    pre: &InstancePre<()>,
) -> Result<ComponentExportIndex, String> {
    let component = pre.component();
    let rules = component
        .get_export_index(None, RULES_INTERFACE)
        .ok_or_else(|| format!("no export named {RULES_INTERFACE}"))?;
    let admit = component
        .get_export_index(Some(&rules), "admit")
        .ok_or_else(|| format!("{RULES_INTERFACE} exports no `admit`"))?;
    let mut store = Store::new(engine.engine(), ());
    store
        .set_fuel(limits::POLICY_FUEL_VALIDATE)
        .map_err(|e| format!("{e:#}"))?;
    let instance = pre.instantiate(&mut store).map_err(|e| format!("{e:#}"))?;
    instance
        .get_typed_func::<AdmitParams<'_>, AdmitResults>(&mut store, &admit)
        .map_err(|e| format!("`admit` has the wrong type: {e:#}"))?;
    Ok(admit)
}

/// One entry's evaluation: a fresh instance and its fuel.
pub struct EntryEvaluation {
    store: Store<()>,
    /// The instance's `admit`, of the type [`admit_export`] checked.
    admit: Func,
    fuel_budget: u64,
    /// Set once the instance trapped; every later op of the entry is denied with it.
    trapped: Option<String>,
}

impl EntryEvaluation {
    /// A fresh instance for one entry: with [`Supply::MadeAhead`], the one made ahead for this
    /// policy if there is one.
    pub fn begin(
        engine: &PolicyEngine,
        compiled: &Compiled,
        fuel: u64,
        supply: Supply,
    ) -> Result<Self, EvalError> {
        let ready = match supply {
            Supply::MadeAhead => engine.take_ready(compiled.hash, fuel),
            Supply::OnTheSpot => None,
        };
        match ready {
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
        let instance = compiled
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .map_err(classify)?;
        let admit = instance
            .get_func(&mut store, compiled.admit)
            .ok_or_else(|| EvalError::HostFault("the instance has no `admit` export".into()))?;
        Ok(EntryEvaluation {
            store,
            admit,
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
        // SAFETY: `admit` is the export `admit_export` found and type-checked against exactly
        // `AdmitParams` and `AdmitResults`, in an instance of the same component as this one.
        let typed =
            unsafe { TypedFunc::<AdmitParams<'_>, AdmitResults>::new_unchecked(self.admit) };
        let answer = typed
            .call(&mut self.store, (params, entry, principals, ops))
            .map(|(verdicts,)| verdicts);
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
