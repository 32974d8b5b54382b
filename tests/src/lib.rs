//! A harness that runs real `scopekeeper serve` processes on loopback, each with its own data
//! directory and certificate, and kills them with SIGKILL when asked.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use scopekeeper_client::proto::NodeInfo;
use scopekeeper_client::{Client, ClientConfig};
use scopekeeper_transport::{CertFiles, certs};

pub mod linearizability;
pub mod zk_raw;

/// ZooKeeper's `superDigest` every test node is configured with: `addauth digest super:test`.
pub const ZK_SUPER_DIGEST: &str = "super:D/InIHSb7yEEbrWz8b9l71RjZJU=";

pub const CLUSTER: &str = "itest";

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Held for the length of one cluster test. Each test has its own runtime, so holding it
/// across awaits blocks only other tests, which is the point.
pub struct Serial(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

/// Cluster tests run one at a time: three node processes each already share two cores.
pub fn serial() -> Serial {
    Serial(SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

/// The `scopekeeper` binary next to the test executable (`scripts/test` builds it first).
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SCOPEKEEPER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    dir.join("scopekeeper")
}

/// A port free for both TCP and UDP on loopback, from below the kernel's ephemeral range.
///
/// A port the kernel handed out for `bind(0)` and we released can be handed out again before
/// the node binds it (to another `bind(0)`, a client's QUIC endpoint, an outgoing connection),
/// and a killed node's port can be taken before its restart; the node then fails to start.
/// The kernel never hands out ports below its ephemeral range on its own, so ports counted up
/// from there are ours until a node binds them. The start is spread by process id so that two
/// test processes at once rarely probe the same ports.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let low = ephemeral_low.saturating_sub(16384).max(1024);
    let span = ephemeral_low.saturating_sub(low).max(1);
    let start = (std::process::id() * 2741) % span;
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = (low + offset) as u16;
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        let udp = UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range ({low}..{ephemeral_low})");
}

/// How a node process is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Existing,
    Bootstrap,
    Join,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub ports: Vec<u16>,
    /// Each node's ZooKeeper-protocol TCP port.
    pub zk_ports: Vec<u16>,
    /// The ZooKeeper TLS listeners (`zk_tls_listen`), one per node.
    pub zk_tls_ports: Vec<u16>,
    children: Vec<Option<Child>>,
    /// Extra TOML in every node's config, after its top-level keys and before its tables:
    /// top-level keys (`zk_reads = "sequential"`) or whole tables (`[raft]` tuning).
    pub extra_config: String,
    /// Nodes 1..=founders bootstrap the cluster; the others join it later.
    founders: usize,
    /// Each node's `zone` label, if any.
    zones: Vec<String>,
}

impl Cluster {
    /// Starts `n` nodes: node 1 bootstraps, the others join.
    pub fn start(n: usize) -> anyhow::Result<Cluster> {
        Self::start_with(n, "")
    }

    pub fn start_with(n: usize, extra_config: &str) -> anyhow::Result<Cluster> {
        Self::start_layout(n, n, &[], extra_config)
    }

    /// Starts `n` nodes of which the first `founders` form the cluster (node 1 bootstraps
    /// them as the root scope's voters) and the rest start with `--join`, to be registered
    /// with `node join`. `zones[i]` labels node i+1.
    pub fn start_layout(
        n: usize,
        founders: usize,
        zones: &[&str],
        extra_config: &str,
    ) -> anyhow::Result<Cluster> {
        let mut dir = tempfile::Builder::new().prefix("sk-cluster-").tempdir()?;
        // SK_KEEP_TEST_DIRS=1 keeps every cluster's data and logs for a post-mortem.
        dir.disable_cleanup(std::env::var_os("SK_KEEP_TEST_DIRS").is_some());
        let certs_dir = dir.path().join("certs");
        let ca = certs::generate_ca(CLUSTER)?;
        CertFiles::in_dir(&certs_dir, "ca").write(&ca)?;
        scopekeeper::sessions::write_secret(&certs_dir)?;
        for id in 1..=n as u64 {
            CertFiles::in_dir(&certs_dir, &format!("node-{id}"))
                .write(&certs::issue_node(&ca, id, CLUSTER)?)?;
        }
        CertFiles::in_dir(&certs_dir, "client-test").write(&certs::issue_client(
            &ca,
            "test",
            &[],
        )?)?;
        let admin = certs::issue_client(&ca, "operator", &["admin".to_string()])?;
        CertFiles::in_dir(&certs_dir, "client-operator").write(&admin)?;
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let zk_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let zk_tls_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut cluster = Cluster {
            dir,
            ports,
            zk_ports,
            zk_tls_ports,
            children: (0..n).map(|_| None).collect(),
            extra_config: extra_config.to_string(),
            founders,
            zones: zones.iter().map(|z| z.to_string()).collect(),
        };
        for id in 1..=n as u64 {
            cluster.write_config(id)?;
        }
        for id in 1..=n as u64 {
            cluster.spawn(id, if id == 1 { Mode::Bootstrap } else { Mode::Join })?;
        }
        Ok(cluster)
    }

    fn node_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.node_dir(id).join("data")
    }

    /// Every node's id, 1 to n.
    pub fn node_ids(&self) -> impl Iterator<Item = u64> + use<> {
        1..=self.ports.len() as u64
    }

    pub fn log_file(&self, id: u64) -> PathBuf {
        self.node_dir(id).join("node.log")
    }

    fn config_file(&self, id: u64) -> PathBuf {
        self.node_dir(id).join("node.toml")
    }

    /// The TOML labels of node `id`.
    fn labels(&self, id: u64) -> String {
        match self.zones.get(id as usize - 1) {
            Some(zone) => format!("{{ zone = \"{zone}\" }}"),
            None => "{}".into(),
        }
    }

    /// Node `id`'s ZooKeeper-protocol address.
    pub fn zk_addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.zk_ports[id as usize - 1])
    }

    /// A ZooKeeper connect string naming `ids`' listeners.
    pub fn zk_hosts(&self, ids: &[u64]) -> String {
        ids.iter()
            .map(|id| self.zk_addr(*id))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.ports[id as usize - 1])
    }

    /// Node `id`'s zone label, if the layout gave it one.
    pub fn zone(&self, id: u64) -> Option<&str> {
        self.zones.get(id as usize - 1).map(String::as_str)
    }

    fn write_config(&self, id: u64) -> anyhow::Result<()> {
        let certs = self.dir.path().join("certs");
        // Founders know each other (node 1 bootstraps them); later nodes know everyone.
        let known = if (id as usize) <= self.founders {
            self.founders
        } else {
            self.ports.len()
        };
        let mut peers = String::new();
        for (i, port) in self.ports.iter().enumerate().take(known) {
            peers.push_str(&format!(
                "[[peers]]\nid = {}\naddr = \"127.0.0.1:{port}\"\nlabels = {}\n\n",
                i + 1,
                self.labels(i as u64 + 1)
            ));
        }
        let text = format!(
            "id = {id}\ncluster = \"{CLUSTER}\"\nlisten = \"127.0.0.1:{}\"\nzk_listen = \"127.0.0.1:{}\"\n\
             zk_four_letter_words = [\"ruok\", \"srvr\", \"stat\", \"mntr\", \"isro\"]\n\
             zk_super_digest = \"{ZK_SUPER_DIGEST}\"\nzk_tls_listen = \"127.0.0.1:{}\"\n\
             data_dir = {:?}\nlabels = {}\n{}\n\
             [tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n\n{peers}\n",
            self.ports[id as usize - 1],
            self.zk_ports[id as usize - 1],
            self.zk_tls_ports[id as usize - 1],
            self.data_dir(id),
            self.labels(id),
            self.extra_config,
            certs.join("ca.pem"),
            certs.join(format!("node-{id}.pem")),
            certs.join(format!("node-{id}.key")),
        );
        std::fs::create_dir_all(self.node_dir(id))?;
        std::fs::write(self.config_file(id), text)?;
        Ok(())
    }

    /// Runs `scopekeeper serve` for node `id` and waits for its outcome: running, or exited.
    pub fn spawn(&mut self, id: u64, mode: Mode) -> anyhow::Result<()> {
        let child = self
            .command(id, mode)?
            .spawn()
            .context("starting scopekeeper")?;
        self.children[id as usize - 1] = Some(child);
        Ok(())
    }

    fn command(&self, id: u64, mode: Mode) -> anyhow::Result<Command> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file(id))?;
        let mut cmd = Command::new(binary());
        cmd.arg("serve").arg("--config").arg(self.config_file(id));
        match mode {
            Mode::Existing => {}
            Mode::Bootstrap => {
                cmd.arg("--bootstrap");
            }
            Mode::Join => {
                cmd.arg("--join");
            }
        }
        // SK_TEST_LOG overrides the nodes' log filter, e.g. `scopekeeper::sessions=debug`.
        let filter =
            std::env::var("SK_TEST_LOG").unwrap_or_else(|_| "warn,scopekeeper=info".into());
        cmd.env("SCOPEKEEPER_LOG", filter)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        Ok(cmd)
    }

    /// Starts node `id` and expects it to refuse: returns what it printed.
    pub fn start_expecting_refusal(&self, id: u64, mode: Mode) -> anyhow::Result<String> {
        let mut child = self
            .command(id, mode)?
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                let out = child.wait_with_output()?;
                if status.success() {
                    bail!("node {id} exited successfully instead of refusing");
                }
                return Ok(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("node {id} kept running instead of refusing to start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill9(&mut self, id: u64) {
        if let Some(mut child) = self.children[id as usize - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&mut self, id: u64) -> bool {
        match &mut self.children[id as usize - 1] {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn client_config(&self, ids: &[u64]) -> ClientConfig {
        let certs = self.dir.path().join("certs");
        ClientConfig {
            cluster: CLUSTER.into(),
            endpoints: ids
                .iter()
                .map(|id| format!("127.0.0.1:{}", self.ports[*id as usize - 1]))
                .collect(),
            ca: certs.join("ca.pem"),
            cert: certs.join("client-test.pem"),
            key: certs.join("client-test.key"),
        }
    }

    /// A client of every node holding the `admin` role (principal `operator`).
    pub async fn admin_client(&self) -> anyhow::Result<Client> {
        let ids: Vec<u64> = self.node_ids().collect();
        let mut config = self.client_config(&ids);
        let certs = self.dir.path().join("certs");
        config.cert = certs.join("client-operator.pem");
        config.key = certs.join("client-operator.key");
        Ok(Client::connect(config).await?)
    }

    /// Waits until every running node among `ids` has applied what the leader committed, and
    /// returns their infos.
    pub async fn settle(&self, ids: &[u64], timeout: Duration) -> anyhow::Result<Vec<NodeInfo>> {
        let leader = self.wait_for_leader(ids, timeout).await?;
        // A fresh cluster's leader creates the session scopes under /zookeeper right after
        // its election; a test that lists / must not race with that.
        let sessions_root = "/zookeeper/sessions";
        let deadline = Instant::now() + timeout;
        loop {
            let ready = match tokio::time::timeout(Duration::from_secs(2), async {
                self.client_of(leader)
                    .await?
                    .children(sessions_root)
                    .await
                    .map_err(anyhow::Error::from)
            })
            .await
            {
                Ok(Ok((children, _))) => {
                    children.len() as u64 >= scopekeeper::tree::session::SESSION_SCOPES
                }
                _ => false,
            };
            if ready {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the session scopes under {sessions_root} were not created within {timeout:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let committed = self.info(leader).await?.committed_index;
        let mut infos = Vec::new();
        for &id in ids {
            infos.push(self.wait_for_applied(id, committed, timeout).await?);
        }
        Ok(infos)
    }

    /// A client of exactly one node.
    pub async fn client_of(&self, id: u64) -> anyhow::Result<Client> {
        Ok(Client::connect(self.client_config(&[id])).await?)
    }

    /// A client of every node, failing over between them.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let ids: Vec<u64> = self.node_ids().collect();
        Ok(Client::connect(self.client_config(&ids)).await?)
    }

    pub async fn info(&self, id: u64) -> anyhow::Result<NodeInfo> {
        Ok(self.client_of(id).await?.node_info().await?)
    }

    /// Waits until some running node reports a leader among the given ones; returns its id.
    pub async fn wait_for_leader(&self, among: &[u64], timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            for &id in among {
                if let Ok(Ok(info)) =
                    tokio::time::timeout(Duration::from_secs(2), self.info(id)).await
                    && let Some(leader) = info.leader
                    && among.contains(&leader)
                {
                    return Ok(leader);
                }
            }
            if Instant::now() > deadline {
                // Where each node is stuck first: a CI run shows a failure's first lines.
                let stacks: String = among.iter().map(|&id| self.thread_stacks(id)).collect();
                let tails: Vec<String> = among
                    .iter()
                    .map(|&id| format!("---- node {id} ----\n{}", self.log_tail(id, 30)))
                    .collect();
                bail!(
                    "no leader among {among:?} within {timeout:?}\n{stacks}the end of their \
                     logs:\n{}",
                    tails.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last `lines` lines of node `id`'s log, for an error that a CI run shows.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_file(id)).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Where every thread of node `id` is, from gdb when the machine has it: for a node that
    /// stopped answering, the rest of a post-mortem. One line per frame, without generic
    /// arguments or addresses, so that it fits the part of a failure that a CI run shows.
    pub fn thread_stacks(&self, id: u64) -> String {
        let Some(pid) = self
            .children
            .get(id as usize - 1)
            .and_then(Option::as_ref)
            .map(Child::id)
        else {
            return String::new();
        };
        let dump = Command::new("gdb")
            .args([
                "-p",
                &pid.to_string(),
                "-batch",
                "-ex",
                "thread apply all bt 12",
            ])
            .stdin(Stdio::null())
            .output();
        let Ok(dump) = dump else {
            return format!("(no gdb here for node {id}'s threads)\n");
        };
        let frames: Vec<String> = std::str::from_utf8(&dump.stdout)
            .unwrap_or_default()
            .lines()
            .filter_map(compact_frame)
            .take(200)
            .collect();
        format!("node {id}'s threads (gdb):\n{}\n", frames.join("\n"))
    }

    /// Waits until node `id` has applied at least `index`.
    pub async fn wait_for_applied(
        &self,
        id: u64,
        index: u64,
        timeout: Duration,
    ) -> anyhow::Result<NodeInfo> {
        let deadline = Instant::now() + timeout;
        // Whether the node answers at all tells a frozen node from an isolated one.
        let mut last_status: String;
        loop {
            match tokio::time::timeout(Duration::from_secs(2), self.info(id)).await {
                Ok(Ok(info)) if info.applied_index >= index => return Ok(info),
                Ok(Ok(info)) => {
                    last_status = format!(
                        "answered: applied {}, committed {}, leader {:?}, term {}",
                        info.applied_index, info.committed_index, info.leader, info.term
                    )
                }
                Ok(Err(e)) => last_status = format!("failed: {e:#}"),
                Err(_) => last_status = "no answer within 2s".to_string(),
            }
            if Instant::now() > deadline {
                // The other nodes' view (a leader that cannot replicate to `id` says why)
                // is half of a post-mortem that a CI run keeps no directory for; it shows a
                // failure's first lines, so where the node is stuck comes first.
                let others: String = self
                    .node_ids()
                    .filter(|&other| other != id)
                    .map(|other| {
                        format!(
                            "\nthe end of node {other}'s log:\n{}",
                            self.log_tail(other, 8)
                        )
                    })
                    .collect();
                bail!(
                    "node {id} did not apply index {index} within {timeout:?} (its status: \
                     {last_status})\n{}the end of its log:\n{}{others}",
                    self.thread_stacks(id),
                    self.log_tail(id, 40),
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One gdb backtrace line made short: a thread's name, or a frame's function and source line.
fn compact_frame(line: &str) -> Option<String> {
    if let Some(rest) = line.strip_prefix("Thread ") {
        let name = rest.split('"').nth(1).unwrap_or(rest);
        return Some(format!("-- {name}"));
    }
    // "#3  0x00.. in f () at x.rs:1", or without address and "in" for an inlined frame.
    let frame = line.strip_prefix('#')?;
    let frame = frame
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .trim_start();
    let body = match frame.strip_prefix("0x") {
        Some(_) => frame.split_once(" in ").map_or(frame, |(_, f)| f),
        None => frame,
    };
    let (function, place) = match body.rsplit_once(" at ") {
        Some((f, at)) => (f, at.rsplit('/').next().unwrap_or(at)),
        None => (body, ""),
    };
    // Generic arguments and closure environments are most of a Rust frame's length.
    let mut name = String::new();
    let mut depth = 0usize;
    for c in function.chars() {
        match c {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            '(' if depth == 0 => break,
            _ if depth == 0 => name.push(c),
            _ => {}
        }
    }
    let name = name.trim();
    let name = name
        .rsplit_once("::h")
        .map_or(name, |(n, hash)| if hash.len() == 16 { n } else { name });
    Some(format!("   {name} {place}").trim_end().to_string())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A failing test shows the end of every node's log.
        if std::thread::panicking() {
            for id in self.node_ids() {
                eprintln!("---- node {id} log (last 30 lines) ----");
                eprintln!("{}", self.log_tail(id, 30));
            }
        }
    }
}

/// A real network partition between node processes on loopback: an nftables table that drops
/// every UDP datagram between the ports of `side` and the ports of `others` (QUIC is all of a
/// node's traffic, one port per node). Clients keep reaching every node: their ports are not
/// node ports. Healed when dropped. Needs root and the `nft` command (Debian `nftables`).
pub struct Partition {
    table: String,
}

impl Partition {
    pub fn new(cluster: &Cluster, side: &[u64], others: &[u64]) -> anyhow::Result<Partition> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let table = format!(
            "sk_partition_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let ports = |ids: &[u64]| {
            ids.iter()
                .map(|id| cluster.ports[*id as usize - 1].to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (a, b) = (ports(side), ports(others));
        let script = format!(
            "table inet {table} {{\n\
             \x20 chain input {{\n\
             \x20   type filter hook input priority -10; policy accept;\n\
             \x20   udp sport {{ {a} }} udp dport {{ {b} }} drop\n\
             \x20   udp sport {{ {b} }} udp dport {{ {a} }} drop\n\
             \x20 }}\n\
             }}\n"
        );
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running nft (Debian package nftables; partitions need root)")?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().context("nft's stdin")?;
            stdin.write_all(script.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft refused the partition table: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Partition { table })
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::compact_frame;

    #[test]
    fn a_gdb_frame_is_shortened_to_its_function_and_line() {
        let frame = "#5  0x000055b723a213c4 in block_on<core::pin::Pin<alloc::boxed::Box<scopekeeper::cli::run::{async_fn_env#0}, alloc::alloc::Global>>> () at /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.1/src/runtime/park.rs:380";
        assert_eq!(
            compact_frame(frame).as_deref(),
            Some("   block_on park.rs:380")
        );
        let hashed =
            "#5  0x000055b723ce6d2c in fjall::worker_pool::worker_tick::hb077260c3b927c62 ()";
        assert_eq!(
            compact_frame(hashed).as_deref(),
            Some("   fjall::worker_pool::worker_tick")
        );
        let inlined = "#1  0x000055b724c5b1db in std::sys::pal::unix::futex::futex_wait () at library/std/src/sys/pal/unix/futex.rs:73";
        assert_eq!(
            compact_frame(inlined).as_deref(),
            Some("   std::sys::pal::unix::futex::futex_wait futex.rs:73")
        );
        let no_address = "#2  std::sys::sync::condvar::futex::Condvar::wait () at library/std/src/sys/sync/condvar/futex.rs:33";
        assert_eq!(
            compact_frame(no_address).as_deref(),
            Some("   std::sys::sync::condvar::futex::Condvar::wait futex.rs:33")
        );
        let thread = "Thread 6 (Thread 0x7f68dc4466c0 (LWP 11509) \"fjall-syncer\"):";
        assert_eq!(compact_frame(thread).as_deref(), Some("-- fjall-syncer"));
        assert_eq!(compact_frame("[Inferior 1 (process 1) detached]"), None);
    }
}
