//! Every bound the node keeps, and checks that they fit together.

use scopekeeper_client::limits::REQUEST_BYTES_MAX;
use scopekeeper_transport::limits::PEER_FRAME_BYTES_MAX;

/// Largest log entry: one client request plus the leader's stamp and framing.
pub const ENTRY_BYTES_MAX: usize = REQUEST_BYTES_MAX + 1024;

/// Entries per AppendEntries RPC. Bounded so that a full batch always fits one peer frame.
pub const APPEND_ENTRIES_MAX: u64 = 64;

/// Client writes a scope leader queues for batching before refusing with `Throttled`.
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 4096;

/// Entries of batched transactions a leader keeps in flight; further transactions wait and
/// join the next batch. One: every entry costs an fdatasync on each anchor, raft messages and
/// wake-ups whatever it carries, so while one is out the next gathers everything that arrives
/// (dev cluster, creates, alternating pairs: 1 against 2 gave 13-30% more at 8 clients, 8-26%
/// at 64, 16-20% at 16; 2 against 4 was better or level too).
pub const BATCHES_IN_FLIGHT_MAX: usize = 1;

/// Transactions in one entry.
pub const BATCH_PROPOSALS_MAX: usize = 256;
/// Linearizable reads of one scope on one node waiting for the next read-index call
/// (`scope::read_rounds`); beyond this a read is refused as throttled.
pub const READS_WAITING_MAX: usize = 4096;

/// Approximate payload of one entry of batched transactions; a larger transaction goes alone.
pub const BATCH_BYTES_MAX: usize = ENTRY_BYTES_MAX;

/// Times a request is routed again after reaching a scope that no longer governs its path
/// (each time the directory learns a better route).
pub const ROUTE_ATTEMPTS_MAX: usize = 8;

/// How often a scope's leader asks its policy whether to split (only if the scope changed).
pub const SPLIT_TICK: std::time::Duration = std::time::Duration::from_secs(2);

/// Subtrees offered to a policy's `split` as candidates, largest first.
pub const SPLIT_CANDIDATES_MAX: usize = 64;

/// Children of a scope's root sized per hold of the scope's state lock when its split
/// candidates are gathered: applies wait for that lock, and a scope can have a great many
/// children (500k take about 40 ms to walk: `cargo bench --bench carve`).
pub const SPLIT_CHILDREN_PER_LOCK: usize = 4096;

/// Subtrees below a scope's root whose write rates a scope keeps (`scope::load`). Rates are
/// part of the applied state, written with every persisted position: without a bound, a scope
/// whose writes each create a new child of its root kept one window per child written in the
/// last ten seconds (tens of thousands under load), and cloned and wrote them all each time.
/// Twice the split candidates, so a hot subtree survives a stream of one-off names.
pub const LOAD_SUBTREES_MAX: usize = 2 * SPLIT_CANDIDATES_MAX;

/// A child scope merges back only if its state travels in one log entry of its parent: at
/// most this many znodes and bytes of data (paths and ACLs counted too).
pub const MERGE_ZNODES_MAX: usize = 10_000;
pub const MERGE_BYTES_MAX: usize = 512 * 1024;

/// A new scope's first election: how often its parent's leader stands again while the other
/// anchors open their replicas, and how many times.
pub const FIRST_ELECTION_RETRY: std::time::Duration = std::time::Duration::from_millis(150);
pub const FIRST_ELECTION_ATTEMPTS: usize = 40;

/// How far ahead of the leader's clock a client's last-seen zxid may be (zxids are
/// `ms << 20` plus a count): beyond it, the zxid did not come from this cluster.
pub const ZXID_CLOCK_AHEAD_MAX_MS: i64 = 60_000;

/// How often a node heartbeats each peer (standing in for quiescent scopes' heartbeats).
pub const LIVENESS_TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// A peer silent for this long is presumed dead: quiescent scopes it leads wake and elect.
/// Equal to raft's minimum election timeout, so failover takes as long as without quiescence.
pub const NODE_DEAD_AFTER: std::time::Duration = std::time::Duration::from_millis(1000);

/// A scope no client has used for this long parks its raft ticker on every replica.
pub const QUIESCE_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// How often a node checks that the scopes it leads are anchored where their policies want.
pub const PLACEMENT_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a leader waits before asking again to hand leadership to the policy's preferred
/// anchor: a transfer to a lagging or unreachable node fails, and each try costs the scope a
/// short pause in writes.
pub const HAND_OVER_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a new anchor may take to catch up before placement gives up on the move (it is
/// tried again at the next tick).
pub const ANCHOR_CATCH_UP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Pause before routing again after a `WrongScope`, times the attempt number.
pub const ROUTE_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// How long an anchor of a scope waits for that scope to open here (just created, or waiting
/// for its first snapshot) before forwarding a request for it elsewhere.
pub const SCOPE_OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a new child's birth waits for its opening before writing its first snapshot file
/// (the opening clears the snapshot directory of temporaries).
pub const GENESIS_OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Large files are synced this many bytes at a time as they are written (a new child's
/// ingested tables, snapshot files), so that no large write-back queues the node's journal
/// fsyncs, nor is left for the moment a birth holds the journal lock (see `genesis`).
pub const SYNC_STEP_BYTES: usize = 4 * 1024 * 1024;

/// Requests (and answers) of one replication stream buffered between its QUIC stream and
/// raft, each way; beyond it the stream waits (`scope::append_stream`).
pub const APPEND_PIPELINE_MAX: usize = 64;

/// Times a client request may be forwarded between nodes on its way to an anchor of its
/// scope: once to an anchor, once more if that node's route was stale too.
pub const FORWARD_HOPS_MAX: u8 = 2;

/// Entries of plain transactions whose rows may wait to be written together (a row changed
/// by several of them is written once). A restart applies them again from the log.
pub const ROWS_DEFERRED_ENTRIES_MAX: usize = 64;
/// Changed paths whose rows may wait so.
pub const ROWS_DEFERRED_PATHS_MAX: usize = 16 * 1024;

/// Snapshot chunk on the wire.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// A snapshot transfer that makes no progress for this long is abandoned (an idle timeout,
/// not a deadline: large snapshots take as long as they take).
pub const SNAPSHOT_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Log entries since the last snapshot that trigger a new one.
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 20_000;

/// Log entries kept behind a snapshot, so slow followers catch up from the log, not a snapshot.
pub const LOG_KEPT_BEHIND_SNAPSHOT: u64 = 5_000;

/// How long a forwarded or local write may wait for its outcome before the client is told
/// `ConnectionLoss` (the outcome is then unknown, as in ZooKeeper).
pub const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

const _: () = assert!(
    (APPEND_ENTRIES_MAX as usize) * ENTRY_BYTES_MAX + 1024 * 1024 <= PEER_FRAME_BYTES_MAX,
    "a full AppendEntries batch must fit one peer frame"
);
const _: () = assert!(SNAPSHOT_CHUNK_BYTES < PEER_FRAME_BYTES_MAX);
const _: () = assert!(LOG_KEPT_BEHIND_SNAPSHOT < SNAPSHOT_EVERY_ENTRIES);
const _: () = assert!(BATCHES_IN_FLIGHT_MAX >= 1 && BATCH_PROPOSALS_MAX >= 1);

/// Largest policy component. Small enough that a SetPolicy entry fits one client request.
pub const POLICY_BYTES_MAX: usize = 960 * 1024;

/// Largest parameter document a policy is deployed with.
pub const POLICY_PARAMS_BYTES_MAX: usize = 32 * 1024;

/// Fuel for one log entry: every admit of its operations shares it. Out of fuel denies.
pub const POLICY_FUEL_PER_ENTRY: u64 = 20_000_000;

/// Fuel for `validate-params` before a policy is committed.
pub const POLICY_FUEL_VALIDATE: u64 = 20_000_000;

/// Anchors a scope may have: its quorum rule is checked over every subset of them.
pub const QUORUM_ANCHORS_MAX: usize = 16;

/// Fuel for each call of a policy's `quorum` while tabulating it, and for the whole table.
pub const POLICY_FUEL_PER_QUORUM_CALL: u64 = 100_000;
pub const POLICY_FUEL_QUORUM_TABLE_MAX: u64 = 1_000_000_000;

/// How long the leader waits, after a write is committed and applied, for the anchors its
/// scope's quorum rule demands to store it, before answering that the outcome is unknown.
pub const QUORUM_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Linear memory a policy instance may grow to; beyond it allocation fails inside the guest.
pub const POLICY_MEMORY_BYTES_MAX: usize = 32 * 1024 * 1024;

/// Linear memory a recycled instance slot keeps mapped and zeroes in place rather than returning
/// to the kernel. Covers what a typical Rust policy touches (its shadow stack and first heap
/// pages); beyond it pages are returned with madvise.
pub const POLICY_MEMORY_KEEP_RESIDENT_BYTES: usize = 2 * 1024 * 1024;

/// Used policy instances waiting to be dropped after their entries' responses; beyond this
/// they are dropped at once.
pub const POLICY_RETIRED_MAX: usize = 64;
/// Requests to make an instance ahead that wait for the engine's preparer thread; beyond this
/// they are dropped (the preparer is behind, and entries make their own instances).
pub const POLICY_PREPARE_REQUESTS_MAX: usize = 16;
/// As [`POLICY_MEMORY_KEEP_RESIDENT_BYTES`], for tables.
pub const POLICY_TABLE_KEEP_RESIDENT_BYTES: usize = 64 * 1024;

/// Wasm stack a policy may use.
pub const POLICY_STACK_BYTES_MAX: usize = 512 * 1024;

/// Instances alive at once in a node's pool: one per entry being applied, per scope, and
/// those made ahead or waiting to be dropped.
pub const POLICY_INSTANCES_MAX: u32 = 256;
/// Instances made ahead for the next entries, of all policies together.
pub const POLICY_READY_MAX: usize = 64;
/// Instances made ahead for the next entries of one policy.
pub const POLICY_READY_PER_POLICY: usize = 4;
const _: () = assert!(POLICY_READY_MAX + POLICY_RETIRED_MAX <= POLICY_INSTANCES_MAX as usize / 2);

/// Compiling a component that takes longer than this is refused before commit.
pub const POLICY_COMPILE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Policy changes remembered per scope for `policy history`.
pub const POLICY_HISTORY_MAX: usize = 64;

const _: () = assert!(POLICY_MEMORY_KEEP_RESIDENT_BYTES <= POLICY_MEMORY_BYTES_MAX);
const _: () = assert!(
    POLICY_BYTES_MAX + POLICY_PARAMS_BYTES_MAX + 4096 <= REQUEST_BYTES_MAX,
    "a SetPolicy request must fit one client frame"
);

/// How often a node sends the keepalives of the sessions it heard from, and how often the
/// leader of a session scope looks for expired sessions: the slack on a session's timeout.
pub const KEEPALIVE_TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// Bounds of a negotiated session timeout. ZooKeeper's defaults are 2 and 20 ticks of 2 s;
/// ours go lower, since keepalives are batched per node rather than per client.
pub const SESSION_TIMEOUT_MIN_MS: i32 = 1_000;
pub const SESSION_TIMEOUT_MAX_MS: i32 = 60_000;

/// Frames queued for one client's session stream (pongs, watch events). A client that falls
/// this far behind has its session stream closed; it resumes and re-arms its watches.
pub const SESSION_FRAMES_MAX: usize = 1024;

/// Apply batches a scope's change feed holds for slow subscribers; one further behind is told
/// it lagged and re-checks its watches against the tree.
pub const FEED_ITEMS_MAX: usize = 4096;

/// How long a reply waits for the watch events it must follow; past it the node re-checks the
/// scope's watches against the tree and answers.
pub const FEED_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Watches one session may hold on one node.
pub const WATCHES_PER_SESSION_MAX: usize = 65_536;

/// How often each scope's leader looks for containers and TTL nodes to delete (ZooKeeper's
/// `znode.container.checkIntervalMs` defaults to a minute; ours is the slack on a TTL).
pub const REAP_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Deletions one scope's leader proposes per tick; the rest wait for the next.
pub const REAPS_PER_TICK_MAX: usize = 1000;

/// ZooKeeper's `jute.maxbuffer` default: a client frame longer than this closes its
/// connection, as it does on a ZooKeeper server.
pub const ZK_FRAME_BYTES_MAX: usize = 0xfffff;

/// Requests a ZooKeeper connection may have read ahead of the one being served; beyond it the
/// node stops reading the socket (TCP pushes back on the client).
pub const ZK_REQUESTS_IN_FLIGHT_MAX: usize = 128;

/// ZooKeeper client connections a node holds at once.
pub const ZK_CONNECTIONS_MAX: usize = 20_000;

/// How long a client on the ZooKeeper TLS listener may take over its handshake.
pub const ZK_TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Tries of a ZooKeeper client's read that meets `ConnectionLoss` inside the node.
pub const ZK_READ_ATTEMPTS: u32 = 4;
