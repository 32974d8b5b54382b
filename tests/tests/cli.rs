//! The `scopekeeper` command line as a user runs it: `dev` in one process, client commands in
//! others, errors on stderr with a non-zero exit, Ctrl-C, and a restart that keeps the data.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use scopekeeper_tests::{binary, serial};

fn free_base_port() -> u16 {
    // Three consecutive free UDP ports.
    loop {
        let base = 20_000 + (rand::random::<u16>() % 30_000);
        let free = (0..3).all(|i| std::net::UdpSocket::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return base;
        }
    }
}

fn free_zk_base_port() -> u16 {
    // Three consecutive free TCP ports for the ZooKeeper listeners.
    loop {
        let base = 20_000 + (rand::random::<u16>() % 30_000);
        let free = (0..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return base;
        }
    }
}

fn start_dev(data: &Path, config: &Path, base_port: u16) -> anyhow::Result<Child> {
    let mut child = Command::new(binary())
        .args(["dev", "--data"])
        .arg(data)
        .args(["--base-port", &base_port.to_string()])
        .args(["--zk-base-port", &free_zk_base_port().to_string()])
        .env("SCOPEKEEPER_CONFIG", config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.contains("ready in") => return Ok(child),
            Ok(_) => {}
            Err(_) if Instant::now() > deadline => {
                anyhow::bail!("scopekeeper dev did not become ready")
            }
            Err(_) => {
                if let Some(status) = child.try_wait()? {
                    anyhow::bail!("scopekeeper dev exited early: {status}");
                }
            }
        }
    }
}

fn sk(config: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env("SCOPEKEEPER_CONFIG", config)
        .env_remove("SCOPEKEEPER_ENDPOINTS")
        .output()
        .expect("running scopekeeper")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn interrupt(child: &mut Child) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -INT failed");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::ensure!(status.success(), "dev exited with {status} on Ctrl-C");
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "dev did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn dev_cluster_and_client_commands() -> anyhow::Result<()> {
    let _serial = serial();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("dev");
    let config = dir.path().join("client.toml");
    let base = free_base_port();
    let mut dev = start_dev(&data, &config, base)?;

    // No flags: the context `dev` recorded is enough.
    assert_eq!(ok(&sk(&config, &["create", "/app", "hello"])), "/app\n");
    assert_eq!(ok(&sk(&config, &["get", "/app"])), "hello\n");
    assert_eq!(
        ok(&sk(&config, &["create", "/app/job-", "--sequential"])),
        "/app/job-0000000000\n"
    );
    assert_eq!(ok(&sk(&config, &["ls", "/app"])), "job-0000000000\n");
    ok(&sk(&config, &["set", "/app", "world", "--version", "0"]));
    let stat = ok(&sk(&config, &["stat", "/app"]));
    assert!(
        stat.contains("dataVersion = 1") && stat.contains("numChildren = 1"),
        "{stat}"
    );

    // Errors: stderr, ZooKeeper's name, non-zero exit; nothing changes.
    let stale = sk(&config, &["set", "/app", "again", "--version", "0"]);
    assert!(!stale.status.success());
    assert!(String::from_utf8_lossy(&stale.stderr).contains("BadVersion"));
    let missing = sk(&config, &["get", "/nope"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NoNode"));
    let bad = sk(&config, &["create", "/a//b"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("BadArguments"));
    assert_eq!(ok(&sk(&config, &["get", "/app"])), "world\n");

    // Flags override the context: a wrong endpoint list fails clearly.
    let unreachable = sk(&config, &["get", "/app", "--endpoints", "127.0.0.1:9"]);
    assert!(!unreachable.status.success());
    assert!(!unreachable.stderr.is_empty());

    // Ctrl-C stops cleanly; a second start on the same directory keeps the data.
    interrupt(&mut dev)?;
    let mut dev = start_dev(&data, &config, base)?;
    assert_eq!(ok(&sk(&config, &["get", "/app"])), "world\n");
    ok(&sk(&config, &["rm", "/app/job-0000000000"]));
    ok(&sk(&config, &["rm", "/app", "--version", "1"]));
    // As in ZooKeeper, the root lists `zookeeper` (here holding the session scopes).
    assert_eq!(ok(&sk(&config, &["ls", "/"])), "zookeeper\n");
    // `watch --recursive` prints each change below the path, then exits after --count.
    let mut watch = Command::new(binary())
        .args(["watch", "/w", "--recursive", "--count", "3"])
        .env("SCOPEKEEPER_CONFIG", &config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut armed = BufReader::new(watch.stderr.take().expect("piped")).lines();
    let said = armed.next().transpose()?.unwrap_or_default();
    assert!(said.starts_with("watching /w"), "{said}");
    ok(&sk(&config, &["create", "/w"]));
    ok(&sk(&config, &["create", "/w/x", "1"]));
    ok(&sk(&config, &["set", "/w/x", "2"]));
    ok(&sk(&config, &["rm", "/w/x"]));
    let printed = watch.wait_with_output()?;
    assert!(printed.status.success());
    let events: Vec<String> = String::from_utf8_lossy(&printed.stdout)
        .lines()
        .map(|l| {
            l.rsplit_once(' ')
                .map_or(l, |(head, _zxid)| head)
                .to_string()
        })
        .collect();
    assert_eq!(
        events,
        ["NodeCreated /w", "NodeCreated /w/x", "NodeDataChanged /w/x"]
    );
    ok(&sk(&config, &["rm", "/w"]));

    // An operator's split and merge: the subtree becomes a scope and comes back.
    ok(&sk(&config, &["create", "/s"]));
    ok(&sk(&config, &["create", "/s/kept", "data"]));
    let split = ok(&sk(&config, &["scope", "split", "/", "/s"]));
    assert!(split.starts_with("split /s off /"), "{split}");
    assert!(ok(&sk(&config, &["scope", "list"])).contains("/s "));
    let merged = ok(&sk(&config, &["scope", "merge", "/s"]));
    assert_eq!(merged, "merged /s back into its parent scope\n");
    assert!(!ok(&sk(&config, &["scope", "list"])).contains("/s "));
    assert_eq!(ok(&sk(&config, &["get", "/s/kept"])), "data\n");
    let root = sk(&config, &["scope", "merge", "/"]);
    assert!(
        String::from_utf8_lossy(&root.stderr).contains("no parent"),
        "{}",
        String::from_utf8_lossy(&root.stderr)
    );
    ok(&sk(&config, &["rm", "/s/kept"]));
    ok(&sk(&config, &["rm", "/s"]));

    let bench = ok(&sk(
        &config,
        &["bench", "--clients", "4", "--duration", "1", "--json"],
    ));
    assert!(bench.contains("\"ops_per_sec\""), "{bench}");
    let bench = ok(&sk(
        &config,
        &[
            "bench",
            "--clients",
            "2",
            "--duration",
            "1",
            "--mix",
            "session=1,watch=1",
            "--json",
        ],
    ));
    assert!(bench.contains("\"errors\":0"), "{bench}");
    interrupt(&mut dev)?;
    Ok(())
}

/// The journey of examples/team-namespaces/README.md, step by step.
#[test]
fn a_policy_authors_journey() -> anyhow::Result<()> {
    let _serial = serial();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf();
    let example = repo.join("examples/team-namespaces");
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("client.toml");
    let wasm = dir.path().join("team-namespaces.wasm");

    let built = ok(&sk(
        &config,
        &[
            "policy",
            "build",
            example.to_str().expect("utf-8"),
            "--out",
            wasm.to_str().expect("utf-8"),
        ],
    ));
    assert!(built.contains("sha256"), "{built}");
    let cases = example.join("cases.json");
    let tested = ok(&sk(
        &config,
        &[
            "policy",
            "test",
            wasm.to_str().expect("utf-8"),
            "--cases",
            cases.to_str().expect("utf-8"),
        ],
    ));
    assert_eq!(tested.matches("ok ").count(), 4, "{tested}");

    let data = dir.path().join("dev");
    let mut dev = start_dev(&data, &config, free_base_port())?;
    let deployed = ok(&sk(
        &config,
        &["policy", "deploy", "/", wasm.to_str().expect("utf-8")],
    ));
    assert!(deployed.contains("judged by it"), "{deployed}");
    let certs = data.join("certs");
    ok(&sk(
        &config,
        &[
            "certs",
            "client",
            "payments",
            "--dir",
            certs.to_str().expect("utf-8"),
        ],
    ));
    let as_payments = |args: &[&str]| {
        let mut all: Vec<String> = vec![
            "--cert".into(),
            certs.join("client-payments.pem").display().to_string(),
            "--key".into(),
            certs.join("client-payments.key").display().to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        sk(&config, &refs)
    };
    ok(&sk(&config, &["create", "/teams"]));
    ok(&as_payments(&["create", "/teams/payments"]));
    let denied = as_payments(&["create", "/teams/search"]);
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains("PolicyDenied") && stderr.contains("not-your-team"),
        "{stderr}"
    );
    let history = ok(&sk(&config, &["policy", "history", "/"]));
    assert_eq!(history.lines().count(), 1, "{history}");
    interrupt(&mut dev)?;
    Ok(())
}
