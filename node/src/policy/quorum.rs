//! A scope's ack rule: the policy's `quorum` export, tabulated over every subset of the
//! scope's anchors, checked, and then consulted by the leader before it answers a client.
//!
//! The table is computed by calling the policy once per subset, in subset order, on one
//! instance: the same calls in the same order give the same answers on every host. With at
//! most `QUORUM_ANCHORS_MAX` anchors that is at most 65,536 calls, done when the policy or the
//! anchors change, never per write.

use std::collections::BTreeMap;
use std::fmt;

use super::engine::{Compiled, PolicyEngine};
use crate::limits;

/// An anchor as the quorum rule sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumAnchor {
    pub id: u64,
    pub labels: BTreeMap<String, String>,
}

/// Which sets of anchors may acknowledge a write, as bits over `anchors` (bit i = anchors[i]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumTable {
    anchors: Vec<u64>,
    quorate: Vec<bool>,
    /// Whether the rule is exactly "a majority", which raft's commit already guarantees.
    majority: bool,
}

/// Why a quorum rule cannot govern a scope; each names a counter-example.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuorumRuleError {
    #[error(
        "the scope has {0} anchors; quorum rules are checked exhaustively for at most {max}",
        max = limits::QUORUM_ANCHORS_MAX
    )]
    TooManyAnchors(usize),
    #[error("the quorum rule is not monotone: {quorum} is a quorum but {superset} is not")]
    NotMonotone { quorum: Ids, superset: Ids },
    #[error(
        "the quorum rule admits two disjoint quorums, {a} and {b}: both could acknowledge \
         conflicting writes"
    )]
    Disjoint { a: Ids, b: Ids },
    #[error(
        "the quorum rule is not satisfied even by every anchor ({0}): no write could ever be answered"
    )]
    Unsatisfiable(Ids),
    #[error("the quorum rule trapped on acks {acked}: {why}")]
    Trapped { acked: Ids, why: String },
}

/// A set of anchor ids, printed as `{1, 2, 3}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ids(pub Vec<u64>);

impl fmt::Display for Ids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.0.iter().map(u64::to_string).collect();
        write!(f, "{{{}}}", ids.join(", "))
    }
}

impl QuorumTable {
    /// Tabulates `rule` over every subset of `anchors` and checks it: satisfiable by all,
    /// monotone (adding an anchor to a quorum keeps it one), and no quorum whose complement is
    /// also a quorum (for a monotone rule, exactly the absence of two disjoint quorums).
    pub fn build(
        anchors: &[u64],
        mut rule: impl FnMut(&[u64]) -> Result<bool, String>,
    ) -> Result<QuorumTable, QuorumRuleError> {
        let n = anchors.len();
        if n > limits::QUORUM_ANCHORS_MAX {
            return Err(QuorumRuleError::TooManyAnchors(n));
        }
        let ids = |mask: usize| Ids(subset(anchors, mask));
        let full = (1usize << n) - 1;
        let mut quorate = Vec::with_capacity(full + 1);
        for mask in 0..=full {
            let acked = subset(anchors, mask);
            quorate.push(rule(&acked).map_err(|why| QuorumRuleError::Trapped {
                acked: Ids(acked),
                why,
            })?);
        }
        for mask in (0..=full).filter(|&m| quorate[m]) {
            for bit in (0..n).map(|i| 1usize << i).filter(|b| mask & b == 0) {
                if !quorate[mask | bit] {
                    return Err(QuorumRuleError::NotMonotone {
                        quorum: ids(mask),
                        superset: ids(mask | bit),
                    });
                }
            }
        }
        if !quorate[full] {
            return Err(QuorumRuleError::Unsatisfiable(ids(full)));
        }
        if let Some(mask) = (0..=full).find(|&m| quorate[m] && quorate[full ^ m]) {
            return Err(QuorumRuleError::Disjoint {
                a: ids(mask),
                b: ids(full ^ mask),
            });
        }
        let majority = (0..=full).all(|mask| quorate[mask] == is_majority(mask, n));
        Ok(QuorumTable {
            anchors: anchors.to_vec(),
            quorate,
            majority,
        })
    }

    /// The rule raft already enforces: a strict majority of the anchors.
    pub fn majority(anchors: &[u64]) -> QuorumTable {
        let n = anchors.len().min(limits::QUORUM_ANCHORS_MAX);
        QuorumTable {
            anchors: anchors[..n].to_vec(),
            quorate: (0..1usize << n).map(|m| is_majority(m, n)).collect(),
            majority: true,
        }
    }

    /// Whether answering needs nothing beyond raft's commit.
    pub fn is_majority(&self) -> bool {
        self.majority
    }

    pub fn anchors(&self) -> &[u64] {
        &self.anchors
    }

    /// Whether the anchors in `acked` may acknowledge a write: the rule holds and so does a
    /// majority (the host never accepts less). Ids that are not anchors count for nothing.
    pub fn is_quorate(&self, acked: impl IntoIterator<Item = u64>) -> bool {
        let mut mask = 0usize;
        for id in acked {
            if let Some(i) = self.anchors.iter().position(|a| *a == id) {
                mask |= 1 << i;
            }
        }
        self.quorate[mask] && is_majority(mask, self.anchors.len())
    }
}

fn is_majority(mask: usize, n: usize) -> bool {
    (mask.count_ones() as usize) * 2 > n
}

fn subset(anchors: &[u64], mask: usize) -> Vec<u64> {
    anchors
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, id)| *id)
        .collect()
}

/// Tabulates a compiled policy's `quorum` export over `anchors` and checks it.
pub fn policy_table(
    engine: &PolicyEngine,
    compiled: &Compiled,
    params: &str,
    anchors: &[QuorumAnchor],
) -> Result<QuorumTable, QuorumRuleError> {
    let ids: Vec<u64> = anchors.iter().map(|a| a.id).collect();
    if ids.len() > limits::QUORUM_ANCHORS_MAX {
        return Err(QuorumRuleError::TooManyAnchors(ids.len()));
    }
    let nodes = super::placement::wit_nodes(anchors);
    let fuel = limits::POLICY_FUEL_PER_QUORUM_CALL
        .saturating_mul(1u64 << ids.len())
        .min(limits::POLICY_FUEL_QUORUM_TABLE_MAX);
    let (mut store, policy) =
        super::placement::fresh_instance(engine, compiled, fuel).map_err(|why| {
            QuorumRuleError::Trapped {
                acked: Ids(vec![]),
                why,
            }
        })?;
    QuorumTable::build(&ids, |acked| {
        policy
            .scopekeeper_policy_rules()
            .call_quorum(&mut store, params, &nodes, acked)
            .map_err(|e| format!("{e:#}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_is_recognised_and_enforced() {
        let t = QuorumTable::build(&[1, 2, 3], |a| Ok(a.len() >= 2)).expect("valid");
        assert!(t.is_majority());
        assert!(t.is_quorate([1, 3]));
        assert!(!t.is_quorate([2]));
        assert!(!t.is_quorate([2, 9]), "strangers count for nothing");
    }

    #[test]
    fn a_stricter_rule_is_kept_and_never_weaker_than_a_majority() {
        let t = QuorumTable::build(&[1, 2, 3, 4, 5], |a| Ok(a.len() >= 4)).expect("valid");
        assert!(!t.is_majority());
        assert!(!t.is_quorate([1, 2, 3]));
        assert!(t.is_quorate([1, 2, 3, 5]));
        // A rule that would accept a minority is still held to a majority.
        let lax = QuorumTable::build(&[1, 2, 3], |a| Ok(a.contains(&1))).expect("valid");
        assert!(!lax.is_quorate([1]));
        assert!(lax.is_quorate([1, 2]));
    }

    #[test]
    fn bad_rules_are_refused_with_a_counter_example() {
        let err = QuorumTable::build(&[1, 2, 3], |a| Ok(a.len() == 2)).expect_err("not monotone");
        assert_eq!(
            err.to_string(),
            "the quorum rule is not monotone: {1, 2} is a quorum but {1, 2, 3} is not"
        );
        let err = QuorumTable::build(&[1, 2, 3, 4], |a| Ok(a.len() >= 2)).expect_err("disjoint");
        assert!(matches!(err, QuorumRuleError::Disjoint { .. }), "{err}");
        assert!(
            err.to_string().contains("{1, 2}") && err.to_string().contains("{3, 4}"),
            "{err}"
        );
        let err = QuorumTable::build(&[1, 2], |_| Ok(false)).expect_err("never");
        assert!(matches!(err, QuorumRuleError::Unsatisfiable(_)));
        let many: Vec<u64> = (0..17).collect();
        assert_eq!(
            QuorumTable::build(&many, |_| Ok(true)),
            Err(QuorumRuleError::TooManyAnchors(17))
        );
    }

    #[test]
    fn sixteen_anchors_are_checked_exhaustively() {
        let anchors: Vec<u64> = (1..=16).collect();
        let mut calls = 0;
        let t = QuorumTable::build(&anchors, |a| {
            calls += 1;
            Ok(a.len() >= 9)
        })
        .expect("valid");
        assert_eq!(calls, 1 << 16);
        assert!(t.is_majority());
    }
}
