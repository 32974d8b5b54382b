//! How hard a scope is written, kept deterministically for split decisions: writes are counted
//! in one-second buckets of leader-stamped time, for the scope and for each subtree directly
//! below its root, over the last `LOAD_WINDOW_SECS`. Apply updates it from the entry alone,
//! so every anchor holds the same figures and a new leader needs no warm-up.
//!
//! At most `LOAD_SUBTREES_MAX` subtrees are kept. A write to a subtree not kept, with the table
//! full, takes the place of the subtree with the fewest writes in the window, the least
//! recently written of those: a subtree written often enough never has the fewest, and one
//! written once and never again goes first. A pure function of the writes, so every anchor
//! keeps the same ones.

use std::collections::BTreeMap;

use scopekeeper_client::path;
use serde::{Deserialize, Serialize};

use crate::limits::LOAD_SUBTREES_MAX;

/// Seconds of history a rate is computed over.
pub const LOAD_WINDOW_SECS: i64 = 10;

/// Writes per second over the window: `(second, count)` buckets, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteWindow {
    buckets: Vec<(i64, u32)>,
    /// The scope's write count (`Load::writes`) at this window's latest write.
    last_write: u64,
}

impl WriteWindow {
    fn record(&mut self, sec: i64) {
        match self.buckets.last_mut() {
            Some((s, n)) if *s == sec => *n = n.saturating_add(1),
            // Leader clocks may step back after a failover; late writes join the newest bucket.
            Some((s, n)) if *s > sec => *n = n.saturating_add(1),
            _ => self.buckets.push((sec, 1)),
        }
    }

    fn prune(&mut self, now_sec: i64) {
        self.buckets
            .retain(|(s, _)| *s > now_sec - LOAD_WINDOW_SECS);
    }

    /// Writes in the buckets kept (pruned to the window at each new second).
    fn writes(&self) -> u64 {
        self.buckets.iter().map(|(_, n)| u64::from(*n)).sum()
    }

    /// Writes per second over the last `LOAD_WINDOW_SECS` before `now_sec`.
    pub fn per_sec(&self, now_sec: i64) -> u64 {
        let writes: u64 = self
            .buckets
            .iter()
            .filter(|(s, _)| *s > now_sec - LOAD_WINDOW_SECS)
            .map(|(_, n)| u64::from(*n))
            .sum();
        writes / LOAD_WINDOW_SECS as u64
    }

    fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// A scope's write load.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    /// The latest leader-stamped second seen: "now" for this scope's figures.
    pub now_sec: i64,
    pub scope: WriteWindow,
    /// By the name of the child of the scope's root the write fell under; at most
    /// `LOAD_SUBTREES_MAX`.
    pub subtrees: BTreeMap<String, WriteWindow>,
    /// Writes counted since the scope began: orders the subtrees' latest writes.
    writes: u64,
}

impl Load {
    /// Counts one successful write to `p`, stamped `time_ms`, in the scope rooted at `root`.
    pub fn record(&mut self, root: &str, p: &str, time_ms: i64) {
        let sec = time_ms.div_euclid(1000);
        if sec > self.now_sec {
            self.now_sec = sec;
            self.scope.prune(sec);
            self.subtrees.retain(|_, w| {
                w.prune(sec);
                !w.is_empty()
            });
        }
        self.scope.record(sec);
        self.writes += 1;
        let Some(child) = path::child_below(root, p) else {
            return;
        };
        let window = match self.subtrees.get_mut(child) {
            Some(window) => window,
            None => {
                if self.subtrees.len() >= LOAD_SUBTREES_MAX {
                    self.evict_one();
                }
                self.subtrees.entry(child.to_string()).or_default()
            }
        };
        window.record(sec);
        window.last_write = self.writes;
        debug_assert!(self.subtrees.len() <= LOAD_SUBTREES_MAX);
    }

    /// Forgets the subtree with the fewest writes in the window, the least recently written
    /// of those (`last_write` differs between any two subtrees, so the choice is unique).
    fn evict_one(&mut self) {
        let victim = self
            .subtrees
            .iter()
            .min_by_key(|(_, w)| (w.writes(), w.last_write))
            .map(|(name, _)| name.clone());
        if let Some(victim) = victim {
            self.subtrees.remove(&victim);
        }
    }

    /// Writes per second to the subtree under `child` (a name below the root).
    pub fn subtree_per_sec(&self, child: &str) -> u64 {
        self.subtrees
            .get(child)
            .map_or(0, |w| w.per_sec(self.now_sec))
    }

    pub fn scope_per_sec(&self) -> u64 {
        self.scope.per_sec(self.now_sec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_cover_the_last_ten_seconds_of_stamped_time() {
        let mut load = Load::default();
        for i in 0..100 {
            load.record("/", "/a/x", 1_000_000 + i * 50); // 20/s for 5 s
        }
        load.record("/", "/b", 1_004_999);
        assert_eq!(
            load.subtree_per_sec("a"),
            10,
            "100 writes over a 10 s window"
        );
        assert_eq!(load.subtree_per_sec("b"), 0);
        assert_eq!(load.scope_per_sec(), 10);
        // Twenty seconds later only the new write counts, and idle subtrees are forgotten.
        load.record("/", "/c", 1_025_000);
        assert_eq!(load.subtree_per_sec("a"), 0);
        assert!(!load.subtrees.contains_key("a"));
        assert_eq!(load.scope_per_sec(), 0);
    }

    #[test]
    fn a_clock_stepping_back_counts_in_the_newest_bucket() {
        let mut load = Load::default();
        load.record("/", "/a", 10_000);
        load.record("/", "/a", 9_000);
        assert_eq!(load.scope.buckets, vec![(10, 2)]);
    }

    #[test]
    fn one_off_children_do_not_grow_the_table_or_push_out_a_hot_subtree() {
        let mut load = Load::default();
        // Every other write creates a new child of the root; the rest go to /hot.
        for i in 0..100_000i64 {
            let time_ms = 1_000_000 + i / 10;
            load.record("/", &format!("/n{i}"), time_ms);
            load.record("/", "/hot/x", time_ms);
        }
        assert_eq!(load.subtrees.len(), LOAD_SUBTREES_MAX);
        assert_eq!(
            load.subtree_per_sec("hot"),
            100_000 / LOAD_WINDOW_SECS as u64
        );
        // The newest one-off names are the ones kept.
        assert!(load.subtrees.contains_key("n99999"));
        assert!(!load.subtrees.contains_key("n0"));
        assert_eq!(load.scope_per_sec(), 200_000 / LOAD_WINDOW_SECS as u64);
    }

    #[test]
    fn a_subtree_past_the_bound_takes_the_place_of_the_coldest() {
        let mut load = Load::default();
        for i in 0..LOAD_SUBTREES_MAX {
            for _ in 0..=i {
                load.record("/", &format!("/s{i}"), 5_000);
            }
        }
        load.record("/", "/new", 5_000);
        assert!(load.subtrees.contains_key("new"));
        assert!(
            !load.subtrees.contains_key("s0"),
            "s0 had the fewest writes"
        );
        assert!(load.subtrees.contains_key("s1"));
        // The newcomer, at one write, is now the coldest: the next one-off takes its place,
        // not s1's (two writes).
        load.record("/", "/newer", 5_000);
        assert!(load.subtrees.contains_key("newer"));
        assert!(!load.subtrees.contains_key("new"));
        assert!(load.subtrees.contains_key("s1"));
    }
}
