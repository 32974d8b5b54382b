//! Many scopes on real node processes: a subtree becomes a scope with its own raft group and
//! policy; the parent keeps listing it; routing, multis, restarts, and a node that learns of a
//! scope only from a snapshot.

use std::time::{Duration, Instant};

use anyhow::bail;
use scopekeeper::policy::build::repository_component;
use scopekeeper_client::proto::{PolicyMode, PolicySpec};
use scopekeeper_client::{Client, CreateMode, ErrorCode, Op};
use scopekeeper_tests::{Cluster, Mode, serial};

const SETTLE: Duration = Duration::from_secs(30);

fn component(name: &str) -> Vec<u8> {
    repository_component(name).unwrap_or_else(|e| panic!("building policy {name}: {e:#}"))
}

fn create(path: &str, data: &[u8]) -> Op {
    Op::Create {
        path: path.into(),
        data: data.to_vec(),
        mode: CreateMode::Persistent,
        acl: Vec::new(),
    }
}

/// Waits until node `id` replicates the scope rooted at `root` and has applied `index` of it.
async fn wait_for_scope(cluster: &Cluster, id: u64, root: &str, index: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE;
    loop {
        if let Ok(Ok(info)) = tokio::time::timeout(Duration::from_secs(2), cluster.info(id)).await
            && info
                .scopes
                .iter()
                .any(|s| s.root == root && s.applied_index >= index && s.leader.is_some())
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("node {id} did not apply index {index} of the scope at {root} within {SETTLE:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subtree_becomes_a_scope_of_its_own() -> anyhow::Result<()> {
    let _serial = serial();
    let mut cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    for (p, d) in [
        ("/app", "a"),
        ("/app/a", "1"),
        ("/app/a/deep", ""),
        ("/other", ""),
    ] {
        admin
            .create(p, d.as_bytes(), CreateMode::Persistent)
            .await?;
    }
    let (_, root_before) = admin.children("/").await?;
    let app_before = admin.exists("/app").await?.expect("exists");

    let app = admin.create_scope("/app", None).await?;
    assert_ne!(app, 0);

    // Every node serves both scopes, and the parent still lists the delegated child.
    for id in 1..=3u64 {
        let client = cluster.client_of(id).await?;
        let (children, root) = client.children("/").await?;
        assert_eq!(children, ["app", "other", "zookeeper"], "node {id}");
        assert_eq!(
            (root.num_children, root.cversion, root.pzxid),
            (
                root_before.num_children,
                root_before.cversion,
                root_before.pzxid
            ),
            "delegation changes nothing the parent shows (node {id})"
        );
        assert_eq!(client.exists("/app").await?, Some(app_before), "node {id}");
        assert_eq!(client.get("/app/a").await?.0, b"1");
    }
    for id in 1..=3u64 {
        let client = cluster.client_of(id).await?;
        client
            .create(&format!("/app/from-{id}"), b"x", CreateMode::Persistent)
            .await?;
        client
            .create(&format!("/other/from-{id}"), b"y", CreateMode::Persistent)
            .await?;
    }
    let (children, app_stat) = admin.children("/app").await?;
    assert_eq!(children, ["a", "from-1", "from-2", "from-3"]);
    assert_eq!(app_stat.num_children, 4);

    let scopes = user_scope_infos(&admin).await?;
    let roots: Vec<&str> = scopes.iter().map(|s| s.root.as_str()).collect();
    assert_eq!(roots, ["/", "/app"]);
    let children: Vec<_> = scopes[0]
        .children
        .iter()
        .filter(|(root, _)| is_user_scope(root))
        .cloned()
        .collect();
    assert_eq!(children, [("/app".to_string(), app)]);
    assert_eq!(scopes[1].parent, Some(0));
    assert_eq!(scopes[1].anchors, [1, 2, 3]);
    assert!(scopes[1].leader.is_some(), "the new scope elected a leader");
    assert_eq!(scopes[1].znodes, 6, "/app, a, deep and three writes");

    // A multi stays within one scope; across two it is refused and nothing happens.
    let err = admin
        .multi(vec![create("/app/m", b""), create("/other/m", b"")])
        .await
        .expect_err("spans two scopes");
    assert_eq!(err.code(), ErrorCode::Unimplemented);
    assert!(err.to_string().contains("one scope"), "{err}");
    assert_eq!(admin.exists("/app/m").await?, None);
    admin
        .multi(vec![create("/app/m", b""), create("/app/m/n", b"")])
        .await?;

    // The scope's root cannot go while the scope exists; nor can it be created twice.
    let err = admin.delete("/app", -1).await.expect_err("scope root");
    assert_eq!(err.code(), ErrorCode::BadArguments);
    let err = admin.create_scope("/app", None).await.expect_err("exists");
    assert_eq!(err.code(), ErrorCode::NodeExists);
    // Only the admin role creates scopes.
    let plain = cluster.client().await?;
    let err = plain
        .create_scope("/other", None)
        .await
        .expect_err("no role");
    assert_eq!(err.code(), ErrorCode::NoAuth);

    // A scope inside a scope: the child's anchors carve it, and it lists under its parent.
    let nested = admin.create_scope("/app/a", None).await?;
    admin
        .create("/app/a/n2", b"", CreateMode::Persistent)
        .await?;
    let scopes = user_scope_infos(&admin).await?;
    let roots: Vec<&str> = scopes.iter().map(|s| s.root.as_str()).collect();
    assert_eq!(roots, ["/", "/app", "/app/a"]);
    assert_eq!(scopes[2].id, nested);
    assert_eq!(scopes[2].parent, Some(app));

    // Every scope comes back after the whole cluster is killed.
    for id in 1..=3 {
        cluster.kill9(id);
    }
    for id in 1..=3 {
        cluster.spawn(id, Mode::Existing)?;
    }
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    assert_eq!(admin.get("/app/a/deep").await?.0, b"");
    assert_eq!(admin.children("/app/a").await?.0, ["deep", "n2"]);
    assert_eq!(admin.children("/other").await?.0.len(), 3);
    admin
        .create("/app/after", b"", CreateMode::Persistent)
        .await?;
    let after = user_scopes(&admin).await?;
    assert_eq!(after, ["/", "/app", "/app/a"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scope_is_judged_by_its_own_policy() -> anyhow::Result<()> {
    let _serial = serial();
    let cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    admin.create("/frozen", b"", CreateMode::Persistent).await?;
    admin
        .create("/frozen/kept", b"v", CreateMode::Persistent)
        .await?;
    let readonly = PolicySpec {
        component: component("readonly"),
        params: String::new(),
        mode: PolicyMode::Enforce,
    };
    admin.create_scope("/frozen", Some(readonly)).await?;
    let client = cluster.client().await?;
    let err = client
        .create("/frozen/new", b"", CreateMode::Persistent)
        .await
        .expect_err("readonly scope");
    assert_eq!(err.code(), ErrorCode::PolicyDenied);
    assert_eq!(client.get("/frozen/kept").await?.0, b"v");
    client.create("/free", b"", CreateMode::Persistent).await?;
    assert!(admin.policy("/frozen").await?.is_some());
    assert!(
        admin.policy("/").await?.is_none(),
        "the parent keeps its own"
    );

    // A parent's policy decides whether a subtree may leave it: readonly refuses delegation.
    admin
        .set_policy("/frozen", component("readonly"), "", PolicyMode::Enforce)
        .await?;
    admin
        .set_policy("/", component("readonly"), "", PolicyMode::Enforce)
        .await?;
    let err = admin
        .create_scope("/free", None)
        .await
        .expect_err("the root's policy refuses");
    assert_eq!(err.code(), ErrorCode::PolicyDenied);
    admin
        .set_policy("/", component("open"), "", PolicyMode::Enforce)
        .await?;
    admin.create_scope("/free", None).await?;
    Ok(())
}

/// A node down while a scope was created learns of it from its parent's snapshot, and gets
/// the new scope's state from that scope's leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_a_delegation_catches_up_by_snapshot() -> anyhow::Result<()> {
    let _serial = serial();
    let mut cluster = Cluster::start_with(
        3,
        "[raft]\nsnapshot_every_entries = 100\nlog_kept_behind_snapshot = 10\n",
    )?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    admin.create("/app", b"", CreateMode::Persistent).await?;
    admin
        .create("/app/before", b"", CreateMode::Persistent)
        .await?;

    // The root's leader is the one that reliably needs a snapshot when it comes back.
    let victim = cluster.wait_for_leader(&[1, 2, 3], SETTLE).await?;
    let victim_applied = cluster.info(victim).await?.applied_index;
    cluster.kill9(victim);
    let others: Vec<u64> = (1..=3).filter(|&id| id != victim).collect();
    let leader = cluster.wait_for_leader(&others, SETTLE).await?;
    let client = cluster.client_of(others[0]).await?;
    let admin = cluster.admin_client().await?;
    admin.create_scope("/app", None).await?;
    for i in 0..50 {
        client
            .create(&format!("/app/n{i}"), b"", CreateMode::Persistent)
            .await?;
    }
    let mut i = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.info(leader).await?.purged_index <= victim_applied + 1 {
        assert!(
            Instant::now() < deadline,
            "the root never compacted its log"
        );
        for _ in 0..50 {
            i += 1;
            client
                .create(&format!("/r{i}"), b"", CreateMode::Persistent)
                .await?;
        }
    }

    cluster.spawn(victim, Mode::Existing)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let applied = cluster
        .info(others[0])
        .await?
        .scopes
        .iter()
        .find(|s| s.root == "/app")
        .map_or(0, |s| s.applied_index);
    wait_for_scope(&cluster, victim, "/app", applied).await?;
    let back: Client = cluster.client_of(victim).await?;
    assert_eq!(back.children("/app").await?.0.len(), 51);
    let log = std::fs::read_to_string(cluster.log_file(victim))?;
    assert!(
        log.matches("installed snapshot").count() >= 2,
        "node {victim} caught up on both scopes by snapshot"
    );
    // It takes part in the new scope: with another node down, writes still commit.
    cluster.kill9(others[1]);
    let survivors = [victim, others[0]];
    cluster.wait_for_leader(&survivors, SETTLE).await?;
    let client = Client::connect(cluster.client_config(&survivors)).await?;
    let deadline = Instant::now() + SETTLE;
    loop {
        match client
            .create("/app/two-left", b"", CreateMode::Persistent)
            .await
        {
            Ok(_) => break,
            Err(e) if e.code() == ErrorCode::NodeExists => break,
            // The scope may be electing a leader among the survivors.
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    assert!(client.exists("/app/two-left").await?.is_some());
    Ok(())
}

/// Whether every running node among `ids` reports every scope it holds as quiescent.
async fn all_quiescent(cluster: &Cluster, ids: &[u64]) -> bool {
    for &id in ids {
        match cluster.info(id).await {
            Ok(info) if info.scopes.iter().all(|s| s.quiescent) => {}
            _ => return false,
        }
    }
    true
}

/// Idle scopes park their raft tickers on every replica, wake for clients, and still fail
/// over when the leader's node dies: node-level heartbeats stand in for theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_scopes_go_quiet_and_still_fail_over() -> anyhow::Result<()> {
    let _serial = serial();
    let mut cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    admin.create_scope("/quiet", None).await?;
    admin
        .create("/quiet/a", b"1", CreateMode::Persistent)
        .await?;

    let deadline = Instant::now() + SETTLE;
    while !all_quiescent(&cluster, &[1, 2, 3]).await {
        assert!(
            Instant::now() < deadline,
            "the idle cluster never went quiet"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A client wakes what it uses.
    assert_eq!(admin.get("/quiet/a").await?.0, b"1");
    admin
        .create("/quiet/b", b"2", CreateMode::Persistent)
        .await?;
    let deadline = Instant::now() + SETTLE;
    while !all_quiescent(&cluster, &[1, 2, 3]).await {
        assert!(
            Instant::now() < deadline,
            "the cluster never went quiet again"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let info = cluster.info(1).await?;
    let leader = info
        .scopes
        .iter()
        .find(|s| s.root == "/quiet")
        .and_then(|s| s.leader)
        .expect("the quiet scope has a leader");
    cluster.kill9(leader);
    let survivors: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    let client = Client::connect(cluster.client_config(&survivors)).await?;
    let deadline = Instant::now() + SETTLE;
    loop {
        match client
            .create("/quiet/after", b"3", CreateMode::Persistent)
            .await
        {
            Ok(_) => break,
            Err(e) if e.code() == ErrorCode::NodeExists => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    for id in &survivors {
        let client = cluster.client_of(*id).await?;
        assert_eq!(client.children("/quiet").await?.0, ["a", "after", "b"]);
        client
            .create(&format!("/root-{id}"), b"", CreateMode::Persistent)
            .await?;
    }
    Ok(())
}

/// A client's writes get rising zxids in the order it sends them, across scopes: each write
/// carries the highest zxid the client has seen. A zxid from the future is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zxids_follow_a_clients_order_across_scopes() -> anyhow::Result<()> {
    use scopekeeper_client::proto::{Op, Reply, Request};
    let _serial = serial();
    let cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    admin.create_scope("/a", None).await?;
    admin.create_scope("/b", None).await?;
    let mut last = admin.last_zxid();
    for i in 0..20 {
        let root = if i % 2 == 0 { "/a" } else { "/b" };
        let (_, stat) = admin
            .create(&format!("{root}/n{i}"), b"", CreateMode::Persistent)
            .await?;
        assert!(
            stat.czxid > last,
            "write {i} in {root}: {} after {last}",
            stat.czxid
        );
        last = stat.czxid;
    }
    // Whatever the scope's clock says, a write comes after what its client has seen.
    let seen = ((std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64)
        + 30_000)
        << 20;
    let op = Op::Create {
        path: "/b/later".into(),
        data: vec![],
        mode: CreateMode::Persistent,
        acl: Vec::new(),
    };
    match admin
        .request(&Request::Write {
            op: op.clone(),
            after_zxid: seen,
        })
        .await?
    {
        Reply::Write { zxid, .. } => assert!(zxid > seen, "{zxid:#x} after {seen:#x}"),
        other => panic!("{other:?}"),
    }
    let err = admin
        .request(&Request::Write {
            op,
            after_zxid: i64::MAX,
        })
        .await
        .expect_err("a zxid from the far future");
    assert_eq!(err.code(), ErrorCode::BadArguments);
    Ok(())
}

/// A scope whose policy says it is too big splits itself, with nobody approving: its own
/// leader proposes the split in its own log; every write stays readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_splits_itself_when_its_policy_says_so() -> anyhow::Result<()> {
    let _serial = serial();
    let cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    admin.create("/auto", b"", CreateMode::Persistent).await?;
    admin.create("/auto/a", b"", CreateMode::Persistent).await?;
    admin.create("/auto/b", b"", CreateMode::Persistent).await?;
    let autosplit = PolicySpec {
        component: component("autosplit"),
        params: r#"{"max_znodes": 50, "min_interval_secs": 0}"#.into(),
        mode: PolicyMode::Enforce,
    };
    admin.create_scope("/auto", Some(autosplit)).await?;
    let client = cluster.client().await?;
    for i in 0..40 {
        client
            .create(&format!("/auto/a/n{i}"), b"x", CreateMode::Persistent)
            .await?;
    }
    for i in 0..20 {
        client
            .create(&format!("/auto/b/n{i}"), b"x", CreateMode::Persistent)
            .await?;
    }
    let deadline = Instant::now() + SETTLE;
    let split = loop {
        let scopes = admin.scopes().await?;
        if let Some(s) = scopes.iter().find(|s| s.root == "/auto/a") {
            break s.clone();
        }
        if Instant::now() > deadline {
            bail!("/auto never split: {scopes:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(split.znodes, 41, "/auto/a and its 40 children moved");
    assert!(
        split.policy.is_some(),
        "the child keeps its parent's policy"
    );
    assert_eq!(client.children("/auto/a").await?.0.len(), 40);
    assert_eq!(client.children("/auto").await?.0, ["a", "b"]);
    client
        .create("/auto/a/after", b"", CreateMode::Persistent)
        .await?;
    // What is left (/auto, /auto/b and 20 children) is under the limit: no further split.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let roots = user_scopes(&admin).await?;
    assert_eq!(roots, ["/", "/auto", "/auto/a"]);
    Ok(())
}

/// Whether a scope is a test's own, not one of the session scopes every cluster has.
fn is_user_scope(root: &str) -> bool {
    !root.starts_with("/zookeeper/")
}

/// Every scope but the session scopes.
async fn user_scope_infos(
    client: &scopekeeper_client::Client,
) -> anyhow::Result<Vec<scopekeeper_client::proto::ScopeInfo>> {
    Ok(client
        .scopes()
        .await?
        .into_iter()
        .filter(|s| is_user_scope(&s.root))
        .collect())
}

/// The roots of every scope but the session scopes.
async fn user_scopes(client: &scopekeeper_client::Client) -> anyhow::Result<Vec<String>> {
    Ok(user_scope_infos(client)
        .await?
        .into_iter()
        .map(|s| s.root)
        .collect())
}
