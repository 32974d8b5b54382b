//! Watches against real node processes: each kind fires as ZooKeeper's would, an event comes
//! before the reply that reveals its change, watches reach clients of nodes that do not
//! anchor the scope, and they are re-armed when the session moves to another node.

use std::time::Duration;

use scopekeeper_client::proto::{ErrorCode, EventKind, NodeChange, WatchEvent, WatchKind};
use scopekeeper_client::{Client, CreateMode, SessionState, WatchStream, Watcher};
use scopekeeper_tests::{Cluster, serial};

const SETTLE: Duration = Duration::from_secs(30);
const EVENT_WAIT: Duration = Duration::from_secs(20);

async fn fired(w: Watcher) -> anyhow::Result<(EventKind, String)> {
    let e = tokio::time::timeout(EVENT_WAIT, w)
        .await
        .map_err(|_| anyhow::anyhow!("the watch did not fire"))??;
    Ok((e.kind, e.path))
}

async fn next(s: &mut WatchStream) -> anyhow::Result<(EventKind, String)> {
    let e: WatchEvent = tokio::time::timeout(EVENT_WAIT, s.recv())
        .await
        .map_err(|_| anyhow::anyhow!("no event"))?
        .ok_or_else(|| anyhow::anyhow!("the watch stream ended"))?;
    Ok((e.kind, e.path))
}

fn ev(kind: EventKind, path: &str) -> (EventKind, String) {
    (kind, path.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_watch_kind_fires_as_zookeepers_does() -> anyhow::Result<()> {
    let _serial = serial();
    let cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    admin.create_scope("/w", None).await?;
    let watcher =
        Client::connect_with_session(cluster.client_config(&[1]), Duration::from_secs(10)).await?;
    let writer = cluster.client_of(2).await?;

    // Data: fires once, on the first change only.
    writer.create("/w/a", b"0", CreateMode::Persistent).await?;
    let (data, _, w) = watcher.get_and_watch("/w/a").await?;
    assert_eq!(data, b"0");
    writer.set("/w/a", b"1", -1).await?;
    writer.set("/w/a", b"2", -1).await?;
    assert_eq!(fired(w).await?, ev(EventKind::NodeDataChanged, "/w/a"));
    let mut sentinel = watcher.add_watch("/w/a", false).await?;
    writer.set("/w/a", b"3", -1).await?;
    assert_eq!(
        next(&mut sentinel).await?,
        ev(EventKind::NodeDataChanged, "/w/a")
    );
    watcher
        .remove_watches("/w/a", Some(WatchKind::Persistent))
        .await?;

    // Exists on a missing node fires on creation; getChildren on a child change; getData on
    // deletion.
    let (none, w_exists) = watcher.exists_and_watch("/w/b").await?;
    assert!(none.is_none());
    let (_, _, w_children) = watcher.children_and_watch("/w").await?;
    let (_, _, w_deleted) = watcher.get_and_watch("/w/a").await?;
    writer.create("/w/b", b"", CreateMode::Persistent).await?;
    writer.delete("/w/a", -1).await?;
    assert_eq!(fired(w_exists).await?, ev(EventKind::NodeCreated, "/w/b"));
    assert_eq!(
        fired(w_children).await?,
        ev(EventKind::NodeChildrenChanged, "/w")
    );
    assert_eq!(fired(w_deleted).await?, ev(EventKind::NodeDeleted, "/w/a"));

    // Persistent recursive: every creation, change and deletion below, no child events.
    let mut below = watcher.add_watch("/w/r", true).await?;
    writer.create("/w/r", b"", CreateMode::Persistent).await?;
    writer.create("/w/r/x", b"", CreateMode::Persistent).await?;
    writer
        .create("/w/r/x/y", b"", CreateMode::Persistent)
        .await?;
    writer.set("/w/r/x/y", b"v", -1).await?;
    writer.delete("/w/r/x/y", -1).await?;
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(next(&mut below).await?);
    }
    assert_eq!(
        seen,
        [
            ev(EventKind::NodeCreated, "/w/r"),
            ev(EventKind::NodeCreated, "/w/r/x"),
            ev(EventKind::NodeCreated, "/w/r/x/y"),
            ev(EventKind::NodeDataChanged, "/w/r/x/y"),
            ev(EventKind::NodeDeleted, "/w/r/x/y"),
        ]
    );

    // Persistent: the node's own changes and its children's.
    let mut own = watcher.add_watch("/w/b", false).await?;
    writer.create("/w/b/c", b"", CreateMode::Persistent).await?;
    writer.set("/w/b", b"x", -1).await?;
    assert_eq!(
        next(&mut own).await?,
        ev(EventKind::NodeChildrenChanged, "/w/b")
    );
    assert_eq!(
        next(&mut own).await?,
        ev(EventKind::NodeDataChanged, "/w/b")
    );

    // The event comes before the reply that reveals the change: a write of our own, and a
    // read of someone else's.
    watcher.create("/w/o", b"", CreateMode::Persistent).await?;
    let (_, _, mut w_own) = watcher.get_and_watch("/w/o").await?;
    watcher.set("/w/o", b"mine", -1).await?;
    let got = w_own.try_recv().expect("the event came before the reply");
    assert_eq!(got.kind, EventKind::NodeDataChanged);
    let (_, _, mut w_theirs) = watcher.get_and_watch("/w/o").await?;
    writer.set("/w/o", b"theirs", -1).await?;
    let (data, _) = watcher.get("/w/o").await?;
    assert_eq!(data, b"theirs");
    assert!(
        w_theirs.try_recv().is_ok(),
        "the read revealed a change before its event"
    );

    // A removed watch stays quiet, even where a reply reveals the change; removing what is
    // not there is NoWatcher.
    watcher.remove_watches("/w/b", None).await?;
    writer.set("/w/b", b"y", -1).await?;
    assert_eq!(watcher.get("/w/b").await?.0, b"y");
    assert!(own.try_recv().is_err(), "a removed watch fired");
    below.close();
    let missing = watcher
        .remove_watches("/w/nothing", None)
        .await
        .expect_err("nothing to remove");
    assert_eq!(missing.code(), ErrorCode::NoWatcher);

    // Ephemerals and watches together: a session's end deletes its node, and the watcher
    // of another session hears of it.
    let owner =
        Client::connect_with_session(cluster.client_config(&[3]), Duration::from_secs(10)).await?;
    owner.create("/w/eph", b"", CreateMode::Ephemeral).await?;
    let (_, w_gone) = watcher.exists_and_watch("/w/eph").await?;
    owner.close().await?;
    assert_eq!(fired(w_gone).await?, ev(EventKind::NodeDeleted, "/w/eph"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_reach_clients_of_a_node_without_the_scope_and_follow_the_session()
-> anyhow::Result<()> {
    let _serial = serial();
    let mut cluster = Cluster::start_layout(4, 3, &[], "")?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = Client::connect({
        let mut c = cluster.client_config(&[1, 2, 3]);
        let certs = cluster.dir.path().join("certs");
        c.cert = certs.join("client-operator.pem");
        c.key = certs.join("client-operator.key");
        c
    })
    .await?;
    admin
        .change_node(NodeChange::Join {
            id: 4,
            addr: cluster.addr(4),
            labels: Default::default(),
        })
        .await?;
    admin.create_scope("/far", None).await?;
    let info = admin.scope("/far").await?;
    assert!(!info.anchors.contains(&4), "node 4 anchors nothing");

    // Connected to node 4, which hears of /far through a feed from one of its anchors. A node
    // still opening its stores sends a new session on to the next endpoint, so wait for it.
    let deadline = std::time::Instant::now() + SETTLE;
    while let Err(e) = cluster.info(4).await {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "node 4 did not start serving within {SETTLE:?}: {e:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let watcher =
        Client::connect_with_session(cluster.client_config(&[4, 2]), Duration::from_secs(8))
            .await?;
    assert_eq!(
        *watcher.session_state().expect("a session client").borrow(),
        SessionState::Connected { node: 4 }
    );
    let writer = cluster.client_of(1).await?;
    writer
        .create("/far/a", b"0", CreateMode::Persistent)
        .await?;
    let (_, _, w) = watcher.get_and_watch("/far/a").await?;
    writer.set("/far/a", b"1", -1).await?;
    assert_eq!(fired(w).await?, ev(EventKind::NodeDataChanged, "/far/a"));
    let (_, _, mut w_own) = watcher.get_and_watch("/far/a").await?;
    watcher.set("/far/a", b"2", -1).await?;
    assert!(w_own.try_recv().is_ok(), "the event came after the reply");

    // The session moves when node 4 dies; a change made meanwhile fires the re-armed watch,
    // and the persistent watch goes on from the new node.
    let (_, _, w_moved) = watcher.get_and_watch("/far/a").await?;
    let mut every = watcher.add_watch("/far", true).await?;
    let mut state = watcher.session_state().expect("a session");
    cluster.kill9(4);
    writer.set("/far/a", b"while-moving", -1).await?;
    let moved = tokio::time::timeout(
        EVENT_WAIT,
        state.wait_for(|s| matches!(s, SessionState::Connected { node: 2 })),
    )
    .await
    .map(|r| r.is_ok());
    anyhow::ensure!(
        moved == Ok(true),
        "the session did not move: {:?}",
        *state.borrow()
    );
    assert_eq!(
        fired(w_moved).await?,
        ev(EventKind::NodeDataChanged, "/far/a")
    );
    writer.create("/far/b", b"", CreateMode::Persistent).await?;
    loop {
        let (kind, path) = next(&mut every).await?;
        if path == "/far/b" {
            assert_eq!(kind, EventKind::NodeCreated);
            break;
        }
    }
    Ok(())
}
