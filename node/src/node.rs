//! A node's life: check its data directory, bind its endpoint, open its scopes, serve.
//!
//! Start-up refuses what would silently lose acknowledged writes: a data directory whose raft
//! state is missing or corrupt, a fresh directory without an explicit `--bootstrap` or `--join`,
//! and a `--join` under an id the cluster's leader has already replicated to.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};
use scopekeeper_transport::{Alpn, Credentials, Endpoint, EndpointKeys, Pool};
use tokio::sync::{OnceCell, mpsc};

use crate::config::NodeConfig;
use crate::directory::{Anchor, Directory, Route, ScopeIdentity};
use crate::identity_file::{self, Membership};
use crate::peer::{NodeStatus, PeerRequest, PeerResponse, Peers};
use crate::policy::engine::PolicyEngine;
use crate::scope::log_store::ScopeLog;
use crate::scope::state_machine::{ScopeEvent, stored_scope_ids};
use crate::scope::tenure::Tenure;
use crate::scope::types::AnchorNode;
use crate::scope::{Scope, ScopeHost};
use crate::storage::{ROOT_SCOPE, ScopeId, Store};

/// The sm_meta key (after the scope id) of a moved scope's last known route.
const MOVED: &[u8] = b"moved";

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
    /// What every scope on this node shares (storage, peers, the policy engine, events).
    pub host: ScopeHost,
    /// The scopes this node replicates, by id. The root scope is there once start-up opened
    /// it; peers may reach the node before.
    scopes: RwLock<BTreeMap<ScopeId, Arc<Scope>>>,
    /// Which scope governs which path, as far as this node knows.
    directory: RwLock<Directory>,
    /// Set once start-up has opened every stored scope.
    started: OnceCell<()>,
    /// Held while a scope is opened or re-opened, so the same scope is never opened twice.
    opening: tokio::sync::Mutex<()>,
    /// Sessions of clients connected here, and the clocks of session scopes led here.
    pub sessions: crate::sessions::Sessions,
    /// Watches of the sessions connected here, and the scope feeds they hear from.
    pub watches: crate::watches::Watches,
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
        // Any scope's: a node that joined later may anchor scopes but not the root.
        let has_state = ScopeLog::any_state(&store)
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
        let secret = crate::sessions::load_secret(&config.session_secret_path())?;
        let keys = EndpointKeys::load_or_create(&data_dir.join("endpoint.keys"))?;
        let endpoint = Endpoint::bind(config.listen, &creds, &keys, &config.cluster, true)?;
        let peers = Arc::new(Peers::new(
            Pool::new(endpoint.clone(), Alpn::Peer),
            &config.cluster,
        ));
        let (events, event_queue) = mpsc::unbounded_channel();
        let host = ScopeHost {
            node_id: config.id,
            store: store.clone(),
            peers: peers.clone(),
            cluster: config.cluster.clone(),
            tuning: config.raft.clone(),
            engine: PolicyEngine::new()?,
            events,
            newborns: Default::default(),
        };
        let root_anchors = config
            .peers
            .iter()
            .map(|p| Anchor {
                node: p.id,
                addr: p.addr.clone(),
            })
            .collect();
        let node = Node(Arc::new(NodeInner {
            config: config.clone(),
            endpoint,
            peers,
            store: store.clone(),
            host,
            scopes: RwLock::new(BTreeMap::new()),
            directory: RwLock::new(Directory::new(root_anchors)),
            started: OnceCell::new(),
            opening: tokio::sync::Mutex::new(()),
            sessions: crate::sessions::Sessions::new(config.id, secret),
            watches: Default::default(),
        }));
        tokio::spawn(crate::service::accept_loop(node.clone()));
        if let Some(addr) = config.zk_listen {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("binding the ZooKeeper listener to {addr} (zk_listen); is the port taken?")
            })?;
            tokio::spawn(crate::zk::accept_loop(node.clone(), listener, None));
        }
        if let Some(addr) = config.zk_tls_listen {
            let tls = scopekeeper_transport::tls::tcp_server_config(&creds)
                .context("the ZooKeeper TLS listener (zk_tls_listen)")?;
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("binding the ZooKeeper TLS listener to {addr} (zk_tls_listen); is the port taken?")
            })?;
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            tokio::spawn(crate::zk::accept_loop(
                node.clone(),
                listener,
                Some(acceptor),
            ));
        }

        if fresh && probe == PeerProbe::Ask {
            node.check_fresh_start(mode).await?;
        }
        let root = Scope::open(&node.0.host, ROOT_SCOPE, ScopeIdentity::default(), None).await?;
        if fresh && mode == StartMode::Bootstrap {
            let voters: BTreeMap<u64, AnchorNode> = config
                .peers
                .iter()
                .map(|p| {
                    (
                        p.id,
                        AnchorNode::new(p.id, p.addr.clone(), p.labels.clone()),
                    )
                })
                .collect();
            let voters = if voters.is_empty() {
                let me =
                    AnchorNode::new(config.id, config.listen.to_string(), config.labels.clone());
                BTreeMap::from([(config.id, me)])
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
        node.insert_scope(Arc::new(root));
        let stored = stored_scope_ids(&store)
            .with_context(|| format!("listing the scopes stored in {}", data_dir.display()))?;
        for id in stored.into_iter().filter(|&id| id != ROOT_SCOPE) {
            node.open_scope(id, ScopeIdentity::default(), None).await?;
        }
        node.learn_moved_routes()?;
        node.retire_absorbed().await?;
        node.replicate_delegated_scopes().await?;
        let _ = node.0.started.set(());
        tokio::spawn(node.clone().follow_scope_events(event_queue));
        tokio::spawn(crate::liveness::run(node.clone()));
        tokio::spawn(crate::placement::run(node.clone()));
        tokio::spawn(crate::split::run(node.clone()));
        tokio::spawn(crate::sessions::run(node.clone()));
        tokio::spawn(crate::reaper::run(node.clone()));
        tokio::spawn(crate::sessions::create_session_scopes(node.clone()));
        tracing::info!(id = config.id, cluster = %config.cluster, listen = %config.listen, "node started");
        Ok(node)
    }

    fn insert_scope(&self, scope: Arc<Scope>) {
        self.learn_routes_of(&scope);
        self.0
            .scopes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(scope.id, scope);
    }

    /// Opens a scope stored here (or an empty replica of it) unless it is open already.
    async fn open_scope(
        &self,
        id: ScopeId,
        fresh: ScopeIdentity,
        replica: Option<u64>,
    ) -> anyhow::Result<Arc<Scope>> {
        let _opening = self.0.opening.lock().await;
        self.open_scope_locked(id, fresh, replica).await
    }

    /// [`Node::open_scope`], for a caller holding the `opening` lock.
    async fn open_scope_locked(
        &self,
        id: ScopeId,
        fresh: ScopeIdentity,
        replica: Option<u64>,
    ) -> anyhow::Result<Arc<Scope>> {
        if let Some(open) = self.scope(id) {
            return Ok(open);
        }
        let scope = Arc::new(Scope::open(&self.0.host, id, fresh, replica).await?);
        self.insert_scope(scope.clone());
        tracing::info!(scope = id, root = %scope.view().read().identity.root, "scope open");
        Ok(scope)
    }

    /// The directory learns a local scope's own route and its delegations.
    fn learn_routes_of(&self, scope: &Scope) {
        let (own, children): (Option<Route>, Vec<Route>) = {
            let state = scope.view().read();
            let own = state.last_applied.is_some().then(|| state.route());
            (own, state.delegations.values().cloned().collect())
        };
        let mut directory = self.0.directory.write().unwrap_or_else(|e| e.into_inner());
        for route in own.into_iter().chain(children) {
            directory.learn(route);
        }
    }

    /// Opens an empty replica of every child scope that names this node as an anchor but is
    /// not stored here (this node learnt of the delegation from a snapshot, not from the log):
    /// the child's leader then sends it a snapshot.
    async fn replicate_delegated_scopes(&self) -> anyhow::Result<()> {
        let wanted: Vec<(Route, ScopeId)> = self
            .scopes()
            .iter()
            .flat_map(|parent| {
                let state = parent.view().read();
                state
                    .delegations
                    .values()
                    .filter(|r| r.anchors.iter().any(|a| a.node == self.id()))
                    .map(|r| (r.clone(), parent.id))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (route, parent) in wanted {
            // A scope this node held and left has moved on; the parent's record is older.
            let moved = self
                .0
                .store
                .sm_meta
                .contains_key(crate::storage::key(route.scope, MOVED))
                .context("reading moved-scope routes")?;
            if self.scope(route.scope).is_none() && !moved {
                let fresh = ScopeIdentity {
                    id: route.scope,
                    root: route.root.clone(),
                    parent: Some(parent),
                    epoch: route.epoch,
                };
                self.open_scope(route.scope, fresh, None).await?;
            }
        }
        Ok(())
    }

    /// The scope a leader's raft message for `replica` is meant for: open already, or opened
    /// now as an empty replica because the leader is adding this node to the scope. An empty
    /// replica opened under another id (a joining node's root scope) is opened again under the
    /// leader's; a replica with any raft state never changes id.
    pub async fn scope_for_replica(
        &self,
        id: ScopeId,
        replica: u64,
        joining: bool,
    ) -> Result<Arc<Scope>, String> {
        if !self.is_started() {
            return Err(format!("node {} is still starting", self.id()));
        }
        if let Some(open) = self.scope(id).filter(|s| s.replica == replica) {
            return Ok(open);
        }
        // A first member of the scope gets its state from applying the scope's creation here;
        // opening an empty replica first would race with it.
        if !joining && self.scope(id).is_none() {
            return Err(format!(
                "node {} has not applied the creation of scope {id} yet; retry",
                self.id()
            ));
        }
        let _opening = self.0.opening.lock().await;
        let fail = |e: anyhow::Error| format!("opening scope {id} as replica {replica}: {e:#}");
        if let Some(open) = self.scope(id) {
            if open.replica == replica {
                return Ok(open);
            }
            let empty = !ScopeLog::new(self.0.store.clone(), id, Tenure::begin())
                .has_state()
                .map_err(|e| fail(e.into()))?
                && !open.is_initialized();
            if !empty {
                return Err(format!(
                    "node {} holds replica {} of scope {id}, not {replica}",
                    self.id(),
                    open.replica
                ));
            }
            tracing::info!(
                scope = id,
                from = open.replica,
                to = replica,
                "empty replica takes the id its leader gave it"
            );
            self.close_scope(&open).await;
            ScopeLog::new(self.0.store.clone(), id, Tenure::begin())
                .set_replica(replica)
                .map_err(|e| fail(e.into()))?;
        }
        let fresh = ScopeIdentity {
            id,
            root: "/".into(),
            parent: None,
            epoch: 0,
        };
        self.open_scope_locked(id, fresh, Some(replica))
            .await
            .map_err(fail)
    }

    /// Stops a scope's raft and forgets it (its storage stays).
    async fn close_scope(&self, scope: &Scope) {
        self.0
            .scopes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&scope.id);
        if let Err(e) = scope.raft.shutdown().await {
            tracing::warn!(scope = scope.id, "raft shutdown: {e}");
        }
        // Raft's state-machine worker may still run what was queued to it: after this it
        // writes nothing, so the caller may delete the replica's rows.
        scope.end_tenure();
    }

    /// The scope's leader says replica `replica` of `scope` was removed: retire it if this
    /// node holds exactly that replica (ids are never reused, so an older notice cannot
    /// remove a newer replica). Returns whether it did.
    pub async fn retire_removed(
        &self,
        scope: ScopeId,
        replica: u64,
        route: Route,
    ) -> anyhow::Result<bool> {
        let Some(s) = self.scope(scope).filter(|s| s.replica == replica) else {
            return Ok(false);
        };
        self.retire_to(&s, route).await?;
        Ok(true)
    }

    /// After applying the membership change that removed this node's replica: stop it and
    /// delete its data. Raft no longer counts on it; keeping it would only let it campaign.
    async fn retire(&self, scope: &Arc<Scope>) -> anyhow::Result<()> {
        let route = scope.view().read().route();
        self.retire_to(scope, route).await
    }

    /// Retires every replica here of a scope that its parent (replicated here: the scope it was
    /// split from, or one split from that which took the delegation along) has taken back by a
    /// merge: the scope is no more.
    async fn retire_absorbed(&self) -> anyhow::Result<()> {
        let scopes = self.scopes();
        let absorbed: std::collections::BTreeSet<ScopeId> = scopes
            .iter()
            .flat_map(|s| s.view().read().absorbed.iter().copied().collect::<Vec<_>>())
            .collect();
        {
            // Also the routes of merged scopes this node never replicated.
            let mut directory = self.0.directory.write().unwrap_or_else(|e| e.into_inner());
            for &id in &absorbed {
                directory.merged(id);
            }
        }
        let gone: Vec<Arc<Scope>> = scopes
            .into_iter()
            .filter(|s| absorbed.contains(&s.id))
            .collect();
        for s in gone {
            let root = s.view().read().identity.root.clone();
            tracing::info!(
                scope = s.id,
                root,
                "the scope merged into its parent; deleting its replica"
            );
            let _opening = self.0.opening.lock().await;
            self.close_scope(&s).await;
            self.0
                .store
                .remove_scope(s.id)
                .with_context(|| format!("deleting the merged scope {}", s.id))?;
        }
        Ok(())
    }

    /// Retires the replica, recording `route` as where the scope went.
    async fn retire_to(&self, scope: &Arc<Scope>, route: Route) -> anyhow::Result<()> {
        let id = scope.id;
        tracing::info!(
            scope = id,
            replica = scope.replica,
            "this node's replica was removed; deleting it"
        );
        self.learn_route(route.clone());
        // Its rows may still hold those of a child being born here, or be on their way in.
        self.0.host.newborns.until_children_born(id).await;
        self.0.host.newborns.until_born(id).await;
        let _opening = self.0.opening.lock().await;
        self.close_scope(scope).await;
        // An apply queued to raft before the close may have created a child since.
        self.0.host.newborns.until_children_born(id).await;
        self.0
            .store
            .remove_scope(id)
            .with_context(|| format!("deleting the removed replica of scope {id}"))?;
        // Where the scope went, for routing after a restart: the parent's delegation record
        // still names the anchors the scope was created on.
        let tombstone = crate::storage::encode("route of a moved scope", &route)?;
        self.0
            .store
            .sm_meta
            .insert(crate::storage::key(id, MOVED), tombstone)
            .with_context(|| format!("recording where scope {id} moved"))?;
        Ok(())
    }

    /// The routes of scopes whose replicas this node held and gave up.
    fn learn_moved_routes(&self) -> anyhow::Result<()> {
        for guard in self.0.store.sm_meta.iter() {
            let (k, v) = guard.into_inner().context("reading moved-scope routes")?;
            if k.len() == 8 + MOVED.len() && &k[8..] == MOVED {
                let route: Route = crate::storage::decode("route of a moved scope", &v)?;
                self.learn_route(route);
            }
        }
        Ok(())
    }

    /// Acts on what scopes' apply reports: opens child scopes as they are created here (the
    /// parent's leader campaigns first, so the child starts led where the parent is) and
    /// keeps the directory current.
    async fn follow_scope_events(self, mut events: mpsc::UnboundedReceiver<ScopeEvent>) {
        while let Some(event) = events.recv().await {
            let result = match event {
                ScopeEvent::Delegated { parent, child } => self.on_delegated(parent, child).await,
                ScopeEvent::Absorbed { parent, .. } => {
                    if let Some(p) = self.scope(parent) {
                        self.learn_routes_of(&p);
                    }
                    self.retire_absorbed().await
                }
                ScopeEvent::SnapshotInstalled { scope } => {
                    if let Some(s) = self.scope(scope) {
                        self.learn_routes_of(&s);
                    }
                    match self.retire_absorbed().await {
                        Ok(()) => self.replicate_delegated_scopes().await,
                        Err(e) => Err(e),
                    }
                }
                ScopeEvent::MembershipChanged {
                    scope,
                    ref before,
                    ref after,
                } => {
                    let Some(s) = self.scope(scope) else { continue };
                    self.learn_routes_of(&s);
                    if before.contains(&s.replica) && !after.contains(&s.replica) {
                        self.retire(&s).await
                    } else {
                        Ok(())
                    }
                }
            };
            if let Err(e) = result {
                tracing::error!("acting on {event:?}: {e:#}");
            }
        }
    }

    async fn on_delegated(&self, parent: ScopeId, child: ScopeId) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let scope = self
            .open_scope(child, ScopeIdentity::default(), None)
            .await?;
        tracing::info!(
            scope = child,
            ms = started.elapsed().as_millis() as u64,
            "opened a new scope"
        );
        if let Some(p) = self.scope(parent) {
            self.learn_routes_of(&p);
            if p.raft.is_leader() {
                tokio::spawn(lead_first(scope));
            }
        }
        Ok(())
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

    /// Whether `id` may speak the peer protocol to us: a configured peer, a registered node, or
    /// a member of a scope this node replicates (voter or learner).
    pub fn knows_peer(&self, id: u64) -> bool {
        if self.0.config.peers.iter().any(|p| p.id == id) {
            return true;
        }
        if self
            .root()
            .is_some_and(|root| root.view().read().nodes.contains_key(&id))
        {
            return true;
        }
        self.scopes().iter().any(|scope| {
            scope.metrics(|m| {
                m.membership_config
                    .membership()
                    .nodes()
                    .any(|(_, n)| n.node == id)
            })
        })
    }

    pub fn id(&self) -> u64 {
        self.0.config.id
    }

    /// The root scope; `None` only during start-up.
    pub fn root(&self) -> Option<Arc<Scope>> {
        self.scope(ROOT_SCOPE)
    }

    /// Whether start-up has opened every scope stored here.
    pub fn is_started(&self) -> bool {
        self.0.started.initialized()
    }

    pub fn scope(&self, id: ScopeId) -> Option<Arc<Scope>> {
        self.0
            .scopes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Every scope this node replicates, in id order.
    pub fn scopes(&self) -> Vec<Arc<Scope>> {
        self.0
            .scopes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The route of the scope believed to govern `path`.
    /// The route this node knows to scope `id`, if any.
    pub fn route_of(&self, id: ScopeId) -> Option<Route> {
        self.0
            .directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .routes()
            .find(|r| r.scope == id)
            .cloned()
    }

    pub fn route(&self, path: &str) -> Route {
        self.0
            .directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .resolve(path)
            .clone()
    }

    /// The routes of several paths, resolved against one state of the directory: another
    /// task may learn a route at any moment, and paths resolved one lock at a time could
    /// then land on both sides of a split that did not move any of them apart.
    pub fn routes<'p>(&self, paths: impl IntoIterator<Item = &'p str>) -> Vec<Route> {
        let directory = self.0.directory.read().unwrap_or_else(|e| e.into_inner());
        paths
            .into_iter()
            .map(|p| directory.resolve(p).clone())
            .collect()
    }

    pub fn learn_route(&self, route: Route) {
        self.0
            .directory
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .learn(route);
    }

    /// Whether `scope` is known here to have merged into its parent.
    pub fn has_merged(&self, scope: ScopeId) -> bool {
        self.0
            .directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .has_merged(scope)
    }

    pub fn forget_route(&self, root: &str) {
        self.0
            .directory
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .forget(root);
    }

    /// Stops raft and closes every connection.
    pub async fn shutdown(&self) {
        for scope in self.scopes() {
            if let Err(e) = scope.raft.shutdown().await {
                tracing::warn!(scope = scope.id, "raft shutdown: {e}");
            }
        }
        self.0.endpoint.close();
        if let Err(e) = self.0.store.sync_now() {
            tracing::warn!("final sync: {e}");
        }
    }
}

/// The parent's leader stands first in a new scope's election, and stands again at once
/// while the other anchors are still opening their replicas (they refuse votes for a scope they
/// do not have yet), rather than after an election timeout: a split's child is unavailable
/// until it has a leader.
async fn lead_first(scope: Arc<Scope>) {
    for _ in 0..crate::limits::FIRST_ELECTION_ATTEMPTS {
        if scope.leader().is_some() {
            return;
        }
        // No pre-vote: nobody leads the new group yet, and going first is the point.
        if scope.raft.trigger().elect(false).await.is_err() {
            return;
        }
        tokio::time::sleep(crate::limits::FIRST_ELECTION_RETRY).await;
    }
}
