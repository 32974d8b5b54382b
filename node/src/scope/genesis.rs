//! A child scope's first state, written behind its parent's apply.
//!
//! A split's apply in the parent carves the subtree in memory and commits only small rows:
//! the delegation in the parent and the child's meta, marked `genesis_from` the parent. The
//! carved znodes' rows stay where they were, under the parent's id, which never writes them
//! again (they are delegated). Moving them under the child's id (and encoding them once for the
//! child's first snapshot) is the expensive part of a split, so it happens on a thread of its
//! own after the parent's batch is durable: the parent goes on applying while its child is
//! born.
//!
//! The child does not wait for its rows: it opens at once from the carved state in memory
//! (`Newborns`) and serves. Until its birth it applies transactions without persisting them
//! (raft's log holds them, and after a crash they are applied again on top of the genesis
//! state); any other entry waits for the birth. The move is one fjall ingestion, copied from
//! the parent's rows (which hold exactly the carved state): the child's rows and the parent's
//! tombstones; then the child's genesis meta without the mark; then the child's first
//! snapshot file, from the same bytes. A crash before it leaves the mark, and the child's
//! opening finishes the move (`finish_from_parent_rows`). Until the move is done the child is `pending` here, and
//! whatever would disturb the rows (an Absorb of the child, a snapshot install or retirement of
//! the parent or of the child) waits for it.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::background::at_low_priority;
use super::snapshot;
use super::state_machine::{AppliedMeta, ScopeEvent, ScopeEvents, ScopeState};
use super::types::SnapshotMeta;
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
    /// Carved states, for the children's openings to take instead of reading them back.
    ready: BTreeMap<ScopeId, ScopeState>,
    /// Child -> parent, for children whose rows are still the parent's.
    pending: BTreeMap<ScopeId, ScopeId>,
    /// Children whose first snapshot file their birth writes (and nothing else may), with its
    /// meta: raft learns of the snapshot before the file exists.
    first_snapshot: BTreeMap<ScopeId, SnapshotMeta>,
}

/// A new child's first snapshot file: its meta, where it goes, and its beginning (the header,
/// before the znode records its birth appends).
pub struct FirstSnapshot {
    pub meta: SnapshotMeta,
    pub path: PathBuf,
    pub header: Vec<u8>,
}

impl FirstSnapshot {
    pub fn of(store: &Store, child: &ScopeState) -> io::Result<FirstSnapshot> {
        let meta = child.snapshot_meta();
        Ok(FirstSnapshot {
            path: snapshot::scope_dir(store, child.identity.id).join(snapshot::file_name(&meta)),
            header: snapshot::header(&meta, child)?,
            meta,
        })
    }
}

impl Newborns {
    fn cribs(&self) -> std::sync::MutexGuard<'_, Cribs> {
        self.0.cribs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The parent is about to commit `child`'s meta with its rows still the parent's; the
    /// child's birth will write its first snapshot, at `first`.
    pub fn expect(&self, child: ScopeId, parent: ScopeId, first: SnapshotMeta) {
        let mut cribs = self.cribs();
        cribs.pending.insert(child, parent);
        cribs.first_snapshot.insert(child, first);
    }

    /// The meta of `child`'s first snapshot, while its birth has yet to write the file.
    pub fn owed_first_snapshot(&self, child: ScopeId) -> Option<SnapshotMeta> {
        self.cribs().first_snapshot.get(&child).cloned()
    }

    fn first_snapshot_written(&self, child: ScopeId) {
        self.cribs().first_snapshot.remove(&child);
        self.0.born.notify_waiters();
    }

    fn give(&self, child: ScopeId, carved: ScopeState) {
        self.cribs().ready.insert(child, carved);
        self.0.born.notify_waiters();
    }

    fn born(&self, child: ScopeId) {
        self.cribs().pending.remove(&child);
        self.0.born.notify_waiters();
    }

    /// Whether `child`'s rows are still its parent's.
    pub fn is_pending(&self, child: ScopeId) -> bool {
        self.cribs().pending.contains_key(&child)
    }

    /// Tests: leave every child's rows with its parent, as a crash after the carve would.
    #[cfg(test)]
    pub fn crash_before_births(&self) {
        self.0
            .stillborn
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn take(&self, child: ScopeId) -> Option<ScopeState> {
        let taken = self.cribs().ready.remove(&child);
        self.0.born.notify_waiters();
        taken
    }

    /// Waits until `done` holds of the cribs.
    async fn until(&self, done: impl Fn(&Cribs) -> bool) {
        loop {
            let notified = self.0.born.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(&self.cribs()) {
                return;
            }
            notified.await;
        }
    }

    /// Waits until `child`'s rows are its own (at once if it is not being born here).
    pub async fn until_born(&self, child: ScopeId) {
        self.until(|c| !c.pending.contains_key(&child)).await
    }

    /// Waits until every child of `parent` being born here is born.
    pub async fn until_children_born(&self, parent: ScopeId) {
        self.until(|c| !c.pending.values().any(|p| *p == parent))
            .await
    }

    /// Waits until `child`'s carved state was taken by its opening.
    async fn until_taken(&self, child: ScopeId) {
        self.until(|c| !c.ready.contains_key(&child)).await
    }

    /// Waits until `child` can be opened: from its carved state, or from its own rows.
    pub async fn until_openable(&self, child: ScopeId) {
        self.until(|c| c.ready.contains_key(&child) || !c.pending.contains_key(&child))
            .await
    }
}

/// Gives a new child's carved state to its opening and reports it (`Delegated`), so that the
/// node opens it at once; then, on a thread of its own, moves its rows from the parent's keys
/// to its own and writes its first snapshot. Called after the parent's batch that carved it
/// (and [`Newborns::expect`]ed it) is durable.
pub fn spawn(
    store: Store,
    parent: ScopeId,
    child: ScopeState,
    first: FirstSnapshot,
    newborns: Newborns,
    events: Option<ScopeEvents>,
) {
    let id = child.identity.id;
    newborns.give(id, child);
    if let Some(events) = &events {
        // Nobody listens only while the node shuts down; the child's meta is durable.
        let _ = events.send(ScopeEvent::Delegated { parent, child: id });
    }
    #[cfg(test)]
    if newborns
        .0
        .stillborn
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return;
    }
    let runtime = tokio::runtime::Handle::current();
    let nursery = newborns.clone();
    let birth = move || {
        let started = std::time::Instant::now();
        let FirstSnapshot {
            path,
            header: mut file,
            ..
        } = first;
        // A failed move is retried, never skipped: until the child's rows are its own, it
        // cannot persist what it applies.
        let mut attempt = 0u32;
        let znodes = loop {
            attempt += 1;
            // A retry may find the rows moved already: the records would miss them.
            let records = (attempt == 1).then_some(&mut file);
            match move_rows(&store, id, parent, records) {
                Ok(znodes) => break znodes,
                Err(e) => {
                    if attempt.is_power_of_two() {
                        tracing::error!(
                            scope = parent,
                            child = id,
                            attempt,
                            "moving a new child scope's rows failed; retrying: {e}"
                        );
                    }
                    std::thread::sleep(
                        MOVE_RETRY_PAUSE
                            .saturating_mul(attempt)
                            .min(MOVE_RETRY_PAUSE_MAX),
                    );
                }
            }
        };
        newborns.born(id);
        tracing::info!(
            scope = parent,
            child = id,
            znodes,
            ms = started.elapsed().as_millis() as u64,
            "moved a new child scope's rows"
        );
        if attempt == 1 {
            // The child's opening clears its snapshot directory of temporaries: the file is
            // written once it has opened.
            let opened = runtime.block_on(async {
                tokio::time::timeout(crate::limits::GENESIS_OPEN_WAIT, newborns.until_taken(id))
                    .await
            });
            if opened.is_err() {
                tracing::warn!(scope = id, "the new scope has not opened yet");
            }
            let written = at_low_priority("writing a new scope's first snapshot", || {
                let bytes = snapshot::finish(file)?;
                snapshot::write_atomically(&path, &bytes)?;
                snapshot::remove_older(path.parent().unwrap_or(&path), &path)
            });
            match written {
                Ok(()) => tracing::info!(
                    scope = id,
                    ms = started.elapsed().as_millis() as u64,
                    "wrote a new scope's first snapshot"
                ),
                Err(e) => tracing::warn!(scope = id, "writing the scope's first snapshot: {e}"),
            }
        } else {
            tracing::warn!(
                scope = id,
                "the scope's first snapshot was not written; the next start builds it"
            );
        }
        // Only a later member needs the file; without it, sending one fails until then.
        newborns.first_snapshot_written(id);
    };
    if let Err(e) = std::thread::Builder::new()
        .name("scope-birth".into())
        .spawn(birth)
    {
        // The child keeps applying in memory, unpersisted, and its next opening (the mark
        // stays in its meta) moves the rows.
        tracing::error!(
            child = id,
            "starting a new scope's birth failed; it stays in memory until this node restarts: {e}"
        );
        nursery.first_snapshot_written(id);
    }
}

/// Finishes a move a crash interrupted (the child's meta is still marked): see [`move_rows`].
pub(super) fn finish_from_parent_rows(
    store: &Store,
    child: ScopeId,
    parent: ScopeId,
    meta: &mut AppliedMeta,
) -> io::Result<()> {
    let znodes = move_rows(store, child, parent, None)?;
    store.sync_now()?;
    meta.genesis_from = None;
    tracing::warn!(
        scope = child,
        parent,
        znodes,
        "finished creating a child scope a crash interrupted"
    );
    Ok(())
}

/// Pause before moving a child's rows again after a storage error, times the attempt, and
/// its cap.
const MOVE_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);
const MOVE_RETRY_PAUSE_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Moves a child's rows from `parent`'s keys to its own, then clears the mark in its stored
/// meta. The parent never writes below a delegation, so its rows there are the carved state
/// as it was, and the child's genesis meta goes with them (the child may have applied more
/// since, in memory: raft's log holds that). The rows and the parent's tombstones go in one
/// fjall ingestion: written sorted, straight to tables that are registered at once, past the
/// journal and the memtables. Through a write batch they went into the node's one journal,
/// which every raft append's fsync syncs too, and filled the memtables until fjall halted
/// every writer of znodes: a stall in every scope of the node (bench/split.sh, 500k znodes:
/// longest write gap in the rest of the scope 175-312 ms in batches, 136-250 ms ingested; the
/// birth took 3-4 s, now about 2 s). The mark, cleared last, makes a crash before the end
/// leave the next opening to move the rows. Appends each znode's snapshot record to `records`
/// if given. Returns how many znodes moved.
fn move_rows(
    store: &Store,
    child: ScopeId,
    parent: ScopeId,
    records: Option<&mut Vec<u8>>,
) -> io::Result<usize> {
    let meta_key = key(child, super::state_machine::APPLIED);
    let mut meta: AppliedMeta = match store
        .sm_meta
        .get(&meta_key)
        .map_err(|e| io_err("reading a new child scope's meta", e))?
    {
        Some(v) => crate::storage::decode("applied position", &v)?,
        None => return Err(corrupt("new child scope", "its meta is missing")),
    };
    if meta.genesis_from != Some(parent) {
        // Moved already (by an opening that found the mark first).
        return Ok(0);
    }
    let root = meta.identity.root.clone();
    let rows = at_low_priority("reading a new scope's rows", || {
        read_rows(store, parent, &root, records)
    })?;
    let moved = rows.len();
    if moved > 0 {
        let fail = |e| io_err("moving a new child scope's rows", e);
        let tables = NewTables::since_now(&store.tree)?;
        let mut ingestion = store.tree.start_ingestion().map_err(fail)?;
        let mut put = |k: Vec<u8>, v: Option<fjall::Slice>| match v {
            Some(v) => ingestion.write(k, v),
            None => ingestion.write_tombstone(k),
        };
        // At normal priority: fjall's ingestion cannot move between threads, and `finish` holds the node's journal lock, which every write of every scope here
        // waits for. It also flushes the keyspace's memtable and fsyncs the last table, so both
        // are done without the lock first. (bench/split.sh, 500k znodes: written and finished
        // at nice 10, the lock was held for 240-580 ms.)
        write_rows(&mut put, &tables, child, parent, &rows)?;
        store
            .tree
            .rotate_memtable_and_wait()
            .map_err(|e| io_err("flushing the znode rows' memtable", e))?;
        ingestion.finish().map_err(fail)?;
    }
    let moved_before = || {
        store
            .tree
            .contains_key(key(child, root.as_bytes()))
            .map_err(|e| io_err("reading a new child scope's root", e))
    };
    if moved == 0 && !moved_before()? {
        return Err(corrupt(
            "new child scope",
            &format!(
                "scope {child} at {root} was created here, but its starting znodes are in \
                 neither its rows nor its parent {parent}'s"
            ),
        ));
    }
    meta.genesis_from = None;
    store
        .sm_meta
        .insert(meta_key, encode("applied position", &meta)?)
        .map_err(|e| io_err("moving a new child scope's rows", e))?;
    Ok(moved)
}

/// The parent's rows below `root`, each appended to `records` as a snapshot record if given.
fn read_rows(
    store: &Store,
    parent: ScopeId,
    root: &str,
    mut records: Option<&mut Vec<u8>>,
) -> io::Result<Vec<(fjall::Slice, fjall::Slice)>> {
    let mut rows = Vec::new();
    for guard in store.tree.prefix(key(parent, root.as_bytes())) {
        let (k, v) = guard
            .into_inner()
            .map_err(|e| io_err("reading a parent's rows", e))?;
        let path =
            std::str::from_utf8(&k[8..]).map_err(|_| corrupt("znode key", "path is not UTF-8"))?;
        // The prefix `/a` also finds `/ab`.
        if !scopekeeper_client::path::is_within(path, root) {
            continue;
        }
        if let Some(records) = records.as_deref_mut() {
            snapshot::push_raw_record(records, path, crate::storage::unseal("znode", &v)?)?;
        }
        rows.push((k, v));
    }
    Ok(rows)
}

/// Writes `rows` under `child`'s keys, and the parent's tombstones, with `put` (an
/// ingestion's write: nothing is visible before its `finish`). Its tables are on disk when
/// this returns.
fn write_rows(
    put: &mut impl FnMut(Vec<u8>, Option<fjall::Slice>) -> fjall::Result<()>,
    tables: &NewTables,
    child: ScopeId,
    parent: ScopeId,
    rows: &[(fjall::Slice, fjall::Slice)],
) -> io::Result<()> {
    let fail = |e| io_err("moving a new child scope's rows", e);
    let mut unsynced = 0usize;
    // Keys go in ascending order: the child's rows and the parent's tombstones are two runs,
    // in the order of the two ids.
    let inserts = rows
        .iter()
        .map(|(k, v)| (key(child, &k[8..]), Some(v.clone())));
    let tombstones = rows.iter().map(|(k, _)| (k.to_vec(), None));
    let ordered: Box<dyn Iterator<Item = (Vec<u8>, Option<fjall::Slice>)>> = if child < parent {
        Box::new(inserts.chain(tombstones))
    } else {
        Box::new(tombstones.chain(inserts))
    };
    for (k, v) in ordered {
        unsynced += k.len() + v.as_ref().map_or(0, |v| v.len());
        put(k, v).map_err(fail)?;
        // A little at a time, so that the journal's fsyncs never queue behind a large
        // write-back, and none is left for `finish`.
        if unsynced >= crate::limits::SYNC_STEP_BYTES {
            tables.sync()?;
            unsynced = 0;
        }
    }
    tables.sync()
}

/// The table files an ingestion writes, found as the files of the keyspace's tables folder that
/// were not there when it started (a flush or compaction that finishes meanwhile adds some
/// too; syncing those is harmless). fjall's ingestion has no hook to sync its tables as it
/// writes them, so [`NewTables::sync`] does it from outside, through the page cache they share.
struct NewTables {
    folder: PathBuf,
    before: std::collections::BTreeSet<std::ffi::OsString>,
}

impl NewTables {
    fn since_now(keyspace: &fjall::Keyspace) -> io::Result<NewTables> {
        let folder = keyspace.path().join("tables");
        let before = Self::names(&folder)?;
        Ok(NewTables { folder, before })
    }

    fn names(
        folder: &std::path::Path,
    ) -> io::Result<std::collections::BTreeSet<std::ffi::OsString>> {
        let listing = match std::fs::read_dir(folder) {
            Ok(listing) => listing,
            // No table yet: the ingestion makes the folder.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Default::default()),
            Err(e) => return Err(fs_err("listing the znode rows' tables", e)),
        };
        listing
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(|e| fs_err("listing the znode rows' tables", e))
    }

    /// Writes the new tables' data written so far to disk.
    fn sync(&self) -> io::Result<()> {
        for name in Self::names(&self.folder)?.difference(&self.before) {
            match std::fs::File::open(self.folder.join(name)) {
                Ok(file) => file
                    .sync_data()
                    .map_err(|e| fs_err("writing a new child scope's tables to disk", e))?,
                // Compacted away already: on disk in its successor, or not needed.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(fs_err("opening a new child scope's table", e)),
            }
        }
        Ok(())
    }
}

fn fs_err(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}
