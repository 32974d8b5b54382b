//! A scope's state machine: the tree in memory, every znode and the applied position persisted
//! in fjall in one batch per apply, snapshots as files.
//!
//! Apply is boring on purpose: decode, judge (`governance`), `Tree::apply`, write what it
//! touched, answer. Nothing here reads a clock or depends on which node runs it.

use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use super::governance::{self, ActivePolicy, Governance, GovernanceMeta};
use super::snapshot::{self, SnapshotFile};
use super::types::{
    Body, CommandOutcome, CommandResult, LogId, SnapshotMeta, StoredMembership, TxnResult,
    TypeConfig,
};
use crate::policy::engine::PolicyEngine;
use crate::storage::{ScopeId, Store, corrupt, decode, encode, io_err, key};
use crate::tree::{StoredZnode, Tree};

const APPLIED: &[u8] = b"applied";

/// The state machine's position and governance, persisted with the tree in the same batch.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct AppliedMeta {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    last_zxid: i64,
    governance: GovernanceMeta,
}

/// What readers see: the tree, the policy, and how far the log has been applied.
pub struct ScopeState {
    pub tree: Tree,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub governance: Governance,
}

/// Shared, read-mostly access to a scope's state.
#[derive(Clone)]
pub struct ScopeView(Arc<RwLock<ScopeState>>);

impl ScopeView {
    pub fn read(&self) -> RwLockReadGuard<'_, ScopeState> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, ScopeState> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Clone)]
pub struct ScopeStateMachine {
    scope: ScopeId,
    /// The path this scope governs.
    root: Arc<str>,
    store: Store,
    engine: PolicyEngine,
    view: ScopeView,
    snapshot_dir: PathBuf,
}

fn load_component(store: &Store, hash: &crate::policy::PolicyHash) -> io::Result<Arc<Vec<u8>>> {
    let bytes = store
        .policies
        .get(hash.0)
        .map_err(|e| io_err("reading a policy component", e))?
        .ok_or_else(|| {
            corrupt(
                "policy components",
                &format!("the active policy {hash} is missing"),
            )
        })?;
    let body = crate::storage::unseal("policy component", &bytes)?.to_vec();
    if crate::policy::PolicyHash::of(&body) != *hash {
        return Err(corrupt(
            "policy components",
            "a component does not match its hash",
        ));
    }
    Ok(Arc::new(body))
}

impl ScopeStateMachine {
    /// Loads the scope's tree from fjall, first finishing any snapshot install a crash
    /// interrupted (a snapshot file newer than the applied position).
    pub fn open(store: Store, scope: ScopeId, engine: PolicyEngine) -> io::Result<Self> {
        let snapshot_dir = store.dir().join("snapshots").join(scope.to_string());
        snapshot::remove_temporaries(&snapshot_dir)?;
        let meta: AppliedMeta = match store
            .sm_meta
            .get(key(scope, APPLIED))
            .map_err(|e| io_err("reading the applied position", e))?
        {
            Some(v) => decode("applied position", &v)?,
            None => AppliedMeta::default(),
        };
        let mut stored = Vec::new();
        for guard in store.tree.prefix(scope.to_be_bytes()) {
            let (k, v) = guard
                .into_inner()
                .map_err(|e| io_err("reading the tree", e))?;
            let path = String::from_utf8(k[8..].to_vec())
                .map_err(|_| corrupt("znode key", "path is not UTF-8"))?;
            stored.push((path, decode::<StoredZnode>("znode", &v)?));
        }
        let tree = Tree::from_stored(meta.last_zxid, stored).map_err(|e| corrupt("tree", &e))?;
        let governance = Governance {
            active: match &meta.governance.active {
                Some((hash, info)) => Some(ActivePolicy {
                    hash: *hash,
                    info: info.clone(),
                    component: load_component(&store, hash)?,
                }),
                None => None,
            },
            history: meta.governance.history.clone(),
            judged: meta.governance.judged,
        };
        let sm = ScopeStateMachine {
            scope,
            root: "/".into(),
            store,
            engine,
            view: ScopeView(Arc::new(RwLock::new(ScopeState {
                tree,
                last_applied: meta.last_applied,
                membership: meta.membership,
                governance,
            }))),
            snapshot_dir,
        };
        if let Some(path) = snapshot::newest(&sm.snapshot_dir)? {
            let header = snapshot::read_header(&path)?;
            if header.meta.last_log_id > meta.last_applied {
                tracing::warn!(
                    scope,
                    "finishing a snapshot install interrupted by a crash: {}",
                    path.display()
                );
                sm.load_snapshot_into_store(&path)?;
            }
        }
        Ok(sm)
    }

    pub fn view(&self) -> ScopeView {
        self.view.clone()
    }

    /// Adds the applied position and governance to `batch`, so they commit with the data.
    fn record_applied(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        state: &ScopeState,
    ) -> io::Result<()> {
        let meta = AppliedMeta {
            last_applied: state.last_applied,
            membership: state.membership.clone(),
            last_zxid: state.tree.last_zxid(),
            governance: state.governance.meta(),
        };
        batch.insert(
            &self.store.sm_meta,
            key(self.scope, APPLIED),
            encode("applied position", &meta)?,
        );
        Ok(())
    }

    /// Replaces the scope's rows in fjall and its in-memory state with a snapshot's, in one
    /// atomic batch.
    fn load_snapshot_into_store(&self, path: &std::path::Path) -> io::Result<()> {
        let contents = snapshot::decode(path)?;
        let header = contents.header;
        let tree = Tree::from_stored(header.last_zxid, contents.znodes.clone())
            .map_err(|e| corrupt("snapshot tree", &e))?;
        let mut batch = self.store.db.batch();
        for guard in self.store.tree.prefix(self.scope.to_be_bytes()) {
            let k = guard.key().map_err(|e| io_err("reading the tree", e))?;
            batch.remove(&self.store.tree, k);
        }
        for (p, z) in &contents.znodes {
            batch.insert(
                &self.store.tree,
                key(self.scope, p.as_bytes()),
                encode("znode", z)?,
            );
        }
        let governance = Governance {
            active: contents.policy.map(|(hash, info, component)| ActivePolicy {
                hash,
                info,
                component: Arc::new(component),
            }),
            history: header.history.clone(),
            judged: header.judged,
        };
        if let Some(active) = &governance.active {
            batch.insert(
                &self.store.policies,
                active.hash.0,
                crate::storage::seal(&active.component),
            );
        }
        let state = ScopeState {
            tree,
            last_applied: header.meta.last_log_id,
            membership: header.meta.last_membership.clone(),
            governance,
        };
        self.record_applied(&mut batch, &state)?;
        batch
            .commit()
            .map_err(|e| io_err("installing a snapshot", e))?;
        self.store.sync_now()?;
        *self.view.write() = state;
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for ScopeStateMachine {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(
        &mut self,
    ) -> Result<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>, io::Error> {
        // Everything applied so far becomes durable first: the log behind this snapshot may be
        // purged as soon as it exists.
        self.store.sync_now()?;
        let (meta, bytes) = {
            let state = self.view.read();
            let meta = SnapshotMeta {
                last_log_id: state.last_applied,
                last_membership: state.membership.clone(),
            };
            let bytes = snapshot::encode(&meta, &state.tree, &state.governance)?;
            (meta, bytes)
        };
        let path = self.snapshot_dir.join(snapshot::file_name(&meta));
        let dir = self.snapshot_dir.clone();
        let written = path.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            snapshot::write_atomically(&written, &bytes)?;
            snapshot::remove_older(&dir, &written)
        })
        .await
        .map_err(|e| io::Error::other(format!("snapshot writer panicked: {e}")))??;
        tracing::info!(scope = self.scope, "built snapshot {}", path.display());
        Ok(openraft::Snapshot {
            meta,
            snapshot: SnapshotFile { path },
        })
    }
}

impl RaftStateMachine<TypeConfig> for ScopeStateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let state = self.view.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let entries: Vec<EntryResponder<TypeConfig>> = entries.try_collect().await?;
        let mut responses = Vec::with_capacity(entries.len());
        let mut batch = self.store.db.batch();
        {
            let mut state = self.view.write();
            let state = &mut *state;
            let mut touched = BTreeSet::new();
            for (entry, responder) in entries {
                let log_id = entry.log_id();
                assert!(
                    Some(&log_id) > state.last_applied.as_ref(),
                    "apply must move forward"
                );
                let outcome = match entry.payload {
                    EntryPayload::Blank => CommandOutcome::Nothing,
                    EntryPayload::Normal(command) => match &command.body {
                        Body::Txns(proposals) => {
                            let applied = governance::apply_txns(
                                &self.engine,
                                &mut state.governance,
                                &mut state.tree,
                                command.stamp,
                                proposals,
                                log_id.index(),
                                &self.root,
                            )
                            .map_err(|fault| {
                                tracing::error!(scope = self.scope, "apply halts: {}", fault.0);
                                io::Error::other(fault.0)
                            })?;
                            let results = applied
                                .into_iter()
                                .map(|a| {
                                    touched.extend(a.touched);
                                    TxnResult {
                                        zxid: a.zxid,
                                        outcome: a.outcome,
                                    }
                                })
                                .collect();
                            CommandOutcome::Txns(results)
                        }
                        Body::SetPolicy { principal, set } => {
                            let zxid = state.tree.last_zxid();
                            let result = state.governance.set_policy(
                                principal,
                                set,
                                log_id.index(),
                                command.stamp,
                                zxid,
                            );
                            if let Some(active) =
                                state.governance.active.as_ref().filter(|_| result.is_ok())
                            {
                                batch.insert(
                                    &self.store.policies,
                                    active.hash.0,
                                    crate::storage::seal(&active.component),
                                );
                                tracing::info!(scope = self.scope, log_index = log_id.index(), policy = %active.hash, mode = ?active.info.mode, "policy replaced");
                            }
                            CommandOutcome::PolicySet(result)
                        }
                    },
                    EntryPayload::Membership(m) => {
                        state.membership = StoredMembership::new(Some(log_id), m);
                        CommandOutcome::Nothing
                    }
                };
                state.last_applied = Some(log_id);
                if let Some(responder) = responder {
                    let zxid = state.tree.last_zxid();
                    responses.push((responder, CommandResult { zxid, outcome }));
                }
            }
            for p in &touched {
                let k = key(self.scope, p.as_bytes());
                match state.tree.stored(p) {
                    Some(z) => batch.insert(&self.store.tree, k, encode("znode", &z)?),
                    None => batch.remove(&self.store.tree, k),
                }
            }
            self.record_applied(&mut batch, state)?;
        }
        batch
            .commit()
            .map_err(|e| io_err("persisting applied entries", e))?;
        for (responder, result) in responses {
            responder.send(result);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        // The file goes into place first; if we crash before the batch below, `open` finishes
        // the install from it.
        let target = self.snapshot_dir.join(snapshot::file_name(meta));
        if snapshot.path != target {
            let bytes = std::fs::read(&snapshot.path)?;
            let header = snapshot::read_header(&snapshot.path)?;
            if header.meta.last_log_id != meta.last_log_id {
                return Err(corrupt(
                    "received snapshot",
                    "its header disagrees with its meta",
                ));
            }
            snapshot::write_atomically(&target, &bytes)?;
        }
        self.load_snapshot_into_store(&target)?;
        snapshot::remove_older(&self.snapshot_dir, &target)?;
        tracing::info!(
            scope = self.scope,
            "installed snapshot {}",
            target.display()
        );
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>>, io::Error> {
        let Some(path) = snapshot::newest(&self.snapshot_dir)? else {
            return Ok(None);
        };
        let header = snapshot::read_header(&path)?;
        Ok(Some(openraft::Snapshot {
            meta: header.meta,
            snapshot: SnapshotFile { path },
        }))
    }
}

#[cfg(test)]
mod tests {
    use futures::stream;
    use openraft::entry::RaftEntry;
    use openraft::{RaftSnapshotBuilder, storage::RaftStateMachine};
    use scopekeeper_client::proto::{CreateMode, Op};

    use super::*;
    use crate::scope::types::{Command, Entry};
    use crate::tree::{Stamp, Txn};

    fn create(index: u64, path: &str) -> Result<EntryResponder<TypeConfig>, io::Error> {
        let command = Command {
            stamp: Stamp {
                zxid_hint: index as i64,
                time_ms: 0,
            },
            body: Body::Txns(vec![crate::scope::types::Proposal {
                principal: Default::default(),
                txn: Txn::Single(Op::Create {
                    path: path.into(),
                    data: b"d".to_vec(),
                    mode: CreateMode::Persistent,
                }),
            }]),
        };
        Ok((
            Entry::new_normal(
                openraft::testing::log_id::<TypeConfig>(1, 1, index),
                command,
            ),
            None,
        ))
    }

    fn engine() -> PolicyEngine {
        PolicyEngine::new().expect("policy engine")
    }

    #[tokio::test]
    async fn an_install_interrupted_after_the_file_is_finished_on_reopen() {
        let leader_dir = tempfile::tempdir().expect("tempdir");
        let leader_store = Store::open(leader_dir.path()).expect("store");
        let mut leader = ScopeStateMachine::open(leader_store, 7, engine()).expect("sm");
        let entries = vec![create(1, "/a"), create(2, "/a/b"), create(3, "/c")];
        leader.apply(stream::iter(entries)).await.expect("apply");
        let snapshot = leader.build_snapshot().await.expect("snapshot");

        // The follower crashed after placing the file and before the fjall batch.
        let follower_dir = tempfile::tempdir().expect("tempdir");
        let follower_store = Store::open(follower_dir.path()).expect("store");
        let target = follower_dir
            .path()
            .join("snapshots/7")
            .join(snapshot::file_name(&snapshot.meta));
        std::fs::create_dir_all(target.parent().expect("dir")).expect("mkdir");
        std::fs::copy(&snapshot.snapshot.path, &target).expect("copy");
        std::fs::write(target.with_extension("tmp"), b"half-written").expect("stale temporary");

        let follower = ScopeStateMachine::open(follower_store.clone(), 7, engine())
            .expect("reopen finishes the install");
        assert_eq!(follower.view().read().tree, leader.view().read().tree);
        assert_eq!(
            follower.view().read().last_applied,
            snapshot.meta.last_log_id
        );
        assert!(
            !target.with_extension("tmp").exists(),
            "stale temporaries are removed"
        );
        // And the rows are in fjall: a second reopen needs no snapshot.
        std::fs::remove_file(&target).expect("remove");
        let again = ScopeStateMachine::open(follower_store, 7, engine()).expect("reopen");
        assert_eq!(again.view().read().tree, leader.view().read().tree);
    }
}
