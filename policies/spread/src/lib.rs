//! `spread`: the scope's voters are `anchors` of the eligible nodes (default 3), taken in id
//! order from the `offset`-th on, wrapping around. Scopes deployed with offsets 0, 1, 2, ...
//! tile their anchors, and with them their leaders and write load, across the cluster, which
//! is what the scaling benchmark (`bench/scaling.sh`) needs. Parameters (JSON, optional):
//! `{"anchors": 3, "offset": 4}`. The first of them should lead, so the scopes' leaders tile
//! the cluster too. Admits every mutation.

use scopekeeper_policy_sdk::{
    Context, Mutation, Node, Placement, Policy, Principal, Verdict, export_policy,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spread {
    #[serde(default = "default_anchors")]
    pub anchors: usize,
    #[serde(default)]
    pub offset: usize,
}

fn default_anchors() -> usize {
    3
}

impl Spread {
    pub fn parse(params: &str) -> Result<Spread, String> {
        let spread: Spread = if params.trim().is_empty() {
            serde_json::from_str("{}")
        } else {
            serde_json::from_str(params)
        }
        .map_err(|e| format!("spread parameters: {e}"))?;
        if spread.anchors == 0 || spread.anchors.is_multiple_of(2) {
            return Err(format!(
                "spread parameters: anchors must be odd and at least 1, not {}",
                spread.anchors
            ));
        }
        Ok(spread)
    }
}

pub struct SpreadPolicy;

impl Policy for SpreadPolicy {
    fn validate_params(params: &str) -> Result<(), String> {
        Spread::parse(params).map(|_| ())
    }

    fn admit(_params: &str, _m: &Mutation, _who: &Principal, _ctx: &Context) -> Verdict {
        Verdict::allow()
    }

    fn placement(params: &str, nodes: &[Node], current: &Placement) -> Placement {
        let Ok(spread) = Spread::parse(params) else {
            return current.clone();
        };
        let mut ids: Vec<u64> = nodes.iter().map(|n| n.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return current.clone();
        }
        let take = spread.anchors.min(ids.len());
        let voters: Vec<u64> = (0..take)
            .map(|j| ids[(spread.offset + j) % ids.len()])
            .collect();
        Placement {
            leader: voters.first().copied(),
            voters,
            observers: Vec::new(),
        }
    }
}

export_policy!(SpreadPolicy);

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[u64]) -> Vec<Node> {
        ids.iter().map(|&id| Node { id, labels: vec![] }).collect()
    }

    fn voters(params: &str, ids: &[u64]) -> Vec<u64> {
        let current = Placement {
            voters: vec![1, 2, 3],
            observers: vec![],
            leader: None,
        };
        SpreadPolicy::placement(params, &nodes(ids), &current).voters
    }

    #[test]
    fn offsets_tile_the_cluster() {
        let cluster = [9, 1, 5, 3, 7];
        assert_eq!(voters(r#"{"offset": 0}"#, &cluster), [1, 3, 5]);
        assert_eq!(voters(r#"{"offset": 1}"#, &cluster), [3, 5, 7]);
        let placed =
            SpreadPolicy::placement(r#"{"offset": 3}"#, &nodes(&cluster), &Placement::default());
        assert_eq!(placed.leader, Some(7), "the first voter leads");
        assert_eq!(voters(r#"{"offset": 3}"#, &cluster), [7, 9, 1]);
        assert_eq!(voters(r#"{"offset": 8}"#, &cluster), [7, 9, 1]);
        assert_eq!(
            voters(r#"{"anchors": 5, "offset": 2}"#, &cluster),
            [5, 7, 9, 1, 3]
        );
        assert_eq!(
            voters("", &[4, 2]),
            [2, 4],
            "fewer nodes than anchors: all of them"
        );
    }

    #[test]
    fn parameters_are_checked() {
        assert!(SpreadPolicy::validate_params("").is_ok());
        assert!(SpreadPolicy::validate_params(r#"{"anchors": 5}"#).is_ok());
        assert!(SpreadPolicy::validate_params(r#"{"anchors": 4}"#).is_err());
        assert!(SpreadPolicy::validate_params(r#"{"anchors": 0}"#).is_err());
        assert!(SpreadPolicy::validate_params(r#"{"zones": 3}"#).is_err());
    }
}
