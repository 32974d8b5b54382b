//! Quiescence: idle scopes cost nothing.
//!
//! A raft group heartbeats even when nothing happens; a thousand idle groups would keep a core
//! busy. So an idle group parks its ticker on every replica (no heartbeats, no election timer)
//! and the node watches its peers instead: one heartbeat per peer per tick stands in for every
//! quiescent group the two share (CockroachDB calls this quiescence; TiKV hibernation). A peer
//! heard from otherwise within the tick (an answer, a request, a replication frame) needs none.
//!
//! - The leader of a scope that no client has used for `QUIESCE_AFTER`, whose followers all
//!   hold its whole log and are alive, asks each follower to quiesce (`PeerRequest::Quiesce`),
//!   and parks its own ticker once all agreed. A follower agrees only if the asker is its
//!   leader in the same term and its log ends where the leader's does.
//! - Any client request, and any raft message that needs an answer beyond an empty append
//!   (entries, votes, pre-votes, snapshots, leader transfer), wakes the replica.
//! - A quiescent replica whose leader's node is not heard from for `NODE_DEAD_AFTER` wakes,
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

/// When each peer node was last heard from: an answer to any call this node made to it, or any
/// request or replication frame it sent here. Shared by the node's transport paths, which
/// record, and by whatever asks whether a peer is alive.
///
/// Why traffic counts and not only heartbeats: under write load every pair of nodes that
/// share a scope exchanges replication frames many times a tick, and a heartbeat beside them
/// proves nothing more. Skipping those heartbeats took a node's liveness work from one call per
/// peer per tick to almost none while the node is busy, which is when its CPU is wanted.
#[derive(Default)]
pub struct PeerLiveness {
    last_heard: std::sync::Mutex<BTreeMap<u64, Instant>>,
}

impl PeerLiveness {
    fn last_heard(&self, node: u64) -> Option<Instant> {
        self.last_heard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&node)
            .copied()
    }

    /// Whether `node` was heard from within `NODE_DEAD_AFTER` of `now`. A node never heard
    /// from counts as dead only once the liveness loop has run that long.
    pub fn is_alive(&self, node: u64, now: Instant, since: Instant) -> bool {
        match self.last_heard(node) {
            Some(at) => now.saturating_duration_since(at) < limits::NODE_DEAD_AFTER,
            None => now.saturating_duration_since(since) < limits::NODE_DEAD_AFTER,
        }
    }

    /// Whether `node` was heard from within `NODE_DEAD_AFTER` of `now`; never heard from is no.
    pub fn heard_lately(&self, node: u64, now: Instant) -> bool {
        self.heard_within(node, now, limits::NODE_DEAD_AFTER)
    }

    fn heard_within(&self, node: u64, now: Instant, window: Duration) -> bool {
        self.last_heard(node)
            .is_some_and(|at| now.saturating_duration_since(at) < window)
    }

    /// `node` answered or sent something just now.
    pub fn heard(&self, node: u64) {
        self.heard_at(node, Instant::now());
    }

    fn heard_at(&self, node: u64, at: Instant) {
        let mut last = self.last_heard.lock().unwrap_or_else(|e| e.into_inner());
        let entry = last.entry(node).or_insert(at);
        *entry = (*entry).max(at);
    }

    /// The peers of `members` to heartbeat now: those not heard from within a tick. A peer
    /// heard from just before a tick gets its heartbeat at the next one, so the longest
    /// silence before a heartbeat is two ticks, well inside `NODE_DEAD_AFTER`.
    fn to_heartbeat(&self, members: BTreeMap<u64, String>, now: Instant) -> Vec<(u64, String)> {
        members
            .into_iter()
            .filter(|(id, _)| !self.heard_within(*id, now, limits::LIVENESS_TICK))
            .collect()
    }
}

const _: () = assert!(2 * limits::LIVENESS_TICK.as_millis() < limits::NODE_DEAD_AFTER.as_millis());

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

/// The node's liveness loop: heartbeats to the watched peers not heard from lately, then each
/// scope quiesced or woken.
pub async fn run(node: Node) {
    let started = Instant::now();
    let liveness = node.0.peers.liveness().clone();
    let mut tick = tokio::time::interval(limits::LIVENESS_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        heartbeat_peers(&node, &liveness).await;
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

/// The nodes whose liveness something here asks about: for a scope this node leads, every
/// member (the followers it quiesces); for a scope it follows, the leader's node (a quiescent
/// replica wakes when it falls silent, and sequential reads stop). Heartbeating every
/// configured peer, or every member of every scope, made the work per node grow with the
/// cluster, and kept two followers of a busy scope heartbeating each other for nothing.
fn watched(node: &Node) -> BTreeMap<u64, String> {
    let mut peers = BTreeMap::new();
    for scope in node.scopes() {
        scope.metrics(|m| {
            let membership = m.membership_config.membership();
            let leads = m.current_leader == Some(scope.replica);
            for (replica, n) in membership.nodes() {
                if leads || m.current_leader == Some(*replica) {
                    peers.entry(n.node).or_insert_with(|| n.addr.clone());
                }
            }
        });
    }
    peers.remove(&node.id());
    peers
}

/// A heartbeat to each watched peer not heard from within the last tick; `Peers::call` records
/// the answer, as it records every answer.
async fn heartbeat_peers(node: &Node, liveness: &PeerLiveness) {
    let request = PeerRequest::Heartbeat { from: node.id() };
    let silent = liveness.to_heartbeat(watched(node), Instant::now());
    // Fields are evaluated only when the trace is on.
    tracing::trace!(
        peers = ?silent.iter().map(|(id, _)| id).collect::<Vec<_>>(),
        "liveness heartbeats"
    );
    let calls = silent.into_iter().map(|(id, addr)| {
        let request = &request;
        async move {
            let _ =
                tokio::time::timeout(limits::LIVENESS_TICK, node.0.peers.call(id, &addr, request))
                    .await;
        }
    });
    futures::future::join_all(calls).await;
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
        let l = PeerLiveness::default();
        assert!(
            l.is_alive(2, t0, t0),
            "unknown peers get the benefit of the doubt at first"
        );
        let later = t0 + limits::NODE_DEAD_AFTER;
        assert!(!l.is_alive(2, later, t0));
        l.heard_at(2, later);
        assert!(l.is_alive(2, later + Duration::from_millis(1), t0));
        assert!(!l.is_alive(2, later + limits::NODE_DEAD_AFTER, t0));
        assert!(!l.heard_lately(3, later), "never heard from is not lately");
    }

    #[test]
    fn hearing_never_goes_back_in_time() {
        let t0 = Instant::now();
        let l = PeerLiveness::default();
        l.heard_at(2, t0 + Duration::from_millis(500));
        l.heard_at(2, t0);
        assert!(l.heard_lately(2, t0 + limits::NODE_DEAD_AFTER));
    }

    #[test]
    fn only_peers_silent_for_a_tick_get_a_heartbeat() {
        let t0 = Instant::now();
        let l = PeerLiveness::default();
        let members: BTreeMap<u64, String> = [
            (2, "b".to_string()),
            (3, "c".to_string()),
            (4, "d".to_string()),
        ]
        .into();
        // 2 sent a replication frame just now, 3 a tick ago, 4 never.
        let now = t0 + limits::NODE_DEAD_AFTER;
        l.heard_at(2, now - Duration::from_millis(1));
        l.heard_at(3, now - limits::LIVENESS_TICK);
        let ids: Vec<u64> = l
            .to_heartbeat(members, now)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, vec![3, 4]);
    }
}
