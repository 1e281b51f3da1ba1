//! The server hands memory back after a burst: it runs `hyperat serve` itself, since the
//! policy under test is the binary's allocator setting (`server/src/main.rs`), which this
//! test binary does not share.

mod common;
#[path = "../examples/support/http.rs"]
mod http;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A memory figure of the server's `/proc/PID/status` (`VmRSS:`, `VmHWM:`), in MiB.
fn status_mib(pid: &str, field: &str) -> u64 {
    common::proc_status_kib(pid, field) >> 10
}

/// A server process, killed when the test ends, failed assertions included.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `hyperat serve` on `models` at a free port; returns the process and its address.
fn serve(models: &std::path::Path, data: &std::path::Path) -> (Running, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hyperat"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--dist",
            "/nonexistent",
            "--models",
        ])
        .arg(models)
        .arg("--data-dir")
        .arg(data)
        // mimalloc's own variables would override the policy under test.
        .env_remove("MIMALLOC_PURGE_DELAY")
        .env_remove("MIMALLOC_ALLOW_THP")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hyperat serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            Some(
                l.strip_prefix("serve: open http://")?
                    .trim_end_matches('/')
                    .to_string(),
            )
        })
        .expect("the server says where it listens");
    // Keep draining its stderr so that it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (Running(child), addr)
}

/// Six 4000 × 4000 uploads (61 MiB decoded each; as many decode at once as there are
/// CPUs, so at least one image's worth) raise the server's resident memory; once they are
/// answered it falls back to within 40 MiB of where it was (23 → 258 → 34 MiB on 2 CPUs,
/// 10 s after). With freed memory kept for good (the training
/// commands' setting, `MIMALLOC_PURGE_DELAY=-1`) this test fails: 28 → 208 → 208 MiB; with
/// transparent huge pages on (`MIMALLOC_ALLOW_THP=1`) it fails at its first check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_of_a_burst_goes_back_to_the_os() {
    let (models, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    common::make_models(models.path());
    let (server, addr) = serve(models.path(), data.path());
    let pid = &server.0.id().to_string();
    // The field exists since Linux 5.0; where it does, the server has turned THP off.
    if let Some(thp) = common::proc_status(pid, "THP_enabled:") {
        assert_eq!(thp, "0", "transparent huge pages stay on");
    }
    let base = status_mib(pid, "VmRSS:");
    let body = http::form(&[], Some(&common::large_png()));
    let uploads: Vec<_> = (0..6)
        .map(|_| {
            let (addr, body) = (addr.clone(), body.clone());
            tokio::spawn(async move { http::post(&addr, "/api/predict", &body).await })
        })
        .collect();
    for u in uploads {
        let (status, _) = u.await.unwrap().expect("the upload is answered");
        assert_eq!(status, 200);
    }
    let peak = status_mib(pid, "VmHWM:");
    assert!(
        peak >= base + 60,
        "the burst raised the peak from {base} to {peak} MiB only: it tests nothing"
    );
    let start = Instant::now();
    let mut rss = status_mib(pid, "VmRSS:");
    while rss > base + 40 && start.elapsed() < Duration::from_secs(40) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss = status_mib(pid, "VmRSS:");
    }
    eprintln!(
        "resident memory: {base} MiB before, peak {peak}, {rss} after {:.1} s",
        start.elapsed().as_secs_f64()
    );
    drop(server);
    assert!(
        rss <= base + 40,
        "{rss} MiB resident 40 s after the burst, against {base} before (peak {peak})"
    );
}
