//! `floor`: what any policy costs at least, for benchmarks. It implements the generated
//! bindings directly, without the SDK's `Policy` trait and its glue, and admits everything:
//! what remains is the host's work (a fresh instance per entry on every anchor, the call, the
//! lowering and lifting of its arguments) and the bindings' own. `bash bench/policy-paired.sh
//! PAIRS SECS floor` measures it against no policy; with `POLICY_OLD`/`POLICY_NEW`,
//! `bench/binary-ab.sh` measures another policy against it. Not for deployment: it judges
//! nothing. The SDK generates the bindings for wasm32 only, so on other targets this crate is
//! empty.

#[cfg(target_arch = "wasm32")]
use scopekeeper_policy_sdk::bindings::exports::scopekeeper::policy::rules as wit;

pub struct Floor;

#[cfg(target_arch = "wasm32")]
impl wit::Guest for Floor {
    fn validate_params(_params: String) -> Result<(), String> {
        Ok(())
    }

    fn admit(
        _params: String,
        _entry: wit::Entry,
        _principals: Vec<wit::Principal>,
        ops: Vec<wit::JudgedOp>,
    ) -> Vec<wit::Verdict> {
        ops.iter()
            .map(|_| wit::Verdict {
                decision: wit::Decision::Allow,
                warnings: Vec::new(),
            })
            .collect()
    }

    /// A majority, as the SDK's default: the host refuses a rule that admits disjoint quorums.
    fn quorum(_params: String, anchors: Vec<wit::Node>, acked: Vec<u64>) -> bool {
        acked.len() * 2 > anchors.len()
    }

    fn place_anchors(
        _params: String,
        _nodes: Vec<wit::Node>,
        current: wit::Placement,
    ) -> wit::Placement {
        current
    }

    fn split(
        _params: String,
        _stats: wit::ScopeStats,
        _subtrees: Vec<wit::SubtreeStats>,
    ) -> Option<String> {
        None
    }

    fn merge(_params: String, _stats: wit::ScopeStats) -> bool {
        false
    }
}

#[cfg(target_arch = "wasm32")]
scopekeeper_policy_sdk::bindings::__export_policy_world!(Floor with_types_in scopekeeper_policy_sdk::bindings);
