//! The Scopekeeper node: the tree, scopes replicated by openraft over fjall, and the services
//! that clients and peers reach over QUIC.

pub mod cli;
pub mod config;
pub mod directory;
pub mod identity_file;
pub mod limits;
pub mod liveness;
pub mod merge;
pub mod node;
pub mod peer;
pub mod placement;
pub mod policy;
pub mod priority;
pub mod reaper;
pub mod scope;
pub mod service;
pub mod sessions;
pub mod split;
pub mod storage;
pub mod tree;
pub mod watches;
pub mod zk;
