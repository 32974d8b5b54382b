//! What a split costs the scope it splits: the carve runs inside the parent's apply, so every
//! write to the rest of the scope waits for it. `cargo bench -p scopekeeper --bench carve
//! [ZNODES]` (default 1,000,000, half of them carved off, as `bench/split.sh` does to a running
//! cluster). Prints milliseconds, and what filling the tree cost per create (the extents kept
//! on every write are what spares a carve its pass); compare within one run, absolute times
//! drift.

use std::time::Instant;

use scopekeeper::tree::{Stamp, Tree, Txn};
use scopekeeper_client::{CreateMode, Op};

const BUCKETS: usize = 100;
const ROUNDS: usize = 5;

fn main() -> anyhow::Result<()> {
    let znodes: usize = match std::env::args().nth(1).filter(|a| a != "--bench") {
        Some(n) => n.parse()?,
        None => 1_000_000,
    };
    let filling = Instant::now();
    let tree = fill(znodes);
    let per_create = filling.elapsed().as_secs_f64() * 1e9 / znodes as f64;
    println!("{znodes} znodes, half carved off; ms (median of {ROUNDS})");
    println!("fill (per create, ns)  {per_create:>8.0}");
    for at in ["/big", "/big/all"] {
        let mut carve = Vec::new();
        for _ in 0..ROUNDS {
            let mut parent = tree.clone();
            let started = Instant::now();
            let carved = parent.carve(at).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            carve.push(started.elapsed().as_secs_f64() * 1e3);
            drop(carved);
        }
        println!("carve {at:<10} {:>8.1}", median(&mut carve));
    }
    // A split's candidates are the root's children: asked of a scope every few seconds,
    // under its state's read lock, however flat it is.
    let flat = fill_flat(znodes / 2);
    let mut sizing = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let counted = flat.subtrees().count();
        sizing.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(counted, znodes / 2);
    }
    println!(
        "candidates of {} children {:>8.1}",
        znodes / 2,
        median(&mut sizing)
    );
    Ok(())
}

/// A tree of `children` empty znodes directly below the root.
fn fill_flat(children: usize) -> Tree {
    let mut tree = Tree::new();
    for i in 0..children {
        let op = Op::Create {
            path: format!("/n{i}"),
            data: Vec::new(),
            mode: CreateMode::Persistent,
            acl: Vec::new(),
        };
        let stamp = Stamp {
            zxid_hint: i as i64 + 1,
            time_ms: i as i64 + 1,
        };
        tree.apply(stamp, &Txn::Single(op));
    }
    tree
}

/// A tree of `znodes` 100-byte znodes, half under `/big/all/<bucket>`, half under
/// `/rest/<bucket>`.
fn fill(znodes: usize) -> Tree {
    let mut tree = Tree::new();
    let mut zxid = 0;
    let mut apply = |tree: &mut Tree, path: String, data: &[u8]| {
        zxid += 1;
        let op = Op::Create {
            path,
            data: data.to_vec(),
            mode: CreateMode::Persistent,
            acl: Vec::new(),
        };
        let stamp = Stamp {
            zxid_hint: zxid,
            time_ms: zxid,
        };
        tree.apply(stamp, &Txn::Single(op));
    };
    for parent in ["/big", "/big/all", "/rest"] {
        apply(&mut tree, parent.to_string(), b"");
    }
    for b in 0..BUCKETS {
        apply(&mut tree, format!("/big/all/{b}"), b"");
        apply(&mut tree, format!("/rest/{b}"), b"");
    }
    let value = [b'x'; 100];
    for i in 0..znodes / 2 {
        let b = i % BUCKETS;
        apply(&mut tree, format!("/big/all/{b}/n{i}"), &value);
        apply(&mut tree, format!("/rest/{b}/n{i}"), &value);
    }
    tree
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}
