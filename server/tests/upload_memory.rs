//! An upload's memory is bounded (issue 16): its own test binary, so the process's peak
//! resident memory belongs to this one request.

mod common;

use axum::http::StatusCode;
use common::*;

/// A 4000 × 4000 RGBA upload (61 MiB decoded, within the 64 MiB limit) raises the
/// process's peak memory by at most 100 MB: transparency is laid on white in place and
/// the image is fitted before any other conversion (the old path made three more
/// full-size copies, ~230 MB).
#[tokio::test]
async fn a_large_upload_decodes_in_bounded_memory() {
    let s = server(None, true);
    let png = large_png();
    assert!(
        png.len() < 9 << 20,
        "the upload fits the body limit ({} bytes)",
        png.len()
    );
    let body = multipart(&[], Some(&png));
    drop(png);
    // Resets the peak (VmHWM) to the current resident size.
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak resident size");
    let before = proc_status_kib("self", "VmRSS:") << 10;
    let (st, v) = json(&s.router, post_form("/api/predict", body)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let grew = (proc_status_kib("self", "VmHWM:") << 10).saturating_sub(before);
    eprintln!("peak grew by {} MiB", grew >> 20);
    assert!(grew <= 100 << 20, "peak grew by {} MiB", grew >> 20);
    s.state.jobs.stop();
}
