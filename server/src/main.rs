//! `hyperat`: the command-line front of HyperAT Studio.

use hyperat::alloc_count::Counting;
use hyperat_server::cli;

/// mimalloc keeps freed pages for reuse: with glibc's allocator every large tensor
/// allocation page-faults fresh memory, which cost more than the maths on small ViTs.
/// `Counting` lets `hyperat bench` report each workload's allocations.
#[global_allocator]
static GLOBAL: Counting<mimalloc::MiMalloc> = Counting(mimalloc::MiMalloc);

use clap::Parser;

/// Keeps freed memory instead of returning it to the OS after 10 ms (mimalloc's
/// default): the tensors of one step are freed and allocated again in the next, and
/// fresh pages cost a page fault and a clear each.
#[allow(unsafe_code)]
fn keep_freed_memory() {
    /// `mi_option_purge_delay` in mimalloc.h (v2 and v3); libmimalloc-sys has no constant.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: setting an option is thread-safe and takes plain integers.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) };
}

/// Warnings and errors of the libraries (burn's collective among them) on stderr. Without
/// a logger of ours, burn-communication installs one that prints every connection on
/// stdout when a run over several nodes starts. `HYPERAT_LOG=info` (or debug, trace)
/// shows more.
fn quiet_logs() {
    let level = std::env::var("HYPERAT_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::WARN);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    quiet_logs();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
