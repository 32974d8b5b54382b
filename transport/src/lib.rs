//! Scopekeeper's transport: one QUIC endpoint per node with mutual TLS against the cluster CA,
//! one bidirectional stream per RPC carrying u32-length-prefixed postcard frames, and a pool of
//! connections with connect timeouts and capped backoff.
//!
//! It knows nothing of raft, scopes or znodes: callers bring their own message types.

pub mod certs;
mod endpoint;
pub mod frame;
mod identity;
mod keys;
pub mod limits;
mod pool;
pub mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use certs::{CertFiles, Credentials, IssuedCert, node_name};
pub use endpoint::{Connection, Endpoint};
pub use identity::Principal;
pub use keys::EndpointKeys;
pub use pool::Pool;
pub use quinn::{RecvStream, SendStream};

/// The protocols an endpoint speaks, told apart by ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alpn {
    /// Node to node: raft, forwarding, snapshots.
    Peer,
    /// Native clients.
    Client,
}

impl Alpn {
    pub fn wire(self) -> &'static [u8] {
        match self {
            Alpn::Peer => b"scopekeeper-peer/1",
            Alpn::Client => b"scopekeeper-client/1",
        }
    }

    pub fn from_wire(bytes: &[u8]) -> Option<Self> {
        [Alpn::Peer, Alpn::Client]
            .into_iter()
            .find(|a| a.wire() == bytes)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("connecting to {name} at {addr} failed: {reason}")]
    Connect {
        addr: SocketAddr,
        name: String,
        reason: String,
    },
    #[error(
        "{name} at {addr} is unreachable (last dial: {last_failure}); retrying in {retry_in:?}"
    )]
    Unreachable {
        addr: SocketAddr,
        name: String,
        retry_in: Duration,
        /// Why the last dial failed: a peer believed down for long says why here.
        last_failure: String,
    },
    #[error("refused connection from {remote}: {reason}")]
    Refused { remote: SocketAddr, reason: String },
    #[error("connection lost: {0}")]
    Connection(quinn::ConnectionError),
    #[error("stream closed: {0}")]
    Closed(String),
    #[error("frame of {len} bytes exceeds the limit of {cap} bytes")]
    FrameTooLarge { len: usize, cap: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("cannot encode frame: {0}")]
    Encode(String),
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn from_write(e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::ConnectionLost(c) => Error::Connection(c),
            other => Error::Closed(other.to_string()),
        }
    }

    pub(crate) fn from_read(e: quinn::ReadError) -> Self {
        match e {
            quinn::ReadError::ConnectionLost(c) => Error::Connection(c),
            other => Error::Closed(other.to_string()),
        }
    }

    /// Whether the request may not have reached the peer at all, so another peer may be tried.
    pub fn is_connectivity(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. }
                | Error::Unreachable { .. }
                | Error::Connection(_)
                | Error::Closed(_)
        )
    }
}
