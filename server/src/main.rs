//! `hyperat`: the command-line front of HyperAT Studio.

use hyperat::alloc_count::Counting;
use hyperat_server::cli;

/// mimalloc keeps freed pages for reuse: with glibc's allocator every large tensor
/// allocation page-faults fresh memory, which cost more than the maths on small ViTs.
/// `Counting` lets `hyperat bench` report each workload's allocations.
#[global_allocator]
static GLOBAL: Counting<mimalloc::MiMalloc> = Counting(mimalloc::MiMalloc);

use clap::Parser;

/// How long freed memory stays with the process before mimalloc hands it back to the OS.
/// Training and evaluation keep it for good (`-1`): the tensors of one step are freed and
/// allocated again in the next, and fresh pages cost a page fault and a clear each. A
/// server keeps it for `SERVE_PURGE_DELAY_MS` only: with it kept for good, every thread
/// that ever ran an attack or a job holds its high-water mark, and the resident memory of
/// a server that served a burst stays at the burst's. `MIMALLOC_PURGE_DELAY` (mimalloc's
/// own variable, milliseconds) overrides both.
#[allow(unsafe_code)]
fn set_purge_delay(serving: bool) {
    /// `mi_option_purge_delay` in mimalloc.h (v2 and v3); libmimalloc-sys has no constant.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    let ms = if serving { SERVE_PURGE_DELAY_MS } else { -1 };
    // SAFETY: setting an option is thread-safe and takes plain integers.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, ms) };
}

/// Longer than an attack step (tens of ms), so one request's buffers are reused across its
/// steps, and short enough that memory goes back between requests.
const SERVE_PURGE_DELAY_MS: std::os::raw::c_long = 1000;

/// Turns transparent huge pages off for the server. mimalloc asks for them on its arenas
/// at start-up, and the kernel then fills 2 MiB pages around the few 4 KiB pages a server
/// touches: a server's idle memory crept up with no work done and purged pages inside a
/// huge page stayed resident. Measured: no request slower, a quarter less resident
/// after a soak (docs/performance.md). `MIMALLOC_ALLOW_THP=0|1` (mimalloc's own) decides instead.
#[allow(unsafe_code)]
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and changes a flag of this process.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
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
    quiet_logs();
    let args = cli::Cli::parse();
    let serving = args.serves();
    set_purge_delay(serving);
    if serving {
        no_huge_pages();
    }
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
