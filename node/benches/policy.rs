//! Per-mutation policy cost: a fresh instance per entry, then one `admit` call judging its ops
//! (as apply judges a run of client transactions), and, for comparison, one call per op (as
//! apply does after a trap, and as every op was judged before WIT 0.4.0).
//! `cargo bench -p scopekeeper --bench policy`. Prints microseconds per op for entries of 1,
//! 10 and 100 ops, for `floor`, `open` and `limits`; compare within one run, absolute times drift.

use std::time::Instant;

use scopekeeper::limits::POLICY_FUEL_PER_ENTRY;
use scopekeeper::policy::build::repository_component;
use scopekeeper::policy::engine::{PolicyEngine, Supply};
use scopekeeper::policy::eval::EntryEvaluation;
use scopekeeper::policy::wit::exports::scopekeeper::policy::rules as wit;

/// `floor` (tests/policies/floor) is the generated bindings alone, admitting everything: what
/// any policy costs at least. `open` adds the SDK's glue; `limits` parses its parameters.
const POLICIES: [(&str, &str); 3] = [
    ("floor", ""),
    ("open", ""),
    (
        "limits",
        r#"{"max_data_bytes": 1024, "max_children": 100000, "max_depth": 8}"#,
    ),
];

fn main() -> anyhow::Result<()> {
    let engine = PolicyEngine::new()?;
    let mutation = wit::Mutation {
        op: wit::OpKind::Create,
        path: "/bench/key-000001".into(),
        data: vec![b'x'; 100],
        create_mode: Some(wit::CreateMode::Persistent),
        expected_version: -1,
    };
    let principal = wit::Principal {
        id: "bench".into(),
        roles: vec!["writer".into()],
    };
    let entry = wit::Entry {
        log_index: 1,
        time_ms: 0,
        scope_root: "/".into(),
    };
    let context = wit::Context {
        depth: 2,
        target: None,
        parent: None,
        stats: wit::ScopeStats {
            znodes: 1000,
            data_bytes: 100_000,
            writes_per_sec: 0,
            ms_since_split: 0,
            ms_since_write: 0,
        },
    };
    let op = wit::JudgedOp {
        mutation,
        principal: 0,
        context,
    };
    let principals = [principal];
    println!(
        "{:<8} {:>14} {:>12} {:>12} {:>12} {:>12}",
        "policy", "ops per entry", "calls", "us per op", "us/entry", "fuel per op"
    );
    for (name, params) in POLICIES {
        let compiled = engine
            .compile(&repository_component(name)?)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (ops, one_call) in [
            (1usize, true),
            (10, true),
            (100, true),
            (10, false),
            (100, false),
        ] {
            let entries = 20_000 / ops;
            let batch = vec![op.clone(); ops];
            let judge = |eval: &mut EntryEvaluation| -> anyhow::Result<()> {
                let verdicts = if one_call {
                    eval.admit(params, &entry, &principals, &batch)?
                } else {
                    let mut verdicts = Vec::with_capacity(ops);
                    for op in &batch {
                        verdicts.extend(eval.admit(
                            params,
                            &entry,
                            &principals,
                            std::slice::from_ref(op),
                        )?);
                    }
                    verdicts
                };
                assert!(
                    verdicts
                        .iter()
                        .all(|v| matches!(v.decision, wit::Decision::Allow))
                );
                Ok(())
            };
            // Warm the instance pool and caches.
            for _ in 0..100 {
                judge(&mut EntryEvaluation::begin(
                    &engine,
                    &compiled,
                    POLICY_FUEL_PER_ENTRY,
                    Supply::OnTheSpot,
                )?)?;
            }
            let mut fuel = 0;
            let start = Instant::now();
            for _ in 0..entries {
                let mut eval = EntryEvaluation::begin(
                    &engine,
                    &compiled,
                    POLICY_FUEL_PER_ENTRY,
                    Supply::OnTheSpot,
                )?;
                judge(&mut eval)?;
                fuel = eval.fuel_used();
            }
            let elapsed = start.elapsed();
            let per_op = elapsed.as_secs_f64() * 1e6 / (entries * ops) as f64;
            let per_entry = elapsed.as_secs_f64() * 1e6 / entries as f64;
            let calls = if one_call { "1" } else { "1 per op" };
            println!(
                "{name:<8} {ops:>14} {calls:>12} {per_op:>12.2} {per_entry:>12.2} {:>12}",
                fuel / ops as u64
            );
        }
    }
    // The whole work per entry as a node does it: the entry takes the instance made ahead, the
    // used instance is retired and the next one made ahead (`make_ready`, which a node leaves
    // to its preparer thread; here on the same thread).
    println!(
        "\n{:<8} {:>26} {:>12}",
        "policy", "as apply runs it", "us/entry"
    );
    for (name, params) in POLICIES {
        let bytes = repository_component(name)?;
        let compiled = engine.compile(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
        let entries = 20_000;
        let run = |entries: usize| -> anyhow::Result<f64> {
            let start = Instant::now();
            for _ in 0..entries {
                let mut eval = EntryEvaluation::begin(
                    &engine,
                    &compiled,
                    POLICY_FUEL_PER_ENTRY,
                    Supply::MadeAhead,
                )?;
                let verdicts =
                    eval.admit(params, &entry, &principals, std::slice::from_ref(&op))?;
                assert!(matches!(verdicts[0].decision, wit::Decision::Allow));
                engine.retire(eval);
                engine.make_ready(compiled.hash, &bytes);
            }
            Ok(start.elapsed().as_secs_f64() * 1e6 / entries as f64)
        };
        run(100)?;
        println!(
            "{name:<8} {:>26} {:>12.2}",
            "1 op, made ahead",
            run(entries)?
        );
    }
    Ok(())
}
