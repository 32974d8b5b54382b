// glibc's allocator spent about 30% of a loaded node's CPU in malloc and free (perf, 64
// clients); mimalloc's per-thread free lists suit a node's many short-lived buffers.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    scopekeeper::cli::main()
}
