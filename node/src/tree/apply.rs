//! Applying transactions. Every op validates completely before it changes anything, and records
//! how to undo each change, so a multi that fails part-way leaves the tree exactly as it was.

use std::collections::BTreeSet;

use scopekeeper_client::proto::{
    Acl, ApiError, CreateMode, ErrorCode, MultiSlot, NodeKind, Op, OpResult, Stat, TTL_MS_MAX,
    perms,
};
use scopekeeper_client::{limits, path};

use super::acl::{self, AuthInfo};
use super::session::{SessionOutcome, SessionRecord, SessionTxn, record_path};
use super::{
    Admit, AdmitAll, Applied, Change, Extent, OpView, Outcome, Stamp, Tree, Txn, Znode,
    check_path_len, checked_path,
};

/// A transaction applied by [`Tree::apply_tentatively`], and how to take it back.
#[must_use = "a tentative transaction is either kept (dropped) or taken back (Tree::retract)"]
pub struct Tentative {
    undo: Vec<Undo>,
    zxid: i64,
    /// The tree's last zxid before the transaction.
    last_zxid: i64,
}

/// The inverse of one change, applied in reverse order on rollback.
enum Undo {
    RemoveNode(String),
    RestoreNode(String, Znode),
    RestoreStat(String, Stat),
    RestoreData(String, Vec<u8>, Stat),
    RestoreAcl(String, Vec<Acl>, Stat),
    AddChild(String, String),
    RemoveChild(String, String),
}

struct Txc<'a> {
    zxid: i64,
    time_ms: i64,
    /// The session the transaction acts for (0: none): the owner of its ephemerals.
    session: i64,
    /// The identities ACLs are checked against.
    auth: AuthInfo<'a>,
    undo: Vec<Undo>,
    touched: &'a mut Vec<String>,
    changes: Vec<Change>,
}

impl Tree {
    /// Applies one transaction. The zxid is `max(hint, last zxid + 1)`: monotone per scope and
    /// deterministic, whatever clock the leader had.
    pub fn apply(&mut self, stamp: Stamp, txn: &Txn) -> Applied {
        self.apply_with(stamp, txn, &mut AdmitAll)
    }

    /// As [`Tree::apply`], asking `admit` about each op before it runs. A refused op fails like
    /// any other error: alone, or with its whole multi.
    pub fn apply_with(&mut self, stamp: Stamp, txn: &Txn, admit: &mut impl Admit) -> Applied {
        self.apply_as(stamp, 0, txn, admit)
    }

    /// As [`Tree::apply_with`], for `session` (0: none): ephemerals it creates are the
    /// session's. ACLs do not apply: for the cluster's own transactions and for tests.
    pub fn apply_as(
        &mut self,
        stamp: Stamp,
        session: i64,
        txn: &Txn,
        admit: &mut impl Admit,
    ) -> Applied {
        self.apply_by(stamp, session, AuthInfo::SUPER, txn, admit)
    }

    /// As [`Tree::apply_as`], with ZooKeeper's ACL checks against `auth`.
    pub fn apply_by(
        &mut self,
        stamp: Stamp,
        session: i64,
        auth: AuthInfo<'_>,
        txn: &Txn,
        admit: &mut impl Admit,
    ) -> Applied {
        self.apply_keeping_undo(stamp, session, auth, txn, admit).0
    }

    /// As [`Tree::apply_by`], keeping what [`Tree::retract`] needs to take the transaction
    /// back: a policy that judges a run of transactions in one call may deny one after later
    /// ones were applied. For clients' transactions only (one op or a multi): a delegation's
    /// carve and session bookkeeping change what the undo log does not cover.
    pub fn apply_tentatively(
        &mut self,
        stamp: Stamp,
        session: i64,
        auth: AuthInfo<'_>,
        txn: &Txn,
        admit: &mut impl Admit,
    ) -> (Applied, Tentative) {
        assert!(
            matches!(txn, Txn::Single(_) | Txn::Multi(_)),
            "only a client's transaction can be taken back"
        );
        let last_zxid = self.last_zxid;
        let (applied, undo) = self.apply_keeping_undo(stamp, session, auth, txn, admit);
        let zxid = applied.zxid;
        (
            applied,
            Tentative {
                undo,
                zxid,
                last_zxid,
            },
        )
    }

    /// Takes back a transaction [`Tree::apply_tentatively`] applied, which must be the last
    /// one applied: the tree is then exactly as it was before it.
    pub fn retract(&mut self, mut t: Tentative) {
        assert_eq!(
            self.last_zxid, t.zxid,
            "transactions are taken back latest first"
        );
        self.undo(&mut t.undo);
        self.last_zxid = t.last_zxid;
    }

    fn apply_keeping_undo(
        &mut self,
        stamp: Stamp,
        session: i64,
        auth: AuthInfo<'_>,
        txn: &Txn,
        admit: &mut impl Admit,
    ) -> (Applied, Vec<Undo>) {
        let zxid = stamp.zxid_hint.max(self.last_zxid.saturating_add(1));
        assert!(
            zxid > self.last_zxid,
            "zxid must rise: {zxid} after {}",
            self.last_zxid
        );
        self.last_zxid = zxid;
        let mut touched = Vec::new();
        let mut txc = Txc {
            zxid,
            time_ms: stamp.time_ms,
            session,
            // ACLs govern clients' ops; the cluster's bookkeeping (session ends deleting
            // ephemerals, reaping) passes them, as ZooKeeper's session expiry does.
            auth: match txn {
                Txn::Session(_) | Txn::Reap { .. } => AuthInfo::SUPER,
                _ => auth,
            },
            undo: Vec::new(),
            touched: &mut touched,
            changes: Vec::new(),
        };
        let outcome = match txn {
            Txn::Single(op) => {
                let result = self.apply_op(&mut txc, op, admit);
                if result.is_err() {
                    self.rollback(&mut txc);
                }
                Outcome::Single(result)
            }
            Txn::Multi(ops) => Outcome::Multi(self.apply_multi(&mut txc, ops, admit)),
            Txn::Delegate { path } => match self.delegate(&mut txc, path, admit) {
                Ok(carved) => {
                    let mut changes = std::mem::take(&mut txc.changes);
                    changes.push(Change::Carved(path.clone()));
                    let undo = std::mem::take(&mut txc.undo);
                    drop(txc);
                    let applied = Applied {
                        zxid,
                        outcome: Outcome::Delegated(Ok(())),
                        touched,
                        carved: Some(carved),
                        changes,
                    };
                    return (applied, undo);
                }
                Err(e) => {
                    self.rollback(&mut txc);
                    Outcome::Delegated(Err(e))
                }
            },
            Txn::Session(s) => {
                let result = self.apply_session(&mut txc, s);
                if result.is_err() {
                    self.rollback(&mut txc);
                }
                Outcome::Session(result)
            }
            Txn::Reap { path, czxid } => {
                let result = self.reap(&mut txc, path, *czxid);
                if result.is_err() {
                    self.rollback(&mut txc);
                }
                Outcome::Single(result)
            }
        };
        let changes = std::mem::take(&mut txc.changes);
        let undo = std::mem::take(&mut txc.undo);
        drop(txc);
        let applied = Applied {
            zxid,
            outcome,
            touched,
            carved: None,
            changes,
        };
        (applied, undo)
    }

    fn apply_session(
        &mut self,
        txc: &mut Txc<'_>,
        txn: &SessionTxn,
    ) -> Result<SessionOutcome, ApiError> {
        let record = |tree: &Tree, id: i64| -> Result<(String, SessionRecord), ApiError> {
            let p = record_path(id);
            tree.owns(&p)?;
            let z = tree.nodes.get(&p).ok_or_else(|| expired(id))?;
            Ok((p, SessionRecord::decode(&z.data)?))
        };
        match txn {
            SessionTxn::Open { id, timeout_ms } => {
                let p = record_path(*id);
                self.owns(&p)?;
                let r = SessionRecord {
                    timeout_ms: *timeout_ms,
                    ..SessionRecord::default()
                };
                self.create(txc, &p, &r.encode(), CreateMode::Persistent, &[])?;
            }
            SessionTxn::Register { id, root } => {
                let (p, mut r) = record(self, *id)?;
                if r.closing {
                    return Err(expired(*id));
                }
                if r.roots.insert(root.clone()) {
                    self.set_data(txc, &p, &r.encode(), -1)?;
                }
            }
            SessionTxn::Chase { id, roots } => {
                let (p, mut r) = record(self, *id)?;
                let before = r.roots.len();
                r.roots.extend(roots.iter().cloned());
                if r.roots.len() != before {
                    self.set_data(txc, &p, &r.encode(), -1)?;
                }
            }
            SessionTxn::Closing { id } => {
                let (p, mut r) = record(self, *id)?;
                if !r.closing {
                    r.closing = true;
                    self.set_data(txc, &p, &r.encode(), -1)?;
                }
            }
            SessionTxn::Forget { id } => {
                let p = record_path(*id);
                self.owns(&p)?;
                if self.nodes.contains_key(&p) {
                    self.delete(txc, &p, -1)?;
                }
            }
            SessionTxn::Kill { id } => {
                let doomed: Vec<String> = self.ephemerals_of(*id).cloned().collect();
                for p in doomed {
                    self.delete(txc, &p, -1)?;
                }
                self.book.prune(txc.time_ms);
                self.book.closed.insert(*id, txc.time_ms);
                let chase = self
                    .book
                    .carved
                    .iter()
                    .filter(|(_, sessions)| sessions.contains(id))
                    .map(|(p, _)| p.clone())
                    .collect();
                return Ok(SessionOutcome::Killed { chase });
            }
        }
        Ok(SessionOutcome::Done)
    }

    fn reap(&mut self, txc: &mut Txc<'_>, p: &str, czxid: i64) -> Result<OpResult, ApiError> {
        checked_path(p)?;
        self.owns(p)?;
        let z = self.node(p)?;
        if z.stat.czxid != czxid || !super::reap_due(&z.stat, txc.time_ms) {
            return Err(ApiError::new(
                ErrorCode::BadVersion,
                format!("{p} is no longer due for reaping"),
            ));
        }
        self.delete(txc, p, -1)
    }

    fn apply_multi(
        &mut self,
        txc: &mut Txc<'_>,
        ops: &[Op],
        admit: &mut impl Admit,
    ) -> Vec<MultiSlot> {
        let mut slots = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let applied = match op {
                Op::SetAcl { path, .. } => Err(ApiError::new(
                    ErrorCode::BadArguments,
                    format!("setACL of {path} cannot be part of a multi"),
                )),
                _ => self.apply_op(txc, op, admit),
            };
            match applied {
                Ok(result) => slots.push(MultiSlot::Done(result)),
                Err(err) => {
                    self.rollback(txc);
                    // ZooKeeper's encoding: Ok before the failure, RuntimeInconsistency after.
                    let mut failed: Vec<MultiSlot> =
                        (0..i).map(|_| MultiSlot::Failed(ErrorCode::Ok)).collect();
                    failed.push(MultiSlot::Failed(err.code));
                    failed.extend(
                        (i + 1..ops.len())
                            .map(|_| MultiSlot::Failed(ErrorCode::RuntimeInconsistency)),
                    );
                    return failed;
                }
            }
        }
        slots
    }

    fn rollback(&mut self, txc: &mut Txc<'_>) {
        self.undo(&mut txc.undo);
        txc.touched.clear();
        txc.changes.clear();
    }

    fn undo(&mut self, log: &mut Vec<Undo>) {
        while let Some(undo) = log.pop() {
            match undo {
                Undo::RemoveNode(p) => {
                    self.remove_node(&p);
                }
                Undo::RestoreNode(p, z) => self.insert_node(p, z),
                Undo::RestoreStat(p, stat) => self.node_mut(&p).stat = stat,
                Undo::RestoreData(p, data, stat) => {
                    let z = self
                        .nodes
                        .get_mut(&p)
                        .expect("undo refers to a node the transaction saw");
                    let (restored, undone) = (data.len(), z.data.len());
                    z.data = data;
                    z.stat = stat;
                    self.data_changed(&p, undone, restored);
                }
                Undo::RestoreAcl(p, acl, stat) => {
                    let z = self.node_mut(&p);
                    z.acl = acl;
                    z.stat = stat;
                }
                Undo::AddChild(p, name) => {
                    self.node_mut(&p).children.insert(name);
                }
                Undo::RemoveChild(p, name) => {
                    self.node_mut(&p).children.remove(&name);
                }
            }
        }
    }

    fn node_mut(&mut self, p: &str) -> &mut Znode {
        self.nodes
            .get_mut(p)
            .expect("undo refers to a node the transaction saw")
    }

    /// Creates `at` if missing (judged as a create), asks whether it may be delegated, and
    /// carves it out. Carving is last and cannot fail, so a refusal rolls back cleanly.
    fn delegate(
        &mut self,
        txc: &mut Txc<'_>,
        at: &str,
        admit: &mut impl Admit,
    ) -> Result<super::Carved, ApiError> {
        check_path_len(at)?;
        path::validate(at, false)?;
        self.owns(at)?;
        if at == self.root {
            return Err(ApiError::new(
                ErrorCode::NodeExists,
                format!("{at} is already the root of a scope"),
            ));
        }
        if !self.nodes.contains_key(at) {
            let create = Op::create(at, Vec::new(), CreateMode::Persistent);
            self.apply_op(txc, &create, admit)?;
        }
        admit.admit_delegation(at, OpView::of(self, at))?;
        self.carve(at)
    }

    fn apply_op(
        &mut self,
        txc: &mut Txc<'_>,
        op: &Op,
        admit: &mut impl Admit,
    ) -> Result<OpResult, ApiError> {
        let sequential = matches!(op, Op::Create { mode, .. } if mode.is_sequential());
        check_path_len(op.path())?;
        path::validate(op.path(), sequential)?;
        self.owns(super::governing_path(op))?;
        admit.admit(op, OpView::of(self, op.path()))?;
        match op {
            Op::Create {
                path,
                data,
                mode,
                acl,
            } => self.create(txc, path, data, *mode, acl),
            Op::Delete { path, version } => self.delete(txc, path, *version),
            Op::SetData {
                path,
                data,
                version,
            } => self.set_data(txc, path, data, *version),
            Op::Check { path, version } => {
                checked_path(path)?;
                let z = self.node(path)?;
                acl::check(&z.acl, perms::READ, txc.auth, path)?;
                check_version(path, z.stat.version, *version)?;
                Ok(OpResult::Checked)
            }
            Op::SetAcl { path, acl, version } => self.set_acl(txc, path, acl, *version),
        }
    }

    /// ZooKeeper's setACL: the ACL is checked first, then the node, ADMIN and the aversion.
    /// Changes neither mzxid nor the data, and no watch fires.
    fn set_acl(
        &mut self,
        txc: &mut Txc<'_>,
        p: &str,
        requested: &[Acl],
        version: i32,
    ) -> Result<OpResult, ApiError> {
        checked_path(p)?;
        let stored = stored_acl(requested, txc.auth)?;
        let z = self.nodes.get_mut(p).ok_or_else(|| no_node(p))?;
        acl::check(&z.acl, perms::ADMIN, txc.auth, p)?;
        if version != -1 && version != z.stat.aversion {
            return Err(ApiError::new(
                ErrorCode::BadVersion,
                format!("{p} is at ACL version {}, not {version}", z.stat.aversion),
            ));
        }
        let old = std::mem::replace(&mut z.acl, stored);
        txc.undo.push(Undo::RestoreAcl(p.to_string(), old, z.stat));
        z.stat.aversion = z.stat.aversion.wrapping_add(1);
        let stat = z.stat;
        txc.touched.push(p.to_string());
        Ok(OpResult::AclSet { stat })
    }

    fn create(
        &mut self,
        txc: &mut Txc<'_>,
        requested: &str,
        data: &[u8],
        mode: CreateMode,
        acl: &[Acl],
    ) -> Result<OpResult, ApiError> {
        let sequential = mode.is_sequential();
        check_data_len(data)?;
        let owner = self.owner_for(txc, mode)?;
        let acl = stored_acl(acl, txc.auth)?;
        check_path_len(requested)?;
        path::validate(requested, sequential)?;
        if requested == self.root {
            return Err(ApiError::new(
                ErrorCode::NodeExists,
                format!("{requested} is the root of its scope and always exists"),
            ));
        }
        let parent_path = path::parent(requested).unwrap_or("/").to_string();
        let parent = self.nodes.get(&parent_path).ok_or_else(|| {
            ApiError::new(
                ErrorCode::NoNode,
                format!("cannot create {requested}: parent {parent_path} does not exist"),
            )
        })?;
        acl::check(&parent.acl, perms::CREATE, txc.auth, &parent_path)?;
        let full = if sequential {
            format!("{requested}{:010}", parent.stat.cversion)
        } else {
            requested.to_string()
        };
        // A delegated name is listed by its parent but has no znode here.
        if parent.children.contains(path::name(&full)) {
            return Err(ApiError::new(
                ErrorCode::NodeExists,
                format!("{full} already exists"),
            ));
        }
        // Containers and TTL nodes have an owner too, and may have children.
        if matches!(
            NodeKind::of(parent.stat.ephemeral_owner),
            NodeKind::Ephemeral { .. }
        ) {
            return Err(ApiError::new(
                ErrorCode::NoChildrenForEphemerals,
                format!("cannot create {full}: parent {parent_path} is ephemeral"),
            ));
        }
        let stat = Stat {
            czxid: txc.zxid,
            mzxid: txc.zxid,
            ctime: txc.time_ms,
            mtime: txc.time_ms,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: owner,
            data_length: data.len() as i32,
            num_children: 0,
            pzxid: txc.zxid,
        };
        let name = path::name(&full).to_string();
        self.child_added(txc, &parent_path, name);
        self.insert_node(
            full.clone(),
            Znode {
                data: data.to_vec(),
                stat,
                acl,
                children: BTreeSet::new(),
                extent: Extent::default(),
            },
        );
        txc.undo.push(Undo::RemoveNode(full.clone()));
        txc.touched.push(full.clone());
        txc.changes.push(Change::Created(full.clone()));
        txc.changes.push(Change::ChildrenChanged(parent_path));
        Ok(OpResult::Created { path: full, stat })
    }

    /// The `ephemeralOwner` of a node created as `mode` by the transaction's session.
    fn owner_for(&self, txc: &Txc<'_>, mode: CreateMode) -> Result<i64, ApiError> {
        match mode {
            CreateMode::Ephemeral | CreateMode::EphemeralSequential => {
                if txc.session == 0 {
                    return Err(ApiError::new(
                        ErrorCode::BadArguments,
                        "an ephemeral node needs a session; open one before creating it",
                    ));
                }
                if self.book.closed.contains_key(&txc.session) {
                    return Err(expired(txc.session));
                }
            }
            CreateMode::PersistentWithTtl { ttl_ms }
            | CreateMode::PersistentSequentialWithTtl { ttl_ms } => {
                if !(1..=TTL_MS_MAX).contains(&ttl_ms) {
                    return Err(ApiError::new(
                        ErrorCode::BadArguments,
                        format!("a TTL of {ttl_ms} ms is outside 1..={TTL_MS_MAX}"),
                    ));
                }
            }
            CreateMode::Persistent | CreateMode::PersistentSequential | CreateMode::Container => {}
        }
        Ok(mode.ephemeral_owner(txc.session))
    }

    fn delete(&mut self, txc: &mut Txc<'_>, p: &str, version: i32) -> Result<OpResult, ApiError> {
        checked_path(p)?;
        let parent_path = match path::parent(p) {
            Some(parent) if p != self.root => parent,
            _ if p == "/" => {
                return Err(ApiError::new(
                    ErrorCode::BadArguments,
                    "the root node cannot be deleted",
                ));
            }
            _ => {
                return Err(ApiError::new(
                    ErrorCode::BadArguments,
                    format!(
                        "{p} is the root of a scope; it cannot be deleted while the scope exists"
                    ),
                ));
            }
        };
        let z = self.node(p)?;
        acl::check(
            &self.node(parent_path)?.acl,
            perms::DELETE,
            txc.auth,
            parent_path,
        )?;
        check_version(p, z.stat.version, version)?;
        if !z.children.is_empty() {
            return Err(ApiError::new(
                ErrorCode::NotEmpty,
                format!("{p} has {} children; delete them first", z.children.len()),
            ));
        }
        let parent_path = parent_path.to_string();
        let removed = self.remove_node(p).expect("looked up above");
        txc.undo.push(Undo::RestoreNode(p.to_string(), removed));
        txc.touched.push(p.to_string());
        txc.changes.push(Change::Deleted(p.to_string()));
        self.child_removed(txc, &parent_path, path::name(p).to_string());
        Ok(OpResult::Deleted)
    }

    fn set_data(
        &mut self,
        txc: &mut Txc<'_>,
        p: &str,
        data: &[u8],
        version: i32,
    ) -> Result<OpResult, ApiError> {
        check_data_len(data)?;
        checked_path(p)?;
        let zxid = txc.zxid;
        let time_ms = txc.time_ms;
        let z = self.nodes.get_mut(p).ok_or_else(|| no_node(p))?;
        acl::check(&z.acl, perms::WRITE, txc.auth, p)?;
        check_version(p, z.stat.version, version)?;
        let old_data = std::mem::replace(&mut z.data, data.to_vec());
        let old_len = old_data.len();
        txc.undo
            .push(Undo::RestoreData(p.to_string(), old_data, z.stat));
        z.stat.version = z.stat.version.wrapping_add(1);
        z.stat.mzxid = zxid;
        z.stat.mtime = time_ms;
        z.stat.data_length = data.len() as i32;
        let stat = z.stat;
        self.data_changed(p, old_len, data.len());
        txc.touched.push(p.to_string());
        txc.changes.push(Change::DataChanged(p.to_string()));
        Ok(OpResult::Set { stat })
    }

    fn child_added(&mut self, txc: &mut Txc<'_>, parent: &str, name: String) {
        let zxid = txc.zxid;
        let pz = self.node_mut(parent);
        txc.undo
            .push(Undo::RestoreStat(parent.to_string(), pz.stat));
        pz.stat.cversion = pz.stat.cversion.wrapping_add(1);
        pz.stat.pzxid = zxid;
        pz.stat.num_children += 1;
        pz.children.insert(name.clone());
        txc.undo.push(Undo::RemoveChild(parent.to_string(), name));
        txc.touched.push(parent.to_string());
    }

    fn child_removed(&mut self, txc: &mut Txc<'_>, parent: &str, name: String) {
        let zxid = txc.zxid;
        let pz = self.node_mut(parent);
        txc.undo
            .push(Undo::RestoreStat(parent.to_string(), pz.stat));
        pz.stat.cversion = pz.stat.cversion.wrapping_add(1);
        pz.stat.pzxid = zxid;
        pz.stat.num_children -= 1;
        pz.children.remove(&name);
        txc.undo.push(Undo::AddChild(parent.to_string(), name));
        txc.touched.push(parent.to_string());
        txc.changes
            .push(Change::ChildrenChanged(parent.to_string()));
    }
}

fn expired(session: i64) -> ApiError {
    ApiError::new(
        ErrorCode::SessionExpired,
        format!("session {session:#x} has ended"),
    )
}

fn no_node(p: &str) -> ApiError {
    ApiError::new(ErrorCode::NoNode, format!("no node at {p}"))
}

/// The stored form of an ACL given in a create or setACL: empty (the open ACL) as given;
/// anything else validated and expanded as ZooKeeper's `fixupACL` does.
fn stored_acl(requested: &[Acl], auth: AuthInfo<'_>) -> Result<Vec<Acl>, ApiError> {
    if requested.is_empty() {
        return Ok(Vec::new());
    }
    acl::fixup(requested, auth)
}

fn check_version(p: &str, actual: i32, expected: i32) -> Result<(), ApiError> {
    if expected == -1 || expected == actual {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::BadVersion,
        format!("{p} is at version {actual}, not {expected}"),
    ))
}

fn check_data_len(data: &[u8]) -> Result<(), ApiError> {
    if data.len() > limits::ZNODE_DATA_BYTES_MAX {
        return Err(ApiError::new(
            ErrorCode::BadArguments,
            format!(
                "data of {} bytes exceeds the limit of {} bytes per znode",
                data.len(),
                limits::ZNODE_DATA_BYTES_MAX
            ),
        ));
    }
    Ok(())
}
