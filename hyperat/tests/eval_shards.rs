//! Evaluations split into shards of whole batches and evaluated apart merge into the
//! report of one pass: the same per-sample predictions (random starts and AutoAttack's
//! randomness included), accuracies, components and checks; so do reports.

use hyperat::Vit;
use hyperat::attack::AttackParams;
use hyperat::backend::CpuAutodiff;
use hyperat::checkpoint::{Adapt, load_vit};
use hyperat::data::{self, Dataset, Split};
use hyperat::eval::{EvalConfig, EvalReport, ShardSpec, evaluate, evaluate_shard, merge_shards};
use hyperat::prelude::*;
use hyperat::progress::Silent;
use hyperat::report::{Report, ReportModel, ReportRequest, ReportShard, merge_report};

type A = CpuAutodiff;

/// The shipped backbone, relative to the package root, where cargo runs tests:
/// `env!("CARGO_MANIFEST_DIR")` would name the clone that compiled the test, which a
/// shared target dir reuses.
const BACKBONE: &str = "../public/models/fmnist-vit-tiny/backbone";

/// The shipped backbone (trained, not robust: attacks change its predictions) and the
/// first Fashion-MNIST test images.
fn model_and_images(n: usize) -> (Vit<A>, Dataset) {
    let (cfg, vit) = load_vit::<A>(BACKBONE, &Adapt::default(), &Default::default()).unwrap();
    let mut ds = data::load("fashion-mnist", Split::Test, Some(cfg.input_shape())).unwrap();
    ds.truncate(n);
    (vit, ds)
}

fn config(attack: &str) -> EvalConfig {
    EvalConfig {
        attack: attack.into(),
        params: AttackParams {
            eps: 0.1,
            steps: 5,
            queries: 50,
            ..Default::default()
        },
        batch_size: 4,
        seed: 7,
    }
}

/// The report as JSON without its wall time.
fn comparable(r: &EvalReport) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap();
    v["seconds"] = serde_json::Value::Null;
    v
}

#[test]
fn shards_merge_into_the_single_pass_report() {
    let ((model, ds), dev) = (model_and_images(18), Default::default());
    for attack in ["pgd", "autoattack", "none"] {
        let cfg = config(attack);
        let whole = evaluate::<A>(&model, &ds, &cfg, &dev, &mut Silent).unwrap();
        // AutoAttack is the slow one: one split of it.
        let counts: &[usize] = if attack == "autoattack" {
            &[3]
        } else {
            &[2, 3, 5]
        };
        for &count in counts {
            // Evaluated apart, handed over in any order.
            let shards = (0..count)
                .rev()
                .map(|index| {
                    let spec = ShardSpec { index, count };
                    evaluate_shard::<A>(&model, &ds, &cfg, spec, &dev, &mut Silent).unwrap()
                })
                .collect();
            let merged = merge_shards(shards).unwrap();
            assert_eq!(
                comparable(&merged),
                comparable(&whole),
                "{attack}, {count} shards"
            );
        }
        if attack == "pgd" {
            // Not vacuous: the attack changed predictions, and its random start mattered.
            assert_ne!(whole.adv_pred.as_ref().unwrap(), &whole.clean_pred);
            let mut other = cfg.clone();
            other.seed = 8;
            let r = evaluate::<A>(&model, &ds, &other, &dev, &mut Silent).unwrap();
            assert_ne!(comparable(&r), comparable(&whole));
        }
    }
}

#[test]
fn incomplete_or_mixed_shards_are_refused() {
    let ((model, ds), dev) = (model_and_images(12), Default::default());
    let shard = |cfg: &EvalConfig, index, count| {
        let spec = ShardSpec { index, count };
        evaluate_shard::<A>(&model, &ds, cfg, spec, &dev, &mut Silent).unwrap()
    };
    let (pgd, fgsm) = (config("pgd"), config("fgsm"));
    let missing = merge_shards(vec![shard(&pgd, 0, 3), shard(&pgd, 2, 3)]).unwrap_err();
    assert!(missing.to_string().contains("expected shards"), "{missing}");
    let twice = merge_shards(vec![shard(&pgd, 0, 2), shard(&pgd, 0, 2)]).unwrap_err();
    assert!(twice.to_string().contains("expected shards"), "{twice}");
    let mixed = merge_shards(vec![shard(&pgd, 0, 2), shard(&fgsm, 1, 2)]).unwrap_err();
    assert!(mixed.to_string().contains("another evaluation"), "{mixed}");
    assert!(merge_shards(vec![]).is_err());
    let mut cut = shard(&pgd, 1, 2);
    cut.adv_pred.pop();
    let cut = merge_shards(vec![shard(&pgd, 0, 2), cut]).unwrap_err();
    assert!(cut.to_string().contains("inconsistent"), "{cut}");
    // More shards than batches (3): one is empty, and the merge is still the single pass.
    let merged = merge_shards((0..4).map(|index| shard(&pgd, index, 4)).collect()).unwrap();
    let whole = evaluate::<A>(&model, &ds, &pgd, &dev, &mut Silent).unwrap();
    assert_eq!(comparable(&merged), comparable(&whole));
    let beyond = ShardSpec { index: 4, count: 4 };
    assert!(evaluate_shard::<A>(&model, &ds, &pgd, beyond, &dev, &mut Silent).is_err());
}

/// A report split over two devices in one process, or into two shard files merged
/// afterwards, is the one-device report: every row's per-sample predictions, PGD, CW
/// and AutoAttack figures (its 4 images make one batch: one device's shard is empty).
#[test]
fn sharded_reports_merge_into_the_single_pass_report() {
    let req = ReportRequest {
        rows: vec![
            ReportModel::parse(&format!("first={BACKBONE}")),
            ReportModel::parse(&format!("again={BACKBONE}")),
        ],
        limit: 10,
        steps: 2,
        batch_size: 4,
        aa_limit: 4,
        seed: 3,
        ..Default::default()
    };
    let resolve = |r: &ReportModel| Ok((r.model.clone(), r.model.clone()));
    let dev: Device<A> = Default::default();
    let comparable = |r: &Report| {
        let mut v = serde_json::to_value(r).unwrap();
        for row in v["rows"].as_array_mut().unwrap() {
            row["eval_seconds"] = serde_json::Value::Null;
        }
        v
    };
    let whole = req
        .run::<A>(&resolve, &dev, &mut Silent, &mut |_| {})
        .unwrap();
    assert_eq!(whole.rows.len(), 2);
    assert_eq!(whole.rows[0].aa_n, Some(4));
    let devices = req
        .run_on_devices::<A>(&resolve, &[dev, dev], &mut Silent, &mut |_| {})
        .unwrap();
    assert_eq!(comparable(&devices), comparable(&whole));
    let shards: Vec<ReportShard> = (0..2)
        .rev()
        .map(|index| {
            let spec = ShardSpec { index, count: 2 };
            // Through JSON, as the shard files travel.
            let shard = req
                .run_shard::<A>(&resolve, spec, &dev, &mut Silent)
                .unwrap();
            serde_json::from_str(&serde_json::to_string(&shard).unwrap()).unwrap()
        })
        .collect();
    assert_eq!(
        comparable(&merge_report(shards.clone()).unwrap()),
        comparable(&whole)
    );
    // A shard of another report is refused.
    let mut other = shards.clone();
    other[0].config.steps = 3;
    let err = merge_report(other).unwrap_err().to_string();
    assert!(err.contains("another report"), "{err}");
    let err = merge_report(shards[..1].to_vec()).unwrap_err().to_string();
    assert!(err.contains("expected shards"), "{err}");
}

/// A report whose last model cannot load fails before any row is measured, naming the
/// row, with the file-system cause said once (the mistake that cost a results run: a
/// NAME with a comma, which `--models` splits).
#[test]
fn a_report_with_a_missing_model_fails_before_measuring_anything() {
    let missing = std::env::temp_dir().join("hyperat-no-such-model");
    let req = ReportRequest {
        rows: vec![
            ReportModel::parse(&format!("first={BACKBONE}")),
            ReportModel::parse(&format!("HyperAT+ (reference={}", missing.display())),
        ],
        limit: 4,
        steps: 1,
        ..Default::default()
    };
    let resolve = |r: &ReportModel| Ok((r.model.clone(), r.model.clone()));
    let mut measured = 0;
    let err = req
        .run::<A>(&resolve, &Default::default(), &mut Silent, &mut |_| {
            measured += 1
        })
        .unwrap_err();
    assert_eq!(measured, 0, "a row was measured before the failure");
    // The message with its chain of causes, as the CLI prints it (anyhow's `{:#}`).
    let mut text = err.to_string();
    let mut cause = std::error::Error::source(&err);
    while let Some(c) = cause {
        text += &format!(": {c}");
        cause = c.source();
    }
    assert!(
        text.starts_with("model \"HyperAT+ (reference\": "),
        "{text}"
    );
    assert_eq!(text.matches("No such file").count(), 1, "{text}");
}
