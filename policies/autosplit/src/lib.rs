//! `autosplit`: a scope that grows too big or too hot splits itself, and a child scope that
//! stays small and cold merges back. Parameters (JSON, all optional; a missing limit is never
//! exceeded, and without `merge_below_znodes` nothing merges):
//!
//! ```json
//! {"max_znodes": 50000, "max_bytes": 67108864, "max_writes_per_sec": 3000,
//!  "min_interval_secs": 60, "merge_below_znodes": 1000, "merge_after_secs": 600}
//! ```
//!
//! A child scope merges once it holds fewer than `merge_below_znodes` znodes and has seen no
//! write for `merge_after_secs` (default 60), counted from its creation too.
//!
//! Write rates are averages over the last ten seconds of leader-stamped time, so a limit must
//! be exceeded for that long. The split point is the largest subtree below the scope's root by
//! the measure that is over its limit. Every mutation is admitted.

use scopekeeper_policy_sdk::{
    Context, Mutation, Policy, Principal, ScopeStats, SubtreeStats, Verdict, export_policy,
};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoSplit {
    pub max_znodes: Option<u64>,
    pub max_bytes: Option<u64>,
    pub max_writes_per_sec: Option<u64>,
    pub min_interval_secs: Option<u64>,
    pub merge_below_znodes: Option<u64>,
    pub merge_after_secs: Option<u64>,
}

impl AutoSplit {
    pub fn parse(params: &str) -> Result<AutoSplit, String> {
        if params.trim().is_empty() {
            return Ok(AutoSplit::default());
        }
        let a: AutoSplit =
            serde_json::from_str(params).map_err(|e| format!("autosplit parameters: {e}"))?;
        if let (Some(merge), Some(max)) = (a.merge_below_znodes, a.max_znodes)
            && merge >= max
        {
            return Err(format!(
                "autosplit parameters: merge_below_znodes ({merge}) must be below max_znodes \
                 ({max}), or scopes would merge and split again"
            ));
        }
        Ok(a)
    }
}

pub struct AutoSplitPolicy;

impl Policy for AutoSplitPolicy {
    fn validate_params(params: &str) -> Result<(), String> {
        AutoSplit::parse(params).map(|_| ())
    }

    fn admit(_params: &str, _m: &Mutation, _who: &Principal, _ctx: &Context) -> Verdict {
        Verdict::allow()
    }

    fn split(params: &str, stats: &ScopeStats, subtrees: &[SubtreeStats]) -> Option<String> {
        let a = AutoSplit::parse(params).ok()?;
        if stats.ms_since_split < a.min_interval_secs.unwrap_or(60).saturating_mul(1000) {
            return None;
        }
        let over = |limit: Option<u64>, value: u64| limit.is_some_and(|l| value > l);
        let measure: fn(&SubtreeStats) -> u64 = if over(a.max_znodes, stats.znodes) {
            |t| t.znodes
        } else if over(a.max_bytes, stats.data_bytes) {
            |t| t.data_bytes
        } else if over(a.max_writes_per_sec, stats.writes_per_sec) {
            |t| t.writes_per_sec
        } else {
            return None;
        };
        subtrees
            .iter()
            .filter(|t| t.znodes > 1 || t.writes_per_sec > 0)
            .max_by_key(|t| (measure(t), std::cmp::Reverse(t.path.clone())))
            .map(|t| t.path.clone())
    }

    fn merge(params: &str, stats: &ScopeStats) -> bool {
        let Ok(a) = AutoSplit::parse(params) else {
            return false;
        };
        let Some(below) = a.merge_below_znodes else {
            return false;
        };
        let cold_ms = a.merge_after_secs.unwrap_or(60).saturating_mul(1000);
        stats.znodes < below && stats.ms_since_write >= cold_ms && stats.ms_since_split >= cold_ms
    }
}

export_policy!(AutoSplitPolicy);

#[cfg(test)]
mod tests {
    use super::*;

    fn subtree(path: &str, znodes: u64, writes_per_sec: u64) -> SubtreeStats {
        SubtreeStats {
            path: path.into(),
            znodes,
            data_bytes: znodes * 10,
            writes_per_sec,
        }
    }

    fn stats(znodes: u64, writes_per_sec: u64, ms_since_split: u64) -> ScopeStats {
        ScopeStats {
            znodes,
            data_bytes: znodes * 10,
            writes_per_sec,
            ms_since_split,
            ms_since_write: ms_since_split,
        }
    }

    #[test]
    fn splits_the_largest_subtree_once_over_the_limit() {
        let params = r#"{"max_znodes": 100, "min_interval_secs": 0}"#;
        let subtrees = [subtree("/a", 70, 0), subtree("/b", 40, 0)];
        assert_eq!(
            AutoSplitPolicy::split(params, &stats(111, 0, 0), &subtrees),
            Some("/a".into())
        );
        assert_eq!(
            AutoSplitPolicy::split(params, &stats(100, 0, 0), &subtrees),
            None
        );
    }

    #[test]
    fn hot_subtrees_split_by_rate_and_intervals_are_kept() {
        let params = r#"{"max_writes_per_sec": 1000, "min_interval_secs": 60}"#;
        let subtrees = [subtree("/a", 70, 100), subtree("/b", 10, 1500)];
        assert_eq!(
            AutoSplitPolicy::split(params, &stats(80, 1600, 61_000), &subtrees),
            Some("/b".into())
        );
        assert_eq!(
            AutoSplitPolicy::split(params, &stats(80, 1600, 59_000), &subtrees),
            None,
            "too soon after the last split"
        );
    }

    #[test]
    fn small_cold_scopes_merge_and_limits_must_not_overlap() {
        let params = r#"{"max_znodes": 100, "merge_below_znodes": 10, "merge_after_secs": 5}"#;
        assert!(AutoSplitPolicy::validate_params(params).is_ok());
        assert!(AutoSplitPolicy::merge(params, &stats(9, 0, 5_000)));
        assert!(
            !AutoSplitPolicy::merge(params, &stats(10, 0, 5_000)),
            "not small"
        );
        assert!(
            !AutoSplitPolicy::merge(params, &stats(9, 0, 4_999)),
            "not cold long enough"
        );
        let hot = ScopeStats {
            ms_since_write: 100,
            ..stats(9, 0, 60_000)
        };
        assert!(!AutoSplitPolicy::merge(params, &hot), "written recently");
        assert!(!AutoSplitPolicy::merge(
            r#"{"max_znodes": 100}"#,
            &stats(1, 0, 600_000)
        ));
        assert!(
            AutoSplitPolicy::validate_params(r#"{"max_znodes": 10, "merge_below_znodes": 10}"#)
                .is_err()
        );
    }
}
