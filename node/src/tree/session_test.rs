//! Sessions in the tree, behaviour by behaviour: ephemeral ownership, kills, records,
//! containers and TTL nodes, carving.

use scopekeeper_client::proto::{
    CONTAINER_OWNER, CreateMode, ErrorCode, Op, OpResult, TTL_OWNER_MASK,
};

use super::session::{SessionRecord, record_path};
use super::{AdmitAll, Change, Outcome, SessionOutcome, SessionTxn, Stamp, Tree, Txn};

fn stamp(time_ms: i64) -> Stamp {
    Stamp {
        zxid_hint: 0,
        time_ms,
    }
}

fn create(
    tree: &mut Tree,
    session: i64,
    path: &str,
    mode: CreateMode,
) -> Result<String, ErrorCode> {
    let op = Op::Create {
        path: path.into(),
        data: Vec::new(),
        mode,
        acl: Vec::new(),
    };
    let applied = tree.apply_as(stamp(1_000), session, &Txn::Single(op), &mut AdmitAll);
    tree.check_invariants().expect("invariants hold");
    match applied.outcome {
        Outcome::Single(Ok(OpResult::Created { path, .. })) => Ok(path),
        Outcome::Single(Err(e)) => Err(e.code),
        other => panic!("{other:?}"),
    }
}

fn session(tree: &mut Tree, time_ms: i64, txn: SessionTxn) -> Result<SessionOutcome, ErrorCode> {
    let applied = tree.apply_as(stamp(time_ms), 0, &Txn::Session(txn), &mut AdmitAll);
    tree.check_invariants().expect("invariants hold");
    match applied.outcome {
        Outcome::Session(r) => r.map_err(|e| e.code),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ephemerals_belong_to_their_session_and_have_no_children() {
    let mut t = Tree::new();
    assert_eq!(
        create(&mut t, 0, "/e", CreateMode::Ephemeral),
        Err(ErrorCode::BadArguments)
    );
    create(&mut t, 7, "/e", CreateMode::Ephemeral).expect("created");
    assert_eq!(
        t.exists("/e")
            .expect("valid")
            .expect("exists")
            .ephemeral_owner,
        7
    );
    assert_eq!(
        create(&mut t, 7, "/e/x", CreateMode::Persistent),
        Err(ErrorCode::NoChildrenForEphemerals)
    );
    let seq = create(&mut t, 7, "/s-", CreateMode::EphemeralSequential).expect("created");
    assert_eq!(seq, "/s-0000000001");
    assert_eq!(
        t.ephemerals_of(7).cloned().collect::<Vec<_>>(),
        vec!["/e", "/s-0000000001"]
    );
}

#[test]
fn killing_a_session_deletes_its_ephemerals_and_refuses_new_ones() {
    let mut t = Tree::new();
    create(&mut t, 7, "/a", CreateMode::Ephemeral).expect("created");
    create(&mut t, 8, "/b", CreateMode::Ephemeral).expect("created");
    let applied = t.apply_as(
        stamp(2_000),
        0,
        &Txn::Session(SessionTxn::Kill { id: 7 }),
        &mut AdmitAll,
    );
    assert_eq!(
        applied.changes,
        vec![
            Change::Deleted("/a".into()),
            Change::ChildrenChanged("/".into())
        ]
    );
    assert!(t.get("/a").is_none());
    assert!(t.get("/b").is_some());
    assert_eq!(
        create(&mut t, 7, "/c", CreateMode::Ephemeral),
        Err(ErrorCode::SessionExpired)
    );
    // Persistent nodes do not need the session.
    create(&mut t, 7, "/p", CreateMode::Persistent).expect("created");
    // A minute later the scope has forgotten the kill.
    session(&mut t, 70_000, SessionTxn::Kill { id: 8 }).expect("killed");
    assert!(!t.session_book().closed.contains_key(&7));
}

#[test]
fn records_open_register_close_and_go() {
    let mut t = Tree::new();
    for p in [
        "/zookeeper",
        "/zookeeper/sessions",
        "/zookeeper/sessions/01",
    ] {
        create(&mut t, 0, p, CreateMode::Persistent).expect("created");
    }
    let id = 0x1_0000_0000_0001;
    assert_eq!(record_path(id), "/zookeeper/sessions/01/0001000000000001");
    session(
        &mut t,
        1,
        SessionTxn::Open {
            id,
            timeout_ms: 5_000,
        },
    )
    .expect("opened");
    session(
        &mut t,
        1,
        SessionTxn::Register {
            id,
            root: "/app".into(),
        },
    )
    .expect("registered");
    session(&mut t, 1, SessionTxn::Closing { id }).expect("closing");
    assert_eq!(
        session(
            &mut t,
            1,
            SessionTxn::Register {
                id,
                root: "/other".into()
            }
        ),
        Err(ErrorCode::SessionExpired)
    );
    session(
        &mut t,
        1,
        SessionTxn::Chase {
            id,
            roots: vec!["/app/child".into()],
        },
    )
    .expect("chased");
    let record =
        SessionRecord::decode(&t.get(&record_path(id)).expect("record").data).expect("decodes");
    assert!(record.closing);
    assert_eq!(
        record.roots.into_iter().collect::<Vec<_>>(),
        vec!["/app", "/app/child"]
    );
    session(&mut t, 1, SessionTxn::Forget { id }).expect("forgotten");
    assert!(t.get(&record_path(id)).is_none());
    assert_eq!(
        session(&mut t, 1, SessionTxn::Closing { id }),
        Err(ErrorCode::SessionExpired)
    );
}

#[test]
fn containers_and_ttl_nodes_are_reaped_when_due() {
    let mut t = Tree::new();
    create(&mut t, 0, "/c", CreateMode::Container).expect("created");
    create(
        &mut t,
        0,
        "/t",
        CreateMode::PersistentWithTtl { ttl_ms: 500 },
    )
    .expect("created");
    assert_eq!(
        t.exists("/c")
            .expect("valid")
            .expect("exists")
            .ephemeral_owner,
        CONTAINER_OWNER
    );
    assert_eq!(
        t.exists("/t")
            .expect("valid")
            .expect("exists")
            .ephemeral_owner,
        TTL_OWNER_MASK | 500
    );
    assert_eq!(
        create(&mut t, 0, "/x", CreateMode::PersistentWithTtl { ttl_ms: 0 }),
        Err(ErrorCode::BadArguments)
    );
    // A container that never had a child stays; a TTL node within its TTL stays.
    assert!(t.due_for_reaping(1_400).is_empty());
    create(&mut t, 0, "/c/child", CreateMode::Persistent).expect("containers take children");
    let applied = t.apply(
        stamp(1_400),
        &Txn::Single(Op::Delete {
            path: "/c/child".into(),
            version: -1,
        }),
    );
    assert!(applied.outcome.succeeded());
    let due = t.due_for_reaping(1_600);
    assert_eq!(
        due.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        vec!["/c", "/t"]
    );
    // A reap whose node changed identity is refused.
    let stale = Txn::Reap {
        path: "/c".into(),
        czxid: due[0].1 + 1,
    };
    let applied = t.apply_as(stamp(1_600), 0, &stale, &mut AdmitAll);
    assert!(!applied.outcome.succeeded());
    for (path, czxid) in due {
        let applied = t.apply_as(stamp(1_600), 0, &Txn::Reap { path, czxid }, &mut AdmitAll);
        assert!(applied.outcome.succeeded());
    }
    assert!(t.get("/c").is_none() && t.get("/t").is_none());
}

#[test]
fn carving_records_whose_ephemerals_moved() {
    let mut t = Tree::new();
    create(&mut t, 0, "/app", CreateMode::Persistent).expect("created");
    create(&mut t, 5, "/app/e", CreateMode::Ephemeral).expect("created");
    create(&mut t, 6, "/top", CreateMode::Ephemeral).expect("created");
    let carved = t.carve("/app").expect("carved");
    let child = Tree::from_carved(carved).expect("a tree");
    assert_eq!(child.ephemerals_of(5).count(), 1);
    assert_eq!(t.ephemerals_of(5).count(), 0);
    match session(&mut t, 2_000, SessionTxn::Kill { id: 5 }).expect("killed") {
        SessionOutcome::Killed { chase } => assert_eq!(chase, vec!["/app".to_string()]),
        other => panic!("{other:?}"),
    }
    match session(&mut t, 2_000, SessionTxn::Kill { id: 6 }).expect("killed") {
        SessionOutcome::Killed { chase } => assert!(chase.is_empty()),
        other => panic!("{other:?}"),
    }
}
