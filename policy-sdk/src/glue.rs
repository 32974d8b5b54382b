//! Conversions between the generated WIT types and the SDK's plain types.

use std::marker::PhantomData;

use crate::bindings::exports::scopekeeper::policy::rules as wit;
use crate::{
    Context, CreateMode, Decision, Mutation, Node, OpKind, Placement, Policy, Principal,
    ScopeStats, Stat, SubtreeStats, Verdict,
};

#[doc(hidden)]
pub struct Exported<P>(PhantomData<P>);

fn stat(s: wit::Stat) -> Stat {
    Stat {
        czxid: s.czxid,
        mzxid: s.mzxid,
        ctime: s.ctime,
        mtime: s.mtime,
        version: s.version,
        cversion: s.cversion,
        aversion: s.aversion,
        ephemeral_owner: s.ephemeral_owner,
        data_length: s.data_length,
        num_children: s.num_children,
        pzxid: s.pzxid,
    }
}

fn stats(s: wit::ScopeStats) -> ScopeStats {
    ScopeStats {
        znodes: s.znodes,
        data_bytes: s.data_bytes,
        writes_per_sec: s.writes_per_sec,
        ms_since_split: s.ms_since_split,
        ms_since_write: s.ms_since_write,
    }
}

fn mutation(m: wit::Mutation) -> Mutation {
    Mutation {
        op: match m.op {
            wit::OpKind::Create => OpKind::Create,
            wit::OpKind::Delete => OpKind::Delete,
            wit::OpKind::SetData => OpKind::SetData,
            wit::OpKind::Check => OpKind::Check,
            wit::OpKind::Delegate => OpKind::Delegate,
            wit::OpKind::SetAcl => OpKind::SetAcl,
        },
        path: m.path,
        data: m.data,
        create_mode: m.create_mode.map(|mode| match mode {
            wit::CreateMode::Persistent => CreateMode::Persistent,
            wit::CreateMode::PersistentSequential => CreateMode::PersistentSequential,
            wit::CreateMode::Ephemeral => CreateMode::Ephemeral,
            wit::CreateMode::EphemeralSequential => CreateMode::EphemeralSequential,
            wit::CreateMode::Container => CreateMode::Container,
            wit::CreateMode::Ttl => CreateMode::Ttl,
        }),
        expected_version: m.expected_version,
    }
}

fn node(n: wit::Node) -> Node {
    Node {
        id: n.id,
        labels: n.labels,
    }
}

impl<P: Policy> wit::Guest for Exported<P> {
    fn validate_params(params: String) -> Result<(), String> {
        P::validate_params(&params)
    }

    fn admit(
        params: String,
        entry: wit::Entry,
        principals: Vec<wit::Principal>,
        ops: Vec<wit::JudgedOp>,
    ) -> Vec<wit::Verdict> {
        let principals: Vec<Principal> = principals
            .into_iter()
            .map(|p| Principal {
                id: p.id,
                roles: p.roles,
            })
            .collect();
        let mut verdicts = Vec::with_capacity(ops.len());
        // One context for all the ops, its per-op fields replaced for each: the entry's fields
        // (the scope's root a string) are the same for every op.
        let mut context = Context {
            log_index: entry.log_index,
            time_ms: entry.time_ms,
            scope_root: entry.scope_root,
            depth: 0,
            target: None,
            parent: None,
            stats: ScopeStats::default(),
        };
        for op in ops {
            let wit::JudgedOp {
                mutation: m,
                principal,
                context: c,
            } = op;
            let Some(principal) = principals.get(principal as usize) else {
                panic!("principal {principal} of {}", principals.len());
            };
            context.depth = c.depth;
            context.target = c.target.map(stat);
            context.parent = c.parent.map(stat);
            context.stats = stats(c.stats);
            let Verdict { decision, warnings } =
                P::admit(&params, &mutation(m), principal, &context);
            let denied = matches!(decision, Decision::Deny { .. });
            verdicts.push(wit::Verdict {
                decision: match decision {
                    Decision::Allow => wit::Decision::Allow,
                    Decision::Deny { code, message } => {
                        wit::Decision::Deny(wit::Denial { code, message })
                    }
                },
                warnings,
            });
            // The ops after a denial meet another state: the host asks about them again.
            if denied {
                break;
            }
        }
        verdicts
    }

    fn quorum(params: String, anchors: Vec<wit::Node>, acked: Vec<u64>) -> bool {
        let anchors: Vec<Node> = anchors.into_iter().map(node).collect();
        P::quorum(&params, &anchors, &acked)
    }

    fn place_anchors(
        params: String,
        nodes: Vec<wit::Node>,
        current: wit::Placement,
    ) -> wit::Placement {
        let nodes: Vec<Node> = nodes.into_iter().map(node).collect();
        let current = Placement {
            voters: current.voters,
            observers: current.observers,
            leader: current.leader,
        };
        let Placement {
            voters,
            observers,
            leader,
        } = P::placement(&params, &nodes, &current);
        wit::Placement {
            voters,
            observers,
            leader,
        }
    }

    fn split(
        params: String,
        s: wit::ScopeStats,
        subtrees: Vec<wit::SubtreeStats>,
    ) -> Option<String> {
        let subtrees: Vec<SubtreeStats> = subtrees
            .into_iter()
            .map(|t| SubtreeStats {
                path: t.path,
                znodes: t.znodes,
                data_bytes: t.data_bytes,
                writes_per_sec: t.writes_per_sec,
            })
            .collect();
        P::split(&params, &stats(s), &subtrees)
    }

    fn merge(params: String, s: wit::ScopeStats) -> bool {
        P::merge(&params, &stats(s))
    }
}
