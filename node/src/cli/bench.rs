//! `scopekeeper bench`: N concurrent clients, each with its own connection, running a
//! create/set/get/session/watch mix for a fixed time; prints throughput and latency
//! percentiles. `--hold-sessions N` instead opens N sessions with an ephemeral each and holds
//! them, to measure what idle sessions cost the cluster; `--split-znodes N` times a split
//! (`bench_split`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use scopekeeper_client::proto::{ErrorCode, PolicyMode, PolicySpec};
use scopekeeper_client::{Client, ClientConfig, CreateMode};

use super::context::ConnectArgs;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Concurrent clients, each with its own QUIC connection.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Bytes per value written.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Operation mix as weights, e.g. `create=1`, `get=9,set=1`. `session` opens a session
    /// (a new connection) and closes it; `watch` arms a one-shot data watch through a second
    /// connection to another node, sets the key, and times the set until the event arrives.
    #[arg(long, default_value = "create=1")]
    pub mix: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// The system under test: `scopekeeper` (native API), `zookeeper` (any ZooKeeper-protocol
    /// server, through the Rust `zookeeper-client` crate) or `etcd` (through the `etcd-client`
    /// crate; in binaries built with `--features etcd`), so all run the same workload code.
    #[arg(long, default_value = "scopekeeper")]
    pub target: String,
    /// ZooKeeper connect string for `--target zookeeper`, e.g. `127.0.0.1:2181,127.0.0.1:2182`.
    #[arg(long, default_value = "127.0.0.1:2181")]
    pub zk_hosts: String,
    /// etcd client URLs for `--target etcd`, comma-separated.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    pub etcd_endpoints: String,
    /// Spread the clients over this many new scopes (client i writes in scope i mod N), each
    /// with its own raft group; 0 writes wherever the bench root falls. Needs the admin role.
    #[arg(long, default_value_t = 0)]
    pub scopes: usize,
    /// A policy component for the --scopes scopes (default: the parent's policy).
    #[arg(long, value_name = "FILE")]
    pub scope_policy: Option<std::path::PathBuf>,
    /// Parameters of --scope-policy; `{i}` becomes the scope's index (e.g. the stock `spread`
    /// policy's `{"offset": {i}}` tiles the scopes' anchors across the cluster).
    #[arg(long, value_name = "JSON", default_value = "")]
    pub scope_params: String,
    /// Open this many sessions, each holding one ephemeral node, hold them for --duration
    /// seconds, then close them (Scopekeeper only). Prints how fast they opened.
    #[arg(long, value_name = "N")]
    pub hold_sessions: Option<usize>,
    /// Fill a new scope with this many znodes, split half of them off while writers keep
    /// writing to both halves, and report the split's time and the writers' longest wait
    /// (Scopekeeper only; needs the admin role; use a fresh cluster).
    #[arg(long, value_name = "N")]
    pub split_znodes: Option<usize>,
    /// With --split-znodes: a control run, all the same but the split itself, so that its
    /// windows show what the machine's own noise does to the writers' longest wait.
    #[arg(long, requires = "split_znodes")]
    pub split_control: bool,
    /// The session timeout of --hold-sessions sessions, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub session_timeout: u64,
    /// Scopekeeper's read consistency: `linearizable`, or `sequential` (ZooKeeper's: a read
    /// sees what its client has seen, from the connected node's replica).
    #[arg(long, default_value = "linearizable")]
    pub reads: scopekeeper_client::Reads,
}

/// One connection to the system under test.
enum Conn {
    Scopekeeper(Box<Client>),
    ZooKeeper(zookeeper_client::Client),
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd_client::Client>),
}

#[derive(Clone)]
enum TargetSpec {
    /// The sessionless clients share the UDP socket of the first: one socket per client cost
    /// the bench a wakeup and an empty read per packet, CPU the nodes under test then lacked
    /// (bench/scaling.py's 9 capped nodes leave the bench about 0.3 of this machine's 2 cores).
    Scopekeeper(
        ClientConfig,
        scopekeeper_client::Reads,
        Arc<tokio::sync::OnceCell<Client>>,
    ),
    ZooKeeper(String),
    #[cfg(feature = "etcd")]
    Etcd(Vec<String>),
}

/// A watch armed for one event.
enum Armed {
    Scopekeeper(scopekeeper_client::Watcher),
    ZooKeeper(zookeeper_client::OneshotWatcher),
    #[cfg(feature = "etcd")]
    Etcd(etcd_client::WatchStream),
}

impl Armed {
    async fn fired(self) -> anyhow::Result<()> {
        match self {
            Armed::Scopekeeper(w) => {
                w.await
                    .map_err(|_| anyhow::anyhow!("the watch ended without an event"))?;
            }
            Armed::ZooKeeper(w) => {
                w.changed().await;
            }
            #[cfg(feature = "etcd")]
            Armed::Etcd(mut stream) => loop {
                let message = stream.message().await?;
                let message = message.context("the etcd watch ended without an event")?;
                if !message.events().is_empty() {
                    break;
                }
            },
        }
        Ok(())
    }
}

impl TargetSpec {
    /// Connection number `i`, spread round-robin over the endpoints.
    async fn connect(&self, i: usize) -> anyhow::Result<Conn> {
        self.connect_as(i, None).await
    }

    /// As `connect`, with a session of `timeout` (ZooKeeper connections always have one).
    async fn connect_as(&self, i: usize, session: Option<Duration>) -> anyhow::Result<Conn> {
        match self {
            TargetSpec::Scopekeeper(config, reads, socket) => {
                let mut config = config.clone();
                let n = config.endpoints.len();
                config.endpoints.rotate_left(i % n);
                let client = match session {
                    Some(timeout) => Client::connect_with_session(config, timeout).await?,
                    None => {
                        let first = socket.get_or_try_init(|| Client::connect(config.clone()));
                        first.await?.alongside(&config.endpoints).await?
                    }
                };
                Ok(Conn::Scopekeeper(Box::new(client.with_reads(*reads))))
            }
            TargetSpec::ZooKeeper(hosts) => {
                let mut hosts: Vec<&str> = hosts.split(',').collect();
                let n = hosts.len();
                hosts.rotate_left(i % n);
                let client = zookeeper_client::Client::connector()
                    .with_server_version(3, 8, 0)
                    .connect(&hosts.join(","))
                    .await
                    .with_context(|| format!("connecting to ZooKeeper at {}", hosts.join(",")))?;
                Ok(Conn::ZooKeeper(client))
            }
            #[cfg(feature = "etcd")]
            TargetSpec::Etcd(endpoints) => {
                let mut endpoints = endpoints.clone();
                let n = endpoints.len();
                endpoints.rotate_left(i % n);
                // One endpoint per client, as each ZooKeeper client holds one server: the
                // load spreads over the members the same way.
                let client = etcd_client::Client::connect(&endpoints[..1], None)
                    .await
                    .with_context(|| format!("connecting to etcd at {}", endpoints[0]))?;
                let _ = session;
                Ok(Conn::Etcd(Box::new(client)))
            }
        }
    }
}

impl Conn {
    async fn create(&self, path: &str, data: &[u8]) -> anyhow::Result<()> {
        match self {
            Conn::Scopekeeper(c) => c
                .create(path, data, CreateMode::Persistent)
                .await
                .map(|_| ())
                .map_err(Into::into),
            Conn::ZooKeeper(c) => {
                let options = zookeeper_client::CreateMode::Persistent
                    .with_acls(zookeeper_client::Acls::anyone_all());
                c.create(path, data, &options)
                    .await
                    .map(|_| ())
                    .map_err(Into::into)
            }
            // A create fails if the key exists, as in ZooKeeper: a transaction on the key's
            // create revision, as etcd's own recipes do it.
            #[cfg(feature = "etcd")]
            Conn::Etcd(c) => {
                use etcd_client::{Compare, CompareOp, Txn, TxnOp};
                let txn = Txn::new()
                    .when([Compare::create_revision(path, CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(path, data, None)]);
                let response = (**c).clone().txn(txn).await?;
                if !response.succeeded() {
                    bail!("{path} already exists");
                }
                Ok(())
            }
        }
    }

    async fn set(&self, path: &str, data: &[u8]) -> anyhow::Result<()> {
        match self {
            Conn::Scopekeeper(c) => c.set(path, data, -1).await.map(|_| ()).map_err(Into::into),
            Conn::ZooKeeper(c) => c
                .set_data(path, data, None)
                .await
                .map(|_| ())
                .map_err(Into::into),
            #[cfg(feature = "etcd")]
            Conn::Etcd(c) => (**c)
                .clone()
                .put(path, data, None)
                .await
                .map(|_| ())
                .map_err(Into::into),
        }
    }

    /// Makes `path` a scope of its own under `policy`; only Scopekeeper has scopes.
    ///
    /// A write whose outcome is unknown (`ConnectionLoss`, e.g. "not committed within 10s") is
    /// not a failure yet: a new scope's first entries wait for its policy to compile on every
    /// anchor, which takes seconds on a node capped to a tenth of a core. The scope is then
    /// looked up, and the create repeated only if it did not take effect.
    async fn create_scope(&self, path: &str, policy: Option<PolicySpec>) -> anyhow::Result<()> {
        let Conn::Scopekeeper(c) = self else {
            bail!("--scopes needs --target scopekeeper");
        };
        let deadline = Instant::now() + SCOPE_CREATE_WAIT;
        let mut outcome_unknown = false;
        loop {
            let error = match c.create_scope(path, policy.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let unknown = error.code() == ErrorCode::ConnectionLoss;
            if unknown {
                eprintln!("creating the scope {path}: {error}; checking whether it took effect");
                outcome_unknown = true;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            // After an unknown outcome, a refusal may just mean an earlier try took effect.
            if outcome_unknown && matches!(c.scope(path).await, Ok(info) if info.root == path) {
                return Ok(());
            }
            if !unknown || Instant::now() >= deadline {
                return Err(error)
                    .with_context(|| format!("creating the scope {path} (needs the admin role)"));
            }
        }
    }

    async fn get(&self, path: &str) -> anyhow::Result<()> {
        match self {
            Conn::Scopekeeper(c) => c.get(path).await.map(|_| ()).map_err(Into::into),
            Conn::ZooKeeper(c) => c.get_data(path).await.map(|_| ()).map_err(Into::into),
            // etcd's default read is linearizable, as Scopekeeper's.
            #[cfg(feature = "etcd")]
            Conn::Etcd(c) => {
                let response = (**c).clone().get(path, None).await?;
                if response.kvs().is_empty() {
                    bail!("{path} does not exist");
                }
                Ok(())
            }
        }
    }

    /// Reads `path` leaving a one-shot data watch.
    async fn arm(&self, path: &str) -> anyhow::Result<Armed> {
        match self {
            Conn::Scopekeeper(c) => Ok(Armed::Scopekeeper(c.get_and_watch(path).await?.2)),
            Conn::ZooKeeper(c) => Ok(Armed::ZooKeeper(c.get_and_watch_data(path).await?.2)),
            // Armed once etcd confirms the watch's creation.
            #[cfg(feature = "etcd")]
            Conn::Etcd(c) => {
                let mut stream = (**c).clone().watch(path, None).await?;
                let created = stream.message().await?;
                if !created.is_some_and(|m| m.created()) {
                    bail!("etcd did not confirm the watch on {path}");
                }
                Ok(Armed::Etcd(stream))
            }
        }
    }

    /// Ends the connection's session and waits until the server confirms.
    async fn close(self) -> anyhow::Result<()> {
        match self {
            Conn::Scopekeeper(c) => c.close().await.map_err(Into::into),
            // The crate closes the session when the last handle goes.
            Conn::ZooKeeper(c) => {
                drop(c);
                Ok(())
            }
            #[cfg(feature = "etcd")]
            Conn::Etcd(c) => {
                drop(c);
                Ok(())
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Mix {
    create: u32,
    set: u32,
    get: u32,
    session: u32,
    watch: u32,
}

impl Mix {
    fn parse(s: &str) -> anyhow::Result<Mix> {
        let mut mix = Mix {
            create: 0,
            set: 0,
            get: 0,
            session: 0,
            watch: 0,
        };
        for part in s.split(',') {
            let (op, weight) = part
                .split_once('=')
                .with_context(|| format!("mix entry {part:?} is not op=weight"))?;
            let weight: u32 = weight
                .parse()
                .with_context(|| format!("weight in {part:?}"))?;
            match op {
                "create" => mix.create = weight,
                "set" => mix.set = weight,
                "get" => mix.get = weight,
                "session" => mix.session = weight,
                "watch" => mix.watch = weight,
                other => bail!("unknown op {other:?} in --mix (create, set, get, session, watch)"),
            }
        }
        if mix.total() == 0 {
            bail!("--mix has no weight");
        }
        Ok(mix)
    }

    fn total(&self) -> u32 {
        self.create + self.set + self.get + self.session + self.watch
    }

    fn pick(&self, roll: u32) -> Op {
        let mut r = roll % self.total();
        for (weight, op) in [
            (self.create, Op::Create),
            (self.set, Op::Set),
            (self.get, Op::Get),
            (self.session, Op::Session),
        ] {
            if r < weight {
                return op;
            }
            r -= weight;
        }
        Op::Watch
    }
}

#[derive(Clone, Copy)]
enum Op {
    Create,
    Set,
    Get,
    Session,
    Watch,
}

/// The percentiles `--json` reports as the latency distribution.
const CDF_PERCENTILES: [f64; 12] = [
    1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 100.0,
];

/// Keys each client writes before the timed run, for `set` and `get`.
const KEYS_PER_CLIENT: usize = 64;

/// The session timeout of watching connections and of `session` ops.
const WATCHER_SESSION: Duration = Duration::from_secs(10);

/// How long a watch op waits for its event before counting an error.
const WATCH_EVENT_WAIT: Duration = Duration::from_secs(10);

/// Sessions opened at once by `--hold-sessions`.
const HOLD_OPENING_IN_FLIGHT: usize = 32;

/// Tries per session of `--hold-sessions`.
const HOLD_OPEN_ATTEMPTS: u64 = 5;

pub struct BenchReport {
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latencies_us: Vec<u64>,
}

impl BenchReport {
    pub fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }

    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

pub async fn run(args: BenchArgs, connect: &ConnectArgs) -> anyhow::Result<()> {
    let mix = Mix::parse(&args.mix)?;
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let target = match args.target.as_str() {
        "scopekeeper" => {
            TargetSpec::Scopekeeper(connect.resolve()?, args.reads, Default::default())
        }
        "zookeeper" => TargetSpec::ZooKeeper(args.zk_hosts.clone()),
        #[cfg(feature = "etcd")]
        "etcd" => {
            if mix.session > 0 {
                bail!("the session op is ZooKeeper's and Scopekeeper's; etcd has leases instead");
            }
            TargetSpec::Etcd(args.etcd_endpoints.split(',').map(String::from).collect())
        }
        #[cfg(not(feature = "etcd"))]
        "etcd" => bail!(
            "this scopekeeper was built without etcd support: build it with \
             `cargo build --release -p scopekeeper --features etcd` (needs protoc: \
             apt-get install protobuf-compiler)"
        ),
        other => bail!("unknown --target {other:?}: scopekeeper, zookeeper or etcd"),
    };
    if let Some(n) = args.split_znodes {
        let TargetSpec::Scopekeeper(config, _, _) = target else {
            bail!("--split-znodes measures Scopekeeper's splits: use --target scopekeeper");
        };
        return super::bench_split::run(config, n, args.value_size, args.split_control).await;
    }
    if let Some(n) = args.hold_sessions {
        return hold_sessions(
            &target,
            n,
            Duration::from_secs(args.duration),
            Duration::from_millis(args.session_timeout),
        )
        .await;
    }
    let scopes = ScopeSpec {
        count: args.scopes,
        policy: match &args.scope_policy {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("reading the scope policy {}", path.display()))?,
            ),
            None => None,
        },
        params: args.scope_params.clone(),
    };
    let report = bench(
        &target,
        args.clients,
        Duration::from_secs(args.duration),
        args.value_size,
        mix,
        &scopes,
    )
    .await?;
    let (p50, p99, p999) = (
        report.percentile(0.50),
        report.percentile(0.99),
        report.percentile(0.999),
    );
    if args.json {
        // The latency distribution, for plots: (percentile, ms) pairs.
        let cdf: Vec<String> = CDF_PERCENTILES
            .iter()
            .map(|p| format!("[{p},{:.3}]", report.percentile(p / 100.0)))
            .collect();
        println!(
            "{{\"target\":{:?},\"scopes\":{},\"clients\":{},\"mix\":{:?},\"value_size\":{},\"ops\":{},\"errors\":{},\"seconds\":{:.3},\"ops_per_sec\":{:.1},\"p50_ms\":{p50:.3},\"p99_ms\":{p99:.3},\"p999_ms\":{p999:.3},\"cdf_ms\":[{}]}}",
            args.target,
            args.scopes,
            args.clients,
            args.mix,
            args.value_size,
            report.ops,
            report.errors,
            report.elapsed.as_secs_f64(),
            report.ops_per_sec(),
            cdf.join(",")
        );
    } else {
        println!(
            "{}: {} clients, mix {}, {}-byte values, {:.1} s",
            args.target,
            args.clients,
            args.mix,
            args.value_size,
            report.elapsed.as_secs_f64()
        );
        println!(
            "ops: {} ({:.0} ops/s), errors: {}",
            report.ops,
            report.ops_per_sec(),
            report.errors
        );
        println!("latency: p50 {p50:.3} ms, p99 {p99:.3} ms, p999 {p999:.3} ms");
    }
    Ok(())
}

/// The scopes a run spreads its clients over.
struct ScopeSpec {
    count: usize,
    policy: Option<Vec<u8>>,
    /// `{i}` becomes the scope's index.
    params: String,
}

/// How long creating one of a run's scopes may take, retries included.
const SCOPE_CREATE_WAIT: Duration = Duration::from_secs(120);
/// How long a new scope's anchors must stay put before the run starts.
const PLACEMENT_STABLE: Duration = Duration::from_secs(5);
/// How long placement may take to settle in all.
const PLACEMENT_WAIT: Duration = Duration::from_secs(180);

/// Waits until every scope has a leader and its anchors have not changed for
/// `PLACEMENT_STABLE` (placement moves them after creation), then reports where they are.
async fn settle_placement(client: &Client, homes: &[String]) -> anyhow::Result<()> {
    let deadline = Instant::now() + PLACEMENT_WAIT;
    let mut last: Vec<(Vec<u64>, Option<u64>)> = Vec::new();
    let mut stable_since = Instant::now();
    loop {
        let mut now = Vec::with_capacity(homes.len());
        for home in homes {
            match client.scope(home).await {
                Ok(info) => {
                    let mut anchors = info.anchors.clone();
                    anchors.sort_unstable();
                    now.push((anchors, info.leader));
                }
                // A node busy compiling or moving anchors may not answer in time: not settled.
                Err(e) if e.code() == ErrorCode::ConnectionLoss => now.push((Vec::new(), None)),
                Err(e) => return Err(e).with_context(|| format!("looking up the scope {home}")),
            }
        }
        if now != last || now.iter().any(|(_, leader)| leader.is_none()) {
            last = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() >= PLACEMENT_STABLE {
            for (home, (anchors, leader)) in homes.iter().zip(&last) {
                eprintln!("{home}: anchors {anchors:?}, leader {leader:?}");
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the scopes' placement did not settle within {PLACEMENT_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn bench(
    target: &TargetSpec,
    clients: usize,
    duration: Duration,
    value_size: usize,
    mix: Mix,
    scope_spec: &ScopeSpec,
) -> anyhow::Result<BenchReport> {
    let scopes = scope_spec.count;
    let run_id = format!(
        "/bench-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ u128::from(rand::random::<u64>())
    );
    let setup = target.connect(0).await?;
    setup
        .create(&run_id, b"")
        .await
        .context("creating the bench root")?;
    // Each client writes under its home: the bench root, or one of the new scopes.
    let homes: Vec<String> = if scopes == 0 {
        vec![run_id.clone()]
    } else {
        (0..scopes).map(|i| format!("{run_id}/s{i}")).collect()
    };
    if scopes > 0 {
        for (i, home) in homes.iter().enumerate() {
            let policy = scope_spec.policy.as_ref().map(|component| PolicySpec {
                component: component.clone(),
                params: scope_spec.params.replace("{i}", &i.to_string()),
                mode: PolicyMode::Enforce,
            });
            setup.create_scope(home, policy).await?;
        }
        if let Conn::Scopekeeper(client) = &setup {
            settle_placement(client, &homes).await?;
        }
    }
    let homes = Arc::new(homes);
    let value = Arc::new(vec![b'x'; value_size]);
    let mut tasks = Vec::new();
    let start = Arc::new(tokio::sync::Barrier::new(clients));
    for c in 0..clients {
        let (value, start, target) = (value.clone(), start.clone(), target.clone());
        let run_id = homes[c % homes.len()].clone();
        tasks.push(tokio::spawn(async move {
            let client = target.connect(c).await?;
            let keys: Vec<String> = (0..KEYS_PER_CLIENT)
                .map(|k| format!("{run_id}/c{c}-k{k}"))
                .collect();
            if mix.set + mix.get > 0 {
                for k in &keys {
                    client.create(k, &value).await?;
                }
            }
            // Watched through a session on the next node: the event crosses nodes.
            let watched = format!("{run_id}/c{c}-w");
            let watcher = if mix.watch > 0 {
                client.create(&watched, &value).await?;
                Some(target.connect_as(c + 1, Some(WATCHER_SESSION)).await?)
            } else {
                None
            };
            start.wait().await;
            let deadline = Instant::now() + duration;
            let (mut ops, mut errors, mut seq) = (0u64, 0u64, 0u64);
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let roll = rand::random::<u32>();
                let key = &keys[(roll as usize >> 8) % keys.len()];
                let op = mix.pick(roll);
                // Arming is not timed: the figure is from the write to its event.
                let armed = match (op, &watcher) {
                    (Op::Watch, Some(w)) => match w.arm(&watched).await {
                        Ok(armed) => Some(armed),
                        Err(_) => {
                            errors += 1;
                            continue;
                        }
                    },
                    _ => None,
                };
                let began = Instant::now();
                let result = match op {
                    Op::Create => {
                        seq += 1;
                        client
                            .create(&format!("{run_id}/c{c}-n{seq}"), &value)
                            .await
                    }
                    Op::Set => client.set(key, &value).await,
                    Op::Get => client.get(key).await,
                    Op::Session => match target.connect_as(c, Some(WATCHER_SESSION)).await {
                        Ok(conn) => conn.close().await,
                        Err(e) => Err(e),
                    },
                    Op::Watch => match (client.set(&watched, &value).await, armed) {
                        (Ok(()), Some(armed)) => {
                            match tokio::time::timeout(WATCH_EVENT_WAIT, armed.fired()).await {
                                Ok(fired) => fired,
                                Err(_) => Err(anyhow::anyhow!("no watch event")),
                            }
                        }
                        (Err(e), _) => Err(e),
                        (Ok(()), None) => Err(anyhow::anyhow!("no watcher")),
                    },
                };
                latencies.push(began.elapsed().as_micros() as u64);
                match result {
                    Ok(()) => ops += 1,
                    Err(_) => errors += 1,
                }
            }
            Ok::<_, anyhow::Error>((ops, errors, latencies))
        }));
    }
    let began = Instant::now();
    let mut report = BenchReport {
        ops: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    for t in tasks {
        let (ops, errors, lat) = t.await.context("bench client panicked")??;
        report.ops += ops;
        report.errors += errors;
        report.latencies_us.extend(lat);
    }
    report.elapsed = began
        .elapsed()
        .min(duration + Duration::from_secs(5))
        .max(duration);
    report.latencies_us.sort_unstable();
    Ok(report)
}

/// `--hold-sessions N`: N sessions, one ephemeral each, opened `HOLD_OPENING_IN_FLIGHT` at a
/// time, held for `hold`, then closed. Prints the opening rate; the cluster's memory and
/// keepalive CPU are for the caller to sample meanwhile (`bench/sessions.sh` does).
async fn hold_sessions(
    target: &TargetSpec,
    n: usize,
    hold: Duration,
    timeout: Duration,
) -> anyhow::Result<()> {
    if !matches!(target, TargetSpec::Scopekeeper(..)) {
        bail!("--hold-sessions needs --target scopekeeper");
    }
    let root = format!("/hold-{}-{:x}", std::process::id(), rand::random::<u32>());
    target.connect(0).await?.create(&root, b"").await?;
    let began = Instant::now();
    let mut held = Vec::with_capacity(n);
    let mut opening = futures::stream::FuturesUnordered::new();
    let mut next = 0;
    while held.len() < n {
        while next < n && opening.len() < HOLD_OPENING_IN_FLIGHT {
            let (target, path) = (target.clone(), format!("{root}/e{next}"));
            let i = next;
            opening.push(async move {
                // A handshake can time out while the cluster is busy opening the others.
                let mut attempt = 0;
                let conn = loop {
                    attempt += 1;
                    match target.connect_as(i, Some(timeout)).await {
                        Ok(conn) => break conn,
                        Err(_) if attempt < HOLD_OPEN_ATTEMPTS => {
                            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                        }
                        Err(e) => return Err(e),
                    }
                };
                let Conn::Scopekeeper(client) = &conn else {
                    bail!("not a Scopekeeper connection");
                };
                client.create(&path, b"", CreateMode::Ephemeral).await?;
                anyhow::Ok(conn)
            });
            next += 1;
        }
        let conn = futures::StreamExt::next(&mut opening)
            .await
            .context("opening sessions")?
            .with_context(|| format!("opening session {} of {n}", held.len() + 1))?;
        held.push(conn);
    }
    let opened = began.elapsed();
    println!(
        "opened {n} sessions with an ephemeral each in {:.1} s ({:.0} sessions/s, {} at a time); holding them {} s",
        opened.as_secs_f64(),
        n as f64 / opened.as_secs_f64(),
        HOLD_OPENING_IN_FLIGHT,
        hold.as_secs()
    );
    tokio::time::sleep(hold).await;
    let closing = Instant::now();
    let closes = held.into_iter().map(Conn::close);
    let failed = futures::future::join_all(closes)
        .await
        .into_iter()
        .filter(Result::is_err)
        .count();
    println!(
        "closed them in {:.1} s ({failed} failed to confirm)",
        closing.elapsed().as_secs_f64()
    );
    Ok(())
}
