//! Each team writes only under `/teams/<its id>/`; anything else under `/teams` needs the
//! `admin` role. Paths outside `/teams` are not this policy's business.

use scopekeeper_policy_sdk::{Context, Mutation, OpKind, Policy, Principal, Verdict, export_policy};

pub struct TeamNamespaces;

impl Policy for TeamNamespaces {
    fn admit(_params: &str, m: &Mutation, who: &Principal, _ctx: &Context) -> Verdict {
        if m.op == OpKind::Check || who.has_role("admin") {
            return Verdict::allow();
        }
        let Some(rest) = m.path.strip_prefix("/teams/") else {
            return Verdict::allow();
        };
        let team = rest.split('/').next().unwrap_or("");
        if team == who.id {
            Verdict::allow()
        } else {
            Verdict::deny(
                "not-your-team",
                format!("{} may write under /teams/{}/ only, not {}", who.id, who.id, m.path),
            )
        }
    }
}

export_policy!(TeamNamespaces);

#[cfg(test)]
mod tests {
    use super::*;

    fn create(path: &str) -> Mutation {
        Mutation { op: OpKind::Create, path: path.into(), data: vec![], create_mode: None, expected_version: -1 }
    }

    fn who(id: &str, roles: &[&str]) -> Principal {
        Principal { id: id.into(), roles: roles.iter().map(|r| r.to_string()).collect() }
    }

    fn allowed(path: &str, principal: &Principal) -> bool {
        TeamNamespaces::admit("", &create(path), principal, &Context::default()).is_allowed()
    }

    #[test]
    fn teams_stay_in_their_namespace() {
        let payments = who("payments", &[]);
        assert!(allowed("/teams/payments/config", &payments));
        assert!(allowed("/teams/payments", &payments));
        assert!(!allowed("/teams/search/config", &payments));
        assert!(!allowed("/teams/paymentsX/config", &payments));
        assert!(allowed("/elsewhere", &payments));
        assert!(allowed("/teams/search/config", &who("root", &["admin"])));
    }
}
