//! The tree against a naive model: a flat map whose children are found by scanning every path,
//! and whose multi is "clone everything, try, put the clone back on failure". Any disagreement in
//! a result, a Stat or the final contents is a bug in one of them. Sessions are in the model:
//! ephemerals belong to the session of their transaction, and killing a session deletes them
//! and refuses new ones. ACLs are in the model: each transaction comes from one of three
//! callers, and the model checks permissions by scanning the ACL, written independently of
//! `tree::acl`.

use std::collections::BTreeMap;

use proptest::prelude::*;
use scopekeeper_client::path;
use scopekeeper_client::proto::{
    Acl, CreateMode, ErrorCode, Id, MultiSlot, Op, OpResult, Stat, perms,
};

use super::{AuthInfo, Extent, Outcome, SessionOutcome, SessionTxn, Stamp, Tree, Txn};

/// The identities of the three callers transactions come from: nobody, alice, bob.
fn caller_ids(caller: usize) -> Vec<Id> {
    match caller {
        0 => Vec::new(),
        1 => vec![Id::new("digest", "alice:h1")],
        _ => vec![Id::new("digest", "bob:h2")],
    }
}

fn auth(ids: &[Id]) -> AuthInfo<'_> {
    AuthInfo {
        ids,
        superuser: false,
    }
}

/// A znode in the model: data, Stat and the ACL as clients see it.
type ModelNode = (Vec<u8>, Stat, Vec<Acl>);

#[derive(Clone, Default)]
struct Model {
    nodes: BTreeMap<String, ModelNode>,
    last_zxid: i64,
    /// Killed sessions and when, forgotten after `CLOSED_KEEP_MS` as the tree does.
    killed: BTreeMap<i64, i64>,
}

impl Model {
    fn new() -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert("/".to_string(), (Vec::new(), Stat::default(), Acl::open()));
        Model {
            nodes,
            last_zxid: 0,
            killed: BTreeMap::new(),
        }
    }

    fn children(&self, p: &str) -> Vec<String> {
        self.nodes
            .keys()
            .filter(|c| path::parent(c) == Some(p))
            .map(|c| path::name(c).to_string())
            .collect()
    }

    /// Whether `ids` may do `perm` under `acl`: some entry with the bit names them or anyone.
    fn allowed(acl: &[Acl], perm: i32, ids: &[Id]) -> bool {
        acl.iter().any(|a| {
            a.perms & perm != 0
                && ((a.id.scheme == "world" && a.id.id == "anyone") || ids.contains(&a.id))
        })
    }

    fn permit(&self, p: &str, perm: i32, ids: &[Id]) -> Result<(), ErrorCode> {
        let (_, _, acl) = self.nodes.get(p).ok_or(ErrorCode::NoNode)?;
        if Self::allowed(acl, perm, ids) {
            Ok(())
        } else {
            Err(ErrorCode::NoAuth)
        }
    }

    /// An ACL being set: `auth` becomes the caller's identities, duplicates go, and an empty
    /// list is the open ACL.
    fn fixup(acl: &[Acl], ids: &[Id]) -> Result<Vec<Acl>, ErrorCode> {
        if acl.is_empty() {
            return Ok(Acl::open());
        }
        let mut out: Vec<Acl> = Vec::new();
        for a in acl {
            let expanded = if a.id.scheme == "auth" {
                if ids.is_empty() {
                    return Err(ErrorCode::InvalidAcl);
                }
                ids.iter()
                    .map(|id| Acl {
                        perms: a.perms,
                        id: id.clone(),
                    })
                    .collect()
            } else {
                vec![a.clone()]
            };
            for e in expanded {
                if !out.contains(&e) {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }

    fn apply(&mut self, stamp: Stamp, session: i64, ids: &[Id], txn: &Txn) -> Outcome {
        let zxid = std::cmp::max(stamp.zxid_hint, self.last_zxid + 1);
        self.last_zxid = zxid;
        match txn {
            Txn::Single(op) => Outcome::Single(
                self.op(zxid, stamp.time_ms, session, ids, op)
                    .map_err(|code| scopekeeper_client::ApiError::new(code, "")),
            ),
            Txn::Session(SessionTxn::Kill { id }) => {
                let doomed: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|(_, (_, s, _))| s.ephemeral_owner == *id)
                    .map(|(p, _)| p.clone())
                    .collect();
                for p in doomed {
                    self.nodes.remove(&p);
                    self.bump_parent(&p, zxid, -1);
                }
                self.killed
                    .retain(|_, at| stamp.time_ms - *at <= super::session::CLOSED_KEEP_MS);
                self.killed.insert(*id, stamp.time_ms);
                Outcome::Session(Ok(SessionOutcome::Killed { chase: Vec::new() }))
            }
            Txn::Delegate { .. } | Txn::Session(_) | Txn::Reap { .. } => {
                unreachable!("the model has no delegations, records or reaping")
            }
            Txn::Multi(ops) => {
                let saved = self.clone();
                let mut slots = Vec::new();
                for (i, op) in ops.iter().enumerate() {
                    let result = match op {
                        Op::SetAcl { .. } => Err(ErrorCode::BadArguments),
                        _ => self.op(zxid, stamp.time_ms, session, ids, op),
                    };
                    match result {
                        Ok(r) => slots.push(MultiSlot::Done(r)),
                        Err(code) => {
                            *self = Model {
                                last_zxid: zxid,
                                ..saved
                            };
                            let mut out = vec![MultiSlot::Failed(ErrorCode::Ok); i];
                            out.push(MultiSlot::Failed(code));
                            out.resize(
                                ops.len(),
                                MultiSlot::Failed(ErrorCode::RuntimeInconsistency),
                            );
                            return Outcome::Multi(out);
                        }
                    }
                }
                Outcome::Multi(slots)
            }
        }
    }

    fn bump_parent(&mut self, p: &str, zxid: i64, delta: i32) {
        let parent = path::parent(p).expect("not root").to_string();
        let stat = &mut self.nodes.get_mut(&parent).expect("parent").1;
        stat.cversion += 1;
        stat.pzxid = zxid;
        stat.num_children += delta;
    }

    fn op(
        &mut self,
        zxid: i64,
        time: i64,
        session: i64,
        ids: &[Id],
        op: &Op,
    ) -> Result<OpResult, ErrorCode> {
        let version_ok = |actual: i32, v: i32| v == -1 || v == actual;
        match op {
            Op::Create {
                path: p,
                data,
                mode,
                acl,
            } => {
                path::validate(p, mode.is_sequential()).map_err(|e| e.code)?;
                if mode.is_ephemeral() && session == 0 {
                    return Err(ErrorCode::BadArguments);
                }
                if mode.is_ephemeral() && self.killed.contains_key(&session) {
                    return Err(ErrorCode::SessionExpired);
                }
                let acl = Self::fixup(acl, ids)?;
                if p == "/" {
                    return Err(ErrorCode::NodeExists);
                }
                let parent = path::parent(p).expect("not root");
                let pstat = self.nodes.get(parent).ok_or(ErrorCode::NoNode)?.1;
                self.permit(parent, perms::CREATE, ids)?;
                let full = if mode.is_sequential() {
                    format!("{p}{:010}", pstat.cversion)
                } else {
                    p.clone()
                };
                if self.nodes.contains_key(&full) {
                    return Err(ErrorCode::NodeExists);
                }
                if pstat.ephemeral_owner > 0 {
                    return Err(ErrorCode::NoChildrenForEphemerals);
                }
                let stat = Stat {
                    ephemeral_owner: if mode.is_ephemeral() { session } else { 0 },
                    czxid: zxid,
                    mzxid: zxid,
                    pzxid: zxid,
                    ctime: time,
                    mtime: time,
                    data_length: data.len() as i32,
                    ..Stat::default()
                };
                self.nodes.insert(full.clone(), (data.clone(), stat, acl));
                self.bump_parent(&full, zxid, 1);
                Ok(OpResult::Created { path: full, stat })
            }
            Op::Delete { path: p, version } => {
                path::validate(p, false).map_err(|e| e.code)?;
                if p == "/" {
                    return Err(ErrorCode::BadArguments);
                }
                let stat = self.nodes.get(p).ok_or(ErrorCode::NoNode)?.1;
                self.permit(path::parent(p).expect("not root"), perms::DELETE, ids)?;
                if !version_ok(stat.version, *version) {
                    return Err(ErrorCode::BadVersion);
                }
                if !self.children(p).is_empty() {
                    return Err(ErrorCode::NotEmpty);
                }
                self.nodes.remove(p);
                self.bump_parent(p, zxid, -1);
                Ok(OpResult::Deleted)
            }
            Op::SetData {
                path: p,
                data,
                version,
            } => {
                path::validate(p, false).map_err(|e| e.code)?;
                self.permit(p, perms::WRITE, ids)?;
                let (old, stat, _) = self.nodes.get_mut(p).ok_or(ErrorCode::NoNode)?;
                if !version_ok(stat.version, *version) {
                    return Err(ErrorCode::BadVersion);
                }
                *old = data.clone();
                stat.version += 1;
                stat.mzxid = zxid;
                stat.mtime = time;
                stat.data_length = data.len() as i32;
                Ok(OpResult::Set { stat: *stat })
            }
            Op::Check { path: p, version } => {
                path::validate(p, false).map_err(|e| e.code)?;
                let stat = self.nodes.get(p).ok_or(ErrorCode::NoNode)?.1;
                self.permit(p, perms::READ, ids)?;
                if !version_ok(stat.version, *version) {
                    return Err(ErrorCode::BadVersion);
                }
                Ok(OpResult::Checked)
            }
            Op::SetAcl {
                path: p,
                acl,
                version,
            } => {
                path::validate(p, false).map_err(|e| e.code)?;
                let acl = Self::fixup(acl, ids)?;
                self.permit(p, perms::ADMIN, ids)?;
                let (_, stat, old) = self.nodes.get_mut(p).expect("permit found it");
                if !version_ok(stat.aversion, *version) {
                    return Err(ErrorCode::BadVersion);
                }
                *old = acl;
                stat.aversion += 1;
                Ok(OpResult::AclSet { stat: *stat })
            }
        }
    }
}

fn arb_path() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(prop::sample::select(vec!["a", "a-x", "b", "c"]), 1..4)
            .prop_map(|parts| format!("/{}", parts.join("/"))),
        Just("/".to_string()),
        Just("/a/".to_string()),
        Just("/a//b".to_string()),
    ]
}

fn arb_op() -> impl Strategy<Value = Op> {
    let version = prop::sample::select(vec![-1, 0, 1, 2]);
    let data = prop::collection::vec(any::<u8>(), 0..4);
    prop_oneof![
        (arb_path(), data.clone(), arb_mode(), arb_acl()).prop_map(|(path, data, mode, acl)| {
            Op::Create {
                path,
                data,
                mode,
                acl,
            }
        }),
        (arb_path(), version.clone()).prop_map(|(path, version)| Op::Delete { path, version }),
        (arb_path(), data, version.clone()).prop_map(|(path, data, version)| Op::SetData {
            path,
            data,
            version
        }),
        (arb_path(), version.clone()).prop_map(|(path, version)| Op::Check { path, version }),
        (arb_path(), arb_acl(), version).prop_map(|(path, acl, version)| Op::SetAcl {
            path,
            acl,
            version
        }),
    ]
}

/// ACLs that grant each caller different things; empty is the open ACL.
fn arb_acl() -> impl Strategy<Value = Vec<Acl>> {
    let entry = |perms: i32, scheme: &str, id: &str| Acl {
        perms,
        id: Id::new(scheme, id),
    };
    prop::sample::select(vec![
        Vec::new(),
        Vec::new(),
        Acl::open(),
        vec![entry(perms::ALL, "digest", "alice:h1")],
        vec![
            entry(perms::READ | perms::CREATE, "digest", "alice:h1"),
            entry(perms::ALL, "digest", "bob:h2"),
        ],
        vec![entry(perms::ALL, "auth", "")],
        vec![entry(perms::READ, "world", "anyone")],
        vec![
            entry(perms::WRITE | perms::DELETE, "world", "anyone"),
            entry(perms::ADMIN, "digest", "bob:h2"),
        ],
    ])
}

fn arb_mode() -> impl Strategy<Value = CreateMode> {
    prop::sample::select(vec![
        CreateMode::Persistent,
        CreateMode::PersistentSequential,
        CreateMode::Ephemeral,
        CreateMode::EphemeralSequential,
    ])
}

/// As [`arb_txn`], with the caller (0, 1, 2: see [`caller_ids`]).
fn arb_call() -> impl Strategy<Value = (Stamp, i64, usize, Txn)> {
    (arb_txn(), 0usize..3).prop_map(|((stamp, session, txn), caller)| (stamp, session, caller, txn))
}

/// A stamp, the session the transaction acts for (0: none), and the transaction.
pub(super) fn arb_txn() -> impl Strategy<Value = (Stamp, i64, Txn)> {
    let txn = prop_oneof![
        6 => arb_op().prop_map(Txn::Single),
        2 => prop::collection::vec(arb_op(), 1..5).prop_map(Txn::Multi),
        1 => (1i64..3).prop_map(|id| Txn::Session(SessionTxn::Kill { id })),
    ];
    (0i64..200, 0i64..1_000_000, 0i64..3, txn)
        .prop_map(|(zxid_hint, time_ms, session, txn)| (Stamp { zxid_hint, time_ms }, session, txn))
}

/// Results compared without messages: the model does not word its errors.
pub(super) fn strip(outcome: Outcome) -> Result<Vec<MultiSlot>, ErrorCode> {
    match outcome {
        Outcome::Single(r) => r.map(|ok| vec![MultiSlot::Done(ok)]).map_err(|e| e.code),
        Outcome::Multi(slots) => Ok(slots),
        Outcome::Delegated(r) => r.map(|()| Vec::new()).map_err(|e| e.code),
        Outcome::Session(r) => r.map(|_| Vec::new()).map_err(|e| e.code),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn tree_matches_naive_model(txns in prop::collection::vec(arb_call(), 1..60)) {
        let mut tree = Tree::new();
        let mut model = Model::new();
        for (stamp, session, caller, txn) in &txns {
            let ids = caller_ids(*caller);
            let got = tree.apply_by(*stamp, *session, auth(&ids), txn, &mut super::AdmitAll);
            let want = model.apply(*stamp, *session, &ids, txn);
            prop_assert_eq!(strip(got.outcome), strip(want));
            prop_assert_eq!(got.zxid, model.last_zxid);
            tree.check_invariants().map_err(TestCaseError::fail)?;
        }
        let contents: BTreeMap<String, ModelNode> = tree
            .iter()
            .map(|(p, z)| {
                let (acl, _) = tree.get_acl(p, AuthInfo::SUPER).expect("exists");
                (p.clone(), (z.data.clone(), z.stat, acl))
            })
            .collect();
        for (p, (_, stat, acl)) in &model.nodes {
            // What each caller may read is what the model says.
            for caller in 0..3 {
                let ids = caller_ids(caller);
                let got = tree.permit(p, perms::READ, auth(&ids)).is_ok();
                prop_assert_eq!(got, Model::allowed(acl, perms::READ, &ids));
            }
            prop_assert_eq!(stat.num_children as usize, model.children(p).len());
            let (children, _) = tree.get_children(p).expect("exists");
            prop_assert_eq!(children, model.children(p));
        }
        // The root's children and their extents, as a split sees them.
        let subtrees: Vec<(String, Extent)> = model
            .children("/")
            .into_iter()
            .map(|name| {
                let top = format!("/{name}");
                let mut extent = Extent::default();
                for (p, (data, _, _)) in &model.nodes {
                    if path::is_within(p, &top) {
                        extent.znodes += 1;
                        extent.bytes += data.len() as u64;
                    }
                }
                (name, extent)
            })
            .collect();
        let got: Vec<(String, Extent)> =
            tree.subtrees().map(|(name, e)| (name.to_string(), e)).collect();
        // Walked two at a time, resumed after the last one given: the same.
        let mut resumed: Vec<(String, Extent)> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let part: Vec<(String, Extent)> = tree
                .subtrees_after(after.as_deref())
                .take(2)
                .map(|(name, e)| (name.to_string(), e))
                .collect();
            let done = part.len() < 2;
            after = part.last().map(|(name, _)| name.clone());
            resumed.extend(part);
            if done {
                break;
            }
        }
        prop_assert_eq!(&resumed, &got);
        prop_assert_eq!(got, subtrees);
        prop_assert_eq!(contents, model.nodes);
    }

    #[test]
    fn same_transactions_same_tree(txns in prop::collection::vec(arb_txn(), 1..40)) {
        let mut a = Tree::new();
        let mut b = Tree::new();
        for (stamp, session, txn) in &txns {
            let x = a.apply_as(*stamp, *session, txn, &mut super::AdmitAll);
            let y = b.apply_as(*stamp, *session, txn, &mut super::AdmitAll);
            prop_assert_eq!(x, y);
        }
        prop_assert_eq!(a, b);
    }

    #[test]
    fn taking_back_tentative_transactions_restores_the_tree(
        before in prop::collection::vec(arb_txn(), 0..30),
        tentative in prop::collection::vec(arb_txn(), 1..20),
        keep in 0usize..20,
    ) {
        // A policy judging a run in one call keeps its first transactions and takes back the
        // rest, latest first: the tree must then be exactly the tree that never saw them.
        let mut tree = Tree::new();
        for (stamp, session, txn) in &before {
            tree.apply_as(*stamp, *session, txn, &mut super::AdmitAll);
        }
        let clients: Vec<&(Stamp, i64, Txn)> = tentative
            .iter()
            .filter(|(_, _, txn)| matches!(txn, Txn::Single(_) | Txn::Multi(_)))
            .collect();
        let keep = keep.min(clients.len());
        let mut expected = tree.clone();
        let mut kept = Vec::new();
        for (stamp, session, txn) in &clients[..keep] {
            kept.push(expected.apply_as(*stamp, *session, txn, &mut super::AdmitAll));
        }
        let mut undo = Vec::new();
        let mut applied = Vec::new();
        for (stamp, session, txn) in &clients {
            let (result, t) =
                tree.apply_tentatively(*stamp, *session, AuthInfo::SUPER, txn, &mut super::AdmitAll);
            applied.push(result);
            undo.push(t);
        }
        while undo.len() > keep {
            tree.retract(undo.pop().expect("longer than keep"));
        }
        applied.truncate(keep);
        prop_assert_eq!(applied, kept);
        tree.check_invariants().map_err(TestCaseError::fail)?;
        prop_assert_eq!(&tree, &expected);
        // And it goes on as the other does.
        for (stamp, session, txn) in &tentative {
            let x = tree.apply_as(*stamp, *session, txn, &mut super::AdmitAll);
            let y = expected.apply_as(*stamp, *session, txn, &mut super::AdmitAll);
            prop_assert_eq!(x, y);
        }
        prop_assert_eq!(tree, expected);
    }
}
