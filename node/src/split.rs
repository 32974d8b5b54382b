//! Splits with no coordinator: each scope's leader asks the scope's own policy, every
//! `SPLIT_TICK`, whether the scope should split and where, from the replicated figures (znodes,
//! bytes, write rates over leader-stamped time, per subtree below the root). A yes becomes a
//! `Split` entry in the scope's own log; every anchor carves the subtree into a new scope on
//! the same anchors (as `scope create` does), and placement moves it from there.

use std::collections::BTreeMap;
use std::sync::Arc;

use scopekeeper_client::path;

use crate::limits;
use crate::node::Node;
use crate::policy::engine::{Compiled, PolicyEngine};
use crate::policy::placement::{self, SplitStats};
use crate::scope::Scope;

/// The figures `split` is asked about, from the scope's state: subtrees largest first, at most
/// `SPLIT_CANDIDATES_MAX` of them. The root's children are walked `SPLIT_CHILDREN_PER_LOCK` at
/// a time, the lock let go in between: the figures are the leader's hint, and the `Split`
/// entry it proposes is checked on apply, so they need not be one instant's.
pub fn stats(scope: &Scope) -> SplitStats {
    let max = limits::SPLIT_CANDIDATES_MAX;
    // The largest so far, by name below the root; selected before any path is built.
    let mut largest: Vec<(String, u64, u64, u64)> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let state = scope.view().read();
        let mut walked: Vec<(&str, u64, u64, u64)> = state
            .tree
            .subtrees_after(after.as_deref())
            .take(limits::SPLIT_CHILDREN_PER_LOCK)
            .map(|(name, extent)| {
                let rate = state.load.subtree_per_sec(name);
                (name, extent.znodes, extent.bytes, rate)
            })
            .collect();
        let done = walked.len() < limits::SPLIT_CHILDREN_PER_LOCK;
        after = walked.last().map(|(name, ..)| name.to_string());
        walked.extend(largest.iter().map(|(n, z, b, r)| (n.as_str(), *z, *b, *r)));
        largest = keep_largest(walked, max)
            .into_iter()
            .map(|(name, z, b, r)| (name.to_string(), z, b, r))
            .collect();
        if done {
            break;
        }
    }
    let state = scope.view().read();
    let root = &state.identity.root;
    let subtrees = largest
        .into_iter()
        .map(|(name, znodes, bytes, rate)| (path::join(root, &name), znodes, bytes, rate))
        .collect();
    // Asked by the leader, not at apply: its own clock (the one that stamps the scope's entries)
    // says how long the scope has been quiet, which no entry records.
    let now_ms = crate::scope::wall_clock_ms();
    SplitStats {
        znodes: state.tree.len() as u64,
        data_bytes: state.tree.data_bytes(),
        writes_per_sec: state.load.scope_per_sec(),
        ms_since_split: u64::try_from(now_ms - state.last_split_ms).unwrap_or(0),
        ms_since_write: u64::try_from(now_ms - state.load.now_sec.saturating_mul(1000))
            .unwrap_or(0),
        subtrees,
    }
}

/// The `max` first of `subtrees` (name, znodes, bytes, writes per second) by size, then rate,
/// then name, in that order.
fn keep_largest(
    mut subtrees: Vec<(&str, u64, u64, u64)>,
    max: usize,
) -> Vec<(&str, u64, u64, u64)> {
    let order = |a: &(&str, u64, u64, u64), b: &(&str, u64, u64, u64)| {
        (b.1, b.3, a.0).cmp(&(a.1, a.3, b.0))
    };
    if subtrees.len() > max {
        subtrees.select_nth_unstable_by(max, order);
        subtrees.truncate(max);
    }
    subtrees.sort_by(order);
    subtrees
}

/// Whether `at` may be split off: below the scope's root, governed by it, an existing znode.
pub fn valid_split_point(scope: &Scope, at: &str) -> Result<(), String> {
    let state = scope.view().read();
    let root = &state.identity.root;
    if at == root || !path::is_within(at, root) {
        return Err(format!("{at} is not below the scope's root {root}"));
    }
    state.tree.owns(at).map_err(|e| e.message)?;
    if state.tree.get(at).is_none() {
        return Err(format!("{at} does not exist"));
    }
    Ok(())
}

/// The node's split loop.
pub async fn run(node: Node) {
    // Last applied index at which each scope was asked, so an unchanged scope is not asked again.
    let mut asked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut tick = tokio::time::interval(limits::SPLIT_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for scope in node.scopes() {
            if !scope.raft.is_leader() || !scope.is_initialized() {
                continue;
            }
            if crate::merge::consider(&node, &scope).await {
                continue;
            }
            let applied = scope.view().read().last_applied.map_or(0, |l| l.index());
            if asked.insert(scope.id, applied) == Some(applied) {
                continue;
            }
            if let Some(at) = decide(&node, &scope).await {
                tracing::info!(scope = scope.id, at, "the scope's policy splits it");
                if let Err(e) = scope.propose_split(at.clone()).await {
                    tracing::warn!(scope = scope.id, at, "split refused: {e:?}");
                }
            }
        }
    }
}

/// Asks the scope's active policy a leader-only question about the scope's figures, on a
/// blocking thread (compiling first on a cache miss). `None` if the scope has no policy.
pub(crate) async fn ask_policy<T: Send + 'static>(
    node: &Node,
    scope: &Scope,
    call: fn(&PolicyEngine, &Compiled, &str, &SplitStats) -> Result<T, String>,
) -> Option<Result<T, String>> {
    let (hash, component, params) = scope.view().read().governance.active_code()?;
    let figures = stats(scope);
    let engine = node.0.host.engine.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let compiled = engine
            .compiled(hash, &component)
            .map_err(|e| e.to_string())?;
        call(&engine, &compiled, &params, &figures)
    })
    .await;
    Some(answer.unwrap_or_else(|e| Err(format!("the policy call failed: {e}"))))
}

async fn decide(node: &Node, scope: &Arc<Scope>) -> Option<String> {
    let answer = ask_policy(node, scope, placement::split).await?;
    match answer {
        Ok(Some(at)) => match valid_split_point(scope, &at) {
            Ok(()) => Some(at),
            Err(why) => {
                tracing::warn!(
                    scope = scope.id,
                    at,
                    "the policy chose a bad split point: {why}"
                );
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(scope = scope.id, "asking the policy to split: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::keep_largest;

    #[test]
    fn candidates_are_the_largest_then_hottest_then_first_by_name() {
        let names: Vec<String> = (0..1000).map(|i| format!("n{i:04}")).collect();
        let subtrees: Vec<(&str, u64, u64, u64)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), (i % 7) as u64, i as u64, (i % 5) as u64))
            .collect();
        let mut expected = subtrees.clone();
        expected.sort_by(|a, b| (b.1, b.3, a.0).cmp(&(a.1, a.3, b.0)));
        expected.truncate(64);
        assert_eq!(keep_largest(subtrees.clone(), 64), expected);
        // Kept a part at a time, as `stats` walks them: the same.
        let mut kept: Vec<(&str, u64, u64, u64)> = Vec::new();
        for part in subtrees.chunks(100) {
            kept.extend_from_slice(part);
            kept = keep_largest(kept, 64);
        }
        assert_eq!(kept, expected);
        assert_eq!(keep_largest(subtrees[..3].to_vec(), 64).len(), 3);
        assert_eq!(keep_largest(subtrees[..3].to_vec(), 64)[0].0, "n0002");
    }
}
