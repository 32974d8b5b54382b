//! Merges with no coordinator: a child scope that its own policy finds small and cold merges
//! back into its parent. Every `SPLIT_TICK` its leader asks the policy's `merge`, for a scope
//! with no child scopes of its own, the same anchors as its parent, and a state small enough to
//! travel in one log entry (`MERGE_ZNODES_MAX`, `MERGE_BYTES_MAX`). A yes becomes a `Seal`
//! entry in the child's own log: from there on it refuses every write (`WrongScope`, which the
//! serving node retries), so its state is final. Its leader then hands that state to the
//! parent's leader as an `Absorb` entry in the parent's log; every anchor of the parent takes
//! the subtree back in that entry's apply, and each node deletes its replica of the child. A
//! leader that finds its scope sealed (its predecessor died half way) hands the state over
//! again; the parent refuses a second Absorb of the same child.

use std::sync::Arc;

use crate::limits;
use crate::node::Node;
use crate::policy::placement;
use crate::scope::Scope;
use crate::scope::types::{Absorb, CommandOutcome};
use crate::storage::ScopeId;

/// Moves a merge on for a scope this node leads. Returns whether the scope is merging (so it
/// must not be asked to split).
pub async fn consider(node: &Node, scope: &Arc<Scope>) -> bool {
    let sealed = scope.view().read().sealed;
    if let Some(into) = sealed {
        hand_over(node, scope, into).await;
        return true;
    }
    let Ok(into) = mergeable(node, scope) else {
        return false;
    };
    if !asks_to_merge(node, scope).await {
        return false;
    }
    tracing::info!(
        scope = scope.id,
        into,
        "the scope's policy merges it into its parent"
    );
    match scope.propose_seal(into).await {
        Ok(result) if matches!(result.outcome, CommandOutcome::Merge(Ok(()))) => {
            hand_over(node, scope, into).await;
            true
        }
        Ok(result) => {
            tracing::warn!(
                scope = scope.id,
                "sealing to merge refused: {:?}",
                result.outcome
            );
            false
        }
        Err(e) => {
            tracing::warn!(scope = scope.id, "sealing to merge: {e:?}");
            false
        }
    }
}

/// Whether the scope may merge into its parent now, and the parent's id: a child scope (not
/// the cluster's session bookkeeping), with no child scopes, on its parent's anchors (so this
/// node replicates the parent too), and small enough to travel in one entry. The parent is
/// the scope that governs the path above the child's root now, which is not the scope the
/// child was created from if that one has since split off a subtree holding the child.
pub fn mergeable(node: &Node, scope: &Scope) -> Result<ScopeId, String> {
    let (root, parent, children, znodes, data_bytes) = {
        let state = scope.view().read();
        (
            state.identity.root.clone(),
            state.identity.parent,
            state.delegations.len(),
            state.tree.len(),
            state.tree.data_bytes() as usize,
        )
    };
    if parent.is_none() {
        return Err(format!(
            "{root} is the root scope; it has no parent to merge into"
        ));
    };
    if scopekeeper_client::path::is_within(&root, "/zookeeper") {
        return Err(format!(
            "{root} is the cluster's own bookkeeping; it never merges"
        ));
    }
    if children > 0 {
        return Err(format!(
            "{root} has {children} child scopes; merge them into it first"
        ));
    }
    if znodes > limits::MERGE_ZNODES_MAX || data_bytes > limits::MERGE_BYTES_MAX {
        return Err(format!(
            "{root} holds {znodes} znodes and {data_bytes} bytes; a merge carries at most {} \
             znodes and {} bytes",
            limits::MERGE_ZNODES_MAX,
            limits::MERGE_BYTES_MAX
        ));
    }
    let parent_path = scopekeeper_client::path::parent(&root).unwrap_or("/");
    let parent_id = node.route(parent_path).scope;
    let Some(parent) = node.scope(parent_id) else {
        return Err(format!(
            "node {} does not replicate the parent scope {parent_id}: the scope and its parent \
             must have the same anchors first",
            node.id()
        ));
    };
    let (ours, theirs) = (anchor_nodes(scope), anchor_nodes(&parent));
    if ours != theirs {
        return Err(format!(
            "{root} is on nodes {ours:?} and its parent on {theirs:?}: they must have the same \
             anchors first"
        ));
    }
    if encoded_bytes(scope) > limits::MERGE_BYTES_MAX {
        return Err(format!(
            "{root} takes more than {} bytes to carry",
            limits::MERGE_BYTES_MAX
        ));
    }
    Ok(parent_id)
}

/// The node ids a scope's replicas live on, in order.
fn anchor_nodes(scope: &Scope) -> Vec<u64> {
    let mut nodes: Vec<u64> = scope
        .view()
        .read()
        .route()
        .anchors
        .iter()
        .map(|a| a.node)
        .collect();
    nodes.sort_unstable();
    nodes
}

/// About what the scope's znodes take in an Absorb entry.
fn encoded_bytes(scope: &Scope) -> usize {
    scope
        .view()
        .read()
        .tree
        .iter()
        .map(|(p, z)| p.len() + z.data.len() + z.acl.len() * 48 + 96)
        .sum()
}

async fn asks_to_merge(node: &Node, scope: &Scope) -> bool {
    match crate::split::ask_policy(node, scope, placement::merge).await {
        Some(Ok(yes)) => yes,
        Some(Err(e)) => {
            tracing::warn!(scope = scope.id, "asking the policy to merge: {e}");
            false
        }
        None => false,
    }
}

/// Hands the sealed scope's final state to its parent's leader.
pub(crate) async fn hand_over(node: &Node, scope: &Scope, into: ScopeId) {
    let absorb = {
        let state = scope.view().read();
        Absorb {
            child: scope.id,
            root: state.identity.root.clone(),
            last_zxid: state.tree.last_zxid(),
            znodes: state
                .tree
                .iter()
                .map(|(p, z)| (p.clone(), z.stored()))
                .collect(),
            book: state.tree.session_book().clone(),
        }
    };
    // The scope that delegates the child now: the parent it sealed for, unless that parent
    // has since split off a subtree holding the child, whose new scope then delegates it.
    let parent_path = scopekeeper_client::path::parent(&absorb.root).unwrap_or("/");
    let route = node.route(parent_path);
    let answer = match node.scope(route.scope) {
        Some(parent) => crate::service::propose_absorb(node, &parent, absorb)
            .await
            .map_err(|e| e.message),
        // The parent moved its anchors after the seal: ask its anchors, by route.
        None => propose_absorb_remotely(node, &route, absorb).await,
    };
    match answer {
        Ok(result) => match result.outcome {
            CommandOutcome::Merge(Ok(())) => {
                tracing::info!(scope = scope.id, into, "merged into the parent scope");
            }
            other => {
                // Already taken back by an earlier hand-over whose answer was lost.
                tracing::info!(
                    scope = scope.id,
                    into,
                    "the parent refused the merge: {other:?}"
                );
            }
        },
        Err(e) => tracing::warn!(
            scope = scope.id,
            into,
            "handing the state to the parent (retried): {e}"
        ),
    }
}

/// Offers the Absorb to each anchor of the parent scope on `route`, until its leader takes it.
async fn propose_absorb_remotely(
    node: &Node,
    route: &crate::directory::Route,
    absorb: Absorb,
) -> Result<crate::scope::types::CommandResult, String> {
    let request = crate::peer::PeerRequest::ProposeAbsorb {
        scope: route.scope,
        absorb: Box::new(absorb),
    };
    let mut last = String::from("the parent has no known anchors");
    for anchor in &route.anchors {
        match node.0.peers.call(anchor.node, &anchor.addr, &request).await {
            Ok(crate::peer::PeerResponse::Command(Ok(result))) => return Ok(result),
            Ok(other) => last = format!("node {} answered {other:?}", anchor.node),
            Err(e) => last = format!("node {}: {e}", anchor.node),
        }
    }
    Err(last)
}
