//! `scopekeeper bench --split-znodes N`: how long a split of a big scope takes, and what writers
//! notice. A new scope at `/bench-split` is filled with N znodes, half under `big` and half
//! under `rest`; writers keep setting znodes in both halves while `big` is split off into a
//! scope of its own. Reported: the split's time from request to reply, and per half the
//! longest stretch with no acknowledged write (write unavailability) during the split, next to
//! the same figure just before it.
//!
//! One window against one other says little: on a shared machine the longest gap of a window
//! varies several-fold from one window to the next. A control run (`--split-control`) does all
//! the same but the split, so the windows after "the split" hold nothing but the machine's own
//! noise: how often the after-window beats its baseline in control runs is the chance rate that
//! the split runs' figure is to be set against.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use scopekeeper_client::{Client, ClientConfig, CreateMode, Op};

const ROOT: &str = "/bench-split";
const BUCKETS: usize = 100;
const CREATES_PER_MULTI: usize = 1000;
const FILLERS: usize = 8;
/// Writers per half, each setting its own znode as fast as it is answered.
const WRITERS: usize = 4;
/// How long the cluster is left alone after the fill.
const SETTLE: Duration = Duration::from_secs(10);
/// How long the writers run before the split; the last `AFTER` of it gives the baseline gap,
/// over a window as long as the one measured during the split (the longest gap grows with the
/// window), after a second for the writers to settle.
const BEFORE: Duration = Duration::from_secs(9);
/// And after it: a half that is unavailable for longer than the split shows here, and so does
/// whatever the new scope's births on its anchors (moving its rows, 3-6 s for 500k znodes on
/// the dev cluster) do to the writers.
const AFTER: Duration = Duration::from_secs(8);
const _: () = assert!(BEFORE.as_secs() > AFTER.as_secs());

pub struct SplitReport {
    pub znodes: usize,
    pub moved: u64,
    pub fill: Duration,
    pub split: Duration,
    pub split_half: HalfGaps,
    pub rest_half: HalfGaps,
    pub write_errors: u64,
    /// The first error a writer saw, if any.
    pub first_error: Option<String>,
}

pub async fn run(
    config: ClientConfig,
    znodes: usize,
    value_size: usize,
    control: bool,
) -> anyhow::Result<()> {
    let report = measure(config, znodes, value_size, control).await?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "filled {ROOT} with {} znodes in {:.1} s",
        report.znodes,
        report.fill.as_secs_f64()
    );
    if control {
        println!("control run: {ROOT}/big is not split; the windows are timed as if it were");
    } else {
        println!(
            "split {ROOT}/big off: {} znodes moved in {:.0} ms (request to reply)",
            report.moved,
            ms(report.split)
        );
    }
    println!(
        "longest stretch without an acknowledged write, ms ({WRITERS} writers per half; \
         +ms: where it began after the split's request):"
    );
    println!(
        "  {:<22} {:>18} {:>22} {:>18}",
        "",
        "request to reply",
        format!("to {} s after reply", AFTER.as_secs()),
        "as long before"
    );
    for (name, half) in [
        ("in the split subtree", &report.split_half),
        ("in the rest of scope", &report.rest_half),
    ] {
        let at = |g: Gap| format!("{:.0} (+{:.0})", ms(g.length), ms(g.from));
        println!(
            "  {name:<22} {:>18} {:>22} {:>18.0}",
            at(half.split),
            at(half.window),
            ms(half.before.length)
        );
    }
    match &report.first_error {
        Some(first) => println!("write errors: {} (the first: {first})", report.write_errors),
        None => println!("write errors: 0"),
    }
    Ok(())
}

async fn measure(
    config: ClientConfig,
    znodes: usize,
    value_size: usize,
    control: bool,
) -> anyhow::Result<SplitReport> {
    if znodes < 2 * BUCKETS {
        bail!("--split-znodes must be at least {}", 2 * BUCKETS);
    }
    let admin = Client::connect(config.clone()).await?;
    if admin.exists(ROOT).await?.is_some() {
        bail!("{ROOT} exists already: run the split benchmark on a fresh cluster");
    }
    admin.create(ROOT, b"", CreateMode::Persistent).await?;
    admin
        .create_scope(ROOT, None)
        .await
        .context("creating the benchmark's scope (needs the admin role)")?;
    let value = vec![b'x'; value_size];
    let mut parents = Vec::new();
    for half in ["big", "rest"] {
        parents.push(format!("{ROOT}/{half}"));
        for b in 0..BUCKETS {
            parents.push(format!("{ROOT}/{half}/{b}"));
        }
    }
    for chunk in parents.chunks(CREATES_PER_MULTI) {
        admin
            .multi(chunk.iter().map(|p| create(p, b"")).collect())
            .await?;
    }

    // The fill: each half gets (znodes - parents) / 2, in multis spread over the buckets.
    let started = Instant::now();
    let per_half = (znodes - parents.len()) / 2;
    let multis = per_half.div_ceil(CREATES_PER_MULTI) * 2;
    let mut fillers = Vec::new();
    for f in 0..FILLERS {
        let client = connect(&config, f).await?;
        let value = value.clone();
        fillers.push(tokio::spawn(async move {
            for m in (f..multis).step_by(FILLERS) {
                let half = if m % 2 == 0 { "big" } else { "rest" };
                let first = (m / 2) * CREATES_PER_MULTI;
                let last = (first + CREATES_PER_MULTI).min(per_half);
                let ops = (first..last)
                    .map(|i| create(&format!("{ROOT}/{half}/{}/n{i}", i % BUCKETS), &value))
                    .collect();
                client.multi(ops).await?;
            }
            anyhow::Ok(())
        }));
    }
    for f in fillers {
        f.await??;
    }
    let fill = started.elapsed();
    // The fill leaves every node's storage flushing and compacting what it wrote, which stalls
    // writes for up to a second (measured after a fill of 1M znodes); the split is measured
    // once that is over, so that neither window sees the fill's aftermath.
    tokio::time::sleep(SETTLE).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (i, half) in ["big", "rest"]
        .into_iter()
        .flat_map(|h| std::iter::repeat_n(h, WRITERS))
        .enumerate()
    {
        let client = connect(&config, i).await?;
        let path = format!("{ROOT}/{half}/w{i}");
        client.create(&path, b"", CreateMode::Persistent).await?;
        let (stop, value) = (stop.clone(), value.clone());
        writers.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            while !stop.load(Ordering::Relaxed) {
                match client.set(&path, &value, -1).await {
                    Ok(_) => acks.push(Instant::now()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (half, acks, errors, first_error)
        }));
    }
    tokio::time::sleep(BEFORE).await;
    let split_start = Instant::now();
    if !control {
        admin
            .create_scope(&format!("{ROOT}/big"), None)
            .await
            .context("splitting the big half off")?;
    }
    let split = split_start.elapsed();
    tokio::time::sleep(AFTER).await;
    stop.store(true, Ordering::Relaxed);
    let window_end = split_start + split + AFTER;

    let mut acks: [Vec<Instant>; 2] = [Vec::new(), Vec::new()];
    let mut write_errors = 0;
    let mut first_error = None;
    for w in writers {
        let (half, a, errors, first) = w.await?;
        acks[usize::from(half == "rest")].extend(a);
        write_errors += errors;
        first_error = first_error.or(first);
    }
    let moved = if control {
        0
    } else {
        admin.scope(&format!("{ROOT}/big")).await?.znodes
    };
    let gaps = |acks: &mut Vec<Instant>| {
        acks.sort();
        HalfGaps {
            split: longest_gap(acks, split_start, split_start + split),
            window: longest_gap(acks, split_start, window_end),
            before: longest_gap(acks, split_start - AFTER, split_start),
        }
    };
    let [mut big, mut rest] = acks;
    Ok(SplitReport {
        znodes,
        moved,
        fill,
        split,
        split_half: gaps(&mut big),
        rest_half: gaps(&mut rest),
        write_errors,
        first_error,
    })
}

/// The longest stretches with no acknowledged write in one half of the scope.
pub struct HalfGaps {
    /// From the split's request to its reply (which comes after the leader applied it).
    pub split: Gap,
    /// From the split's request to `AFTER` past its reply.
    pub window: Gap,
    /// In the `AFTER` before the request, a baseline as long as `window`, but for the split.
    pub before: Gap,
}

/// A stretch with no acknowledged write: how long, and where it began after its window's start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gap {
    pub length: Duration,
    pub from: Duration,
}

/// The longest time in [from, to] with no acknowledgement in `acks` (sorted).
fn longest_gap(acks: &[Instant], from: Instant, to: Instant) -> Gap {
    let mut last = from;
    let mut longest = Gap::default();
    for t in acks
        .iter()
        .copied()
        .filter(|t| *t > from && *t <= to)
        .chain(std::iter::once(to))
    {
        if t - last > longest.length {
            longest = Gap {
                length: t - last,
                from: last - from,
            };
        }
        last = t;
    }
    longest
}

fn create(path: &str, data: &[u8]) -> Op {
    Op::Create {
        path: path.to_string(),
        data: data.to_vec(),
        mode: CreateMode::Persistent,
        acl: Vec::new(),
    }
}

/// Client `i`, starting at the i-th endpoint so the load spreads over the nodes.
async fn connect(config: &ClientConfig, i: usize) -> anyhow::Result<Client> {
    let mut config = config.clone();
    let n = config.endpoints.len();
    config.endpoints.rotate_left(i % n);
    Ok(Client::connect(config).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_count_the_edges_of_the_window() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let ms = Duration::from_millis;
        let acks = [at(10), at(20), at(70), at(80)];
        let gap = |length, from| Gap {
            length: ms(length),
            from: ms(from),
        };
        assert_eq!(longest_gap(&acks, t0, at(100)), gap(50, 20));
        assert_eq!(longest_gap(&acks, at(75), at(200)), gap(120, 5));
        assert_eq!(longest_gap(&[], t0, at(30)), gap(30, 0));
    }
}
