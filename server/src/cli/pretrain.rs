//! `hyperat pretrain`: standard training of a backbone, saved as a timm checkpoint.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use hyperat::VitConfig;
use hyperat::backend::{BackendTask, DeviceKind, dispatch};
use hyperat::checkpoint::{Adapt, Checkpoint, save_vit};
use hyperat::data::{self, Split};
use hyperat::prelude::*;
use hyperat::train::{PretrainConfig, PretrainSummary, pretrain};
use hyperat::vit::Vit;

use super::progress::Bar;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Start from a preset architecture (random weights): vit-tiny-fmnist.
    #[arg(long, conflicts_with = "from", required_unless_present = "from")]
    preset: Option<String>,
    /// Start from a timm checkpoint folder (its head is replaced for the dataset's
    /// classes; position embeddings are resampled for the dataset's image size).
    #[arg(long)]
    from: Option<PathBuf>,
    /// Patch size when starting `--from` a checkpoint with another one.
    #[arg(long)]
    patch_size: Option<usize>,
    /// fashion-mnist, cifar10, cifar100 or folder:PATH.
    #[arg(long, default_value = "fashion-mnist")]
    dataset: String,
    /// Passes over the training set.
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Stop after this many optimiser steps.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Train on the first N training images only.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.05)]
    weight_decay: f64,
    /// Images per step.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Warm-up steps (default 5% of all steps).
    #[arg(long)]
    warmup: Option<usize>,
    /// Test images evaluated after each epoch.
    #[arg(long, default_value_t = 2000)]
    eval_limit: usize,
    /// Seed for initialisation and shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder (checkpoint, `metrics.jsonl`, `train.json`).
    #[arg(long)]
    out: PathBuf,
}

struct Task(Args);

impl BackendTask for Task {
    type Output = Result<PretrainSummary>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<PretrainSummary> {
        let a = self.0;
        B::seed(&device, a.seed);
        let probe_shape = match (&a.preset, &a.from) {
            (Some(p), _) => Some(VitConfig::preset(p)?.input_shape()),
            (None, Some(dir)) => Some(Checkpoint::load(dir)?.config.input_shape()),
            _ => bail!("give --preset or --from"),
        };
        // Fixed-size datasets define the input; folders are converted to the model's.
        let folder = a.dataset.starts_with("folder:");
        let mut train = data::load(
            &a.dataset,
            Split::Train,
            folder.then_some(probe_shape).flatten(),
        )?;
        let test = data::load(&a.dataset, Split::Test, Some(train.shape)).ok();
        if let Some(n) = a.train_limit {
            train.truncate(n);
        }
        let classes = train.classes.clone();
        let [c, h, w] = train.shape;
        let (cfg, vit) = match (&a.preset, &a.from) {
            (Some(p), _) => {
                let mut cfg = VitConfig::preset(p)?;
                if cfg.in_chans != c {
                    bail!(
                        "preset {p} takes {} channels, dataset `{}` has {c}",
                        cfg.in_chans,
                        a.dataset
                    );
                }
                cfg.img_size = [h, w];
                cfg.num_classes = classes.len();
                cfg.label_names = Some(classes);
                cfg.validate()?;
                let vit = Vit::<B>::init(&cfg, &device);
                (cfg, vit)
            }
            (None, Some(dir)) => {
                let adapt = Adapt {
                    img_size: Some([h, w]),
                    patch_size: a.patch_size,
                    num_classes: Some(classes.len()),
                    label_names: Some(classes),
                    seed: a.seed,
                    ..Default::default()
                };
                let ck = Checkpoint::load(dir)?.adapt(&adapt)?;
                if ck.config.in_chans != c {
                    bail!(
                        "{} takes {} channels, dataset `{}` has {c}",
                        dir.display(),
                        ck.config.in_chans,
                        a.dataset
                    );
                }
                let vit = ck.build::<B>(&device)?;
                (ck.config, vit)
            }
            _ => unreachable!(),
        };
        let pc = PretrainConfig {
            epochs: a.epochs,
            max_steps: a.max_steps,
            lr: a.lr,
            weight_decay: a.weight_decay,
            batch_size: a.batch_size,
            warmup: a.warmup,
            eval_limit: a.eval_limit,
            seed: a.seed,
            ..Default::default()
        };
        std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
        let metrics_path = a.out.join("metrics.jsonl");
        let mut metrics = std::fs::File::create(&metrics_path)
            .with_context(|| format!("creating {}", metrics_path.display()))?;
        let mut bar = Bar::new("pretrain");
        eprintln!(
            "pretrain: {} train images, {} params, {} epochs at batch {}",
            train.len(),
            vit.num_params(),
            a.epochs,
            a.batch_size
        );
        let mut log = |v: serde_json::Value| {
            let _ = writeln!(metrics, "{v}");
            if v["kind"] == "eval" {
                eprintln!(
                    "epoch {}: test acc {:.2}%",
                    v["epoch"],
                    100.0 * v["test_acc"].as_f64().unwrap_or(0.0)
                );
            }
        };
        let (vit, summary) =
            pretrain(vit, &train, test.as_ref(), &pc, &device, &mut bar, &mut log)?;
        drop(bar);
        save_vit(&a.out, &cfg, &vit)?;
        let info = serde_json::json!({"config": pc, "summary": summary, "dataset": a.dataset,
                                      "params": vit.num_params()});
        hyperat::io::write_atomic(
            a.out.join("train.json"),
            serde_json::to_string_pretty(&info)?.as_bytes(),
        )?;
        Ok(summary)
    }
}

pub fn run(a: Args, device: DeviceKind) -> Result<()> {
    let out = a.out.clone();
    let s = dispatch(device, Task(a))??;
    eprintln!(
        "pretrain: {} steps in {:.0}s, test acc {}; checkpoint in {}",
        s.steps,
        s.seconds,
        s.test_acc
            .map(|v| format!("{:.2}%", 100.0 * v))
            .unwrap_or_else(|| "n/a".into()),
        out.display()
    );
    Ok(())
}
