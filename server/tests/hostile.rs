//! The server under hostile input (issue 16's probes), through the router without a
//! socket: each test reproduces a probe and asserts the fixed behaviour.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use hyperat_server::serve::Limits;

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
        tokio::time::sleep(Duration::from_millis(1)).await;
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

/// A comparison that runs past the timeout (504), or whose client goes away, frees its
/// slot within a step: the next small attack gets the slot (it used to wait behind the
/// abandoned work and get 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_work_frees_its_slot() {
    let limits = Limits {
        heavy_concurrency: 1,
        work_timeout: Duration::from_secs(1),
        queue_timeout: Duration::from_secs(5),
        anonymous_work: usize::MAX,
        ..Limits::default()
    };
    let s = server_with(None, true, limits);
    let image = png(28, 28, 90);
    // Minutes of work if nothing stopped it.
    let huge = || {
        let fields = [("attack", "pgd"), ("steps", "1000"), ("restarts", "10")];
        post_form("/api/compare", multipart(&fields, Some(&image)))
    };
    let small = || post_form("/api/attack", multipart(&[("steps", "3")], Some(&image)));
    let (st, v) = json(&s.router, huge()).await;
    assert_eq!(st, StatusCode::GATEWAY_TIMEOUT, "{v}");
    let (st, v) = json(&s.router, small()).await;
    assert_eq!(st, StatusCode::OK, "after a timeout: {v}");
    // A client that goes away: its request future is dropped mid-work.
    let (router, req) = (s.router.clone(), huge());
    let gone = tokio::spawn(async move { json(&router, req).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        s.state.heavy.available_permits(),
        0,
        "the comparison is running"
    );
    gone.abort();
    let (st, v) = json(&s.router, small()).await;
    assert_eq!(st, StatusCode::OK, "after a dropped client: {v}");
    s.state.jobs.stop();
}

/// Anonymous callers get a work budget (model calls: steps × restarts × variants); the
/// admin token a larger one.
#[tokio::test]
async fn work_is_budgeted_per_caller() {
    let limits = Limits {
        anonymous_work: 100,
        admin_work: 10_000,
        ..Limits::default()
    };
    let s = server_with(Some("sesame"), true, limits);
    let image = png(28, 28, 90);
    // 40 model calls for each of the HyperAT model's variants (more than two).
    let compare = |token: Option<&str>| {
        let fields = [
            ("model", "tiny"),
            ("attack", "pgd"),
            ("steps", "20"),
            ("restarts", "2"),
        ];
        let mut req = post_form("/api/compare", multipart(&fields, Some(&image)));
        if let Some(t) = token {
            let value = format!("Bearer {t}").parse().unwrap();
            req.headers_mut().insert("authorization", value);
        }
        req
    };
    let (st, v) = json(&s.router, compare(None)).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("without the admin token"),
        "{v}"
    );
    let (st, v) = json(&s.router, compare(Some("wrong"))).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (st, v) = json(&s.router, compare(Some("sesame"))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // One variant, within the anonymous budget.
    let fields = [("attack", "pgd"), ("steps", "5")];
    let (st, v) = json(
        &s.router,
        post_form("/api/attack", multipart(&fields, Some(&image))),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    s.state.jobs.stop();
}
