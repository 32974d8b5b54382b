//! The policy host against real components built from this repository's policy crates.

use std::sync::Arc;

use scopekeeper_client::proto::{CreateMode, Op};

use super::admission::{PolicyAdmission, Principal};
use super::build::repository_component;
use super::engine::{PolicyEngine, Refused, Supply};
use super::eval::{EntryEvaluation, EvalError};
use super::wit::exports::scopekeeper::policy::rules as wit;
use super::{PolicyHash, PolicyMode};
use crate::tree::{Admit, OpView, Tree};

fn engine() -> PolicyEngine {
    PolicyEngine::new().expect("engine")
}

fn component(name: &str) -> Vec<u8> {
    repository_component(name).unwrap_or_else(|e| panic!("building policy {name}: {e:#}"))
}

fn mutation(data: &[u8]) -> wit::Mutation {
    wit::Mutation {
        op: wit::OpKind::Create,
        path: "/a".into(),
        data: data.to_vec(),
        create_mode: Some(wit::CreateMode::Persistent),
        expected_version: -1,
    }
}

fn entry() -> wit::Entry {
    wit::Entry {
        log_index: 7,
        time_ms: 0,
        scope_root: "/".into(),
    }
}

/// A create of `/a` holding `data`, as the first op of an entry finds it.
fn op(data: &[u8]) -> wit::JudgedOp {
    wit::JudgedOp {
        mutation: mutation(data),
        principal: 0,
        context: context(),
    }
}

fn context() -> wit::Context {
    wit::Context {
        depth: 1,
        target: None,
        parent: None,
        stats: wit::ScopeStats {
            znodes: 1,
            data_bytes: 0,
            writes_per_sec: 0,
            ms_since_split: 0,
            ms_since_write: 0,
        },
    }
}

fn principal() -> wit::Principal {
    wit::Principal {
        id: "alice".into(),
        roles: vec![],
    }
}

/// An instance for one entry, with the entry's fuel.
fn fresh(
    engine: &PolicyEngine,
    compiled: &super::engine::Compiled,
    supply: Supply,
) -> EntryEvaluation {
    EntryEvaluation::begin(
        engine,
        compiled,
        crate::limits::POLICY_FUEL_PER_ENTRY,
        supply,
    )
    .expect("instance")
}

fn verdict(
    engine: &PolicyEngine,
    name: &str,
    params: &str,
    data: &[u8],
) -> (Result<wit::Verdict, EvalError>, u64) {
    let compiled = engine.compile(&component(name)).expect("compiles");
    let mut eval = fresh(engine, &compiled, Supply::OnTheSpot);
    let result = eval.admit_one(params, &entry(), &principal(), op(data));
    (result, eval.fuel_used())
}

/// The benchmarks' `floor` is what it claims: it admits, and burns less than `open`, which adds
/// only the SDK's glue to the same bindings.
#[test]
fn the_floor_policy_admits_for_less_fuel_than_open() {
    let engine = engine();
    let (floor, floor_fuel) = verdict(&engine, "floor", "", b"abcd");
    let (open, open_fuel) = verdict(&engine, "open", "", b"abcd");
    for verdict in [floor, open] {
        let verdict = verdict.expect("no trap");
        assert!(matches!(verdict.decision, wit::Decision::Allow));
        assert!(verdict.warnings.is_empty());
    }
    assert!(
        0 < floor_fuel && floor_fuel < open_fuel,
        "floor {floor_fuel} fuel, open {open_fuel}"
    );
}

#[test]
fn limits_allows_and_denies_with_the_same_fuel_every_time() {
    let engine = engine();
    let params = r#"{"max_data_bytes": 4}"#;
    let (small, fuel_small) = verdict(&engine, "limits", params, b"abcd");
    assert!(matches!(
        small.expect("runs").decision,
        wit::Decision::Allow
    ));
    let (big, fuel_big) = verdict(&engine, "limits", params, b"abcde");
    match big.expect("runs").decision {
        wit::Decision::Deny(d) => assert_eq!(d.code, "data-too-large"),
        other => panic!("{other:?}"),
    }
    assert!(fuel_small > 0);
    // A fresh instance per entry: the same call burns exactly the same fuel.
    for _ in 0..3 {
        assert_eq!(verdict(&engine, "limits", params, b"abcd").1, fuel_small);
        assert_eq!(verdict(&engine, "limits", params, b"abcde").1, fuel_big);
    }
    // And a second engine (another anchor) agrees.
    assert_eq!(
        verdict(
            &super::engine::PolicyEngine::new().expect("engine"),
            "limits",
            params,
            b"abcd"
        )
        .1,
        fuel_small
    );
}

#[test]
fn an_entry_parses_its_parameters_once() {
    // The ops of one entry share an instance: `limits` parses its parameters for the first
    // and finds them parsed for the rest, so later ops burn less fuel, the same on every run.
    let engine = engine();
    let params = r#"{"max_data_bytes": 4, "max_depth": 8}"#;
    let compiled = engine.compile(&component("limits")).expect("compiles");
    let entry = || {
        let mut eval = fresh(&engine, &compiled, Supply::OnTheSpot);
        let mut burnt = Vec::new();
        let mut denied = Vec::new();
        for data in [&b"ab"[..], b"abcdef", b"abc"] {
            let before = eval.fuel_used();
            let verdict = eval.admit_one(params, &entry(), &principal(), op(data));
            denied.push(matches!(
                verdict.expect("runs").decision,
                wit::Decision::Deny(_)
            ));
            burnt.push(eval.fuel_used() - before);
        }
        (denied, burnt)
    };
    let (denied, burnt) = entry();
    assert_eq!(denied, [false, true, false]);
    // Parsing is over a third of the first op (`cargo bench --bench policy`: about 7.1k of fuel
    // for an entry's first op against 4.0k for a later one).
    assert!(
        burnt[2] * 4 < burnt[0] * 3,
        "the third op parsed again: {burnt:?}"
    );
    for _ in 0..3 {
        assert_eq!(entry(), (denied.clone(), burnt.clone()));
    }
}

#[test]
fn an_infinite_loop_runs_out_of_fuel_and_traps() {
    let (result, fuel) = verdict(&engine(), "hostile", "loop", b"");
    match result {
        Err(EvalError::Trap(t)) => assert!(t.to_lowercase().contains("fuel"), "{t}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(fuel, crate::limits::POLICY_FUEL_PER_ENTRY);
}

#[test]
fn a_memory_bomb_and_a_panic_trap() {
    let engine = engine();
    for behaviour in ["bomb", "trap"] {
        let (result, _) = verdict(&engine, "hostile", behaviour, b"");
        assert!(
            matches!(result, Err(EvalError::Trap(_))),
            "{behaviour}: {result:?}"
        );
    }
}

#[test]
fn a_trap_denies_and_audit_admits() {
    let engine = engine();
    let compiled = engine.compile(&component("hostile")).expect("compiles");
    let who = Principal::default();
    let op = Op::Create {
        path: "/a".into(),
        data: vec![],
        mode: CreateMode::Persistent,
        acl: Vec::new(),
    };
    let tree = Tree::new();
    let view = OpView::of(&tree, "/a");
    let mut enforce = PolicyAdmission::new(
        &engine,
        &compiled,
        "trap",
        PolicyMode::Enforce,
        &who,
        1,
        0,
        "/",
    );
    let err = enforce.admit(&op, view).expect_err("denied");
    assert_eq!(err.code, scopekeeper_client::ErrorCode::PolicyDenied);
    assert!(err.message.contains("trap"), "{}", err.message);
    assert!(
        enforce.admit(&op, view).is_err(),
        "the instance stays denied"
    );
    assert!(
        enforce.host_fault.is_none(),
        "a guest trap is not a host fault"
    );
    let mut audit = PolicyAdmission::new(
        &engine,
        &compiled,
        "trap",
        PolicyMode::Audit,
        &who,
        1,
        0,
        "/",
    );
    assert!(audit.admit(&op, view).is_ok());
    assert_eq!(audit.notes.len(), 1);
}

#[tokio::test]
async fn hostile_components_are_refused_before_commit() {
    let engine = engine();
    // Imports: a component that wants something from its host.
    let with_import = wat::parse_str(r#"(component (import "clock" (func)))"#).expect("wat");
    let err = engine
        .check(Arc::new(with_import), "")
        .await
        .expect_err("imports");
    assert!(matches!(err, Refused::HasImports(_)), "{err}");
    assert!(err.to_string().contains("clock"), "{err}");
    // Not wasm at all.
    let err = engine
        .check(Arc::new(b"\0asm garbage".to_vec()), "")
        .await
        .expect_err("garbage");
    assert!(matches!(err, Refused::Invalid(_)), "{err}");
    // A core module is not a component.
    let core = wat::parse_str("(module)").expect("wat");
    assert!(engine.check(Arc::new(core), "").await.is_err());
    // A component that is not a policy.
    let empty = wat::parse_str("(component)").expect("wat");
    let err = engine
        .check(Arc::new(empty), "")
        .await
        .expect_err("wrong world");
    assert!(matches!(err, Refused::WrongWorld(_)), "{err}");
    // An `admit` of another type: calls skip the type check, so compiling must not.
    let wrong_admit = wat::parse_str(
        r#"(component
            (core module $m (func (export "admit")))
            (core instance $i (instantiate $m))
            (func $admit (canon lift (core func $i "admit")))
            (instance $rules (export "admit" (func $admit)))
            (export "scopekeeper:policy/rules@0.4.0" (instance $rules)))"#,
    )
    .expect("wat");
    let err = engine
        .check(Arc::new(wrong_admit), "")
        .await
        .expect_err("wrong admit");
    assert!(matches!(err, Refused::WrongWorld(_)), "{err}");
    assert!(
        err.to_string().contains("`admit` has the wrong type"),
        "{err}"
    );
    // Too large.
    let err = engine
        .check(Arc::new(vec![0; crate::limits::POLICY_BYTES_MAX + 1]), "")
        .await
        .expect_err("size");
    assert!(matches!(err, Refused::TooLarge { .. }), "{err}");
    // The policy's own verdict on its parameters.
    let limits = Arc::new(component("limits"));
    let err = engine
        .check(limits.clone(), r#"{"max_data_bytes": "lots"}"#)
        .await
        .expect_err("params");
    assert!(matches!(err, Refused::BadParams(_)), "{err}");
    let ok = engine
        .check(limits.clone(), r#"{"max_data_bytes": 10}"#)
        .await
        .expect("valid");
    assert_eq!(ok.hash, PolicyHash::of(&limits));
}

#[test]
fn every_stock_policy_builds_and_links() {
    let engine = engine();
    for name in [
        "open", "readonly", "limits", "schema", "roles", "critical", "dev",
    ] {
        let bytes = component(name);
        assert!(
            bytes.len() <= crate::limits::POLICY_BYTES_MAX,
            "{name} is {} bytes",
            bytes.len()
        );
        engine
            .compile(&bytes)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn recycled_instances_burn_identical_fuel() {
    // Instance slots are recycled; whatever a slot held before must not change what the next
    // instance computes. Hundreds of entries, every one the same.
    let engine = engine();
    let params = r#"{"max_data_bytes": 1024, "max_children": 100000, "max_depth": 8}"#;
    let compiled = engine.compile(&component("limits")).expect("compiles");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..500 {
        let mut eval = fresh(&engine, &compiled, Supply::OnTheSpot);
        eval.admit_one(params, &entry(), &principal(), op(b"value"))
            .expect("runs");
        seen.insert(eval.fuel_used());
    }
    assert_eq!(
        seen.len(),
        1,
        "fuel differed between identical entries: {seen:?}"
    );
}

#[test]
fn broken_quorum_rules_are_refused_with_a_counter_example() {
    use crate::policy::quorum::{QuorumAnchor, QuorumRuleError, policy_table};
    let engine = engine();
    let hostile = component("hostile");
    let compiled = engine.compile(&hostile).expect("compiles");
    let anchors: Vec<QuorumAnchor> = (1..=3)
        .map(|id| QuorumAnchor {
            id,
            labels: Default::default(),
        })
        .collect();
    let err =
        policy_table(&engine, &compiled, "quorum-exactly-two", &anchors).expect_err("refused");
    assert!(matches!(err, QuorumRuleError::NotMonotone { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("{1, 2} is a quorum but {1, 2, 3} is not"),
        "{err}"
    );
    let err = policy_table(&engine, &compiled, "quorum-any", &anchors).expect_err("refused");
    assert!(matches!(err, QuorumRuleError::Disjoint { .. }), "{err}");
    let table = policy_table(&engine, &compiled, "", &anchors).expect("a majority is fine");
    assert!(table.is_majority());

    // critical over five nodes in three zones: four acks spanning two zones.
    let critical = engine.compile(&component("critical")).expect("compiles");
    let zones = ["a", "a", "b", "b", "c"];
    let five: Vec<QuorumAnchor> = (1..=5u64)
        .map(|id| QuorumAnchor {
            id,
            labels: [("zone".to_string(), zones[id as usize - 1].to_string())].into(),
        })
        .collect();
    let table = policy_table(&engine, &critical, "", &five).expect("valid");
    assert!(!table.is_majority());
    assert!(!table.is_quorate([1, 2, 3]));
    assert!(table.is_quorate([1, 2, 3, 4]));
    // Three anchors cannot satisfy it at all.
    let err = policy_table(&engine, &critical, "", &five[..3]).expect_err("unsatisfiable");
    assert!(matches!(err, QuorumRuleError::Unsatisfiable(_)), "{err}");
}

#[test]
fn an_instance_made_ahead_judges_as_one_made_on_the_spot() {
    // Apply takes the instance `make_ready` made after the previous entry; it must be as fresh
    // as one made for the entry: the same verdicts, the same fuel, whatever ran before.
    let engine = engine();
    let params = r#"{"max_data_bytes": 4}"#;
    let bytes = component("limits");
    let compiled = engine.compile(&bytes).expect("compiles");
    let judge = |data: &[u8]| {
        let mut eval = fresh(&engine, &compiled, Supply::MadeAhead);
        let verdict = eval.admit_one(params, &entry(), &principal(), op(data));
        let denied = matches!(verdict.expect("runs").decision, wit::Decision::Deny(_));
        (denied, eval.fuel_used())
    };
    let on_the_spot = [judge(b"abcd"), judge(b"abcde")];
    for _ in 0..50 {
        engine.make_ready(compiled.hash, &bytes);
        let ready = engine.ready_count(compiled.hash);
        assert!(ready > 0, "no instance was made ahead");
        assert!(ready <= crate::limits::POLICY_READY_PER_POLICY);
        let ahead = judge(b"abcd");
        assert_eq!(
            engine.ready_count(compiled.hash),
            ready - 1,
            "the entry did not take one"
        );
        engine.make_ready(compiled.hash, &bytes);
        assert_eq!([ahead, judge(b"abcde")], on_the_spot);
    }
    assert_eq!(on_the_spot.map(|(denied, _)| denied), [false, true]);
}

/// An engine with the `open` policy compiled and one instance of it made ahead.
fn open_with_one_made_ahead() -> (PolicyEngine, Arc<super::engine::Compiled>) {
    let engine = engine();
    let bytes = component("open");
    let compiled = engine.compile(&bytes).expect("compiles");
    engine.make_ready(compiled.hash, &bytes);
    (engine, compiled)
}

#[test]
fn entries_on_the_spot_leave_the_instances_made_ahead_alone() {
    // A follower's entry makes and drops its own: the ones made ahead are for the entries a
    // leader answers.
    let (engine, compiled) = open_with_one_made_ahead();
    let own = fresh(&engine, &compiled, Supply::OnTheSpot);
    assert_eq!(
        engine.ready_count(compiled.hash),
        1,
        "it took one made ahead"
    );
    drop(own);
    let ahead = fresh(&engine, &compiled, Supply::MadeAhead);
    assert_eq!(engine.ready_count(compiled.hash), 0, "it made its own");
    engine.retire(ahead);
}

#[test]
fn the_preparer_thread_makes_instances_ahead() {
    let engine = engine();
    let bytes = Arc::new(component("open"));
    let compiled = engine.compile(&bytes).expect("compiles");
    engine.prepare_ahead(compiled.hash, bytes.clone());
    // Not a timing assertion: the thread runs at idle priority and gets there eventually.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while engine.ready_count(compiled.hash) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the preparer never made an instance"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn apply_never_waits_for_the_instances_held_elsewhere() {
    // The preparer holds the instances at idle priority and may be preempted for long: an
    // entry then makes and drops its own instead of waiting.
    let (engine, compiled) = open_with_one_made_ahead();
    assert_eq!(engine.ready_count(compiled.hash), 1);
    let fuel = crate::limits::POLICY_FUEL_PER_ENTRY;
    let held = engine.hold_instances();
    assert!(engine.take_ready(compiled.hash, fuel).is_none());
    let own = fresh(&engine, &compiled, Supply::MadeAhead);
    engine.retire(own);
    drop(held);
    assert_eq!(
        engine.ready_count(compiled.hash),
        1,
        "the one made ahead is still there"
    );
    assert!(engine.take_ready(compiled.hash, fuel).is_some());
}

#[test]
fn compiling_ahead_leaves_the_async_worker_to_other_tasks() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    // One worker, as a node capped to a fraction of a core gets. Compiled on it, the policy
    // would hold it, and the ticker below could not run until the compile was over.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let engine = engine();
    let bytes = Arc::new(component("limits"));
    let hash = PolicyHash::of(&bytes);
    let ticks = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let during = runtime.block_on(async {
        let ticker = {
            let (ticks, done) = (ticks.clone(), done.clone());
            tokio::spawn(async move {
                while !done.load(SeqCst) {
                    ticks.fetch_add(1, SeqCst);
                    tokio::task::yield_now().await;
                }
            })
        };
        while ticks.load(SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let apply = {
            let (engine, ticks) = (engine.clone(), ticks.clone());
            tokio::spawn(async move {
                let before = ticks.load(SeqCst);
                engine.compile_ahead(hash, bytes).await;
                ticks.load(SeqCst) - before
            })
        };
        let during = apply.await.expect("the compiling task");
        done.store(true, SeqCst);
        ticker.await.expect("the ticker");
        during
    });
    assert!(engine.cached(hash).is_some(), "compiled and cached");
    assert!(during > 0, "no other task ran while the policy compiled");
}
