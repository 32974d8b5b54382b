//! Sessions and ephemeral nodes with real processes: the client is a `scopekeeper create
//! --ephemeral` process killed with SIGKILL, or an in-process client whose node is killed.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use scopekeeper_client::proto::{ErrorCode, NodeKind};
use scopekeeper_client::{Client, CreateMode, SessionState};
use scopekeeper_tests::{Cluster, Partition, binary, serial};

const SETTLE: Duration = Duration::from_secs(30);

/// Waits until none of `paths` exists; returns how long that took.
async fn wait_gone(client: &Client, paths: &[&str], limit: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let mut left = Vec::new();
        for p in paths {
            if client.exists(p).await?.is_some() {
                left.push(*p);
            }
        }
        if left.is_empty() {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "{left:?} still exist {:?} after their session's client died",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemerals_in_three_scopes_vanish_when_their_client_is_killed() -> anyhow::Result<()> {
    let _serial = serial();
    let cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    for scope in ["/s1", "/s2", "/s3"] {
        admin.create_scope(scope, None).await?;
    }
    let certs = cluster.dir.path().join("certs");
    let endpoints = (1..=3)
        .map(|id| cluster.addr(id))
        .collect::<Vec<_>>()
        .join(",");
    // A real client process holding a session with a 2 s timeout.
    let mut holder = Command::new(binary())
        .args([
            "--cluster",
            scopekeeper_tests::CLUSTER,
            "--endpoints",
            &endpoints,
            "--ca",
        ])
        .arg(certs.join("ca.pem"))
        .arg("--cert")
        .arg(certs.join("client-test.pem"))
        .arg("--key")
        .arg(certs.join("client-test.key"))
        .args([
            "create",
            "--ephemeral",
            "--session-timeout",
            "2000",
            "/s1/e",
            "one",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut stdin = holder.stdin.take().expect("piped");
    writeln!(stdin, "/s2/e two")?;
    writeln!(stdin, "/s3/e three")?;
    writeln!(stdin, "/e-root four")?;
    let mut out = BufReader::new(holder.stdout.take().expect("piped")).lines();
    let mut created = Vec::new();
    for _ in 0..4 {
        created.push(out.next().expect("a created path")?);
    }
    assert_eq!(created, ["/s1/e", "/s2/e", "/s3/e", "/e-root"]);

    let reader = cluster.client().await?;
    let mut owners = Vec::new();
    for p in &created {
        let stat = reader.exists(p).await?.expect("created");
        owners.push(stat.ephemeral_owner);
    }
    assert!(matches!(
        NodeKind::of(owners[0]),
        NodeKind::Ephemeral { .. }
    ));
    assert!(
        owners.iter().all(|o| *o == owners[0]),
        "one session owns all: {owners:?}"
    );
    // Ephemerals take no children.
    let refused = reader
        .create("/s1/e/child", b"", CreateMode::Persistent)
        .await
        .expect_err("an ephemeral has no children");
    assert_eq!(refused.code(), ErrorCode::NoChildrenForEphemerals);

    holder.kill()?;
    holder.wait()?;
    let paths: Vec<&str> = created.iter().map(String::as_str).collect();
    let took = wait_gone(&reader, &paths, Duration::from_secs(30)).await?;
    println!("ephemerals in 4 scopes gone {took:?} after SIGKILL of their client (timeout 2 s)");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_outlives_its_node_and_closing_it_deletes_its_ephemerals() -> anyhow::Result<()> {
    let _serial = serial();
    let mut cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    admin.create_scope("/app", None).await?;

    // Sessionless clients cannot own ephemerals.
    let plain = cluster.client().await?;
    let refused = plain
        .create("/app/x", b"", CreateMode::Ephemeral)
        .await
        .expect_err("needs a session");
    assert_eq!(refused.code(), ErrorCode::BadArguments);

    // Connected to node 2 first; nodes 1 and 3 are where it goes next.
    let client =
        Client::connect_with_session(cluster.client_config(&[2, 1, 3]), Duration::from_secs(6))
            .await?;
    let id = client.session_id().expect("granted");
    let mut state = client.session_state().expect("a session client");
    assert_eq!(*state.borrow(), SessionState::Connected { node: 2 });
    client
        .create("/app/lock", b"held", CreateMode::Ephemeral)
        .await?;
    let (seq, _) = client
        .create("/member-", b"", CreateMode::EphemeralSequential)
        .await?;

    cluster.kill9(2);
    let moved = tokio::time::timeout(
        Duration::from_secs(20),
        state.wait_for(|s| matches!(s, SessionState::Connected { node } if *node != 2)),
    )
    .await
    .map(|r| r.is_ok());
    anyhow::ensure!(
        moved == Ok(true),
        "the session did not move to another node: {:?}",
        *state.borrow()
    );
    assert_eq!(client.session_id(), Some(id), "the same session, resumed");
    // A new session given the dead node first opens on the next one.
    let latecomer =
        Client::connect_with_session(cluster.client_config(&[2, 3]), Duration::from_secs(6))
            .await?;
    assert_eq!(
        *latecomer
            .session_state()
            .expect("a session client")
            .borrow(),
        SessionState::Connected { node: 3 }
    );
    latecomer.close().await?;
    // Stay past the timeout: the resumed session is kept alive from its new node.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let observer = cluster.client_of(1).await?;
    for p in ["/app/lock", seq.as_str()] {
        let stat = observer.exists(p).await?.expect("still there");
        assert_eq!(stat.ephemeral_owner, id, "{p}");
    }
    client
        .create("/app/second", b"", CreateMode::Ephemeral)
        .await?;

    client.close().await?;
    assert_eq!(*state.borrow(), SessionState::Closed);
    for p in ["/app/lock", "/app/second", seq.as_str()] {
        assert!(
            observer.exists(p).await?.is_none(),
            "{p} outlived a closed session"
        );
    }
    let gone = client
        .create("/app/after", b"", CreateMode::Ephemeral)
        .await;
    assert_eq!(gone.expect_err("closed").code(), ErrorCode::SessionExpired);

    // Containers go once their last child goes; TTL nodes once unchanged for their TTL.
    plain.create("/app/box", b"", CreateMode::Container).await?;
    plain
        .create("/app/box/item", b"", CreateMode::Persistent)
        .await?;
    plain
        .create(
            "/app/lease",
            b"",
            CreateMode::PersistentWithTtl { ttl_ms: 300 },
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        plain.exists("/app/box").await?.is_some(),
        "a container with a child stays"
    );
    plain.delete("/app/box/item", -1).await?;
    wait_gone(&plain, &["/app/box", "/app/lease"], Duration::from_secs(30)).await?;
    Ok(())
}

/// Node 3 is cut off from nodes 1 and 2 by nftables. Its clients can still reach it, but it
/// can no longer keep their sessions alive, so it lets go of them: a client that knows only
/// node 3 loses its session (its ephemerals go on the majority side, and it learns it expired),
/// while one that knows the other nodes resumes there and keeps everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cut_off_from_its_session_scope_expires_unless_it_moves() -> anyhow::Result<()> {
    let _serial = serial();
    let cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    admin.create_scope("/p", None).await?;

    let stuck =
        Client::connect_with_session(cluster.client_config(&[3]), Duration::from_secs(2)).await?;
    let mover =
        Client::connect_with_session(cluster.client_config(&[3, 1, 2]), Duration::from_secs(6))
            .await?;
    let mover_id = mover.session_id().expect("granted");
    let mut stuck_state = stuck.session_state().expect("a session client");
    let mut mover_state = mover.session_state().expect("a session client");
    assert_eq!(*mover_state.borrow(), SessionState::Connected { node: 3 });
    stuck.create("/p/stuck", b"", CreateMode::Ephemeral).await?;
    stuck.create("/stuck", b"", CreateMode::Ephemeral).await?;
    mover.create("/p/mover", b"", CreateMode::Ephemeral).await?;
    mover.create("/mover", b"", CreateMode::Ephemeral).await?;

    let observer = cluster.client_of(1).await?;
    let partition = Partition::new(&cluster, &[3], &[1, 2])?;
    let took = wait_gone(&observer, &["/p/stuck", "/stuck"], Duration::from_secs(60)).await?;
    println!("a session cut off with its node expired; its ephemerals went after {took:?}");
    let moved = tokio::time::timeout(
        Duration::from_secs(30),
        mover_state.wait_for(|s| matches!(s, SessionState::Connected { node } if *node != 3)),
    )
    .await
    .map(|r| r.is_ok());
    anyhow::ensure!(
        moved == Ok(true),
        "the client that knows other nodes did not move: {:?}",
        *mover_state.borrow()
    );
    assert_eq!(mover.session_id(), Some(mover_id), "the same session");
    for p in ["/p/mover", "/mover"] {
        let stat = observer.exists(p).await?.expect("kept: its session moved");
        assert_eq!(stat.ephemeral_owner, mover_id, "{p}");
    }
    let expired = tokio::time::timeout(
        Duration::from_secs(30),
        stuck_state.wait_for(|s| *s == SessionState::Expired),
    )
    .await
    .map(|r| r.is_ok());
    anyhow::ensure!(
        expired == Ok(true),
        "the cut-off client was not told its session expired: {:?}",
        *stuck_state.borrow()
    );

    drop(partition);
    let refused = stuck
        .create("/p/again", b"", CreateMode::Ephemeral)
        .await
        .expect_err("its session expired");
    assert_eq!(refused.code(), ErrorCode::SessionExpired);
    // Node 3 serves again once healed, and the moved session still works.
    mover.create("/p/after", b"", CreateMode::Ephemeral).await?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let on_3 = cluster.client_of(3).await?;
    assert!(on_3.exists("/p/after").await?.is_some());
    assert!(on_3.exists("/p/stuck").await?.is_none());
    mover.close().await?;
    Ok(())
}
