//! The HTTP API through `app(state)` without a socket: every endpoint and its error paths.

mod common;

use std::io::Read;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use hyperat::attack::Classifier;
use hyperat::checkpoint::Checkpoint;
use hyperat::inspect::images;
use hyperat_server::serve::openapi::ROUTES;
use serde_json::{Value, json};
use tower::ServiceExt;

#[tokio::test]
async fn health_models_and_openapi() {
    let s = server(None, true);
    let (st, v) = json(&s.router, get("/api/health")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["models"], 2);
    assert_eq!(v["backend"], "Flex");

    let (st, v) = json(&s.router, get("/api/models")).await;
    assert_eq!(st, StatusCode::OK);
    let models = v["models"].as_array().unwrap();
    let ids: Vec<&str> = models.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["plain", "tiny"]);
    let tiny = &models[1];
    assert_eq!(tiny["kind"], "hyperat");
    // The evaluation beside the model, per variant in the variants' order; an unreadable
    // one is left out and the model still serves.
    let figures: Vec<(&str, f64, f64)> = tiny["evaluation"]["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let f = |k: &str| v[k].as_f64().unwrap();
            (
                v["variant"].as_str().unwrap(),
                f("clean_acc"),
                f("robust_acc"),
            )
        })
        .collect();
    assert_eq!(figures, [("base", 0.9, 0.02), ("merged:uniform", 0.8, 0.6)]);
    assert_eq!(
        (&tiny["evaluation"]["attack"], &tiny["evaluation"]["n"]),
        (&json!("PGD-20"), &json!(100))
    );
    assert_eq!(models[0]["evaluation"], Value::Null);
    assert_eq!(tiny["input"], json!([1, 28, 28]));
    assert_eq!(tiny["channels"], 1);
    assert_eq!(tiny["classes"].as_array().unwrap().len(), 10);
    assert_eq!(tiny["classes"][0], "T-shirt/top");
    assert_eq!(tiny["mean"].as_array().unwrap().len(), 1);
    assert_eq!(
        tiny["variants"],
        json!([
            "base",
            "method:pgd-at",
            "method:trades",
            "method:mart",
            "merged:uniform"
        ])
    );
    assert_eq!(tiny["default_variant"], "merged:uniform");
    assert_eq!(models[0]["variants"], json!(["base"]));
    // How distinct its defenses are, from the run's last diagnostics: every pair, whose
    // means average to the overall mean (every weight has all three cosines).
    let pairs: Vec<(&str, &str, f64)> = tiny["defenses"]["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["a"].as_str().unwrap(),
                p["b"].as_str().unwrap(),
                p["cosine"].as_f64().unwrap(),
            )
        })
        .collect();
    let names: Vec<(&str, &str)> = pairs.iter().map(|&(a, b, _)| (a, b)).collect();
    assert_eq!(
        names,
        [("pgd-at", "trades"), ("pgd-at", "mart"), ("trades", "mart")]
    );
    let mean = tiny["defenses"]["mean"].as_f64().unwrap();
    assert!(
        (pairs.iter().map(|p| p.2).sum::<f64>() / 3.0 - mean).abs() < 1e-9,
        "{pairs:?} {mean}"
    );
    assert!((-1.0..=1.0).contains(&mean));
    assert_eq!(tiny["defenses"]["step"], 2);
    assert_eq!(models[0].get("defenses"), None);

    let (st, v) = json(&s.router, get("/api/models/tiny")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["id"], "tiny");
    let (st, v) = json(&s.router, get("/api/models/nope")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(v["error"], "not_found");
    assert!(v["detail"].as_str().unwrap().contains("nope"));

    // The document lists exactly the routes, and the router answers each of them.
    let (st, doc) = json(&s.router, get("/api/openapi.json")).await;
    assert_eq!(st, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    let listed: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(listed, ROUTES.len());
    for (method, path, _, _, _) in ROUTES {
        assert!(
            paths[*path].get(*method).is_some(),
            "{method} {path} not documented"
        );
        let uri = path.replace("{id}", "tiny");
        let req = Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(&uri)
            .body(Body::empty())
            .unwrap();
        let (st, body) = send(&s.router, req).await;
        assert!(
            st != StatusCode::METHOD_NOT_ALLOWED
                && !(st == StatusCode::NOT_FOUND
                    && String::from_utf8_lossy(&body).contains("no such API endpoint")),
            "{method} {uri}: {st}"
        );
    }
    let (st, v) = json(&s.router, get("/api/nothing-here")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(v["error"], "not_found");
    // Without a built UI, other paths get a page saying how to build it.
    let (st, body) = send(&s.router, get("/some/page")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).contains("not built"));
    s.state.jobs.stop();
}

#[tokio::test]
async fn predict_uploads_samples_and_errors() {
    let s = server(None, true);
    let r = &s.router;
    let (st, v) = json(
        r,
        post_form(
            "/api/predict",
            multipart(&[("model", "tiny")], Some(&png(40, 30, 90))),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let p = &v["prediction"];
    let probs: Vec<f64> = p["probs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(probs.len(), 10);
    assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-4);
    assert_eq!(p["top5"].as_array().unwrap().len(), 5);
    assert_eq!(p["top5"][0]["class"], p["class"]);
    assert_eq!(v["variant"], "merged:uniform");
    assert!(v["latency_ms"].as_f64().unwrap() >= 0.0);

    // A dataset sample gives the same answer as the model run directly.
    let (st, v) = json(
        r,
        post_form(
            "/api/predict",
            multipart(
                &[
                    ("model", "tiny"),
                    ("variant", "base"),
                    ("sample", "3"),
                    ("dataset", "fashion-mnist"),
                ],
                None,
            ),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let entry = s.state.models.get("tiny").unwrap();
    let ds = s.state.test_set("fashion-mnist").unwrap();
    let x =
        images::<hyperat::backend::Cpu>(&ds.image(3), [1, 28, 28], &Default::default()).unwrap();
    let direct = hyperat::inspect::predict::<A>(entry.variant(Some("base")).unwrap(), x);
    assert_eq!(v["prediction"]["class"], direct[0].class);

    let cases: Vec<(Vec<u8>, StatusCode)> = vec![
        (
            multipart(&[("model", "nope")], Some(&png(8, 8, 1))),
            StatusCode::NOT_FOUND,
        ),
        (
            multipart(
                &[("model", "tiny"), ("variant", "method:zzz")],
                Some(&png(8, 8, 1)),
            ),
            StatusCode::NOT_FOUND,
        ),
        (
            multipart(&[("model", "tiny")], Some(b"this is not an image at all")),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            multipart(&[("model", "tiny")], Some(&png(64, 64, 7)[..60])),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            multipart(&[("model", "tiny")], None),
            StatusCode::BAD_REQUEST,
        ),
        (
            multipart(&[("model", "tiny"), ("sample", "99999999")], None),
            StatusCode::NOT_FOUND,
        ),
        (
            multipart(&[("model", "tiny"), ("sample", "x")], None),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            multipart(
                &[
                    ("model", "tiny"),
                    ("sample", "1"),
                    ("dataset", "/etc/passwd"),
                ],
                None,
            ),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (body, want) in cases {
        let (st, v) = json(r, post_form("/api/predict", body)).await;
        assert_eq!(st, want, "{v}");
        assert!(v["error"].is_string() && v["detail"].is_string(), "{v}");
    }
    // Over 10 MB: 413, with a JSON error or an empty body, never a crash.
    let big = multipart(&[("model", "tiny")], Some(&vec![0u8; 11 << 20]));
    let (st, _b) = send(r, post_form("/api/predict", big)).await;
    assert_eq!(
        st,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        String::from_utf8_lossy(&_b)
    );
    // A decompression bomb: a PNG header claiming 100000 x 100000 pixels.
    let mut bomb = png(64, 64, 0);
    bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let (st, _) = json(
        r,
        post_form("/api/predict", multipart(&[("model", "tiny")], Some(&bomb))),
    )
    .await;
    assert!(
        st == StatusCode::UNPROCESSABLE_ENTITY || st == StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "{st}"
    );
    s.state.jobs.stop();
}

#[tokio::test]
async fn attack_and_its_limits() {
    let s = server(None, true);
    let r = &s.router;
    let form = |extra: &[(&str, &str)]| {
        let mut f = vec![
            ("model", "tiny"),
            ("variant", "method:trades"),
            ("sample", "0"),
            ("attack", "pgd"),
            ("eps", "0.1"),
            ("steps", "5"),
        ];
        f.extend_from_slice(extra);
        multipart(&f, None)
    };
    let (st, v) = json(r, post_form("/api/attack", form(&[]))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v["linf"].as_f64().unwrap() <= 0.1 + 1e-6);
    assert!(v["l2"].as_f64().unwrap() > 0.0);
    for k in ["clean_png", "adversarial_png", "perturbation_png"] {
        assert!(
            v[k].as_str().unwrap().starts_with("data:image/png;base64,"),
            "{k}"
        );
    }
    assert_eq!(v["attack"]["name"], "pgd");
    assert_eq!(v["attack"]["steps"], 5);
    assert_eq!(v["variant"], "method:trades");
    let label = v["label"].as_u64().unwrap() as usize;
    assert_eq!(
        label,
        s.state.test_set("fashion-mnist").unwrap().labels[0] as usize
    );
    assert_eq!(v["clean_correct"], json!(v["clean"]["class"] == label));
    // The verdict agrees with the predictions and δ, and comes with its headline.
    let right = |k: &str| v[k]["class"] == label;
    let want = match (right("clean"), right("adversarial")) {
        (false, _) => "already_wrong",
        (true, false) => "fooled",
        (true, true) if v["linf"].as_f64().unwrap() == 0.0 => "nothing_found",
        (true, true) => "held",
    };
    assert_eq!(v["verdict"], want, "{v}");
    assert!(!v["headline"].as_str().unwrap().is_empty());
    // The same seed gives the same adversarial image.
    let (_, again) = json(r, post_form("/api/attack", form(&[]))).await;
    assert_eq!(again["adversarial_png"], v["adversarial_png"]);
    // An uploaded image with fgsm, eps given as a fraction.
    let (st, v) = json(
        r,
        post_form(
            "/api/attack",
            multipart(
                &[("attack", "fgsm"), ("eps", "8/255"), ("invert", "true")],
                Some(&png(30, 30, 50)),
            ),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!((v["linf"].as_f64().unwrap() - 8.0 / 255.0).abs() < 1e-3);

    for (extra, want) in [
        (vec![("eps", "0")], StatusCode::UNPROCESSABLE_ENTITY),
        (vec![("eps", "1.5")], StatusCode::UNPROCESSABLE_ENTITY),
        (vec![("eps", "-0.1")], StatusCode::UNPROCESSABLE_ENTITY),
        (vec![("eps", "abc")], StatusCode::UNPROCESSABLE_ENTITY),
        (vec![("steps", "5000")], StatusCode::UNPROCESSABLE_ENTITY),
        (vec![("steps", "0")], StatusCode::UNPROCESSABLE_ENTITY),
        (vec![("restarts", "50")], StatusCode::UNPROCESSABLE_ENTITY),
        (vec![("attack", "deepfool")], StatusCode::NOT_FOUND),
        (vec![("label", "10")], StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let (st, v) = json(r, post_form("/api/attack", form(&extra))).await;
        assert_eq!(st, want, "{extra:?}: {v}");
    }
    s.state.jobs.stop();
}

#[tokio::test]
async fn compare_gives_every_variant_and_the_transfer_matrix() {
    let s = server(None, true);
    let (st, v) = json(
        &s.router,
        post_form(
            "/api/compare",
            multipart(
                &[
                    ("model", "tiny"),
                    ("sample", "5"),
                    ("attack", "pgd"),
                    ("eps", "0.1"),
                    ("steps", "3"),
                ],
                None,
            ),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let names = v["variants"].as_array().unwrap();
    assert_eq!(names.len(), 5);
    let rows = v["rows"].as_array().unwrap();
    let m = v["transfer"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(m.len(), 5);
    for (i, row) in m.iter().enumerate() {
        assert_eq!(row.as_array().unwrap().len(), 5);
        // The diagonal is each variant on the attack made against it.
        assert_eq!(row[i]["class"], rows[i]["adversarial"]["class"]);
        assert_eq!(rows[i]["variant"], names[i]);
    }
    s.state.jobs.stop();
}

#[tokio::test]
async fn samples_by_class() {
    let s = server(None, true);
    let (st, v) = json(
        &s.router,
        get("/api/samples?dataset=fashion-mnist&class=3&n=4"),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let samples = v["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 4);
    let ds = s.state.test_set("fashion-mnist").unwrap();
    for x in samples {
        assert_eq!(x["label"], 3);
        assert_eq!(ds.labels[x["id"].as_u64().unwrap() as usize], 3);
        assert_eq!(x["name"], "Dress");
        assert!(
            x["png"]
                .as_str()
                .unwrap()
                .starts_with("data:image/png;base64,")
        );
    }
    for (uri, want) in [
        ("/api/samples?dataset=imagenet", StatusCode::NOT_FOUND),
        ("/api/samples?n=0", StatusCode::UNPROCESSABLE_ENTITY),
        ("/api/samples?n=100000", StatusCode::UNPROCESSABLE_ENTITY),
        ("/api/samples?class=12", StatusCode::UNPROCESSABLE_ENTITY),
        ("/api/samples?class=-1", StatusCode::BAD_REQUEST),
    ] {
        let (st, _) = send(&s.router, get(uri)).await;
        assert_eq!(st, want, "{uri}");
    }
    s.state.jobs.stop();
}

#[tokio::test]
async fn export_is_a_timm_checkpoint_with_the_variants_logits() {
    let s = server(None, true);
    let (st, body) = send(
        &s.router,
        get("/api/models/tiny/export?variant=method:mart"),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let mut files = std::collections::BTreeMap::new();
    let mut ar = tar::Archive::new(&body[..]);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut bytes = vec![];
        e.read_to_end(&mut bytes).unwrap();
        files.insert(name, bytes);
    }
    let ck = Checkpoint::from_bytes(
        std::str::from_utf8(&files["config.json"]).unwrap(),
        &files["model.safetensors"],
    )
    .unwrap();
    let vit = ck.build::<A>(&Default::default()).unwrap();
    let entry = s.state.models.get("tiny").unwrap();
    let ds = s.state.test_set("fashion-mnist").unwrap();
    let px: Vec<f32> = (0..4).flat_map(|i| ds.image(i)).collect();
    let x = images::<A>(&px, [1, 28, 28], &Default::default()).unwrap();
    let a = vit.logits(x.clone()).into_data().to_vec::<f32>().unwrap();
    let b = entry
        .variant(Some("method:mart"))
        .unwrap()
        .logits(x)
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    for (p, q) in a.iter().zip(&b) {
        assert!((p - q).abs() <= 1e-5 * q.abs().max(1.0), "{p} vs {q}");
    }
    let (st, _) = send(
        &s.router,
        get("/api/models/tiny/export?variant=merged:nope"),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = send(&s.router, get("/api/models/none/export")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    s.state.jobs.stop();
}

#[tokio::test]
async fn job_endpoints_are_guarded() {
    let spec = json!({"kind": "eval", "model": "tiny", "config": {"limit": 8, "attack": "fgsm", "eps": 0.1}});
    // No token, request not from loopback: refused.
    let s = server(None, false);
    let (st, v) = json(&s.router, post_json("/api/jobs", &spec, None)).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, _) = json(&s.router, get("/api/jobs")).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // Predictions stay open to everyone.
    let (st, _) = json(
        &s.router,
        post_form("/api/predict", multipart(&[], Some(&png(28, 28, 3)))),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    s.state.jobs.stop();

    let s = server(Some("sesame"), false);
    let (st, _) = json(&s.router, post_json("/api/jobs", &spec, None)).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = json(&s.router, post_json("/api/jobs", &spec, Some("sesamf"))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, v) = json(&s.router, post_json("/api/jobs", &spec, Some("sesame"))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    // A browser's EventSource cannot send headers: the event stream also takes the token
    // as `?access_token=`, and only the right one.
    let id = v["id"].as_str().unwrap().to_string();
    s.state.jobs.stop();
    let events = format!("/api/jobs/{id}/events");
    let (st, _) = send(&s.router, get(&events)).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = send(&s.router, get(&format!("{events}?access_token=sesamf"))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // (The stream of a queued job stays open: read the status only.)
    let resp = s
        .router
        .clone()
        .oneshot(get(&format!("{events}?access_token=sesame")))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn bad_job_specs_are_refused() {
    let s = server(None, true);
    for (spec, want) in [
        (json!({"kind": "dance"}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"kind": "tune", "config": {"stepz": 3}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"kind": "tune", "config": {"methods": "pgd-at,voodoo"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"kind": "tune", "model": "nope"}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"kind": "eval", "model": "tiny", "variant": "method:zzz"}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"kind": "eval", "model": "tiny", "config": {"eps": 3.0}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"kind": "report", "config": {"rows": [{"model": "ghost"}]}}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"kind": "pretrain", "config": {"preset": "vit-huge"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (st, v) = json(&s.router, post_json("/api/jobs", &spec, None)).await;
        assert_eq!(st, want, "{spec}: {v}");
    }
    let (st, _) = send(
        &s.router,
        Request::post("/api/jobs")
            .header("content-type", "application/json")
            .body(Body::from("{not json"))
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let (st, _) = json(&s.router, get("/api/jobs/job-0-0")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = send(
        &s.router,
        Request::delete("/api/jobs/job-0-0")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    s.state.jobs.stop();
}

#[tokio::test]
async fn serves_the_built_ui_with_an_index_fallback() {
    let cfg_dist = |d: &tempfile::TempDir| d.path().join("dist");
    let (models, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make_models(models.path());
    let mut cfg = config(models.path(), data.path(), None);
    cfg.dist_dir = data.path().join("dist");
    std::fs::create_dir_all(&cfg.dist_dir).unwrap();
    std::fs::write(cfg.dist_dir.join("index.html"), "<html>studio</html>").unwrap();
    std::fs::write(cfg.dist_dir.join("app.js"), "console.log(1)").unwrap();
    let state = hyperat_server::serve::AppState::<A>::new(cfg, Default::default()).unwrap();
    let r = hyperat_server::serve::app(state.clone());
    let (st, body) = send(&r, get("/")).await;
    assert_eq!(
        (st, body.as_slice()),
        (StatusCode::OK, &b"<html>studio</html>"[..])
    );
    let (st, body) = send(&r, get("/app.js")).await;
    assert_eq!(
        (st, body.as_slice()),
        (StatusCode::OK, &b"console.log(1)"[..])
    );
    // A precompressed copy goes to a browser that accepts gzip, the plain file otherwise.
    std::fs::write(cfg_dist(&data).join("app.js.gz"), b"gz-bytes").unwrap();
    let req = Request::get("/app.js")
        .header("accept-encoding", "gzip")
        .body(Body::empty())
        .unwrap();
    let resp = r.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let (_, body) = send(&r, get("/app.js")).await;
    assert_eq!(body.as_slice(), &b"console.log(1)"[..]);
    // Client-side routes get the page; API paths never do.
    let (st, body) = send(&r, get("/compare")).await;
    assert_eq!(
        (st, body.as_slice()),
        (StatusCode::OK, &b"<html>studio</html>"[..])
    );
    let (st, v) = json(&r, get("/api/unknown")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(v["error"], "not_found");
    state.jobs.stop();
}

/// Every framework rejection answers the `{error, detail}` JSON contract: an oversized
/// body, a malformed query, multipart boundary or JSON body, a wrong content type, a
/// wrong method (with its `Allow` header), an unknown route.
#[tokio::test]
async fn framework_rejections_answer_in_the_json_contract() {
    let s = server(None, true);
    let r = &s.router;
    let check = |st: StatusCode, v: &Value, want: StatusCode, kind: &str| {
        assert_eq!(st, want, "{v}");
        assert_eq!(v["error"], kind, "{v}");
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
    };
    let big = vec![b'x'; s.state.config.limits.max_body + 1];
    let req = Request::post("/api/predict")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .header("content-length", big.len())
        .body(Body::from(big))
        .unwrap();
    let (st, v) = json(r, req).await;
    check(st, &v, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let (st, v) = json(r, get("/api/samples?n=lots")).await;
    check(st, &v, StatusCode::BAD_REQUEST, "bad_request");
    let req = Request::post("/api/predict")
        .header("content-type", "multipart/form-data")
        .body(Body::from("--x\r\n"))
        .unwrap();
    let (st, v) = json(r, req).await;
    assert!(st.is_client_error(), "{st} {v}");
    assert!(v["error"].is_string() && v["detail"].is_string(), "{v}");
    let req = Request::post("/api/jobs")
        .header("content-type", "text/plain")
        .body(Body::from("{}"))
        .unwrap();
    let (st, v) = json(r, req).await;
    check(
        st,
        &v,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let req = Request::post("/api/jobs")
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let (st, v) = json(r, req).await;
    check(st, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let resp = r.clone().oneshot(get("/api/predict")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        resp.headers().contains_key("allow"),
        "the Allow header survives"
    );
    let (st, v) = json(r, get("/api/predict")).await;
    check(st, &v, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let (st, v) = json(r, get("/api/no/such/route")).await;
    check(st, &v, StatusCode::NOT_FOUND, "not_found");
}

async fn boom() -> &'static str {
    let index = std::hint::black_box(3usize);
    ["a handler that indexes out of bounds"][index]
}

/// A handler that panics answers a JSON 500, and the router keeps serving.
#[tokio::test]
async fn a_panicking_handler_is_a_json_500_and_the_server_goes_on() {
    use axum::routing::get as route_get;
    let router = hyperat_server::serve::with_error_contract(
        axum::Router::new()
            .route("/boom", route_get(boom))
            .route("/ok", route_get(|| async { "fine" })),
    );
    let (st, v) = json(&router, get("/boom")).await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(v["error"], "internal", "{v}");
    let (st, body) = send(&router, get("/ok")).await;
    assert_eq!((st, body.as_slice()), (StatusCode::OK, b"fine".as_slice()));
}

/// The showcase ranks test images from data: every image returned is one both models
/// get right, and the counts add up.
#[tokio::test]
async fn showcase_picks_images_both_models_get_right() {
    let s = server(None, true);
    let (st, v) = json(&s.router, get("/api/models/tiny/showcase?n=5&eps=0.1")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["base"], "base");
    assert_eq!(v["ranked"], 64);
    let images = v["images"].as_array().unwrap();
    let both = v["both_right"].as_u64().unwrap() as usize;
    assert_eq!(images.len(), both.min(5));
    assert!(v["base_fooled_robust_held"].as_u64().unwrap() as usize <= both);
    for im in images {
        assert!(
            im["png"]
                .as_str()
                .unwrap()
                .starts_with("data:image/png;base64,")
        );
        assert!(
            im["label"].is_u64() && im["base_confidence"].is_number(),
            "{im}"
        );
    }
    // Asked again (from the cache), the same ranking cut to n.
    let (_, again) = json(&s.router, get("/api/models/tiny/showcase?n=2&eps=0.1")).await;
    let first: Vec<&Value> = images.iter().take(2).collect();
    let second: Vec<&Value> = again["images"].as_array().unwrap().iter().collect();
    assert_eq!(first, second);
    let (st, _) = json(&s.router, get("/api/models/tiny/showcase?variant=nope")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = json(&s.router, get("/api/models/tiny/showcase?n=0")).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    s.state.jobs.stop();
}
