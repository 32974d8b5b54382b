//! A scope's raft log and vote in the node's fjall database. Appends are acknowledged through
//! the shared syncer, so concurrent appends of any number of scopes share one fsync.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};

use super::tenure::Tenure;
use super::types::{Entry, LogId, TypeConfig, Vote};
use crate::storage::{ScopeId, Store, decode, encode, io_err, key};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"purged";
/// This node's raft id in the scope.
const REPLICA: &[u8] = b"replica";

#[derive(Clone)]
pub struct ScopeLog {
    store: Store,
    scope: ScopeId,
    tenure: Tenure,
}

impl ScopeLog {
    pub fn new(store: Store, scope: ScopeId, tenure: Tenure) -> Self {
        ScopeLog {
            store,
            scope,
            tenure,
        }
    }

    fn entry_key(&self, index: u64) -> Vec<u8> {
        key(self.scope, &index.to_be_bytes())
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, name: &[u8]) -> io::Result<Option<T>> {
        let value = self
            .store
            .raft_meta
            .get(key(self.scope, name))
            .map_err(|e| io_err("reading raft metadata", e))?;
        value.map(|v| decode("raft metadata", &v)).transpose()
    }

    fn put_meta<T: serde::Serialize>(&self, name: &[u8], value: &T) -> io::Result<()> {
        let value = encode("raft metadata", value)?;
        self.tenure.write("writing raft metadata", || {
            self.store
                .raft_meta
                .insert(key(self.scope, name), value)
                .map_err(|e| io_err("writing raft metadata", e))
        })
    }

    /// This node's raft id in the scope, once chosen.
    pub fn replica(&self) -> io::Result<Option<u64>> {
        self.get_meta(REPLICA)
    }

    pub fn set_replica(&self, replica: u64) -> io::Result<()> {
        self.put_meta(REPLICA, &replica)?;
        self.store.sync_now()
    }

    /// Whether any scope has raft state on this node: a log entry or a vote.
    pub fn any_state(store: &Store) -> io::Result<bool> {
        if store.log.iter().next().is_some() {
            return Ok(true);
        }
        for guard in store.raft_meta.iter() {
            let k = guard
                .key()
                .map_err(|e| io_err("reading raft metadata", e))?;
            if k.len() > 8 && &k[8..] == VOTE {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether this scope has any raft state on this node (a vote or a log).
    pub fn has_state(&self) -> io::Result<bool> {
        let vote: Option<Vote> = self.get_meta(VOTE)?;
        let any_entry = self
            .store
            .log
            .prefix(self.scope.to_be_bytes())
            .next()
            .is_some();
        Ok(vote.is_some() || any_entry)
    }

    fn last_entry(&self) -> io::Result<Option<Entry>> {
        let Some(guard) = self.store.log.prefix(self.scope.to_be_bytes()).next_back() else {
            return Ok(None);
        };
        let value = guard
            .value()
            .map_err(|e| io_err("reading the raft log", e))?;
        decode("raft log entry", &value).map(Some)
    }
}

impl RaftLogReader<TypeConfig> for ScopeLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(self.entry_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(self.entry_key(*i)),
            Bound::Unbounded => Bound::Included(self.entry_key(u64::MAX)),
        };
        let mut entries = Vec::new();
        for guard in self
            .store
            .log
            .range((Bound::Included(self.entry_key(start)), end))
        {
            let value = guard
                .value()
                .map_err(|e| io_err("reading the raft log", e))?;
            let entry: Entry = decode("raft log entry", &value)?;
            // Entries before the first one may be purged; after it they must be contiguous.
            let expected = entries
                .last()
                .map_or(entry.index(), |e: &Entry| e.index() + 1);
            if entry.index() != expected || entry.index() < start {
                return Err(crate::storage::corrupt(
                    "raft log",
                    &format!("found entry {} where {expected} belongs", entry.index()),
                ));
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for ScopeLog {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.get_meta(PURGED)?;
        let last_log_id = match self.last_entry()? {
            Some(e) => Some(e.log_id()),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.put_meta(VOTE, vote)?;
        self.store.sync_now()
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not synced: a lost update only means re-learning the commit index from the leader.
        self.put_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
    {
        let mut batch = self.store.db.batch();
        for entry in entries {
            let value = encode("raft log entry", &entry)?;
            batch.insert(&self.store.log, self.entry_key(entry.index()), value);
        }
        self.tenure.write("appending to the raft log", || {
            batch
                .commit()
                .map_err(|e| io_err("appending to the raft log", e))
        })?;
        self.store
            .sync_then(Box::new(move |result| callback.io_completed(result)));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        let mut batch = self.store.db.batch();
        for guard in self
            .store
            .log
            .range(self.entry_key(from)..=self.entry_key(u64::MAX))
        {
            let k = guard.key().map_err(|e| io_err("reading the raft log", e))?;
            batch.remove(&self.store.log, k);
        }
        self.tenure.write("truncating the raft log", || {
            batch
                .commit()
                .map_err(|e| io_err("truncating the raft log", e))
        })
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Record the purge point first: entries at or before it are ignored from now on.
        self.put_meta(PURGED, &log_id)?;
        let mut batch = self.store.db.batch();
        for guard in self
            .store
            .log
            .range(self.entry_key(0)..=self.entry_key(log_id.index()))
        {
            let k = guard.key().map_err(|e| io_err("reading the raft log", e))?;
            batch.remove(&self.store.log, k);
        }
        self.tenure.write("purging the raft log", || {
            batch
                .commit()
                .map_err(|e| io_err("purging the raft log", e))
        })
    }
}
