//! Three real node processes: writes through any node, leader failure under load, whole-cluster
//! crash, and restarts. Every acknowledged write must survive.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use scopekeeper_client::{Client, CreateMode, ErrorCode, Op};
use scopekeeper_tests::{Cluster, Mode, serial};

const SETTLE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_any_node_are_seen_by_every_node() -> anyhow::Result<()> {
    let _serial = serial();
    let cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    for id in 1..=3u64 {
        let client = cluster.client_of(id).await?;
        client
            .create(
                &format!("/from-{id}"),
                format!("written via {id}").as_bytes(),
                CreateMode::Persistent,
            )
            .await?;
    }
    for id in 1..=3u64 {
        let client = cluster.client_of(id).await?;
        let (children, root) = client.children("/").await?;
        // As in ZooKeeper, the root also lists `zookeeper` (the session scopes live there).
        assert_eq!(
            children,
            vec!["from-1", "from-2", "from-3", "zookeeper"],
            "node {id}"
        );
        assert_eq!((root.num_children, root.cversion), (4, 4));
        for from in 1..=3 {
            let (data, stat) = client.get(&format!("/from-{from}")).await?;
            assert_eq!(data, format!("written via {from}").as_bytes());
            assert_eq!(stat.version, 0);
        }
    }
    // A multi through a follower is atomic, and its failure reports ZooKeeper's codes.
    let leader = cluster.wait_for_leader(&[1, 2, 3], SETTLE).await?;
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    let client = cluster.client_of(follower).await?;
    let err = client
        .multi(vec![
            Op::Create {
                path: "/m".into(),
                data: vec![],
                mode: CreateMode::Persistent,
                acl: Vec::new(),
            },
            Op::Delete {
                path: "/from-1".into(),
                version: 5,
            },
        ])
        .await
        .expect_err("bad version fails the multi");
    assert_eq!(err.code(), ErrorCode::BadVersion);
    assert_eq!(
        client.exists("/m").await?,
        None,
        "nothing of a failed multi is applied"
    );
    let results = client
        .multi(vec![
            Op::Create {
                path: "/m".into(),
                data: vec![],
                mode: CreateMode::Persistent,
                acl: Vec::new(),
            },
            Op::Create {
                path: "/m/seq-".into(),
                data: vec![],
                mode: CreateMode::PersistentSequential,
                acl: Vec::new(),
            },
            Op::Check {
                path: "/from-1".into(),
                version: 0,
            },
        ])
        .await?;
    assert_eq!(results.len(), 3);
    let (seq, _) = client
        .create("/m/seq-", b"", CreateMode::PersistentSequential)
        .await?;
    assert_eq!(seq, "/m/seq-0000000001");
    client.sync("/").await?;

    // A client alongside another dials from its socket, over a connection of its own: writes
    // through either reach the other, whichever node each is connected to.
    let beside = client.alongside(&[cluster.addr(leader)]).await?;
    assert_eq!(beside.local_addr()?, client.local_addr()?);
    beside
        .create("/beside", b"from beside", CreateMode::Persistent)
        .await?;
    assert_eq!(client.get("/beside").await?.0, b"from beside");
    client.set("/beside", b"from the first", -1).await?;
    assert_eq!(beside.get("/beside").await?.0, b"from the first");
    Ok(())
}

/// Writers that record every create the cluster acknowledged.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeSet<String>>>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<u64>>>,
}

impl Load {
    async fn start(cluster: &Cluster, writers: usize, prefix: &str) -> anyhow::Result<Load> {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(BTreeSet::new()));
        let mut tasks = Vec::new();
        for w in 0..writers {
            let mut config = cluster.client_config(&[1, 2, 3]);
            config.endpoints.rotate_left(w % 3);
            let (stop, acked, prefix) = (stop.clone(), acked.clone(), prefix.to_string());
            tasks.push(tokio::spawn(async move {
                let client = Client::connect(config).await?;
                let mut errors = 0u64;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let path = format!("{prefix}/w{w}-{i}");
                    match client
                        .create(&path, b"acknowledged", CreateMode::Persistent)
                        .await
                    {
                        Ok(_) => {
                            acked.lock().expect("lock").insert(path);
                        }
                        Err(_) => {
                            errors += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                Ok(errors)
            }));
        }
        Ok(Load { stop, acked, tasks })
    }

    fn count(&self) -> usize {
        self.acked.lock().expect("lock").len()
    }

    async fn wait_for(&self, at_least: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.count() < at_least {
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {at_least} writes acknowledged",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    async fn stop(self) -> anyhow::Result<BTreeSet<String>> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await??;
        }
        Ok(Arc::try_unwrap(self.acked)
            .map_err(|_| anyhow::anyhow!("writers still running"))?
            .into_inner()
            .expect("lock"))
    }
}

async fn assert_all_present(
    cluster: &Cluster,
    node: u64,
    parent: &str,
    acked: &BTreeSet<String>,
) -> anyhow::Result<()> {
    let client = cluster.client_of(node).await?;
    let (children, _) = client.children(parent).await?;
    let present: BTreeSet<String> = children
        .into_iter()
        .map(|c| format!("{parent}/{c}"))
        .collect();
    let missing: Vec<&String> = acked.difference(&present).collect();
    assert!(
        missing.is_empty(),
        "node {node} lost {} acknowledged writes, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_under_load_loses_no_acknowledged_write() -> anyhow::Result<()> {
    let _serial = serial();
    // Snapshot often and keep little log, so the killed node must catch up by snapshot.
    let mut cluster = Cluster::start_with(
        3,
        "[raft]\nsnapshot_every_entries = 300\nlog_kept_behind_snapshot = 50\n",
    )?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    cluster
        .client()
        .await?
        .create("/load", b"", CreateMode::Persistent)
        .await?;
    let load = Load::start(&cluster, 8, "/load").await?;
    load.wait_for(400, SETTLE).await?;

    let old_leader = cluster.wait_for_leader(&[1, 2, 3], SETTLE).await?;
    let old_applied = cluster.info(old_leader).await?.applied_index;
    cluster.kill9(old_leader);
    let survivors: Vec<u64> = (1..=3).filter(|&id| id != old_leader).collect();
    let before = load.count();
    let new_leader = cluster.wait_for_leader(&survivors, SETTLE).await?;
    assert_ne!(new_leader, old_leader);
    // The new leader serves, and compacts its log past everything the old one holds, so the
    // old one can only catch up by snapshot.
    load.wait_for(before + 200, Duration::from_secs(60)).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // A busy node may miss one connection attempt; only the deadline fails the test.
        match cluster.info(new_leader).await {
            Ok(info) if info.purged_index > old_applied => break,
            _ => assert!(
                Instant::now() < deadline,
                "the new leader never compacted its log"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    cluster.spawn(old_leader, Mode::Existing)?;
    load.wait_for(load.count() + 200, Duration::from_secs(60))
        .await?;
    let acked = load.stop().await?;

    let committed = cluster.info(new_leader).await?.committed_index;
    let caught_up = cluster
        .wait_for_applied(old_leader, committed, Duration::from_secs(60))
        .await?;
    assert!(
        caught_up.snapshot_index > 0,
        "the restarted node holds a snapshot"
    );
    let log = std::fs::read_to_string(cluster.log_file(old_leader))?;
    assert!(
        log.contains("installed snapshot"),
        "the restarted node caught up by snapshot"
    );
    for id in 1..=3 {
        assert_all_present(&cluster, id, "/load", &acked).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_killed_mid_write_keeps_every_acknowledged_write() -> anyhow::Result<()> {
    let _serial = serial();
    let mut cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    cluster
        .client()
        .await?
        .create("/crash", b"", CreateMode::Persistent)
        .await?;
    let load = Load::start(&cluster, 8, "/crash").await?;
    load.wait_for(500, SETTLE).await?;
    for id in 1..=3 {
        cluster.kill9(id);
    }
    let acked = load.stop().await?;
    for id in 1..=3 {
        cluster.spawn(id, Mode::Existing)?;
    }
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    for id in 1..=3 {
        assert_all_present(&cluster, id, "/crash", &acked).await?;
    }
    // And the restarted cluster takes writes again.
    cluster
        .client()
        .await?
        .create("/crash/after", b"", CreateMode::Persistent)
        .await?;
    Ok(())
}

/// Status queries read raft's metrics while raft publishes them on every write. A reader that
/// borrowed them twice could wait behind a publisher waiting for its first borrow (std's
/// RwLock prefers writers), and both tokio workers stopped: the whole node froze. So this
/// asks every node for its status all the time while the cluster writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_keep_answering_status_queries_while_writing() -> anyhow::Result<()> {
    let _serial = serial();
    let cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    cluster
        .client()
        .await?
        .create("/busy", b"", CreateMode::Persistent)
        .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut askers = Vec::new();
    for id in [1, 2, 3, 1, 2, 3] {
        let client = cluster.client_of(id).await?;
        let stop = stop.clone();
        askers.push(tokio::spawn(async move {
            let mut answers = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // A frozen node answers nothing; the check after the load says which.
                match tokio::time::timeout(Duration::from_secs(5), client.node_info()).await {
                    Ok(Ok(_)) => answers += 1,
                    Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
                    Err(_) => break,
                }
            }
            answers
        }));
    }
    let load = Load::start(&cluster, 8, "/busy").await?;
    let loaded = load.wait_for(8000, Duration::from_secs(120)).await;
    let acked = load.stop().await?;
    stop.store(true, Ordering::Relaxed);
    let mut answers = 0;
    for asker in askers {
        answers += asker.await?;
    }
    // Every node still answers and holds every acknowledged write.
    let leader = cluster.wait_for_leader(&[1, 2, 3], SETTLE).await?;
    let committed = cluster.info(leader).await?.committed_index;
    for id in 1..=3 {
        cluster.wait_for_applied(id, committed, SETTLE).await?;
    }
    loaded?;
    assert!(answers > 0, "no status query was answered");
    for id in 1..=3 {
        assert_all_present(&cluster, id, "/busy", &acked).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_its_data_refuses_to_start() -> anyhow::Result<()> {
    let _serial = serial();
    let mut cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let client = cluster.client().await?;
    for i in 0..20 {
        client
            .create(&format!("/k{i}"), b"v", CreateMode::Persistent)
            .await?;
    }
    let committed = cluster
        .info(cluster.wait_for_leader(&[1, 2, 3], SETTLE).await?)
        .await?
        .committed_index;
    cluster.wait_for_applied(3, committed, SETTLE).await?;
    cluster.kill9(3);
    let data = cluster.data_dir(3);
    let saved = data.with_extension("saved");
    std::fs::rename(&data, &saved)?;

    // Gone entirely: an empty directory needs an explicit choice ...
    let out = cluster.start_expecting_refusal(3, Mode::Existing)?;
    assert!(
        out.contains("holds no data") && out.contains("--join"),
        "{out}"
    );
    // ... and neither choice may reuse the id of a node that held a log.
    let out = cluster.start_expecting_refusal(3, Mode::Join)?;
    assert!(out.contains("its log is gone"), "{out}");
    let out = cluster.start_expecting_refusal(3, Mode::Bootstrap)?;
    assert!(out.contains("refusing to bootstrap"), "{out}");

    // The membership marker survives but the database is gone.
    std::fs::create_dir_all(&data)?;
    std::fs::copy(saved.join("member.toml"), data.join("member.toml"))?;
    let out = cluster.start_expecting_refusal(3, Mode::Existing)?;
    assert!(out.contains("raft log and vote are gone"), "{out}");

    // Corrupt: every database file overwritten with garbage.
    std::fs::remove_dir_all(&data)?;
    copy_dir(&saved, &data)?;
    corrupt_files(&data.join("db"))?;
    let out = cluster.start_expecting_refusal(3, Mode::Existing)?;
    assert!(!out.is_empty(), "a refusal says why");

    // With its real data back, the node rejoins and catches up.
    std::fs::remove_dir_all(&data)?;
    std::fs::rename(&saved, &data)?;
    cluster.spawn(3, Mode::Existing)?;
    client.create("/after", b"", CreateMode::Persistent).await?;
    let committed = cluster
        .info(cluster.wait_for_leader(&[1, 2, 3], SETTLE).await?)
        .await?
        .committed_index;
    cluster.wait_for_applied(3, committed, SETTLE).await?;
    assert!(
        cluster
            .client_of(3)
            .await?
            .exists("/after")
            .await?
            .is_some()
    );
    Ok(())
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn corrupt_files(dir: &std::path::Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            corrupt_files(&entry.path())?;
        } else {
            let len = entry.metadata()?.len() as usize;
            let garbage: Vec<u8> = (0..len.max(64)).map(|i| (i * 31 % 251) as u8).collect();
            std::fs::write(entry.path(), garbage)?;
        }
    }
    Ok(())
}
