//! Pretraining: resumable from its per-epoch snapshot to bit-identical weights, with
//! the augmentation drawn per step; cancellation is `Error::Cancelled`.

use hyperat::backend::{Cpu, CpuAutodiff};
use hyperat::data::{Augment, Dataset};
use hyperat::named_params::named_tensors;
use hyperat::prelude::*;
use hyperat::progress::Progress;
use hyperat::rng::Rng;
use hyperat::train::{PretrainConfig, TrainSnapshot, pretrain};
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
    let cfg = PretrainConfig {
        epochs: 3,
        batch_size: 16,
        lr: 3e-3,
        eval_limit: 16,
        log_every: 1,
        augment: Augment::default(),
        ..Default::default()
    };
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
