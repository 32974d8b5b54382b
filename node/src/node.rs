//! A node's life: check its data directory, bind its endpoint, open its scopes, serve.
//!
//! Start-up refuses what would silently lose acknowledged writes: a data directory whose raft
//! state is missing or corrupt, a fresh directory without an explicit `--bootstrap` or `--join`,
//! and a `--join` under an id the cluster's leader has already replicated to.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use openraft::BasicNode;
use openraft::async_runtime::WatchReceiver;
use scopekeeper_transport::{Alpn, Credentials, Endpoint, EndpointKeys, Pool};
use tokio::sync::OnceCell;

use crate::config::NodeConfig;
use crate::identity_file::{self, Membership};
use crate::peer::{NodeStatus, PeerRequest, PeerResponse, Peers};
use crate::policy::engine::PolicyEngine;
use crate::scope::Scope;
use crate::scope::log_store::ScopeLog;
use crate::storage::{ROOT_SCOPE, Store};

/// How a node treats an empty data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartMode {
    /// The directory must hold this node's data already.
    Existing,
    /// Create a new cluster whose voters are the configured peers.
    Bootstrap,
    /// Start empty and wait to be replicated to by the cluster's leader.
    Join,
}

/// Whether a fresh node asks its peers before joining or bootstrapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerProbe {
    Ask,
    Skip,
}

pub struct NodeInner {
    pub config: NodeConfig,
    pub endpoint: Endpoint,
    pub peers: Arc<Peers>,
    pub store: Store,
    /// The root scope, once open. Peers may reach the node before it is.
    pub root: OnceCell<Scope>,
    /// One deterministic policy engine and component cache for every scope on the node.
    pub policy_engine: PolicyEngine,
}

#[derive(Clone)]
pub struct Node(pub Arc<NodeInner>);

impl Node {
    pub async fn start(config: NodeConfig, mode: StartMode) -> anyhow::Result<Node> {
        Self::start_checked(config, mode, PeerProbe::Ask).await
    }

    /// As [`Node::start`]; `PeerProbe::Skip` is for an orchestrator that has just created every
    /// member's directory itself (`scopekeeper dev`), where there is nobody to ask yet.
    pub async fn start_checked(
        config: NodeConfig,
        mode: StartMode,
        probe: PeerProbe,
    ) -> anyhow::Result<Node> {
        config.validate()?;
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let marker = identity_file::read(&data_dir)?;
        let store = Store::open(&data_dir)?;
        let has_state = ScopeLog::new(store.clone(), ROOT_SCOPE)
            .has_state()
            .with_context(|| format!("reading raft state in {}", data_dir.display()))?;
        let fresh = match (&marker, has_state) {
            (Some(m), true) => {
                identity_file::check(m, &config.cluster, config.id, &data_dir)?;
                false
            }
            (Some(m), false) => bail!(
                "{} says this is node {} of cluster {:?}, but its raft log and vote are gone. Rejoining \
                 under the same id with an empty log could lose acknowledged writes. Remove node {} from \
                 the cluster and join with a new id and an empty data directory",
                data_dir.display(),
                m.id,
                m.cluster,
                m.id
            ),
            (None, true) => bail!(
                "{} holds raft state but no member.toml; it was not created by this node or is damaged. \
                 Restore it from a backup or start with an empty directory and a new id",
                data_dir.display()
            ),
            (None, false) if mode == StartMode::Existing => bail!(
                "{} holds no data. To create a new cluster start with --bootstrap; to join a running \
                 cluster as a new member start with --join",
                data_dir.display()
            ),
            (None, false) => true,
        };

        let creds = Credentials::load(&config.tls.cert, &config.tls.key, &config.tls.ca)
            .context("loading the node's TLS credentials")?;
        let keys = EndpointKeys::load_or_create(&data_dir.join("endpoint.keys"))?;
        let endpoint = Endpoint::bind(config.listen, &creds, &keys, &config.cluster, true)?;
        let peers = Arc::new(Peers::new(
            Pool::new(endpoint.clone(), Alpn::Peer),
            &config.cluster,
        ));
        let node = Node(Arc::new(NodeInner {
            config: config.clone(),
            endpoint,
            peers,
            store: store.clone(),
            root: OnceCell::new(),
            policy_engine: PolicyEngine::new()?,
        }));
        tokio::spawn(crate::service::accept_loop(node.clone()));

        if fresh && probe == PeerProbe::Ask {
            node.check_fresh_start(mode).await?;
        }
        let root = Scope::open(
            ROOT_SCOPE,
            config.id,
            store,
            node.0.peers.clone(),
            &config.cluster,
            &config.raft,
            node.0.policy_engine.clone(),
        )
        .await?;
        if fresh && mode == StartMode::Bootstrap {
            let voters: BTreeMap<u64, BasicNode> = config
                .peers
                .iter()
                .map(|p| (p.id, BasicNode::new(p.addr.clone())))
                .collect();
            let voters = if voters.is_empty() {
                BTreeMap::from([(config.id, BasicNode::new(config.listen.to_string()))])
            } else {
                voters
            };
            root.initialize(voters).await?;
        }
        if fresh {
            identity_file::write(
                &data_dir,
                &Membership {
                    cluster: config.cluster.clone(),
                    id: config.id,
                },
            )?;
        }
        if node.0.root.set(root).is_err() {
            bail!("root scope opened twice");
        }
        tracing::info!(id = config.id, cluster = %config.cluster, listen = %config.listen, "node started");
        Ok(node)
    }

    /// Asks every peer, concurrently, what it knows before an empty directory becomes a member.
    async fn check_fresh_start(&self, mode: StartMode) -> anyhow::Result<()> {
        let config = &self.0.config;
        let asks = config
            .peers
            .iter()
            .filter(|p| p.id != config.id)
            .map(|peer| async move {
                let request = PeerRequest::Status { from: config.id };
                let answer = tokio::time::timeout(
                    Duration::from_secs(3),
                    self.0.peers.call(peer.id, &peer.addr, &request),
                )
                .await;
                match answer {
                    Ok(Ok(PeerResponse::Status(s))) => Some((peer.id, s)),
                    // An unreachable peer cannot vouch either way; the check is best effort.
                    _ => None,
                }
            });
        let answers: Vec<(u64, NodeStatus)> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        for (peer, status) in answers {
            if mode == StartMode::Bootstrap && status.initialized {
                bail!(
                    "node {peer} already belongs to cluster {:?} (voters {:?}); refusing to bootstrap a second \
                     cluster. To replace this node's lost data, remove node {} and join with a new id",
                    status.cluster,
                    status.voters,
                    config.id
                );
            }
            if let Some(acked) = status.acked_by_asker.filter(|&i| i > 0) {
                bail!(
                    "the leader, node {peer}, has replicated the log up to index {acked} to node {}, but this \
                     data directory is empty: its log is gone. Remove node {} from the cluster and join with a \
                     new id",
                    config.id,
                    config.id
                );
            }
        }
        Ok(())
    }

    /// Whether `id` may speak the peer protocol to us: a configured peer or a member of the
    /// root scope (voter or learner).
    pub fn knows_peer(&self, id: u64) -> bool {
        if self.0.config.peers.iter().any(|p| p.id == id) {
            return true;
        }
        self.root().is_some_and(|root| {
            let metrics = root.raft.metrics();
            let m = metrics.borrow_watched();
            m.membership_config.membership().get_node(&id).is_some()
        })
    }

    pub fn id(&self) -> u64 {
        self.0.config.id
    }

    /// The root scope; `None` only during start-up.
    pub fn root(&self) -> Option<&Scope> {
        self.0.root.get()
    }

    /// Stops raft and closes every connection.
    pub async fn shutdown(&self) {
        if let Some(root) = self.0.root.get()
            && let Err(e) = root.raft.shutdown().await
        {
            tracing::warn!("raft shutdown: {e}");
        }
        self.0.endpoint.close();
        if let Err(e) = self.0.store.sync_now() {
            tracing::warn!("final sync: {e}");
        }
    }
}
