//! Work that yields the CPU to writers: a new scope's birth (moving its rows) and a snapshot's
//! encoding read a whole scope, seconds of CPU for a big one, while the writes they sit beside
//! are what the cluster is for. Neither is waited on by a client: the new scope serves from
//! memory meanwhile, and raft goes on with its log until the snapshot exists.

use std::io;

/// Runs `work` on a thread of its own at a lower scheduling priority (nice 10) and returns its
/// result. At normal priority, on a machine with few cores, it takes the CPU from the writes.
/// (bench/split.sh, 500k znodes moved on the 2-core dev cluster: the longest write gap was
/// 609 ms with a birth's move in one batch at normal priority, 224-425 ms in batches at
/// nice 10.)
///
/// Only steps that hold no lock the node's writers wait for are lowered: a lowered thread
/// holding the journal lock on a busy machine is preempted by the very writers waiting for
/// it. Without privilege a thread cannot raise its priority again, hence a thread per step
/// rather than lowering the caller's own.
pub fn at_low_priority<T: Send>(
    what: &str,
    work: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("scope-background".into())
            .spawn_scoped(s, || {
                crate::priority::lower(what);
                work()
            })
            .map_err(|e| io::Error::new(e.kind(), format!("starting a thread for {what}: {e}")))?;
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
