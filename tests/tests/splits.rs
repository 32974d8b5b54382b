//! Splits under load and under faults, with real node processes: a scope that grows past its
//! policy's limit splits itself (again and again) while clients write; an anchor killed in the
//! middle of a split comes back with the split done or not done; and a recorded history of
//! reads and writes across splits is linearizable.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rand::{Rng, SeedableRng};
use scopekeeper::policy::build::repository_component;
use scopekeeper_client::proto::{HostedScope, PolicyMode, PolicySpec};
use scopekeeper_client::{Client, CreateMode, ErrorCode, Op};
use scopekeeper_tests::linearizability::{self, Event, RegisterOp};
use scopekeeper_tests::{Cluster, Mode, serial};

const SETTLE: Duration = Duration::from_secs(60);

fn autosplit(max_znodes: u64) -> PolicySpec {
    PolicySpec {
        component: repository_component("autosplit")
            .unwrap_or_else(|e| panic!("building policy autosplit: {e:#}")),
        params: format!(r#"{{"max_znodes": {max_znodes}, "min_interval_secs": 0}}"#),
        mode: PolicyMode::Enforce,
    }
}

fn create(path: String) -> Op {
    Op::Create {
        path,
        data: b"0123456789".to_vec(),
        mode: CreateMode::Persistent,
        acl: Vec::new(),
    }
}

/// The scopes (but the session scopes) node `id` replicates, by root.
async fn hosted(cluster: &Cluster, id: u64) -> anyhow::Result<BTreeMap<String, HostedScope>> {
    Ok(cluster
        .info(id)
        .await?
        .scopes
        .into_iter()
        .filter(|s| !s.root.starts_with("/zookeeper/"))
        .map(|s| (s.root.clone(), s))
        .collect())
}

/// Waits until no node holds a replica of the scope at `root` (it merged back).
async fn until_no_replica_of(cluster: &Cluster, root: &str) -> anyhow::Result<()> {
    for id in 1..=3 {
        let deadline = Instant::now() + SETTLE;
        while hosted(cluster, id).await?.contains_key(root) {
            ensure!(
                Instant::now() < deadline,
                "node {id} kept its replica of {root}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Runs one operation of a recorded history: a write of `value` if there is one, else a read,
/// with its invocation and response times. An unknown outcome (ConnectionLoss) is recorded as
/// such; any other error fails the test.
async fn record(
    client: &Client,
    key: String,
    value: Option<String>,
    epoch: Instant,
) -> anyhow::Result<Event> {
    let invoked = epoch.elapsed().as_nanos() as u64;
    let (op, result) = match value {
        Some(value) => {
            let value = value.into_bytes();
            let r = client.set(&key, &value, -1).await.map(|_| ());
            (RegisterOp::Write(value), r)
        }
        None => match client.get(&key).await {
            Ok((data, _)) => (RegisterOp::Read(data), Ok(())),
            Err(e) => (RegisterOp::Read(Vec::new()), Err(e)),
        },
    };
    let completed = match result {
        Ok(()) => Some(epoch.elapsed().as_nanos() as u64),
        Err(e) if e.code() == ErrorCode::ConnectionLoss => None,
        Err(e) => bail!("{key}: {e:?}"),
    };
    Ok(Event {
        key,
        op,
        invoked,
        completed,
    })
}

/// 200,000 znodes written in multis under two subtrees of a scope whose `autosplit` policy
/// allows 50,000: the scope splits, its children split in turn, and the writers never see an
/// error (WrongScope is retried by the nodes, out of the clients' sight). Every znode is there
/// afterwards and every scope ends within the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autosplit_carries_200k_znodes_through_repeated_splits() -> anyhow::Result<()> {
    const LIMIT: u64 = 50_000;
    const SUBTREES: [&str; 2] = ["a", "b"];
    const BUCKETS: usize = 5;
    const MULTIS: usize = 2_000;
    const PER_MULTI: usize = 100;
    const WRITERS: usize = 8;
    let _serial = serial();
    let cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    admin.create("/big", b"", CreateMode::Persistent).await?;
    for s in SUBTREES {
        admin
            .create(&format!("/big/{s}"), b"", CreateMode::Persistent)
            .await?;
        for b in 0..BUCKETS {
            admin
                .create(&format!("/big/{s}/{b}"), b"", CreateMode::Persistent)
                .await?;
        }
    }
    admin.create_scope("/big", Some(autosplit(LIMIT))).await?;

    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = cluster.client().await?;
        writers.push(tokio::spawn(async move {
            for m in (w..MULTIS).step_by(WRITERS) {
                let subtree = SUBTREES[m % 2];
                let bucket = (m / 2) % BUCKETS;
                let ops = (0..PER_MULTI)
                    .map(|i| create(format!("/big/{subtree}/{bucket}/n{m}-{i}")))
                    .collect();
                client
                    .multi(ops)
                    .await
                    .with_context(|| format!("writer {w}, multi {m}"))?;
            }
            anyhow::Ok(())
        }));
    }
    for w in writers {
        w.await??;
    }
    eprintln!(
        "{} znodes written in {:?}",
        MULTIS * PER_MULTI,
        started.elapsed()
    );

    // Splits continue after the last write until every scope is within the limit.
    let deadline = Instant::now() + SETTLE;
    let scopes = loop {
        let scopes: Vec<_> = admin
            .scopes()
            .await?
            .into_iter()
            .filter(|s| s.root.starts_with("/big"))
            .collect();
        if scopes.iter().all(|s| s.znodes <= LIMIT) {
            break scopes;
        }
        if Instant::now() > deadline {
            bail!("scopes still over {LIMIT} znodes: {scopes:#?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let roots: Vec<&str> = scopes.iter().map(|s| s.root.as_str()).collect();
    eprintln!("scopes after the writes: {roots:?}");
    ensure!(
        scopes.len() >= 4,
        "/big, both subtrees and at least one bucket split off: {roots:?}"
    );
    let total: u64 = scopes.iter().map(|s| s.znodes).sum();
    let expected = (MULTIS * PER_MULTI + 1 + SUBTREES.len() * (1 + BUCKETS)) as u64;
    // A split's root is counted in the child only; the parent lists it among its children.
    assert_eq!(
        total, expected,
        "every znode in exactly one scope: {scopes:#?}"
    );

    let reader = cluster.client().await?;
    for s in SUBTREES {
        assert_eq!(
            reader.children(&format!("/big/{s}")).await?.0.len(),
            BUCKETS
        );
        for b in 0..BUCKETS {
            let children = reader.children(&format!("/big/{s}/{b}")).await?.0;
            assert_eq!(
                children.len(),
                MULTIS / 2 / BUCKETS * PER_MULTI,
                "/big/{s}/{b}"
            );
        }
    }
    let (data, _) = reader.get("/big/b/4/n1999-99").await?;
    assert_eq!(data, b"0123456789");
    Ok(())
}

/// SIGKILL of an anchor while a split is in flight (the leader proposing and applying it, or a
/// follower): after the restart, every anchor holds the same scopes, with the split either done
/// (the child holding the whole subtree) or not, and a split the client was told about is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anchor_killed_mid_split_comes_back_with_it_done_or_not() -> anyhow::Result<()> {
    const ZNODES: usize = 10_000;
    let _serial = serial();
    let mut cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    admin.create("/k", b"", CreateMode::Persistent).await?;
    // (delay before the kill, whether the root scope's leader is the victim)
    for (round, (delay_ms, leader)) in [(0u64, true), (30, false), (30, true), (120, true)]
        .into_iter()
        .enumerate()
    {
        let subtree = format!("/k/r{round}");
        admin.create(&subtree, b"", CreateMode::Persistent).await?;
        for chunk in (0..ZNODES).collect::<Vec<_>>().chunks(500) {
            let ops = chunk
                .iter()
                .map(|i| create(format!("{subtree}/n{i}")))
                .collect();
            admin.multi(ops).await?;
        }
        let root_leader = cluster.wait_for_leader(&[1, 2, 3], SETTLE).await?;
        let victim = if leader {
            root_leader
        } else {
            root_leader % 3 + 1
        };
        let splitter = cluster.admin_client().await?;
        let at = subtree.clone();
        let split = tokio::spawn(async move { splitter.create_scope(&at, None).await });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        cluster.kill9(victim);
        let told = split.await?;
        eprintln!("round {round}: killed node {victim} after {delay_ms} ms; split: {told:?}");
        if let Err(e) = &told {
            ensure!(
                e.code() == ErrorCode::ConnectionLoss,
                "a split interrupted by a crash reports an unknown outcome, not {e:?}"
            );
        }
        cluster.spawn(victim, Mode::Existing)?;
        cluster.settle(&[1, 2, 3], SETTLE).await?;

        // Every node's replicas: the same scopes, each holding the same znodes.
        let deadline = Instant::now() + SETTLE;
        let views = loop {
            let mut views = Vec::new();
            for id in 1..=3 {
                let view: Vec<(String, u64)> = hosted(&cluster, id)
                    .await?
                    .into_values()
                    .filter(|s| s.root != "/")
                    .map(|s| (s.root, s.znodes))
                    .collect();
                views.push(view);
            }
            if views.iter().all(|v| *v == views[0]) {
                break views;
            }
            if Instant::now() > deadline {
                bail!("the nodes disagree about the scopes after the restart: {views:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let done = views[0].iter().find(|(root, _)| *root == subtree);
        eprintln!("round {round}: split done: {}", done.is_some());
        if told.is_ok() {
            ensure!(
                done.is_some(),
                "an acknowledged split is not undone: {views:?}"
            );
        }
        if let Some((_, znodes)) = done {
            assert_eq!(
                *znodes,
                ZNODES as u64 + 1,
                "the child holds the whole subtree"
            );
        }
        let reader = cluster.client().await?;
        assert_eq!(reader.children(&subtree).await?.0.len(), ZNODES);
        reader
            .create(&format!("{subtree}/after"), b"", CreateMode::Persistent)
            .await?;
    }
    Ok(())
}

/// Clients on every node read and write a handful of znodes while two subtrees split off and
/// a split scope splits again; the recorded history, with each operation's invocation and
/// response times, must be linearizable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_across_splits_is_linearizable() -> anyhow::Result<()> {
    const CLIENTS: u64 = 6;
    let _serial = serial();
    let cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    let mut keys = Vec::new();
    for p in ["/lin", "/lin/a", "/lin/b"] {
        admin.create(p, b"", CreateMode::Persistent).await?;
    }
    for s in ["a", "b"] {
        for k in 0..3 {
            let key = format!("/lin/{s}/k{k}");
            admin.create(&key, b"init", CreateMode::Persistent).await?;
            keys.push(key);
        }
    }
    let keys = Arc::new(keys);
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let mut workers = Vec::new();
    for c in 0..CLIENTS {
        let client = cluster.client_of(c % 3 + 1).await?;
        let (keys, stop) = (keys.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(c);
            let mut history = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = keys[rng.random_range(0..keys.len())].clone();
                let write = rng.random_bool(0.5);
                let value = write.then(|| format!("c{c}-{i}"));
                let event = record(&client, key, value, epoch).await;
                history.push(event.with_context(|| format!("client {c}"))?);
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            anyhow::Ok(history)
        }));
    }
    for at in ["/lin/a", "/lin/b", "/lin/a/k1"] {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        admin.create_scope(at, None).await?;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut history = Vec::new();
    for w in workers {
        history.extend(w.await??);
    }
    let completed = history.iter().filter(|e| e.completed.is_some()).count();
    eprintln!(
        "{} operations, {completed} with a known outcome",
        history.len()
    );
    ensure!(
        completed > 500,
        "too few operations to say anything: {completed}"
    );
    let roots: Vec<String> = admin.scopes().await?.into_iter().map(|s| s.root).collect();
    for at in ["/lin/a", "/lin/b", "/lin/a/k1"] {
        ensure!(
            roots.iter().any(|r| r == at),
            "{at} did not split: {roots:?}"
        );
    }
    linearizability::check(b"init", &history).map_err(anyhow::Error::msg)
}

/// A child scope that its policy finds small and cold merges back into its parent, with no
/// coordinator: its leader seals it and hands its state to the parent's log. Every znode (an
/// ephemeral too) is in the parent afterwards, every node has deleted its replica of the
/// child, writes go on, and all of it survives a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_cold_child_merges_back_into_its_parent() -> anyhow::Result<()> {
    let _serial = serial();
    let mut cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    for p in ["/m", "/m/a", "/m/b"] {
        admin.create(p, b"", CreateMode::Persistent).await?;
    }
    let policy = PolicySpec {
        params: r#"{"max_znodes": 60, "min_interval_secs": 0, "merge_below_znodes": 20,
                    "merge_after_secs": 3}"#
            .into(),
        ..autosplit(0)
    };
    admin.create_scope("/m", Some(policy)).await?;
    let ops = (0..60).map(|i| create(format!("/m/a/n{i}"))).collect();
    admin.multi(ops).await?;
    let owner =
        Client::connect_with_session(cluster.client_config(&[2]), Duration::from_secs(10)).await?;
    owner
        .create("/m/a/owned", b"mine", CreateMode::Ephemeral)
        .await?;
    let deadline = Instant::now() + SETTLE;
    while !admin.scopes().await?.iter().any(|s| s.root == "/m/a") {
        ensure!(Instant::now() < deadline, "/m/a never split off");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A watch armed on the child, from a node that replicates it: it must hear a change
    // made after the merge, from the parent.
    let watcher =
        Client::connect_with_session(cluster.client_config(&[1]), Duration::from_secs(10)).await?;
    let (_, _, mut fired) = watcher.get_and_watch("/m/a/n0").await?;

    // Shrink the child below 20 znodes; three seconds without a write make it cold.
    let ops = (5..60)
        .map(|i| Op::Delete {
            path: format!("/m/a/n{i}"),
            version: -1,
        })
        .collect();
    admin.multi(ops).await?;
    let deadline = Instant::now() + SETTLE;
    loop {
        // The walk reads /m before /m/a: a merge between the two reads shows /m/a gone while
        // /m, read a moment earlier, still lists it. The next walk sees both agree.
        let scopes = admin.scopes().await?;
        let parent = scopes.iter().find(|s| s.root == "/m").context("/m")?;
        if !scopes.iter().any(|s| s.root == "/m/a") && parent.children.is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "/m/a never merged back, or /m still lists it: {scopes:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    until_no_replica_of(&cluster, "/m/a").await?;

    let reader = cluster.client().await?;
    let mut children = reader.children("/m/a").await?.0;
    children.sort();
    assert_eq!(children, ["n0", "n1", "n2", "n3", "n4", "owned"]);
    assert_eq!(reader.get("/m/a/owned").await?.0, b"mine");
    assert_eq!(reader.get("/m/a/n3").await?.0, b"0123456789");
    reader
        .create("/m/a/after", b"", CreateMode::Persistent)
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        fired.try_recv().is_err(),
        "the merge itself fired the data watch"
    );
    reader.set("/m/a/n0", b"changed", -1).await?;
    let event = tokio::time::timeout(Duration::from_secs(10), fired)
        .await
        .context("a watch armed before the merge heard nothing after it")??;
    assert_eq!(
        (event.kind, event.path.as_str()),
        (
            scopekeeper_client::proto::EventKind::NodeDataChanged,
            "/m/a/n0"
        )
    );
    assert_eq!(
        admin.scope("/m").await?.znodes,
        3 + 5 + 2,
        "/m, /m/a, /m/b and 7 below /m/a"
    );

    // The ephemeral, now the parent's, goes with its session.
    owner.close().await?;
    assert!(reader.exists("/m/a/owned").await?.is_none());

    // A restarted node comes back with the merged state and no replica of the child.
    cluster.kill9(3);
    cluster.spawn(3, Mode::Existing)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    ensure!(!hosted(&cluster, 3).await?.contains_key("/m/a"));
    let on_3 = cluster.client_of(3).await?;
    assert_eq!(on_3.children("/m/a").await?.0.len(), 6);
    Ok(())
}

/// Clients read and write znodes of a child scope, stop writing (reads go on) until the child,
/// now cold, has merged back into its parent, then write again until they have written
/// `WRITES_AFTER` times; the recorded history must be linearizable, and the merge must have
/// happened in the middle of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_across_a_merge_is_linearizable() -> anyhow::Result<()> {
    const CLIENTS: u64 = 6;
    const WRITES_AFTER: u64 = 50;
    let _serial = serial();
    let cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    let mut keys = Vec::new();
    for p in ["/mlin", "/mlin/a"] {
        admin.create(p, b"", CreateMode::Persistent).await?;
    }
    for k in 0..4 {
        let key = format!("/mlin/a/k{k}");
        admin.create(&key, b"init", CreateMode::Persistent).await?;
        keys.push(key);
    }
    let policy = PolicySpec {
        params: r#"{"merge_below_znodes": 100, "merge_after_secs": 3}"#.into(),
        ..autosplit(0)
    };
    admin.create_scope("/mlin/a", Some(policy)).await?;
    let keys = Arc::new(keys);
    // 0: read and write; 1: read only; 2: stop; 3: read and write, after the merge.
    let phase = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let writes_after = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let epoch = Instant::now();
    let mut workers = Vec::new();
    for c in 0..CLIENTS {
        let client = cluster.client_of(c % 3 + 1).await?;
        let (keys, phase, writes_after) = (keys.clone(), phase.clone(), writes_after.clone());
        workers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(100 + c);
            let mut history = Vec::new();
            let mut i = 0u64;
            loop {
                let now = phase.load(Ordering::Relaxed);
                if now == 2 {
                    break;
                }
                let key = keys[rng.random_range(0..keys.len())].clone();
                let write = (now == 0 || now == 3) && rng.random_bool(0.5);
                let value = write.then(|| format!("c{c}-{i}"));
                let event = record(&client, key, value, epoch).await;
                history.push(event.with_context(|| format!("client {c}"))?);
                if write && now == 3 {
                    writes_after.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            anyhow::Ok(history)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    phase.store(1, Ordering::Relaxed);
    let deadline = Instant::now() + SETTLE;
    while admin.scopes().await?.iter().any(|s| s.root == "/mlin/a") {
        ensure!(Instant::now() < deadline, "/mlin/a never merged back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let merged_at = epoch.elapsed().as_nanos() as u64;
    phase.store(3, Ordering::Relaxed);
    // However slow the machine, the writers must get going again after the merge.
    let deadline = Instant::now() + SETTLE;
    while writes_after.load(Ordering::Relaxed) < WRITES_AFTER {
        ensure!(
            Instant::now() < deadline,
            "only {} writes in {SETTLE:?} after the merge",
            writes_after.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    phase.store(2, Ordering::Relaxed);
    let mut history = Vec::new();
    for w in workers {
        history.extend(w.await??);
    }
    // For a post-mortem: how long the merge held up whatever was in flight across it.
    let across: Vec<&Event> = history
        .iter()
        .filter(|e| e.invoked <= merged_at && e.completed.is_none_or(|c| c >= merged_at))
        .collect();
    let slowest = across
        .iter()
        .filter_map(|e| e.completed.map(|c| c - e.invoked))
        .max();
    let lost = across.iter().filter(|e| e.completed.is_none()).count();
    eprintln!(
        "{} operations; in flight at the merge: {} ({lost} lost), the slowest took {} ms",
        history.len(),
        across.len(),
        slowest.unwrap_or(0) / 1_000_000
    );
    ensure!(
        history
            .iter()
            .any(|e| matches!(e.op, RegisterOp::Write(_)) && e.invoked > merged_at),
        "no write after the merge"
    );
    linearizability::check(b"init", &history).map_err(anyhow::Error::msg)
}

/// A child scope whose parent split off the subtree holding it (so another scope delegates it
/// now) still merges: into the scope that delegates it, by an operator's `scope merge`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_merges_into_whichever_scope_delegates_it_now() -> anyhow::Result<()> {
    let _serial = serial();
    let cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    for p in ["/p", "/p/x", "/p/x/c", "/p/x/c/leaf"] {
        admin.create(p, b"v", CreateMode::Persistent).await?;
    }
    admin.create_scope("/p", None).await?;
    admin.create_scope("/p/x/c", None).await?;
    // /p splits off /p/x, which takes the delegation of /p/x/c along.
    admin.create_scope("/p/x", None).await?;
    let x = admin.scope("/p/x").await?;
    ensure!(
        x.children.iter().any(|(p, _)| p == "/p/x/c"),
        "{x:?} delegates /p/x/c"
    );
    admin.merge_scope("/p/x/c").await?;
    let deadline = Instant::now() + SETTLE;
    while admin.scopes().await?.iter().any(|s| s.root == "/p/x/c") {
        ensure!(Instant::now() < deadline, "/p/x/c never merged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(admin.scope("/p/x").await?.children.is_empty());
    until_no_replica_of(&cluster, "/p/x/c").await?;
    let reader = cluster.client().await?;
    assert_eq!(reader.get("/p/x/c/leaf").await?.0, b"v");
    reader.set("/p/x/c/leaf", b"w", -1).await?;
    // A merge the checks refuse, with a clear reason: /p has a child scope.
    let refused = admin.merge_scope("/p").await.expect_err("/p has /p/x");
    ensure!(refused.to_string().contains("child scopes"), "{refused}");
    Ok(())
}
