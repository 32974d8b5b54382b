//! Per-mutation policy cost: a fresh instance per entry, then `admit` for each of its ops.
//! `cargo bench -p scopekeeper --bench policy`. Prints microseconds per op for entries of 1,
//! 10 and 100 ops, for `open` and `limits`; compare within one run, absolute times drift.

use std::time::Instant;

use scopekeeper::limits::POLICY_FUEL_PER_ENTRY;
use scopekeeper::policy::build::repository_component;
use scopekeeper::policy::engine::PolicyEngine;
use scopekeeper::policy::eval::EntryEvaluation;
use scopekeeper::policy::wit::exports::scopekeeper::policy::rules as wit;

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
    let context = wit::Context {
        log_index: 1,
        time_ms: 0,
        scope_root: "/".into(),
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
    println!(
        "{:<8} {:>14} {:>12} {:>12} {:>12}",
        "policy", "ops per entry", "us per op", "us/entry", "fuel per op"
    );
    for (name, params) in [
        ("open", ""),
        (
            "limits",
            r#"{"max_data_bytes": 1024, "max_children": 100000, "max_depth": 8}"#,
        ),
    ] {
        let compiled = engine
            .compile(&repository_component(name)?)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for ops in [1usize, 10, 100] {
            let entries = 20_000 / ops;
            // Warm the instance pool and caches.
            for _ in 0..100 {
                let mut eval = EntryEvaluation::begin(&engine, &compiled, POLICY_FUEL_PER_ENTRY)?;
                eval.admit(params, &mutation, &principal, &context)?;
            }
            let mut fuel = 0;
            let start = Instant::now();
            for _ in 0..entries {
                let mut eval = EntryEvaluation::begin(&engine, &compiled, POLICY_FUEL_PER_ENTRY)?;
                for _ in 0..ops {
                    let verdict = eval.admit(params, &mutation, &principal, &context)?;
                    assert!(matches!(verdict.decision, wit::Decision::Allow));
                }
                fuel = eval.fuel_used();
            }
            let elapsed = start.elapsed();
            let per_op = elapsed.as_secs_f64() * 1e6 / (entries * ops) as f64;
            let per_entry = elapsed.as_secs_f64() * 1e6 / entries as f64;
            println!(
                "{name:<8} {ops:>14} {per_op:>12.2} {per_entry:>12.2} {:>12}",
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
    for (name, params) in [
        ("open", ""),
        (
            "limits",
            r#"{"max_data_bytes": 1024, "max_children": 100000, "max_depth": 8}"#,
        ),
    ] {
        let bytes = repository_component(name)?;
        let compiled = engine.compile(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
        let entries = 20_000;
        let run = |entries: usize| -> anyhow::Result<f64> {
            let start = Instant::now();
            for _ in 0..entries {
                let mut eval = EntryEvaluation::begin(&engine, &compiled, POLICY_FUEL_PER_ENTRY)?;
                let verdict = eval.admit(params, &mutation, &principal, &context)?;
                assert!(matches!(verdict.decision, wit::Decision::Allow));
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
