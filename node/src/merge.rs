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
    let (sealed, parent, eligible) = {
        let state = scope.view().read();
        let small = state.tree.len() <= limits::MERGE_ZNODES_MAX
            && state.tree.data_bytes() as usize <= limits::MERGE_BYTES_MAX;
        let bookkeeping = scopekeeper_client::path::is_within(&state.identity.root, "/zookeeper");
        (
            state.sealed,
            state.identity.parent,
            small && !bookkeeping && state.delegations.is_empty(),
        )
    };
    if let Some(into) = sealed {
        hand_over(node, scope, into).await;
        return true;
    }
    let Some(parent) = parent.and_then(|p| node.scope(p)) else {
        return false;
    };
    if !eligible
        || anchor_nodes(scope) != anchor_nodes(&parent)
        || encoded_bytes(scope) > limits::MERGE_BYTES_MAX
    {
        return false;
    }
    if !asks_to_merge(node, scope).await {
        return false;
    }
    tracing::info!(
        scope = scope.id,
        into = parent.id,
        "the scope's policy merges it into its parent"
    );
    match scope.propose_seal(parent.id).await {
        Ok(result) if matches!(result.outcome, CommandOutcome::Merge(Ok(()))) => {
            hand_over(node, scope, parent.id).await;
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

async fn asks_to_merge(node: &Node, scope: &Arc<Scope>) -> bool {
    let active = scope
        .view()
        .read()
        .governance
        .active
        .as_ref()
        .map(|a| (a.hash, a.component.clone(), a.info.params.clone()));
    let Some((hash, component, params)) = active else {
        return false;
    };
    let figures = crate::split::stats(scope);
    let engine = node.0.host.engine.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let compiled = engine
            .compiled(hash, &component)
            .map_err(|e| e.to_string())?;
        placement::merge(&engine, &compiled, &params, &figures)
    })
    .await;
    match answer {
        Ok(Ok(yes)) => yes,
        Ok(Err(e)) => {
            tracing::warn!(scope = scope.id, "asking the policy to merge: {e}");
            false
        }
        Err(e) => {
            tracing::warn!(scope = scope.id, "asking the policy to merge: {e}");
            false
        }
    }
}

/// Hands the sealed scope's final state to its parent's leader.
async fn hand_over(node: &Node, scope: &Arc<Scope>, into: ScopeId) {
    let Some(parent) = node.scope(into) else {
        tracing::warn!(
            scope = scope.id,
            parent = into,
            "sealed to merge, but this node does not replicate the parent; its leader's node \
             must hand the state over"
        );
        return;
    };
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
    match crate::service::propose_absorb(node, &parent, absorb).await {
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
