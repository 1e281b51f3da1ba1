//! The server under hostile input (issue 16's probes), through the router without a
//! socket: each test reproduces a probe and asserts the fixed behaviour.

mod common;

use axum::http::StatusCode;
use common::*;

/// Images whose header declares more than the decoded-size limit (64 MiB) are refused
/// with 422 before a pixel is decoded: the 8192² 16-bit RGBA bomb (512 MiB from a
/// ~500 KB file) and a 4097 × 4096 RGBA image just above the limit.
#[tokio::test]
async fn decompression_bombs_are_refused_from_their_header() {
    let s = server(None, true);
    for (w, h, depth, color, mib) in [(8192, 8192, 16, 6, 512), (4097, 4096, 8, 6, 65)] {
        let body = multipart(&[], Some(&declared_png(w, h, depth, color)));
        let (st, v) = json(&s.router, post_form("/api/predict", body)).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["error"], "undecodable", "{v}");
        let detail = v["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("{mib} MiB, above the limit of 64 MiB")),
            "{detail}"
        );
    }
    s.state.jobs.stop();
}

/// Uploads decode on the blocking pool, not on the executor: `/api/health` answers while
/// large uploads are still decoding (it used to wait for them, 11 s for six).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_while_uploads_decode() {
    let s = server(None, true);
    let png = large_png();
    let slots = s.state.config.limits.decode_concurrency;
    let uploads: Vec<_> = (0..slots + 2)
        .map(|_| {
            let (router, body) = (s.router.clone(), multipart(&[], Some(&png)));
            tokio::spawn(async move { json(&router, post_form("/api/predict", body)).await.0 })
        })
        .collect();
    let decoding = || s.state.decode.available_permits() < slots;
    for _ in 0..10_000 {
        if decoding() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert!(decoding(), "the uploads started decoding");
    let (st, v) = json(&s.router, get("/api/health")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(
        decoding(),
        "health answered while an upload was still decoding"
    );
    for u in uploads {
        assert_eq!(u.await.unwrap(), StatusCode::OK);
    }
    s.state.jobs.stop();
}
