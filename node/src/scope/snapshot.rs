//! Snapshot files: the tree of one scope at one log position, written once and never changed.
//!
//! Layout: magic, a length-prefixed header (raft meta, last zxid, znode count), one
//! length-prefixed record per znode in path order, and a CRC-32 of everything before it.
//! Files are written to a temporary name, fsynced and renamed, so a crash leaves either the old
//! snapshot or the new one, never half of one.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use scopekeeper_client::proto::PolicyInfo;

use std::collections::BTreeMap;

use super::state_machine::ScopeState;
use super::types::SnapshotMeta;
use crate::directory::{Route, ScopeIdentity};
use crate::policy::PolicyHash;
use crate::storage::corrupt;
use crate::tree::StoredZnode;

const MAGIC: &[u8; 8] = b"SKSNAP04";

/// What openraft carries between the state machine and the network: a finished snapshot file.
#[derive(Clone, Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub meta: SnapshotMeta,
    pub last_zxid: i64,
    pub znodes: u64,
    /// The active policy (its component follows the header as one record), and its history.
    pub policy: Option<(PolicyHash, PolicyInfo)>,
    pub history: Vec<PolicyInfo>,
    pub judged: super::governance::Judged,
    pub identity: ScopeIdentity,
    pub delegations: BTreeMap<String, Route>,
    pub replica_high: u64,
    pub genesis_high: u64,
    pub load: super::load::Load,
    pub last_split_ms: i64,
    pub sealed: Option<u64>,
    pub absorbed: std::collections::BTreeSet<u64>,
    pub nodes: BTreeMap<u64, scopekeeper_client::proto::ClusterNode>,
    pub sessions: crate::tree::SessionBook,
}

/// A decoded snapshot.
pub struct SnapshotContents {
    pub header: SnapshotHeader,
    pub policy: Option<(PolicyHash, PolicyInfo, Vec<u8>)>,
    pub znodes: Vec<(String, StoredZnode)>,
}

/// Serializes the scope in memory; the caller writes it out without holding the state's lock.
pub fn encode(meta: &SnapshotMeta, state: &ScopeState) -> io::Result<Vec<u8>> {
    let mut records = Vec::with_capacity(state.tree.len() * 64);
    for (path, znode) in state.tree.iter() {
        records = push_record_into(records, &(path, znode.stored_ref()))?;
    }
    encode_with_records(meta, state, &records)
}

/// Appends a znode's record whose body, the znode's own encoding, is already made: a stored
/// row's value without its checksum (`storage::encode` is the same bytes and a checksum), so
/// a new scope's first snapshot is cut from the rows its birth moves.
pub fn push_raw_record(records: &mut Vec<u8>, path: &str, body: &[u8]) -> io::Result<()> {
    let at = records.len();
    records.extend_from_slice(&[0; 4]);
    let mut taken = postcard::to_extend(path, std::mem::take(records))
        .map_err(|e| io::Error::other(format!("encoding snapshot: {e}")))?;
    taken.extend_from_slice(body);
    *records = taken;
    let len = u32::try_from(records.len() - at - 4)
        .map_err(|_| io::Error::other("snapshot record over 4 GiB"))?;
    records[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// A snapshot of `state` whose znode records, in path order, are already in `records`.
pub fn encode_with_records(
    meta: &SnapshotMeta,
    state: &ScopeState,
    records: &[u8],
) -> io::Result<Vec<u8>> {
    let mut out = header(meta, state)?;
    out.extend_from_slice(records);
    finish(out)
}

/// A snapshot file's beginning: the magic, the header of `state` at `meta`, and its policy's
/// component. The znode records follow, then [`finish`].
pub fn header(meta: &SnapshotMeta, state: &ScopeState) -> io::Result<Vec<u8>> {
    let (tree, governance) = (&state.tree, &state.governance);
    let header = SnapshotHeader {
        meta: meta.clone(),
        last_zxid: tree.last_zxid(),
        znodes: tree.len() as u64,
        policy: governance.active.as_ref().map(|a| (a.hash, a.info.clone())),
        history: governance.history.clone(),
        judged: governance.judged,
        identity: state.identity.clone(),
        delegations: state.delegations.clone(),
        replica_high: state.replica_high,
        genesis_high: state.genesis_high,
        load: state.load.clone(),
        last_split_ms: state.last_split_ms,
        sealed: state.sealed,
        absorbed: state.absorbed.clone(),
        nodes: state.nodes.clone(),
        sessions: tree.session_book().clone(),
    };
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    push_record(&mut out, &header)?;
    if let Some(active) = &governance.active {
        push_record(&mut out, &serde_bytes::Bytes::new(&active.component))?;
    }
    Ok(out)
}

/// Ends a snapshot file begun by [`header`] and its records with their checksum.
pub fn finish(mut out: Vec<u8>) -> io::Result<Vec<u8>> {
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// As [`push_record`], serializing in place: a snapshot has a record per znode.
fn push_record_into<T: Serialize>(mut out: Vec<u8>, value: &T) -> io::Result<Vec<u8>> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    let mut out = postcard::to_extend(value, out)
        .map_err(|e| io::Error::other(format!("encoding snapshot: {e}")))?;
    let len = u32::try_from(out.len() - at - 4)
        .map_err(|_| io::Error::other("snapshot record over 4 GiB"))?;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

fn push_record<T: Serialize>(out: &mut Vec<u8>, value: &T) -> io::Result<()> {
    let body = postcard::to_stdvec(value)
        .map_err(|e| io::Error::other(format!("encoding snapshot: {e}")))?;
    let len =
        u32::try_from(body.len()).map_err(|_| io::Error::other("snapshot record over 4 GiB"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// Writes `bytes` to `path` crash-safely: temporary file, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("snapshot path has no directory"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    // A little at a time: a large write-back queues the node's journal fsyncs behind it.
    for chunk in bytes.chunks(crate::limits::SYNC_STEP_BYTES) {
        f.write_all(chunk)?;
        f.sync_data()?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Reads and verifies a whole snapshot file.
pub fn decode(path: &Path) -> io::Result<SnapshotContents> {
    let what = format!("snapshot {}", path.display());
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    if bytes.len() < MAGIC.len() + 4 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt(&what, "not a snapshot file"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_be_bytes() != crc {
        return Err(corrupt(&what, "checksum mismatch"));
    }
    let mut rest = &body[MAGIC.len()..];
    let header: SnapshotHeader = next_record(&what, &mut rest)?;
    let policy = match &header.policy {
        Some((hash, info)) => {
            let component: serde_bytes::ByteBuf = next_record(&what, &mut rest)?;
            if PolicyHash::of(&component) != *hash {
                return Err(corrupt(
                    &what,
                    "the policy component does not match its hash",
                ));
            }
            Some((*hash, info.clone(), component.into_vec()))
        }
        None => None,
    };
    let mut znodes = Vec::with_capacity(header.znodes.min(1 << 24) as usize);
    while !rest.is_empty() {
        znodes.push(next_record(&what, &mut rest)?);
    }
    if znodes.len() as u64 != header.znodes {
        return Err(corrupt(&what, "znode count does not match its header"));
    }
    Ok(SnapshotContents {
        header,
        policy,
        znodes,
    })
}

/// Reads only the header, to list snapshots without loading them.
pub fn read_header(path: &Path) -> io::Result<SnapshotHeader> {
    let what = format!("snapshot {}", path.display());
    let mut f = std::fs::File::open(path)?;
    let mut head = [0u8; 12];
    f.read_exact(&mut head)?;
    if &head[..8] != MAGIC {
        return Err(corrupt(&what, "not a snapshot file"));
    }
    let len = u32::from_be_bytes([head[8], head[9], head[10], head[11]]) as usize;
    if len > 64 * 1024 * 1024 {
        return Err(corrupt(&what, "header length out of range"));
    }
    let mut body = vec![0u8; len];
    f.read_exact(&mut body)?;
    postcard::from_bytes(&body).map_err(|e| corrupt(&what, &e.to_string()))
}

fn next_record<T: serde::de::DeserializeOwned>(what: &str, rest: &mut &[u8]) -> io::Result<T> {
    if rest.len() < 4 {
        return Err(corrupt(what, "truncated record length"));
    }
    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    if rest.len() < 4 + len {
        return Err(corrupt(what, "truncated record"));
    }
    let value =
        postcard::from_bytes(&rest[4..4 + len]).map_err(|e| corrupt(what, &e.to_string()))?;
    *rest = &rest[4 + len..];
    Ok(value)
}

/// Where a scope's snapshot files live on this node.
pub fn scope_dir(store: &crate::storage::Store, scope: crate::storage::ScopeId) -> PathBuf {
    store.dir().join("snapshots").join(scope.to_string())
}

/// `<index:020>-<leader>.snap`: names sort in log order.
pub fn file_name(meta: &SnapshotMeta) -> String {
    match &meta.last_log_id {
        Some(id) => format!("{:020}-{}.snap", id.index(), id.committed_leader_id()),
        None => "00000000000000000000-none.snap".to_string(),
    }
}

/// The newest finished snapshot in `dir`, if any.
pub fn newest(dir: &Path) -> io::Result<Option<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut best: Option<PathBuf> = None;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "snap") && best.as_ref().is_none_or(|b| path > *b)
        {
            best = Some(path);
        }
    }
    Ok(best)
}

/// Removes every finished snapshot in `dir` older than `keep`.
pub fn remove_older(dir: &Path, keep: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "snap") && path.as_path() < keep {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Removes temporary files a crash left behind. Only at start-up, when nothing writes.
pub fn remove_temporaries(dir: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if path
            .extension()
            .is_some_and(|e| e == "tmp" || e == "partial")
        {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use scopekeeper_client::proto::{Acl, Id, Stat};

    use super::*;

    #[test]
    fn a_record_assembled_from_a_stored_row_is_the_encoded_record() {
        let znode = crate::tree::Znode {
            data: b"payload".to_vec(),
            stat: Stat {
                czxid: 9,
                data_length: 7,
                ..Stat::default()
            },
            acl: vec![Acl {
                perms: 1,
                id: Id::new("world", "anyone"),
            }],
            children: Default::default(),
            extent: Default::default(),
        };
        let path = "/a/b";
        let encoded = push_record_into(Vec::new(), &(path, znode.stored_ref())).expect("encode");
        let row = crate::storage::encode("row", &znode.stored_ref()).expect("row");
        let body = crate::storage::unseal("row", &row).expect("unseal");
        let mut assembled = Vec::new();
        push_raw_record(&mut assembled, path, body).expect("push");
        assert_eq!(assembled, encoded);
    }
}
