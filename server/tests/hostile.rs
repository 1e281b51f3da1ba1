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
    let decoding = || s.state.decode_slots.available_permits() < slots;
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
        attack_concurrency: 1,
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
        s.state.attack_slots.available_permits(),
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

/// Job records are checked when the server starts: a record whose id is not its folder
/// (`../../escape`) or that does not parse is reported as corrupt instead of vanishing
/// or sending the worker elsewhere; a job the process died running twice fails instead
/// of resuming again, while one a shutdown interrupted resumes.
#[test]
fn job_records_are_checked_at_start() {
    use hyperat_server::serve::jobs::{JobKind, JobSpec, JobStatus, Jobs};
    let data = tempfile::tempdir().unwrap();
    let runs = data.path().join("runs");
    let template = {
        let jobs = Jobs::<A>::open(data.path()).unwrap();
        let spec = JobSpec {
            kind: JobKind::Eval,
            model: None,
            variant: None,
            name: None,
            config: serde_json::Value::Null,
        };
        let r = jobs.submit(spec).unwrap();
        let path = runs.join(&r.id).join("job.json");
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        std::fs::remove_dir_all(runs.join(&r.id)).unwrap();
        v
    };
    let write = |folder: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = template.clone();
        v["id"] = folder.into();
        edit(&mut v);
        std::fs::create_dir_all(runs.join(folder)).unwrap();
        std::fs::write(runs.join(folder).join("job.json"), v.to_string()).unwrap();
    };
    write("job-1-0", &|v| v["id"] = "../../escape".into());
    write("job-2-0", &|_| {});
    let full = std::fs::read(runs.join("job-2-0/job.json")).unwrap();
    std::fs::write(runs.join("job-2-0/job.json"), &full[..full.len() / 2]).unwrap();
    write("job-3-0", &|v| {
        (v["status"], v["attempts"], v["crashes"]) = ("running".into(), 2.into(), 1.into());
    });
    write("job-4-0", &|v| {
        (v["status"], v["attempts"], v["interrupted"]) = ("running".into(), 1.into(), true.into());
    });
    let jobs = Jobs::<A>::open(data.path()).unwrap();
    let mut corrupt: Vec<String> = jobs.corrupt().into_iter().map(|(f, _)| f).collect();
    corrupt.sort();
    assert_eq!(corrupt, ["job-1-0", "job-2-0"]);
    let crashed = jobs.get("job-3-0").unwrap();
    assert_eq!(crashed.status, JobStatus::Failed);
    assert!(crashed.error.unwrap().contains("died 2 times"));
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs.join("job-3-0/job.json")).unwrap()).unwrap();
    assert_eq!(on_disk["status"], "failed", "the verdict is saved");
    let interrupted = jobs.get("job-4-0").unwrap();
    assert_eq!(interrupted.status, JobStatus::Running, "resumes");
    assert_eq!(interrupted.crashes, 0);
    assert!(!runs.join("../../escape").exists());
}

/// Jobs name datasets, never paths: `folder:/nonexistent` is refused before queueing
/// (it used to be queued, then fail with "No such file or directory").
#[tokio::test]
async fn jobs_take_dataset_names_not_paths() {
    let s = server(None, true);
    for kind in ["eval", "tune"] {
        let spec = serde_json::json!({"kind": kind, "model": "tiny", "config": {"dataset": "folder:/nonexistent"}});
        let (st, v) = json(&s.router, post_json("/api/jobs", &spec, None)).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{kind}: {v}");
        assert!(v["detail"].as_str().unwrap().contains("no paths"), "{v}");
    }
    let (_, v) = json(&s.router, get("/api/jobs")).await;
    assert_eq!(v["jobs"].as_array().unwrap().len(), 0);
    s.state.jobs.stop();
}

/// The DNS-rebinding and cross-site shapes are refused: a foreign `Host` on any API
/// request (421), a foreign `Origin` on a state-changing one (403); the server's own
/// origin and IP or `localhost` hosts are served.
#[tokio::test]
async fn foreign_hosts_and_origins_are_refused() {
    let s = server(None, true);
    let with =
        |mut req: axum::http::Request<axum::body::Body>, host: &str, origin: Option<&str>| {
            req.headers_mut().insert("host", host.parse().unwrap());
            if let Some(o) = origin {
                req.headers_mut().insert("origin", o.parse().unwrap());
            }
            req
        };
    let spec = serde_json::json!({"kind": "eval", "model": "tiny", "config": {"limit": 8}});
    let (st, v) = json(&s.router, with(get("/api/jobs"), "evil.example", None)).await;
    assert_eq!(st, StatusCode::MISDIRECTED_REQUEST, "{v}");
    assert_eq!(v["error"], "unknown_host");
    let (st, v) = json(
        &s.router,
        with(
            post_json("/api/jobs", &spec, None),
            "127.0.0.1:3000",
            Some("http://evil.example"),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"], "foreign_origin");
    let (st, v) = json(
        &s.router,
        with(
            get("/api/jobs"),
            "localhost:3000",
            Some("http://evil.example"),
        ),
    )
    .await;
    assert_eq!(
        st,
        StatusCode::OK,
        "a GET with a foreign Origin reads nothing the page can see (no CORS): {v}"
    );
    let (st, v) = json(
        &s.router,
        with(
            post_json("/api/jobs", &spec, None),
            "127.0.0.1:3000",
            Some("http://127.0.0.1:3000"),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "the app's own origin: {v}");
    s.state.jobs.stop();
}

/// Fuzzing the form parser, bounded: 400 mutations of a valid multipart predict request
/// (flipped bytes, cut tails, duplicated spans, odd field values) never make a 5xx and
/// always answer in the JSON contract.
#[tokio::test]
async fn mutated_forms_only_get_client_errors() {
    let s = server(None, true);
    let image = png(28, 28, 90);
    let fields = [
        ("model", "tiny"),
        ("attack", "fgsm"),
        ("eps", "8/255"),
        ("label", "3"),
    ];
    let valid = multipart(&fields, Some(&image));
    let mut rng = hyperat::rng::Rng::new(11);
    let odd = [
        "",
        "-1",
        "1e309",
        "NaN",
        "8/0",
        "0/0",
        "99999999999999999999",
        "\u{0}",
        "../x",
    ];
    for case in 0..400 {
        let mut body = valid.clone();
        for _ in 0..1 + rng.below(4) {
            let n = body.len();
            match rng.below(4) {
                0 => body[rng.below(n)] ^= 1 << rng.below(8),
                1 => body.truncate(rng.below(n)),
                2 => {
                    let (a, b) = (rng.below(n), rng.below(n));
                    let piece = body[a.min(b)..a.max(b)].to_vec();
                    let at = rng.below(n);
                    body.splice(at..at, piece);
                }
                _ => {
                    let k = fields[rng.below(fields.len())].0;
                    let v = odd[rng.below(odd.len())];
                    body = multipart(&[(k, v)], Some(&image));
                }
            }
        }
        let uri = ["/api/predict", "/api/attack"][case % 2];
        let (st, v) = json(&s.router, post_form(uri, body)).await;
        assert!(!st.is_server_error(), "case {case}: {st} {v}");
        if !st.is_success() {
            assert!(
                v["error"].is_string() && v["detail"].is_string(),
                "case {case}: {v}"
            );
        }
    }
    s.state.jobs.stop();
}
