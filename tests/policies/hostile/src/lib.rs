//! A policy that misbehaves on purpose, as its parameters say, for the host's tests:
//! `loop` spins forever, `bomb` allocates until memory runs out, `trap` panics (and
//! `trap-under-b` only for paths under `/b`: a trap in the middle of an entry), `deny-data`
//! denies any mutation with data (and spends fuel proportional to it), anything else admits.
//! Two broken quorum rules: `quorum-exactly-two` (not monotone) and `quorum-any` (one ack is
//! enough, so disjoint quorums exist).

use scopekeeper_policy_sdk::{Context, Mutation, Node, Policy, Principal, Verdict, export_policy};

pub struct Hostile;

impl Policy for Hostile {
    fn validate_params(params: &str) -> Result<(), String> {
        match params {
            "loop" | "bomb" | "trap" | "trap-under-b" | "deny-data" | "quorum-exactly-two"
            | "quorum-any" | "" => Ok(()),
            other => Err(format!("unknown behaviour {other:?}")),
        }
    }

    fn quorum(params: &str, anchors: &[Node], acked: &[u64]) -> bool {
        Self::broken_quorum(params, anchors, acked)
    }

    fn admit(params: &str, m: &Mutation, _who: &Principal, _ctx: &Context) -> Verdict {
        match params {
            "loop" => {
                let mut x: u64 = 1;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            "bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => panic!("this policy panics on purpose"),
            "trap-under-b" if m.path.starts_with("/b/") => {
                panic!("this policy panics on purpose under /b")
            }
            "deny-data" => {
                let sum: u64 = m.data.iter().map(|b| u64::from(*b)).sum();
                if m.data.is_empty() {
                    Verdict::allow()
                } else {
                    Verdict::deny(
                        "has-data",
                        format!("{} bytes summing to {sum}", m.data.len()),
                    )
                }
            }
            _ => Verdict::allow(),
        }
    }
}

impl Hostile {
    fn broken_quorum(params: &str, anchors: &[Node], acked: &[u64]) -> bool {
        match params {
            "quorum-exactly-two" => acked.len() == 2,
            "quorum-any" => !acked.is_empty(),
            _ => acked.len() * 2 > anchors.len(),
        }
    }
}

export_policy!(Hostile);
