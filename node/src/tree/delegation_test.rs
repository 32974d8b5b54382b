//! Delegation against the undivided tree: after carving a subtree into a child scope, sending
//! each later transaction to the tree that owns its paths must give exactly the answers the
//! whole tree gives, and the two trees together must hold exactly the whole tree's znodes.

use std::collections::BTreeMap;

use proptest::prelude::*;
use scopekeeper_client::path;
use scopekeeper_client::proto::{CreateMode, ErrorCode, Op, Stat};

use super::model_test::{arb_txn, strip};
use super::{
    Admit, AdmitAll, OpView, Outcome, SessionOutcome, SessionTxn, Stamp, Tree, Txn, governing_path,
};

fn contents(trees: &[&Tree]) -> BTreeMap<String, (Vec<u8>, Stat)> {
    trees
        .iter()
        .flat_map(|t| t.iter())
        .map(|(p, z)| (p.clone(), (z.data.clone(), z.stat)))
        .collect()
}

fn paths(txn: &Txn) -> Vec<&str> {
    match txn {
        Txn::Single(op) => vec![governing_path(op)],
        Txn::Multi(ops) => ops.iter().map(governing_path).collect(),
        Txn::Delegate { path } | Txn::Reap { path, .. } => vec![path],
        Txn::Session(_) => vec![],
    }
}

/// Stamps with hints above anything before, so every tree assigns the hint as the zxid and
/// separate trees stay comparable with the whole.
fn stamp(i: usize, time_ms: i64) -> Stamp {
    Stamp {
        zxid_hint: 1_000_000 + i as i64,
        time_ms,
    }
}

/// As [`stamp`], above every stamp of the fixed set-up.
fn later_stamp(i: usize, time_ms: i64) -> Stamp {
    stamp(1_000 + i, time_ms)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_delegated_tree_answers_like_the_whole(
        setup in prop::collection::vec(arb_txn(), 1..40),
        pick in any::<prop::sample::Index>(),
        later in prop::collection::vec(arb_txn(), 1..40),
    ) {
        let mut whole = Tree::new();
        create(&mut whole, "/a");
        for (i, (s, session, txn)) in setup.iter().enumerate() {
            whole.apply_as(later_stamp(i, s.time_ms), *session, txn, &mut AdmitAll);
        }
        let candidates: Vec<String> =
            whole.iter().map(|(p, _)| p.clone()).filter(|p| p != "/").collect();
        prop_assume!(!candidates.is_empty());
        let at = pick.get(&candidates).clone();

        let mut parent = whole.clone();
        let carved = parent.carve(&at);
        prop_assume!(carved.is_ok(), "an ephemeral cannot be carved: {:?}", carved);
        let carved = carved.expect("checked above");
        let mut child = Tree::from_carved(carved).expect("the carved subtree is a tree");
        parent.check_invariants().map_err(TestCaseError::fail)?;
        child.check_invariants().map_err(TestCaseError::fail)?;
        prop_assert_eq!(contents(&[&parent, &child]), contents(&[&whole]));
        prop_assert_eq!(parent.exists(&at).map_err(|e| e.code), Err(ErrorCode::WrongScope));
        prop_assert_eq!(child.exists("/").map_err(|e| e.code), Err(ErrorCode::WrongScope));

        // Sessions that wrote to the child after the carve: they register its root themselves.
        let mut registered_in_child = std::collections::BTreeSet::new();
        for (i, (s, session, txn)) in later.iter().enumerate() {
            let stamp = later_stamp(setup.len() + i, s.time_ms);
            if let Txn::Session(kill) = txn {
                // A session is killed in every scope it registered; the carve record says
                // the child must be, if the session's ephemerals went there.
                let undivided = whole.apply_as(stamp, *session, txn, &mut AdmitAll);
                let from_parent = parent.apply_as(stamp, *session, txn, &mut AdmitAll);
                let chased = matches!(
                    &from_parent.outcome,
                    Outcome::Session(Ok(SessionOutcome::Killed { chase })) if chase.contains(&at)
                );
                let SessionTxn::Kill { id } = kill else { unreachable!("only kills are generated") };
                let owned_by_child = child.iter().any(|(_, z)| z.stat.ephemeral_owner == *id);
                prop_assert!(chased || registered_in_child.contains(id) || !owned_by_child, "{:?}: the child holds ephemerals the parent does not chase", kill);
                child.apply_as(stamp, *session, txn, &mut AdmitAll);
                prop_assert!(Outcome::succeeded(&undivided.outcome));
                continue;
            }
            let ps = paths(txn);
            let inside = ps.iter().filter(|p| path::is_within(p, &at)).count();
            // A multi across both trees is refused by routing; deleting a scope's root is refused
            // while the scope exists. Neither is a like-for-like comparison.
            let deletes_root = match txn {
                Txn::Single(op) => deletes(op, &at),
                Txn::Multi(ops) => ops.iter().any(|op| deletes(op, &at)),
                Txn::Delegate { .. } | Txn::Session(_) | Txn::Reap { .. } => false,
            };
            if (inside != 0 && inside != ps.len()) || deletes_root {
                continue;
            }
            if inside != 0 {
                registered_in_child.insert(*session);
            }
            let target = if inside == 0 { &mut parent } else { &mut child };
            let split = target.apply_as(stamp, *session, txn, &mut AdmitAll);
            let undivided = whole.apply_as(stamp, *session, txn, &mut AdmitAll);
            prop_assert_eq!(strip(split.outcome), strip(undivided.outcome), "{:?} delegated at {}", txn, at);
            target.check_invariants().map_err(TestCaseError::fail)?;
        }
        prop_assert_eq!(contents(&[&parent, &child]), contents(&[&whole]));

        // The child merging back (it has no child scopes of its own) leaves the parent
        // exactly the undivided tree: the same znodes, children and indexes.
        if child.delegated().is_empty() {
            let back = child.iter().map(|(p, z)| (p.clone(), z.stored())).collect();
            parent
                .absorb(&at, back, child.session_book(), child.last_zxid())
                .map_err(TestCaseError::fail)?;
            parent.check_invariants().map_err(TestCaseError::fail)?;
            prop_assert_eq!(contents(&[&parent]), contents(&[&whole]));
            let children = |t: &Tree| -> Vec<(String, Vec<String>)> {
                t.iter().map(|(p, z)| (p.clone(), z.children.iter().cloned().collect())).collect()
            };
            prop_assert_eq!(children(&parent), children(&whole));
            prop_assert_eq!(parent.delegated(), whole.delegated());
        }
    }
}

fn deletes(op: &Op, p: &str) -> bool {
    matches!(op, Op::Delete { path, .. } if path == p)
}

/// Refuses delegations only.
struct NoDelegation;

impl Admit for NoDelegation {
    fn admit(&mut self, _op: &Op, _view: OpView<'_>) -> Result<(), scopekeeper_client::ApiError> {
        Ok(())
    }
    fn admit_delegation(
        &mut self,
        path: &str,
        _view: OpView<'_>,
    ) -> Result<(), scopekeeper_client::ApiError> {
        Err(scopekeeper_client::ApiError::new(
            ErrorCode::PolicyDenied,
            format!("no delegation at {path}"),
        ))
    }
}

fn create(t: &mut Tree, p: &str) {
    let op = Op::Create {
        path: p.into(),
        data: b"x".to_vec(),
        mode: CreateMode::Persistent,
        acl: Vec::new(),
    };
    let applied = t.apply(stamp(t.len(), 0), &Txn::Single(op));
    assert!(
        matches!(applied.outcome, Outcome::Single(Ok(_))),
        "{applied:?}"
    );
}

#[test]
fn delegating_a_missing_path_creates_it_first_and_a_refusal_undoes_the_create() {
    let mut t = Tree::new();
    create(&mut t, "/a");
    let before = t.clone();
    let refused = t.apply_with(
        stamp(10, 0),
        &Txn::Delegate {
            path: "/a/new".into(),
        },
        &mut NoDelegation,
    );
    assert!(
        matches!(refused.outcome, Outcome::Delegated(Err(ref e)) if e.code == ErrorCode::PolicyDenied)
    );
    assert!(refused.carved.is_none());
    assert_eq!(t.exists("/a/new").expect("valid"), None);
    assert_eq!(
        t.get("/a").map(|z| z.stat),
        before.get("/a").map(|z| z.stat)
    );

    let done = t.apply_with(
        stamp(11, 0),
        &Txn::Delegate {
            path: "/a/new".into(),
        },
        &mut AdmitAll,
    );
    let carved = done.carved.expect("carved");
    assert_eq!(carved.nodes.len(), 1, "the new, empty root");
    let (children, stat) = t.get_children("/a").expect("parent lists it");
    assert_eq!(children, ["new"]);
    assert_eq!(stat.num_children, 1);
}

#[test]
fn nested_delegations_move_with_their_parent_subtree() {
    let mut t = Tree::new();
    for p in ["/a", "/a/b", "/a/b/c", "/a/x"] {
        create(&mut t, p);
    }
    t.carve("/a/b").expect("inner");
    let outer = t.carve("/a").expect("outer");
    assert_eq!(outer.delegated, ["/a/b"]);
    let child = Tree::from_carved(outer).expect("child");
    assert_eq!(child.delegation_of("/a/b/c"), Some("/a/b"));
    assert_eq!(child.get_children("/a").expect("root").0, ["b", "x"]);
    assert_eq!(t.delegated().iter().collect::<Vec<_>>(), ["/a"]);
    assert_eq!(
        t.carve("/a/x").map_err(|e| e.code),
        Err(ErrorCode::WrongScope),
        "a parent cannot carve what it delegated"
    );
}

#[test]
fn a_scope_root_cannot_be_deleted_or_created() {
    let mut whole = Tree::new();
    create(&mut whole, "/a");
    let mut child = Tree::from_carved(whole.carve("/a").expect("carve")).expect("child");
    let delete = Txn::Single(Op::Delete {
        path: "/a".into(),
        version: -1,
    });
    let applied = child.apply(stamp(50, 0), &delete);
    assert!(
        matches!(applied.outcome, Outcome::Single(Err(ref e)) if e.code == ErrorCode::BadArguments)
    );
    let again = Txn::Single(Op::Create {
        path: "/a".into(),
        data: vec![],
        mode: CreateMode::Persistent,
        acl: Vec::new(),
    });
    let applied = child.apply(stamp(51, 0), &again);
    assert!(
        matches!(applied.outcome, Outcome::Single(Err(ref e)) if e.code == ErrorCode::NodeExists)
    );
}
