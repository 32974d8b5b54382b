//! `readonly`: the scope is frozen. Every create, set, delete and ACL change is denied; a multi's `check`
//! ops still pass. An admin can lift it by deploying another policy.

use scopekeeper_policy_sdk::{
    Context, Mutation, OpKind, Policy, Principal, Verdict, export_policy,
};

pub struct ReadOnly;

impl Policy for ReadOnly {
    fn admit(_params: &str, m: &Mutation, _who: &Principal, ctx: &Context) -> Verdict {
        if m.op == OpKind::Check {
            return Verdict::allow();
        }
        Verdict::deny(
            "read-only",
            format!(
                "the scope at {} is read-only; {} is refused",
                ctx.scope_root, m.path
            ),
        )
    }
}

export_policy!(ReadOnly);

#[cfg(test)]
mod tests {
    use super::*;

    fn op(op: OpKind) -> Mutation {
        Mutation {
            op,
            path: "/a".into(),
            data: vec![],
            create_mode: None,
            expected_version: -1,
        }
    }

    #[test]
    fn denies_every_change_but_checks() {
        let ctx = Context::default();
        for kind in [
            OpKind::Create,
            OpKind::Delete,
            OpKind::SetData,
            OpKind::SetAcl,
        ] {
            let v = ReadOnly::admit("", &op(kind), &Principal::default(), &ctx);
            assert!(!v.is_allowed(), "{kind:?}");
        }
        assert!(ReadOnly::admit("", &op(OpKind::Check), &Principal::default(), &ctx).is_allowed());
    }
}
