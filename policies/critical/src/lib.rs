//! `critical`: for data that must survive losing a zone. Parameters (JSON, all optional):
//!
//! ```json
//! {"anchors": 5, "zones": 3, "acks": 4, "ack_zones": 2, "zone_label": "zone"}
//! ```
//!
//! Placement keeps `anchors` voters spread over at least `zones` zones (keeping current voters
//! where it can); a write is answered once `acks` anchors spanning `ack_zones` zones stored it.
//! Every mutation is admitted: this policy is about durability, not content.

use std::collections::{BTreeMap, BTreeSet};

use scopekeeper_policy_sdk::{
    Context, Mutation, Node, Placement, Policy, Principal, Verdict, export_policy,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Critical {
    pub anchors: usize,
    pub zones: usize,
    pub acks: usize,
    pub ack_zones: usize,
    pub zone_label: String,
}

impl Default for Critical {
    fn default() -> Self {
        Critical {
            anchors: 5,
            zones: 3,
            acks: 4,
            ack_zones: 2,
            zone_label: "zone".into(),
        }
    }
}

impl Critical {
    pub fn parse(params: &str) -> Result<Critical, String> {
        let c: Critical = if params.trim().is_empty() {
            Critical::default()
        } else {
            serde_json::from_str(params).map_err(|e| format!("critical parameters: {e}"))?
        };
        if c.anchors == 0 || c.acks == 0 || c.acks > c.anchors {
            return Err(format!(
                "need 0 < acks ({}) <= anchors ({})",
                c.acks, c.anchors
            ));
        }
        if c.acks * 2 <= c.anchors {
            return Err(format!(
                "acks ({}) must be a majority of anchors ({}): smaller quorums could be disjoint",
                c.acks, c.anchors
            ));
        }
        if c.ack_zones > c.zones {
            return Err(format!(
                "ack_zones ({}) cannot exceed zones ({})",
                c.ack_zones, c.zones
            ));
        }
        Ok(c)
    }

    fn zone_of<'a>(&self, node: &'a Node) -> &'a str {
        node.label(&self.zone_label).unwrap_or("")
    }
}

pub struct CriticalPolicy;

impl Policy for CriticalPolicy {
    fn validate_params(params: &str) -> Result<(), String> {
        Critical::parse(params).map(|_| ())
    }

    fn admit(_params: &str, _m: &Mutation, _who: &Principal, _ctx: &Context) -> Verdict {
        Verdict::allow()
    }

    fn quorum(params: &str, anchors: &[Node], acked: &[u64]) -> bool {
        let Ok(c) = Critical::parse(params) else {
            return false;
        };
        let zones: BTreeSet<&str> = anchors
            .iter()
            .filter(|a| acked.contains(&a.id))
            .map(|a| c.zone_of(a))
            .collect();
        acked.len() >= c.acks && zones.len() >= c.ack_zones
    }

    fn placement(params: &str, nodes: &[Node], current: &Placement) -> Placement {
        let Ok(c) = Critical::parse(params) else {
            return current.clone();
        };
        // Current voters that are still eligible stay, as long as their zone is not already
        // over-represented; then the emptiest zones are filled, lowest node id first.
        let mut chosen: Vec<&Node> = Vec::new();
        let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
        let fair_share = c.anchors.div_ceil(c.zones.max(1));
        for id in &current.voters {
            if let Some(n) = nodes.iter().find(|n| n.id == *id) {
                let zone = c.zone_of(n);
                if chosen.len() < c.anchors && per_zone.get(zone).copied().unwrap_or(0) < fair_share
                {
                    *per_zone.entry(zone).or_default() += 1;
                    chosen.push(n);
                }
            }
        }
        while chosen.len() < c.anchors {
            let next = nodes
                .iter()
                .filter(|n| !chosen.iter().any(|m| m.id == n.id))
                .min_by_key(|n| (per_zone.get(c.zone_of(n)).copied().unwrap_or(0), n.id));
            let Some(n) = next else { break };
            *per_zone.entry(c.zone_of(n)).or_default() += 1;
            chosen.push(n);
        }
        let mut voters: Vec<u64> = chosen.iter().map(|n| n.id).collect();
        voters.sort_unstable();
        Placement {
            voters,
            observers: Vec::new(),
            leader: None,
        }
    }
}

export_policy!(CriticalPolicy);

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, zone: &str) -> Node {
        Node {
            id,
            labels: vec![("zone".into(), zone.into())],
        }
    }

    fn cluster() -> Vec<Node> {
        vec![
            node(1, "a"),
            node(2, "a"),
            node(3, "a"),
            node(4, "b"),
            node(5, "b"),
            node(6, "c"),
            node(7, "c"),
        ]
    }

    #[test]
    fn places_five_anchors_across_three_zones() {
        let current = Placement {
            voters: vec![1, 2, 3],
            observers: vec![],
            leader: None,
        };
        let p = CriticalPolicy::placement("", &cluster(), &current);
        assert_eq!(p.voters.len(), 5);
        let nodes = cluster();
        let zones: BTreeSet<&str> = p
            .voters
            .iter()
            .map(|id| {
                nodes
                    .iter()
                    .find(|n| n.id == *id)
                    .and_then(|n| n.label("zone"))
                    .unwrap_or("")
            })
            .collect();
        assert_eq!(zones.len(), 3, "{p:?}");
        assert!(
            p.voters.contains(&1) && p.voters.contains(&2),
            "keeps current voters: {p:?}"
        );
    }

    #[test]
    fn answers_after_four_acks_spanning_two_zones() {
        let anchors = vec![
            node(1, "a"),
            node(2, "a"),
            node(3, "a"),
            node(4, "b"),
            node(6, "c"),
        ];
        assert!(!CriticalPolicy::quorum("", &anchors, &[1, 2, 3]));
        assert!(CriticalPolicy::quorum("", &anchors, &[1, 2, 3, 4]));
        let one_zone = vec![
            node(1, "a"),
            node(2, "a"),
            node(3, "a"),
            node(4, "a"),
            node(5, "a"),
        ];
        assert!(!CriticalPolicy::quorum("", &one_zone, &[1, 2, 3, 4]));
    }

    #[test]
    fn refuses_parameters_that_would_allow_disjoint_quorums() {
        assert!(Critical::parse(r#"{"anchors": 4, "acks": 2}"#).is_err());
        assert!(Critical::parse(r#"{"anchors": 3, "acks": 2, "zones": 2}"#).is_ok());
        assert!(Critical::parse(r#"{"ack_zones": 4}"#).is_err());
    }
}
