//! Real ZooKeeper clients against real node processes, through each node's ZooKeeper-protocol
//! listener: the Rust `zookeeper-client` crate here, and kazoo (Debian's `python3-kazoo`)
//! running `tests/zk/kazoo_suite.py`.

use std::process::Command;
use std::time::Duration;

use scopekeeper_tests::zk_raw::RawZk;
use scopekeeper_tests::{Cluster, serial};
use zookeeper_client as zk;

const SETTLE: Duration = Duration::from_secs(30);
const EVENT_WAIT: Duration = Duration::from_secs(20);

async fn connect(hosts: &str, timeout: Duration) -> anyhow::Result<zk::Client> {
    Ok(zk::Client::connector()
        .with_server_version(3, 8, 0)
        .with_session_timeout(timeout)
        .connect(hosts)
        .await?)
}

fn open() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

async fn event(w: zk::OneshotWatcher) -> anyhow::Result<(zk::EventType, String)> {
    let e = tokio::time::timeout(EVENT_WAIT, w.changed())
        .await
        .map_err(|_| anyhow::anyhow!("the watch did not fire"))?;
    Ok((e.event_type, e.path))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_zookeeper_client_works_unchanged() -> anyhow::Result<()> {
    let _serial = serial();
    let mut cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    admin.create_scope("/scoped", None).await?;

    let client = connect(&cluster.zk_hosts(&[1]), Duration::from_secs(10)).await?;
    let other = connect(&cluster.zk_hosts(&[2]), Duration::from_secs(10)).await?;

    // CRUD with ZooKeeper's Stat and errors, in the root scope and in a child scope.
    for dir in ["/plain", "/scoped/dir"] {
        let (stat, _) = client.create(dir, b"v0", &open()).await?;
        assert_eq!(
            (stat.version, stat.data_length, stat.num_children),
            (0, 2, 0)
        );
        let (data, stat) = other.get_data(dir).await?;
        assert_eq!((data.as_slice(), stat.version), (&b"v0"[..], 0));
        let stat = client.set_data(dir, b"v1", Some(0)).await?;
        assert_eq!(stat.version, 1);
        let stale = client.set_data(dir, b"v2", Some(0)).await;
        assert_eq!(stale.err(), Some(zk::Error::BadVersion));
        let again = client.create(dir, b"", &open()).await;
        assert_eq!(again.err(), Some(zk::Error::NodeExists));
        let seq = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
        let (_, n0) = client.create(&format!("{dir}/job-"), b"", &seq).await?;
        let (_, n1) = client.create(&format!("{dir}/job-"), b"", &seq).await?;
        assert_eq!((n0.into_i64(), n1.into_i64()), (0, 1));
        let (children, stat) = other.get_children(dir).await?;
        assert_eq!(children.len(), 2);
        assert_eq!(stat.num_children, 2);
        assert_eq!(
            client.delete(dir, None).await.err(),
            Some(zk::Error::NotEmpty)
        );
    }
    assert_eq!(
        client.get_data("/missing").await.err(),
        Some(zk::Error::NoNode)
    );
    assert_eq!(client.check_stat("/missing").await?, None);

    // Ephemerals belong to the session, in any scope.
    let eph = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    let (stat, _) = client.create("/scoped/e", b"", &eph).await?;
    assert_eq!(stat.ephemeral_owner, client.session_id().0);
    client.create("/plain/e", b"", &eph).await?;
    assert_eq!(
        client.list_ephemerals("/").await?,
        ["/plain/e", "/scoped/e"],
        "getEphemerals gathers the session's ephemerals from every scope"
    );
    assert_eq!(client.list_ephemerals("/scoped").await?, ["/scoped/e"]);
    assert!(other.list_ephemerals("/").await?.is_empty());
    client.delete("/plain/e", None).await?;
    // getAllChildrenNumber counts across the scopes below the path.
    admin.create_scope("/scoped/inner", None).await?;
    client.create("/scoped/inner/x", b"", &open()).await?;
    // /scoped: dir, dir/job-0..1, e, inner, inner/x.
    assert_eq!(client.count_descendants_number("/scoped").await?, 6);
    assert_eq!(client.count_descendants_number("/scoped/inner").await?, 1);

    // A multi is atomic and reports failures per op, as 3.8 does.
    let mut multi = client.new_multi_writer();
    multi.add_create("/plain/m1", b"", &open())?;
    multi.add_check_version("/plain", 1)?;
    multi.add_set_data("/plain", b"m", Some(1))?;
    let results = multi.commit().await?;
    assert_eq!(results.len(), 3);
    let mut multi = client.new_multi_writer();
    multi.add_create("/plain/m2", b"", &open())?;
    multi.add_check_version("/plain", 7)?;
    match multi.commit().await {
        Err(zk::MultiWriteError::OperationFailed { index, source }) => {
            assert_eq!((index, source), (1, zk::Error::BadVersion));
        }
        other => anyhow::bail!("a failing multi answered {other:?}"),
    }
    assert_eq!(client.check_stat("/plain/m2").await?, None);

    // Watches: one-shot data, exists and children watches, and a persistent recursive one,
    // fired by writes through another node.
    let (_, _, data_watch) = client.get_and_watch_data("/plain").await?;
    let (_, exists_watch) = client.check_and_watch_stat("/plain/new").await?;
    let (_, _, child_watch) = client.get_and_watch_children("/scoped/dir").await?;
    let mut recursive = client
        .watch("/scoped", zk::AddWatchMode::PersistentRecursive)
        .await?;
    other.set_data("/plain", b"changed", None).await?;
    other.create("/plain/new", b"", &open()).await?;
    other.create("/scoped/dir/kid", b"", &open()).await?;
    assert_eq!(
        event(data_watch).await?,
        (zk::EventType::NodeDataChanged, "/plain".into())
    );
    assert_eq!(
        event(exists_watch).await?,
        (zk::EventType::NodeCreated, "/plain/new".into())
    );
    assert_eq!(
        event(child_watch).await?,
        (zk::EventType::NodeChildrenChanged, "/scoped/dir".into())
    );
    let seen = tokio::time::timeout(EVENT_WAIT, recursive.changed()).await?;
    assert_eq!(
        (seen.event_type, seen.path.as_str()),
        (zk::EventType::NodeCreated, "/scoped/dir/kid")
    );

    // The session survives its node: kill -9 node 1 and the client resumes on node 3 with
    // its ephemeral intact.
    let survivor = connect(&cluster.zk_hosts(&[1, 3]), Duration::from_secs(8)).await?;
    let (stat, _) = survivor.create("/scoped/survivor", b"", &eph).await?;
    let owner = survivor.session_id().0;
    assert_eq!(stat.ephemeral_owner, owner);
    drop(client);
    cluster.kill9(1);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let stat = other
        .check_stat("/scoped/survivor")
        .await?
        .ok_or_else(|| anyhow::anyhow!("the ephemeral went with its node"))?;
    assert_eq!(stat.ephemeral_owner, owner);
    assert_eq!(survivor.get_data("/plain").await?.0, b"changed");
    // The first client's session was never resumed: it expires, and its ephemeral goes.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while other.check_stat("/scoped/e").await?.is_some() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the ephemeral of an abandoned session outlived its timeout by a minute"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// ACLs and auth: a native client's certificate is its x509 identity, ZooKeeper clients prove
/// digests, both kinds of client see and obey the same ACLs, ACLs travel with a subtree into a
/// new scope and survive a kill -9 and restart, the super digest and the admin pass every ACL,
/// and the identity a ZooKeeper client authenticated as is the principal scope policies judge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acls_and_auth_hold_across_clients_scopes_and_restarts() -> anyhow::Result<()> {
    use scopekeeper::policy::build::repository_component;
    use scopekeeper_client::proto::{Acl, Id, PolicyMode, PolicySpec, perms};
    use scopekeeper_client::{CreateMode, ErrorCode};

    let _serial = serial();
    let mut cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    // The harness's client certificate is `test`: its x509 identity.
    let native = cluster.client().await?;
    let certified = vec![Acl {
        perms: perms::ALL,
        id: Id::new("x509", "test"),
    }];
    native
        .create_with_acl(
            "/certified",
            b"c",
            CreateMode::Persistent,
            certified.clone(),
        )
        .await?;
    native
        .create("/certified/kid", b"", CreateMode::Persistent)
        .await?;

    let anon = connect(&cluster.zk_hosts(&[2]), Duration::from_secs(10)).await?;
    assert_eq!(
        anon.get_data("/certified").await.err(),
        Some(zk::Error::NoAuth)
    );
    assert_eq!(
        anon.get_acl("/certified").await.err(),
        Some(zk::Error::NoAuth)
    );
    assert_eq!(
        anon.create("/certified/x", b"", &open()).await.err(),
        Some(zk::Error::NoAuth)
    );
    assert!(
        anon.check_stat("/certified").await?.is_some(),
        "exists is not checked"
    );

    // A digest user: alice's node, writable by her alone, readable by anyone.
    let alice = connect(&cluster.zk_hosts(&[1]), Duration::from_secs(10)).await?;
    alice.auth("digest", b"alice:pw").await?;
    let alice_acl = [
        zk::Acl::new(zk::Permission::ALL, zk::AuthId::authed()),
        zk::Acl::new(zk::Permission::READ, zk::AuthId::anyone()),
    ];
    let mode = zk::CreateMode::Persistent.with_acls(zk::Acls::new(&alice_acl));
    alice.create("/alice-only", b"a", &mode).await?;
    assert_eq!(
        anon.set_data("/alice-only", b"x", None).await.err(),
        Some(zk::Error::NoAuth)
    );
    assert_eq!(anon.get_data("/alice-only").await?.0, b"a");
    let (acl, _) = alice.get_acl("/alice-only").await?;
    assert_eq!(acl.len(), 2);
    assert_eq!(acl[0].scheme(), "digest");
    // The native client obeys it too, and sees the hash hidden (READ without ADMIN).
    let (acl, stat) = native.acl("/alice-only").await?;
    assert_eq!((acl[0].id.id.as_str(), stat.aversion), ("alice:x", 0));
    let refused = native.set("/alice-only", b"n", -1).await;
    assert_eq!(refused.err().map(|e| e.code()), Some(ErrorCode::NoAuth));
    // The cluster's admin passes every ACL, as ZooKeeper's super does.
    assert_eq!(admin.get("/certified").await?.0, b"c");
    let (acl, _) = admin.acl("/alice-only").await?;
    assert!(acl[0].id.id.starts_with("alice:") && acl[0].id.id != "alice:x");

    // The subtree moves into a scope of its own, ACLs and all.
    admin.create_scope("/certified", None).await?;
    assert_eq!(
        anon.get_data("/certified").await.err(),
        Some(zk::Error::NoAuth)
    );
    assert_eq!(native.acl("/certified").await?.0, certified);
    assert_eq!(native.get("/certified").await?.0, b"c");

    // A policy sees the identity a ZooKeeper client authenticated as.
    let roles = PolicySpec {
        component: repository_component("roles")?,
        params: r#"{"rules": [{"prefix": "/owned", "principal": "digest:alice"}]}"#.into(),
        mode: PolicyMode::Enforce,
    };
    admin.create_scope("/owned", Some(roles)).await?;
    alice.create("/owned/a", b"", &open()).await?;
    assert_eq!(
        anon.create("/owned/b", b"", &open()).await.err(),
        Some(zk::Error::NoAuth),
        "the roles policy denies an unauthenticated ZooKeeper client"
    );
    let refused = native.create("/owned/c", b"", CreateMode::Persistent).await;
    assert_eq!(
        refused.err().map(|e| e.code()),
        Some(ErrorCode::PolicyDenied)
    );

    // kill -9 and restart: ACLs come back from disk.
    cluster.kill9(2);
    cluster.spawn(2, scopekeeper_tests::Mode::Existing)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let root = connect(&cluster.zk_hosts(&[2]), Duration::from_secs(10)).await?;
    assert_eq!(
        root.get_data("/certified").await.err(),
        Some(zk::Error::NoAuth)
    );
    root.auth("digest", b"super:test").await?;
    let (acl, stat) = root.get_acl("/certified").await?;
    assert_eq!(
        (acl.len(), acl[0].scheme(), acl[0].id()),
        (1, "x509", "test")
    );
    assert_eq!(stat.aversion, 0);
    let stat = root
        .set_acl("/certified", zk::Acls::anyone_read().as_ref(), Some(0))
        .await?;
    assert_eq!(stat.aversion, 1);
    let fresh = connect(&cluster.zk_hosts(&[3]), Duration::from_secs(10)).await?;
    assert_eq!(fresh.get_data("/certified").await?.0, b"c");
    assert_eq!(
        fresh.set_data("/certified", b"x", None).await.err(),
        Some(zk::Error::NoAuth)
    );
    Ok(())
}

/// A session resumed on another node is taken from the node that held it: that node closes
/// its connection for the session, as a ZooKeeper server does on SessionMoved, while the
/// session lives on where it moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_session_closes_its_old_connection() -> anyhow::Result<()> {
    let _serial = serial();
    let cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let (first, second) = (cluster.zk_addr(1), cluster.zk_addr(2));
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let (mut old, session) = RawZk::connect(&first, None)?;
        anyhow::ensure!(old.ping()?, "a fresh connection answers pings");
        let (mut new, resumed) = RawZk::connect(&second, Some(&session))?;
        anyhow::ensure!(resumed.id == session.id, "the resume kept the session id");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while old.ping()? {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the old connection still answers 15 s after its session moved"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // The session itself is fine where it went, well past several keepalive rounds.
        for _ in 0..20 {
            anyhow::ensure!(
                new.ping()?,
                "the connection the session moved to was closed"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    })
    .await??;
    Ok(())
}

/// One four-letter word to a ZooKeeper listener; the whole answer.
fn four_letter(addr: &str, word: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(word.as_bytes())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_letter_words_answer_as_zookeepers_do() -> anyhow::Result<()> {
    let _serial = serial();
    let cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let addr = cluster.zk_addr(1);
    assert_eq!(four_letter(&addr, "ruok")?, "imok");
    assert_eq!(four_letter(&addr, "isro")?, "rw");
    let srvr = four_letter(&addr, "srvr")?;
    assert!(srvr.starts_with("Zookeeper version: 3.8.0"), "{srvr}");
    assert!(
        srvr.contains("\nMode: ") && srvr.contains("\nNode count: "),
        "{srvr}"
    );
    let mntr = four_letter(&addr, "mntr")?;
    let fields: std::collections::BTreeMap<&str, &str> =
        mntr.lines().filter_map(|l| l.split_once('\t')).collect();
    for key in [
        "zk_version",
        "zk_server_state",
        "zk_znode_count",
        "zk_num_alive_connections",
    ] {
        assert!(fields.contains_key(key), "mntr lacks {key}: {mntr}");
    }
    // The harness leaves `conf` out of the whitelist.
    assert_eq!(
        four_letter(&addr, "conf")?,
        "conf is not executed because it is not in the whitelist.\n"
    );
    // The listener still speaks the protocol after all that.
    let client = connect(&addr, Duration::from_secs(10)).await?;
    assert!(client.check_stat("/").await?.is_some());
    Ok(())
}

/// kazoo's CRUD, transactions, watches and recipes (Lock, Election, Barrier, Counter, Queue,
/// Party), ACLs, a chroot, the TLS listener with a client certificate, and a reconnect after
/// its node is killed, as `tests/zk/kazoo_suite.py` runs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kazoo_and_its_recipes_work_unchanged() -> anyhow::Result<()> {
    let _serial = serial();
    let mut cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    admin.create_scope("/recipes", None).await?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("zk/kazoo_suite.py");
    // Debian's python3-kazoo is installed for the system interpreter.
    let run = |phase: &str, hosts: String| {
        Command::new("/usr/bin/python3")
            .arg(&script)
            .args([phase, &hosts])
            .output()
    };
    let out = run("main", cluster.zk_hosts(&[1, 2, 3]))?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    anyhow::ensure!(
        out.status.success(),
        "kazoo suite failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Over the TLS listener the client certificate is the x509 identity.
    let tls_hosts: Vec<String> = cluster
        .zk_tls_ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let out = Command::new("/usr/bin/python3")
        .arg(&script)
        .args(["tls", &tls_hosts.join(","), &cluster.zk_hosts(&[1, 2, 3])])
        .arg(cluster.dir.path().join("certs"))
        .output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    anyhow::ensure!(
        out.status.success(),
        "kazoo over TLS failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A kazoo client holding an ephemeral through node 1, which is then killed: the script
    // reconnects through node 2 and finds its session and ephemeral intact.
    let mut holder = Command::new("/usr/bin/python3")
        .arg(&script)
        .args(["hold", &cluster.zk_hosts(&[1, 2])])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    // The script prints "holding" once its ephemeral exists.
    let stdout = holder.stdout.take().expect("piped");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let first = lines.next().transpose()?.unwrap_or_default();
    anyhow::ensure!(first.starts_with("holding"), "kazoo holder said {first:?}");
    cluster.kill9(1);
    let status = holder.wait()?;
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    println!("{}", rest.join("\n"));
    let mut stderr = String::new();
    if let Some(mut e) = holder.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut stderr)?;
    }
    anyhow::ensure!(
        status.success(),
        "the kazoo holder failed: {rest:?}\n{stderr}"
    );
    Ok(())
}

/// Debian's zkCli.sh (ZooKeeper 3.8's Java client) and cli_mt (its C client's shell) create,
/// read and list through a node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zkcli_and_cli_mt_smoke() -> anyhow::Result<()> {
    let _serial = serial();
    let cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let zkcli = "/usr/share/zookeeper/bin/zkCli.sh";
    anyhow::ensure!(
        std::path::Path::new(zkcli).exists(),
        "{zkcli} is missing: install Debian's zookeeper package (.ci/run does)"
    );
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new(zkcli)
            .args(["-server", &cluster.zk_hosts(&[2])])
            .args(args)
            .output()?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    };
    let created = run(&["create", "/zkcli", "hello"])?;
    assert!(created.contains("Created /zkcli"), "{created}");
    let got = run(&["get", "/zkcli"])?;
    assert!(got.lines().any(|l| l.trim() == "hello"), "{got}");
    let listed = run(&["ls", "/"])?;
    assert!(listed.contains("zkcli"), "{listed}");
    let stat = run(&["stat", "/zkcli"])?;
    assert!(stat.contains("dataLength = 5"), "{stat}");

    let cli_mt = "/usr/lib/zookeeper/bin/cli_mt";
    anyhow::ensure!(
        std::path::Path::new(cli_mt).exists(),
        "{cli_mt} is missing: install Debian's zookeeper-bin package (.ci/run does)"
    );
    let mut shell = Command::new(cli_mt)
        .arg(cluster.zk_hosts(&[3]))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        let mut stdin = shell.stdin.take().expect("piped");
        // The C client works asynchronously: one command at a time, each given a moment.
        for line in ["create /climt", "get /climt", "ls /", "quit"] {
            std::thread::sleep(Duration::from_secs(1));
            writeln!(stdin, "{line}")?;
        }
    }
    let out = shell.wait_with_output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("[/climt]: rc = 0"), "create: {said}");
    assert!(said.contains("/climt: rc = 0"), "get: {said}");
    assert!(
        said.contains("\tclimt") && said.contains("\tzkcli"),
        "ls: {said}"
    );
    Ok(())
}

/// With `zk_reads = "sequential"` (ZooKeeper's own read guarantee), a read is answered by the
/// connected node's replica, yet still sees everything its session has seen: its own writes,
/// anything causally before what it read (across scopes), never an older state, and after
/// `sync` the newest writes of others. The native client's `Reads::Sequential` likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_reads_see_what_their_session_has_seen() -> anyhow::Result<()> {
    const ROUNDS: u32 = 150;
    let _serial = serial();
    let cluster = Cluster::start_with(3, "zk_reads = \"sequential\"\n")?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let admin = cluster.admin_client().await?;
    admin.create_scope("/other", None).await?;
    let writer = connect(&cluster.zk_hosts(&[1]), Duration::from_secs(10)).await?;
    let reader = connect(&cluster.zk_hosts(&[3]), Duration::from_secs(10)).await?;
    let native = cluster
        .client_of(2)
        .await?
        .with_reads(scopekeeper_client::Reads::Sequential);
    for p in ["/x", "/other/y", "/z", "/mine", "/native"] {
        writer.create(p, b"0", &open()).await?;
    }
    let value = |d: &[u8]| -> anyhow::Result<u32> { Ok(std::str::from_utf8(d)?.parse()?) };
    let mut last_y = 0;
    for i in 1..=ROUNDS {
        // Another session writes /x, then /other/y in another scope.
        writer
            .set_data("/x", i.to_string().as_bytes(), None)
            .await?;
        writer
            .set_data("/other/y", i.to_string().as_bytes(), None)
            .await?;
        // Never older than before; and /x was written before the /other/y the reader saw.
        let y = value(&reader.get_data("/other/y").await?.0)?;
        anyhow::ensure!(
            y >= last_y,
            "round {i}: /other/y went back from {last_y} to {y}"
        );
        last_y = y;
        let x = value(&reader.get_data("/x").await?.0)?;
        anyhow::ensure!(x >= y, "round {i}: saw /other/y = {y} but then /x = {x}");
        // The session's own write, at once.
        reader
            .set_data("/mine", i.to_string().as_bytes(), None)
            .await?;
        let mine = value(&reader.get_data("/mine").await?.0)?;
        anyhow::ensure!(
            mine == i,
            "round {i}: the reader's own write read back as {mine}"
        );
        // sync, then the newest write of another session.
        writer
            .set_data("/z", i.to_string().as_bytes(), None)
            .await?;
        reader.sync("/z").await?;
        let z = value(&reader.get_data("/z").await?.0)?;
        anyhow::ensure!(z == i, "round {i}: after sync, /z read {z}");
        // The native client's sequential reads on node 2.
        native.set("/native", i.to_string().as_bytes(), -1).await?;
        let seen = value(&native.get("/native").await?.0)?;
        anyhow::ensure!(
            seen == i,
            "round {i}: the native client's own write read {seen}"
        );
    }
    // A read that finds nothing still reveals the state it was read at, so that a later
    // read elsewhere is not older.
    let fresh = cluster
        .client_of(3)
        .await?
        .with_reads(scopekeeper_client::Reads::Sequential);
    assert_eq!(fresh.exists("/missing").await?, None);
    anyhow::ensure!(
        fresh.last_zxid() > 0,
        "a sequential exists that found nothing revealed no zxid"
    );
    Ok(())
}

/// ZooKeeper's timeliness: a server without a leader stops serving. A node whose scope's
/// leader is gone answers no sequential read from its own replica, though that replica has
/// everything its client saw; it waits for a leader and fails when none comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_its_leader_answers_no_sequential_read() -> anyhow::Result<()> {
    let _serial = serial();
    let mut cluster = Cluster::start(3)?;
    cluster.settle(&[1, 2, 3], SETTLE).await?;
    let leader = cluster.wait_for_leader(&[1, 2, 3], SETTLE).await?;
    let alone = if leader == 3 { 2 } else { 3 };
    let reader = cluster
        .client_of(alone)
        .await?
        .with_reads(scopekeeper_client::Reads::Sequential);
    // Written by the reader itself: a sequential read sees what its own client has seen, not
    // yet what another client wrote a moment ago (that race once failed this test).
    reader
        .create("/t", b"1", scopekeeper_client::CreateMode::Persistent)
        .await?;
    assert_eq!(reader.get("/t").await?.0, b"1");
    for id in (1..=3).filter(|id| *id != alone) {
        cluster.kill9(id);
    }
    // Past the time after which a silent leader counts as gone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let read = tokio::time::timeout(Duration::from_secs(90), reader.get("/t")).await?;
    anyhow::ensure!(
        read.is_err(),
        "node {alone} answered a sequential read with no leader: {read:?}"
    );
    Ok(())
}
