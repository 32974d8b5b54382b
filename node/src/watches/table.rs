//! Which session watches what, and which events a change gives each: ZooKeeper 3.8's rules,
//! as a pure table. Exists and getData watches are one kind here, as in ZooKeeper's server.
//!
//! - `NodeCreated` fires data watches and persistent watches on the node, and recursive
//!   watches on it or any ancestor.
//! - `NodeDeleted` fires data, child and persistent watches on the node, recursive ones above.
//! - `NodeDataChanged` fires data and persistent watches on the node, recursive ones above.
//! - `NodeChildrenChanged` fires child and persistent watches on the node; never recursive.
//!
//! A session hears of one change once, whatever number of its watches it fires. One-shot
//! watches go when they fire. A watch still being armed (its read in flight) keeps the
//! changes it would see, and replays those newer than the zxid it is armed at.

use std::collections::{BTreeMap, BTreeSet};

use scopekeeper_client::path;
use scopekeeper_client::proto::{ApiError, ErrorCode, EventKind, WatchEvent, WatchKind};

use crate::storage::ScopeId;
use crate::tree::Change;

/// How a watch is kept: exists and getData watches are both data watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    Data,
    Child,
    Persistent,
    Recursive,
}

impl Slot {
    pub fn of(kind: WatchKind) -> Slot {
        match kind {
            WatchKind::Data | WatchKind::Exist => Slot::Data,
            WatchKind::Child => Slot::Child,
            WatchKind::Persistent => Slot::Persistent,
            WatchKind::PersistentRecursive => Slot::Recursive,
        }
    }

    fn one_shot(self) -> bool {
        matches!(self, Slot::Data | Slot::Child)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    /// As set: `Exist` only for a node that did not exist when it was armed.
    pub kind: WatchKind,
    /// The scope whose zxids `armed_at` counts in.
    pub scope: ScopeId,
    /// `None` while its read is in flight.
    pub armed_at: Option<i64>,
    /// Changes seen while being armed: (scope, zxid, change).
    pending: Vec<(ScopeId, i64, Change)>,
}

#[derive(Default)]
pub struct WatchTable {
    watches: BTreeMap<(String, i64, Slot), Watch>,
    per_session: BTreeMap<i64, usize>,
}

fn slots_of(kind: Option<WatchKind>) -> Vec<Slot> {
    match kind {
        Some(k) => vec![Slot::of(k)],
        None => vec![Slot::Data, Slot::Child, Slot::Persistent, Slot::Recursive],
    }
}

impl WatchTable {
    /// Adds (or keeps) a watch about to be armed by a read served by `scope`.
    pub fn add(
        &mut self,
        session: i64,
        p: &str,
        kind: WatchKind,
        scope: ScopeId,
    ) -> Result<(), ApiError> {
        let key = (p.to_string(), session, Slot::of(kind));
        if self.watches.contains_key(&key) {
            return Ok(());
        }
        let count = self.per_session.entry(session).or_default();
        if *count >= crate::limits::WATCHES_PER_SESSION_MAX {
            return Err(ApiError::new(
                ErrorCode::BadArguments,
                format!(
                    "session {session:#x} holds {} watches on this node, the most allowed",
                    crate::limits::WATCHES_PER_SESSION_MAX
                ),
            ));
        }
        *count += 1;
        self.watches.insert(
            key,
            Watch {
                kind,
                scope,
                armed_at: None,
                pending: Vec::new(),
            },
        );
        Ok(())
    }

    /// Arms a watch whose read was served by `scope` at `zxid`; returns the events of changes
    /// it saw meanwhile that are newer than its read.
    pub fn arm(
        &mut self,
        session: i64,
        p: &str,
        kind: WatchKind,
        scope: ScopeId,
        zxid: i64,
    ) -> Vec<(i64, WatchEvent)> {
        let key = (p.to_string(), session, Slot::of(kind));
        let Some(w) = self.watches.get_mut(&key) else {
            return Vec::new();
        };
        let missed = if w.armed_at.is_none() {
            std::mem::take(&mut w.pending)
        } else {
            Vec::new()
        };
        w.scope = scope;
        w.kind = kind;
        w.armed_at = Some(w.armed_at.map_or(zxid, |a| a.min(zxid)));
        let mut events = Vec::new();
        for (from, at, change) in missed {
            if from != scope || at > zxid {
                events.extend(self.fire(from, at, &change, Some(session)));
            }
        }
        events
    }

    /// Removes `session`'s watches on `p` of `kind` (all kinds if `None`); how many went.
    pub fn remove(&mut self, session: i64, p: &str, kind: Option<WatchKind>) -> usize {
        let mut removed = 0;
        for slot in slots_of(kind) {
            if self.take((p.to_string(), session, slot)).is_some() {
                removed += 1;
            }
        }
        removed
    }

    /// How many of the session's watches on `p` are of `kind` (any kind if `None`).
    pub fn count(&self, session: i64, p: &str, kind: Option<WatchKind>) -> usize {
        slots_of(kind)
            .into_iter()
            .filter(|slot| self.watches.contains_key(&(p.to_string(), session, *slot)))
            .count()
    }

    /// Forgets every watch of a session that ended.
    pub fn drop_session(&mut self, session: i64) {
        let keys: Vec<_> = self
            .watches
            .keys()
            .filter(|(_, s, _)| *s == session)
            .cloned()
            .collect();
        for k in keys {
            self.take(k);
        }
    }

    fn take(&mut self, key: (String, i64, Slot)) -> Option<Watch> {
        let w = self.watches.remove(&key)?;
        if let Some(n) = self.per_session.get_mut(&key.1) {
            *n -= 1;
            if *n == 0 {
                self.per_session.remove(&key.1);
            }
        }
        Some(w)
    }

    pub fn has_session(&self, session: i64) -> bool {
        self.per_session.contains_key(&session)
    }

    /// Watches held, every session's.
    pub fn len(&self) -> usize {
        self.watches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watches.is_empty()
    }

    /// Scopes whose feeds the table needs.
    pub fn scopes(&self) -> BTreeSet<ScopeId> {
        self.watches.values().map(|w| w.scope).collect()
    }

    /// The armed watches counted in `scope`'s zxids, or on paths within `under`.
    pub fn armed(
        &self,
        scope: Option<ScopeId>,
        under: Option<&str>,
    ) -> Vec<(i64, String, WatchKind, i64)> {
        self.watches
            .iter()
            .filter(|(_, w)| scope.is_none_or(|s| w.scope == s))
            .filter(|((p, _, _), _)| under.is_none_or(|u| path::is_within(p, u)))
            .filter_map(|((p, s, _), w)| w.armed_at.map(|a| (*s, p.clone(), w.kind, a)))
            .collect()
    }

    /// The events one change gives, by session; fired one-shot watches go.
    pub fn apply(&mut self, scope: ScopeId, zxid: i64, change: &Change) -> Vec<(i64, WatchEvent)> {
        self.fire(scope, zxid, change, None)
    }

    /// As `apply`; `only` limits it to one session's watches (a replay).
    fn fire(
        &mut self,
        scope: ScopeId,
        zxid: i64,
        change: &Change,
        only: Option<i64>,
    ) -> Vec<(i64, WatchEvent)> {
        let (kind, p, slots): (EventKind, &str, &[Slot]) = match change {
            Change::Created(p) => (EventKind::NodeCreated, p, &[Slot::Data, Slot::Persistent]),
            Change::Deleted(p) => (
                EventKind::NodeDeleted,
                p,
                &[Slot::Data, Slot::Child, Slot::Persistent],
            ),
            Change::DataChanged(p) => (
                EventKind::NodeDataChanged,
                p,
                &[Slot::Data, Slot::Persistent],
            ),
            Change::ChildrenChanged(p) => (
                EventKind::NodeChildrenChanged,
                p,
                &[Slot::Child, Slot::Persistent],
            ),
            Change::Carved(_) | Change::Absorbed(_) => return Vec::new(),
        };
        let recursive = kind != EventKind::NodeChildrenChanged;
        let mut hit: Vec<(String, i64, Slot)> = Vec::new();
        for &slot in slots {
            let from = (p.to_string(), only.unwrap_or(i64::MIN), slot);
            for ((wp, s, ws), _) in self.watches.range(from..) {
                if wp != p || only.is_some_and(|o| *s != o) {
                    break;
                }
                if *ws == slot {
                    hit.push((wp.clone(), *s, *ws));
                }
            }
        }
        if recursive {
            for a in path::ancestors_and_self(p) {
                for ((wp, s, ws), _) in self.watches.range((a.to_string(), i64::MIN, Slot::Data)..)
                {
                    if wp != a {
                        break;
                    }
                    if *ws == Slot::Recursive && only.is_none_or(|o| *s == o) {
                        hit.push((wp.clone(), *s, *ws));
                    }
                }
            }
        }
        let mut told = BTreeSet::new();
        let mut events = Vec::new();
        for key in hit {
            let w = self.watches.get_mut(&key).expect("found above");
            match w.armed_at {
                None => {
                    w.pending.push((scope, zxid, change.clone()));
                    continue;
                }
                // Its read already saw this change.
                Some(armed) if w.scope == scope && zxid <= armed => continue,
                Some(_) => {}
            }
            let session = key.1;
            if key.2.one_shot() {
                self.take(key);
            }
            if told.insert(session) {
                events.push((
                    session,
                    WatchEvent {
                        kind,
                        path: p.to_string(),
                        zxid,
                    },
                ));
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: ScopeId = 0;

    fn armed(t: &mut WatchTable, session: i64, p: &str, kind: WatchKind, zxid: i64) {
        t.add(session, p, kind, S).expect("room");
        assert!(t.arm(session, p, kind, S, zxid).is_empty());
    }

    fn kinds(events: &[(i64, WatchEvent)]) -> Vec<(i64, EventKind, &str)> {
        events
            .iter()
            .map(|(s, e)| (*s, e.kind, e.path.as_str()))
            .collect()
    }

    #[test]
    fn one_shot_watches_fire_once() {
        let mut t = WatchTable::default();
        armed(&mut t, 1, "/a", WatchKind::Data, 10);
        let first = t.apply(S, 11, &Change::DataChanged("/a".into()));
        assert_eq!(kinds(&first), vec![(1, EventKind::NodeDataChanged, "/a")]);
        assert!(t.apply(S, 12, &Change::DataChanged("/a".into())).is_empty());
        assert!(t.is_empty());
    }

    #[test]
    fn a_deletion_fires_data_and_child_watches_as_one_event() {
        let mut t = WatchTable::default();
        armed(&mut t, 1, "/a", WatchKind::Exist, 10);
        armed(&mut t, 1, "/a", WatchKind::Child, 10);
        armed(&mut t, 2, "/a", WatchKind::Child, 10);
        let events = t.apply(S, 11, &Change::Deleted("/a".into()));
        assert_eq!(
            kinds(&events),
            vec![
                (1, EventKind::NodeDeleted, "/a"),
                (2, EventKind::NodeDeleted, "/a")
            ]
        );
        assert!(t.is_empty());
    }

    #[test]
    fn children_changes_fire_child_and_persistent_but_not_recursive() {
        let mut t = WatchTable::default();
        armed(&mut t, 1, "/a", WatchKind::Child, 10);
        armed(&mut t, 2, "/a", WatchKind::Persistent, 10);
        armed(&mut t, 3, "/", WatchKind::PersistentRecursive, 10);
        let events = t.apply(S, 11, &Change::ChildrenChanged("/a".into()));
        assert_eq!(
            kinds(&events),
            vec![
                (1, EventKind::NodeChildrenChanged, "/a"),
                (2, EventKind::NodeChildrenChanged, "/a")
            ]
        );
        let created = t.apply(S, 12, &Change::Created("/a/b/c".into()));
        assert_eq!(kinds(&created), vec![(3, EventKind::NodeCreated, "/a/b/c")]);
        // Persistent watches stay.
        let again = t.apply(S, 13, &Change::ChildrenChanged("/a".into()));
        assert_eq!(
            kinds(&again),
            vec![(2, EventKind::NodeChildrenChanged, "/a")]
        );
    }

    #[test]
    fn changes_older_than_the_read_do_not_fire_and_newer_ones_replay() {
        let mut t = WatchTable::default();
        t.add(1, "/a", WatchKind::Data, S).expect("room");
        // Seen while the read is in flight: one the read saw, one it did not.
        assert!(t.apply(S, 5, &Change::DataChanged("/a".into())).is_empty());
        assert!(t.apply(S, 9, &Change::DataChanged("/a".into())).is_empty());
        let replayed = t.arm(1, "/a", WatchKind::Data, S, 7);
        assert_eq!(replayed.len(), 1);
        assert_eq!(replayed[0].1.zxid, 9);
        assert!(t.is_empty());
        // An armed watch ignores what its read saw.
        armed(&mut t, 1, "/b", WatchKind::Data, 20);
        assert!(t.apply(S, 20, &Change::DataChanged("/b".into())).is_empty());
        assert_eq!(t.apply(S, 21, &Change::DataChanged("/b".into())).len(), 1);
    }

    #[test]
    fn removing_and_limits() {
        let mut t = WatchTable::default();
        armed(&mut t, 1, "/a", WatchKind::Data, 1);
        armed(&mut t, 1, "/a", WatchKind::Persistent, 1);
        assert_eq!(t.remove(1, "/a", Some(WatchKind::Child)), 0);
        assert_eq!(t.remove(1, "/a", None), 2);
        assert!(!t.has_session(1));
        armed(&mut t, 2, "/x", WatchKind::Data, 1);
        t.drop_session(2);
        assert!(t.is_empty());
    }
}
