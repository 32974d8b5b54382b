//! `dev`: one anchor, for scratch data that may be lost with its node. Parameters (JSON,
//! optional): `{"node": 5}` pins the anchor to a node; otherwise the lowest-id current voter
//! stays (or the lowest-id node, if none of them is eligible).

use scopekeeper_policy_sdk::{
    Context, Mutation, Node, Placement, Policy, Principal, Verdict, export_policy,
};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dev {
    pub node: Option<u64>,
}

impl Dev {
    pub fn parse(params: &str) -> Result<Dev, String> {
        if params.trim().is_empty() {
            return Ok(Dev::default());
        }
        serde_json::from_str(params).map_err(|e| format!("dev parameters: {e}"))
    }
}

pub struct DevPolicy;

impl Policy for DevPolicy {
    fn validate_params(params: &str) -> Result<(), String> {
        Dev::parse(params).map(|_| ())
    }

    fn admit(_params: &str, _m: &Mutation, _who: &Principal, _ctx: &Context) -> Verdict {
        Verdict::allow()
    }

    fn placement(params: &str, nodes: &[Node], current: &Placement) -> Placement {
        let eligible = |id: &u64| nodes.iter().any(|n| n.id == *id);
        let pinned = Dev::parse(params)
            .ok()
            .and_then(|d| d.node)
            .filter(eligible);
        let kept = current.voters.iter().copied().filter(eligible).min();
        let any = nodes.iter().map(|n| n.id).min();
        Placement {
            voters: pinned.or(kept).or(any).into_iter().collect(),
            observers: Vec::new(),
            leader: None,
        }
    }
}

export_policy!(DevPolicy);

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[u64]) -> Vec<Node> {
        ids.iter().map(|&id| Node { id, labels: vec![] }).collect()
    }

    #[test]
    fn one_anchor_kept_or_pinned() {
        let current = Placement {
            voters: vec![3, 1, 2],
            observers: vec![],
            leader: None,
        };
        assert_eq!(
            DevPolicy::placement("", &nodes(&[1, 2, 3]), &current).voters,
            [1]
        );
        assert_eq!(
            DevPolicy::placement(r#"{"node": 3}"#, &nodes(&[1, 2, 3]), &current).voters,
            [3]
        );
        assert_eq!(
            DevPolicy::placement(r#"{"node": 9}"#, &nodes(&[2, 3]), &current).voters,
            [2],
            "an ineligible pin falls back to the lowest current voter"
        );
    }
}
