//! Pretraining: resumable from its per-epoch snapshot to bit-identical weights, with
//! the augmentation drawn per step; cancellation is `Error::Cancelled`; data-parallel
//! peers take the single-device steps.

use hyperat::backend::{Cpu, CpuAutodiff};
use hyperat::data::{Augment, Dataset};
use hyperat::named_params::named_tensors;
use hyperat::prelude::*;
use hyperat::progress::Progress;
use hyperat::rng::Rng;
use hyperat::train::{PretrainConfig, TrainSnapshot, pretrain, pretrain_parallel};
use hyperat::{Error, Vit, VitConfig};

type A = CpuAutodiff;

fn tiny() -> Vit<A> {
    let mut c = VitConfig::vit_tiny_fmnist();
    c.embed_dim = 16;
    c.depth = 2;
    c.num_heads = 2;
    c.patch_size = 7;
    // Same weights every call: the init draws from burn's process-wide generator.
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INIT.lock().unwrap_or_else(|e| e.into_inner());
    <Cpu as Backend>::seed(&Default::default(), 3);
    Vit::init(&c, &Default::default())
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

/// `epochs` over 48 images at batch 16 (3 steps each), augmented, every step logged.
fn config(epochs: usize) -> PretrainConfig {
    PretrainConfig {
        epochs,
        batch_size: 16,
        lr: 3e-3,
        eval_limit: 16,
        log_every: 1,
        augment: Augment::default(),
        ..Default::default()
    }
}

/// Asks to stop once `after` steps are done; counts records.
struct StopAfter {
    after: usize,
    done: usize,
    records: Vec<serde_json::Value>,
}

impl Progress for StopAfter {
    fn update(&mut self, done: usize, _: usize, _: &str) {
        self.done = done;
    }
    fn metrics(&mut self, r: &serde_json::Value) {
        self.records.push(r.clone());
    }
    fn cancelled(&self) -> bool {
        self.done >= self.after
    }
}

#[test]
fn pretraining_resumes_from_its_epoch_snapshot_to_the_same_weights() {
    let (train, holdout) = (data(48), data(16));
    let cfg = config(3);
    let dev = Default::default();
    let tmp = tempfile::tempdir().unwrap();
    let eval_set = Some(("holdout", &holdout));
    let mut whole = StopAfter {
        after: usize::MAX,
        done: 0,
        records: vec![],
    };
    let (a, sa) = pretrain(tiny(), &train, eval_set, &cfg, &dev, &mut whole, None).unwrap();
    assert_eq!(sa.steps, 9);
    assert_eq!(sa.eval_split.as_deref(), Some("holdout"));
    let evals = whole.records.iter().filter(|r| r["kind"] == "eval").count();
    assert_eq!(evals, 3, "one evaluation per epoch");

    // Stopped after epoch 1 (its snapshot holds step 3), then resumed in a fresh call.
    let state = tmp.path().join("state.safetensors");
    let mut first = StopAfter {
        after: 4,
        done: 0,
        records: vec![],
    };
    let err = pretrain(
        tiny(),
        &train,
        eval_set,
        &cfg,
        &dev,
        &mut first,
        Some(&state),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert_eq!(TrainSnapshot::step_of(&state).unwrap(), 3);
    let mut rest = StopAfter {
        after: usize::MAX,
        done: 0,
        records: vec![],
    };
    let (b, sb) = pretrain(
        tiny(),
        &train,
        eval_set,
        &cfg,
        &dev,
        &mut rest,
        Some(&state),
    )
    .unwrap();
    assert_eq!(sb.steps, 9);
    assert_eq!(
        rest.records.first().unwrap()["step"],
        4,
        "resumes after step 3"
    );
    let (ta, tb) = (named_tensors(&a), named_tensors(&b));
    assert_eq!(ta.len(), tb.len());
    for (k, v) in &ta {
        assert_eq!(v, &tb[k], "{k} differs after resumption");
    }
    assert_eq!(sa.eval_acc, sb.eval_acc);

    // Without augmentation the same seed trains to different weights: it is applied.
    let plain = PretrainConfig {
        augment: Augment::NONE,
        ..cfg
    };
    let mut quiet = StopAfter {
        after: usize::MAX,
        done: 0,
        records: vec![],
    };
    let (c, _) = pretrain(tiny(), &train, eval_set, &plain, &dev, &mut quiet, None).unwrap();
    let tc = named_tensors(&c);
    assert!(ta.iter().any(|(k, v)| v != &tc[k]));
}

/// Largest relative difference over all parameters together.
fn relative_difference(a: &Vit<A>, b: &Vit<A>) -> f64 {
    let (ta, tb) = (named_tensors(a), named_tensors(b));
    let (mut diff, mut norm) = (0.0, 0.0);
    for (k, x) in &ta {
        for (p, q) in x.data.iter().zip(&tb[k].data) {
            diff += f64::from(p - q).powi(2);
            norm += f64::from(*p).powi(2);
        }
    }
    (diff / norm).sqrt()
}

/// Two CPU peers, half of each batch apiece (augmented as the whole batch would be),
/// train to the single-device weights and records (up to float summation order); a
/// run stopped on two peers resumes on one; a batch that does not split is refused.
#[test]
fn two_peers_pretrain_as_one_device() {
    let (train, holdout) = (data(48), data(16));
    let cfg = config(2);
    let dev: Device<A> = Default::default();
    let eval_set = Some(("holdout", &holdout));
    let run = |devices: &[Device<A>], after: usize, state: Option<&std::path::Path>| {
        let mut p = StopAfter {
            after,
            done: 0,
            records: vec![],
        };
        let r = pretrain_parallel(tiny(), &train, eval_set, &cfg, devices, &mut p, state);
        (r, p.records)
    };
    let (one, one_records) = run(&[dev], usize::MAX, None);
    let (one, one_summary) = one.unwrap();
    let (two, two_records) = run(&[dev, dev], usize::MAX, None);
    let (two, two_summary) = two.unwrap();
    let rel = relative_difference(&one, &two);
    assert!(rel <= 1e-5, "parameters differ by {rel:e}");
    assert_eq!(one_summary.steps, 6);
    assert_eq!(two_summary.steps, 6);
    assert_eq!(one_records.len(), two_records.len());
    for (a, b) in one_records.iter().zip(&two_records) {
        assert_eq!((&a["kind"], &a["step"]), (&b["kind"], &b["step"]));
        for key in ["loss", "acc"] {
            let (x, y) = (a[key].as_f64(), b[key].as_f64());
            assert_eq!(x.is_some(), y.is_some(), "{key} in {a} and {b}");
            if let (Some(x), Some(y)) = (x, y) {
                assert!(
                    (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                    "{key}: {x} vs {y}"
                );
            }
        }
    }

    // Stopped on two peers after epoch 1, resumed on one: the uninterrupted weights.
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.safetensors");
    let (stopped, _) = run(&[dev, dev], 4, Some(&state));
    assert!(matches!(stopped, Err(Error::Cancelled)));
    assert_eq!(TrainSnapshot::step_of(&state).unwrap(), 3);
    let (resumed, _) = run(&[dev], usize::MAX, Some(&state));
    let rel = relative_difference(&one, &resumed.unwrap().0);
    assert!(rel <= 1e-5, "resumed parameters differ by {rel:e}");

    let (uneven, _) = run(&[dev, dev, dev], usize::MAX, None);
    let err = uneven.unwrap_err().to_string();
    assert!(err.contains("does not split evenly"), "{err}");
}
