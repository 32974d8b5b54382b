//! The native API's types: what a client sends over `scopekeeper-client/1` and what it gets back,
//! and the operations the server's tree applies. Every type here is serialized with postcard and
//! is therefore a promise: change it only together with the ALPN version.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// ZooKeeper's 68-byte `Stat`, field for field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    /// zxid of the transaction that created the node.
    pub czxid: i64,
    /// zxid of the transaction that last changed the node's data (or created it).
    pub mzxid: i64,
    /// Leader-stamped time of creation, ms since the Unix epoch.
    pub ctime: i64,
    /// Leader-stamped time of the last data change, ms since the Unix epoch.
    pub mtime: i64,
    /// Number of data changes.
    pub version: i32,
    /// Number of child creations and deletions.
    pub cversion: i32,
    /// Number of ACL changes.
    pub aversion: i32,
    /// Session id owning an ephemeral node, 0 otherwise.
    pub ephemeral_owner: i64,
    pub data_length: i32,
    pub num_children: i32,
    /// zxid of the transaction that last added or removed a child (or created the node).
    pub pzxid: i64,
}

/// How a node is created, as in ZooKeeper 3.8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CreateMode {
    Persistent,
    PersistentSequential,
    /// Deleted when the creating session ends; cannot have children.
    Ephemeral,
    EphemeralSequential,
    /// Deleted by the scope's leader once it has had a child and has none left.
    Container,
    /// Deleted by the scope's leader when it has had no children and no data change for
    /// `ttl_ms` milliseconds.
    PersistentWithTtl {
        ttl_ms: i64,
    },
    PersistentSequentialWithTtl {
        ttl_ms: i64,
    },
}

impl CreateMode {
    pub fn is_sequential(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentSequential
                | CreateMode::EphemeralSequential
                | CreateMode::PersistentSequentialWithTtl { .. }
        )
    }

    pub fn is_ephemeral(self) -> bool {
        matches!(
            self,
            CreateMode::Ephemeral | CreateMode::EphemeralSequential
        )
    }

    /// The `ephemeralOwner` a node created this way gets, ZooKeeper's encoding: the session for
    /// ephemerals, `CONTAINER_EPHEMERAL_OWNER` for containers, `0xff << 56 | ttl` for TTL nodes.
    pub fn ephemeral_owner(self, session: i64) -> i64 {
        match self {
            CreateMode::Persistent | CreateMode::PersistentSequential => 0,
            CreateMode::Ephemeral | CreateMode::EphemeralSequential => session,
            CreateMode::Container => CONTAINER_OWNER,
            CreateMode::PersistentWithTtl { ttl_ms }
            | CreateMode::PersistentSequentialWithTtl { ttl_ms } => TTL_OWNER_MASK | ttl_ms,
        }
    }
}

/// `ephemeralOwner` of a container node (ZooKeeper's `EphemeralType.CONTAINER`).
pub const CONTAINER_OWNER: i64 = i64::MIN;
/// High byte of a TTL node's `ephemeralOwner`; the TTL is in the low 40 bits.
pub const TTL_OWNER_MASK: i64 = 0xff00_0000_0000_0000_u64 as i64;
/// Longest TTL ZooKeeper accepts (`EphemeralType.TTL.maxValue()`).
pub const TTL_MS_MAX: i64 = 0x00ff_ffff_ffff;

/// What a node's `ephemeralOwner` says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Persistent,
    Ephemeral { session: i64 },
    Container,
    Ttl { ttl_ms: i64 },
}

impl NodeKind {
    pub fn of(ephemeral_owner: i64) -> NodeKind {
        if ephemeral_owner == 0 {
            NodeKind::Persistent
        } else if ephemeral_owner == CONTAINER_OWNER {
            NodeKind::Container
        } else if ephemeral_owner & TTL_OWNER_MASK == TTL_OWNER_MASK {
            NodeKind::Ttl {
                ttl_ms: ephemeral_owner & TTL_MS_MAX,
            }
        } else {
            NodeKind::Ephemeral {
                session: ephemeral_owner,
            }
        }
    }
}

/// `-1` accepts any version, as in ZooKeeper.
pub const ANY_VERSION: i32 = -1;

/// ZooKeeper's permission bits (`ZooDefs.Perms`).
pub mod perms {
    pub const READ: i32 = 1;
    pub const WRITE: i32 = 2;
    pub const CREATE: i32 = 4;
    pub const DELETE: i32 = 8;
    pub const ADMIN: i32 = 16;
    pub const ALL: i32 = READ | WRITE | CREATE | DELETE | ADMIN;
}

/// An identity in one of ZooKeeper's schemes: `world:anyone`, `digest:user:base64(sha1)`,
/// `ip:10.0.0.0/8`, `x509:<certificate id>`, or `auth:` (in an ACL being set: every identity
/// the caller has authenticated).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Id {
    pub scheme: String,
    pub id: String,
}

impl Id {
    pub fn new(scheme: &str, id: &str) -> Id {
        Id {
            scheme: scheme.into(),
            id: id.into(),
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.scheme, self.id)
    }
}

/// One entry of a znode's ACL: what `id` may do there.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Acl {
    pub perms: i32,
    pub id: Id,
}

impl Acl {
    /// `world:anyone` with every permission (`ZooDefs.Ids.OPEN_ACL_UNSAFE`), as a list.
    pub fn open() -> Vec<Acl> {
        vec![Acl {
            perms: perms::ALL,
            id: Id::new("world", "anyone"),
        }]
    }
}

/// A mutation. `Check` only makes sense inside a multi, as in ZooKeeper.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Create {
        path: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        mode: CreateMode,
        /// The new node's ACL; empty means [`Acl::open`], what most nodes carry.
        acl: Vec<Acl>,
    },
    Delete {
        path: String,
        version: i32,
    },
    SetData {
        path: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        version: i32,
    },
    Check {
        path: String,
        version: i32,
    },
    /// Replaces a node's ACL if its `aversion` matches (`-1`: any). Not allowed in a multi,
    /// as in ZooKeeper.
    SetAcl {
        path: String,
        acl: Vec<Acl>,
        version: i32,
    },
}

impl Op {
    /// A create with the open ACL.
    pub fn create(path: impl Into<String>, data: impl Into<Vec<u8>>, mode: CreateMode) -> Op {
        Op::Create {
            path: path.into(),
            data: data.into(),
            mode,
            acl: Vec::new(),
        }
    }

    pub fn path(&self) -> &str {
        match self {
            Op::Create { path, .. }
            | Op::Delete { path, .. }
            | Op::SetData { path, .. }
            | Op::Check { path, .. }
            | Op::SetAcl { path, .. } => path,
        }
    }

    /// Bytes of payload this op carries, for size limits.
    pub fn data_len(&self) -> usize {
        match self {
            Op::Create { data, .. } | Op::SetData { data, .. } => data.len(),
            Op::Delete { .. } | Op::Check { .. } => 0,
            Op::SetAcl { acl, .. } => acl.iter().map(|a| a.id.scheme.len() + a.id.id.len()).sum(),
        }
    }
}

/// The result of one mutation that succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    Created { path: String, stat: Stat },
    Deleted,
    Set { stat: Stat },
    Checked,
    AclSet { stat: Stat },
}

/// One slot of a multi's result. When a multi fails, ZooKeeper reports `Ok` for the ops before
/// the failing one, the failure itself, and `RuntimeInconsistency` for the ops after it; we do too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MultiSlot {
    Done(OpResult),
    Failed(ErrorCode),
}

/// ZooKeeper's error codes (`KeeperException.Code`), with the same numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    Ok,
    SystemError,
    RuntimeInconsistency,
    DataInconsistency,
    ConnectionLoss,
    MarshallingError,
    Unimplemented,
    OperationTimeout,
    BadArguments,
    UnknownSession,
    ApiError,
    NoNode,
    NoAuth,
    BadVersion,
    NoChildrenForEphemerals,
    NodeExists,
    NotEmpty,
    SessionExpired,
    InvalidAcl,
    AuthFailed,
    SessionMoved,
    NotReadOnly,
    QuotaExceeded,
    Throttled,
    /// `removeWatches` found no such watch.
    NoWatcher,
    /// The scope's policy refused the mutation; the message names the policy, its code and why.
    /// Not one of ZooKeeper's: ZooKeeper clients see `NoAuth`.
    PolicyDenied,
    /// The path is not governed by the scope the request reached (the route was stale). Nodes
    /// refresh their directory and retry; it reaches a client only if the retries run out, and
    /// ZooKeeper clients then see `ConnectionLoss`, which they retry too.
    WrongScope,
}

impl ErrorCode {
    /// The number ZooKeeper puts on the wire for this code.
    pub fn zk_code(self) -> i32 {
        match self {
            ErrorCode::Ok => 0,
            ErrorCode::SystemError => -1,
            ErrorCode::RuntimeInconsistency => -2,
            ErrorCode::DataInconsistency => -3,
            ErrorCode::ConnectionLoss => -4,
            ErrorCode::MarshallingError => -5,
            ErrorCode::Unimplemented => -6,
            ErrorCode::OperationTimeout => -7,
            ErrorCode::BadArguments => -8,
            ErrorCode::UnknownSession => -12,
            ErrorCode::ApiError => -100,
            ErrorCode::NoNode => -101,
            ErrorCode::NoAuth => -102,
            ErrorCode::BadVersion => -103,
            ErrorCode::NoChildrenForEphemerals => -108,
            ErrorCode::NodeExists => -110,
            ErrorCode::NotEmpty => -111,
            ErrorCode::SessionExpired => -112,
            ErrorCode::InvalidAcl => -114,
            ErrorCode::AuthFailed => -115,
            ErrorCode::SessionMoved => -118,
            ErrorCode::NotReadOnly => -119,
            ErrorCode::QuotaExceeded => -125,
            ErrorCode::Throttled => -127,
            ErrorCode::NoWatcher => -121,
            ErrorCode::PolicyDenied => -102,
            ErrorCode::WrongScope => -4,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// An error the server reports: a ZooKeeper code and words for a person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reads {
    /// A read sees every write acknowledged to anyone before it was sent.
    #[default]
    Linearizable,
    /// ZooKeeper's guarantee: a read sees every write the client has seen (its own, and
    /// those its reads revealed, in any scope) and never an older state than an earlier read;
    /// it may miss other clients' newest writes (`sync` first to see them). The node the client
    /// is connected to answers from its own replica without asking the scope's leader.
    Sequential,
}

impl Reads {
    /// `read` (a `GetData`, `Exists` or `GetChildren`) as this consistency asks it, from a
    /// client that has seen zxid `seen`.
    pub fn request(self, read: Request, seen: i64) -> Request {
        match self {
            Reads::Linearizable => read,
            Reads::Sequential => Request::Sequential {
                seen,
                read: Box::new(read),
            },
        }
    }
}

impl std::str::FromStr for Reads {
    type Err = String;
    fn from_str(s: &str) -> Result<Reads, String> {
        match s {
            "linearizable" => Ok(Reads::Linearizable),
            "sequential" => Ok(Reads::Sequential),
            other => Err(format!(
                "unknown read consistency {other:?}: use linearizable or sequential"
            )),
        }
    }
}

/// What a native client asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// One write. `after_zxid` is the highest zxid the client has seen (0 if none): the
    /// write's zxid is higher, whatever scope it lands in, so zxids follow the client's order
    /// across scopes (DESIGN section 6).
    Write {
        op: Op,
        after_zxid: i64,
    },
    /// An atomic multi within one scope; `after_zxid` as for `Write`.
    Multi {
        ops: Vec<Op>,
        after_zxid: i64,
    },
    GetData {
        path: String,
    },
    Exists {
        path: String,
    },
    GetChildren {
        path: String,
    },
    /// Waits until the node serving the client has applied every write committed before it.
    Sync {
        path: String,
    },
    /// What the connected node knows of itself and its root scope's raft group.
    NodeInfo,
    /// Replaces the policy of the scope rooted at `scope`. Requires the `admin` role.
    SetPolicy {
        scope: String,
        #[serde(with = "serde_bytes")]
        component: Vec<u8>,
        params: String,
        mode: PolicyMode,
    },
    /// The active policy of the scope rooted at `scope`.
    GetPolicy {
        scope: String,
    },
    /// Every policy change of the scope, oldest first.
    PolicyHistory {
        scope: String,
    },
    /// Makes the subtree at `path` a scope of its own (creating the znode if missing), on the
    /// anchors of the scope governing it now, under `policy` or, if `None`, that scope's
    /// policy. Requires the `admin` role and the parent policy's consent.
    CreateScope {
        path: String,
        policy: Option<PolicySpec>,
    },
    /// The scope rooted exactly at `path`.
    ScopeInfo {
        path: String,
    },
    /// The cluster's nodes, as the root scope records them.
    Nodes,
    /// Registers, drains or forgets a node. Requires the `admin` role.
    ChangeNode(NodeChange),
    /// Opens a session, or resumes one (`resume`: its id and password) within its timeout.
    /// The stream it arrives on stays open as the session's stream: the client sends
    /// [`SessionFrame`]s on it, the node answers and pushes [`ServerFrame`]s. Every other
    /// stream of the same connection acts for the session.
    Connect {
        resume: Option<SessionCredentials>,
        timeout_ms: i32,
    },
    /// Session bookkeeping between nodes; refused unless the principal has the `node` role.
    Session(SessionRequest),
    /// Reads `path` as `kind` says (getData, exists, getChildren; exists for persistent
    /// watches) and leaves a watch there for this connection's session. Answered with
    /// `Reply::Watched`: the read's reply and the zxid the watch was armed at.
    Watch {
        path: String,
        kind: WatchKind,
    },
    /// How many znodes lie below `path` in the scope serving it, and the roots of the child
    /// scopes below it, whose znodes that scope does not count (ZooKeeper's
    /// getAllChildrenNumber, one scope at a time).
    Descendants {
        path: String,
    },
    /// The ephemerals of this connection's session in the scope rooted at `root` whose paths
    /// start with `prefix` (ZooKeeper's getEphemerals, one scope at a time).
    Ephemerals {
        root: String,
        prefix: String,
    },
    /// A node's ACL and Stat (ZooKeeper's getACL: needs READ or ADMIN there; without ADMIN
    /// the hashes of digest identities read as `x`).
    GetAcl {
        path: String,
    },
    /// Removes this session's watches on `path` of `kind` (any kind if `None`).
    RemoveWatches {
        path: String,
        kind: Option<WatchKind>,
    },
    /// Re-arms watches after the session moved to this node: each fires at once if its node
    /// changed after the zxid it was armed at, as ZooKeeper's `SetWatches` does.
    SetWatches {
        watches: Vec<ArmedWatch>,
    },
    /// Between nodes: the request, answered with `Reply::AtZxid`, the serving scope's last
    /// zxid when it was served.
    AtZxid(Box<Request>),
    /// A `GetData`, `Exists` or `GetChildren` with ZooKeeper's consistency
    /// ([`Reads::Sequential`]): a node that replicates the scope answers from its replica at
    /// once if the replica has applied zxid `seen` (the highest the client has seen), else
    /// after a linearizable read index. A node that must forward it sends it linearizable.
    /// Answered with `Reply::AtZxid`: the read's response and the zxid of the state it was
    /// read at, which the client has seen from then on (a `NoNode` reveals no Stat, but a
    /// later read elsewhere must not show the node again); a read that could not be made (no
    /// leader to catch up from) fails outright.
    Sequential {
        seen: i64,
        read: Box<Request>,
    },
    /// Merges the scope rooted exactly at `path` back into its parent scope, whatever its
    /// policy says: it is sealed now and taken back by its parent a moment later. Requires the
    /// `admin` role, no child scopes, the parent's anchors, and a state small enough for one
    /// entry. Answered `Synced` once sealed.
    MergeScope {
        path: String,
    },
}

/// What a watch waits for, as in ZooKeeper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WatchKind {
    /// One-shot, set by getData: data changes and deletion.
    Data,
    /// One-shot, set by exists: creation, data changes, deletion.
    Exist,
    /// One-shot, set by getChildren: children added or removed, deletion.
    Child,
    /// Every change to the node and its children, until removed.
    Persistent,
    /// Creation, data change and deletion of the node and every descendant, until removed.
    PersistentRecursive,
}

impl WatchKind {
    pub fn is_persistent(self) -> bool {
        matches!(self, WatchKind::Persistent | WatchKind::PersistentRecursive)
    }
}

/// A watch a client re-arms on another node, with the zxid it was armed at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArmedWatch {
    pub path: String,
    pub kind: WatchKind,
    pub zxid: i64,
}

/// ZooKeeper's event types, with its numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventKind {
    NodeCreated,
    NodeDeleted,
    NodeDataChanged,
    NodeChildrenChanged,
}

impl EventKind {
    pub fn zk_code(self) -> i32 {
        match self {
            EventKind::NodeCreated => 1,
            EventKind::NodeDeleted => 2,
            EventKind::NodeDataChanged => 3,
            EventKind::NodeChildrenChanged => 4,
        }
    }
}

/// A watch fired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub path: String,
    /// The zxid of the change.
    pub zxid: i64,
}

/// What a node sends back on a connection with a session: the response, and how many
/// session frames carrying events it had queued before it. The client hands the response
/// over only once it has handed over those events, so a watch event always comes before
/// the reply that reveals its change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionResponse {
    pub events: u64,
    pub response: Response,
}

/// What a session is and how to resume it on any node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCredentials {
    pub id: i64,
    #[serde(with = "serde_bytes")]
    pub password: Vec<u8>,
}

/// An open session, as the node that opened or resumed it reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionGranted {
    pub credentials: SessionCredentials,
    /// The timeout the node granted, within its bounds.
    pub timeout_ms: i32,
    /// The node now serving the session.
    pub node: u64,
}

/// A client's frames on its session stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionFrame {
    /// Keeps the session alive; send one every third of the timeout.
    Ping,
    /// Ends the session: its ephemerals go, everywhere.
    Close,
}

/// The node's frames on a session stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerFrame {
    Pong,
    Event(WatchEvent),
    /// The session ended: `SessionExpired`, or `Ok` after a `Close`. The stream ends after it.
    Ended(ApiError),
}

/// Session bookkeeping, carried out through the logs of the scopes involved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionRequest {
    /// Records a new session in its session scope.
    Open { id: i64, timeout_ms: i32 },
    /// Notes in the session's record that it may hold ephemerals in the scope rooted at
    /// `root`; refused with `SessionExpired` once the session is closing.
    Register { id: i64, root: String },
    /// Adds to a closing session's record the scopes its ephemerals were carved into.
    Chase { id: i64, roots: Vec<String> },
    /// Marks the session closing: no scope registers for it any more.
    Closing { id: i64 },
    /// Deletes the session's ephemerals in the scope rooted at `root` and refuses new ones.
    Kill { id: i64, root: String },
    /// Drops the record of a session whose ephemerals are gone.
    Forget { id: i64 },
}

impl SessionRequest {
    pub fn id(&self) -> i64 {
        match self {
            SessionRequest::Open { id, .. }
            | SessionRequest::Register { id, .. }
            | SessionRequest::Chase { id, .. }
            | SessionRequest::Closing { id }
            | SessionRequest::Kill { id, .. }
            | SessionRequest::Forget { id } => *id,
        }
    }
}

/// A change to the cluster's node registry (kept in the root scope).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeChange {
    /// A node that may hold anchors from now on; its certificate must come from the cluster CA.
    Join {
        id: u64,
        addr: String,
        labels: BTreeMap<String, String>,
    },
    /// Placement moves every anchor off the node; it takes no new ones.
    Drain { id: u64 },
    /// Drops a drained node from the registry once no scope is anchored on it.
    Forget { id: u64 },
}

/// A node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    pub id: u64,
    pub addr: String,
    pub labels: BTreeMap<String, String>,
    /// Being drained: placement moves its anchors away.
    pub draining: bool,
}

/// A policy to deploy: the component, its parameters and mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySpec {
    #[serde(with = "serde_bytes")]
    pub component: Vec<u8>,
    pub params: String,
    pub mode: PolicyMode,
}

impl Request {
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Write { .. }
                | Request::Multi { .. }
                | Request::SetPolicy { .. }
                | Request::CreateScope { .. }
                | Request::MergeScope { .. }
                | Request::ChangeNode(_)
                | Request::Session(_)
        ) || matches!(self, Request::AtZxid(inner) if inner.is_write())
    }
}

/// What a native client gets back for a request that did not fail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// A write's result and the zxid it was applied at.
    Write {
        result: OpResult,
        zxid: i64,
    },
    Multi {
        slots: Vec<MultiSlot>,
        zxid: i64,
    },
    Data {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        stat: Stat,
    },
    Exists(Option<Stat>),
    Children {
        children: Vec<String>,
        stat: Stat,
    },
    Synced,
    NodeInfo(NodeInfo),
    Policy(Option<PolicyInfo>),
    PolicyHistory(Vec<PolicyInfo>),
    /// The id of the scope just created.
    ScopeCreated(u64),
    Nodes(Vec<ClusterNode>),
    Scope(ScopeInfo),
    Session(SessionGranted),
    /// What a `SessionRequest` did; for `Kill`, child scopes holding ephemerals of the
    /// session that were carved out of the scope while it held them.
    SessionDone {
        chase: Vec<String>,
    },
    /// A `Descendants` answer.
    Descendants {
        count: u64,
        delegated: Vec<String>,
    },
    /// Paths, sorted.
    Paths(Vec<String>),
    /// A `GetAcl` answer.
    Acl {
        acl: Vec<Acl>,
        stat: Stat,
    },
    /// A watch's read and the zxid the watch was armed at.
    Watched {
        reply: Box<Reply>,
        zxid: i64,
    },
    /// An `AtZxid` request's response (which may be an error) and the zxid it was served at.
    AtZxid {
        reply: Box<Response>,
        zxid: i64,
    },
}

/// A scope as its anchors know it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeInfo {
    pub id: u64,
    pub root: String,
    pub parent: Option<u64>,
    /// Bumped whenever the scope's extent or anchors change.
    pub epoch: u64,
    /// Node ids of its raft voters.
    pub anchors: Vec<u64>,
    pub leader: Option<u64>,
    pub policy: Option<PolicyInfo>,
    pub znodes: u64,
    pub data_bytes: u64,
    pub applied_index: u64,
    /// Child scopes: (delegated path, scope id), in path order.
    pub children: Vec<(String, u64)>,
}

/// One scope a node replicates, as that node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostedScope {
    pub id: u64,
    pub root: String,
    pub epoch: u64,
    pub leader: Option<u64>,
    pub voters: Vec<u64>,
    pub applied_index: u64,
    pub znodes: u64,
    /// Whether this replica's raft ticker is parked because the scope is idle.
    pub quiescent: bool,
}

/// Whether a scope's policy denies or only reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyMode {
    Enforce,
    /// Evaluate and log every denial, but admit: to try a policy on live traffic.
    Audit,
}

/// A policy as deployed on a scope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    /// sha256 of the component, hex.
    pub hash: String,
    pub params: String,
    pub mode: PolicyMode,
    /// Log index of the SetPolicy entry: entries after it are judged by this policy.
    pub log_index: u64,
    /// The scope's last zxid when the policy took over: znodes with a higher czxid or mzxid
    /// were written under it.
    pub zxid: i64,
    /// Who deployed it.
    pub set_by: String,
    /// Leader-stamped time of the deployment, ms since the epoch.
    pub time_ms: i64,
    pub component_bytes: u64,
}

/// The connected node's view of its root scope, and the list of scopes it replicates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub voters: Vec<u64>,
    /// Highest log index applied to this node's tree.
    pub applied_index: u64,
    /// Highest log index this node knows to be committed.
    pub committed_index: u64,
    /// Log index of this node's newest snapshot.
    pub snapshot_index: u64,
    /// Highest log index this node has purged (compacted into its snapshot).
    pub purged_index: u64,
    pub znodes: u64,
    /// Entries the root scope's policies have judged, the fuel they burnt, and a digest of
    /// every (log index, fuel, outcome): equal on every anchor that applied the same log.
    pub policy_judged: u64,
    pub policy_fuel: u64,
    pub policy_digest: u64,
    /// Every scope this node replicates, the root scope included.
    pub scopes: Vec<HostedScope>,
}

/// One response frame on the native protocol.
pub type Response = Result<Reply, ApiError>;
