//! The policy host: wasmtime with the component model, configured so that every anchor computes
//! the same verdict and burns the same fuel for the same entry.
//!
//! - `engine`: the one deterministic engine, checks before commit, the compiled-component cache.
//! - `eval`: a fresh instance per log entry; verdicts, fuel, traps.
//! - `admission`: the bridge from the tree's `Admit` hook to a policy.
//! - `build`: turning a policy crate's core module into a component.
//! - `placement`: the policy's choice of anchors.
//! - `quorum`: the policy's ack rule tabulated over the anchors, checked, and consulted.

pub mod admission;
pub mod build;
pub mod engine;
pub mod eval;
pub mod placement;
pub mod quorum;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

/// The host-side bindings of `policy-sdk/wit/policy.wit`.
pub mod wit {
    wasmtime::component::bindgen!({
        path: "../policy-sdk/wit",
        world: "policy",
    });
}

/// A policy's content address: sha256 of the component bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PolicyHash(pub [u8; 32]);

impl PolicyHash {
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest;
        PolicyHash(sha2::Sha256::digest(bytes).into())
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The first 12 hex digits, for logs and messages.
    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }
}

impl std::fmt::Display for PolicyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.short())
    }
}

/// Whether denials are enforced or only logged: the API's type, one meaning everywhere.
pub use scopekeeper_client::proto::PolicyMode;

/// The role that may replace a scope's policy.
pub const ADMIN_ROLE: &str = "admin";

/// The role of the cluster's own nodes: only they propose session bookkeeping and reaping,
/// which no policy judges.
pub const NODE_ROLE: &str = "node";
