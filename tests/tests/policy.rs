//! Policies on a real cluster: the same verdicts and fuel on every anchor and after a snapshot
//! restore, a hot swap at one log index, hostile components, authorization, audit mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use scopekeeper::policy::build::repository_component;
use scopekeeper_client::proto::PolicyMode;
use scopekeeper_client::{CreateMode, ErrorCode};
use scopekeeper_tests::{Cluster, Mode, serial};

const SETTLE: Duration = Duration::from_secs(30);

fn component(name: &str) -> Vec<u8> {
    repository_component(name).unwrap_or_else(|e| panic!("building policy {name}: {e:#}"))
}

/// Judged entries, fuel and digest must agree on the given anchors.
async fn assert_same_judgements(cluster: &Cluster, ids: &[u64]) -> anyhow::Result<u64> {
    let infos = cluster.settle(ids, SETTLE).await?;
    let first = &infos[0];
    assert!(first.policy_judged > 0, "no entry was judged");
    for info in &infos[1..] {
        assert_eq!(
            (info.policy_judged, info.policy_fuel, info.policy_digest),
            (first.policy_judged, first.policy_fuel, first.policy_digest),
            "node {} and node {} judged differently",
            info.id,
            first.id
        );
    }
    Ok(first.policy_judged)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_and_fuel_agree_on_every_anchor_and_after_a_snapshot_restore() -> anyhow::Result<()>
{
    let _serial = serial();
    let mut cluster = Cluster::start_with(
        3,
        "[raft]\nsnapshot_every_entries = 200\nlog_kept_behind_snapshot = 20\n",
    )?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    admin
        .set_policy(
            "/",
            component("limits"),
            r#"{"max_data_bytes": 8, "max_children": 1000}"#,
            PolicyMode::Enforce,
        )
        .await?;

    // Through every node: some admitted, some denied with the policy's code and message.
    for id in 1..=3u64 {
        let client = cluster.client_of(id).await?;
        client
            .create(&format!("/ok-{id}"), b"12345678", CreateMode::Persistent)
            .await?;
        let err = client
            .create(&format!("/big-{id}"), b"123456789", CreateMode::Persistent)
            .await
            .expect_err("denied");
        assert_eq!(err.code(), ErrorCode::PolicyDenied);
        assert!(
            err.to_string().contains("data-too-large") && err.to_string().contains("at most 8"),
            "{err}"
        );
        assert_eq!(client.exists(&format!("/big-{id}")).await?, None);
    }
    assert_same_judgements(&cluster, &[1, 2, 3]).await?;

    // The leader is killed and misses more than a snapshot's worth of judged entries; it
    // catches up by snapshot. (A dead follower may instead keep the leader from purging the log
    // it still has in flight, so the leader is the one that reliably needs a snapshot.)
    let victim = cluster.wait_for_leader(&[1, 2, 3], SETTLE).await?;
    let victim_applied = cluster.info(victim).await?.applied_index;
    cluster.kill9(victim);
    let others: Vec<u64> = (1..=3).filter(|&id| id != victim).collect();
    let leader = cluster.wait_for_leader(&others, SETTLE).await?;
    let client = cluster.client_of(others[0]).await?;
    // Write, with a third denied, until the leader has compacted past what the victim holds.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    while cluster.info(leader).await?.purged_index <= victim_applied {
        assert!(
            std::time::Instant::now() < deadline,
            "the leader never compacted its log"
        );
        for _ in 0..100 {
            i += 1;
            let data: &[u8] = if i % 3 == 0 {
                b"far too long"
            } else {
                b"short"
            };
            let _ = client
                .create(&format!("/n{i}"), data, CreateMode::Persistent)
                .await;
        }
    }
    cluster.spawn(victim, Mode::Existing)?;
    let judged = assert_same_judgements(&cluster, &[1, 2, 3]).await?;
    assert!(judged >= 200);
    let log = std::fs::read_to_string(cluster.log_file(victim))?;
    assert!(
        log.contains("installed snapshot"),
        "node {victim} caught up by snapshot"
    );
    // The restored anchor carries the policy too: it judges new entries like the others.
    cluster
        .client_of(victim)
        .await?
        .create("/after", b"123456789", CreateMode::Persistent)
        .await
        .expect_err("denied");
    assert_same_judgements(&cluster, &[1, 2, 3]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_swap_takes_effect_at_one_log_index_on_every_anchor() -> anyhow::Result<()> {
    let _serial = serial();
    let cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    let limits = component("limits");
    admin
        .set_policy(
            "/",
            limits.clone(),
            r#"{"max_data_bytes": 4}"#,
            PolicyMode::Enforce,
        )
        .await?;
    admin.create("/w", b"", CreateMode::Persistent).await?;

    // Writers of 6-byte values run through the swap: denied before it, admitted after.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let client = cluster.client_of(1 + w % 3).await?;
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let (mut admitted, mut denied) = (0u32, 0u32);
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match client
                    .create(&format!("/w/{w}-{i}"), b"sixsix", CreateMode::Persistent)
                    .await
                {
                    Ok(_) => admitted += 1,
                    Err(e) if e.code() == ErrorCode::PolicyDenied => {
                        assert_eq!(
                            admitted, 0,
                            "a write after the swap was judged by the old policy"
                        );
                        denied += 1;
                    }
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            (admitted, denied)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let swap = admin
        .set_policy("/", limits, r#"{"max_data_bytes": 8}"#, PolicyMode::Enforce)
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut admitted, mut denied) = (0, 0);
    for w in writers {
        let (a, d) = w.await?;
        admitted += a;
        denied += d;
    }
    assert!(
        admitted > 0 && denied > 0,
        "writes fell on both sides of the swap ({admitted} admitted, {denied} denied)"
    );

    // Every admitted node was created after the swap's zxid, on every anchor.
    for id in 1..=3u64 {
        let client = cluster.client_of(id).await?;
        let (children, _) = client.children("/w").await?;
        assert_eq!(children.len() as u32, admitted, "node {id}");
        for child in children.iter().take(50) {
            let stat = client
                .exists(&format!("/w/{child}"))
                .await?
                .expect("exists");
            assert!(
                stat.czxid > swap.zxid,
                "node {id}: {child} precedes the swap but was admitted"
            );
        }
    }
    assert_same_judgements(&cluster, &[1, 2, 3]).await?;
    let history = admin.policy_history("/").await?;
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].log_index, swap.log_index);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_policies_deny_and_the_cluster_keeps_serving() -> anyhow::Result<()> {
    let _serial = serial();
    let cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    let client = cluster.client().await?;
    client.create("/keep", b"v", CreateMode::Persistent).await?;
    let hostile = component("hostile");

    for behaviour in ["loop", "bomb", "trap"] {
        admin
            .set_policy("/", hostile.clone(), behaviour, PolicyMode::Enforce)
            .await?;
        let err = client
            .create(&format!("/{behaviour}"), b"", CreateMode::Persistent)
            .await
            .expect_err("fails closed");
        assert_eq!(err.code(), ErrorCode::PolicyDenied, "{behaviour}: {err}");
        assert!(err.to_string().contains("trap"), "{behaviour}: {err}");
        // Reads are not judged; the cluster keeps serving them.
        assert_eq!(client.get("/keep").await?.0, b"v");
    }
    assert_same_judgements(&cluster, &[1, 2, 3]).await?;

    // Refused before commit: an import, garbage, and bad parameters. Nothing changes.
    let before = admin.policy("/").await?;
    let import = wat::parse_str(r#"(component (import "clock" (func)))"#)?;
    let err = admin
        .set_policy("/", import, "", PolicyMode::Enforce)
        .await
        .expect_err("imports");
    assert!(err.to_string().contains("imports clock"), "{err}");
    let err = admin
        .set_policy("/", b"not wasm".to_vec(), "", PolicyMode::Enforce)
        .await
        .expect_err("garbage");
    assert!(
        err.to_string()
            .contains("not a valid WebAssembly component"),
        "{err}"
    );
    let err = admin
        .set_policy("/", hostile.clone(), "explode", PolicyMode::Enforce)
        .await
        .expect_err("params");
    assert!(err.to_string().contains("unknown behaviour"), "{err}");
    assert_eq!(admin.policy("/").await?, before);

    // Only the admin role may replace a policy, whatever the policy says.
    let err = client
        .set_policy("/", component("open"), "", PolicyMode::Enforce)
        .await
        .expect_err("not admin");
    assert_eq!(err.code(), ErrorCode::NoAuth);
    admin
        .set_policy("/", component("open"), "", PolicyMode::Enforce)
        .await?;
    client
        .create("/free-again", b"", CreateMode::Persistent)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_mode_logs_denials_and_admits() -> anyhow::Result<()> {
    let _serial = serial();
    let cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    admin
        .set_policy("/", component("readonly"), "", PolicyMode::Audit)
        .await?;
    let client = cluster.client().await?;
    client
        .create("/audited", b"", CreateMode::Persistent)
        .await?;
    assert!(client.exists("/audited").await?.is_some());
    let infos = cluster.settle(&[1, 2, 3], SETTLE).await?;
    assert!(
        infos
            .iter()
            .all(|i| i.policy_judged == infos[0].policy_judged
                && i.policy_digest == infos[0].policy_digest)
    );
    let leader = cluster.wait_for_leader(&[1, 2, 3], SETTLE).await?;
    let log = std::fs::read_to_string(cluster.log_file(leader))?;
    assert!(
        log.contains("audit: the policy would deny"),
        "the denial is logged"
    );
    admin
        .set_policy("/", component("readonly"), "", PolicyMode::Enforce)
        .await?;
    let err = client
        .create("/frozen", b"", CreateMode::Persistent)
        .await
        .expect_err("read-only");
    assert!(err.to_string().contains("read-only"), "{err}");
    Ok(())
}
