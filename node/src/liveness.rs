//! Quiescence: idle scopes cost nothing.
//!
//! A raft group heartbeats even when nothing happens; a thousand idle groups would keep a core
//! busy. So an idle group parks its ticker on every replica (no heartbeats, no election timer)
//! and the node watches its peers instead: one heartbeat per peer per tick stands in for every
//! quiescent group the two share (CockroachDB calls this quiescence; TiKV hibernation).
//!
//! - The leader of a scope that no client has used for `QUIESCE_AFTER`, whose followers all
//!   hold its whole log and are alive, asks each follower to quiesce (`PeerRequest::Quiesce`),
//!   and parks its own ticker once all agreed. A follower agrees only if the asker is its
//!   leader in the same term and its log ends where the leader's does.
//! - Any client request, and any raft message that needs an answer beyond an empty append
//!   (entries, votes, pre-votes, snapshots, leader transfer), wakes the replica.
//! - A quiescent replica whose leader's node misses heartbeats for `NODE_DEAD_AFTER` wakes,
//!   and raft's own election timer takes it from there.
//!
//! Safety is raft's: parking a ticker only delays elections. What quiescence trades is that a
//! parked leader's lease lapses, so the first read after a quiet spell confirms leadership with
//! a quorum round.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::limits;
use crate::node::Node;
use crate::peer::{PeerRequest, PeerResponse};
use crate::scope::Scope;

/// When each peer node last answered a heartbeat.
#[derive(Clone, Default)]
pub struct PeerLiveness {
    last_heard: BTreeMap<u64, Instant>,
}

impl PeerLiveness {
    /// Whether `node` answered within `NODE_DEAD_AFTER` of `now`. A node never heard from
    /// counts as dead only once the liveness loop has run that long.
    pub fn is_alive(&self, node: u64, now: Instant, since: Instant) -> bool {
        match self.last_heard.get(&node) {
            Some(at) => now.duration_since(*at) < limits::NODE_DEAD_AFTER,
            None => now.duration_since(since) < limits::NODE_DEAD_AFTER,
        }
    }

    /// Whether `node` answered within `NODE_DEAD_AFTER` of `now`; never heard from is no.
    pub fn heard_lately(&self, node: u64, now: Instant) -> bool {
        self.last_heard
            .get(&node)
            .is_some_and(|at| now.duration_since(*at) < limits::NODE_DEAD_AFTER)
    }

    fn heard(&mut self, node: u64, at: Instant) {
        self.last_heard.insert(node, at);
    }
}

/// A follower's answer to `Quiesce`: park only if it agrees on leader, term and log end.
pub fn follow_quiesce(scope: &Scope, leader: u64, term: u64, last_log_index: u64) -> bool {
    let agrees = scope.metrics(|m| {
        m.current_leader == Some(leader)
            && m.current_term == term
            && m.last_log_index == Some(last_log_index)
    });
    if agrees {
        scope.quiesce();
    }
    agrees
}

/// The node's liveness loop: heartbeats to every peer, then each scope quiesced or woken.
pub async fn run(node: Node) {
    let started = Instant::now();
    let mut liveness = PeerLiveness::default();
    let mut tick = tokio::time::interval(limits::LIVENESS_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        heartbeat_peers(&node, &mut liveness).await;
        *node.0.heard.write().unwrap_or_else(|e| e.into_inner()) = liveness.clone();
        let now = Instant::now();
        for scope in node.scopes() {
            if scope.is_quiescent() {
                let leader = scope.leader().map(|(id, _)| id);
                let leader_alive =
                    leader.is_some_and(|l| l == node.id() || liveness.is_alive(l, now, started));
                if !leader_alive {
                    tracing::info!(scope = scope.id, ?leader, "leader's node is silent; waking");
                    scope.wake();
                }
            } else if scope.idle_for() >= limits::QUIESCE_AFTER {
                try_quiesce(&node, &scope, &liveness, now, started).await;
            }
        }
    }
}

/// Every node this one shares a scope with, and its configured peers.
fn peers_of(node: &Node) -> BTreeMap<u64, String> {
    let mut peers: BTreeMap<u64, String> = node
        .0
        .config
        .peers
        .iter()
        .map(|p| (p.id, p.addr.clone()))
        .collect();
    for scope in node.scopes() {
        scope.metrics(|m| {
            for (_, n) in m.membership_config.membership().nodes() {
                peers.entry(n.node).or_insert_with(|| n.addr.clone());
            }
        });
    }
    peers.remove(&node.id());
    peers
}

async fn heartbeat_peers(node: &Node, liveness: &mut PeerLiveness) {
    let request = PeerRequest::Heartbeat { from: node.id() };
    let calls = peers_of(node).into_iter().map(|(id, addr)| {
        let request = &request;
        async move {
            let answer =
                tokio::time::timeout(limits::LIVENESS_TICK, node.0.peers.call(id, &addr, request))
                    .await;
            (id, matches!(answer, Ok(Ok(PeerResponse::Alive))))
        }
    });
    let now = Instant::now();
    for (id, alive) in futures::future::join_all(calls).await {
        if alive {
            liveness.heard(id, now);
        }
    }
}

/// Quiesces `scope` if this node leads it, every member is alive and holds the whole log,
/// and every follower agrees.
async fn try_quiesce(
    node: &Node,
    scope: &Arc<Scope>,
    liveness: &PeerLiveness,
    now: Instant,
    started: Instant,
) {
    let Some((term, last_log_index, followers)) = scope.metrics(|m| {
        if m.current_leader != Some(scope.replica) {
            return None;
        }
        let last = m.last_log_index?;
        let replication = m.replication.as_ref()?;
        let members: BTreeSet<u64> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(replica, _)| *replica)
            .filter(|replica| *replica != scope.replica)
            .collect();
        let caught_up = members.iter().all(|id| {
            replication
                .get(id)
                .and_then(|matched| matched.as_ref())
                .is_some_and(|l| l.index() == last)
        });
        if !caught_up || m.last_applied.map(|l| l.index()) != Some(last) {
            return None;
        }
        // (node, address) of each follower.
        let followers: Vec<(u64, String)> = m
            .membership_config
            .membership()
            .nodes()
            .filter(|(replica, _)| members.contains(replica))
            .map(|(_, n)| (n.node, n.addr.clone()))
            .collect();
        Some((m.current_term, last, followers))
    }) else {
        return;
    };
    if followers
        .iter()
        .any(|(id, _)| !liveness.is_alive(*id, now, started))
    {
        return;
    }
    let request = PeerRequest::Quiesce {
        scope: scope.id,
        leader: scope.replica,
        term,
        last_log_index,
    };
    let asks = followers.iter().map(|(id, addr)| {
        let request = &request;
        async move {
            matches!(
                tokio::time::timeout(
                    Duration::from_secs(1),
                    node.0.peers.call(*id, addr, request)
                )
                .await,
                Ok(Ok(PeerResponse::Quiesced(true)))
            )
        }
    });
    let agreed = futures::future::join_all(asks).await;
    // A client may have come in while we asked; then the followers wake on its entry.
    if agreed.iter().all(|a| *a) && scope.idle_for() >= limits::QUIESCE_AFTER {
        scope.quiesce();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_alive_until_silent_for_the_dead_interval() {
        let t0 = Instant::now();
        let mut l = PeerLiveness::default();
        assert!(
            l.is_alive(2, t0, t0),
            "unknown peers get the benefit of the doubt at first"
        );
        let later = t0 + limits::NODE_DEAD_AFTER;
        assert!(!l.is_alive(2, later, t0));
        l.heard(2, later);
        assert!(l.is_alive(2, later + Duration::from_millis(1), t0));
        assert!(!l.is_alive(2, later + limits::NODE_DEAD_AFTER, t0));
    }
}
