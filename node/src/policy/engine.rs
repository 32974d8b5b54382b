//! The deterministic engine, checks before commit, and the cache of compiled components.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wasmtime::component::{Component, ComponentExportIndex, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::PolicyHash;
use super::eval::EntryEvaluation;
use super::wit::PolicyPre;
use crate::limits;

/// Why a component was refused before commit. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(
        "the policy is {len} bytes; the limit is {max}. Build it in release mode and strip it (`scopekeeper policy build` does)"
    )]
    TooLarge { len: usize, max: usize },
    #[error("the parameters are {len} bytes; the limit is {max}")]
    ParamsTooLarge { len: usize, max: usize },
    #[error("not a valid WebAssembly component: {0}. Build it with `scopekeeper policy build`")]
    Invalid(String),
    #[error(
        "the policy imports {0}; policies must have no imports (no WASI, clock, randomness or I/O)"
    )]
    HasImports(String),
    #[error("the component does not implement the scopekeeper:policy world: {0}")]
    WrongWorld(String),
    #[error("compiling the policy took longer than {0:?}")]
    CompileTimeout(std::time::Duration),
    #[error("the policy rejected its parameters: {0}")]
    BadParams(String),
    #[error("the policy trapped while checking its parameters: {0}")]
    Trapped(String),
}

/// One engine per process, configured for determinism. Every knob we depend on is set here
/// rather than left to defaults.
pub fn deterministic_engine() -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.consume_fuel(true);
    config.epoch_interruption(false);
    config.cranelift_nan_canonicalization(true);
    config.relaxed_simd_deterministic(true);
    // The feature set is pinned: what rustc emits for wasm32-unknown-unknown, nothing that
    // could behave differently across hosts. Threads, GC and function references are not even
    // compiled into this wasmtime (features `threads` and `gc` are off).
    config.wasm_simd(false);
    config.wasm_relaxed_simd(false);
    config.wasm_memory64(false);
    config.wasm_multi_memory(false);
    config.wasm_tail_call(false);
    config.wasm_gc(false);
    config.wasm_bulk_memory(true);
    config.wasm_multi_value(true);
    config.max_wasm_stack(limits::POLICY_STACK_BYTES_MAX);
    // Bounds checks in the code rather than guard pages and signals. A fresh instance per entry
    // means a pool slot per entry; with guard pages, each instance that grows its memory makes
    // that slot's pages accessible with mprotect, and the next instance hides them again:
    // two page-table changes per entry, each a TLB shootdown that interrupts every core running
    // this process (measured: 4% of all CPU samples at one client, and most of the latency a
    // policy added). Without guard pages a slot's accessible region only ever grows.
    config.signals_based_traps(false);
    config.memory_guard_size(0);
    config.guard_before_linear_memory(false);
    config.memory_reservation(limits::POLICY_MEMORY_BYTES_MAX as u64);
    config.memory_reservation_for_growth(0);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(limits::POLICY_INSTANCES_MAX);
    pool.total_core_instances(limits::POLICY_INSTANCES_MAX * 4);
    pool.total_memories(limits::POLICY_INSTANCES_MAX * 2);
    pool.total_tables(limits::POLICY_INSTANCES_MAX * 4);
    pool.max_memory_size(limits::POLICY_MEMORY_BYTES_MAX);
    // A fresh instance per entry means a slot is recycled per entry. Returning its pages with
    // madvise costs a TLB shootdown on every core each time (measured: a quarter of all CPU
    // under write load); zeroing the first pages in place is far cheaper.
    pool.linear_memory_keep_resident(limits::POLICY_MEMORY_KEEP_RESIDENT_BYTES);
    pool.table_keep_resident(limits::POLICY_TABLE_KEEP_RESIDENT_BYTES);
    // No PAGEMAP_SCAN: the reset rewrites the slot's accessible memory (up to `keep_resident`)
    // rather than asking the kernel which pages the instance wrote. A policy's memory is a few
    // 64 KiB pages (the stock ones start at two), and for so few the ioctl cost more than the
    // copy: 6 us per instance under load (perf). bench/binary-ab.sh, `limits`, against `Auto`:
    // at 1 client, 12 pairs, node CPU per create -23.7 us (95% CI -38.9 to -14.1), p50 -14 us
    // (CI -26 to -9); at 64 clients, 10 pairs, -0.5 us (CI -3.0 to +2.1). A policy that grows
    // its memory toward `keep_resident` pays for a larger copy per entry.
    pool.pagemap_scan(wasmtime::Enabled::No);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(|e| anyhow::anyhow!("configuring the policy engine: {e:#}"))
}

/// Where an entry's instance comes from, and where it goes once used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Supply {
    /// Taken from those made ahead on the preparer thread and handed back to it: for an entry
    /// somebody waits for on this replica (the leader that proposed it answers its clients
    /// when it is applied).
    MadeAhead,
    /// Made and dropped by the entry itself: for an entry nobody waits for here (a follower's
    /// apply). Asking the preparer costs a wake-up of its thread per entry, and the instance
    /// it makes sits in another core's cache; that pays only where it shortens an answer.
    /// `bash bench/binary-ab.sh` against every anchor made ahead, `limits`: at 1 client (12
    /// pairs) p50 -28 us (95% CI -39 to -2), throughput 1.036 (CI 1.002 to 1.059), node CPU
    /// per create -38 us (CI -74 to -13); at 64 clients (8 pairs) throughput 1.056 (CI 0.961
    /// to 1.105), node CPU per create -9.2 us (CI -15.0 to +0.2).
    OnTheSpot,
}

/// A component compiled, checked and ready to instantiate.
pub struct Compiled {
    pub hash: PolicyHash,
    pub pre: PolicyPre<()>,
    /// The `admit` export, its type checked once here rather than at every instantiation.
    /// `PolicyPre::instantiate` checks the type of every export of every instance it makes,
    /// comparing the WIT records field by field: 13 us of the 38 it took per create at one
    /// client under `limits` (perf, dev cluster, three instances per create). Entries make
    /// instances with [`PolicyPre::instance_pre`] and call `admit` through this index.
    pub(super) admit: ComponentExportIndex,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Compiled({})", self.hash)
    }
}

/// Compiled components by hash. Apply finds the active policy here; only a cache miss compiles.
///
/// It also keeps instances out of the way of the entries somebody waits for ([`Supply`]).
/// Making an instance and returning its pool slot (which resets its memory) are most of a
/// policy's cost per entry; for the entries a leader answers, both are done on a thread of the
/// engine's own, at the lowest priority, rather than in apply: the next such entry finds a
/// fresh instance made ahead ([`PolicyEngine::prepare_ahead`]), and a used one is dropped
/// there ([`PolicyEngine::retire`]). A follower's entries make and drop their own. An instance
/// made ahead is as fresh as one made on the spot: it has run nothing, and its fuel is the
/// full budget.
///
/// Why a thread and not the apply task after the responses: with every anchor's apply doing
/// it, the work landed on the cores the next write needed (1-client creates on the dev cluster
/// with `open`, 5 alternating rounds: p50 +155 us over no policy when apply made the
/// instances, +97 us when a low-priority thread did). On a busy machine that thread may not
/// run at all; entries then make and drop their own instances, as they would without it.
///
/// Measured again once only a leader's entries used the thread (`bash bench/binary-ab.sh`,
/// `limits`, 1 client, 12 pairs, twice): without it, with each entry making its instance in
/// apply and a leader dropping its used ones after the answers, node CPU per create was -17.4
/// and -19.4 us (95% CIs -24.9 to +10.7, -39.3 to +9.9) but p50 +7 us both times (CIs -1 to
/// +14, -8 to +21). The thread stays for the latency.
#[derive(Clone)]
pub struct PolicyEngine {
    shared: Arc<Shared>,
}

struct Shared {
    engine: Engine,
    cache: Mutex<HashMap<PolicyHash, Arc<Compiled>>>,
    /// Apply only ever `try_lock`s this: the preparer holding it at the lowest priority may be
    /// preempted for a long time, and apply must not wait for it.
    instances: Mutex<Instances>,
    /// Requests to the preparer thread, started on the first request. The thread holds only a
    /// weak reference, so it ends when the engine is dropped.
    preparer: std::sync::OnceLock<std::sync::mpsc::SyncSender<PrepareRequest>>,
}

/// A policy to make an instance of ahead: its hash and component.
type PrepareRequest = (PolicyHash, Arc<Vec<u8>>);

#[derive(Default)]
struct Instances {
    /// Made with [`limits::POLICY_FUEL_PER_ENTRY`]: at most
    /// [`limits::POLICY_READY_PER_POLICY`] per policy, [`limits::POLICY_READY_MAX`] in all. More
    /// than one per policy because several scopes of a node (or the three anchors of
    /// `scopekeeper dev`, in one process) may run the same policy: with one, they took it from
    /// each other and most entries made their own instance after all.
    ready: HashMap<PolicyHash, Vec<EntryEvaluation>>,
    /// Used, to be dropped; at most [`limits::POLICY_RETIRED_MAX`].
    retired: Vec<EntryEvaluation>,
}

impl PolicyEngine {
    pub fn new() -> anyhow::Result<Self> {
        Ok(PolicyEngine {
            shared: Arc::new(Shared {
                engine: deterministic_engine()?,
                cache: Mutex::new(HashMap::new()),
                instances: Mutex::new(Instances::default()),
                preparer: std::sync::OnceLock::new(),
            }),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    fn instances(&self) -> std::sync::MutexGuard<'_, Instances> {
        self.shared
            .instances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The instances, unless somebody holds them (then apply does without).
    fn instances_now(&self) -> Option<std::sync::MutexGuard<'_, Instances>> {
        match self.shared.instances.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// The instance made ahead for `hash`, if there is one, it has `fuel`, and it can be had
    /// without waiting.
    pub(super) fn take_ready(&self, hash: PolicyHash, fuel: u64) -> Option<EntryEvaluation> {
        if fuel != limits::POLICY_FUEL_PER_ENTRY {
            return None;
        }
        self.instances_now()?.ready.get_mut(&hash)?.pop()
    }

    #[cfg(test)]
    pub(super) fn hold_instances(&self) -> std::sync::MutexGuard<'_, impl Sized> {
        self.instances()
    }

    #[cfg(test)]
    pub(super) fn ready_count(&self, hash: PolicyHash) -> usize {
        self.instances().ready.get(&hash).map_or(0, Vec::len)
    }

    /// Takes a used instance to drop later, in [`PolicyEngine::make_ready`].
    pub fn retire(&self, used: EntryEvaluation) {
        if let Some(mut instances) = self.instances_now()
            && instances.retired.len() < limits::POLICY_RETIRED_MAX
        {
            instances.retired.push(used);
        }
        // Else it is dropped here, after the lock: nobody is tidying up, or they are doing so
        // right now.
    }

    /// Asks the engine's preparer thread to [`PolicyEngine::make_ready`] for `hash`. Called by
    /// apply after an entry's responses are out; never waits.
    pub fn prepare_ahead(&self, hash: PolicyHash, component: Arc<Vec<u8>>) {
        let sender = self.shared.preparer.get_or_init(|| {
            let (sender, requests) =
                std::sync::mpsc::sync_channel(limits::POLICY_PREPARE_REQUESTS_MAX);
            let engine = Arc::downgrade(&self.shared);
            let started = std::thread::Builder::new()
                .name("policy-preparer".into())
                .spawn(move || prepare_until_dropped(engine, requests));
            if let Err(e) = started {
                // Requests then pile up unanswered and are refused: entries make their own.
                tracing::warn!("cannot start the policy preparer thread: {e}");
            }
            sender
        });
        // Full: the preparer is behind, and the entries make their own instances meanwhile.
        let _ = sender.try_send((hash, component));
    }

    /// Drops used instances, and makes one instance of the policy `hash` ahead for the next
    /// entry. A failure here is not an error: the next entry makes its own instance and meets
    /// the failure there, where it is handled.
    pub fn make_ready(&self, hash: PolicyHash, component: &[u8]) {
        let (retired, wanted) = {
            let mut instances = self.instances();
            let total: usize = instances.ready.values().map(Vec::len).sum();
            let wanted = instances.ready.get(&hash).map_or(0, Vec::len)
                < limits::POLICY_READY_PER_POLICY
                && total < limits::POLICY_READY_MAX;
            (std::mem::take(&mut instances.retired), wanted)
        };
        // Dropped outside the lock: returning slots to the pool is the slow part.
        drop(retired);
        if !wanted {
            return;
        }
        let Ok(compiled) = self.compiled(hash, component) else {
            return;
        };
        let fuel = limits::POLICY_FUEL_PER_ENTRY;
        if let Ok(fresh) = EntryEvaluation::instantiate(self, &compiled, fuel) {
            self.instances().ready.entry(hash).or_default().push(fresh);
        }
    }

    /// Compiles, on a blocking thread, a policy that apply is about to need, so that apply
    /// finds it cached. A compile takes a few hundred milliseconds of CPU, ten times that on a
    /// node capped to a tenth of a core; done inside apply, it held an async worker and the
    /// scope's state lock all that time. A node with one worker (what a capped node gets)
    /// fell silent, its peers' QUIC idle timeout dropped every connection to it, and its
    /// scopes lost their leaders. A failure is not reported here: apply meets it again and
    /// handles it there.
    pub async fn compile_ahead(&self, hash: PolicyHash, component: Arc<Vec<u8>>) {
        if self.cached(hash).is_some() {
            return;
        }
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || this.compiled(hash, &component)).await;
    }

    /// The compiled policy `hash`, if it was compiled here before.
    pub fn cached(&self, hash: PolicyHash) -> Option<Arc<Compiled>> {
        self.shared
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
            .cloned()
    }

    /// Validates, compiles and links a component; no parameter check. Cached by hash.
    pub fn compile(&self, bytes: &[u8]) -> Result<Arc<Compiled>, Refused> {
        self.compiled(PolicyHash::of(bytes), bytes)
    }

    /// As [`PolicyEngine::compile`] for a component whose hash the caller already knows (the
    /// active policy of a scope), so the hot path is one map lookup rather than a sha256 of
    /// the component per entry.
    pub fn compiled(&self, hash: PolicyHash, bytes: &[u8]) -> Result<Arc<Compiled>, Refused> {
        if let Some(hit) = self.cached(hash) {
            return Ok(hit);
        }
        if bytes.len() > limits::POLICY_BYTES_MAX {
            return Err(Refused::TooLarge {
                len: bytes.len(),
                max: limits::POLICY_BYTES_MAX,
            });
        }
        let component =
            Component::new(self.engine(), bytes).map_err(|e| Refused::Invalid(format!("{e:#}")))?;
        let imports: Vec<String> = component
            .component_type()
            .imports(self.engine())
            .map(|(name, _)| name.to_string())
            .collect();
        if !imports.is_empty() {
            return Err(Refused::HasImports(imports.join(", ")));
        }
        let linker: Linker<()> = Linker::new(self.engine());
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| Refused::WrongWorld(format!("{e:#}")))?;
        let admit = super::eval::admit_export(self, &instance_pre).map_err(Refused::WrongWorld)?;
        let pre =
            PolicyPre::new(instance_pre).map_err(|e| Refused::WrongWorld(format!("{e:#}")))?;
        let compiled = Arc::new(Compiled { hash, pre, admit });
        self.shared
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hash, compiled.clone());
        Ok(compiled)
    }

    /// Everything checked before a SetPolicy may be committed: size, validity with the pinned
    /// features, no imports, the right exports, compilation within a deadline, and the policy's
    /// own verdict on its parameters.
    pub async fn check(&self, bytes: Arc<Vec<u8>>, params: &str) -> Result<Arc<Compiled>, Refused> {
        if bytes.len() > limits::POLICY_BYTES_MAX {
            return Err(Refused::TooLarge {
                len: bytes.len(),
                max: limits::POLICY_BYTES_MAX,
            });
        }
        if params.len() > limits::POLICY_PARAMS_BYTES_MAX {
            return Err(Refused::ParamsTooLarge {
                len: params.len(),
                max: limits::POLICY_PARAMS_BYTES_MAX,
            });
        }
        let this = self.clone();
        let compile = tokio::task::spawn_blocking(move || this.compile(&bytes));
        let compiled = match tokio::time::timeout(limits::POLICY_COMPILE_TIMEOUT, compile).await {
            Err(_) => return Err(Refused::CompileTimeout(limits::POLICY_COMPILE_TIMEOUT)),
            Ok(Err(join)) => return Err(Refused::Invalid(format!("the compiler failed: {join}"))),
            Ok(Ok(result)) => result?,
        };
        super::eval::validate_params(self, &compiled, params)?;
        Ok(compiled)
    }
}

/// The preparer thread: at the lowest priority the kernel has (`SCHED_IDLE`), it runs only on a
/// core nothing else wants.
fn prepare_until_dropped(
    engine: std::sync::Weak<Shared>,
    requests: std::sync::mpsc::Receiver<PrepareRequest>,
) {
    crate::priority::lowest("the policy preparer");
    while let Ok((hash, component)) = requests.recv() {
        let Some(shared) = engine.upgrade() else {
            return;
        };
        PolicyEngine { shared }.make_ready(hash, &component);
    }
}
