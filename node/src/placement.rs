//! Placement: each scope's leader keeps the scope's anchors where its policy wants them.
//!
//! Every `PLACEMENT_TICK` the node looks at the scopes it leads: it asks the policy's
//! `place-anchors` (or keeps the current anchors when there is no policy), repairs the answer
//! (drained and unknown nodes are replaced), and moves the scope by raft membership changes:
//! new anchors join as learners under fresh replica ids and catch up, then the voter set is
//! replaced in one joint-consensus change, then leftover learners go. Nothing here is
//! replicated state; the membership entries it causes are.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use openraft::ChangeMembers;
use scopekeeper_client::proto::{ClusterNode, Reply, Request};

use crate::limits;
use crate::node::Node;
use crate::policy::placement::{self, Placement};
use crate::policy::quorum::{self, QuorumAnchor};
use crate::scope::Scope;
use crate::scope::types::AnchorNode;

/// The placement to move to: the policy's answer with ineligible nodes (drained, unknown)
/// replaced by eligible ones not yet chosen, lowest id first, voters and observers disjoint,
/// at most `QUORUM_ANCHORS_MAX` voters. An answer with no eligible voter keeps `current`.
pub fn repair(proposed: &Placement, current: &Placement, eligible: &BTreeSet<u64>) -> Placement {
    let wanted: BTreeSet<u64> = proposed.voters.iter().copied().collect();
    let mut voters: BTreeSet<u64> = wanted.intersection(eligible).copied().collect();
    let mut spare = eligible.iter().filter(|id| !wanted.contains(id));
    while voters.len() < wanted.len().min(limits::QUORUM_ANCHORS_MAX) {
        match spare.next() {
            Some(id) => {
                voters.insert(*id);
            }
            None => break,
        }
    }
    while voters.len() > limits::QUORUM_ANCHORS_MAX {
        let last = *voters.iter().next_back().expect("non-empty");
        voters.remove(&last);
    }
    if voters.is_empty() {
        return current.clone();
    }
    let observers: Vec<u64> = proposed
        .observers
        .iter()
        .copied()
        .filter(|id| eligible.contains(id) && !voters.contains(id))
        .collect::<BTreeSet<u64>>()
        .into_iter()
        .collect();
    // A leader the policy prefers only counts if it is one of the voters.
    let leader = proposed.leader.filter(|l| voters.contains(l));
    Placement {
        voters: voters.into_iter().collect(),
        observers,
        leader,
    }
}

/// What a placement decision depends on: the registry, the scope's policy and membership.
/// A scope whose inputs are unchanged since its last evaluation is not evaluated again, so a
/// thousand idle scopes cost nothing here either.
fn inputs(scope: &Scope, registry: &BTreeMap<u64, ClusterNode>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for n in registry.values() {
        (n.id, &n.addr, &n.labels, n.draining).hash(&mut h);
    }
    {
        let state = scope.view().read();
        if let Some(a) = &state.governance.active {
            (a.hash.0, &a.info.params).hash(&mut h);
        }
    }
    let (membership, term) = scope.metrics(|m| {
        (
            m.membership_config.log_id().map(|l| l.index()),
            m.current_term,
        )
    });
    (membership, term).hash(&mut h);
    h.finish()
}

/// The node's placement loop.
pub async fn run(node: Node) {
    let moving: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let mut settled: BTreeMap<u64, u64> = BTreeMap::new();
    // When each scope last asked to hand its leadership over.
    let mut handed: BTreeMap<u64, std::time::Instant> = BTreeMap::new();
    let mut tick = tokio::time::interval(limits::PLACEMENT_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let led: Vec<Arc<Scope>> = node
            .scopes()
            .into_iter()
            // A sealed scope is merging into its parent on its parent's anchors: it stays.
            .filter(|s| {
                s.raft.is_leader() && s.is_initialized() && s.view().read().sealed.is_none()
            })
            .collect();
        handed.retain(|id, _| led.iter().any(|s| s.id == *id));
        if led.is_empty() {
            continue;
        }
        let Some(registry) = registry(&node).await else {
            continue;
        };
        for scope in led {
            if moving
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&scope.id)
            {
                continue;
            }
            let seen = inputs(&scope, &registry);
            if settled.get(&scope.id) == Some(&seen) {
                continue;
            }
            let target = match target(&node, &scope, &registry).await {
                None => {
                    settled.insert(scope.id, seen);
                    continue;
                }
                Some(Decision::HandOver(to)) => {
                    // Not settled: asked again, now and then, until leadership has moved.
                    let due = handed
                        .get(&scope.id)
                        .is_none_or(|at| at.elapsed() >= limits::HAND_OVER_RETRY);
                    if due {
                        handed.insert(scope.id, std::time::Instant::now());
                        hand_over(&scope, to).await;
                    }
                    continue;
                }
                Some(Decision::Move(target)) => target,
            };
            settled.remove(&scope.id);
            moving
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(scope.id);
            let (moving, registry, node) = (moving.clone(), registry.clone(), node.clone());
            tokio::spawn(async move {
                match move_anchors(&scope, &target, &registry).await {
                    Ok(removed) => tell_removed(&node, &scope, removed).await,
                    Err(e) => {
                        tracing::warn!(scope = scope.id, "moving anchors to {target:?}: {e}")
                    }
                }
                moving
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&scope.id);
            });
        }
    }
}

/// The nodes that may hold anchors (registered, not draining), for checks before commit.
pub async fn eligible(node: &Node) -> Vec<QuorumAnchor> {
    registry(node)
        .await
        .unwrap_or_default()
        .into_values()
        .filter(|n| !n.draining)
        .map(|n| QuorumAnchor {
            id: n.id,
            labels: n.labels,
        })
        .collect()
}

/// The cluster's nodes, from the root scope here or through any node that has it.
async fn registry(node: &Node) -> Option<BTreeMap<u64, ClusterNode>> {
    if let Some(root) = node.root().filter(|r| r.is_initialized()) {
        let nodes = root.view().read().nodes.clone();
        if !nodes.is_empty() {
            return Some(nodes);
        }
    }
    // Not through the service's routing, which itself asks for the registry before commits.
    let principal =
        crate::service::policy_principal(&scopekeeper_transport::Principal::Node { id: node.id() });
    let request = crate::peer::PeerRequest::Client {
        principal,
        session: 0,
        request: Request::Nodes,
        hops: 1,
    };
    for anchor in node
        .route("/")
        .anchors
        .iter()
        .filter(|a| a.node != node.id())
    {
        if let Ok(crate::peer::PeerResponse::Client(answer)) =
            node.0.peers.call(anchor.node, &anchor.addr, &request).await
            && let Ok(Reply::Nodes(nodes)) = answer.response
        {
            return Some(nodes.into_iter().map(|n| (n.id, n)).collect());
        }
    }
    None
}

/// The current placement of a scope, as node ids.
fn current(scope: &Scope) -> Placement {
    let mut p = scope.metrics(|m| {
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let mut p = Placement::default();
        for (replica, anchor) in membership.nodes() {
            if voters.contains(replica) {
                p.voters.push(anchor.node);
            } else {
                p.observers.push(anchor.node);
            }
        }
        p
    });
    p.voters.sort_unstable();
    p.observers.sort_unstable();
    p
}

/// What placement does for a scope it leads.
enum Decision {
    /// Move the anchors there.
    Move(Placement),
    /// The anchors are in place; the policy wants this node's anchor leading instead.
    HandOver(u64),
}

/// Asks raft to hand the scope's leadership to its replica on node `to`, the policy's
/// preferred leader (spreading leaders spreads the write load across the cluster).
async fn hand_over(scope: &Scope, to: u64) {
    let Some(replica) = scope.replica_on(to) else {
        return;
    };
    tracing::info!(
        scope = scope.id,
        node = to,
        "handing leadership to the preferred anchor"
    );
    if let Err(e) = scope.raft.trigger().transfer_leader(replica).await {
        tracing::warn!(
            scope = scope.id,
            node = to,
            "leadership transfer: {e}; asking again later"
        );
    }
}

/// Where the scope should be, if not where it is, or who should lead it. A placement whose
/// quorum rule could never be satisfied is not moved to.
async fn target(
    node: &Node,
    scope: &Arc<Scope>,
    registry: &BTreeMap<u64, ClusterNode>,
) -> Option<Decision> {
    let current = current(scope);
    let eligible: BTreeSet<u64> = registry
        .values()
        .filter(|n| !n.draining)
        .map(|n| n.id)
        .collect();
    let nodes: Vec<QuorumAnchor> = registry
        .values()
        .filter(|n| !n.draining)
        .map(|n| QuorumAnchor {
            id: n.id,
            labels: n.labels.clone(),
        })
        .collect();
    let active = scope.view().read().governance.active_code();
    let engine = node.0.host.engine.clone();
    let proposed = {
        let (current, nodes) = (current.clone(), nodes.clone());
        tokio::task::spawn_blocking(move || -> Result<Placement, String> {
            match &active {
                Some((hash, component, params)) => {
                    let compiled = engine
                        .compiled(*hash, component)
                        .map_err(|e| e.to_string())?;
                    let placed = placement::place(&engine, &compiled, params, &nodes, &current)?;
                    let target = repair(&placed, &current, &eligible);
                    let anchors: Vec<QuorumAnchor> = nodes
                        .iter()
                        .filter(|n| target.voters.contains(&n.id))
                        .cloned()
                        .collect();
                    quorum::policy_table(&engine, &compiled, params, &anchors)
                        .map_err(|e| format!("not moving: {e}"))?;
                    Ok(target)
                }
                None => Ok(repair(&current, &current, &eligible)),
            }
        })
        .await
        .ok()?
        .map_err(|e| tracing::debug!(scope = scope.id, "placement: {e}"))
        .ok()?
    };
    if (&proposed.voters, &proposed.observers) != (&current.voters, &current.observers) {
        return Some(Decision::Move(proposed));
    }
    proposed
        .leader
        .filter(|l| *l != node.id())
        .map(Decision::HandOver)
}

/// Tells the nodes whose replicas a move removed. A removed follower learns of its removal
/// only if it receives the membership entry that removes it, which raft does not promise;
/// without this it would keep its replica, campaign for ever, and serve clients routed to it
/// by the parent's delegation record (which names the anchors of creation time).
async fn tell_removed(node: &Node, scope: &Arc<Scope>, removed: Vec<(u64, AnchorNode)>) {
    let route = scope.view().read().route();
    for (replica, anchor) in removed {
        if anchor.node == node.id() {
            // Applying the membership change retires this node's own replica.
            continue;
        }
        let request = crate::peer::PeerRequest::ReplicaRemoved {
            scope: scope.id,
            replica,
            route: route.clone(),
        };
        if let Err(e) = node.0.peers.call(anchor.node, &anchor.addr, &request).await {
            tracing::debug!(
                scope = scope.id,
                node = anchor.node,
                "telling a removed anchor: {e}; it learns when it next hears from the scope"
            );
        }
    }
}

/// The scope's members (replica id and node), as its leader's raft sees them now.
fn members(scope: &Scope) -> BTreeMap<u64, AnchorNode> {
    scope.metrics(|m| {
        m.membership_config
            .membership()
            .nodes()
            .map(|(r, n)| (*r, n.clone()))
            .collect()
    })
}

/// Moves a scope's anchors to `target`: learners first, then the voters in one change, then
/// leftover learners out. Returns the members it removed.
async fn move_anchors(
    scope: &Arc<Scope>,
    target: &Placement,
    registry: &BTreeMap<u64, ClusterNode>,
) -> Result<Vec<(u64, AnchorNode)>, String> {
    let before = members(scope);
    scope.wake();
    tracing::info!(scope = scope.id, ?target, "moving anchors");
    let wanted: Vec<u64> = target
        .voters
        .iter()
        .chain(&target.observers)
        .copied()
        .collect();
    for node_id in wanted {
        if scope.replica_on(node_id).is_some() {
            continue;
        }
        let n = registry
            .get(&node_id)
            .ok_or_else(|| format!("node {node_id} is not registered"))?;
        let replica = next_replica(scope);
        let anchor = AnchorNode::new(node_id, n.addr.clone(), n.labels.clone());
        let added = tokio::time::timeout(
            limits::ANCHOR_CATCH_UP_TIMEOUT,
            scope.raft.add_learner(replica, anchor, true),
        )
        .await
        .map_err(|_| {
            format!(
                "node {node_id} did not catch up within {:?}",
                limits::ANCHOR_CATCH_UP_TIMEOUT
            )
        })?;
        added.map_err(|e| format!("adding node {node_id} as replica {replica}: {e}"))?;
        tracing::info!(
            scope = scope.id,
            node = node_id,
            replica,
            "new anchor caught up"
        );
    }
    let voters: BTreeSet<u64> = target
        .voters
        .iter()
        .map(|n| {
            scope
                .replica_on(*n)
                .ok_or_else(|| format!("node {n} has no replica after being added"))
        })
        .collect::<Result<_, _>>()?;
    if current(scope).voters != target.voters {
        scope
            .raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters.clone()), false)
            .await
            .map_err(|e| format!("replacing the voters: {e}"))?;
    }
    let observers: BTreeSet<u64> = target
        .observers
        .iter()
        .filter_map(|n| scope.replica_on(*n))
        .collect();
    let leftover: BTreeSet<u64> = scope.metrics(|m| {
        m.membership_config
            .membership()
            .nodes()
            .map(|(r, _)| *r)
            .filter(|r| !voters.contains(r) && !observers.contains(r))
            .collect()
    });
    if !leftover.is_empty() && scope.raft.is_leader() {
        scope
            .raft
            .change_membership(ChangeMembers::RemoveNodes(leftover), false)
            .await
            .map_err(|e| format!("removing leftover learners: {e}"))?;
    }
    tracing::info!(scope = scope.id, ?target, "anchors moved");
    let after = members(scope);
    Ok(before
        .into_iter()
        .filter(|(r, _)| !after.contains_key(r))
        .collect())
}

/// A raft id never used in this scope: above every id its state has seen.
fn next_replica(scope: &Scope) -> u64 {
    let high = scope.view().read().replica_high;
    let members = scope.metrics(|m| {
        m.membership_config
            .membership()
            .nodes()
            .map(|(r, _)| *r)
            .max()
            .unwrap_or(0)
    });
    high.max(members) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(voters: &[u64], observers: &[u64]) -> Placement {
        Placement {
            leader: None,
            voters: voters.to_vec(),
            observers: observers.to_vec(),
        }
    }

    #[test]
    fn drained_nodes_are_replaced_and_the_count_kept() {
        let eligible: BTreeSet<u64> = [1, 2, 4, 5].into();
        let current = p(&[1, 2, 3], &[]);
        assert_eq!(repair(&current, &current, &eligible), p(&[1, 2, 4], &[]));
    }

    #[test]
    fn observers_never_duplicate_voters_and_nothing_eligible_keeps_current() {
        let eligible: BTreeSet<u64> = [1, 2, 3].into();
        let proposed = p(&[1, 2], &[2, 3, 9]);
        assert_eq!(
            repair(&proposed, &p(&[1], &[]), &eligible),
            p(&[1, 2], &[3])
        );
        let nobody = BTreeSet::new();
        assert_eq!(repair(&proposed, &p(&[7], &[]), &nobody), p(&[7], &[]));
    }
}
