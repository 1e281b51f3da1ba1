//! The `hyperat` binary end to end: the command forms other checks rely on.

use std::path::{Path, PathBuf};
use std::process::Command;

fn hyperat() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hyperat"))
}

fn fixtures() -> PathBuf {
    // Relative to the package root, where cargo runs tests: `env!("CARGO_MANIFEST_DIR")`
    // would name the clone that compiled the test, which a shared target dir reuses.
    Path::new("../tests/fixtures/timm")
        .canonicalize()
        .expect("the timm fixtures")
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed:\n{stderr}");
    stderr
}

#[test]
fn logits_reproduce_the_timm_fixture() {
    let dir = fixtures().join("vit_small_p4_32_c3");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("logits.f32");
    run_ok(
        hyperat()
            .args(["logits", "--model"])
            .arg(&dir)
            .arg("--inputs")
            .arg(dir.join("inputs.f32"))
            .arg("--out")
            .arg(&out),
    );
    let read = |p: &Path| -> Vec<f32> {
        std::fs::read(p)
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let (got, want) = (read(&out), read(&dir.join("logits.f32")));
    assert_eq!(got.len(), want.len());
    let max_ref = want.iter().fold(0f32, |a, v| a.max(v.abs()));
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-5 * max_ref, "{g} vs {w}");
    }
}

#[test]
fn logits_refuse_inputs_of_the_wrong_size() {
    let dir = fixtures().join("vit_tiny_p4_28_c1");
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.f32");
    std::fs::write(&bad, vec![0u8; 4 * 100]).unwrap();
    let out = hyperat()
        .args(["logits", "--model"])
        .arg(&dir)
        .arg("--inputs")
        .arg(&bad)
        .arg("--out")
        .arg(tmp.path().join("o"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a whole number of [1, 28, 28] images"),
        "{err}"
    );
    assert!(!tmp.path().join("o").exists());
}

#[test]
fn unknown_device_and_missing_model_are_clear_errors() {
    let out = hyperat()
        .args(["--device", "tpu", "bench"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown device `tpu`"));
    let out = hyperat()
        .args([
            "logits",
            "--model",
            "/nonexistent",
            "--inputs",
            "x",
            "--out",
            "y",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/config.json"));
}

/// Pretrain a few steps on Fashion-MNIST (data-parallel on two CPU peers), then
/// evaluate clean / FGSM / PGD and check the report's contract. Needs Debian's `dataset-fashion-mnist` (installed by the
/// test script) or `HYPERAT_DATA`.
#[test]
fn pretrain_then_eval_on_fashion_mnist() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    run_ok(
        hyperat()
            .args([
                "pretrain",
                "--preset",
                "vit-tiny-fmnist",
                "--dataset",
                "fashion-mnist",
                "--epochs",
                "1",
                "--max-steps",
                "4",
                "--batch-size",
                "32",
                "--eval-limit",
                "64",
                "--train-limit",
                "512",
                "--devices",
                "cpu:0,cpu:1",
            ])
            .arg("--out")
            .arg(&model),
    );
    for f in [
        "config.json",
        "model.safetensors",
        "metrics.jsonl",
        "train.json",
    ] {
        assert!(model.join(f).is_file(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(model.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.lines().any(|l| l.contains("\"kind\":\"eval\"")),
        "{metrics}"
    );
    let cfg = std::fs::read_to_string(model.join("config.json")).unwrap();
    assert!(cfg.contains("Ankle boot"), "label names recorded");

    let mut reports = vec![];
    for attack in ["none", "fgsm", "pgd"] {
        let json = tmp.path().join(format!("{attack}.json"));
        run_ok(
            hyperat()
                .args([
                    "eval",
                    "--dataset",
                    "fashion-mnist",
                    "--split",
                    "test",
                    "--limit",
                    "40",
                    "--batch-size",
                    "16",
                    "--attack",
                    attack,
                    "--eps",
                    "8/255",
                    "--steps",
                    "3",
                    "--restarts",
                    "1",
                    "--seed",
                    "1",
                ])
                .arg("--model")
                .arg(&model)
                .arg("--json")
                .arg(&json),
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["n"], 40);
        assert_eq!(v["clean_pred"].as_array().unwrap().len(), 40);
        assert!(v["seconds"].as_f64().unwrap() > 0.0);
        assert_eq!(v["attack"]["name"], attack);
        if attack == "none" {
            assert!(v["robust_acc"].is_null());
        } else {
            assert!((v["attack"]["eps"].as_f64().unwrap() - 8.0 / 255.0).abs() < 1e-6);
            assert_eq!(v["adv_pred"].as_array().unwrap().len(), 40);
            assert!(v["robust_acc"].as_f64().unwrap() <= v["clean_acc"].as_f64().unwrap());
            assert!(v["max_linf"].as_f64().unwrap() <= 8.0 / 255.0 + 1e-6);
        }
        reports.push(v);
    }
    // Clean predictions do not depend on the attack.
    assert_eq!(reports[0]["clean_pred"], reports[1]["clean_pred"]);
    assert_eq!(reports[0]["clean_pred"], reports[2]["clean_pred"]);
}

/// docs/cli.md's HyperAT path on Fashion-MNIST, at toy size: pretrain → tune → merge
/// (uniform, adaptive) → export → eval, plus a baseline and the report table.
#[test]
fn tune_merge_export_eval_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |s: &str| tmp.path().join(s);
    run_ok(
        hyperat()
            .args([
                "pretrain",
                "--preset",
                "vit-tiny-fmnist",
                "--epochs",
                "1",
                "--max-steps",
                "2",
                "--batch-size",
                "16",
                "--eval-limit",
                "0",
                "--train-limit",
                "64",
            ])
            .arg("--out")
            .arg(p("backbone")),
    );
    let tune = |kind: &str, methods: &str, dir: &str| {
        run_ok(
            hyperat()
                .args([
                    "tune",
                    "--dataset",
                    "fashion-mnist",
                    "--kind",
                    kind,
                    "--methods",
                    methods,
                    "--steps",
                    "3",
                    "--batch-size",
                    "8",
                    "--eps",
                    "0.1",
                    "--attack-steps",
                    "2",
                    "--holdout",
                    "32",
                    "--train-limit",
                    "64",
                    "--checkpoint-every",
                    "2",
                ])
                .arg("--backbone")
                .arg(p("backbone"))
                .arg("--out")
                .arg(p(dir)),
        );
    };
    tune("hyperat", "pgd-at,trades,mart", "run");
    tune("lora-at", "pgd-at", "lora");
    let run = p("run");
    assert!(run.join("summary.json").is_file());
    // The delta-similarity table of the HyperAT run; a baseline has nothing to compare.
    let out = hyperat()
        .args(["report", "--deltas"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("| block | target | cos pgd-at/trades |"),
        "{table}"
    );
    assert_eq!(
        table.matches("| qkv |").count(),
        4,
        "one row per block: {table}"
    );
    let out = hyperat()
        .args(["report", "--deltas"])
        .arg(p("lora"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to compare"));
    run_ok(
        hyperat()
            .args(["merge", "--strategy", "uniform", "--run"])
            .arg(&run),
    );
    let said = run_ok(
        hyperat()
            .args([
                "merge",
                "--strategy",
                "adaptive",
                "--merge-steps",
                "2",
                "--batch-size",
                "8",
                "--attack-steps",
                "1",
                "--check-images",
                "8",
                "--run",
            ])
            .arg(&run),
    );
    assert!(
        said.contains("held-out check on 8 images"),
        "the adaptive merge scores its weights against uniform:\n{said}"
    );
    let merges: Vec<_> = std::fs::read_dir(run.join("merges")).unwrap().collect();
    assert_eq!(merges.len(), 2);
    run_ok(
        hyperat()
            .args(["export", "--variant", "merged:adaptive", "--run"])
            .arg(&run)
            .arg("--out")
            .arg(p("export")),
    );
    // The export is a plain timm checkpoint: `logits` and `eval` load it.
    let inputs = p("x.f32");
    std::fs::write(&inputs, vec![0u8; 4 * 784 * 2]).unwrap();
    run_ok(
        hyperat()
            .args(["logits", "--model"])
            .arg(p("export"))
            .arg("--inputs")
            .arg(&inputs)
            .arg("--out")
            .arg(p("y.f32")),
    );
    assert_eq!(std::fs::metadata(p("y.f32")).unwrap().len(), 2 * 10 * 4);
    for model in [
        p("export").display().to_string(),
        format!("{}#method:trades", run.display()),
    ] {
        let json = p("e.json");
        run_ok(
            hyperat()
                .args([
                    "eval", "--limit", "16", "--attack", "pgd", "--eps", "0.1", "--steps", "2",
                    "--model", &model,
                ])
                .arg("--json")
                .arg(&json),
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["n"], 16);
    }
    // The hold-out split: the last N training images, for choosing settings off the test set.
    let json = p("h.json");
    run_ok(
        hyperat()
            .args(["eval", "--split", "holdout", "--holdout", "12", "--model"])
            .arg(p("export"))
            .arg("--json")
            .arg(&json),
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        (v["n"].as_u64(), v["split"].as_str()),
        (Some(12), Some("holdout"))
    );
    let out = hyperat()
        .args(["eval", "--split", "holdout", "--holdout", "0", "--model"])
        .arg(p("export"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a hold-out of at least 1 image"));
    // An unknown variant or a merge of a baseline run is a clear error.
    let out = hyperat()
        .args(["export", "--variant", "merged:nope", "--run"])
        .arg(&run)
        .arg("--out")
        .arg(p("x"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = hyperat()
        .args(["merge", "--run"])
        .arg(p("lora"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a HyperAT run"));
    // The report table; and the same report in two shard files merged, and over two
    // devices in one process.
    let md = p("r.md");
    let report = |extra: &[&str], json: &Path| {
        let mut cmd = hyperat();
        cmd.args([
            "report",
            "--limit",
            "16",
            "--eps",
            "0.1",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--models",
        ])
        .arg(format!(
            "HyperAT+={}#merged:uniform,LoRA-AT={}#tuned",
            run.display(),
            p("lora").display()
        ))
        .args(extra)
        .arg("--json")
        .arg(json);
        cmd
    };
    run_ok(report(&[], &p("whole.json")).arg("--md").arg(&md));
    let table = std::fs::read_to_string(&md).unwrap();
    assert!(
        table.contains("| HyperAT+ |") && table.contains("| LoRA-AT |"),
        "{table}"
    );
    for k in 0..2 {
        run_ok(&mut report(
            &["--shard", &format!("{k}/2")],
            &p(&format!("r{k}.json")),
        ));
    }
    let files = format!("{},{}", p("r1.json").display(), p("r0.json").display());
    run_ok(
        hyperat()
            .args(["report", "--merge", &files, "--json"])
            .arg(p("merged.json")),
    );
    run_ok(&mut report(
        &["--devices", "cpu:0,cpu:1"],
        &p("devices.json"),
    ));
    let read = |p: &Path| {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        for row in v["rows"].as_array_mut().unwrap() {
            row["eval_seconds"] = serde_json::Value::Null;
        }
        v
    };
    let whole = read(&p("whole.json"));
    assert_eq!(whole["rows"].as_array().unwrap().len(), 2);
    assert_eq!(read(&p("merged.json")), whole);
    assert_eq!(read(&p("devices.json")), whole);
}

/// `eval --shard K/N` in two processes at once, then `eval --merge`, writes the JSON of
/// one pass: the same per-sample predictions under standard AutoAttack (its random
/// restarts and Square's queries included), the same accuracies and checks; so does
/// `eval --devices` over two devices in one process.
#[test]
fn sharded_autoattack_in_two_processes_merges_into_one_pass() {
    let model = fixtures().join("vit_tiny_p4_28_c1");
    let tmp = tempfile::tempdir().unwrap();
    let eval = |extra: &[&str], json: &Path| {
        let mut cmd = hyperat();
        cmd.args(["eval", "--dataset", "fashion-mnist", "--limit", "12"])
            .args([
                "--batch-size",
                "4",
                "--attack",
                "autoattack",
                "--eps",
                "0.1",
            ])
            .arg("--model")
            .arg(&model)
            .args(extra)
            .arg("--json")
            .arg(json);
        cmd
    };
    let whole = tmp.path().join("whole.json");
    run_ok(&mut eval(&[], &whole));
    let shard = |k: usize| tmp.path().join(format!("shard{k}.json"));
    let running: Vec<_> = (0..2)
        .map(|k| {
            eval(&["--shard", &format!("{k}/2")], &shard(k))
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for p in running {
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let merged = tmp.path().join("merged.json");
    let files = format!("{},{}", shard(1).display(), shard(0).display());
    run_ok(
        hyperat()
            .args(["eval", "--merge", &files, "--json"])
            .arg(&merged),
    );
    let read = |p: &Path| {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        v["seconds"] = serde_json::Value::Null;
        v
    };
    let (one, two) = (read(&whole), read(&merged));
    assert_eq!(one["n"], 12);
    assert_eq!(
        one["components"].as_array().unwrap().len(),
        4,
        "standard AutoAttack"
    );
    assert_eq!(two, one);
    // Two devices in one process: one shard each, merged; only `device` differs.
    let both = tmp.path().join("both.json");
    run_ok(&mut eval(&["--devices", "cpu:0,cpu:1"], &both));
    let mut both = read(&both);
    assert_eq!(both["device"], "cpu:0,cpu:1");
    both["device"] = one["device"].clone();
    assert_eq!(both, one);
    // A shard file alone is not an evaluation.
    let bad = hyperat()
        .args(["eval", "--merge"])
        .arg(shard(0))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected shards"));
}
