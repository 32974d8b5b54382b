//! `schema`: data written under a prefix must be a JSON object with the given fields.
//! Parameters: `{"prefix": "/services", "required_fields": ["host", "port"], "allow_empty": true}`.
//! `allow_empty` (default true) lets empty nodes through, so parents can be created.

use scopekeeper_policy_sdk::{
    Context, Mutation, OpKind, Policy, Principal, Verdict, export_policy, parse_params_once,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    #[serde(default = "root")]
    pub prefix: String,
    pub required_fields: Vec<String>,
    #[serde(default = "yes")]
    pub allow_empty: bool,
}

fn root() -> String {
    "/".into()
}

fn yes() -> bool {
    true
}

impl Schema {
    pub fn parse(params: &str) -> Result<Schema, String> {
        let schema: Schema =
            serde_json::from_str(params).map_err(|e| format!("schema parameters: {e}"))?;
        if !schema.prefix.starts_with('/') {
            return Err(format!("prefix {:?} must start with /", schema.prefix));
        }
        Ok(schema)
    }

    fn covers(&self, path: &str) -> bool {
        let prefix = self.prefix.trim_end_matches('/');
        prefix.is_empty() || path == prefix || path.starts_with(&format!("{prefix}/"))
    }
}

pub struct SchemaPolicy;

impl Policy for SchemaPolicy {
    fn validate_params(params: &str) -> Result<(), String> {
        Schema::parse(params).map(|_| ())
    }

    fn admit(params: &str, m: &Mutation, _who: &Principal, _ctx: &Context) -> Verdict {
        let parsed = parse_params_once(params, Schema::parse);
        let schema = match &*parsed {
            Ok(schema) => schema,
            Err(e) => return Verdict::deny("bad-params", e.clone()),
        };
        if !matches!(m.op, OpKind::Create | OpKind::SetData) || !schema.covers(&m.path) {
            return Verdict::allow();
        }
        if m.data.is_empty() && schema.allow_empty {
            return Verdict::allow();
        }
        let value: serde_json::Value = match serde_json::from_slice(&m.data) {
            Ok(v) => v,
            Err(e) => {
                return Verdict::deny("not-json", format!("data for {} is not JSON: {e}", m.path));
            }
        };
        let Some(object) = value.as_object() else {
            return Verdict::deny(
                "not-an-object",
                format!("data for {} must be a JSON object", m.path),
            );
        };
        let missing: Vec<&str> = schema
            .required_fields
            .iter()
            .filter(|f| !object.contains_key(f.as_str()))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Verdict::deny(
                "missing-field",
                format!("data for {} lacks {}", m.path, missing.join(", ")),
            );
        }
        Verdict::allow()
    }
}

export_policy!(SchemaPolicy);

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: &str = r#"{"prefix": "/services", "required_fields": ["host", "port"]}"#;

    fn set(path: &str, data: &str) -> Mutation {
        Mutation {
            op: OpKind::SetData,
            path: path.into(),
            data: data.as_bytes().to_vec(),
            create_mode: None,
            expected_version: -1,
        }
    }

    fn allowed(m: Mutation) -> bool {
        SchemaPolicy::admit(PARAMS, &m, &Principal::default(), &Context::default()).is_allowed()
    }

    #[test]
    fn data_under_the_prefix_must_match() {
        assert!(allowed(set("/services/a", r#"{"host": "h", "port": 1}"#)));
        assert!(!allowed(set("/services/a", r#"{"host": "h"}"#)));
        assert!(!allowed(set("/services/a", "not json")));
        assert!(!allowed(set("/services/a", "[1]")));
        assert!(allowed(set("/services/a", "")));
        assert!(allowed(set("/servicesX", "anything")));
        assert!(allowed(set("/other", "anything")));
    }

    #[test]
    fn parameters_are_checked() {
        assert!(SchemaPolicy::validate_params(PARAMS).is_ok());
        assert!(SchemaPolicy::validate_params("{}").is_err());
        assert!(
            SchemaPolicy::validate_params(r#"{"prefix": "x", "required_fields": []}"#).is_err()
        );
    }
}
