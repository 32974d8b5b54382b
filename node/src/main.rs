// glibc's allocator spent about 30% of a loaded node's CPU in malloc and free (perf, 64
// clients); mimalloc's per-thread free lists suit a node's many short-lived buffers.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    without_huge_pages();
    scopekeeper::cli::main()
}

/// Turns transparent huge pages off for this process (and what it starts). The allocator hands
/// memory it has not used for a second back to the kernel, and asks for huge pages when it maps
/// more; under write load the same regions came back as 2 MiB pages the kernel zeroed on the
/// first touch: 7-9% of a loaded dev cluster's CPU samples in `clear_page_erms`. With 4 KiB
/// pages only what is touched is zeroed (64 clients creating, fresh dev clusters, 8 alternating
/// pairs: node CPU per create lower in 7, median 98 -> 88 us). Best effort: a kernel without
/// the option keeps its default.
fn without_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}
