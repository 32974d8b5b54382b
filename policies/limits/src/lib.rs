//! `limits`: bounds on what a scope holds. Parameters (JSON, every field optional):
//!
//! ```json
//! {"max_data_bytes": 4096, "max_children": 1000, "max_depth": 8,
//!  "create_modes": ["persistent", "persistent-sequential"]}
//! ```

use scopekeeper_policy_sdk::{
    Context, Mutation, OpKind, Policy, Principal, Verdict, export_policy, parse_params_once,
};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_data_bytes: Option<u64>,
    pub max_children: Option<u32>,
    pub max_depth: Option<u32>,
    pub create_modes: Option<Vec<String>>,
}

const MODES: [&str; 6] = [
    "persistent",
    "persistent-sequential",
    "ephemeral",
    "ephemeral-sequential",
    "container",
    "ttl",
];

impl Limits {
    pub fn parse(params: &str) -> Result<Limits, String> {
        if params.trim().is_empty() {
            return Ok(Limits::default());
        }
        let limits: Limits =
            serde_json::from_str(params).map_err(|e| format!("limits parameters: {e}"))?;
        if let Some(modes) = &limits.create_modes
            && let Some(bad) = modes.iter().find(|m| !MODES.contains(&m.as_str()))
        {
            return Err(format!(
                "unknown create mode {bad:?}; known: {}",
                MODES.join(", ")
            ));
        }
        Ok(limits)
    }
}

pub struct LimitsPolicy;

impl Policy for LimitsPolicy {
    fn validate_params(params: &str) -> Result<(), String> {
        Limits::parse(params).map(|_| ())
    }

    fn admit(params: &str, m: &Mutation, _who: &Principal, ctx: &Context) -> Verdict {
        let parsed = parse_params_once(params, Limits::parse);
        let limits = match &*parsed {
            Ok(limits) => limits,
            Err(e) => return Verdict::deny("bad-params", e.clone()),
        };
        if matches!(m.op, OpKind::Create | OpKind::SetData)
            && let Some(max) = limits.max_data_bytes
            && m.data.len() as u64 > max
        {
            return Verdict::deny(
                "data-too-large",
                format!(
                    "{} bytes for {}; this scope allows at most {max}",
                    m.data.len(),
                    m.path
                ),
            );
        }
        if m.op != OpKind::Create {
            return Verdict::allow();
        }
        if let Some(max) = limits.max_depth
            && ctx.depth > max
        {
            return Verdict::deny(
                "too-deep",
                format!(
                    "{} is {} levels deep; this scope allows {max}",
                    m.path, ctx.depth
                ),
            );
        }
        if let (Some(max), Some(parent)) = (limits.max_children, ctx.parent)
            && parent.num_children as u64 >= u64::from(max)
        {
            return Verdict::deny(
                "too-many-children",
                format!(
                    "the parent of {} already has {} children; this scope allows {max}",
                    m.path, parent.num_children
                ),
            );
        }
        if let (Some(modes), Some(mode)) = (&limits.create_modes, m.create_mode)
            && !modes.iter().any(|allowed| allowed == mode.name())
        {
            return Verdict::deny(
                "create-mode-not-allowed",
                format!(
                    "{} nodes are not allowed here; allowed: {}",
                    mode.name(),
                    modes.join(", ")
                ),
            );
        }
        Verdict::allow()
    }
}

export_policy!(LimitsPolicy);

#[cfg(test)]
mod tests {
    use scopekeeper_policy_sdk::{CreateMode, Decision, Stat};

    use super::*;

    fn create(path: &str, len: usize, mode: CreateMode) -> Mutation {
        Mutation {
            op: OpKind::Create,
            path: path.into(),
            data: vec![0; len],
            create_mode: Some(mode),
            expected_version: -1,
        }
    }

    fn code(v: Verdict) -> Option<String> {
        match v.decision {
            Decision::Allow => None,
            Decision::Deny { code, .. } => Some(code),
        }
    }

    const PARAMS: &str = r#"{"max_data_bytes": 10, "max_children": 2, "max_depth": 2, "create_modes": ["persistent"]}"#;

    #[test]
    fn each_limit_denies_with_its_code() {
        let who = Principal::default();
        let mut ctx = Context {
            depth: 1,
            ..Context::default()
        };
        let admit = |m: &Mutation, ctx: &Context| code(LimitsPolicy::admit(PARAMS, m, &who, ctx));
        assert_eq!(admit(&create("/a", 10, CreateMode::Persistent), &ctx), None);
        assert_eq!(
            admit(&create("/a", 11, CreateMode::Persistent), &ctx).as_deref(),
            Some("data-too-large")
        );
        assert_eq!(
            admit(&create("/a", 1, CreateMode::PersistentSequential), &ctx).as_deref(),
            Some("create-mode-not-allowed")
        );
        ctx.parent = Some(Stat {
            num_children: 2,
            ..Stat::default()
        });
        assert_eq!(
            admit(&create("/a", 1, CreateMode::Persistent), &ctx).as_deref(),
            Some("too-many-children")
        );
        ctx.parent = None;
        ctx.depth = 3;
        assert_eq!(
            admit(&create("/a/b/c", 1, CreateMode::Persistent), &ctx).as_deref(),
            Some("too-deep")
        );
        let set = Mutation {
            op: OpKind::SetData,
            path: "/a".into(),
            data: vec![0; 11],
            create_mode: None,
            expected_version: -1,
        };
        assert_eq!(admit(&set, &ctx).as_deref(), Some("data-too-large"));
    }

    #[test]
    fn parameters_are_checked() {
        assert!(LimitsPolicy::validate_params(PARAMS).is_ok());
        assert!(LimitsPolicy::validate_params("").is_ok());
        assert!(LimitsPolicy::validate_params(r#"{"max_data_bytes": -1}"#).is_err());
        assert!(LimitsPolicy::validate_params(r#"{"max_bytes": 1}"#).is_err());
        assert!(LimitsPolicy::validate_params(r#"{"create_modes": ["eternal"]}"#).is_err());
    }
}
