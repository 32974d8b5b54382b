//! The recipes in `examples/recipes` against real node processes: the lock excludes, the
//! election hands over when its leader's session ends, the registry follows membership.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use recipes::{Election, Instance, Lock, Registry};
use scopekeeper_client::{Client, CreateMode};
use scopekeeper_tests::{Cluster, serial};

const SETTLE: Duration = Duration::from_secs(30);
const SESSION: Duration = Duration::from_secs(5);

async fn session_client(cluster: &Cluster, first: u64) -> anyhow::Result<Client> {
    let mut ids = vec![first];
    ids.extend((1..=3).filter(|id| *id != first));
    Ok(Client::connect_with_session(cluster.client_config(&ids), SESSION).await?)
}

/// Four clients on three nodes each take the lock five times and, holding it, do an unguarded
/// read-modify-write of a counter: a lost update (or two holders at once) would show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_excludes_and_a_crashed_holder_lets_go() -> anyhow::Result<()> {
    let _serial = serial();
    let cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    admin.create_scope("/locks", None).await?;
    let plain = cluster.client().await?;
    plain
        .create("/counter", b"0", CreateMode::Persistent)
        .await?;

    const CLIENTS: u64 = 4;
    const ROUNDS: usize = 5;
    let inside = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let client = session_client(&cluster, c % 3 + 1).await?;
        let inside = inside.clone();
        tasks.push(tokio::spawn(async move {
            let lock = Lock::new(&client, "/locks/counter");
            for _ in 0..ROUNDS {
                let held = lock.acquire().await?;
                anyhow::ensure!(
                    inside.fetch_add(1, Ordering::SeqCst) == 0,
                    "two holders of the lock at once"
                );
                let (data, _) = client.get("/counter").await?;
                let n: u64 = String::from_utf8(data)?.parse()?;
                tokio::time::sleep(Duration::from_millis(5)).await;
                client
                    .set("/counter", (n + 1).to_string().as_bytes(), -1)
                    .await?;
                inside.fetch_sub(1, Ordering::SeqCst);
                held.release().await?;
            }
            client.close().await?;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let (data, _) = plain.get("/counter").await?;
    assert_eq!(data, (CLIENTS as usize * ROUNDS).to_string().as_bytes());

    // A holder that goes away without releasing loses the lock when its session ends.
    let holder = session_client(&cluster, 1).await?;
    let waiter = session_client(&cluster, 2).await?;
    let held = Lock::new(&holder, "/locks/counter").acquire().await?;
    assert!(
        Lock::new(&waiter, "/locks/counter")
            .try_acquire()
            .await?
            .is_none(),
        "taken while held"
    );
    let held_path = held.path();
    drop(held);
    drop(holder);
    let taken = tokio::time::timeout(
        Duration::from_secs(30),
        Lock::new(&waiter, "/locks/counter").acquire(),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!("the lock of a vanished holder ({held_path}) was never freed")
    })??;
    taken.release().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_election_hands_over_when_the_leader_goes() -> anyhow::Result<()> {
    let _serial = serial();
    let mut cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let alice = session_client(&cluster, 1).await?;
    let bob = session_client(&cluster, 2).await?;
    let carol = session_client(&cluster, 3).await?;
    let observer = cluster.client_of(2).await?;
    let dir = "/election/db";

    let alice_leads = Election::new(&alice, dir).lead(b"alice").await?;
    assert_eq!(
        Election::new(&observer, dir).leader().await?.as_deref(),
        Some(&b"alice"[..])
    );
    let (won_tx, mut won) = tokio::sync::mpsc::unbounded_channel();
    for (name, client) in [("bob", bob), ("carol", carol)] {
        let won_tx = won_tx.clone();
        tokio::spawn(async move {
            let ticket = Election::new(&client, dir).lead(name.as_bytes()).await?;
            let _ = won_tx.send(name);
            // Lead until the test ends: the client stays alive in this task.
            std::future::pending::<()>().await;
            drop(ticket);
            anyhow::Ok(())
        });
    }
    // Nobody else is elected while alice leads.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), won.recv())
            .await
            .is_err(),
        "a second leader while alice leads"
    );
    // Alice steps down: exactly one of the others follows her.
    alice_leads.release().await?;
    let next = tokio::time::timeout(Duration::from_secs(20), won.recv())
        .await?
        .expect("a successor");
    assert_eq!(
        Election::new(&observer, dir).leader().await?.as_deref(),
        Some(next.as_bytes())
    );
    // Its node dies: the session moves and the leadership stays with it.
    let node = if next == "bob" { 2 } else { 3 };
    cluster.kill9(node);
    tokio::time::sleep(SESSION * 2).await;
    let observer = cluster.client_of(1).await?;
    assert_eq!(
        Election::new(&observer, dir).leader().await?.as_deref(),
        Some(next.as_bytes()),
        "the leader's session moved to another node and kept its place"
    );
    assert!(won.try_recv().is_err(), "no second leader");
    alice.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_follows_instances_coming_and_going() -> anyhow::Result<()> {
    let _serial = serial();
    let cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    admin.create_scope("/services", None).await?;
    let a = session_client(&cluster, 1).await?;
    let b = session_client(&cluster, 2).await?;
    let follower = session_client(&cluster, 3).await?;
    let inst = |name: &str, address: &str| Instance {
        name: name.into(),
        address: address.into(),
    };

    Registry::new(&a, "/services")
        .register("api", "a", "10.0.0.1:80")
        .await?;
    let registry = Registry::new(&follower, "/services");
    let mut membership = registry.follow("api").await?;
    let mut next = async || -> anyhow::Result<Vec<Instance>> {
        Ok(
            tokio::time::timeout(Duration::from_secs(20), membership.next())
                .await?
                .expect("the session lives")?,
        )
    };
    assert_eq!(next().await?, [inst("a", "10.0.0.1:80")]);
    Registry::new(&b, "/services")
        .register("api", "b", "10.0.0.2:80")
        .await?;
    assert_eq!(
        next().await?,
        [inst("a", "10.0.0.1:80"), inst("b", "10.0.0.2:80")]
    );
    let twice = Registry::new(&b, "/services")
        .register("api", "b", "elsewhere")
        .await
        .expect_err("an instance name is unique");
    assert_eq!(twice.code(), scopekeeper_client::ErrorCode::NodeExists);
    // An instance whose process ends leaves with its session.
    a.close().await?;
    assert_eq!(next().await?, [inst("b", "10.0.0.2:80")]);
    Registry::new(&b, "/services")
        .deregister("api", "b")
        .await?;
    assert_eq!(next().await?, []);
    Ok(())
}
