//! A linearizability checker for recorded histories of registers (Wing and Gong's search with
//! Lowe's memoization). Linearizability is local, so each register (znode) is checked on its
//! own: is there an order of its operations, each taking effect at one instant between its
//! invocation and its response, in which every read returns the last value written?
//!
//! Writes whose outcome the client never learned (`completed: None`, e.g. ConnectionLoss) may
//! take effect at any instant after their invocation, or never.

use std::collections::{BTreeMap, HashSet};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterOp {
    Write(Vec<u8>),
    /// A read and the value it returned.
    Read(Vec<u8>),
}

/// One operation as a client saw it. Times are from one clock (ns since the test began).
#[derive(Clone, Debug)]
pub struct Event {
    pub key: String,
    pub op: RegisterOp,
    pub invoked: u64,
    /// When the reply arrived; `None` if the outcome is unknown. Reads with an unknown outcome
    /// tell nothing and may be left out.
    pub completed: Option<u64>,
}

/// Checks every register's history; `initial` is the value each held before the history.
pub fn check(initial: &[u8], history: &[Event]) -> Result<(), String> {
    let mut by_key: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in history {
        if matches!(e.op, RegisterOp::Read(_)) && e.completed.is_none() {
            continue;
        }
        by_key.entry(&e.key).or_default().push(e);
    }
    for (key, events) in by_key {
        check_register(initial, &events).map_err(|why| format!("{key}: {why}"))?;
    }
    Ok(())
}

/// The search over one register. `visited` holds (operations linearized, value) states already
/// explored, which keeps the search polynomial for histories with bounded concurrency.
fn check_register(initial: &[u8], events: &[&Event]) -> Result<(), String> {
    const MAX_OPS: usize = 4096;
    if events.len() > MAX_OPS {
        return Err(format!(
            "{} operations; the checker takes at most {MAX_OPS}",
            events.len()
        ));
    }
    let mut values: Vec<&[u8]> = vec![initial];
    let mut ops: Vec<(u64, u64, bool, usize)> = Vec::with_capacity(events.len());
    for e in events {
        let v = match &e.op {
            RegisterOp::Write(v) | RegisterOp::Read(v) => v.as_slice(),
        };
        let index = match values.iter().position(|x| *x == v) {
            Some(i) => i,
            None => {
                values.push(v);
                values.len() - 1
            }
        };
        let write = matches!(e.op, RegisterOp::Write(_));
        ops.push((e.invoked, e.completed.unwrap_or(u64::MAX), write, index));
    }
    ops.sort_by_key(|o| o.0);
    let must = ops.iter().filter(|o| o.1 != u64::MAX).count();
    let words = ops.len().div_ceil(64);
    let mut visited: HashSet<(Vec<u64>, usize)> = HashSet::new();
    // Depth-first: (linearized set, current value, completed ops linearized, next op to try).
    let mut stack: Vec<(Vec<u64>, usize, usize)> = vec![(vec![0; words], 0, 0)];
    let mut deepest = 0;
    while let Some((done, value, completed)) = stack.pop() {
        if completed == must {
            return Ok(());
        }
        deepest = deepest.max(completed);
        let is_done = |i: usize| done[i / 64] & (1 << (i % 64)) != 0;
        // An op may go next only if it was invoked before every pending op completed.
        let horizon = (0..ops.len())
            .filter(|&i| !is_done(i))
            .map(|i| ops[i].1)
            .min()
            .unwrap_or(u64::MAX);
        for (i, &(invoked, end, write, v)) in ops.iter().enumerate() {
            if invoked > horizon {
                break;
            }
            if is_done(i) || (!write && v != value) {
                continue;
            }
            let mut next = done.clone();
            next[i / 64] |= 1 << (i % 64);
            let next_value = if write { v } else { value };
            if visited.insert((next.clone(), next_value)) {
                let completed = completed + usize::from(end != u64::MAX);
                stack.push((next, next_value, completed));
            }
        }
    }
    Err(format!(
        "not linearizable: no order of its {} operations explains the reads \
         (at most {deepest} of {must} completed operations could be ordered)",
        ops.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(op: RegisterOp, invoked: u64, completed: Option<u64>) -> Event {
        Event {
            key: "/k".into(),
            op,
            invoked,
            completed,
        }
    }

    fn w(v: &str, a: u64, b: u64) -> Event {
        event(RegisterOp::Write(v.into()), a, Some(b))
    }

    fn r(v: &str, a: u64, b: u64) -> Event {
        event(RegisterOp::Read(v.into()), a, Some(b))
    }

    #[test]
    fn sequential_histories() {
        assert!(
            check(
                b"0",
                &[w("1", 0, 1), r("1", 2, 3), w("2", 4, 5), r("2", 6, 7)]
            )
            .is_ok()
        );
        assert!(check(b"0", &[r("0", 0, 1), w("1", 2, 3)]).is_ok());
        // A stale read after a completed write.
        assert!(check(b"0", &[w("1", 0, 1), r("0", 2, 3)]).is_err());
        // A read of a value nobody wrote.
        assert!(check(b"0", &[r("9", 0, 1)]).is_err());
    }

    #[test]
    fn concurrency_allows_either_order_but_not_going_back() {
        // The write overlaps both reads: old-then-new is fine.
        assert!(check(b"0", &[w("1", 0, 10), r("0", 1, 2), r("1", 3, 4)]).is_ok());
        // New-then-old is not: once a read saw 1, a later read cannot see 0.
        assert!(check(b"0", &[w("1", 0, 10), r("1", 1, 2), r("0", 3, 4)]).is_err());
        // Two overlapping writes, reads agreeing on one order.
        let h = [w("1", 0, 10), w("2", 0, 10), r("2", 11, 12), r("2", 13, 14)];
        assert!(check(b"0", &h).is_ok());
        let h = [
            w("1", 0, 10),
            w("2", 0, 10),
            r("2", 5, 6),
            r("1", 7, 8),
            r("2", 11, 12),
        ];
        assert!(check(b"0", &h).is_err());
    }

    #[test]
    fn unknown_writes_may_happen_late_or_never() {
        let lost = event(RegisterOp::Write("1".into()), 0, None);
        assert!(check(b"0", &[lost.clone(), r("0", 5, 6)]).is_ok());
        assert!(check(b"0", &[lost.clone(), r("0", 5, 6), r("1", 100, 101)]).is_ok());
        // But never before it was sent.
        let late = event(RegisterOp::Write("1".into()), 50, None);
        assert!(check(b"0", &[r("1", 0, 1), late]).is_err());
    }

    #[test]
    fn registers_are_checked_separately() {
        let mut other = r("5", 0, 1);
        other.key = "/other".into();
        let err = check(b"0", &[w("1", 0, 1), other]).unwrap_err();
        assert!(err.starts_with("/other"), "{err}");
    }
}
