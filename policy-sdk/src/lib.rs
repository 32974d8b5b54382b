//! Write Scopekeeper scope policies in Rust.
//!
//! A policy is a plain crate (`crate-type = ["cdylib", "rlib"]`) that implements [`Policy`] and
//! calls [`export_policy!`]. It unit-tests natively with `cargo test` against the types here,
//! and `scopekeeper policy build DIR --out policy.wasm` turns it into a deployable component.
//!
//! ```
//! use scopekeeper_policy_sdk::{Context, Mutation, Policy, Principal, Verdict};
//!
//! struct NoBigValues;
//!
//! impl Policy for NoBigValues {
//!     fn admit(_params: &str, m: &Mutation, _who: &Principal, _ctx: &Context) -> Verdict {
//!         if m.data.len() > 1024 {
//!             return Verdict::deny("data-too-large", format!("{} bytes for {}; at most 1024", m.data.len(), m.path));
//!         }
//!         Verdict::allow()
//!     }
//! }
//! scopekeeper_policy_sdk::export_policy!(NoBigValues);
//! ```
//!
//! The normative interface is `wit/policy.wit`; these types mirror it one to one. A policy has no
//! imports: no clock (use `Context::time_ms`), no randomness, no I/O. The host runs a fresh
//! instance for each log entry, with a fuel budget and a memory cap; running out of either, or
//! panicking, denies that op and the entry's later ones, on every anchor alike.
//!
//! Because an instance lives for one entry, the SDK gives policies a simpler allocator than
//! Rust's default (free lists by size class, no memory returned; see `allocator.rs`), which
//! costs less fuel per call. A policy crate that brings its own `#[global_allocator]` depends
//! on the SDK with `default-features = false`.

extern crate self as scopekeeper_policy_sdk;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

#[cfg(target_arch = "wasm32")]
mod allocator;
#[cfg(any(target_arch = "wasm32", test))]
mod compare;
#[cfg(all(target_arch = "wasm32", feature = "allocator"))]
#[global_allocator]
static ALLOCATOR: allocator::SizeClasses = allocator::SizeClasses::new();
#[cfg(target_arch = "wasm32")]
mod glue;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub use glue::Exported;

/// The generated bindings; only the export macro uses them.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "policy",
        pub_export_macro: true,
        export_macro_name: "__export_policy_world",
        default_bindings_module: "::scopekeeper_policy_sdk::bindings",
        runtime_path: "::scopekeeper_policy_sdk::__wit_bindgen::rt",
    });
}

/// The version of the WIT world this SDK implements.
pub const WORLD_VERSION: &str = "scopekeeper:policy@0.4.0";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Create,
    Delete,
    SetData,
    Check,
    /// A child scope is created at the path; its subtree moves under the child's policy.
    Delegate,
    /// The node's ACL is replaced (ZooKeeper's setACL); `expected_version` is its aversion.
    SetAcl,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateMode {
    Persistent,
    PersistentSequential,
    Ephemeral,
    EphemeralSequential,
    Container,
    Ttl,
}

impl CreateMode {
    /// The name used in parameters, e.g. `persistent-sequential`.
    pub fn name(self) -> &'static str {
        match self {
            CreateMode::Persistent => "persistent",
            CreateMode::PersistentSequential => "persistent-sequential",
            CreateMode::Ephemeral => "ephemeral",
            CreateMode::EphemeralSequential => "ephemeral-sequential",
            CreateMode::Container => "container",
            CreateMode::Ttl => "ttl",
        }
    }
}

/// ZooKeeper's Stat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub data_length: i32,
    pub num_children: i32,
    pub pzxid: i64,
}

/// One operation a client asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mutation {
    pub op: OpKind,
    pub path: String,
    pub data: Vec<u8>,
    pub create_mode: Option<CreateMode>,
    /// -1 means any version.
    pub expected_version: i32,
}

/// Who asks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    pub roles: Vec<String>,
}

impl Principal {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScopeStats {
    pub znodes: u64,
    pub data_bytes: u64,
    /// Writes per second over the last ten seconds of leader-stamped time.
    pub writes_per_sec: u64,
    /// Leader-stamped ms since the scope last split or was created.
    pub ms_since_split: u64,
    /// Ms since the scope's last admitted write (second resolution).
    pub ms_since_write: u64,
}

/// A subtree directly below the scope's root, as a split candidate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubtreeStats {
    pub path: String,
    pub znodes: u64,
    pub data_bytes: u64,
    pub writes_per_sec: u64,
}

/// Where and when a mutation is judged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    pub log_index: u64,
    /// Leader-stamped time, ms since the Unix epoch: the only clock a policy has.
    pub time_ms: i64,
    pub scope_root: String,
    /// Depth of the path below the scope's root (the root is 0).
    pub depth: u32,
    pub target: Option<Stat>,
    pub parent: Option<Stat>,
    pub stats: ScopeStats,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny { code: String, message: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub warnings: Vec<String>,
}

impl Verdict {
    pub fn allow() -> Self {
        Verdict {
            decision: Decision::Allow,
            warnings: Vec::new(),
        }
    }

    /// A refusal: `code` is short and stable (`data-too-large`), `message` says what to do.
    pub fn deny(code: impl Into<String>, message: impl Into<String>) -> Self {
        Verdict {
            decision: Decision::Deny {
                code: code.into(),
                message: message.into(),
            },
            warnings: Vec::new(),
        }
    }

    pub fn with_warning(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }

    pub fn is_allowed(&self) -> bool {
        self.decision == Decision::Allow
    }
}

/// A node that can hold a scope, with its labels (`zone=a`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub id: u64,
    pub labels: Vec<(String, String)>,
}

impl Node {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Where a scope's replicas live.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    pub voters: Vec<u64>,
    pub observers: Vec<u64>,
    /// The voter that should lead, if any; the host moves leadership there.
    pub leader: Option<u64>,
}

/// The policy's parameters parsed by `parse`, once per instance rather than once per op.
///
/// The host judges all the ops of a log entry on one fresh instance, always with the same
/// parameters, so a policy that parses JSON parameters in `admit` can parse them once here
/// and keep the result for the entry's other ops (natively, for as long as `params` stays the
/// same). Deterministic: whether a call parses depends only on the calls before it in the
/// instance, which are the same on every anchor.
///
/// ```
/// use scopekeeper_policy_sdk::parse_params_once;
///
/// fn max_len(params: &str) -> Result<usize, String> {
///     params.trim().parse().map_err(|e| format!("max_len: {e}"))
/// }
/// let parses = std::cell::Cell::new(0);
/// let parse = |p: &str| {
///     parses.set(parses.get() + 1);
///     max_len(p)
/// };
/// assert_eq!(*parse_params_once("12", parse), Ok(12));
/// assert_eq!(*parse_params_once("12", parse), Ok(12));
/// assert_eq!(parses.get(), 1, "the second call found the first one's result");
/// assert_eq!(*parse_params_once("7", parse), Ok(7));
/// assert_eq!(parses.get(), 2, "other parameters are parsed again");
/// ```
pub fn parse_params_once<T: 'static>(
    params: &str,
    parse: impl FnOnce(&str) -> T,
) -> std::rc::Rc<T> {
    use std::any::Any;
    use std::cell::RefCell;
    use std::rc::Rc;
    thread_local! {
        // One slot: a policy has one parameter type and, per instance, one parameter string.
        static PARSED: RefCell<Option<(String, Rc<dyn Any>)>> = const { RefCell::new(None) };
    }
    let hit = PARSED.with_borrow(|slot| match slot {
        Some((seen, parsed)) if seen == params => parsed.clone().downcast::<T>().ok(),
        _ => None,
    });
    if let Some(parsed) = hit {
        return parsed;
    }
    let parsed = Rc::new(parse(params));
    PARSED.set(Some((params.to_string(), parsed.clone() as Rc<dyn Any>)));
    parsed
}

/// A scope's rules. Only `admit` is required; the rest default to: any parameters are fine,
/// a Raft majority suffices, anchors stay where they are, never split.
pub trait Policy {
    /// Checks deployment parameters before the policy is committed.
    fn validate_params(params: &str) -> Result<(), String> {
        let _ = params;
        Ok(())
    }

    /// Judges one mutation. The answer must follow from the arguments alone (no state kept
    /// between calls, beyond caches such as [`parse_params_once`]): the host judges the ops of
    /// an entry in one instance, many per call, and after a trap asks again one op at a time.
    fn admit(
        params: &str,
        mutation: &Mutation,
        principal: &Principal,
        context: &Context,
    ) -> Verdict;

    /// Whether the anchors in `acked` suffice to answer a client (never less than a majority:
    /// the host enforces that).
    fn quorum(params: &str, anchors: &[Node], acked: &[u64]) -> bool {
        let _ = params;
        acked.len() * 2 > anchors.len()
    }

    /// Which nodes should replicate the scope.
    fn placement(params: &str, nodes: &[Node], current: &Placement) -> Placement {
        let _ = (params, nodes);
        current.clone()
    }

    /// Whether to split the scope, and where: a path at or below one of `subtrees` (those
    /// directly below the scope's root, largest first).
    fn split(params: &str, stats: &ScopeStats, subtrees: &[SubtreeStats]) -> Option<String> {
        let _ = (params, stats, subtrees);
        None
    }

    /// Whether the scope (a child scope, small and cold) should merge back into its parent.
    fn merge(params: &str, stats: &ScopeStats) -> bool {
        let _ = (params, stats);
        false
    }
}

/// Exports a [`Policy`] implementation as the component's entry points. On native targets it
/// expands to nothing, so the crate still unit-tests with `cargo test`.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type ScopekeeperPolicyExport = $crate::Exported<$policy>;
            $crate::bindings::__export_policy_world!(ScopekeeperPolicyExport with_types_in $crate::bindings);
        };
    };
}
