//! One behaviour per use case: the CLI and the job API, given the same request, give the
//! same result (the same defaults, the same per-image predictions, the same table). Also
//! the pretrain and report job paths, which no other test takes.

mod common;

use std::path::Path;
use std::process::Command;

use axum::http::StatusCode;
use common::*;
use serde_json::{Value, json};

/// These tests compare runs that draw from burn's process-wide RNG (pretraining's
/// initial weights): one at a time, so no draws of another test come in between.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn hyperat(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_hyperat"))
        .args(args)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "hyperat {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("written")).expect("json")
}

/// Queues `spec` as the admin-free loopback caller and waits for it to finish.
async fn run_job(s: &Server, spec: Value) -> (String, Value) {
    let (st, job) = json(&s.router, post_json("/api/jobs", &spec, None)).await;
    assert_eq!(st, StatusCode::CREATED, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let done = wait_job(&s.router, &id, 600, |v| {
        matches!(v["status"].as_str(), Some("done" | "failed" | "cancelled"))
    })
    .await;
    assert_eq!(done["status"], "done", "{done}");
    (id, done)
}

fn job_dir(s: &Server, id: &str) -> std::path::PathBuf {
    s.state.config.data_dir.join("runs").join(id)
}

#[tokio::test(flavor = "multi_thread")]
async fn eval_job_and_cli_agree_with_the_same_defaults() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = server(None, true);
    let models = &s.state.config.models_dir;
    // Only what a caller must say: how many images, and a short attack to keep it quick.
    let (id, job) = run_job(
        &s,
        json!({"kind": "eval", "model": "tiny", "variant": "merged:uniform",
               "config": {"limit": 24, "steps": 2, "batch_size": 8}}),
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let cli_json = tmp.path().join("eval.json");
    let spec = format!("{}#merged:uniform", models.join("tiny/hyperat").display());
    hyperat(&[
        "eval",
        "--model",
        &spec,
        "--limit",
        "24",
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--json",
        cli_json.to_str().unwrap(),
    ]);
    let cli = read_json(&cli_json);
    let served = read_json(&job_dir(&s, &id).join("eval.json"));
    // The same request: every default (attack, eps, split, seed, …) the same.
    assert_eq!(cli["request"], served["request"]);
    assert_eq!(cli["request"]["attack"], "pgd");
    // Both read the model's dataset, at its standard budget.
    assert_eq!(
        (&cli["dataset"], &served["dataset"]),
        (&json!("fashion-mnist"), &json!("fashion-mnist"))
    );
    assert!((cli["attack"]["eps"].as_f64().unwrap() - 0.1).abs() < 1e-6);
    assert_eq!(cli["attack"], served["attack"]);
    // And the same measurements, image by image.
    for k in [
        "n",
        "labels",
        "clean_pred",
        "adv_pred",
        "clean_acc",
        "robust_acc",
    ] {
        assert_eq!(cli[k], served[k], "{k}");
    }
    assert_eq!(job["result"]["robust_acc"], cli["robust_acc"]);
    assert_eq!(job["result"]["n"], 24);
    s.state.jobs.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn report_job_and_cli_agree_with_the_same_defaults() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = server(None, true);
    let run = s.state.config.models_dir.join("tiny/hyperat");
    let (id, job) = run_job(
        &s,
        json!({"kind": "report", "config": {
            "rows": [{"model": "tiny", "variant": "base"},
                     {"name": "ours", "model": "tiny", "variant": "merged:uniform"}],
            "limit": 16, "steps": 2, "batch_size": 8}}),
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let cli_json = tmp.path().join("report.json");
    let models = format!("tiny#base={0}#base,ours={0}#merged:uniform", run.display());
    hyperat(&[
        "report",
        "--models",
        &models,
        "--limit",
        "16",
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--json",
        cli_json.to_str().unwrap(),
    ]);
    let cli = read_json(&cli_json);
    let served = read_json(&job_dir(&s, &id).join("report.json"));
    assert_eq!(job["result"]["rows"], served["rows"]);
    // The same threat model from the same defaults (eps: Fashion-MNIST's 0.1, step eps/4).
    assert_eq!(cli["config"], served["config"]);
    assert!((cli["config"]["eps"].as_f64().unwrap() - 0.1).abs() < 1e-6);
    assert!((cli["config"]["alpha"].as_f64().unwrap() - 0.025).abs() < 1e-6);
    let (a, b) = (
        cli["rows"].as_array().unwrap(),
        served["rows"].as_array().unwrap(),
    );
    assert_eq!(a.len(), 2);
    assert_eq!(b.len(), 2);
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x["name"], y["name"]);
        for k in ["n", "clean_acc", "pgd_acc", "cw_acc", "pgd_robust_flags"] {
            assert_eq!(x[k], y[k], "{} {k}", x["name"]);
        }
    }
    assert_eq!(b[1]["name"], "ours");
    let md = std::fs::read_to_string(job_dir(&s, &id).join("report.md")).unwrap();
    assert!(md.contains("ours"), "{md}");
    s.state.jobs.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn pretrain_job_and_cli_agree_with_the_same_defaults() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = server(None, true);
    let settings = json!({"epochs": 1, "max_steps": 2, "batch_size": 16, "train_limit": 64,
                          "eval_limit": 32});
    let (id, job) = run_job(
        &s,
        json!({"kind": "pretrain", "name": "small", "config": settings}),
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("model");
    hyperat(&[
        "pretrain",
        "--preset",
        "vit-tiny-fmnist",
        "--epochs",
        "1",
        "--max-steps",
        "2",
        "--batch-size",
        "16",
        "--train-limit",
        "64",
        "--eval-limit",
        "32",
        "--out",
        out.to_str().unwrap(),
    ]);
    let cli = read_json(&out.join("train.json"));
    let served = read_json(&job_dir(&s, &id).join("model/train.json"));
    assert_eq!(cli["request"], served["request"]);
    assert_eq!(cli["config"], served["config"]);
    assert_eq!(cli["summary"]["steps"], 2);
    assert_eq!(cli["summary"]["steps"], served["summary"]["steps"]);
    assert_eq!(cli["summary"]["eval_split"], "holdout");
    let (x, y) = (
        cli["summary"]["eval_acc"].as_f64().unwrap(),
        served["summary"]["eval_acc"].as_f64().unwrap(),
    );
    assert!((x - y).abs() < 1e-9, "eval accuracy {x} vs {y}");
    assert_eq!(job["result"]["steps"], 2);
    // The finished backbone is served under the job's name.
    let (_, m) = json(&s.router, get(&format!("/api/models/{id}"))).await;
    assert_eq!(
        (&m["name"], &m["kind"]),
        (&json!("small"), &json!("checkpoint")),
        "{m}"
    );
    s.state.jobs.stop();
}

/// Reads a safetensors file's tensors.
fn tensors(path: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    hyperat::host_tensor::read_safetensors(&std::fs::read(path).expect("written"))
        .expect("safetensors")
        .into_iter()
        .map(|(k, v)| (k, v.data.clone()))
        .collect()
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(b) {
        assert!(
            (x - y).abs() <= 1e-5 * (1.0 + x.abs()),
            "{what}: {x} vs {y}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tune_job_and_cli_agree_with_the_same_defaults() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = server(None, true);
    let backbone = s.state.config.models_dir.join("tiny/hyperat/backbone");
    // What a caller must say to keep it short; everything else is a default.
    let (id, job) = run_job(
        &s,
        json!({"kind": "tune", "model": "tiny", "config": {"steps": 2, "batch_size": 8,
               "attack_steps": 1, "rank": 2, "train_limit": 64, "eval_every": 0}}),
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    hyperat(&[
        "tune",
        "--backbone",
        backbone.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--attack-steps",
        "1",
        "--rank",
        "2",
        "--train-limit",
        "64",
        "--eval-every",
        "0",
    ]);
    let served = job_dir(&s, &id);
    let (cli, job_run) = (
        read_json(&out.join("run.json")),
        read_json(&served.join("run.json")),
    );
    // The same run: every default (kind, methods, eps, lr, hold-out, seed, …) the same.
    assert_eq!(cli["config"], job_run["config"]);
    for k in ["dataset", "holdout", "train_limit"] {
        assert_eq!(cli[k], job_run[k], "{k}");
    }
    assert_eq!(cli["config"]["kind"], "hyperat");
    // The same steps: method, loss and accuracies step by step, and the same weights.
    let steps = |dir: &Path| -> Vec<Value> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["kind"].is_null())
            .collect()
    };
    let (a, b) = (steps(&out), steps(&served));
    assert_eq!(a.len(), 2);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x["step"], &x["method"]), (&y["step"], &y["method"]));
        let (lx, ly) = (x["loss"].as_f64().unwrap(), y["loss"].as_f64().unwrap());
        assert!(
            (lx - ly).abs() <= 1e-5 * (1.0 + lx.abs()),
            "loss {lx} vs {ly}"
        );
    }
    let (ta, tb) = (
        tensors(&out.join("checkpoint.safetensors")),
        tensors(&served.join("checkpoint.safetensors")),
    );
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (k, v) in &ta {
        assert_close(v, &tb[k], k);
    }
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(job["result"]["steps"], summary["steps"]);
    assert_eq!(
        job["result"]["trainable_params"],
        summary["trainable_params"]
    );
    s.state.jobs.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn merge_job_and_cli_agree_and_the_job_leaves_its_source_alone() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = server(None, true);
    let run = s.state.config.models_dir.join("tiny/hyperat");
    let (id, job) = run_job(
        &s,
        json!({"kind": "merge", "model": "tiny", "name": "ties merge",
               "config": {"strategy": "ties"}}),
    )
    .await;
    assert!(
        !run.join("merges").exists(),
        "a merge job writes into its own folder, not the served run's"
    );
    assert_eq!(job["result"]["name"], "ties");
    assert_eq!(job["result"]["source"], "tiny");
    assert_eq!(job["result"]["path"], "model");
    // The CLI merges a copy of the run in place, then exports the merged variant.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("hyperat");
    copy_dir(&run, &copy);
    hyperat(&[
        "merge",
        "--run",
        copy.to_str().unwrap(),
        "--strategy",
        "ties",
    ]);
    let exported = tmp.path().join("exported");
    hyperat(&[
        "export",
        "--run",
        copy.to_str().unwrap(),
        "--variant",
        "merged:ties",
        "--out",
        exported.to_str().unwrap(),
    ]);
    let (cli, served) = (
        tensors(&exported.join("model.safetensors")),
        tensors(&job_dir(&s, &id).join("model/model.safetensors")),
    );
    assert_eq!(
        cli.keys().collect::<Vec<_>>(),
        served.keys().collect::<Vec<_>>()
    );
    for (k, v) in &cli {
        assert_close(v, &served[k], k);
    }
    // The merged model is served under the job's name.
    let (_, m) = json(&s.router, get(&format!("/api/models/{id}"))).await;
    assert_eq!(
        (&m["name"], &m["kind"]),
        (&json!("ties merge"), &json!("checkpoint")),
        "{m}"
    );
    // A model with no per-method LoRAs is refused before anything is queued.
    let (st, e) = json(
        &s.router,
        post_json(
            "/api/jobs",
            &json!({"kind": "merge", "model": "plain"}),
            None,
        ),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(
        e["detail"].as_str().unwrap().contains("not a HyperAT run"),
        "{e}"
    );
    s.state.jobs.stop();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
