//! Every bound the transport keeps, in one place.

use std::time::Duration;

/// Largest frame on a peer stream. The node sizes its raft batches to fit (see `node::limits`).
pub const PEER_FRAME_BYTES_MAX: usize = 96 * 1024 * 1024;

/// Largest frame a native client may send or receive.
pub const CLIENT_FRAME_BYTES_MAX: usize = 4 * 1024 * 1024;

/// How long a dial may take before the peer counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);

/// First wait after a failed dial; doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// QUIC keep-alive and idle timeout: an idle peer is pinged, a silent one is dropped.
pub const KEEP_ALIVE: Duration = Duration::from_millis(500);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// Concurrent streams a node connection accepts from the other node: RPCs, and one
/// long-lived replication stream per scope the other node leads and this one follows.
pub const PEER_STREAMS_MAX: u32 = 65_536;

/// Concurrent streams a client connection accepts (a stream per request in flight; more
/// wait for one to end). quinn sets up every stream it allows when the connection opens: at
/// [`PEER_STREAMS_MAX`], about 5 MB per connection (2,000 held sessions on the dev cluster
/// took its RSS to 10.4 GiB; 1.1 GiB at this limit).
pub const CLIENT_STREAMS_MAX: u32 = 4096;

const _: () = assert!(CLIENT_FRAME_BYTES_MAX < PEER_FRAME_BYTES_MAX);
const _: () = assert!(CLIENT_STREAMS_MAX <= PEER_STREAMS_MAX);
const _: () = assert!(BACKOFF_MIN.as_millis() < BACKOFF_MAX.as_millis());
