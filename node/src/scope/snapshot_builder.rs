//! Building a scope's snapshot without stopping its applies.
//!
//! openraft asks for a builder between two applies and runs it on a task of its own. Encoding
//! a scope of a million znodes takes a second or more, and read under the state's lock that is
//! a second in which the scope applies nothing: every write waits (bench/split.sh saw 1.2-2.5 s
//! write gaps in a 1M-znode scope, one per snapshot). So the builder freezes what it needs when
//! it is made and reads nothing from memory afterwards: the small state (the header) is encoded
//! at once, and the znodes are read from a fjall snapshot of the scope's rows, taken at the
//! same moment. Making the builder first writes the rows applies deferred (see
//! `ScopeStateMachine::apply`), so the rows are then exactly the applied tree, except the rows
//! of subtrees carved off to new child scopes, which stay until the children's births move
//! them and are skipped here.
//!
//! A scope whose changes cannot all be in its rows yet (one being born, which applies in
//! memory while its rows are still its parent's) is encoded from memory, under the lock.

use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;

use fjall::Readable;
use openraft::RaftSnapshotBuilder;
use scopekeeper_client::path;

use super::genesis::Newborns;
use super::snapshot::{self, SnapshotFile};
use super::state_machine::ScopeView;
use super::tenure::Tenure;
use super::types::{SnapshotMeta, TypeConfig, genesis_log_id};
use crate::storage::{ScopeId, Store, corrupt, io_err, key, unseal};

/// A snapshot of one scope as of the moment it was made, built on demand.
pub struct SnapshotBuilder {
    pub(super) scope: ScopeId,
    pub(super) store: Store,
    pub(super) snapshot_dir: PathBuf,
    pub(super) tenure: Tenure,
    pub(super) newborns: Newborns,
    pub(super) view: ScopeView,
    pub(super) frozen: Option<Frozen>,
}

/// The scope as the builder was made, when its rows hold all of it.
pub(super) struct Frozen {
    pub meta: SnapshotMeta,
    /// The snapshot file's beginning (`snapshot::header`).
    pub header: Vec<u8>,
    pub rows: fjall::Snapshot,
    /// Subtrees carved off to child scopes, whose rows may still be here.
    pub delegated: BTreeSet<String>,
    /// How many znodes the tree had: the rows read must be as many.
    pub znodes: u64,
}

impl SnapshotBuilder {
    /// The znode records from the frozen rows, after the header; `None` if they are not the
    /// tree they should be (a bug: the caller falls back to memory, and says so).
    fn encode_rows(store: &Store, scope: ScopeId, frozen: Frozen) -> io::Result<Option<Vec<u8>>> {
        let Frozen {
            header,
            rows,
            delegated,
            znodes,
            ..
        } = frozen;
        let mut out = header;
        let mut read = 0u64;
        for guard in rows.prefix(&store.tree, key(scope, b"")) {
            let (k, v) = guard
                .into_inner()
                .map_err(|e| io_err("reading a scope's rows for its snapshot", e))?;
            let p = std::str::from_utf8(&k[8..])
                .map_err(|_| corrupt("znode key", "path is not UTF-8"))?;
            if !delegated.is_empty() && path::ancestors_and_self(p).any(|a| delegated.contains(a)) {
                continue;
            }
            snapshot::push_raw_record(&mut out, p, unseal("znode", &v)?)?;
            read += 1;
        }
        if read != znodes {
            tracing::error!(
                scope,
                rows = read,
                znodes,
                "the scope's rows are not its tree; building its snapshot from memory instead"
            );
            return Ok(None);
        }
        snapshot::finish(out).map(Some)
    }

    /// The snapshot of the state in memory now, read under its lock.
    fn encode_memory(&self) -> io::Result<(SnapshotMeta, Vec<u8>)> {
        let state = self.view.read();
        let meta = state.snapshot_meta();
        let bytes = snapshot::encode(&meta, &state)?;
        Ok((meta, bytes))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(
        &mut self,
    ) -> Result<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>, io::Error> {
        let started = std::time::Instant::now();
        let meta = match &self.frozen {
            Some(frozen) => frozen.meta.clone(),
            None => self.view.read().snapshot_meta(),
        };
        if let Some(meta) = self
            .newborns
            .owed_first_snapshot(self.scope)
            .filter(|owed| *owed == meta)
        {
            // A new child's first snapshot, which raft builds before its group starts: its
            // birth writes the file from the rows it moves (`genesis`).
            let path = self.snapshot_dir.join(snapshot::file_name(&meta));
            return Ok(openraft::Snapshot {
                meta,
                snapshot: SnapshotFile { path },
            });
        }
        // Everything applied so far becomes durable first: the log behind this snapshot may be
        // purged as soon as it exists. Then the rows are read, off the async workers.
        let store = self.store.clone();
        let (scope, frozen) = (self.scope, self.frozen.take());
        let (synced_ms, from_rows) = tokio::task::spawn_blocking(move || {
            store.sync_now()?;
            let synced_ms = started.elapsed().as_millis() as u64;
            let from_rows = match frozen {
                Some(frozen) => {
                    let meta = frozen.meta.clone();
                    // Reading and encoding every row takes seconds of CPU for a big scope;
                    // the applies going on meanwhile come first.
                    super::background::at_low_priority("encoding a snapshot", || {
                        Self::encode_rows(&store, scope, frozen)
                    })?
                    .map(|bytes| (meta, bytes))
                }
                None => None,
            };
            io::Result::Ok((synced_ms, from_rows))
        })
        .await
        .map_err(|e| io::Error::other(format!("snapshot encoder panicked: {e}")))??;
        let (meta, bytes) = match from_rows {
            Some(built) => built,
            None => self.encode_memory()?,
        };
        let encoded_ms = started.elapsed().as_millis() as u64;
        let path = self.snapshot_dir.join(snapshot::file_name(&meta));
        let dir = self.snapshot_dir.clone();
        let written = path.clone();
        let tenure = self.tenure.clone();
        let write = move || -> io::Result<()> {
            tenure.write("writing a snapshot", || {
                snapshot::write_atomically(&written, &bytes)?;
                snapshot::remove_older(&dir, &written)
            })
        };
        if meta.last_log_id == Some(genesis_log_id()) {
            // A new scope's first snapshot, which raft builds before the scope starts: every
            // first member holds the same state from the creation, so only a later member
            // needs the file, and a send that finds it missing is retried. Written behind the
            // scope's start, which a split's child would otherwise wait for; lost in a crash,
            // it is built again at the next start.
            let scope = self.scope;
            tokio::task::spawn_blocking(move || {
                if let Err(e) = write() {
                    tracing::warn!(scope, "writing the scope's first snapshot: {e}");
                }
            });
        } else {
            tokio::task::spawn_blocking(write)
                .await
                .map_err(|e| io::Error::other(format!("snapshot writer panicked: {e}")))??;
        }
        tracing::info!(
            scope = self.scope,
            ms = started.elapsed().as_millis() as u64,
            synced_ms,
            encoded_ms,
            "built snapshot {}",
            path.display()
        );
        Ok(openraft::Snapshot {
            meta,
            snapshot: SnapshotFile { path },
        })
    }
}
