//! Jobs end to end through the router: a tuning job streams events and becomes a model;
//! queued and running jobs cancel; a server stopped mid-run resumes the job on restart
//! with nothing lost; random and broken bodies get 4xx answers only.

mod common;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use common::*;
use hyperat::rng::Rng;
use hyperat_server::serve::{AppState, JobDevices, app};
use serde_json::{Value, json};

fn tune_spec(steps: usize) -> Value {
    let r = tiny_request(steps);
    json!({"kind": "tune", "model": "tiny", "config": r})
}

fn events(body: &[u8]) -> Vec<(String, Value)> {
    let text = String::from_utf8_lossy(body);
    text.split("\n\n")
        .filter_map(|block| {
            let mut kind = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(k) = line.strip_prefix("event: ") {
                    kind = Some(k.to_string());
                }
                if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).ok();
                }
            }
            Some((kind?, data?))
        })
        .collect()
}

#[tokio::test]
async fn a_tuning_job_streams_progress_and_becomes_a_model() {
    let s = server(None, true);
    let r = &s.router;
    let mut spec = tune_spec(4);
    spec["name"] = json!("  tune · 3 methods · 4 steps ");
    let (st, job) = json(r, post_json("/api/jobs", &spec, None)).await;
    assert_eq!(st, StatusCode::CREATED, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(job["status"], "queued");
    assert_eq!(job["spec"]["name"], "tune · 3 methods · 4 steps");
    // The event stream ends after the final status; read it whole.
    let (st, body) = send(r, get(&format!("/api/jobs/{id}/events"))).await;
    assert_eq!(st, StatusCode::OK);
    let ev = events(&body);
    assert_eq!(ev[0].0, "snapshot");
    let all: Vec<&Value> = ev
        .iter()
        .filter(|(k, _)| k == "metrics")
        .map(|(_, v)| v)
        .collect();
    // The run's hold-out evaluations (each method and the merge) and its delta
    // diagnostics (at each checkpoint) come on the same stream, marked by `kind`.
    let kinds = |k: &str| all.iter().filter(|m| m["kind"] == k).count();
    assert_eq!(
        kinds("holdout"),
        4,
        "3 methods and the uniform merge at step 4"
    );
    assert_eq!(kinds("diagnostics"), 2, "checkpoints at steps 2 and 4");
    let metrics: Vec<&&Value> = all.iter().filter(|m| m.get("kind").is_none()).collect();
    let steps: Vec<u64> = metrics
        .iter()
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4]);
    assert!(
        metrics
            .iter()
            .all(|m| m["loss"].is_number() && m["method"].is_string())
    );
    assert!(ev.iter().any(|(k, v)| k == "progress" && v["total"] == 4));
    let last = &ev.last().unwrap().1;
    assert_eq!(last["status"], "done", "{last}");
    let (_, v) = json(r, get(&format!("/api/jobs/{id}"))).await;
    assert_eq!(v["status"], "done");
    assert_eq!(v["result"]["steps"], 4);
    assert_eq!(v["progress"]["done"], 4);
    // The finished run is a model with its variants.
    let (_, v) = json(r, get("/api/models")).await;
    let m = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id.as_str())
        .cloned()
        .expect("new model");
    assert_eq!(m["kind"], "hyperat");
    assert_eq!(m["name"], "tune · 3 methods · 4 steps");
    assert_eq!(m["variants"].as_array().unwrap().len(), 5);
    // Renaming names the job and its model, on disk too; bad names are refused.
    let rename = |name: Value| {
        let req = Request::patch(format!("/api/jobs/{id}"))
            .header("content-type", "application/json")
            .body(Body::from(json!({ "name": name }).to_string()))
            .unwrap();
        json(r, req)
    };
    let (st, v) = rename(json!("Monday's demo")).await;
    assert_eq!(
        (st, &v["spec"]["name"]),
        (StatusCode::OK, &json!("Monday's demo")),
        "{v}"
    );
    let (_, v) = json(r, get(&format!("/api/models/{id}"))).await;
    assert_eq!(v["name"], "Monday's demo");
    let on_disk = std::fs::read_to_string(
        s.state
            .config
            .data_dir
            .join("runs")
            .join(&id)
            .join("job.json"),
    )
    .unwrap();
    assert!(on_disk.contains("Monday's demo"), "{on_disk}");
    for bad in [json!("x".repeat(81)), json!("two\nlines"), json!(3)] {
        let (st, v) = rename(bad.clone()).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {v}");
    }
    let (st, _) = json(
        r,
        Request::patch("/api/jobs/job-0-0")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"name": "x"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = rename(Value::Null).await;
    assert_eq!((st, &v["spec"]["name"]), (StatusCode::OK, &Value::Null));
    let (st, _) = json(
        r,
        post_form(
            "/api/predict",
            multipart(
                &[("model", &id), ("variant", "method:mart")],
                Some(&png(28, 28, 9)),
            ),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    // A late subscriber still gets the whole curve, then the end.
    let (_, body) = send(r, get(&format!("/api/jobs/{id}/events"))).await;
    let ev = events(&body);
    assert_eq!(
        ev.iter().filter(|(k, _)| k == "metrics").count(),
        all.len(),
        "every record, evaluations included"
    );
    assert_eq!(ev.last().unwrap().1["status"], "done");
    // Deleting the finished job removes its record, folder and model.
    let folder = s.state.config.data_dir.join("runs").join(&id);
    assert!(folder.is_dir());
    let req = Request::delete(format!("/api/jobs/{id}"))
        .body(Body::empty())
        .unwrap();
    let (st, v) = json(r, req).await;
    assert_eq!((st, &v["deleted"]), (StatusCode::OK, &json!(true)), "{v}");
    assert!(!folder.exists());
    let (st, _) = json(r, get(&format!("/api/jobs/{id}"))).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, v) = json(r, get("/api/models")).await;
    assert!(
        v["models"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["id"] != id.as_str())
    );
    s.state.jobs.stop();
}

#[tokio::test]
async fn queued_and_running_jobs_cancel() {
    let s = server(None, true);
    let r = &s.router;
    let (_, a) = json(r, post_json("/api/jobs", &tune_spec(100_000), None)).await;
    let (_, b) = json(r, post_json("/api/jobs", &tune_spec(3), None)).await;
    let (a, b) = (
        a["id"].as_str().unwrap().to_string(),
        b["id"].as_str().unwrap().to_string(),
    );
    wait_job(r, &a, 120, |v| {
        v["status"] == "running" && v["progress"]["done"].as_u64() >= Some(1)
    })
    .await;
    let (_, v) = json(r, get(&format!("/api/jobs/{b}"))).await;
    assert_eq!(v["status"], "queued", "one job runs at a time");
    let (_, list) = json(r, get("/api/jobs")).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 2);
    let del = |id: &str| {
        Request::delete(format!("/api/jobs/{id}"))
            .body(Body::empty())
            .unwrap()
    };
    let (st, v) = json(r, del(&b)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["status"], "cancelled");
    let (st, _) = json(r, del(&a)).await;
    assert_eq!(st, StatusCode::OK);
    let v = wait_job(r, &a, 120, |v| v["status"] != "running").await;
    assert_eq!(v["status"], "cancelled");
    let (_, v) = json(r, get("/api/health")).await;
    assert_eq!(v["jobs"]["cancelled"], 2);
    s.state.jobs.stop();
}

#[tokio::test]
async fn a_restarted_server_finishes_the_job_with_nothing_lost() {
    // Enough steps that the runner is still mid-run when it is stopped after step 3
    // (a step of the tiny model takes milliseconds).
    const STEPS: usize = 60;
    let (models, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make_models(models.path());
    let loopback = MockConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 1)));
    let state =
        AppState::<A>::new(config(models.path(), data.path(), None), Default::default()).unwrap();
    let r = app(state.clone()).layer(loopback);
    let (_, job) = json(&r, post_json("/api/jobs", &tune_spec(STEPS), None)).await;
    let id = job["id"].as_str().unwrap().to_string();
    let (_, queued) = json(
        &r,
        post_json(
            "/api/jobs",
            &json!({"kind": "eval", "model": "tiny", "config": {"limit": 16, "attack": "fgsm"}}),
            None,
        ),
    )
    .await;
    let queued = queued["id"].as_str().unwrap().to_string();
    wait_job(&r, &id, 120, |v| v["progress"]["done"].as_u64() >= Some(3)).await;
    // Stop the runner mid-run (as a shutdown does): the job stays `running` on disk.
    state.jobs.stop();
    let on_disk: Value = serde_json::from_slice(
        &std::fs::read(data.path().join("runs").join(&id).join("job.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(on_disk["status"], "running");
    assert!(
        !data
            .path()
            .join("runs")
            .join(&id)
            .join("summary.json")
            .exists()
    );
    drop(r);
    drop(state);

    let state =
        AppState::<A>::new(config(models.path(), data.path(), None), Default::default()).unwrap();
    let r = app(state.clone()).layer(loopback);
    let v = wait_job(&r, &id, 120, |v| {
        v["status"] != "running" && v["status"] != "queued"
    })
    .await;
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(v["attempts"], 2);
    assert_eq!(v["result"]["steps"], STEPS);
    // Every step's record exactly once, in order.
    let text =
        std::fs::read_to_string(data.path().join("runs").join(&id).join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = text
        .lines()
        .filter(|l| !l.contains("\"kind\""))
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, (1..=STEPS as u64).collect::<Vec<_>>());
    // The queued job was kept and runs after it.
    let v = wait_job(&r, &queued, 120, |v| {
        v["status"] == "done" || v["status"] == "failed"
    })
    .await;
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(v["result"]["n"], 16);
    let (_, models_now) = json(&r, get("/api/models")).await;
    assert!(
        models_now["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == id.as_str())
    );
    state.jobs.stop();
}

#[tokio::test]
async fn random_truncated_and_oversized_bodies_get_4xx_only() {
    let s = server(None, true);
    let r = &s.router;
    let mut rng = Rng::new(42);
    let valid = multipart(
        &[("model", "tiny"), ("attack", "fgsm"), ("eps", "0.1")],
        Some(&png(28, 28, 4)),
    );
    let endpoints = ["/api/predict", "/api/attack", "/api/compare", "/api/jobs"];
    for i in 0..200 {
        let uri = endpoints[i % endpoints.len()];
        let body: Vec<u8> = match i % 4 {
            0 => (0..rng.below(4096)).map(|_| rng.below(256) as u8).collect(),
            1 => valid[..rng.below(valid.len())].to_vec(),
            // A well-formed form whose image is random bytes.
            2 => multipart(
                &[("model", "tiny")],
                Some(
                    &(0..1 + rng.below(2048))
                        .map(|_| rng.below(256) as u8)
                        .collect::<Vec<_>>(),
                ),
            ),
            _ => vec![b'a'; (10 << 20) + 1 + rng.below(1000)],
        };
        let ct = if i % 3 == 0 {
            "application/json".to_string()
        } else {
            format!("multipart/form-data; boundary={BOUNDARY}")
        };
        let req = Request::post(uri)
            .header("content-type", ct)
            .body(Body::from(body))
            .unwrap();
        let (st, b) = send(r, req).await;
        assert!(
            st.is_client_error(),
            "body {i} to {uri}: {st} {}",
            String::from_utf8_lossy(&b[..b.len().min(200)])
        );
    }
    let (st, v) = json(r, get("/api/health")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    s.state.jobs.stop();
}

/// `serve --devices cpu:0,cpu:1`: a tuning job trains data-parallel over both (the
/// same checkpoint as the run on one device, within float summation order) and its
/// record says so; other jobs run on the first device; a tuning or pretraining batch
/// that does not split over both is refused.
#[tokio::test]
async fn a_server_on_two_devices_tunes_over_both_and_records_them() {
    let (models, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make_models(models.path());
    let devices = JobDevices::<A> {
        devices: vec![Default::default(); 2],
        names: vec!["cpu:0".into(), "cpu:1".into()],
    };
    let state = AppState::on_devices(config(models.path(), data.path(), None), devices).unwrap();
    let loopback = MockConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 1)));
    let r = app(state.clone()).layer(loopback);
    // A tuning or pretraining batch that does not split over the two devices is
    // refused at submission.
    let mut odd = tiny_request(3);
    odd.batch_size = 7;
    for (spec, message) in [
        (
            json!({"kind": "tune", "model": "tiny", "config": odd}),
            "a batch of 7 images does not split evenly over 2 devices",
        ),
        (
            json!({"kind": "pretrain", "config": {"batch_size": 9}}),
            "a batch of 9 images does not split evenly over 2 devices",
        ),
    ] {
        let (status, body) = json(&r, post_json("/api/jobs", &spec, None)).await;
        assert_eq!(status, 422, "{body}");
        assert!(body.to_string().contains(message), "{body}");
    }
    // PGD-AT and MART: their steps are reproducible across batch splits to 1e-5.
    let mut req = tiny_request(3);
    req.methods = "pgd-at,mart".into();
    let spec = json!({"kind": "tune", "model": "tiny", "config": req});
    let (_, job) = json(&r, post_json("/api/jobs", &spec, None)).await;
    let id = job["id"].as_str().unwrap().to_string();
    let done = wait_job(&r, &id, 120, |v| v["status"] == "done").await;
    assert_eq!(done["devices"], json!(["cpu:0", "cpu:1"]));
    let eval = json!({"kind": "eval", "model": "tiny", "config": {"limit": 8, "attack": "none"}});
    let (_, job) = json(&r, post_json("/api/jobs", &eval, None)).await;
    let eval_id = job["id"].as_str().unwrap().to_string();
    let done = wait_job(&r, &eval_id, 120, |v| v["status"] == "done").await;
    assert_eq!(done["devices"], json!(["cpu:0"]));
    state.jobs.stop();

    // The same run on one device.
    let one = tempfile::tempdir().unwrap();
    let run = req
        .create_run(one.path(), &models.path().join("tiny/backbone"))
        .unwrap();
    let data_one = hyperat::tune::RunData::load(&run).unwrap();
    let dev = Default::default();
    let (train, holdout) = (&data_one.train, data_one.holdout.as_ref());
    hyperat::tune::run::<A>(
        one.path(),
        train,
        holdout,
        &dev,
        &mut hyperat::progress::Silent,
        None,
    )
    .unwrap();
    let read = |d: &std::path::Path| {
        let bytes = std::fs::read(d.join("checkpoint.safetensors")).unwrap();
        hyperat::host_tensor::read_safetensors(&bytes).unwrap()
    };
    let (a, b) = (read(one.path()), read(&data.path().join("runs").join(&id)));
    let (mut diff, mut norm) = (0f64, 0f64);
    for (k, x) in a.iter().filter(|(k, _)| !k.starts_with("opt.")) {
        for (p, q) in x.data.iter().zip(&b[k].data) {
            diff += f64::from(p - q).powi(2);
            norm += f64::from(*p).powi(2);
        }
    }
    assert!((diff / norm).sqrt() <= 1e-5, "{}", (diff / norm).sqrt());
}
