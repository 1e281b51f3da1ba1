//! The trainer on tiny models: start equal to the backbone, train only what should
//! train, resume to bit-identical weights.

use std::path::Path;
use std::sync::Mutex;

use hyperat::backend::{Cpu, CpuAutodiff};
use hyperat::checkpoint::Checkpoint;
use hyperat::data::Dataset;
use hyperat::defense::DefenseParams;
use hyperat::host_tensor::{TensorMap, read_safetensors};
use hyperat::named_params::{named_tensors, trainable_tensors};
use hyperat::prelude::*;
use hyperat::progress::Silent;
use hyperat::rng::Rng;
use hyperat::tune::diagnostics::run_diagnostics;
use hyperat::tune::{
    RunDir, RunInfo, Trainer, TuneConfig, TuneKind, Tuned, Variant, run, run_parallel,
};
use hyperat::{Vit, VitConfig};

type A = CpuAutodiff;

/// Tests that train take turns: they compare runs bit for bit, and two runs competing
/// for the cores make timing-dependent work (thread counts) differ between them.
static TRAINING: Mutex<()> = Mutex::new(());

fn training() -> std::sync::MutexGuard<'static, ()> {
    TRAINING.lock().unwrap_or_else(|e| e.into_inner())
}

fn tiny_cfg() -> VitConfig {
    let mut c = VitConfig::vit_tiny_fmnist();
    c.embed_dim = 16;
    c.depth = 2;
    c.num_heads = 2;
    c.patch_size = 7;
    c
}

/// The same tiny backbone every time. `Vit::init` draws from burn's process-wide RNG, so
/// seeding and drawing must not interleave with another test's.
fn backbone() -> Checkpoint {
    static INIT: Mutex<()> = Mutex::new(());
    let _one = INIT.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = tiny_cfg();
    <Cpu as Backend>::seed(&Default::default(), 3);
    Checkpoint::from_vit(&cfg, &Vit::<Cpu>::init(&cfg, &Default::default()))
}

fn data(n: usize) -> Dataset {
    let mut rng = Rng::new(5);
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

fn config(kind: TuneKind, methods: &[&str], steps: usize) -> TuneConfig {
    TuneConfig {
        kind,
        methods: methods.iter().map(|s| s.to_string()).collect(),
        defense: DefenseParams {
            eps: 0.1,
            alpha: 0.05,
            steps: 2,
            beta: 6.0,
        },
        steps,
        batch_size: 8,
        warmup: 1,
        checkpoint_every: 2,
        lr: 1e-2,
        ..Default::default()
    }
}

fn start(dir: &Path, cfg: TuneConfig) {
    let info = RunInfo {
        config: cfg,
        dataset: "synthetic".into(),
        backbone_source: "test".into(),
        holdout: 0,
        train_limit: None,
    };
    RunDir::create(dir, &info, &backbone()).unwrap();
}

fn final_model(dir: &Path) -> Tuned<A> {
    let run = RunDir::open(dir).unwrap();
    run.load_model::<A>(&Default::default()).unwrap().2
}

#[test]
fn hyperat_starts_equal_to_the_backbone() {
    let _turn = training();
    let dev = Default::default();
    let ck = backbone();
    let cfg = config(TuneKind::Hyperat, &["pgd-at", "trades", "mart"], 1);
    let model = Tuned::<A>::new(ck.build::<A>(&dev).unwrap(), &ck.config, &cfg, &dev);
    let x = data(4).batch::<A>(&[0, 1, 2, 3], &dev).0;
    let base = model.vit.forward(x.clone()).into_data();
    for m in 0..3 {
        let a = model.adapters(m).unwrap();
        assert_eq!(
            model.logits(x.clone(), Some(&a)).into_data(),
            base,
            "method {m}"
        );
        // The generated A factors are not zero (only B is).
        let f = model.factors(m).unwrap();
        assert!(f.per_target[0].1.clone().abs().sum().into_scalar() > 0.0);
    }
}

#[test]
fn trains_only_the_trainable_side_and_every_part_of_it() {
    let _turn = training();
    for (kind, methods) in [
        (TuneKind::Hyperat, vec!["pgd-at", "trades", "mart"]),
        (TuneKind::LoraAt, vec!["pgd-at"]),
        (TuneKind::FullLoraAt, vec!["trades"]),
        (TuneKind::LinearProbe, vec![]),
        (TuneKind::FullAt, vec!["fgsm-rs"]),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        start(dir, config(kind, &methods, 4));
        let before = final_model(dir);
        let frozen_before: TensorMap = named_tensors(&before)
            .into_iter()
            .filter(|(k, _)| !trainable_tensors(&before).contains_key(k))
            .collect();
        let trainable_before = trainable_tensors(&before);
        let summary =
            run::<A>(dir, &data(32), None, &Default::default(), &mut Silent, None).unwrap();
        assert_eq!(summary.steps, 4);
        let after = final_model(dir);
        let all_after = named_tensors(&after);
        for (k, v) in &frozen_before {
            assert_eq!(&all_after[k], v, "{kind:?}: frozen tensor {k} changed");
        }
        let trainable_after = trainable_tensors(&after);
        assert_eq!(
            trainable_after.keys().collect::<Vec<_>>(),
            trainable_before.keys().collect::<Vec<_>>()
        );
        assert_eq!(
            summary.trainable_params,
            trainable_after
                .values()
                .map(|t| t.data.len())
                .sum::<usize>()
        );
        for (k, v) in &trainable_after {
            assert_ne!(
                v, &trainable_before[k],
                "{kind:?}: trainable tensor {k} never moved"
            );
        }
        // Every trainable tensor received a gradient at every step.
        let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        let steps: Vec<&str> = metrics
            .lines()
            .filter(|l| !l.contains("\"kind\""))
            .collect();
        assert_eq!(steps.len(), 4);
        for line in steps {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(
                v["grad_tensors"].as_u64().unwrap() as usize,
                trainable_before.len(),
                "{kind:?}: {line}"
            );
        }
        match kind {
            TuneKind::FullAt => {
                assert!(trainable_before.contains_key("vit.blocks.0.attn.qkv.weight"))
            }
            TuneKind::LinearProbe => assert_eq!(trainable_before.len(), 2),
            _ => assert!(!trainable_before.contains_key("vit.blocks.0.attn.qkv.weight")),
        }
    }
}

#[test]
fn resume_after_a_kill_reaches_the_same_weights() {
    let _turn = training();
    let cfg = config(TuneKind::Hyperat, &["pgd-at", "trades", "mart"], 5);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    start(a.path(), cfg.clone());
    start(b.path(), cfg);
    let ds = data(24);
    let dev = Default::default();
    run::<A>(a.path(), &ds, None, &dev, &mut Silent, None).unwrap();
    // Interrupted after 3 steps (checkpoint at 3), then resumed in a fresh call.
    assert!(matches!(
        run::<A>(b.path(), &ds, None, &dev, &mut Silent, Some(3)),
        Err(hyperat::Error::Cancelled)
    ));
    // A killed run may have logged past its checkpoint: those records are dropped.
    let mut m = std::fs::OpenOptions::new()
        .append(true)
        .open(b.path().join("metrics.jsonl"))
        .unwrap();
    std::io::Write::write_all(&mut m, b"{\"step\": 4, \"stale\": true}\n").unwrap();
    run::<A>(b.path(), &ds, None, &dev, &mut Silent, None).unwrap();
    let ta =
        read_safetensors(&std::fs::read(a.path().join("checkpoint.safetensors")).unwrap()).unwrap();
    let tb =
        read_safetensors(&std::fs::read(b.path().join("checkpoint.safetensors")).unwrap()).unwrap();
    assert_eq!(ta.len(), tb.len());
    for (k, v) in &ta {
        assert_eq!(v, &tb[k], "{k} differs after resumption");
    }
    // Per-step records (diagnostics records, `kind` set, come at each checkpoint).
    let lines = |d: &Path| {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter(|l| !l.contains("\"kind\""))
            .count()
    };
    assert_eq!(lines(a.path()), 5);
    assert_eq!(lines(b.path()), 5);
}

/// The trainer, stepped by hand: each step counts, logs what it did and adds to the
/// training time; saved and resumed mid-way, it goes on from the same state.
#[test]
fn a_trainer_steps_saves_and_resumes_where_it_stopped() {
    let _turn = training();
    let cfg = config(TuneKind::Hyperat, &["pgd-at", "trades"], 4);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    start(a.path(), cfg.clone());
    start(b.path(), cfg.clone());
    let (ds, dev) = (data(16), Default::default());
    let mut straight = Trainer::<A>::resume(RunDir::open(a.path()).unwrap(), &dev).unwrap();
    let mut records = vec![];
    while !straight.finished() {
        records.push(straight.step(&ds).unwrap());
    }
    assert_eq!(
        records.iter().map(|r| r.step).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert!(records.windows(2).all(|w| w[1].seconds > w[0].seconds));
    for r in &records {
        assert!(cfg.methods.contains(&r.method), "{r:?}");
        assert!(r.loss.is_finite() && r.adv_acc.is_some() && r.grad_tensors > 0);
    }
    straight.save().unwrap();
    let mut first = Trainer::<A>::resume(RunDir::open(b.path()).unwrap(), &dev).unwrap();
    first.step(&ds).unwrap();
    first.step(&ds).unwrap();
    first.save().unwrap();
    let run_b = RunDir::open(b.path()).unwrap();
    assert_eq!(run_b.checkpoint_step().unwrap(), 2);
    let mut resumed = Trainer::<A>::resume(run_b, &dev).unwrap();
    assert_eq!(resumed.steps_taken(), 2);
    let rest = [resumed.step(&ds).unwrap(), resumed.step(&ds).unwrap()];
    assert!(resumed.finished());
    for (r, want) in rest.iter().zip(&records[2..]) {
        assert_eq!(
            (r.step, &r.method, r.loss),
            (want.step, &want.method, want.loss)
        );
    }
    resumed.save().unwrap();
    assert_eq!(
        read_safetensors(&std::fs::read(a.path().join("checkpoint.safetensors")).unwrap()).unwrap(),
        read_safetensors(&std::fs::read(b.path().join("checkpoint.safetensors")).unwrap()).unwrap()
    );
}

/// The run folder answers for its layout: what it offers, which model it stands for,
/// its saved merges and the metrics a resumption keeps.
#[test]
fn a_run_dir_lists_its_variants_merges_and_saved_metrics() {
    let _turn = training();
    let tmp = tempfile::tempdir().unwrap();
    let shipped = tmp.path().join("model");
    let dir = shipped.join("hyperat");
    std::fs::create_dir_all(&dir).unwrap();
    assert!(RunDir::open(&dir).is_err(), "an empty folder is no run");
    start(&dir, config(TuneKind::Hyperat, &["pgd-at", "trades"], 3));
    assert_eq!(RunDir::find(&shipped), Some(RunDir::open(&dir).unwrap()));
    let rd = RunDir::open(&dir).unwrap();
    assert!(!rd.has_checkpoint());
    assert_eq!(rd.checkpoint_step().unwrap(), 0);
    assert_eq!(
        rd.default_variant().unwrap(),
        Variant::Merged("uniform".into())
    );
    run::<A>(
        &dir,
        &data(16),
        None,
        &Default::default(),
        &mut Silent,
        Some(2),
    )
    .unwrap_err();
    assert_eq!(rd.checkpoint_step().unwrap(), 2);
    // Records logged past the checkpoint (a killed run) are not the run's yet.
    let mut m = std::fs::OpenOptions::new()
        .append(true)
        .open(rd.metrics_path())
        .unwrap();
    std::io::Write::write_all(&mut m, b"{\"step\": 3, \"loss\": 1.0}\n").unwrap();
    let saved = rd.saved_metrics();
    assert!(!saved.is_empty());
    assert!(
        saved.iter().all(|r| r["step"].as_u64().unwrap() <= 2),
        "{saved:?}"
    );
    assert!(rd.summary().is_none(), "unfinished");
    let deltas = hyperat::merge::DenseDeltas::new();
    hyperat::variant::save_merge(&rd, "ties", &deltas, Default::default()).unwrap();
    hyperat::variant::save_merge(&rd, "adaptive", &deltas, Default::default()).unwrap();
    assert_eq!(rd.merge_names(), ["adaptive", "ties"]);
    let names: Vec<String> = rd
        .variants()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    assert_eq!(
        names,
        [
            "base",
            "method:pgd-at",
            "method:trades",
            "merged:uniform",
            "merged:adaptive",
            "merged:ties"
        ]
    );
    let tmp2 = tempfile::tempdir().unwrap();
    start(tmp2.path(), config(TuneKind::LoraAt, &["pgd-at"], 2));
    let baseline = RunDir::open(tmp2.path()).unwrap();
    assert_eq!(baseline.default_variant().unwrap(), Variant::Tuned);
    assert_eq!(
        baseline.variants().unwrap(),
        [Variant::Base, Variant::Tuned]
    );
}

/// With a diversity weight, every HyperAT step reports the similarity it penalised; a
/// run without one reports none, and the penalty is refused where there is nothing to
/// keep apart.
#[test]
fn the_diversity_penalty_is_reported_and_refused_without_two_methods() {
    let _turn = training();
    let mut cfg = config(TuneKind::Hyperat, &["pgd-at", "trades"], 3);
    cfg.method_diversity = 1.0;
    let tmp = tempfile::tempdir().unwrap();
    start(tmp.path(), cfg.clone());
    let mut trainer =
        Trainer::<A>::resume(RunDir::open(tmp.path()).unwrap(), &Default::default()).unwrap();
    let ds = data(16);
    let records: Vec<_> = (0..3).map(|_| trainer.step(&ds).unwrap()).collect();
    for r in &records {
        let s = r.delta_similarity.expect("reported");
        assert!((0.0..=1.0 + 1e-6).contains(&s), "{r:?}");
    }
    // B starts at zero: no delta, nothing alike, yet; after a step there is.
    assert_eq!(records[0].delta_similarity, Some(0.0));
    assert!(records[2].delta_similarity.unwrap() > 0.0);
    let plain = tempfile::tempdir().unwrap();
    start(
        plain.path(),
        config(TuneKind::Hyperat, &["pgd-at", "trades"], 3),
    );
    let mut trainer =
        Trainer::<A>::resume(RunDir::open(plain.path()).unwrap(), &Default::default()).unwrap();
    assert_eq!(trainer.step(&ds).unwrap().delta_similarity, None);
    for (kind, methods) in [
        (TuneKind::LoraAt, &["pgd-at"][..]),
        (TuneKind::Hyperat, &["pgd-at"][..]),
    ] {
        let mut c = config(kind, methods, 3);
        c.method_diversity = 1.0;
        assert!(c.validate().is_err(), "{kind:?} {methods:?}");
    }
    cfg.method_diversity = -1.0;
    assert!(cfg.validate().is_err());
}

#[test]
fn refuses_bad_configs() {
    assert!(
        config(TuneKind::LoraAt, &["pgd-at", "trades"], 2)
            .validate()
            .is_err()
    );
    assert!(
        config(TuneKind::LinearProbe, &["pgd-at"], 2)
            .validate()
            .is_err()
    );
    assert!(config(TuneKind::Hyperat, &["nope"], 2).validate().is_err());
    let tmp = tempfile::tempdir().unwrap();
    start(tmp.path(), config(TuneKind::Hyperat, &["pgd-at"], 2));
    let info = RunInfo {
        config: config(TuneKind::Hyperat, &["pgd-at"], 2),
        dataset: "x".into(),
        backbone_source: "y".into(),
        holdout: 0,
        train_limit: None,
    };
    assert!(
        RunDir::create(tmp.path(), &info, &backbone()).is_err(),
        "an existing run is not overwritten"
    );
}

#[test]
fn the_method_warm_up_trains_the_first_method_alone_then_samples() {
    let _turn = training();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut cfg = config(TuneKind::Hyperat, &["pgd-at", "trades", "mart"], 12);
    cfg.method_warmup = 4;
    cfg.lora.rank = 2;
    start(dir, cfg);
    run::<A>(dir, &data(32), None, &Default::default(), &mut Silent, None).unwrap();
    let methods: Vec<String> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains("\"kind\""))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["method"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(methods.len(), 12);
    assert!(methods[..4].iter().all(|m| m == "pgd-at"), "{methods:?}");
    assert!(
        methods[4..].iter().any(|m| m != "pgd-at"),
        "sampling starts after the warm-up: {methods:?}"
    );
}

#[test]
fn refuses_a_method_warm_up_it_cannot_honour() {
    let mut c = config(TuneKind::Hyperat, &["pgd-at", "trades"], 4);
    c.method_warmup = 5;
    assert!(c.validate().is_err(), "longer than the run");
    let mut c = config(TuneKind::LoraAt, &["pgd-at"], 4);
    c.method_warmup = 2;
    assert!(c.validate().is_err(), "baselines train one method");
    let mut c = config(TuneKind::Hyperat, &["pgd-at", "trades"], 4);
    c.method_warmup = 4;
    assert!(c.validate().is_ok());
}

/// Evaluation models have nothing left to train, for every kind of run variant (a run's
/// head and FullLoRA's adapters load trainable; attacks need the input's gradient only).
#[test]
fn run_variants_load_frozen_for_evaluation() {
    let _turn = training();
    let cases: [(TuneKind, &[&str], &str); 4] = [
        (TuneKind::FullAt, &["pgd-at"], "tuned"),
        (TuneKind::FullLoraAt, &["pgd-at"], "tuned"),
        (TuneKind::LoraAt, &["pgd-at"], "tuned"),
        (TuneKind::Hyperat, &["pgd-at", "trades"], "merged:uniform"),
    ];
    for (kind, methods, variant) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        start(dir, config(kind, methods, 2));
        run::<A>(dir, &data(16), None, &Default::default(), &mut Silent, None).unwrap();
        let spec = format!("{}#{variant}", dir.display());
        let model = hyperat::variant::load_spec::<A>(&spec, &Default::default()).unwrap();
        assert_eq!(model.adapters.is_some(), kind == TuneKind::FullLoraAt);
        let tracked = hyperat::named_params::trainable_ids(&model.vit);
        assert!(tracked.is_empty(), "{kind:?}: trainable {tracked:?}");
        for d in model
            .adapters
            .iter()
            .flat_map(|a| &a.blocks)
            .flat_map(|b| b.0.iter().flatten())
        {
            assert!(!d.lora_a.is_require_grad() && !d.lora_b.is_require_grad());
            if let Some((g, b)) = &d.input_norm {
                assert!(!g.is_require_grad() && !b.is_require_grad());
            }
        }
        let x = Tensor::<A, 4>::zeros([2, 1, 28, 28], &Default::default());
        // Gradients with respect to the input still flow (the attacks need them).
        let x = x.require_grad();
        let grads = hyperat::attack::Classifier::logits(&model, x.clone())
            .sum()
            .backward();
        assert!(x.grad(&grads).is_some(), "{kind:?}: no input gradient");
    }
}

/// The diagnostics see method collapse: methods sharing one embedding generate one
/// delta (cosine 1 everywhere); distinct embeddings generate distinct deltas.
#[test]
fn diagnostics_report_cosine_one_when_methods_share_an_embedding() {
    let dev = Default::default();
    let ck = backbone();
    let cfg = config(TuneKind::Hyperat, &["pgd-at", "trades", "mart"], 1);
    let mut model = Tuned::<A>::new(ck.build::<A>(&dev).unwrap(), &ck.config, &cfg, &dev);
    let mut rng = Rng::new(11);
    let hyper = model.hyper.as_mut().unwrap();
    for h in hyper.heads_b.iter_mut() {
        let [i, o] = h.weight.dims();
        h.weight = hyperat::init::normal([i, o], 1.0, &mut rng, &dev);
    }
    let d = run_diagnostics(&model, &cfg.methods).unwrap();
    assert_eq!(d.entries.len(), 2 * 4, "every (block, target)");
    assert_eq!(d.pairs, ["pgd-at/trades", "pgd-at/mart", "trades/mart"]);
    let spread = d.delta_cosine.unwrap();
    assert!(
        spread.max < 0.99,
        "distinct embeddings, distinct deltas: {spread:?}"
    );
    assert!(d.embed_cosine_mean.unwrap() < 0.9);
    assert!(
        d.entries
            .iter()
            .all(|e| e.rel_norm.iter().all(|n| *n > 0.0))
    );

    let hyper = model.hyper.as_mut().unwrap();
    let z0 = hyper.method_embed.val().narrow(0, 0, 1).detach();
    hyper.method_embed = burn::module::Param::from_tensor(z0.repeat_dim(0, 3));
    let d = run_diagnostics(&model, &cfg.methods).unwrap();
    let spread = d.delta_cosine.unwrap();
    assert!((spread.min - 1.0).abs() < 1e-5, "{spread:?}");
    assert!(d.embed_cosine.iter().all(|c| (c - 1.0).abs() < 1e-6));
    assert!((d.cond_cosine_mean.unwrap() - 1.0).abs() < 1e-5);
    let table = d.markdown();
    assert!(
        table.contains("| 0 | qkv | 1.000 | 1.000 | 1.000 |"),
        "{table}"
    );
}

/// A run with a hold-out evaluates each method's LoRA and the uniform merge every
/// `eval_every` steps and at the end, and records diagnostics at each checkpoint; the
/// records reach the progress sink too.
#[test]
fn a_run_records_holdout_evaluations_and_diagnostics() {
    let _turn = training();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut cfg = config(TuneKind::Hyperat, &["pgd-at", "trades"], 5);
    cfg.eval_every = 2;
    cfg.eval_images = 8;
    cfg.lora.rank = 2;
    start(dir, cfg);
    struct Sink(Vec<serde_json::Value>);
    impl hyperat::progress::Progress for Sink {
        fn update(&mut self, _: usize, _: usize, _: &str) {}
        fn metrics(&mut self, r: &serde_json::Value) {
            self.0.push(r.clone());
        }
    }
    let mut sink = Sink(vec![]);
    let holdout = data(12);
    run::<A>(
        dir,
        &data(24),
        Some(&holdout),
        &Default::default(),
        &mut sink,
        None,
    )
    .unwrap();
    let of = |kind: &str| -> Vec<&serde_json::Value> {
        sink.0.iter().filter(|r| r["kind"] == kind).collect()
    };
    let evals = of("holdout");
    let steps: Vec<u64> = evals.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [2, 2, 2, 4, 4, 4, 5, 5, 5]);
    let models: Vec<&str> = evals[..3]
        .iter()
        .map(|r| r["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["method:pgd-at", "method:trades", "merged:uniform"]);
    for r in &evals {
        assert_eq!(r["n"], 8);
        assert_eq!(r["attack"], "pgd-10");
        assert!(r["robust_acc"].as_f64().unwrap() <= r["clean_acc"].as_f64().unwrap());
    }
    let diag: Vec<u64> = of("diagnostics")
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(diag, [2, 4, 5], "one per checkpoint");
    let saved = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(
        saved.lines().count(),
        sink.0.len(),
        "the file holds what was reported"
    );
}

/// The knobs that keep the defenses apart: balanced sampling gives every method once per
/// round; a parameter group with learning-rate scale 0 stays put while the rest trains;
/// heads that read the method embedding still start at the backbone; the patch
/// embedding trains when asked (the blocks stay frozen).
#[test]
fn balanced_sampling_parameter_groups_and_method_aware_heads() {
    let _turn = training();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut cfg = config(TuneKind::Hyperat, &["pgd-at", "trades", "mart"], 9);
    cfg.lora.rank = 2;
    cfg.sampling = hyperat::tune::Sampling::Balanced;
    cfg.groups = hyperat::tune::param_groups("classifier=0,method-embed=10", "").unwrap();
    cfg.hyper.method_to_heads = true;
    cfg.hyper.method_embed_std = 3.0;
    cfg.train_patch_embed = true;
    start(dir, cfg.clone());
    let before = final_model(dir);
    let hb = before.hyper.as_ref().unwrap();
    assert_eq!(
        hb.heads_b[0].weight.dims()[0],
        cfg.hyper.cond_dim + cfg.hyper.embed_dim,
        "heads read [e; z_m]"
    );
    let dev = Default::default();
    let x = data(4).batch::<A>(&[0, 1, 2, 3], &dev).0;
    let base = before.vit.forward(x.clone()).into_data();
    for m in 0..3 {
        let a = before.adapters(m).unwrap();
        assert_eq!(
            before.logits(x.clone(), Some(&a)).into_data(),
            base,
            "method {m}"
        );
    }
    run::<A>(dir, &data(32), None, &dev, &mut Silent, None).unwrap();
    let methods: Vec<String> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains("\"kind\""))
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["method"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for round in methods.chunks(3) {
        let mut r = round.to_vec();
        r.sort();
        assert_eq!(r, ["mart", "pgd-at", "trades"], "{methods:?}");
    }
    let after = final_model(dir);
    let (tb, ta) = (trainable_tensors(&before), trainable_tensors(&after));
    assert_eq!(
        ta["vit.head.weight"], tb["vit.head.weight"],
        "lr scale 0 freezes the group"
    );
    assert_ne!(ta["hyper.method_embed"], tb["hyper.method_embed"]);
    assert_ne!(ta["hyper.heads_b.0.weight"], tb["hyper.heads_b.0.weight"]);
    assert_ne!(
        ta["vit.patch_embed.proj.weight"],
        tb["vit.patch_embed.proj.weight"]
    );
    assert!(
        !ta.contains_key("vit.blocks.0.attn.qkv.weight"),
        "blocks stay frozen"
    );
    // Unknown groups and bad values are refused with their names.
    let err = hyperat::tune::param_groups("neck=2", "")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("neck") && err.contains("method-embed"),
        "{err}"
    );
    assert!(hyperat::tune::param_groups("heads=-1", "").is_err());
}

/// One run on one device and the same run on `peers` CPU peers (burn-collective, each
/// with its share of every batch): the relative difference of all parameters together,
/// the largest relative difference of one tensor of optimiser moments (where a wrong
/// gradient average would show), and both runs' (step, method, loss) records.
#[allow(clippy::type_complexity)]
fn one_device_and_peers(
    kind: TuneKind,
    methods: &[&str],
    steps: usize,
    peers: usize,
) -> (f64, f64, Vec<(u64, String, f64)>, Vec<(u64, String, f64)>) {
    let dev: Device<A> = Default::default();
    let (one, many) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    start(one.path(), config(kind, methods, steps));
    start(many.path(), config(kind, methods, steps));
    let ds = data(24);
    run::<A>(one.path(), &ds, None, &dev, &mut Silent, None).unwrap();
    let devices = vec![dev; peers];
    run_parallel::<A>(many.path(), &ds, None, &devices, &mut Silent, None).unwrap();
    let read = |d: &Path| {
        read_safetensors(&std::fs::read(d.join("checkpoint.safetensors")).unwrap()).unwrap()
    };
    let (a, b) = (read(one.path()), read(many.path()));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let sq = |x: &[f32], y: &[f32]| -> (f64, f64) {
        let d = x.iter().zip(y).map(|(p, q)| f64::from(p - q).powi(2)).sum();
        (d, x.iter().map(|p| f64::from(*p).powi(2)).sum())
    };
    let (mut param_diff, mut param_norm, mut worst_moment) = (0.0, 0.0, 0.0f64);
    for (k, x) in &a {
        let (d, n) = sq(&x.data, &b[k].data);
        if k.starts_with("opt.") {
            worst_moment = worst_moment.max((d / n.max(1e-30)).sqrt());
        } else {
            (param_diff, param_norm) = (param_diff + d, param_norm + n);
        }
    }
    let records = |d: &Path| -> Vec<(u64, String, f64)> {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| r.get("kind").is_none())
            .map(|r| {
                let method = r["method"].as_str().unwrap().to_string();
                (
                    r["step"].as_u64().unwrap(),
                    method,
                    r["loss"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let rel = (param_diff / param_norm).sqrt();
    (rel, worst_moment, records(one.path()), records(many.path()))
}

/// Data-parallel tuning on two peers, half the batch each, takes the single-device
/// step (up to float summation order) for HyperAT under each defense (the random
/// starts split by rows) and for full-AT, and records the same figures; and keeps
/// doing so over several HyperAT steps.
#[test]
fn two_peers_take_the_steps_of_one_device() {
    let _turn = training();
    let cases: [(TuneKind, &[&str], usize); 5] = [
        (TuneKind::Hyperat, &["pgd-at"], 1),
        (TuneKind::Hyperat, &["trades"], 1),
        (TuneKind::Hyperat, &["mart"], 1),
        (TuneKind::FullAt, &["pgd-at"], 1),
        // Over several steps TRADES is left out: its attack starts 0.001 from the image,
        // where the KL's gradient is second-order small, so rounding differences in the
        // updated weights flip signs of its first step (the loss then drifts at 1e-5).
        (TuneKind::Hyperat, &["pgd-at", "mart"], 3),
    ];
    for (kind, methods, steps) in cases {
        let (params, moments, one, two) = one_device_and_peers(kind, methods, steps, 2);
        let case = format!("{kind:?} {methods:?} × {steps}");
        assert!(params <= 1e-5, "{case}: parameters differ by {params:e}");
        assert!(
            moments <= 1e-5,
            "{case}: optimiser moments differ by {moments:e}"
        );
        assert_eq!(one.len(), steps, "{case}");
        for ((step, m, l), (step2, m2, l2)) in one.iter().zip(&two) {
            assert_eq!((step, m), (step2, m2), "{case}");
            assert!(
                (l - l2).abs() <= 1e-5 * l.abs(),
                "{case} step {step}: loss {l} vs {l2}"
            );
        }
    }
}

#[test]
fn a_batch_that_does_not_split_evenly_is_refused() {
    let _turn = training();
    let dev: Device<A> = Default::default();
    let dir = tempfile::tempdir().unwrap();
    start(dir.path(), config(TuneKind::FullAt, &["pgd-at"], 2));
    let err = run_parallel::<A>(
        dir.path(),
        &data(24),
        None,
        &[dev, dev, dev],
        &mut Silent,
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not split evenly"), "{err}");
    assert!(!RunDir::open(dir.path()).unwrap().has_checkpoint());
}
