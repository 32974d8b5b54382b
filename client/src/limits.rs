//! Limits a client can see. Servers enforce them; clients check early to fail fast.

/// Largest znode payload, as ZooKeeper's default `jute.maxbuffer` (1 MiB).
pub const ZNODE_DATA_BYTES_MAX: usize = 1024 * 1024;

/// Largest request frame on the native protocol: one full znode plus room for path and framing.
/// A multi is bounded by this too, as a ZooKeeper multi is bounded by `jute.maxbuffer`.
pub const REQUEST_BYTES_MAX: usize = ZNODE_DATA_BYTES_MAX + 64 * 1024;

/// Longest path in bytes. ZooKeeper has no explicit limit below `jute.maxbuffer`; we keep paths
/// small enough that a key prefix plus path fits comfortably in a storage key.
pub const PATH_BYTES_MAX: usize = 4096;

/// Most operations in one multi.
pub const MULTI_OPS_MAX: usize = 1024;
