//! Lowering the scheduling priority of the calling thread, for work that should yield the CPU
//! to the writes. On Linux a nice value and a scheduling policy belong to the thread, so only
//! the caller is lowered; without privilege it cannot be raised again, hence a thread of its
//! own for such work.

/// Nice 10: the thread still gets a share of a busy machine (a new scope's birth, a snapshot's
/// encoding: work that must finish).
pub fn lower(what: &str) {
    // SAFETY: gettid and setpriority take plain integers and touch no memory of ours.
    let lowered = unsafe {
        let tid = libc::syscall(libc::SYS_gettid);
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10)
    };
    if lowered != 0 {
        tracing::debug!(
            "could not lower the priority of {what}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// `SCHED_IDLE`: the thread runs only on a core nobody else wants, and may not run at all on a
/// busy machine (work that merely saves other threads time, and that they do themselves when
/// it was not done).
pub fn lowest(what: &str) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` outlives the call.
    let lowered = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if lowered != 0 {
        tracing::debug!(
            "could not make {what} an idle-priority thread: {}",
            std::io::Error::last_os_error()
        );
        lower(what);
    }
}
