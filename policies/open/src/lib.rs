//! `open`: every mutation is admitted. The policy of a scope nobody has restricted.

use scopekeeper_policy_sdk::{Context, Mutation, Policy, Principal, Verdict, export_policy};

pub struct Open;

impl Policy for Open {
    fn admit(
        _params: &str,
        _mutation: &Mutation,
        _principal: &Principal,
        _context: &Context,
    ) -> Verdict {
        Verdict::allow()
    }
}

export_policy!(Open);

#[cfg(test)]
mod tests {
    use scopekeeper_policy_sdk::{Mutation, OpKind};

    use super::*;

    #[test]
    fn admits_anything() {
        let m = Mutation {
            op: OpKind::Delete,
            path: "/x".into(),
            data: vec![],
            create_mode: None,
            expected_version: -1,
        };
        assert!(Open::admit("", &m, &Principal::default(), &Context::default()).is_allowed());
    }
}
