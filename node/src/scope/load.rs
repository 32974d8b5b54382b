//! How hard a scope is written, kept deterministically for split decisions: writes are counted
//! in one-second buckets of leader-stamped time, for the scope and for each subtree directly
//! below its root, over the last `LOAD_WINDOW_SECS`. Apply updates it from the entry alone,
//! so every anchor holds the same figures and a new leader needs no warm-up.

use std::collections::BTreeMap;

use scopekeeper_client::path;
use serde::{Deserialize, Serialize};

/// Seconds of history a rate is computed over.
pub const LOAD_WINDOW_SECS: i64 = 10;

/// Writes per second over the window: `(second, count)` buckets, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteWindow {
    buckets: Vec<(i64, u32)>,
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
    /// By the name of the child of the scope's root the write fell under.
    pub subtrees: BTreeMap<String, WriteWindow>,
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
        if let Some(child) = child_below(root, p) {
            self.subtrees
                .entry(child.to_string())
                .or_default()
                .record(sec);
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

/// The name of the child of `root` that `p` is in: `/a/b/c` under `/` is `a`; `None` for the
/// root itself or a path outside it.
pub fn child_below<'p>(root: &str, p: &'p str) -> Option<&'p str> {
    if !path::is_within(p, root) || p == root {
        return None;
    }
    let rest = if root == "/" {
        &p[1..]
    } else {
        &p[root.len() + 1..]
    };
    rest.split('/').next().filter(|c| !c.is_empty())
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
    fn subtrees_are_named_below_the_scope_root() {
        assert_eq!(child_below("/", "/a/b"), Some("a"));
        assert_eq!(child_below("/app", "/app/x/y"), Some("x"));
        assert_eq!(child_below("/app", "/app"), None);
        assert_eq!(child_below("/app", "/apple"), None);
    }

    #[test]
    fn a_clock_stepping_back_counts_in_the_newest_bucket() {
        let mut load = Load::default();
        load.record("/", "/a", 10_000);
        load.record("/", "/a", 9_000);
        assert_eq!(load.scope.buckets, vec![(10, 2)]);
    }
}
