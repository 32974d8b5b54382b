//! `scopekeeper dev`: a three-node cluster on loopback in one process, with its own CA, that
//! keeps its data across restarts and records how to reach it in the user's client config.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use scopekeeper_transport::{CertFiles, certs};
use serde::{Deserialize, Serialize};

use crate::config::{NodeConfig, PeerAddress, TlsFiles};
use crate::node::{Node, PeerProbe, StartMode};
use scopekeeper_client::context::{ClusterContext, UserConfig};

const CLUSTER: &str = "dev";
const NODES: u64 = 3;

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Where the cluster keeps its data (default: ~/.local/share/scopekeeper/dev).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// First QUIC port; nodes use BASE, BASE+1, BASE+2 on 127.0.0.1. Fixed at first start.
    #[arg(long, default_value_t = 7001)]
    pub base_port: u16,
    /// First ZooKeeper-protocol port; nodes listen on BASE, BASE+1, BASE+2 on 127.0.0.1
    /// (TCP). 0: no ZooKeeper listener.
    #[arg(long, default_value_t = 2181)]
    pub zk_base_port: u16,
    /// ZooKeeper clients' read consistency: `linearizable`, or `sequential` (ZooKeeper's own;
    /// see `zk_reads` in a node's configuration).
    #[arg(long, default_value = "linearizable")]
    pub zk_reads: scopekeeper_client::Reads,
}

/// What `dev` remembers about the cluster it created.
#[derive(Debug, Serialize, Deserialize)]
struct DevLayout {
    cluster: String,
    base_port: u16,
}

fn default_dir() -> anyhow::Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
        return Ok(PathBuf::from(x).join("scopekeeper").join("dev"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; pass --data DIR")?;
    Ok(PathBuf::from(home).join(".local/share/scopekeeper/dev"))
}

/// The dev cluster pretends each node is in its own zone, `a`, `b`, `c`, so zone-aware
/// policies can be tried locally.
fn dev_labels(id: u64) -> std::collections::BTreeMap<String, String> {
    let zone = char::from(b'a' + ((id - 1) % 26) as u8);
    std::collections::BTreeMap::from([("zone".to_string(), zone.to_string())])
}

fn node_config(
    dir: &Path,
    layout: &DevLayout,
    id: u64,
    zk_base_port: u16,
    zk_reads: scopekeeper_client::Reads,
) -> NodeConfig {
    let addr = |i: u64| format!("127.0.0.1:{}", u64::from(layout.base_port) + i - 1);
    let certs = dir.join("certs");
    NodeConfig {
        id,
        cluster: layout.cluster.clone(),
        listen: addr(id).parse().expect("loopback address"),
        zk_listen: (zk_base_port != 0)
            .then(|| std::net::SocketAddr::from(([127, 0, 0, 1], zk_base_port + (id - 1) as u16))),
        // dev is for trying things: every four-letter word answers.
        zk_four_letter_words: vec!["*".into()],
        zk_super_digest: None,
        zk_reads,
        zk_tls_listen: None,
        data_dir: dir.join(format!("node-{id}")),
        tls: TlsFiles {
            ca: certs.join("ca.pem"),
            cert: certs.join(format!("node-{id}.pem")),
            key: certs.join(format!("node-{id}.key")),
        },
        labels: dev_labels(id),
        peers: (1..=NODES)
            .map(|i| PeerAddress {
                id: i,
                addr: addr(i),
                labels: dev_labels(i),
            })
            .collect(),
        raft: Default::default(),
        session_secret: None,
    }
}

fn create(dir: &Path, base_port: u16) -> anyhow::Result<DevLayout> {
    let certs_dir = dir.join("certs");
    let ca = certs::generate_ca(CLUSTER)?;
    CertFiles::in_dir(&certs_dir, "ca").write(&ca)?;
    crate::sessions::write_secret(&certs_dir)?;
    for id in 1..=NODES {
        CertFiles::in_dir(&certs_dir, &format!("node-{id}"))
            .write(&certs::issue_node(&ca, id, CLUSTER)?)?;
    }
    let admin = certs::issue_client(&ca, "admin", &["admin".to_string()])?;
    CertFiles::in_dir(&certs_dir, "client-admin").write(&admin)?;
    let layout = DevLayout {
        cluster: CLUSTER.into(),
        base_port,
    };
    for id in 1..=NODES {
        node_config(dir, &layout, id, 0, Default::default())
            .write(&dir.join(format!("node-{id}.toml")))?;
    }
    std::fs::write(dir.join("dev.toml"), toml::to_string(&layout)?)?;
    Ok(layout)
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = match args.data {
        Some(d) => d,
        None => default_dir()?,
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let layout_file = dir.join("dev.toml");
    let fresh = !layout_file.exists();
    let layout = if fresh {
        create(&dir, args.base_port)?
    } else {
        let layout: DevLayout = toml::from_str(&std::fs::read_to_string(&layout_file)?)
            .with_context(|| {
                format!(
                    "{} is damaged; remove {} to start over",
                    layout_file.display(),
                    dir.display()
                )
            })?;
        if layout.base_port != args.base_port {
            eprintln!(
                "note: {} was created with --base-port {}; using it",
                dir.display(),
                layout.base_port
            );
        }
        layout
    };

    // Joiners first, so that their endpoints are up when node 1 bootstraps and campaigns.
    let start = |id: u64| {
        let mode = match (fresh, id) {
            (false, _) => StartMode::Existing,
            (true, 1) => StartMode::Bootstrap,
            (true, _) => StartMode::Join,
        };
        // dev made every directory itself just now: there is nobody to ask.
        let config = node_config(&dir, &layout, id, args.zk_base_port, args.zk_reads);
        Node::start_checked(config, mode, PeerProbe::Skip)
    };
    let mut nodes: Vec<Node> = futures::future::try_join_all((2..=NODES).map(start)).await?;
    nodes.insert(0, start(1).await?);
    wait_for_leader(&nodes).await?;

    let certs_dir = dir.join("certs");
    let endpoints: Vec<String> = nodes
        .iter()
        .map(|n| n.0.config.listen.to_string())
        .collect();
    let mut user = UserConfig::load()?;
    user.contexts.insert(
        CLUSTER.into(),
        ClusterContext {
            cluster: layout.cluster.clone(),
            endpoints: endpoints.clone(),
            ca: certs_dir.join("ca.pem"),
            cert: certs_dir.join("client-admin.pem"),
            key: certs_dir.join("client-admin.key"),
        },
    );
    user.current = Some(CLUSTER.into());
    let context_file = user.save()?;

    println!(
        "scopekeeper dev: 3 nodes of cluster {:?} ready in {} ms",
        layout.cluster,
        started.elapsed().as_millis()
    );
    println!("  data:       {}", dir.display());
    println!("  endpoints:  {} (QUIC, mutual TLS)", endpoints.join(", "));
    let zk: Vec<String> = nodes
        .iter()
        .filter_map(|n| n.0.config.zk_listen.map(|a| a.to_string()))
        .collect();
    if !zk.is_empty() {
        println!("  zookeeper:  {} (ZooKeeper 3.8 clients)", zk.join(","));
    }
    println!(
        "  client:     {} (context \"{CLUSTER}\", admin certificate)",
        context_file.display()
    );
    println!("  try:        scopekeeper create /hello world && scopekeeper get /hello");
    println!("Ctrl-C stops the cluster; starting again with the same --data keeps its data.");

    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    println!("stopping...");
    for node in &nodes {
        node.shutdown().await;
    }
    println!("stopped; data kept in {}", dir.display());
    Ok(())
}

async fn wait_for_leader(nodes: &[Node]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if nodes
            .iter()
            .filter_map(|n| n.root())
            .any(|s| s.leader().is_some())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("no leader elected within 30 s; see the log above")
}
