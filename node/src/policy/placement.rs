//! Calling a policy's `place-anchors` export: which nodes should hold a scope.

use wasmtime::Store;

use super::engine::{Compiled, PolicyEngine};
use super::quorum::QuorumAnchor;
use super::wit::exports::scopekeeper::policy::rules as wit;
use crate::limits;

/// Voters and observers (raft learners), as node ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    pub voters: Vec<u64>,
    pub observers: Vec<u64>,
    /// The voter the policy wants leading, if it has a preference.
    pub leader: Option<u64>,
}

/// A fresh instance of a policy with `fuel`, for the leader-only calls (placement, split,
/// quorum tables): none of them shares an instance with another decision.
pub fn fresh_instance(
    engine: &PolicyEngine,
    compiled: &Compiled,
    fuel: u64,
) -> Result<(Store<()>, super::wit::Policy), String> {
    let mut store = Store::new(engine.engine(), ());
    store.set_fuel(fuel).map_err(|e| format!("{e:#}"))?;
    let policy = compiled
        .pre
        .instantiate(&mut store)
        .map_err(|e| format!("{e:#}"))?;
    Ok((store, policy))
}

/// Nodes as the WIT world carries them.
pub fn wit_nodes(nodes: &[QuorumAnchor]) -> Vec<wit::Node> {
    nodes
        .iter()
        .map(|n| wit::Node {
            id: n.id,
            labels: n
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
        .collect()
}

/// Asks the policy where the scope's anchors should be, given the eligible nodes and the
/// current placement. Runs on the leader only, on a fresh instance; its answer becomes
/// membership changes, which are what the log records.
pub fn place(
    engine: &PolicyEngine,
    compiled: &Compiled,
    params: &str,
    nodes: &[QuorumAnchor],
    current: &Placement,
) -> Result<Placement, String> {
    let (mut store, policy) = fresh_instance(engine, compiled, limits::POLICY_FUEL_VALIDATE)?;
    let nodes = wit_nodes(nodes);
    let current = wit::Placement {
        voters: current.voters.clone(),
        observers: current.observers.clone(),
        leader: current.leader,
    };
    let placed = policy
        .scopekeeper_policy_rules()
        .call_place_anchors(&mut store, params, &nodes, &current)
        .map_err(|e| format!("the policy's placement trapped: {e:#}"))?;
    Ok(Placement {
        voters: placed.voters,
        observers: placed.observers,
        leader: placed.leader,
    })
}

/// A scope's figures as `split` sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SplitStats {
    pub znodes: u64,
    pub data_bytes: u64,
    pub writes_per_sec: u64,
    pub ms_since_split: u64,
    pub ms_since_write: u64,
    /// (path, znodes, data bytes, writes per second) of the subtrees below the root.
    pub subtrees: Vec<(String, u64, u64, u64)>,
}

/// Asks the policy whether the scope should split, and where. Leader only, fresh instance.
pub fn split(
    engine: &PolicyEngine,
    compiled: &Compiled,
    params: &str,
    stats: &SplitStats,
) -> Result<Option<String>, String> {
    let (mut store, policy) = fresh_instance(engine, compiled, limits::POLICY_FUEL_VALIDATE)?;
    let scope = scope_stats(stats);
    let subtrees: Vec<wit::SubtreeStats> = stats
        .subtrees
        .iter()
        .map(
            |(path, znodes, data_bytes, writes_per_sec)| wit::SubtreeStats {
                path: path.clone(),
                znodes: *znodes,
                data_bytes: *data_bytes,
                writes_per_sec: *writes_per_sec,
            },
        )
        .collect();
    policy
        .scopekeeper_policy_rules()
        .call_split(&mut store, params, scope, &subtrees)
        .map_err(|e| format!("the policy's split trapped: {e:#}"))
}

fn scope_stats(stats: &SplitStats) -> wit::ScopeStats {
    wit::ScopeStats {
        znodes: stats.znodes,
        data_bytes: stats.data_bytes,
        writes_per_sec: stats.writes_per_sec,
        ms_since_split: stats.ms_since_split,
        ms_since_write: stats.ms_since_write,
    }
}

/// Asks a child scope's policy whether the scope should merge back into its parent. Leader
/// only, fresh instance.
pub fn merge(
    engine: &PolicyEngine,
    compiled: &Compiled,
    params: &str,
    stats: &SplitStats,
) -> Result<bool, String> {
    let (mut store, policy) = fresh_instance(engine, compiled, limits::POLICY_FUEL_VALIDATE)?;
    policy
        .scopekeeper_policy_rules()
        .call_merge(&mut store, params, scope_stats(stats))
        .map_err(|e| format!("the policy's merge trapped: {e:#}"))
}
