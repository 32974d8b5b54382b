//! Containers and TTL nodes: each scope's leader deletes the ones due, as ZooKeeper's
//! `ContainerManager` does, with a `Reap` transaction that applies only if the node is still
//! the same (its czxid) and still due at the entry's leader-stamped time.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::node::Node;
use crate::tree::Txn;

pub async fn run(node: Node) {
    let mut tick = tokio::time::interval(crate::limits::REAP_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        reap(&node).await;
    }
}

async fn reap(node: &Node) {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let principal = crate::sessions::node_principal(node);
    for scope in node.scopes() {
        if scope.leader().is_none_or(|(l, _)| l != node.id()) {
            continue;
        }
        let due = scope.view().read().tree.due_for_reaping(now_ms);
        for (path, czxid) in due.into_iter().take(crate::limits::REAPS_PER_TICK_MAX) {
            let txn = Txn::Reap {
                path: path.clone(),
                czxid,
            };
            match scope.propose_txn(principal.clone(), 0, txn, 0).await {
                Ok(r) if r.outcome.succeeded() => tracing::debug!(path, "reaped"),
                Ok(r) => tracing::debug!(path, "not reaped: {:?}", r.outcome),
                Err(e) => tracing::debug!(path, "reaping: {e:?}"),
            }
        }
    }
}
