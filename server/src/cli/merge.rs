//! `hyperat merge --run RUN_DIR --strategy ...`: merge a HyperAT run's per-method LoRAs.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Result, bail};
use hyperat::backend::{BackendTask, DeviceKind, dispatch};
use hyperat::checkpoint::Checkpoint;
use hyperat::data::{self, Split};
use hyperat::merge::{AdaptiveConfig, MergeStrategy, by_name, learn_and_check};
use hyperat::prelude::*;
use hyperat::tune::{TuneKind, load_run};
use hyperat::variant::{method_loras, save_merge};

use super::fraction;
use super::progress::Bar;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// HyperAT run folder.
    #[arg(long)]
    run: PathBuf,
    /// uniform, weighted, adaptive, factor-avg, ties or dare.
    #[arg(long, default_value = "uniform")]
    strategy: String,
    /// Per-method weights for `weighted` (run's method order), e.g. 0.5,0.25,0.25.
    #[arg(long, value_delimiter = ',')]
    weights: Option<Vec<f32>>,
    /// TIES: kept fraction (default 0.2); DARE: survival probability (default 0.5).
    #[arg(long)]
    density: Option<f32>,
    /// Adaptive: one weight vector per block instead of one for the model.
    #[arg(long)]
    per_layer: bool,
    /// Adaptive: Adam steps on the weights.
    #[arg(long, default_value_t = 50)]
    merge_steps: usize,
    /// Adaptive: learning rate.
    #[arg(long, default_value_t = 0.05)]
    merge_lr: f64,
    /// Adaptive: held-out images per step.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Adaptive: attack radius (default: the run's).
    #[arg(long, value_parser = fraction)]
    eps: Option<f32>,
    /// Adaptive: attack iterations (default: the run's).
    #[arg(long)]
    attack_steps: Option<usize>,
    /// Adaptive: held-out images on which the learned weights are scored against the
    /// uniform start after the search (0: skip).
    #[arg(long, default_value_t = 512)]
    check_images: usize,
    /// Name of the saved merge (default: the strategy).
    #[arg(long)]
    name: Option<String>,
    /// Seed (DARE masks, adaptive batches).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

struct Task(Args);

impl BackendTask for Task {
    type Output = Result<(String, HashMap<String, String>)>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let a = self.0;
        let (info, _, model, step) = load_run::<B>(&a.run, &device)?;
        if info.config.kind != TuneKind::Hyperat {
            bail!(
                "{} is a {} run; merging needs a HyperAT run",
                a.run.display(),
                info.config.kind.name()
            );
        }
        if step < info.config.steps {
            eprintln!(
                "merge: note: the run stopped at step {step} of {}",
                info.config.steps
            );
        }
        let methods = method_loras(&model.valid(), &info.config.methods);
        let mut meta = HashMap::from([
            ("strategy".to_string(), a.strategy.clone()),
            ("methods".to_string(), info.config.methods.join(",")),
            ("step".to_string(), step.to_string()),
        ]);
        let deltas = if a.strategy == "adaptive" {
            if info.holdout == 0 {
                bail!(
                    "the run held out no training images (--holdout 0); the adaptive merge needs them"
                );
            }
            let shape = Checkpoint::load(a.run.join("backbone"))?
                .config
                .input_shape();
            let mut train = data::load(&info.dataset, Split::Train, Some(shape))?;
            let val = train.split_off(info.holdout);
            let d = &info.config.defense;
            let cfg = AdaptiveConfig {
                per_layer: a.per_layer,
                steps: a.merge_steps,
                lr: a.merge_lr,
                batch_size: a.batch_size,
                eps: a.eps.unwrap_or(d.eps),
                alpha: a.eps.map(|e| e / 4.0).unwrap_or(d.alpha),
                attack_steps: a.attack_steps.unwrap_or(d.steps),
                seed: a.seed,
                check_images: a.check_images,
            };
            let mut bar = Bar::new("adaptive merge");
            let (learned, check) =
                learn_and_check::<B>(&model.vit, &methods, &val, &cfg, &device, &mut bar)?;
            drop(bar);
            meta.insert("lambdas".into(), serde_json::to_string(&learned.lambdas)?);
            if let Some(c) = check {
                eprintln!(
                    "merge: held-out check on {} images (the search's attack): adversarial CE uniform {:.4} -> learned {:.4}; robust accuracy uniform {:.2}% -> learned {:.2}%",
                    c.images,
                    c.uniform_loss,
                    c.learned_loss,
                    100.0 * c.uniform_accuracy,
                    100.0 * c.learned_accuracy
                );
                meta.insert("check".into(), serde_json::to_string(&c)?);
            }
            meta.insert("adaptive".into(), serde_json::to_string(&cfg)?);
            learned.merge(&methods)?
        } else {
            let s = by_name(&a.strategy, a.weights.clone(), a.density, a.seed)?;
            meta.insert("strategy".into(), s.name());
            if let Some(w) = &a.weights {
                meta.insert("lambdas".into(), serde_json::to_string(w)?);
            }
            s.merge(&methods)?
        };
        let name = a.name.clone().unwrap_or_else(|| a.strategy.clone());
        let path = save_merge(&a.run, &name, &deltas, meta.clone())?;
        Ok((path.display().to_string(), meta))
    }
}

pub fn run_cli(a: Args, device: DeviceKind) -> Result<()> {
    let (path, meta) = dispatch(device, Task(a))??;
    if let Some(l) = meta.get("lambdas") {
        eprintln!("merge: weights {l} (methods {})", meta["methods"]);
    }
    eprintln!("merge: {} written to {path}", meta["strategy"]);
    Ok(())
}
