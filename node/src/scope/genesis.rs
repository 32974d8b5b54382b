//! A child scope's first state, written behind its parent's apply.
//!
//! A split's apply in the parent carves the subtree in memory and commits only small rows:
//! the delegation in the parent and the child's meta, marked `genesis_from` the parent. The
//! carved znodes' rows stay where they were, under the parent's id, which never writes them
//! again (they are delegated). Moving them under the child's id (and encoding them once for the
//! child's first snapshot) is the expensive part of a split, so it happens on a blocking thread
//! after the parent's batch is durable: the parent goes on applying while its child is born.
//!
//! The move is one batch: the child's rows, the parent's rows gone, the child's meta without
//! the mark. A crash before it leaves the mark, and the child's opening finishes the move from
//! the parent's rows (`finish_from_parent_rows`), which hold exactly the carved state. Until the
//! move is done the child is `pending` here: nothing opens it, and whatever would disturb the
//! parent's rows under it (an Absorb of the child, a snapshot install or a retirement of the
//! parent) waits for it.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use super::snapshot;
use super::state_machine::{AppliedMeta, ScopeEvent, ScopeEvents, ScopeState};
use crate::storage::{ScopeId, Store, corrupt, encode, io_err, key};

/// Child scopes being born on this node, and those born whose state waits for their opening.
#[derive(Clone, Default)]
pub struct Newborns(Arc<Nursery>);

#[derive(Default)]
struct Nursery {
    cribs: Mutex<Cribs>,
    born: tokio::sync::Notify,
    /// Tests: births are not carried out, as if the node crashed right after the carve.
    #[cfg(test)]
    stillborn: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Cribs {
    /// Born: the state its creation wrote, for its opening to take instead of reading it back.
    ready: BTreeMap<ScopeId, Newborn>,
    /// Child -> parent, for children whose rows are still the parent's.
    pending: BTreeMap<ScopeId, ScopeId>,
}

/// A child scope's state as its creation wrote it, and its znodes' snapshot records.
pub struct Newborn {
    pub state: ScopeState,
    pub records: Vec<u8>,
}

impl Newborns {
    fn cribs(&self) -> std::sync::MutexGuard<'_, Cribs> {
        self.0.cribs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The parent is about to commit `child`'s meta with its rows still the parent's.
    pub fn expect(&self, child: ScopeId, parent: ScopeId) {
        self.cribs().pending.insert(child, parent);
    }

    fn born(&self, child: ScopeId, newborn: Option<Newborn>) {
        {
            let mut cribs = self.cribs();
            cribs.pending.remove(&child);
            if let Some(n) = newborn {
                cribs.ready.insert(child, n);
            }
        }
        self.0.born.notify_waiters();
    }

    /// Tests: leave every child's rows with its parent, as a crash after the carve would.
    #[cfg(test)]
    pub fn crash_before_births(&self) {
        self.0
            .stillborn
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn take(&self, child: ScopeId) -> Option<Newborn> {
        self.cribs().ready.remove(&child)
    }

    /// Waits until no child that `pending` picks is still being born.
    async fn until(&self, pending: impl Fn(&ScopeId, &ScopeId) -> bool) {
        loop {
            let notified = self.0.born.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.cribs().pending.iter().any(|(c, p)| pending(c, p)) {
                return;
            }
            notified.await;
        }
    }

    /// Waits until `child`'s rows are its own (at once if it is not being born here).
    pub async fn until_born(&self, child: ScopeId) {
        self.until(|c, _| *c == child).await
    }

    /// Waits until every child of `parent` being born here is born.
    pub async fn until_children_born(&self, parent: ScopeId) {
        self.until(|_, p| *p == parent).await
    }
}

/// Moves a new child's rows from its parent's keys to its own, on a blocking thread, then
/// leaves its state for its opening and reports it (`Delegated`) so that the node opens it.
/// Called after the parent's batch that carved it (and [`Newborns::expect`]ed it) is durable.
pub fn spawn(
    store: Store,
    parent: ScopeId,
    child: ScopeState,
    newborns: Newborns,
    events: Option<ScopeEvents>,
) {
    #[cfg(test)]
    if newborns
        .0
        .stillborn
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return;
    }
    tokio::task::spawn_blocking(move || {
        let id = child.identity.id;
        let started = std::time::Instant::now();
        let newborn = match write(&store, parent, &child) {
            Ok(records) => Some(Newborn {
                state: child,
                records,
            }),
            Err(e) => {
                // The mark stays in the child's meta: its opening moves the rows instead.
                tracing::error!(
                    scope = parent,
                    child = id,
                    "writing a new child scope's rows failed; its opening will retry: {e}"
                );
                None
            }
        };
        tracing::info!(
            scope = parent,
            child = id,
            ms = started.elapsed().as_millis() as u64,
            "wrote a new child scope's rows"
        );
        newborns.born(id, newborn);
        if let Some(events) = events {
            // Nobody listens only while the node shuts down; the rows are durable either way.
            let _ = events.send(ScopeEvent::Delegated { parent, child: id });
        }
    });
}

/// One batch: the child's znode rows under its id, the parent's rows of them gone, and the
/// child's meta without the mark. Returns the znodes' snapshot records, assembled from the
/// same encodings, for the child's first snapshot.
fn write(store: &Store, parent: ScopeId, child: &ScopeState) -> io::Result<Vec<u8>> {
    let id = child.identity.id;
    // Sized up front: growing a buffer of a million records copies it again and again.
    let estimate: usize = child
        .tree
        .iter()
        .map(|(p, z)| 48 + p.len() + z.data.len() + z.acl.len() * 48)
        .sum();
    let mut records = Vec::with_capacity(estimate);
    let mut batch = store.db.batch();
    for (p, z) in child.tree.iter() {
        let body = snapshot::push_znode_record(&mut records, p, &z.stored_ref())?;
        batch.insert(
            &store.tree,
            key(id, p.as_bytes()),
            crate::storage::seal(&records[body]),
        );
        batch.remove(&store.tree, key(parent, p.as_bytes()));
    }
    batch.insert(
        &store.sm_meta,
        key(id, super::state_machine::APPLIED),
        encode("applied position", &AppliedMeta::of(child))?,
    );
    batch
        .commit()
        .map_err(|e| io_err("writing a new child scope's rows", e))?;
    Ok(records)
}

/// Finishes a move a crash interrupted: the child's rows are still under `parent`'s id (the
/// parent never writes below a delegation, so they are the carved state as it was). Moves them
/// and clears the mark in `meta`, durably.
pub(super) fn finish_from_parent_rows(
    store: &Store,
    child: ScopeId,
    parent: ScopeId,
    meta: &mut AppliedMeta,
) -> io::Result<()> {
    let root = meta.identity.root.clone();
    let mut batch = store.db.batch();
    let mut moved = 0usize;
    for guard in store.tree.prefix(key(parent, root.as_bytes())) {
        let (k, v) = guard
            .into_inner()
            .map_err(|e| io_err("reading a parent's rows", e))?;
        let path =
            std::str::from_utf8(&k[8..]).map_err(|_| corrupt("znode key", "path is not UTF-8"))?;
        // The prefix `/a` also finds `/ab`.
        if !scopekeeper_client::path::is_within(path, &root) {
            continue;
        }
        batch.insert(&store.tree, key(child, path.as_bytes()), v);
        batch.remove(&store.tree, k);
        moved += 1;
    }
    if moved == 0 {
        return Err(corrupt(
            "new child scope",
            &format!(
                "scope {child} at {root} was created here, but its starting znodes are in \
                 neither its rows nor its parent {parent}'s"
            ),
        ));
    }
    meta.genesis_from = None;
    batch.insert(
        &store.sm_meta,
        key(child, super::state_machine::APPLIED),
        encode("applied position", &*meta)?,
    );
    batch
        .commit()
        .map_err(|e| io_err("moving a new child scope's rows", e))?;
    store.sync_now()?;
    tracing::warn!(
        scope = child,
        parent,
        znodes = moved,
        "finished creating a child scope a crash interrupted"
    );
    Ok(())
}
