//! What the tree knows of sessions: where a session's record lives, the record itself, and
//! the book each scope keeps of sessions it has killed and of ephemerals it carved out.
//!
//! A session's record is a znode in one of the session scopes (`/zookeeper/sessions/NN`,
//! chosen by the session id), so session churn is sharded and persisted like any znode. Its
//! data lists the scope roots where the session may hold ephemerals. Those scopes delete the
//! ephemerals when told the session ended (`SessionTxn::Kill`), through their own logs.

use std::collections::{BTreeMap, BTreeSet};

use scopekeeper_client::proto::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};

/// How many session scopes the cluster has. Fixed: every node maps a session to its scope.
pub const SESSION_SCOPES: u64 = 4;

/// Where the session scopes live.
pub const SESSIONS_ROOT: &str = "/zookeeper/sessions";

/// ZooKeeper's reserved znodes, which clients read: created with the first session scope.
pub const ZOOKEEPER_QUOTA: &str = "/zookeeper/quota";
pub const ZOOKEEPER_CONFIG: &str = "/zookeeper/config";

/// How long a scope remembers a killed session, refusing ephemerals for it (leader-stamped
/// ms). Covers creates still in flight when the session ended; a later create cannot get that
/// far, because registering with the session's record fails once the session is closing.
pub const CLOSED_KEEP_MS: i64 = 60_000;

/// The root of the session scope holding `id`'s record.
pub fn session_scope_root(id: i64) -> String {
    format!("{SESSIONS_ROOT}/{:02}", shard(id))
}

fn shard(id: i64) -> u64 {
    // The low bits are a per-node counter: consecutive sessions spread over the scopes.
    (id as u64) % SESSION_SCOPES
}

/// The path of `id`'s record.
pub fn record_path(id: i64) -> String {
    format!("{}/{:016x}", session_scope_root(id), id)
}

/// Whether `p` is in a session scope: no client writes there.
pub fn is_session_path(p: &str) -> bool {
    scopekeeper_client::path::is_within(p, SESSIONS_ROOT)
}

/// A session's record, the data of its znode (JSON, so `get` shows it plainly).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub timeout_ms: i32,
    /// The session is ending: no scope may register for it.
    pub closing: bool,
    /// Roots of the scopes where the session may hold ephemerals, in order.
    pub roots: BTreeSet<String>,
}

impl SessionRecord {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a session record always encodes")
    }

    pub fn decode(bytes: &[u8]) -> Result<SessionRecord, ApiError> {
        serde_json::from_slice(bytes).map_err(|e| {
            ApiError::new(
                ErrorCode::DataInconsistency,
                format!("an unreadable session record: {e}"),
            )
        })
    }
}

/// Session bookkeeping of a transaction, proposed by nodes only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionTxn {
    /// Creates the session's record (in its session scope).
    Open { id: i64, timeout_ms: i32 },
    /// Adds a scope root to the record, unless the session is closing.
    Register { id: i64, root: String },
    /// Adds scope roots to a closing session's record: the ones its ephemerals were carved into.
    Chase { id: i64, roots: Vec<String> },
    /// Marks the record closing.
    Closing { id: i64 },
    /// Deletes the record.
    Forget { id: i64 },
    /// Deletes the session's ephemerals in this scope and refuses new ones for a while.
    Kill { id: i64 },
}

/// What a session transaction did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionOutcome {
    Done,
    /// After a `Kill`: delegated paths that took ephemerals of the session with them.
    Killed {
        chase: Vec<String>,
    },
}

/// What a scope remembers about sessions beyond its znodes; persisted with its metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionBook {
    /// Sessions killed here, with the leader-stamped time, kept for `CLOSED_KEEP_MS`.
    pub closed: BTreeMap<i64, i64>,
    /// For each delegated path, the sessions whose ephemerals were carved into it.
    pub carved: BTreeMap<String, BTreeSet<i64>>,
}

impl SessionBook {
    /// Forgets sessions killed more than `CLOSED_KEEP_MS` before `now_ms`, and their carve
    /// records (the killer has chased them by then).
    pub fn prune(&mut self, now_ms: i64) {
        let expired: Vec<i64> = self
            .closed
            .iter()
            .filter(|(_, at)| now_ms.saturating_sub(**at) > CLOSED_KEEP_MS)
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            self.closed.remove(id);
        }
        if expired.is_empty() {
            return;
        }
        for sessions in self.carved.values_mut() {
            for id in &expired {
                sessions.remove(id);
            }
        }
        self.carved.retain(|_, s| !s.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_spread_over_the_session_scopes() {
        let roots: BTreeSet<String> = (0..8).map(session_scope_root).collect();
        assert_eq!(roots.len() as u64, SESSION_SCOPES);
        assert_eq!(record_path(0x10), "/zookeeper/sessions/00/0000000000000010");
        assert!(is_session_path(&record_path(7)));
        assert!(!is_session_path("/zookeeper/quota"));
    }

    #[test]
    fn pruning_forgets_old_kills_and_their_carves() {
        let mut book = SessionBook::default();
        book.closed.insert(1, 0);
        book.closed.insert(2, 50_000);
        book.carved.insert("/a".into(), [1, 2].into());
        book.carved.insert("/b".into(), [1].into());
        book.prune(70_000);
        assert_eq!(book.closed.keys().copied().collect::<Vec<_>>(), vec![2]);
        assert_eq!(book.carved.len(), 1);
        assert_eq!(book.carved["/a"], [2].into());
    }
}
