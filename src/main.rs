//! The `hookgate` binary: a thin entry point; everything lives in the library.

// The request path allocates many small, short-lived objects (headers, JSON nodes, futures)
// across threads; mimalloc's thread-local free lists serve them far faster than glibc malloc,
// whose consolidation showed up as a fifth of the CPU time in profiles (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    hookgate::cli::main()
}
