//! One fjall database per node, shared by every scope: keys are prefixed by the scope id, and one
//! journal fsync acknowledges the appends of every scope that wrote since the last one (group
//! commit).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use anyhow::Context;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

/// A scope's id. The root scope is 0.
pub type ScopeId = u64;

pub const ROOT_SCOPE: ScopeId = 0;

/// Work for the syncer thread: run after the next fsync.
type SyncWaiter = Box<dyn FnOnce(Result<(), std::io::Error>) + Send>;

#[derive(Clone)]
pub struct Store {
    pub db: Database,
    /// Raft log entries: scope ++ index.
    pub log: Keyspace,
    /// Raft metadata: scope ++ name (vote, committed, purged).
    pub raft_meta: Keyspace,
    /// Znodes: scope ++ path.
    pub tree: Keyspace,
    /// State machine metadata: scope ++ name (applied position, membership, last zxid).
    pub sm_meta: Keyspace,
    /// Policy components by sha256, shared by every scope that uses them.
    pub policies: Keyspace,
    syncer: mpsc::Sender<SyncWaiter>,
    /// Journal fsyncs done by the syncer, to show that appends share them.
    syncs: Arc<AtomicU64>,
    dir: Arc<PathBuf>,
}

/// The options of the znode rows' keyspace. Its rows are read only by prefix (a scope's
/// opening, a birth, a snapshot), never looked up one by one on a hot path: the tree in memory answers
/// every read. So its tables carry no bloom filters, which only serve lookups of absent keys.
/// Building one was most of a big birth's ingestion `finish`, which holds the node's journal
/// lock: every write of the node waits for it (`bench/split.sh`, 500k znodes, timed inside
/// lsm-tree: the writer's finish took 50-92 ms with filters, 3-38 ms without). fjall keeps a
/// keyspace's options from its creation, so a database made before this keeps its filters.
fn znode_rows() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().filter_policy(fjall::config::FilterPolicy::disabled())
}

impl Store {
    /// Opens (or creates) the node's database under `dir/db`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let db_dir = dir.join("db");
        let db = Database::builder(&db_dir).open().with_context(|| {
            format!(
                "the node database at {} cannot be opened; if it is corrupt, restore it from a \
                     backup or remove this node from the cluster and add it back under a new id",
                db_dir.display()
            )
        })?;
        let open_with = |name: &str, options: fn() -> KeyspaceCreateOptions| {
            db.keyspace(name, options)
                .with_context(|| format!("opening keyspace {name} in {}", db_dir.display()))
        };
        let open = |name: &str| open_with(name, KeyspaceCreateOptions::default);
        let (log, raft_meta, tree, sm_meta, policies) = (
            open("raft_log")?,
            open("raft_meta")?,
            open_with("tree", znode_rows)?,
            open("sm_meta")?,
            open("policies")?,
        );
        let syncs = Arc::new(AtomicU64::new(0));
        let syncer = spawn_syncer(db.clone(), syncs.clone());
        Ok(Store {
            db,
            log,
            raft_meta,
            tree,
            sm_meta,
            policies,
            syncer,
            syncs,
            dir: Arc::new(dir.to_path_buf()),
        })
    }

    /// How many group fsyncs the syncer has done.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Calls `done` once everything written so far is on disk. Many callers share one fsync.
    pub fn sync_then(&self, done: SyncWaiter) {
        if let Err(mpsc::SendError(done)) = self.syncer.send(done) {
            done(Err(std::io::Error::other("the storage syncer has stopped")));
        }
    }

    /// Deletes every row and snapshot of one scope, durably: for a replica that was removed
    /// from its scope. The rows go in one batch, so a crash leaves all or none of them.
    pub fn remove_scope(&self, scope: ScopeId) -> std::io::Result<()> {
        let mut batch = self.db.batch();
        for keyspace in [&self.log, &self.raft_meta, &self.tree, &self.sm_meta] {
            for guard in keyspace.prefix(scope.to_be_bytes()) {
                let k = guard
                    .key()
                    .map_err(|e| io_err("listing a removed scope's rows", e))?;
                batch.remove(keyspace, k);
            }
        }
        batch
            .commit()
            .map_err(|e| io_err("deleting a removed scope", e))?;
        self.sync_now()?;
        let snapshots = crate::scope::snapshot::scope_dir(self, scope);
        match std::fs::remove_dir_all(&snapshots) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Makes everything written so far durable before returning: a full fsync, for the rare
    /// paths that wait on it (the group-commit syncer's fdatasync serves raft's appends).
    pub fn sync_now(&self) -> std::io::Result<()> {
        self.db
            .persist(PersistMode::SyncAll)
            .map_err(|e| std::io::Error::other(format!("fsync of the node database failed: {e}")))
    }
}

/// The group-commit thread: waits for one request, takes every other request already queued,
/// syncs once (`fdatasync` of the journal), and answers them all.
fn spawn_syncer(db: Database, syncs: Arc<AtomicU64>) -> mpsc::Sender<SyncWaiter> {
    let (tx, rx) = mpsc::channel::<SyncWaiter>();
    std::thread::Builder::new()
        .name("fjall-syncer".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut waiters = vec![first];
                waiters.extend(rx.try_iter());
                // fdatasync, not fsync: it still makes the journal's bytes, and the block
                // allocation and size needed to read them back, durable; it skips only the
                // timestamps. fjall itself fsyncs a journal fully when it seals it and
                // creates the next (and the directory). Measured on the dev cluster, creates,
                // alternating: throughput higher in 6 of 6 pairs, by 10-26% at 8 clients and
                // 14-18% at 64.
                let result = db.persist(PersistMode::SyncData);
                syncs.fetch_add(1, Ordering::Relaxed);
                for w in waiters {
                    w(result
                        .as_ref()
                        .map(|_| ())
                        .map_err(|e| std::io::Error::other(format!("fsync failed: {e}"))));
                }
            }
        })
        .expect("spawning the syncer thread");
    tx
}

/// `scope ++ suffix`, the key layout of every keyspace.
pub fn key(scope: ScopeId, suffix: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + suffix.len());
    k.extend_from_slice(&scope.to_be_bytes());
    k.extend_from_slice(suffix);
    k
}

/// A value with a CRC-32 in front, checked on every read so that a corrupt disk is reported,
/// not applied.
pub fn seal(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + body.len());
    v.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
    v.extend_from_slice(body);
    v
}

pub fn unseal<'a>(what: &str, value: &'a [u8]) -> std::io::Result<&'a [u8]> {
    if value.len() < 4 {
        return Err(corrupt(what, "value shorter than its checksum"));
    }
    let (crc, body) = value.split_at(4);
    let expected = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(body) != expected {
        return Err(corrupt(what, "checksum mismatch"));
    }
    Ok(body)
}

pub fn corrupt(what: &str, why: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "corrupt {what} in the node database ({why}); the node cannot continue on this data"
        ),
    )
}

pub fn encode<T: serde::Serialize>(what: &str, value: &T) -> std::io::Result<Vec<u8>> {
    postcard::to_stdvec(value)
        .map(|b| seal(&b))
        .map_err(|e| std::io::Error::other(format!("encoding {what}: {e}")))
}

pub fn decode<T: serde::de::DeserializeOwned>(what: &str, value: &[u8]) -> std::io::Result<T> {
    postcard::from_bytes(unseal(what, value)?).map_err(|e| corrupt(what, &e.to_string()))
}

pub fn io_err(what: &str, e: fjall::Error) -> std::io::Error {
    std::io::Error::other(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_sync_requests_share_fsyncs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let (tx, rx) = mpsc::channel();
        let requests = 200;
        for i in 0..requests {
            store
                .log
                .insert(key(1, &u64::to_be_bytes(i)), b"entry")
                .expect("insert");
            let tx = tx.clone();
            store.sync_then(Box::new(move |r| tx.send(r.is_ok()).expect("send")));
        }
        for _ in 0..requests {
            assert!(rx.recv().expect("every waiter is answered"), "fsync failed");
        }
        let syncs = store.syncs();
        assert!(syncs >= 1);
        assert!(
            syncs < requests / 2,
            "{syncs} fsyncs for {requests} queued requests"
        );
    }

    #[test]
    fn sealed_values_detect_corruption() {
        let mut sealed = seal(b"znode");
        assert_eq!(unseal("test", &sealed).expect("intact"), b"znode");
        sealed[5] ^= 1;
        let err = unseal("test", &sealed).expect_err("flipped bit");
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        assert!(unseal("test", &[1, 2]).is_err());
    }
}
