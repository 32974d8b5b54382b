//! Every bound the node keeps, and checks that they fit together.

use scopekeeper_client::limits::REQUEST_BYTES_MAX;
use scopekeeper_transport::limits::PEER_FRAME_BYTES_MAX;

/// Largest log entry: one client request plus the leader's stamp and framing.
pub const ENTRY_BYTES_MAX: usize = REQUEST_BYTES_MAX + 1024;

/// Entries per AppendEntries RPC. Bounded so that a full batch always fits one peer frame.
pub const APPEND_ENTRIES_MAX: u64 = 64;

/// Client writes a scope leader accepts concurrently before refusing with `Throttled`.
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 4096;

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
