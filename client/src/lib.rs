//! Scopekeeper's native Rust client and the API types it shares with the server.
//!
//! ```no_run
//! # async fn demo(config: scopekeeper_client::ClientConfig) -> Result<(), scopekeeper_client::Error> {
//! use scopekeeper_client::{Client, CreateMode};
//! let client = Client::connect(config).await?;
//! client.create("/app", b"hello", CreateMode::Persistent).await?;
//! let (data, stat) = client.get("/app").await?;
//! client.set("/app", b"world", stat.version).await?;
//! # Ok(()) }
//! ```

mod client;
pub mod context;
pub mod limits;
pub mod path;
pub mod proto;
mod session;
pub mod watches;

pub use client::{Client, ClientConfig, Error};
pub use proto::{
    ApiError, CreateMode, ErrorCode, MultiSlot, Op, OpResult, Reads, Reply, Request, Stat,
};
pub use session::SessionState;
pub use watches::{WatchStream, Watcher};
