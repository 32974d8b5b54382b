//! Scripted checks of ZooKeeper's semantics, one behaviour each.

use scopekeeper_client::proto::{ANY_VERSION, CreateMode, ErrorCode, MultiSlot, Op, OpResult};

use std::collections::BTreeSet;

use scopekeeper_client::proto::Stat;

use super::{Outcome, Stamp, Tree, Txn, Znode};

fn stamp(zxid_hint: i64) -> Stamp {
    Stamp {
        zxid_hint,
        time_ms: 1_000 + zxid_hint,
    }
}

fn create(path: &str, data: &str) -> Op {
    Op::Create {
        path: path.into(),
        data: data.as_bytes().to_vec(),
        mode: CreateMode::Persistent,
        acl: Vec::new(),
    }
}

fn single(tree: &mut Tree, hint: i64, op: Op) -> Result<OpResult, ErrorCode> {
    let applied = tree.apply(stamp(hint), &Txn::Single(op));
    tree.check_invariants().expect("invariants hold");
    match applied.outcome {
        Outcome::Single(r) => r.map_err(|e| e.code),
        other => unreachable!("{other:?}"),
    }
}

#[test]
fn create_sets_stat_like_zookeeper() {
    let mut t = Tree::new();
    let r = single(&mut t, 5, create("/a", "hello")).expect("created");
    let OpResult::Created { path, stat } = r else {
        panic!("{r:?}")
    };
    assert_eq!(path, "/a");
    assert_eq!((stat.czxid, stat.mzxid, stat.pzxid), (5, 5, 5));
    assert_eq!((stat.ctime, stat.mtime), (1005, 1005));
    assert_eq!((stat.version, stat.cversion, stat.aversion), (0, 0, 0));
    assert_eq!(
        (stat.data_length, stat.num_children, stat.ephemeral_owner),
        (5, 0, 0)
    );
    let root = t.exists("/").expect("valid").expect("root");
    assert_eq!((root.cversion, root.pzxid, root.num_children), (1, 5, 1));
    assert_eq!(
        root.mzxid, 0,
        "a child create does not touch the parent's mzxid"
    );
}

#[test]
fn zxid_is_max_of_hint_and_last_plus_one() {
    let mut t = Tree::new();
    assert_eq!(
        t.apply(stamp(100), &Txn::Single(create("/a", ""))).zxid,
        100
    );
    assert_eq!(t.apply(stamp(7), &Txn::Single(create("/b", ""))).zxid, 101);
    // A failed op still consumes a zxid, as an error txn does in ZooKeeper.
    assert_eq!(t.apply(stamp(7), &Txn::Single(create("/b", ""))).zxid, 102);
    assert_eq!(t.last_zxid(), 102);
}

#[test]
fn sequential_suffix_is_parent_cversion() {
    let mut t = Tree::new();
    single(&mut t, 1, create("/q", "")).expect("created");
    single(&mut t, 2, create("/q/x", "")).expect("created");
    single(
        &mut t,
        3,
        Op::Delete {
            path: "/q/x".into(),
            version: ANY_VERSION,
        },
    )
    .expect("deleted");
    let seq = Op::Create {
        path: "/q/item-".into(),
        data: vec![],
        mode: CreateMode::PersistentSequential,
        acl: Vec::new(),
    };
    let OpResult::Created { path, .. } = single(&mut t, 4, seq.clone()).expect("created") else {
        panic!()
    };
    assert_eq!(path, "/q/item-0000000002");
    let OpResult::Created { path, .. } = single(&mut t, 5, seq).expect("created") else {
        panic!()
    };
    assert_eq!(path, "/q/item-0000000003");
    let trailing = Op::Create {
        path: "/q/".into(),
        data: vec![],
        mode: CreateMode::PersistentSequential,
        acl: Vec::new(),
    };
    let OpResult::Created { path, .. } = single(&mut t, 6, trailing).expect("created") else {
        panic!()
    };
    assert_eq!(path, "/q/0000000004");
}

#[test]
fn errors_are_zookeepers() {
    let mut t = Tree::new();
    assert_eq!(
        single(&mut t, 1, create("/a/b", "")),
        Err(ErrorCode::NoNode)
    );
    single(&mut t, 2, create("/a", "")).expect("created");
    assert_eq!(
        single(&mut t, 3, create("/a", "")),
        Err(ErrorCode::NodeExists)
    );
    assert_eq!(
        single(&mut t, 3, create("/", "")),
        Err(ErrorCode::NodeExists)
    );
    single(&mut t, 4, create("/a/b", "")).expect("created");
    let del = |p: &str, v| Op::Delete {
        path: p.into(),
        version: v,
    };
    assert_eq!(single(&mut t, 5, del("/a", -1)), Err(ErrorCode::NotEmpty));
    assert_eq!(
        single(&mut t, 5, del("/a/b", 3)),
        Err(ErrorCode::BadVersion)
    );
    assert_eq!(single(&mut t, 5, del("/zz", -1)), Err(ErrorCode::NoNode));
    assert_eq!(
        single(&mut t, 5, del("/", -1)),
        Err(ErrorCode::BadArguments)
    );
    assert_eq!(
        single(&mut t, 5, create("/a/", "")),
        Err(ErrorCode::BadArguments)
    );
    let big = Op::SetData {
        path: "/a".into(),
        data: vec![0; (1 << 20) + 1],
        version: -1,
    };
    assert_eq!(single(&mut t, 5, big), Err(ErrorCode::BadArguments));
    let set = |v| Op::SetData {
        path: "/a".into(),
        data: b"x".to_vec(),
        version: v,
    };
    assert_eq!(single(&mut t, 6, set(1)), Err(ErrorCode::BadVersion));
    let OpResult::Set { stat } = single(&mut t, 7, set(0)).expect("set") else {
        panic!()
    };
    assert_eq!(
        (stat.version, stat.mzxid, stat.czxid, stat.data_length),
        (1, t.last_zxid(), 2, 1)
    );
    assert_eq!(
        single(
            &mut t,
            8,
            Op::Check {
                path: "/a".into(),
                version: 0
            }
        ),
        Err(ErrorCode::BadVersion)
    );
    assert_eq!(
        single(
            &mut t,
            8,
            Op::Check {
                path: "/a".into(),
                version: 1
            }
        ),
        Ok(OpResult::Checked)
    );
}

#[test]
fn failed_multi_changes_nothing_and_reports_like_zookeeper() {
    let mut t = Tree::new();
    single(&mut t, 1, create("/a", "v")).expect("created");
    let before = t.clone();
    let ops = vec![
        create("/b", ""),
        Op::SetData {
            path: "/a".into(),
            data: b"w".to_vec(),
            version: -1,
        },
        Op::Delete {
            path: "/a".into(),
            version: 0,
        },
        Op::Check {
            path: "/a".into(),
            version: 7,
        },
        create("/c", ""),
    ];
    let applied = t.apply(stamp(10), &Txn::Multi(ops));
    let Outcome::Multi(slots) = applied.outcome else {
        panic!()
    };
    assert_eq!(
        slots,
        vec![
            MultiSlot::Failed(ErrorCode::Ok),
            MultiSlot::Failed(ErrorCode::Ok),
            MultiSlot::Failed(ErrorCode::BadVersion),
            MultiSlot::Failed(ErrorCode::RuntimeInconsistency),
            MultiSlot::Failed(ErrorCode::RuntimeInconsistency),
        ]
    );
    assert!(applied.touched.is_empty());
    let mut expected = before;
    expected.last_zxid = 10;
    assert_eq!(t, expected);
}

#[test]
fn successful_multi_shares_one_zxid() {
    let mut t = Tree::new();
    let ops = vec![
        create("/a", ""),
        create("/a/b", ""),
        Op::Check {
            path: "/a".into(),
            version: 0,
        },
    ];
    let applied = t.apply(stamp(3), &Txn::Multi(ops));
    let Outcome::Multi(slots) = applied.outcome else {
        panic!()
    };
    assert_eq!(slots.len(), 3);
    let stat_a = t.exists("/a").expect("valid").expect("exists");
    assert_eq!((stat_a.czxid, stat_a.pzxid, stat_a.cversion), (3, 3, 1));
    t.check_invariants().expect("invariants");
}

#[test]
fn stored_form_rebuilds_the_same_tree() {
    let mut t = Tree::new();
    for (i, p) in ["/a", "/a/b", "/a/c", "/d"].into_iter().enumerate() {
        single(&mut t, i as i64 + 1, create(p, p)).expect("created");
    }
    let stored: Vec<_> = t
        .iter()
        .map(|(p, _)| (p.clone(), t.stored(p).expect("exists")))
        .collect();
    let rebuilt = Tree::from_stored("/", t.last_zxid(), stored.into_iter().rev(), Vec::new())
        .expect("rebuilds");
    assert_eq!(rebuilt, t);
}

#[test]
fn a_borrowed_stored_znode_encodes_as_the_owned_one() {
    let z = Znode {
        data: b"some data".to_vec(),
        stat: Stat {
            czxid: 7,
            data_length: 9,
            ..Stat::default()
        },
        acl: vec![scopekeeper_client::proto::Acl {
            perms: 31,
            id: scopekeeper_client::proto::Id::new("digest", "alice:x"),
        }],
        children: BTreeSet::new(),
        extent: Default::default(),
    };
    assert_eq!(
        postcard::to_stdvec(&z.stored()).expect("owned"),
        postcard::to_stdvec(&z.stored_ref()).expect("borrowed")
    );
}

#[test]
fn split_candidates_are_sized_as_the_tree_changes() {
    let mut t = Tree::new();
    single(&mut t, 1, create("/a", "12")).expect("created");
    single(&mut t, 2, create("/a/x", "345")).expect("created");
    single(&mut t, 3, create("/a/x/deep", "6")).expect("created");
    single(&mut t, 4, create("/b", "")).expect("created");
    let set = Op::SetData {
        path: "/a/x".into(),
        data: b"34567".to_vec(),
        version: ANY_VERSION,
    };
    single(&mut t, 5, set).expect("set");
    let sizes = |t: &Tree| -> Vec<(String, u64, u64)> {
        t.subtrees()
            .map(|(name, e)| (format!("/{name}"), e.znodes, e.bytes))
            .collect()
    };
    assert_eq!(
        sizes(&t),
        vec![("/a".to_string(), 3, 8), ("/b".to_string(), 1, 0)]
    );
    // A failed multi changes nothing, its undone create and set included.
    let failed = Txn::Multi(vec![
        create("/a/y", "abc"),
        Op::SetData {
            path: "/b".into(),
            data: b"zz".to_vec(),
            version: ANY_VERSION,
        },
        create("/missing/z", ""),
    ]);
    t.apply(stamp(6), &failed);
    t.check_invariants().expect("invariants hold");
    assert_eq!(
        sizes(&t),
        vec![("/a".to_string(), 3, 8), ("/b".to_string(), 1, 0)]
    );
    // Carving /a/x takes its two znodes out of /a; delegating /b takes /b out of the list.
    let carved = t.carve("/a/x").expect("carved");
    let child = Tree::from_carved(carved).expect("a tree from the carve");
    assert_eq!(sizes(&child), vec![("/deep".to_string(), 1, 1)]);
    assert_eq!(child.data_bytes(), 6);
    t.carve("/b").expect("carved");
    t.check_invariants().expect("invariants hold");
    assert_eq!(sizes(&t), vec![("/a".to_string(), 1, 2)]);
}

#[test]
fn split_candidates_step_over_subtrees_whose_names_sort_apart() {
    // Below /s, keys sort /s/a, /s/a-x, /s/a-x/c, /s/a/b, /s/b: the subtree of `a` is not
    // next to `a`, and the delegated `d` has no znode here.
    let mut t = Tree::new();
    for (i, p) in [
        "/s", "/s/a", "/s/a-x", "/s/a-x/c", "/s/a/b", "/s/a/b/c", "/s/b", "/s/d",
    ]
    .into_iter()
    .enumerate()
    {
        single(&mut t, i as i64 + 1, create(p, "xy")).expect("created");
    }
    let mut parent = Tree::from_carved(t.carve("/s").expect("carved")).expect("child");
    parent.carve("/s/d").expect("carved");
    let sizes: Vec<(&str, u64, u64)> = parent
        .subtrees()
        .map(|(name, e)| (name, e.znodes, e.bytes))
        .collect();
    assert_eq!(sizes, vec![("a", 3, 6), ("a-x", 2, 4), ("b", 1, 2)]);
    let whole: Vec<(&str, u64)> = t.subtrees().map(|(n, e)| (n, e.znodes)).collect();
    assert!(whole.is_empty(), "/s was carved off: {whole:?}");
}

#[test]
fn an_op_view_finds_the_target_whether_or_not_it_exists() {
    let mut t = Tree::new();
    single(&mut t, 1, create("/a", "x")).expect("created");
    single(&mut t, 2, create("/a/b", "y")).expect("created");
    let b = t.exists("/a/b").expect("valid").expect("exists");
    let view = |p| super::OpView::of(&t, p);
    assert_eq!(view("/a/b").target().copied(), Some(b));
    assert_eq!(view("/a/b").parent().map(|s| s.num_children), Some(1));
    assert_eq!(
        view("/a/c").target(),
        None,
        "not among its parent's children"
    );
    assert_eq!(view("/x/y").target(), None, "no parent either");
    assert_eq!(view("/x/y").parent(), None);
    assert_eq!(view("/").target().map(|s| s.num_children), Some(1));
    assert_eq!(view("/").parent(), None);
    assert_eq!((view("/").znodes(), view("/").data_bytes()), (3, 2));
}
