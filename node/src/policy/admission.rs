//! The bridge from the tree's `Admit` hook to a scope's policy, for one log entry.

use scopekeeper_client::proto::{ApiError, CreateMode, ErrorCode, Id, Op, Stat};

use super::engine::{Compiled, PolicyEngine};
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

/// Judges the ops of one entry with one fresh instance.
pub struct PolicyAdmission<'a> {
    pub engine: &'a PolicyEngine,
    pub compiled: &'a Compiled,
    pub params: &'a str,
    pub mode: PolicyMode,
    /// Who proposed the transaction being judged; set per transaction of a batch.
    pub principal: &'a Principal,
    pub log_index: u64,
    pub time_ms: i64,
    pub scope_root: &'a str,
    eval: Option<EntryEvaluation>,
    /// Fuel of instances already discarded after a trap.
    fuel_spent: u64,
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
}

impl<'a> PolicyAdmission<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        engine: &'a PolicyEngine,
        compiled: &'a Compiled,
        params: &'a str,
        mode: PolicyMode,
        principal: &'a Principal,
        log_index: u64,
        time_ms: i64,
        scope_root: &'a str,
    ) -> Self {
        PolicyAdmission {
            engine,
            compiled,
            params,
            mode,
            principal,
            log_index,
            time_ms,
            scope_root,
            eval: None,
            fuel_spent: 0,
            host_fault: None,
            notes: Vec::new(),
            writes_per_sec: 0,
            ms_since_split: 0,
            ms_since_write: 0,
        }
    }

    pub fn hash(&self) -> PolicyHash {
        self.compiled.hash
    }

    /// Fuel this entry burnt (0 if no op reached the policy).
    pub fn fuel_used(&self) -> u64 {
        self.fuel_spent + self.eval.as_ref().map_or(0, EntryEvaluation::fuel_used)
    }

    /// Instantiates the policy now, so that a host fault shows before anything is applied.
    pub fn prepare(&mut self) -> Result<(), String> {
        if self.eval.is_none() {
            match EntryEvaluation::begin(self.engine, self.compiled, limits::POLICY_FUEL_PER_ENTRY)
            {
                Ok(eval) => self.eval = Some(eval),
                Err(EvalError::HostFault(f)) => return Err(f),
                // A trap while instantiating is deterministic: the first op will meet it again.
                Err(EvalError::Trap(_)) => {}
            }
        }
        Ok(())
    }

    fn deny(&mut self, code: &str, message: &str) -> Result<(), ApiError> {
        let hash = self.hash();
        if self.mode == PolicyMode::Audit {
            tracing::warn!(log_index = self.log_index, policy = %hash, code, "audit: the policy would deny: {message}");
            self.notes.push(format!("audit: {code}: {message}"));
            return Ok(());
        }
        tracing::info!(log_index = self.log_index, policy = %hash, code, "policy denied: {message}");
        Err(ApiError::new(
            ErrorCode::PolicyDenied,
            format!("denied by policy {hash} ({code}): {message}"),
        ))
    }

    fn judge(
        &mut self,
        mutation: wit::Mutation,
        view: OpView<'_>,
    ) -> Result<wit::Verdict, EvalError> {
        if self.eval.is_none() {
            self.eval = Some(EntryEvaluation::begin(
                self.engine,
                self.compiled,
                limits::POLICY_FUEL_PER_ENTRY,
            )?);
        }
        let principal = wit::Principal {
            id: self.principal.id.clone(),
            roles: self.principal.roles.clone(),
        };
        let context = wit::Context {
            log_index: self.log_index,
            time_ms: self.time_ms,
            scope_root: self.scope_root.to_string(),
            depth: depth(self.scope_root, &mutation.path),
            target: view.target().map(stat),
            parent: view.parent().map(stat),
            stats: wit::ScopeStats {
                znodes: view.znodes(),
                data_bytes: view.data_bytes(),
                writes_per_sec: self.writes_per_sec,
                ms_since_split: self.ms_since_split,
                ms_since_write: self.ms_since_write,
            },
        };
        let eval = self.eval.as_mut().expect("begun above");
        eval.admit(self.params, &mutation, &principal, &context)
    }
}

impl Drop for PolicyAdmission<'_> {
    fn drop(&mut self) {
        if let Some(used) = self.eval.take() {
            self.engine.retire(used);
        }
    }
}

impl PolicyAdmission<'_> {
    fn verdict(&mut self, mutation: wit::Mutation, view: OpView<'_>) -> Result<(), ApiError> {
        if let Some(fault) = &self.host_fault {
            return Err(ApiError::new(ErrorCode::SystemError, fault.clone()));
        }
        match self.judge(mutation, view) {
            Ok(wit::Verdict { decision, warnings }) => {
                for w in warnings {
                    tracing::info!(log_index = self.log_index, policy = %self.hash(), "policy warning: {w}");
                    self.notes.push(w);
                }
                match decision {
                    wit::Decision::Allow => Ok(()),
                    wit::Decision::Deny(d) => self.deny(&d.code, &d.message),
                }
            }
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
