//! Five real nodes, three zones, scopes under different policies and anchor sets: nodes join,
//! policies place anchors, an anchor dies without pausing other scopes, `critical` refuses to
//! answer on weaker durability, and a node routes to a scope created elsewhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use scopekeeper::policy::build::repository_component;
use scopekeeper_client::proto::{NodeChange, PolicyMode, PolicySpec, ScopeInfo};
use scopekeeper_client::{Client, CreateMode, ErrorCode};
use scopekeeper_tests::{Cluster, Mode, serial};

const SETTLE: Duration = Duration::from_secs(60);

fn policy(name: &str, params: &str) -> PolicySpec {
    PolicySpec {
        component: repository_component(name)
            .unwrap_or_else(|e| panic!("building policy {name}: {e:#}")),
        params: params.into(),
        mode: PolicyMode::Enforce,
    }
}

/// Waits until the scope rooted at `root` is anchored exactly on `anchors` with a leader.
async fn wait_for_anchors(
    client: &Client,
    root: &str,
    anchors: &[u64],
) -> anyhow::Result<ScopeInfo> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let seen = client.scope(root).await;
        if let Ok(info) = &seen
            && info.anchors == anchors
            && info.leader.is_some_and(|l| anchors.contains(&l))
        {
            return Ok(info.clone());
        }
        if Instant::now() > deadline {
            bail!("{root} is not anchored on {anchors:?} within {SETTLE:?}: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Writes under `prefix` until told to stop; counts successes, keeps every failure.
struct Writer {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Writer {
    fn start(client: Client, prefix: &str) -> Writer {
        let (stop, ok) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s, o, prefix) = (stop.clone(), ok.clone(), prefix.to_string());
        let task = tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                i += 1;
                match client
                    .create(&format!("{prefix}/w{i}"), b"", CreateMode::Persistent)
                    .await
                {
                    Ok(_) => {
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push(format!("w{i}: {e}")),
                }
            }
            failures
        });
        Writer { stop, ok, task }
    }

    async fn stop(self) -> anyhow::Result<(u64, Vec<String>)> {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.task.await?;
        Ok((self.ok.load(Ordering::Relaxed), failures))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_live_where_their_policies_place_them() -> anyhow::Result<()> {
    let _serial = serial();
    let mut cluster = Cluster::start_layout(5, 3, &["a", "b", "c", "a", "b"], "")?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = Client::connect({
        let mut c = cluster.client_config(&[1, 2, 3]);
        let certs = cluster.dir.path().join("certs");
        c.cert = certs.join("client-operator.pem");
        c.key = certs.join("client-operator.key");
        c
    })
    .await?;

    // Nodes 4 and 5 run but hold nothing until registered.
    for id in [4, 5] {
        let labels = [(
            "zone".to_string(),
            cluster.zone(id).unwrap_or("").to_string(),
        )]
        .into();
        admin
            .change_node(NodeChange::Join {
                id,
                addr: cluster.addr(id),
                labels,
            })
            .await?;
    }
    let nodes: Vec<u64> = admin.nodes().await?.iter().map(|n| n.id).collect();
    assert_eq!(nodes, [1, 2, 3, 4, 5]);

    // Three scopes, three anchor sets: critical on five nodes in three zones, dev pinned to one
    // node, and a scope without a policy that stays on its parent's anchors.
    admin
        .create_scope("/crit", Some(policy("critical", "")))
        .await?;
    admin
        .create_scope("/dev", Some(policy("dev", r#"{"node": 5}"#)))
        .await?;
    admin.create_scope("/std", None).await?;
    let crit = wait_for_anchors(&admin, "/crit", &[1, 2, 3, 4, 5]).await?;
    wait_for_anchors(&admin, "/dev", &[5]).await?;
    wait_for_anchors(&admin, "/std", &[1, 2, 3]).await?;
    assert!(crit.epoch > 1, "moving anchors bumps the epoch");
    // spread tiles anchors by offset and names its first voter the leader: leadership is
    // handed there once the anchors are in place.
    admin
        .create_scope("/tiled", Some(policy("spread", r#"{"offset": 2}"#)))
        .await?;
    wait_for_anchors(&admin, "/tiled", &[3, 4, 5]).await?;
    let deadline = Instant::now() + SETTLE;
    while admin.scope("/tiled").await?.leader != Some(3) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "/tiled is not led by node 3, its policy's choice, within {SETTLE:?}: {:?}",
            admin.scope("/tiled").await?
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for root in ["/crit", "/dev", "/std"] {
        admin
            .create(&format!("{root}/first"), b"", CreateMode::Persistent)
            .await?;
    }
    // A critical policy cannot be deployed where it could never be satisfied.
    let err = admin
        .create_scope(
            "/impossible",
            Some(policy("critical", r#"{"anchors": 7, "acks": 7}"#)),
        )
        .await
        .expect_err("7 anchors on a 5-node cluster");
    assert_eq!(err.code(), ErrorCode::BadArguments);
    assert!(err.to_string().contains("quorum rule"), "{err}");

    // The dev scope's only anchor dies: the others keep taking writes, none refused.
    let writers = [
        Writer::start(cluster.client_of(1).await?, "/crit"),
        Writer::start(cluster.client_of(2).await?, "/std"),
        Writer::start(cluster.client_of(3).await?, ""),
    ];
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill9(5);
    let before: u64 = writers.iter().map(|w| w.ok.load(Ordering::Relaxed)).sum();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after: u64 = writers.iter().map(|w| w.ok.load(Ordering::Relaxed)).sum();
    assert!(
        after > before,
        "writes continued while /dev's anchor was down"
    );
    let mut acknowledged = Vec::new();
    for (w, prefix) in writers.into_iter().zip(["/crit", "/std", ""]) {
        let (ok, failures) = w.stop().await?;
        assert!(
            failures.is_empty(),
            "writes under {prefix:?} failed: {failures:?}"
        );
        acknowledged.push((prefix, ok));
    }
    let err = cluster
        .client_of(1)
        .await?
        .create("/dev/while-down", b"", CreateMode::Persistent)
        .await
        .expect_err("the dev scope has no anchor left");
    assert!(
        matches!(
            err.code(),
            ErrorCode::ConnectionLoss | ErrorCode::WrongScope
        ),
        "{err}"
    );

    // With two of its five anchors down, critical does not answer: 3 acks are not 4.
    cluster.kill9(4);
    let client = cluster.client_of(1).await?;
    let err = client
        .create("/crit/two-down", b"", CreateMode::Persistent)
        .await
        .expect_err("critical must not answer with three acks");
    assert_eq!(err.code(), ErrorCode::ConnectionLoss, "{err}");

    // Back up: every acknowledged write is there, and critical answers again.
    cluster.spawn(4, Mode::Existing)?;
    cluster.spawn(5, Mode::Existing)?;
    let deadline = Instant::now() + SETTLE;
    loop {
        match client
            .create("/crit/back", b"", CreateMode::Persistent)
            .await
        {
            Ok(_) => break,
            Err(e) if e.code() == ErrorCode::NodeExists => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    for (prefix, ok) in acknowledged {
        let root = if prefix.is_empty() { "/" } else { prefix };
        let (children, _) = client.children(root).await?;
        let written = children.iter().filter(|c| c.starts_with('w')).count() as u64;
        assert!(
            written >= ok,
            "{root}: {written} present, {ok} acknowledged"
        );
    }
    // The dev scope's data came back with its node, once that node is reachable again.
    let deadline = Instant::now() + SETTLE;
    loop {
        match client.exists("/dev/first").await {
            Ok(stat) => {
                assert!(stat.is_some(), "/dev/first survived");
                break;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            Err(e) => return Err(e.into()),
        }
    }

    // Node 4 anchors only /crit; a scope created afterwards elsewhere is found through it.
    admin.create_scope("/late", None).await?;
    let via_4 = cluster.client_of(4).await?;
    let deadline = Instant::now() + SETTLE;
    loop {
        match via_4.create("/late/x", b"", CreateMode::Persistent).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    assert_eq!(
        cluster.client_of(1).await?.children("/late").await?.0,
        ["x"]
    );

    // Draining node 4: critical keeps as many anchors as there are eligible nodes, off node 4;
    // then node 4 holds nothing and can be forgotten.
    admin.change_node(NodeChange::Drain { id: 4 }).await?;
    wait_for_anchors(&admin, "/crit", &[1, 2, 3, 5]).await?;
    let err = admin
        .change_node(NodeChange::Join {
            id: 4,
            addr: "127.0.0.1:1".into(),
            labels: Default::default(),
        })
        .await
        .expect_err("an id keeps its address");
    assert_eq!(err.code(), ErrorCode::NodeExists);
    admin.change_node(NodeChange::Forget { id: 4 }).await?;
    let nodes: Vec<u64> = admin.nodes().await?.iter().map(|n| n.id).collect();
    assert_eq!(nodes, [1, 2, 3, 5]);
    admin
        .create("/crit/after-drain", b"", CreateMode::Persistent)
        .await?;

    // The nodes /dev left all restart: the root's delegation record still names them, and
    // they remember where the scope went.
    for id in [1, 2, 3] {
        cluster.kill9(id);
    }
    for id in [1, 2, 3] {
        cluster.spawn(id, Mode::Existing)?;
    }
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let via_1 = cluster.client_of(1).await?;
    let deadline = Instant::now() + SETTLE;
    loop {
        match via_1.get("/dev/first").await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
