//! Shared helpers of the API tests: a tiny HyperAT model folder, requests through
//! the router without a socket, multipart bodies.

#![allow(dead_code)]

mod png;
#[allow(unused_imports)]
pub use png::declared_png;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyperat::backend::{Cpu, CpuAutodiff};
use hyperat::checkpoint::Checkpoint;
use hyperat::data::Dataset;
use hyperat::prelude::*;
use hyperat::progress::Silent;
use hyperat::rng::Rng;
use hyperat::tune::TuneRequest;
use hyperat::{Vit, VitConfig};
use hyperat_server::serve::{AppState, Limits, ServeConfig, app};
use serde_json::Value;
use tower::ServiceExt;

pub type A = CpuAutodiff;

pub fn tiny_cfg() -> VitConfig {
    let mut c = VitConfig::vit_tiny_fmnist();
    c.embed_dim = 16;
    c.depth = 2;
    c.num_heads = 2;
    c.patch_size = 7;
    c
}

pub fn synthetic(n: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    Dataset {
        name: "synthetic".into(),
        shape: [1, 28, 28],
        pixels: (0..n * 784)
            .map(|_| (rng.uniform() * 255.0) as u8)
            .collect(),
        labels: (0..n).map(|_| rng.below(10) as u32).collect(),
        classes: (0..10).map(|i| format!("c{i}")).collect(),
    }
}

/// A tiny tuning request (PGD-1 inner attack, batch 8).
pub fn tiny_request(steps: usize) -> TuneRequest {
    TuneRequest {
        steps,
        batch_size: 8,
        eps: Some(0.1),
        attack_steps: 1,
        rank: 2,
        checkpoint_every: 2,
        holdout: 100,
        train_limit: Some(64),
        ..Default::default()
    }
}

/// `models/tiny/` in the shipped layout: `backbone/` and a 2-step HyperAT run in `hyperat/`.
pub fn make_models(root: &Path) {
    let cfg = tiny_cfg();
    // `Vit::init` draws from burn's process-wide RNG: seed and draw without another
    // test's draws in between, so every test gets the same backbone.
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let ck = {
        let _one = INIT.lock().unwrap_or_else(|e| e.into_inner());
        <Cpu as Backend>::seed(&Default::default(), 3);
        Checkpoint::from_vit(&cfg, &Vit::<Cpu>::init(&cfg, &Default::default()))
    };
    let dir = root.join("tiny");
    ck.save(dir.join("backbone")).unwrap();
    let run_dir = dir.join("hyperat");
    let run = tiny_request(2)
        .create_run(&run_dir, &dir.join("backbone"))
        .unwrap();
    assert_eq!(run.info().unwrap().config.methods.len(), 3);
    hyperat::tune::run::<A>(
        run.path(),
        &synthetic(32, 1),
        None,
        &Default::default(),
        &mut Silent,
        None,
    )
    .expect("finished");
    // Its evaluation, as `hyperat report --json` writes it (rows named by variant; a
    // row of no variant is left out).
    let row = |name: &str, clean: f64, pgd: f64| {
        serde_json::json!({"name": name, "spec": name, "n": 100, "clean_acc": clean, "mean_confidence": 0.5,
            "pgd_acc": pgd, "cw_acc": pgd, "trainable_params": null, "train_seconds": null,
            "peak_mem_mib": null, "eval_seconds": 1.0})
    };
    let report = serde_json::json!({
        "config": {"eps": 0.1, "alpha": 0.025, "steps": 20, "batch_size": 100, "seed": 0},
        "rows": [row("merged:uniform", 0.8, 0.6), row("base", 0.9, 0.02), row("other", 0.1, 0.1)],
    });
    std::fs::write(dir.join("evaluation.json"), report.to_string()).unwrap();
    // A plain checkpoint folder too, with an evaluation that is not one.
    ck.save(root.join("plain")).unwrap();
    std::fs::write(root.join("plain/evaluation.json"), "not json").unwrap();
}

pub struct Server {
    pub state: Arc<AppState<A>>,
    pub router: Router,
    pub _dirs: Vec<tempfile::TempDir>,
}

pub fn config(models: &Path, data: &Path, token: Option<&str>) -> ServeConfig {
    ServeConfig {
        models_dir: models.to_path_buf(),
        data_dir: data.to_path_buf(),
        dist_dir: data.join("no-dist"),
        admin_token: token.map(String::from),
        limits: Limits::default(),
        site: Default::default(),
    }
}

/// A server on fresh folders; `loopback`: requests come from 127.0.0.1.
pub fn server(token: Option<&str>, loopback: bool) -> Server {
    server_with(token, loopback, Limits::default())
}

/// [`server`] with other limits.
pub fn server_with(token: Option<&str>, loopback: bool, limits: Limits) -> Server {
    let (models, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make_models(models.path());
    let state = AppState::<A>::new(
        ServeConfig {
            limits,
            ..config(models.path(), data.path(), token)
        },
        Default::default(),
    )
    .unwrap();
    let mut router = app(state.clone());
    if loopback {
        router = router.layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 4000))));
    }
    Server {
        state,
        router,
        _dirs: vec![models, data],
    }
}

pub async fn send(router: &Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, body)
}

pub async fn json(router: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let (s, b) = send(router, req).await;
    let v = serde_json::from_slice(&b)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&b).into()));
    (s, v)
}

pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

pub const BOUNDARY: &str = "hyperat-test-boundary";

/// A multipart body: text fields and an optional `image` file.
pub fn multipart(fields: &[(&str, &str)], image: Option<&[u8]>) -> Vec<u8> {
    let mut b = Vec::new();
    for (k, v) in fields {
        b.extend(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    if let Some(img) = image {
        b.extend(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\nContent-Type: application/octet-stream\r\n\r\n")
                .as_bytes(),
        );
        b.extend(img);
        b.extend(b"\r\n");
    }
    b.extend(format!("--{BOUNDARY}--\r\n").as_bytes());
    b
}

pub fn post_form(uri: &str, body: Vec<u8>) -> Request<Body> {
    Request::post(uri)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(Body::from(body))
        .unwrap()
}

pub fn post_json(uri: &str, v: &Value, token: Option<&str>) -> Request<Body> {
    let mut r = Request::post(uri).header("content-type", "application/json");
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    r.body(Body::from(v.to_string())).unwrap()
}

pub fn png(w: u32, h: u32, v: u8) -> Vec<u8> {
    let img = image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(w, h, |x, y| {
        image::Luma([v.wrapping_add((x * 3 + y * 5) as u8)])
    }));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Waits until the job satisfies `done` (polling its record), up to `secs`.
pub async fn wait_job(
    router: &Router,
    id: &str,
    secs: u64,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let t0 = std::time::Instant::now();
    loop {
        let (s, v) = json(router, get(&format!("/api/jobs/{id}"))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if done(&v) {
            return v;
        }
        assert!(t0.elapsed().as_secs() < secs, "job {id} timed out: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A 4000 × 4000 RGBA PNG (61 MiB decoded, within the 64 MiB limit; a few hundred KB).
pub fn large_png() -> Vec<u8> {
    let img = image::RgbaImage::from_fn(4000, 4000, |x, y| {
        let (bx, by) = (x / 50, y / 50);
        image::Rgba([(bx * 3) as u8, (by * 3) as u8, ((bx + by) * 2) as u8, 200])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgba8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

/// The value of a field of `/proc/{process}/status` (`process`: a pid or `self`), the text
/// after its name, or None where this kernel has no such field.
pub fn proc_status(process: &str, field: &str) -> Option<String> {
    let path = format!("/proc/{process}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let line = status.lines().find(|l| l.starts_with(field))?;
    Some(line[field.len()..].trim().to_string())
}

/// A memory figure of `/proc/{process}/status` (`VmRSS:`, `VmHWM:`), in KiB.
pub fn proc_status_kib(process: &str, field: &str) -> u64 {
    let value = proc_status(process, field)
        .unwrap_or_else(|| panic!("no {field} in /proc/{process}/status"));
    value.trim_end_matches("kB").trim().parse().unwrap()
}
