//! `roles`: writing under a path prefix requires a role, or one principal. Parameters:
//! `{"rules": [{"prefix": "/prod", "role": "prod-writer"}, {"prefix": "/", "role": "writer"},
//! {"prefix": "/alice", "principal": "digest:alice"}]}`. The longest matching prefix decides;
//! paths no rule covers are open. A principal is a native client's certificate id, or the
//! identity a ZooKeeper client last authenticated as (`digest:<user>`).

use scopekeeper_policy_sdk::{
    Context, Mutation, OpKind, Policy, Principal, Verdict, export_policy, parse_params_once,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub prefix: String,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub principal: Option<String>,
}

impl Rule {
    fn admits(&self, who: &Principal) -> bool {
        match (&self.role, &self.principal) {
            (Some(role), _) => who.has_role(role),
            (None, Some(principal)) => who.id == *principal,
            (None, None) => false,
        }
    }

    fn requirement(&self) -> String {
        match (&self.role, &self.principal) {
            (Some(role), _) => format!("the role {role:?}"),
            (None, Some(principal)) => format!("the principal {principal:?}"),
            (None, None) => "nothing it can have".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    pub rules: Vec<Rule>,
}

fn covers(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty() || path == prefix || path.starts_with(&format!("{prefix}/"))
}

impl Rules {
    pub fn parse(params: &str) -> Result<Rules, String> {
        let rules: Rules =
            serde_json::from_str(params).map_err(|e| format!("roles parameters: {e}"))?;
        let one_requirement = |r: &Rule| match (&r.role, &r.principal) {
            (Some(role), None) => !role.is_empty(),
            (None, Some(principal)) => !principal.is_empty(),
            _ => false,
        };
        if let Some(bad) = rules
            .rules
            .iter()
            .find(|r| !r.prefix.starts_with('/') || !one_requirement(r))
        {
            return Err(format!(
                "rule {bad:?}: prefix must start with / and the rule names one non-empty role or principal"
            ));
        }
        Ok(rules)
    }

    /// The rule with the longest prefix covering `path`.
    pub fn rule_for(&self, path: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .filter(|r| covers(&r.prefix, path))
            .max_by_key(|r| r.prefix.trim_end_matches('/').len())
    }
}

pub struct RolesPolicy;

impl Policy for RolesPolicy {
    fn validate_params(params: &str) -> Result<(), String> {
        Rules::parse(params).map(|_| ())
    }

    fn admit(params: &str, m: &Mutation, who: &Principal, _ctx: &Context) -> Verdict {
        let parsed = parse_params_once(params, Rules::parse);
        let rules = match &*parsed {
            Ok(rules) => rules,
            Err(e) => return Verdict::deny("bad-params", e.clone()),
        };
        if m.op == OpKind::Check {
            return Verdict::allow();
        }
        match rules.rule_for(&m.path) {
            Some(rule) if !rule.admits(who) => Verdict::deny(
                "missing-role",
                format!(
                    "writing {} requires {}; {:?} has roles {:?}",
                    m.path,
                    rule.requirement(),
                    who.id,
                    who.roles
                ),
            ),
            _ => Verdict::allow(),
        }
    }
}

export_policy!(RolesPolicy);

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: &str = r#"{"rules": [{"prefix": "/prod", "role": "prod"}, {"prefix": "/prod/open", "role": "any"}, {"prefix": "/alice", "principal": "digest:alice"}]}"#;

    fn allowed(path: &str, roles: &[&str]) -> bool {
        allowed_as("p", path, roles)
    }

    fn allowed_as(id: &str, path: &str, roles: &[&str]) -> bool {
        let m = Mutation {
            op: OpKind::Create,
            path: path.into(),
            data: vec![],
            create_mode: None,
            expected_version: -1,
        };
        let who = Principal {
            id: id.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        };
        RolesPolicy::admit(PARAMS, &m, &who, &Context::default()).is_allowed()
    }

    #[test]
    fn longest_prefix_decides() {
        assert!(allowed("/prod/x", &["prod"]));
        assert!(!allowed("/prod/x", &["dev"]));
        assert!(!allowed("/prod", &[]));
        assert!(allowed("/prod/open/y", &["any"]));
        assert!(!allowed("/prod/open/y", &["prod"]));
        assert!(allowed("/production", &[]));
        assert!(allowed("/dev/x", &[]));
    }

    #[test]
    fn a_rule_can_name_one_principal() {
        assert!(allowed_as("digest:alice", "/alice/x", &[]));
        assert!(!allowed_as("digest:bob", "/alice/x", &["alice"]));
        assert!(!allowed_as("ip:127.0.0.1", "/alice", &[]));
    }

    #[test]
    fn parameters_are_checked() {
        assert!(RolesPolicy::validate_params(PARAMS).is_ok());
        assert!(
            RolesPolicy::validate_params(r#"{"rules": [{"prefix": "prod", "role": "x"}]}"#)
                .is_err()
        );
        assert!(RolesPolicy::validate_params("[]").is_err());
        let both = r#"{"rules": [{"prefix": "/a", "role": "x", "principal": "y"}]}"#;
        assert!(RolesPolicy::validate_params(both).is_err());
        let neither = r#"{"rules": [{"prefix": "/a"}]}"#;
        assert!(RolesPolicy::validate_params(neither).is_err());
    }
}
