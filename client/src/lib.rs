//! Scopekeeper's native Rust client and the API types it shares with the server.

pub mod limits;
pub mod path;
pub mod proto;

pub use proto::{ApiError, CreateMode, ErrorCode, MultiSlot, Op, OpResult, Reply, Request, Stat};
