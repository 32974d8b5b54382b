//! The bridge from the tree's `Admit` hook to a scope's policy, for one log entry.

use scopekeeper_client::proto::{ApiError, CreateMode, ErrorCode, Id, Op, Stat};

use super::engine::{Compiled, PolicyEngine, Supply};
use super::eval::{EntryEvaluation, EvalError};
use super::wit::exports::scopekeeper::policy::rules as wit;
use super::{PolicyHash, PolicyMode};
use crate::limits;
use crate::tree::{Admit, AuthInfo, OpView};

/// Who proposed an entry: the id and roles policies see, and the identities ZooKeeper ACLs
/// are checked against.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Principal {
    pub id: String,
    pub roles: Vec<String>,
    /// `ip:`, `digest:` and `x509:` identities (ZooKeeper's `authInfo`).
    pub ids: Vec<Id>,
}

impl Principal {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// The principal as ACLs see it. The cluster's admins and nodes pass every ACL, as
    /// ZooKeeper's `super` does: an operator can always repair an ACL that locks everyone out.
    pub fn auth(&self) -> AuthInfo<'_> {
        AuthInfo {
            ids: &self.ids,
            superuser: self.has_role(super::ADMIN_ROLE) || self.has_role(super::NODE_ROLE),
        }
    }
}

/// Judges the ops of one entry with one fresh instance (a second one after a trap).
///
/// The ops of a run of client transactions are judged together, in one call: the run is applied
/// tentatively while this records each op and the context it meets ([`Hook::Record`]), then the
/// policy answers for all of them ([`PolicyAdmission::judge_recorded`]). If it admits them all,
/// the run stands. If it denies one, the caller takes back the transactions from the denied
/// one's on, applies that one again with the verdicts already given ([`Hook::Replay`]), and
/// starts a new run after it. Each op so meets exactly the state it would meet one call per op,
/// at one call per run rather than per op: per op, a call into the instance (with a guest
/// allocation for every string and list it carries) cost more than the judgement itself.
pub struct PolicyAdmission<'a> {
    pub engine: &'a PolicyEngine,
    pub compiled: &'a Compiled,
    pub params: &'a str,
    pub mode: PolicyMode,
    entry: wit::Entry,
    /// Who proposed the transactions, each once, in the order they first proposed one.
    principals: Vec<wit::Principal>,
    /// Who proposed the transaction being applied: an index into `principals`.
    principal: u32,
    hook: Hook,
    /// The ops recorded since the run began, with their contexts.
    recorded: Vec<wit::JudgedOp>,
    eval: Option<EntryEvaluation>,
    /// Fuel of an instance discarded after a trap.
    fuel_spent: u64,
    /// Set once a run trapped: every later op is asked about alone.
    one_per_call: bool,
    /// Set when the host, not the policy, failed: the entry must be retried, not judged.
    pub host_fault: Option<String>,
    /// Warnings and audit-mode denials, for the log.
    pub notes: Vec<String>,
    /// The scope's write rate when the entry began, from its replicated load figures.
    pub writes_per_sec: u64,
    /// Leader-stamped ms since the scope was created or last split.
    pub ms_since_split: u64,
    /// Leader-stamped ms since the scope's last write before this entry.
    pub ms_since_write: u64,
    /// Where the entry's instances come from and go.
    pub supply: Supply,
}

/// What the tree's `Admit` hook does with an op.
enum Hook {
    /// Asks the policy about the op now: delegations, and every op after a trap.
    Ask,
    /// Records the op and its context and admits it for now; see [`PolicyAdmission`].
    Record,
    /// Answers with the verdicts the policy already gave for these ops, in order.
    Replay(std::vec::IntoIter<wit::Verdict>),
}

/// The policy's answer for a recorded run.
pub enum RunVerdict {
    /// Every op stands (in audit mode, denials included: they are logged).
    Admitted,
    /// The recorded op `at` was denied: the verdicts up to it, for [`PolicyAdmission::replay`].
    DeniedAt {
        at: usize,
        verdicts: Vec<wit::Verdict>,
    },
    /// The policy trapped: the run must be applied again, one op per call in a fresh instance.
    Trapped,
}

impl<'a> PolicyAdmission<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        engine: &'a PolicyEngine,
        compiled: &'a Compiled,
        params: &'a str,
        mode: PolicyMode,
        principal: &Principal,
        log_index: u64,
        time_ms: i64,
        scope_root: &str,
    ) -> Self {
        let mut admission = PolicyAdmission {
            engine,
            compiled,
            params,
            mode,
            entry: wit::Entry {
                log_index,
                time_ms,
                scope_root: scope_root.to_string(),
            },
            principals: Vec::new(),
            principal: 0,
            hook: Hook::Ask,
            recorded: Vec::new(),
            eval: None,
            fuel_spent: 0,
            one_per_call: false,
            host_fault: None,
            notes: Vec::new(),
            writes_per_sec: 0,
            ms_since_split: 0,
            ms_since_write: 0,
            supply: Supply::OnTheSpot,
        };
        admission.set_principal(principal);
        admission
    }

    pub fn hash(&self) -> PolicyHash {
        self.compiled.hash
    }

    fn log_index(&self) -> u64 {
        self.entry.log_index
    }

    /// Fuel this entry burnt (0 if no op reached the policy).
    pub fn fuel_used(&self) -> u64 {
        self.fuel_spent + self.eval.as_ref().map_or(0, EntryEvaluation::fuel_used)
    }

    /// Instantiates the policy now, so that a host fault shows before anything is applied.
    pub fn prepare(&mut self) -> Result<(), String> {
        match instance(&mut self.eval, self.engine, self.compiled, self.supply) {
            Ok(_) => Ok(()),
            Err(EvalError::HostFault(f)) => Err(f),
            // A trap while instantiating is deterministic: the first op will meet it again.
            Err(EvalError::Trap(_)) => Ok(()),
        }
    }

    /// The transactions applied next are `principal`'s.
    pub fn set_principal(&mut self, principal: &Principal) {
        let found = self
            .principals
            .iter()
            .position(|p| p.id == principal.id && p.roles == principal.roles);
        let index = found.unwrap_or_else(|| {
            self.principals.push(wit::Principal {
                id: principal.id.clone(),
                roles: principal.roles.clone(),
            });
            self.principals.len() - 1
        });
        self.principal = u32::try_from(index).expect("fewer principals than transactions");
    }

    /// Whether ops are asked about one per call: after a trap, for the rest of the entry.
    pub fn asks_each_op(&self) -> bool {
        self.one_per_call
    }

    /// Asks about each op as it comes, until told otherwise.
    pub fn ask(&mut self) {
        self.hook = Hook::Ask;
    }

    /// Starts recording a run: ops are admitted for now, and judged by `judge_recorded`.
    pub fn record(&mut self) {
        self.hook = Hook::Record;
        self.recorded.clear();
    }

    /// How many ops were recorded since the run began.
    pub fn recorded(&self) -> usize {
        self.recorded.len()
    }

    /// Answers the ops of a transaction applied again with `verdicts`, given for them before.
    pub fn replay(&mut self, verdicts: Vec<wit::Verdict>) {
        self.hook = Hook::Replay(verdicts.into_iter());
    }

    /// The policy's verdicts on the recorded run, in one call (in audit mode, one more per
    /// denial, the denied op standing). `Err` is a host fault, also left in `host_fault`.
    pub fn judge_recorded(&mut self) -> Result<RunVerdict, String> {
        let recorded = std::mem::take(&mut self.recorded);
        let mut from = 0;
        while from < recorded.len() {
            let verdicts = match self.call(&recorded[from..]) {
                Ok(verdicts) => verdicts,
                Err(EvalError::Trap(trap)) => {
                    tracing::info!(log_index = self.log_index(), policy = %self.hash(), "the policy trapped on a run of {} ops; asking about each op in a fresh instance: {trap}", recorded.len());
                    // Its fuel still counts; the next op takes a fresh instance.
                    if let Some(used) = self.eval.take() {
                        self.fuel_spent += used.fuel_used();
                        self.discard(used);
                    }
                    self.one_per_call = true;
                    self.hook = Hook::Ask;
                    return Ok(RunVerdict::Trapped);
                }
                Err(EvalError::HostFault(fault)) => {
                    self.host_fault = Some(fault.clone());
                    return Err(fault);
                }
            };
            for v in &verdicts {
                self.warn(&v.warnings);
            }
            let answered = verdicts.len();
            if let Some(wit::Verdict {
                decision: wit::Decision::Deny(d),
                ..
            }) = verdicts.last()
            {
                if self.mode == PolicyMode::Enforce {
                    // Enforced, the first denial ends the run: this is the first call.
                    assert_eq!(from, 0, "an enforced run asks once");
                    return Ok(RunVerdict::DeniedAt {
                        at: answered - 1,
                        verdicts,
                    });
                }
                let (code, message) = (d.code.clone(), d.message.clone());
                let _ = self.deny(&code, &message);
            }
            from += answered;
        }
        Ok(RunVerdict::Admitted)
    }

    /// Done with a used instance: back to the preparer, or dropped here.
    fn discard(&self, used: EntryEvaluation) {
        match self.supply {
            Supply::MadeAhead => self.engine.retire(used),
            Supply::OnTheSpot => drop(used),
        }
    }

    fn call(&mut self, ops: &[wit::JudgedOp]) -> Result<Vec<wit::Verdict>, EvalError> {
        instance(&mut self.eval, self.engine, self.compiled, self.supply)?.admit(
            self.params,
            &self.entry,
            &self.principals,
            ops,
        )
    }

    fn warn(&mut self, warnings: &[String]) {
        for w in warnings {
            tracing::info!(log_index = self.log_index(), policy = %self.hash(), "policy warning: {w}");
            self.notes.push(w.clone());
        }
    }

    fn deny(&mut self, code: &str, message: &str) -> Result<(), ApiError> {
        let hash = self.hash();
        let log_index = self.log_index();
        if self.mode == PolicyMode::Audit {
            tracing::warn!(log_index, policy = %hash, code, "audit: the policy would deny: {message}");
            self.notes.push(format!("audit: {code}: {message}"));
            return Ok(());
        }
        tracing::info!(log_index, policy = %hash, code, "policy denied: {message}");
        Err(ApiError::new(
            ErrorCode::PolicyDenied,
            format!("denied by policy {hash} ({code}): {message}"),
        ))
    }

    /// The op as the policy sees it, with the context it meets.
    fn judged_op(&self, mutation: wit::Mutation, view: OpView<'_>) -> wit::JudgedOp {
        wit::JudgedOp {
            context: wit::Context {
                depth: depth(&self.entry.scope_root, &mutation.path),
                target: view.target().map(stat),
                parent: view.parent().map(stat),
                stats: wit::ScopeStats {
                    znodes: view.znodes(),
                    data_bytes: view.data_bytes(),
                    writes_per_sec: self.writes_per_sec,
                    ms_since_split: self.ms_since_split,
                    ms_since_write: self.ms_since_write,
                },
            },
            mutation,
            principal: self.principal,
        }
    }

    fn verdict(&mut self, mutation: wit::Mutation, view: OpView<'_>) -> Result<(), ApiError> {
        if let Some(fault) = &self.host_fault {
            return Err(ApiError::new(ErrorCode::SystemError, fault.clone()));
        }
        let asked = match &mut self.hook {
            Hook::Record => {
                let op = self.judged_op(mutation, view);
                self.recorded.push(op);
                return Ok(());
            }
            Hook::Replay(verdicts) => verdicts.next().ok_or_else(|| {
                EvalError::HostFault(
                    "a replayed transaction asked about more ops than it did before".into(),
                )
            }),
            Hook::Ask => {
                let op = self.judged_op(mutation, view);
                // `admit` answers one op with one verdict (`eval::answered` checks).
                self.call(std::slice::from_ref(&op))
                    .map(|mut verdicts| verdicts.remove(0))
                    .inspect(|v| self.warn(&v.warnings))
            }
        };
        match asked {
            Ok(wit::Verdict { decision, .. }) => match decision {
                wit::Decision::Allow => Ok(()),
                wit::Decision::Deny(d) => self.deny(&d.code, &d.message),
            },
            Err(EvalError::Trap(trap)) => self.deny(
                "trap",
                &format!("the policy failed and fails closed: {trap}"),
            ),
            Err(EvalError::HostFault(fault)) => {
                self.host_fault = Some(fault.clone());
                Err(ApiError::new(ErrorCode::SystemError, fault))
            }
        }
    }
}

/// The entry's instance, made (or taken from those made ahead) on first use.
fn instance<'e>(
    eval: &'e mut Option<EntryEvaluation>,
    engine: &PolicyEngine,
    compiled: &Compiled,
    supply: Supply,
) -> Result<&'e mut EntryEvaluation, EvalError> {
    match eval {
        Some(eval) => Ok(eval),
        none => Ok(none.insert(EntryEvaluation::begin(
            engine,
            compiled,
            limits::POLICY_FUEL_PER_ENTRY,
            supply,
        )?)),
    }
}

impl Drop for PolicyAdmission<'_> {
    fn drop(&mut self) {
        if let Some(used) = self.eval.take() {
            self.discard(used);
        }
    }
}

impl Admit for PolicyAdmission<'_> {
    fn admit(&mut self, op: &Op, view: OpView<'_>) -> Result<(), ApiError> {
        self.verdict(mutation(op), view)
    }

    fn admit_delegation(&mut self, path: &str, view: OpView<'_>) -> Result<(), ApiError> {
        let mutation = wit::Mutation {
            op: wit::OpKind::Delegate,
            path: path.to_string(),
            data: Vec::new(),
            create_mode: None,
            expected_version: -1,
        };
        self.verdict(mutation, view)
    }
}

fn mutation(op: &Op) -> wit::Mutation {
    let (kind, data, mode, version) = match op {
        Op::Create { data, mode, .. } => (
            wit::OpKind::Create,
            data.clone(),
            Some(match mode {
                CreateMode::Persistent => wit::CreateMode::Persistent,
                CreateMode::PersistentSequential => wit::CreateMode::PersistentSequential,
                CreateMode::Ephemeral => wit::CreateMode::Ephemeral,
                CreateMode::EphemeralSequential => wit::CreateMode::EphemeralSequential,
                CreateMode::Container => wit::CreateMode::Container,
                CreateMode::PersistentWithTtl { .. }
                | CreateMode::PersistentSequentialWithTtl { .. } => wit::CreateMode::Ttl,
            }),
            -1,
        ),
        Op::Delete { version, .. } => (wit::OpKind::Delete, Vec::new(), None, *version),
        Op::SetData { data, version, .. } => (wit::OpKind::SetData, data.clone(), None, *version),
        Op::Check { version, .. } => (wit::OpKind::Check, Vec::new(), None, *version),
        Op::SetAcl { version, .. } => (wit::OpKind::SetAcl, Vec::new(), None, *version),
    };
    wit::Mutation {
        op: kind,
        path: op.path().to_string(),
        data,
        create_mode: mode,
        expected_version: version,
    }
}

fn stat(s: &Stat) -> wit::Stat {
    wit::Stat {
        czxid: s.czxid,
        mzxid: s.mzxid,
        ctime: s.ctime,
        mtime: s.mtime,
        version: s.version,
        cversion: s.cversion,
        aversion: s.aversion,
        ephemeral_owner: s.ephemeral_owner,
        data_length: s.data_length,
        num_children: s.num_children,
        pzxid: s.pzxid,
    }
}

/// Components of `path` below `root`: `/a/b` under `/` is 2.
pub fn depth(root: &str, path: &str) -> u32 {
    let rest = path.strip_prefix(root).unwrap_or(path);
    rest.split('/').filter(|c| !c.is_empty()).count() as u32
}

#[cfg(test)]
mod tests {
    #[test]
    fn depth_below_the_scope_root() {
        assert_eq!(super::depth("/", "/"), 0);
        assert_eq!(super::depth("/", "/a/b"), 2);
        assert_eq!(super::depth("/app", "/app/x"), 1);
    }
}
