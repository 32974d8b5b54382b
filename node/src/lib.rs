//! The Scopekeeper node: the tree, scopes replicated by openraft over fjall, and the services
//! that clients and peers reach over QUIC.

pub mod limits;
pub mod scope;
pub mod storage;
pub mod tree;
