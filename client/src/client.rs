//! The native client: one QUIC connection to one node at a time, failing over to the next
//! endpoint when a node is unreachable. Reads are linearizable (the server confirms with the
//! scope's leader) unless the client asks for ZooKeeper's sequential ones ([`Client::with_reads`]);
//! writes are retried on another node only when they surely were not sent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use scopekeeper_transport::{
    Alpn, Connection, Credentials, Endpoint, EndpointKeys, limits as tlimits,
};

use crate::proto::{
    Acl, ApiError, CreateMode, ErrorCode, MultiSlot, Op, OpResult, Reads, Reply, Request, Response,
    Stat, WatchKind,
};
use crate::{limits, path};

/// Where the cluster is and how to prove who we are.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The cluster's name: servers are verified against it.
    pub cluster: String,
    /// `host:port` of the nodes' QUIC endpoints; any subset of the cluster will do.
    pub endpoints: Vec<String>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused or failed the request, with ZooKeeper's code.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A multi failed: the code of each op, as ZooKeeper reports it.
    #[error("multi failed: {}", describe_multi(.0))]
    Multi(Vec<ErrorCode>),
    /// No endpoint could be reached.
    #[error("no Scopekeeper node reachable: {0}")]
    Unreachable(String),
    #[error("client configuration: {0}")]
    Config(String),
}

fn describe_multi(codes: &[ErrorCode]) -> String {
    codes
        .iter()
        .enumerate()
        .find(|(_, c)| !matches!(c, ErrorCode::Ok | ErrorCode::RuntimeInconsistency))
        .map(|(i, c)| format!("op {i}: {c}"))
        .unwrap_or_else(|| "no op reported an error".into())
}

impl Error {
    /// ZooKeeper's code for this error; connectivity problems are `ConnectionLoss`.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Api(e) => e.code,
            Error::Multi(codes) => codes
                .iter()
                .copied()
                .find(|c| !matches!(c, ErrorCode::Ok | ErrorCode::RuntimeInconsistency))
                .unwrap_or(ErrorCode::SystemError),
            Error::Unreachable(_) => ErrorCode::ConnectionLoss,
            Error::Config(_) => ErrorCode::BadArguments,
        }
    }
}

pub struct Client {
    link: Arc<Link>,
    /// The highest zxid seen, sent with every write so zxids follow this client's order.
    last_zxid: std::sync::atomic::AtomicI64,
    reads: Reads,
}

/// The connection to the cluster, shared with the session's keepalive task.
pub(crate) struct Link {
    endpoint: Endpoint,
    cluster: String,
    addrs: Vec<SocketAddr>,
    current: AtomicUsize,
    /// Held while connecting, so one connection (and one session stream) exists at a time.
    conn: tokio::sync::Mutex<Option<(usize, Connection)>>,
    /// Set for a client with a session.
    pub(crate) session: Option<crate::session::SessionLink>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The endpoints' addresses; at least one.
async fn resolve(endpoints: &[String]) -> Result<Vec<SocketAddr>, Error> {
    if endpoints.is_empty() {
        return Err(Error::Config("no endpoints given".into()));
    }
    let mut addrs = Vec::new();
    for e in endpoints {
        let resolved = tokio::net::lookup_host(e.as_str())
            .await
            .map_err(|err| Error::Config(format!("cannot resolve endpoint {e}: {err}")))?
            .next()
            .ok_or_else(|| Error::Config(format!("endpoint {e} resolves to nothing")))?;
        addrs.push(resolved);
    }
    Ok(addrs)
}

/// How many endpoint switches one request may make before giving up.
const ATTEMPTS_PER_ENDPOINT: usize = 2;

impl Client {
    /// A client without a session: no ephemerals, nothing to keep alive.
    pub async fn connect(config: ClientConfig) -> Result<Client, Error> {
        Self::connect_inner(config, None).await
    }

    /// A client with a session of (about) `timeout`, as the node negotiates it. The session
    /// follows the client from node to node as long as it reconnects within the timeout; its
    /// ephemerals go when it is closed ([`Client::close`]) or expires.
    pub async fn connect_with_session(
        config: ClientConfig,
        timeout: Duration,
    ) -> Result<Client, Error> {
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let client =
            Self::connect_inner(config, Some(crate::session::SessionLink::new(timeout_ms))).await?;
        // Each endpoint once, as `request` fails over: a node that is down, or still starting
        // and refusing sessions, sends the client on to the next one.
        let mut last = String::new();
        for _ in 0..client.link.addrs.len() {
            match client.link.connection().await {
                Ok(_) => return Ok(client),
                Err(LinkError::Api(e)) => return Err(Error::Api(e)),
                Err(LinkError::Transport(e)) => last = e.to_string(),
            }
        }
        Err(Error::Unreachable(last))
    }

    async fn connect_inner(
        config: ClientConfig,
        session: Option<crate::session::SessionLink>,
    ) -> Result<Client, Error> {
        let addrs = resolve(&config.endpoints).await?;
        let creds = Credentials::load(&config.cert, &config.key, &config.ca)
            .map_err(|e| Error::Config(e.to_string()))?;
        let bind: SocketAddr = if addrs[0].is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        }
        .parse()
        .map_err(|_| Error::Config("bind address".into()))?;
        let endpoint = Endpoint::bind(
            bind,
            &creds,
            &EndpointKeys::generate(),
            &config.cluster,
            false,
        )
        .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Client::over(endpoint, config.cluster, addrs, session))
    }

    /// A client dialing `addrs` from `endpoint`, not yet connected.
    fn over(
        endpoint: Endpoint,
        cluster: String,
        addrs: Vec<SocketAddr>,
        session: Option<crate::session::SessionLink>,
    ) -> Client {
        Client {
            link: Arc::new(Link {
                endpoint,
                cluster,
                addrs,
                current: AtomicUsize::new(0),
                conn: tokio::sync::Mutex::new(None),
                session,
            }),
            last_zxid: std::sync::atomic::AtomicI64::new(0),
            reads: Reads::default(),
        }
    }

    /// Another client without a session, of this one's identity and cluster, that dials
    /// `endpoints` from this client's UDP socket; its connection, zxid and reads are its own.
    /// For a process that holds many clients (a load generator): one socket serves them all,
    /// so the kernel and the QUIC endpoint take in their packets in batches rather than with a
    /// wakeup and an empty read each (`scopekeeper bench`, 144 clients on 9 capped nodes:
    /// 14% less CPU per create).
    pub async fn alongside(&self, endpoints: &[String]) -> Result<Client, Error> {
        let addrs = resolve(endpoints).await?;
        let (endpoint, cluster) = (self.link.endpoint.clone(), self.link.cluster.clone());
        Ok(Client::over(endpoint, cluster, addrs, None))
    }

    /// The address of this client's UDP socket.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.link
            .endpoint
            .local_addr()
            .map_err(|e| Error::Config(e.to_string()))
    }

    /// The client with reads of `reads` consistency (linearizable unless told).
    pub fn with_reads(mut self, reads: Reads) -> Client {
        self.reads = reads;
        self
    }

    /// Sends a `GetData`, `Exists` or `GetChildren` as this client's read consistency asks.
    async fn read(&self, read: Request) -> Result<Reply, Error> {
        let request = self.reads.request(read, self.last_zxid());
        match self.request(&request).await? {
            Reply::AtZxid { reply, zxid } => {
                // The state it was read at is seen, whatever the read found there.
                self.saw_zxid(zxid);
                Ok((*reply)?)
            }
            other => Ok(other),
        }
    }

    /// The session's id, once one was granted.
    pub fn session_id(&self) -> Option<i64> {
        self.link.session.as_ref().and_then(|s| s.id())
    }

    /// The session's state as it changes: connected (to which node), disconnected, expired,
    /// closed.
    pub fn session_state(
        &self,
    ) -> Option<tokio::sync::watch::Receiver<crate::session::SessionState>> {
        self.link.session.as_ref().map(|s| s.state.subscribe())
    }

    /// Ends the session: its ephemerals go, in every scope. The client can still make
    /// sessionless requests after.
    pub async fn close(&self) -> Result<(), Error> {
        match &self.link.session {
            Some(s) => s.close().await,
            None => Ok(()),
        }
    }

    /// Reads `path` and leaves a one-shot watch of `kind` (Data, Exist or Child); returns the
    /// read's reply and the watcher.
    async fn watch_once(
        &self,
        path: &str,
        kind: WatchKind,
    ) -> Result<(Reply, crate::watches::Watcher), Error> {
        path::validate(path, false)?;
        let session = self.session_link()?;
        let (id, watcher) = lock(&session.watches).add_once(path, kind);
        match self.arm(path, kind).await {
            Ok(reply) => Ok((reply, watcher)),
            Err(e) => {
                lock(&session.watches).cancel(path, kind, id);
                Err(e)
            }
        }
    }

    /// Sends a `Watch` request; on success the watch is remembered for re-arming.
    async fn arm(&self, path: &str, kind: WatchKind) -> Result<Reply, Error> {
        let session = self.session_link()?;
        let request = Request::Watch {
            path: path.into(),
            kind,
        };
        match self.request(&request).await? {
            Reply::Watched { reply, zxid } => {
                // An exists watch on a node that exists is a data watch, re-armed as one.
                let ask = match (&*reply, kind) {
                    (Reply::Exists(Some(_)), WatchKind::Exist) => WatchKind::Data,
                    _ => kind,
                };
                self.saw_zxid(zxid);
                lock(&session.watches).armed_at(path, kind, ask, zxid);
                Ok(*reply)
            }
            other => Err(unexpected(other)),
        }
    }

    fn session_link(&self) -> Result<&crate::session::SessionLink, Error> {
        self.link.session.as_ref().ok_or_else(|| {
            Error::Api(ApiError::new(
                ErrorCode::BadArguments,
                "watches need a session: connect with Client::connect_with_session",
            ))
        })
    }

    /// getData with a one-shot watch: fires on a data change or deletion.
    pub async fn get_and_watch(
        &self,
        path: &str,
    ) -> Result<(Vec<u8>, Stat, crate::watches::Watcher), Error> {
        match self.watch_once(path, WatchKind::Data).await? {
            (Reply::Data { data, stat }, w) => Ok((data, stat, w)),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// exists with a one-shot watch: fires on creation, data change or deletion.
    pub async fn exists_and_watch(
        &self,
        path: &str,
    ) -> Result<(Option<Stat>, crate::watches::Watcher), Error> {
        match self.watch_once(path, WatchKind::Exist).await? {
            (Reply::Exists(stat), w) => Ok((stat, w)),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// getChildren with a one-shot watch: fires when a child is added or removed, or the
    /// node is deleted.
    pub async fn children_and_watch(
        &self,
        path: &str,
    ) -> Result<(Vec<String>, Stat, crate::watches::Watcher), Error> {
        match self.watch_once(path, WatchKind::Child).await? {
            (Reply::Children { children, stat }, w) => Ok((children, stat, w)),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// A persistent watch on `path` (ZooKeeper's addWatch): every change to the node and,
    /// if `recursive`, every creation, data change and deletion below it, until removed.
    pub async fn add_watch(
        &self,
        path: &str,
        recursive: bool,
    ) -> Result<crate::watches::WatchStream, Error> {
        path::validate(path, false)?;
        let kind = if recursive {
            WatchKind::PersistentRecursive
        } else {
            WatchKind::Persistent
        };
        let session = self.session_link()?;
        let (id, stream) = lock(&session.watches).add_every(path, kind);
        match self.arm(path, kind).await {
            Ok(_) => Ok(stream),
            Err(e) => {
                lock(&session.watches).cancel(path, kind, id);
                Err(e)
            }
        }
    }

    /// Removes this session's watches on `path` of `kind` (every kind if `None`);
    /// `NoWatcher` if there were none.
    pub async fn remove_watches(&self, path: &str, kind: Option<WatchKind>) -> Result<(), Error> {
        let session = self.session_link()?;
        lock(&session.watches).remove(path, kind);
        let request = Request::RemoveWatches {
            path: path.into(),
            kind,
        };
        match self.request(&request).await? {
            Reply::Synced => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Sends one request, failing over between endpoints where that is safe.
    pub async fn request(&self, request: &Request) -> Result<Reply, Error> {
        let link = &self.link;
        let idempotent = !request.is_write();
        let mut last = String::new();
        for _ in 0..link.addrs.len() * ATTEMPTS_PER_ENDPOINT {
            let (i, conn) = match link.connection().await {
                Ok(c) => c,
                Err(LinkError::Api(e)) => return Err(Error::Api(e)),
                Err(LinkError::Transport(e)) => {
                    last = e.to_string();
                    continue;
                }
            };
            match link.call(&conn, request).await {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(e)) if e.code == ErrorCode::ConnectionLoss && idempotent => {
                    last = e.to_string();
                    link.fail_over(i).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(Err(e)) => return Err(Error::Api(e)),
                Err(e) if idempotent => {
                    last = e.to_string();
                    link.fail_over(i).await;
                }
                Err(e) => {
                    // The write may or may not have been applied: report, as ZooKeeper does.
                    link.fail_over(i).await;
                    return Err(Error::Api(ApiError::new(
                        ErrorCode::ConnectionLoss,
                        format!(
                            "connection lost during a write; it may or may not have been applied: {e}"
                        ),
                    )));
                }
            }
        }
        Err(Error::Unreachable(last))
    }

    async fn write(&self, op: Op) -> Result<OpResult, Error> {
        check_op(&op)?;
        let after_zxid = self.last_zxid();
        match self.request(&Request::Write { op, after_zxid }).await? {
            Reply::Write { result, zxid } => {
                self.saw_zxid(zxid);
                Ok(result)
            }
            other => Err(unexpected(other)),
        }
    }

    /// The highest zxid this client has seen: of its writes, and of the Stats it has read.
    /// Its next write gets a higher one, whichever scope it goes to.
    pub fn last_zxid(&self) -> i64 {
        self.last_zxid.load(std::sync::atomic::Ordering::Acquire)
    }

    fn saw_zxid(&self, zxid: i64) {
        self.last_zxid
            .fetch_max(zxid, std::sync::atomic::Ordering::AcqRel);
    }

    fn saw_stat(&self, stat: &Stat) {
        self.saw_zxid(stat.czxid.max(stat.mzxid).max(stat.pzxid));
    }

    /// Creates a node; returns its path (with the sequence suffix, if sequential) and Stat.
    pub async fn create(
        &self,
        path: &str,
        data: &[u8],
        mode: CreateMode,
    ) -> Result<(String, Stat), Error> {
        self.create_with_acl(path, data, mode, Vec::new()).await
    }

    /// Creates a node with `acl` (empty: the open ACL, `world:anyone` with every permission).
    pub async fn create_with_acl(
        &self,
        path: &str,
        data: &[u8],
        mode: CreateMode,
        acl: Vec<Acl>,
    ) -> Result<(String, Stat), Error> {
        let op = Op::Create {
            path: path.into(),
            data: data.to_vec(),
            mode,
            acl,
        };
        match self.write(op).await? {
            OpResult::Created { path, stat } => Ok((path, stat)),
            other => Err(unexpected(other)),
        }
    }

    /// A node's ACL and Stat. Needs READ or ADMIN permission there.
    pub async fn acl(&self, path: &str) -> Result<(Vec<Acl>, Stat), Error> {
        path::validate(path, false)?;
        match self.request(&Request::GetAcl { path: path.into() }).await? {
            Reply::Acl { acl, stat } => {
                self.saw_stat(&stat);
                Ok((acl, stat))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Replaces a node's ACL if its `aversion` is `version` (`-1`: any). Needs ADMIN there.
    pub async fn set_acl(&self, path: &str, acl: Vec<Acl>, version: i32) -> Result<Stat, Error> {
        let op = Op::SetAcl {
            path: path.into(),
            acl,
            version,
        };
        match self.write(op).await? {
            OpResult::AclSet { stat } => Ok(stat),
            other => Err(unexpected(other)),
        }
    }

    pub async fn set(&self, path: &str, data: &[u8], version: i32) -> Result<Stat, Error> {
        let op = Op::SetData {
            path: path.into(),
            data: data.to_vec(),
            version,
        };
        match self.write(op).await? {
            OpResult::Set { stat } => Ok(stat),
            other => Err(unexpected(other)),
        }
    }

    pub async fn delete(&self, path: &str, version: i32) -> Result<(), Error> {
        match self
            .write(Op::Delete {
                path: path.into(),
                version,
            })
            .await?
        {
            OpResult::Deleted => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub async fn get(&self, path: &str) -> Result<(Vec<u8>, Stat), Error> {
        path::validate(path, false)?;
        match self.read(Request::GetData { path: path.into() }).await? {
            Reply::Data { data, stat } => {
                self.saw_stat(&stat);
                Ok((data, stat))
            }
            other => Err(unexpected(other)),
        }
    }

    pub async fn exists(&self, path: &str) -> Result<Option<Stat>, Error> {
        path::validate(path, false)?;
        match self.read(Request::Exists { path: path.into() }).await? {
            Reply::Exists(stat) => {
                if let Some(s) = &stat {
                    self.saw_stat(s);
                }
                Ok(stat)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Child names, sorted, and the parent's Stat.
    pub async fn children(&self, path: &str) -> Result<(Vec<String>, Stat), Error> {
        path::validate(path, false)?;
        match self
            .read(Request::GetChildren { path: path.into() })
            .await?
        {
            Reply::Children { children, stat } => {
                self.saw_stat(&stat);
                Ok((children, stat))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Applies all ops atomically, or none of them.
    pub async fn multi(&self, ops: Vec<Op>) -> Result<Vec<OpResult>, Error> {
        if ops.len() > limits::MULTI_OPS_MAX {
            return Err(Error::Api(ApiError::new(
                ErrorCode::BadArguments,
                format!("at most {} ops per multi", limits::MULTI_OPS_MAX),
            )));
        }
        for op in &ops {
            check_op(op)?;
        }
        let after_zxid = self.last_zxid();
        match self.request(&Request::Multi { ops, after_zxid }).await? {
            Reply::Multi { slots, zxid }
                if slots.iter().all(|s| matches!(s, MultiSlot::Done(_))) =>
            {
                self.saw_zxid(zxid);
                Ok(slots
                    .into_iter()
                    .filter_map(|s| match s {
                        MultiSlot::Done(r) => Some(r),
                        MultiSlot::Failed(_) => None,
                    })
                    .collect())
            }
            Reply::Multi { slots, .. } => Err(Error::Multi(
                slots
                    .into_iter()
                    .map(|s| match s {
                        MultiSlot::Done(_) => ErrorCode::Ok,
                        MultiSlot::Failed(c) => c,
                    })
                    .collect(),
            )),
            other => Err(unexpected(other)),
        }
    }

    /// Waits until the node serving this client has seen every write committed before the call.
    pub async fn sync(&self, path: &str) -> Result<(), Error> {
        path::validate(path, false)?;
        match self.request(&Request::Sync { path: path.into() }).await? {
            Reply::Synced => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

impl Client {
    /// Replaces the policy of the scope rooted at `scope` (needs the `admin` role). The policy
    /// is checked before commit; entries after the returned log index are judged by it.
    pub async fn set_policy(
        &self,
        scope: &str,
        component: Vec<u8>,
        params: &str,
        mode: crate::proto::PolicyMode,
    ) -> Result<crate::proto::PolicyInfo, Error> {
        let request = Request::SetPolicy {
            scope: scope.into(),
            component,
            params: params.into(),
            mode,
        };
        match self.request(&request).await? {
            Reply::Policy(Some(info)) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// The active policy of the scope rooted at `scope`, if one was deployed.
    pub async fn policy(&self, scope: &str) -> Result<Option<crate::proto::PolicyInfo>, Error> {
        match self
            .request(&Request::GetPolicy {
                scope: scope.into(),
            })
            .await?
        {
            Reply::Policy(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// Every policy deployed on the scope rooted at `scope`, oldest first.
    pub async fn policy_history(
        &self,
        scope: &str,
    ) -> Result<Vec<crate::proto::PolicyInfo>, Error> {
        match self
            .request(&Request::PolicyHistory {
                scope: scope.into(),
            })
            .await?
        {
            Reply::PolicyHistory(history) => Ok(history),
            other => Err(unexpected(other)),
        }
    }

    /// Makes the subtree at `path` a scope of its own, under `policy` or, if `None`, the
    /// policy of the scope governing `path` now. Returns the new scope's id. Needs the
    /// `admin` role; the current scope's policy must admit the delegation.
    pub async fn create_scope(
        &self,
        path: &str,
        policy: Option<crate::proto::PolicySpec>,
    ) -> Result<u64, Error> {
        path::validate(path, false)?;
        let request = Request::CreateScope {
            path: path.into(),
            policy,
        };
        match self.request(&request).await? {
            Reply::ScopeCreated(id) => Ok(id),
            other => Err(unexpected(other)),
        }
    }

    /// Merges the scope rooted exactly at `path` back into its parent (admin role). Returns
    /// once the scope is sealed; its parent takes it back a moment later.
    pub async fn merge_scope(&self, path: &str) -> Result<(), Error> {
        path::validate(path, false)?;
        match self
            .request(&Request::MergeScope { path: path.into() })
            .await?
        {
            Reply::Synced => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// The scope rooted exactly at `path`.
    pub async fn scope(&self, path: &str) -> Result<crate::proto::ScopeInfo, Error> {
        match self
            .request(&Request::ScopeInfo { path: path.into() })
            .await?
        {
            Reply::Scope(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// Every scope, parents before children, found by walking delegations from the root. A
    /// scope that merges back during the walk is left out.
    pub async fn scopes(&self) -> Result<Vec<crate::proto::ScopeInfo>, Error> {
        let mut found = Vec::new();
        let mut queue = std::collections::VecDeque::from([String::from("/")]);
        while let Some(root) = queue.pop_front() {
            let info = match self.scope(&root).await {
                Ok(info) => info,
                // Its parent listed it a moment ago; since then it merged back.
                Err(e) if root != "/" && e.code() == crate::proto::ErrorCode::NoNode => continue,
                Err(e) => return Err(e),
            };
            queue.extend(info.children.iter().map(|(p, _)| p.clone()));
            found.push(info);
        }
        Ok(found)
    }

    /// The cluster's nodes.
    pub async fn nodes(&self) -> Result<Vec<crate::proto::ClusterNode>, Error> {
        match self.request(&Request::Nodes).await? {
            Reply::Nodes(nodes) => Ok(nodes),
            other => Err(unexpected(other)),
        }
    }

    /// Registers, drains or forgets a node (needs the `admin` role).
    pub async fn change_node(&self, change: crate::proto::NodeChange) -> Result<(), Error> {
        match self.request(&Request::ChangeNode(change)).await? {
            Reply::Synced => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// What the node this client is connected to knows of itself and its raft group.
    pub async fn node_info(&self) -> Result<crate::proto::NodeInfo, Error> {
        match self.request(&Request::NodeInfo).await? {
            Reply::NodeInfo(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }
}

fn check_op(op: &Op) -> Result<(), Error> {
    let sequential = matches!(op, Op::Create { mode, .. } if mode.is_sequential());
    path::validate(op.path(), sequential)?;
    if op.data_len() > limits::ZNODE_DATA_BYTES_MAX {
        return Err(Error::Api(ApiError::new(
            ErrorCode::BadArguments,
            format!(
                "data of {} bytes exceeds the limit of {} bytes per znode",
                op.data_len(),
                limits::ZNODE_DATA_BYTES_MAX
            ),
        )));
    }
    Ok(())
}

fn unexpected(what: impl std::fmt::Debug) -> Error {
    Error::Api(ApiError::new(
        ErrorCode::MarshallingError,
        format!("unexpected reply {what:?}"),
    ))
}

type Connected = Result<(usize, Connection), LinkError>;

/// Why no connection could be had.
pub(crate) enum LinkError {
    /// The session cannot continue (expired, closed).
    Api(ApiError),
    Transport(scopekeeper_transport::Error),
}

impl Link {
    /// The current connection, or a new one to the next endpoint; with a session, a new
    /// connection first opens or resumes it on its session stream.
    ///
    /// Boxed as `Send` by hand: the session's keepalive task reconnects through here, and
    /// this spawns that task, a cycle the compiler cannot see through.
    pub(crate) fn connection(
        self: &Arc<Self>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Connected> + Send + '_>> {
        Box::pin(self.connect_now())
    }

    async fn connect_now(self: &Arc<Self>) -> Result<(usize, Connection), LinkError> {
        let mut guard = self.conn.lock().await;
        if let Some((i, c)) = guard.as_ref()
            && c.close_reason().is_none()
        {
            return Ok((*i, c.clone()));
        }
        if let Some(session) = &self.session {
            session.check_alive().map_err(LinkError::Api)?;
        }
        let i = self.current.load(Ordering::Relaxed) % self.addrs.len();
        let conn = match self
            .endpoint
            .connect(self.addrs[i], &self.cluster, Alpn::Client)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                self.current.store(i + 1, Ordering::Relaxed);
                return Err(LinkError::Transport(e));
            }
        };
        if let Some(session) = &self.session {
            match session.attach(self, &conn, i).await {
                Ok(()) => {}
                Err(LinkError::Transport(e)) => {
                    conn.close("the session stream failed");
                    self.current.store(i + 1, Ordering::Relaxed);
                    return Err(LinkError::Transport(e));
                }
                Err(e) => {
                    conn.close("the session ended");
                    return Err(e);
                }
            }
        }
        *guard = Some((i, conn.clone()));
        Ok((i, conn))
    }

    /// One request on `conn`; with a session, the reply is handed over after the watch events
    /// the node sent before it.
    async fn call(
        &self,
        conn: &Connection,
        request: &Request,
    ) -> Result<Response, scopekeeper_transport::Error> {
        match &self.session {
            None => {
                conn.call::<Request, Response>(request, tlimits::CLIENT_FRAME_BYTES_MAX)
                    .await
            }
            Some(session) => {
                let framed: crate::proto::SessionResponse =
                    conn.call(request, tlimits::CLIENT_FRAME_BYTES_MAX).await?;
                Ok(session.follow(framed).await)
            }
        }
    }

    /// Drops connection `from` (if still current) and moves on to the next endpoint.
    pub(crate) async fn fail_over(&self, from: usize) {
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_some_and(|(i, _)| *i == from) {
            if let Some((_, c)) = guard.take() {
                c.close("failing over");
            }
            self.current.store(from + 1, Ordering::Relaxed);
        }
    }
}
