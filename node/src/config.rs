//! A node's configuration file (`scopekeeper serve --config node.toml`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The session secret's file name in a certificates directory.
pub const SESSION_SECRET_FILE: &str = "session.secret";

/// Highest node id: session ids keep it in their top 15 bits (and never in ZooKeeper's
/// container or TTL owner patterns).
pub const NODE_ID_MAX: u64 = 0x7eff;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id: unique in the cluster and never reused for an empty data directory.
    pub id: u64,
    /// The cluster's name; node identities are `node-<id>.<cluster>`.
    pub cluster: String,
    /// UDP address of the QUIC endpoint (peers and native clients).
    pub listen: SocketAddr,
    /// TCP address of the ZooKeeper-compatible listener (ZooKeeper's clients use 2181); none
    /// if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zk_listen: Option<SocketAddr>,
    /// TCP address of the ZooKeeper listener with TLS (ZooKeeper's `secureClientPort`): the
    /// node's certificate, and clients must present one issued by the cluster CA, which is
    /// their `x509` identity. None if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zk_tls_listen: Option<SocketAddr>,
    /// The four-letter words the ZooKeeper listener answers (`ruok`, `srvr`, `stat`, `mntr`,
    /// `isro`, `conf`; `*` for all), as ZooKeeper's `4lw.commands.whitelist`. Default: `srvr`,
    /// as 3.8's.
    #[serde(default = "default_four_letter_words")]
    pub zk_four_letter_words: Vec<String>,
    /// ZooKeeper's `superDigest`: `user:base64(sha1(user:password))`. A ZooKeeper client that
    /// authenticates with that digest acts as the cluster's admin and passes every ACL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zk_super_digest: Option<String>,
    /// How fresh ZooKeeper clients' reads are: `linearizable` (default: every read sees every
    /// write acknowledged before it) or `sequential` (ZooKeeper's own guarantee, and its speed:
    /// a read sees what its session has seen, answered by this node's replica without asking
    /// the scope's leader; `sync` first to see other clients' newest writes). Reads that leave
    /// a watch are linearizable either way.
    #[serde(default)]
    pub zk_reads: scopekeeper_client::Reads,
    /// Where the node keeps its database and snapshots.
    pub data_dir: PathBuf,
    pub tls: TlsFiles,
    /// This node's labels, e.g. `zone = "a"`: what scope policies place anchors and judge
    /// quorums by.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Every member of the cluster, this node included.
    #[serde(default)]
    pub peers: Vec<PeerAddress>,
    #[serde(default)]
    pub raft: RaftTuning,
    /// The cluster's session secret (hex), the same on every node: session passwords are
    /// HMACs under it. Default: `session.secret` beside the CA certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_secret: Option<PathBuf>,
}

fn default_four_letter_words() -> Vec<String> {
    vec!["srvr".into()]
}

/// Log compaction thresholds; the defaults suit production, tests lower them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTuning {
    /// Log entries since the last snapshot that trigger a new one.
    pub snapshot_every_entries: u64,
    /// Log entries kept behind a snapshot for followers that lag a little.
    pub log_kept_behind_snapshot: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            snapshot_every_entries: crate::limits::SNAPSHOT_EVERY_ENTRIES,
            log_kept_behind_snapshot: crate::limits::LOG_KEPT_BEHIND_SNAPSHOT,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerAddress {
    pub id: u64,
    /// `host:port` of the peer's QUIC endpoint.
    pub addr: String,
    /// The peer's labels, as its own configuration gives them; the bootstrapping node records
    /// them in the root scope's membership.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl NodeConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: NodeConfig =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        // Relative paths are relative to the config file, so a config directory can be moved.
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.data_dir,
            &mut config.tls.ca,
            &mut config.tls.cert,
            &mut config.tls.key,
        ]
        .into_iter()
        .chain(config.session_secret.as_mut())
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Where the session secret is read from.
    pub fn session_secret_path(&self) -> PathBuf {
        self.session_secret.clone().unwrap_or_else(|| {
            self.tls
                .ca
                .parent()
                .unwrap_or(Path::new("."))
                .join(SESSION_SECRET_FILE)
        })
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.id == 0 || self.id > NODE_ID_MAX {
            bail!(
                "node id {} is outside 1..={NODE_ID_MAX}: session ids carry it in 15 bits",
                self.id
            );
        }
        if self.cluster.is_empty()
            || !self
                .cluster
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            bail!(
                "cluster name {:?} must be ASCII letters, digits and '-'",
                self.cluster
            );
        }
        let mut ids: Vec<u64> = self.peers.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            bail!("peers list the same id twice");
        }
        if self.raft.log_kept_behind_snapshot >= self.raft.snapshot_every_entries {
            bail!("raft.log_kept_behind_snapshot must be below raft.snapshot_every_entries");
        }
        if !self.peers.is_empty() && !ids.contains(&self.id) {
            bail!("peers must include this node (id {})", self.id);
        }
        if let Some(me) = self.peers.iter().find(|p| p.id == self.id)
            && !me.labels.is_empty()
            && me.labels != self.labels
        {
            bail!(
                "this node's labels {:?} differ from its entry in peers ({:?}); make them agree",
                self.labels,
                me.labels
            );
        }
        Ok(())
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let text = toml::to_string_pretty(self).context("encoding node config")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}
