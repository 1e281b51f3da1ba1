//! `hyperat eval`: clean and adversarial accuracy of a model on a dataset.

use std::path::PathBuf;

use anyhow::Result;
use hyperat::attack::AttackParams;
use hyperat::backend::{BackendTask, DeviceKind, dispatch};
use hyperat::data::{self, Split};
use hyperat::eval::{EvalConfig, EvalReport, evaluate};
use hyperat::prelude::*;
use hyperat::variant::load_spec;
use serde_json::json;

use super::fraction;
use super::progress::Bar;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model: a timm folder (`config.json` + `model.safetensors`) or a run's variant,
    /// `RUN_DIR#merged:uniform`, `RUN_DIR#method:trades`, `RUN_DIR#base`, `RUN_DIR#tuned`.
    #[arg(long)]
    model: String,
    /// fashion-mnist, cifar10, cifar100 or folder:PATH.
    #[arg(long, default_value = "fashion-mnist")]
    dataset: String,
    /// train, test, or holdout: the last `--holdout` training images, the ones `hyperat
    /// tune` keeps out of training (a validation set for choosing settings without the
    /// test set).
    #[arg(long, default_value = "test")]
    split: String,
    /// Size of the hold-out (as `hyperat tune --holdout`).
    #[arg(long, default_value_t = 5000)]
    holdout: usize,
    /// Evaluate the first N images (file order); all if absent.
    #[arg(long)]
    limit: Option<usize>,
    /// Images per batch.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// none, fgsm, pgd, cw, trades-kl, apgd-ce, apgd-dlr, apgd-t, fab-t, square or
    /// autoattack (standard: APGD-CE, APGD-T, FAB-T, Square).
    #[arg(long, default_value = "none")]
    attack: String,
    /// AutoAttack's components (default: the standard version).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "apgd-ce,apgd-t,fab-t,square"
    )]
    aa_attacks: Vec<String>,
    /// Square's query budget.
    #[arg(long, default_value_t = 5000)]
    queries: usize,
    /// L-inf radius in [0,1] pixels (`0.1` or `8/255`).
    #[arg(long, default_value = "8/255", value_parser = fraction)]
    eps: f32,
    /// Step size (default eps/4).
    #[arg(long, value_parser = fraction)]
    alpha: Option<f32>,
    /// Attack iterations.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Random restarts (pgd, cw).
    #[arg(long, default_value_t = 1)]
    restarts: usize,
    /// CW confidence kappa.
    #[arg(long, default_value_t = 50.0)]
    kappa: f32,
    /// Seed of the attack's random numbers.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the full report (with per-sample predictions) here.
    #[arg(long)]
    json: Option<PathBuf>,
}

struct Task(Args);

impl BackendTask for Task {
    type Output = Result<EvalReport>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<EvalReport> {
        let a = self.0;
        let model = load_spec::<B>(&a.model, &device)?;
        let cfg = model.config.clone();
        let mut ds = if a.split == "holdout" {
            let mut train = data::load(&a.dataset, Split::Train, Some(cfg.input_shape()))?;
            if a.holdout == 0 {
                anyhow::bail!(
                    "--holdout 0 must be between 1 and {} (the training images)",
                    train.len() - 1
                );
            }
            train.split_holdout(a.holdout)?
        } else {
            data::load(&a.dataset, a.split.parse()?, Some(cfg.input_shape()))?
        };
        if ds.classes.len() != cfg.num_classes {
            anyhow::bail!(
                "the model has {} classes but dataset `{}` has {}",
                cfg.num_classes,
                a.dataset,
                ds.classes.len()
            );
        }
        if let Some(n) = a.limit {
            ds.truncate(n);
        }
        let ec = EvalConfig {
            attack: a.attack.clone(),
            params: AttackParams {
                eps: a.eps,
                alpha: a.alpha,
                steps: a.steps,
                restarts: a.restarts,
                kappa: a.kappa,
                queries: a.queries,
                aa_attacks: a.aa_attacks.clone(),
            },
            batch_size: a.batch_size,
            seed: a.seed,
        };
        let mut bar = Bar::new(&format!("eval {}", a.attack));
        Ok(evaluate::<B>(&model, &ds, &ec, &device, &mut bar)?)
    }
}

pub fn run(a: Args, device: DeviceKind) -> Result<()> {
    let out = a.json.clone();
    let (model, dataset, split) = (a.model.clone(), a.dataset.clone(), a.split.clone());
    let r = dispatch(device, Task(a))??;
    let pct = |v: f64| format!("{:.2}%", 100.0 * v);
    match r.robust_acc {
        Some(rob) => eprintln!(
            "n={} clean {} (mean confidence {:.3}) robust {} ({} in {:.1}s, max |delta| {:.5})",
            r.n,
            pct(r.clean_acc),
            r.mean_confidence,
            pct(rob),
            r.attack["name"].as_str().unwrap_or("?"),
            r.seconds,
            r.max_linf.unwrap_or(0.0)
        ),
        None => eprintln!(
            "n={} clean {} (mean confidence {:.3}) ({:.1}s)",
            r.n,
            pct(r.clean_acc),
            r.mean_confidence,
            r.seconds
        ),
    }
    for c in r.components.iter().flatten() {
        eprintln!("  robust accuracy after {}: {}", c.name, pct(c.robust_acc));
    }
    if let Some(c) = &r.checks {
        for w in &c.warnings {
            eprintln!("warning: {w}");
        }
    }
    if let Some(path) = out {
        let mut v = serde_json::to_value(&r)?;
        v["model"] = json!(model);
        v["dataset"] = json!(dataset);
        v["split"] = json!(split);
        v["device"] = json!(device.name());
        hyperat::io::write_atomic(&path, serde_json::to_string(&v)?.as_bytes())?;
    }
    Ok(())
}
