//! The leader answers a write only once the scope's quorum rule holds over the anchors that
//! have durably stored it. Raft's commit already guarantees a majority; a policy may demand
//! more (four of five anchors across two zones), never less.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::async_runtime::WatchReceiver;

use super::state_machine::ScopeView;
use super::types::Raft;
use crate::limits;
use crate::peer::Refusal;
use crate::policy::PolicyHash;
use crate::policy::engine::PolicyEngine;
use crate::policy::quorum::{self, QuorumAnchor, QuorumTable};

/// What the table depends on: the policy and its parameters, and the voters with labels.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TableKey {
    policy: Option<(PolicyHash, String)>,
    voters: Vec<QuorumAnchor>,
}

/// A computed table, or why the rule cannot be evaluated for these voters.
type CachedTable = (TableKey, Result<Arc<QuorumTable>, String>);

pub struct AckGate {
    engine: PolicyEngine,
    view: ScopeView,
    node_id: u64,
    cached: Mutex<Option<CachedTable>>,
}

impl AckGate {
    pub fn new(engine: PolicyEngine, view: ScopeView, node_id: u64) -> Self {
        AckGate {
            engine,
            view,
            node_id,
            cached: Mutex::new(None),
        }
    }

    /// The nodes holding the scope's voting replicas, as the quorum rule sees them.
    pub fn voters(view: &ScopeView) -> Vec<QuorumAnchor> {
        let state = view.read();
        let membership = state.membership.membership();
        membership
            .voter_ids()
            .filter_map(|r| membership.get_node(&r))
            .map(|n| QuorumAnchor {
                id: n.node,
                labels: n.labels.clone(),
            })
            .collect()
    }

    /// The table for the scope as it is now, computed again only when the policy or the
    /// voters change.
    async fn table(&self) -> Result<Arc<QuorumTable>, String> {
        let (key, component) = {
            let state = self.view.read();
            let active = state.governance.active.as_ref();
            let key = TableKey {
                policy: active.map(|a| (a.hash, a.info.params.clone())),
                voters: Vec::new(),
            };
            (key, active.map(|a| a.component.clone()))
        };
        let key = TableKey {
            voters: Self::voters(&self.view),
            ..key
        };
        if let Some((k, table)) = &*self.cached.lock().unwrap_or_else(|e| e.into_inner())
            && *k == key
        {
            return table.clone();
        }
        let table = match (&key.policy, component) {
            (Some((hash, params)), Some(component)) => {
                let (engine, hash, params, voters) = (
                    self.engine.clone(),
                    *hash,
                    params.clone(),
                    key.voters.clone(),
                );
                tokio::task::spawn_blocking(move || {
                    let compiled = engine
                        .compiled(hash, &component)
                        .map_err(|e| format!("the policy does not compile here: {e}"))?;
                    quorum::policy_table(&engine, &compiled, &params, &voters)
                        .map(Arc::new)
                        .map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| format!("the quorum table task failed: {e}"))?
            }
            _ => {
                let ids: Vec<u64> = key.voters.iter().map(|v| v.id).collect();
                Ok(Arc::new(QuorumTable::majority(&ids)))
            }
        };
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some((key, table.clone()));
        table
    }

    /// Waits until the anchors that stored `index` satisfy the scope's quorum rule. Called on
    /// the leader after the entry is applied, so a majority has it already.
    pub async fn wait(&self, raft: &Raft, index: u64) -> Result<(), Refusal> {
        let table = self.table().await.map_err(|why| {
            Refusal::Unknown(format!(
                "the write is committed on a raft majority, but the scope's quorum rule cannot \
                 be evaluated ({why}), so it is not acknowledged"
            ))
        })?;
        if table.is_majority() {
            return Ok(());
        }
        let deadline = Instant::now() + limits::QUORUM_WAIT;
        let mut metrics = raft.metrics();
        loop {
            // Its own receiver, to wait on `changed`; `acked` reads the metrics and nothing else.
            #[allow(clippy::disallowed_methods)]
            let acked = self.acked(&metrics.borrow_watched(), index);
            if table.is_quorate(acked.iter().copied()) {
                return Ok(());
            }
            let changed = tokio::time::timeout_at(deadline.into(), metrics.changed()).await;
            match changed {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => {
                    return Err(Refusal::Unknown(
                        "raft stopped while waiting for the quorum".into(),
                    ));
                }
                Err(_) => {
                    let ids: Vec<u64> = acked.into_iter().collect();
                    return Err(Refusal::Unknown(format!(
                        "the write is committed on a raft majority but only anchors {ids:?} of {:?} \
                         stored it within {:?}, which the scope's quorum rule does not accept; it is \
                         not acknowledged and may or may not survive. Check that enough anchors are up",
                        table.anchors(),
                        limits::QUORUM_WAIT
                    )));
                }
            }
        }
    }

    /// The nodes known to have stored `index`: this leader's (it applied it, so it holds it)
    /// and those of every follower whose matched log reaches it.
    fn acked(&self, m: &super::types::RaftMetrics, index: u64) -> BTreeSet<u64> {
        let mut acked = BTreeSet::from([self.node_id]);
        let membership = m.membership_config.membership();
        if let Some(replication) = &m.replication {
            for (replica, matched) in replication.iter() {
                if matched.as_ref().is_some_and(|l| l.index() >= index)
                    && let Some(n) = membership.get_node(replica)
                {
                    acked.insert(n.node);
                }
            }
        }
        acked
    }
}
