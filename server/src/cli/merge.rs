//! `hyperat merge --run RUN_DIR --strategy ...`: merge a HyperAT run's per-method LoRAs
//! ([`MergeRequest`]).

use std::path::PathBuf;

use anyhow::Result;
use hyperat::backend::{BackendTask, DeviceKind, dispatch};
use hyperat::prelude::*;
use hyperat::tune::RunDir;
use hyperat::variant::{MergeOutcome, MergeRequest};

use super::fraction;
use super::progress::Bar;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// HyperAT run folder.
    #[arg(long)]
    run: PathBuf,
    /// uniform, weighted, adaptive, factor-avg, ties or dare.
    #[arg(long, default_value_t = MergeRequest::default().strategy)]
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
    #[arg(long, default_value_t = MergeRequest::default().merge_steps)]
    merge_steps: usize,
    /// Adaptive: learning rate.
    #[arg(long, default_value_t = MergeRequest::default().merge_lr)]
    merge_lr: f64,
    /// Adaptive: held-out images per step.
    #[arg(long, default_value_t = MergeRequest::default().batch_size)]
    batch_size: usize,
    /// Adaptive: attack radius (default: the run's).
    #[arg(long, value_parser = fraction)]
    eps: Option<f32>,
    /// Adaptive: attack iterations (default: the run's).
    #[arg(long)]
    attack_steps: Option<usize>,
    /// Adaptive: held-out images on which the learned weights are scored against the
    /// uniform start after the search (0: skip).
    #[arg(long, default_value_t = MergeRequest::default().check_images)]
    check_images: usize,
    /// Name of the saved merge (default: the strategy).
    #[arg(long)]
    name: Option<String>,
    /// Seed (DARE masks, adaptive batches).
    #[arg(long, default_value_t = MergeRequest::default().seed)]
    seed: u64,
}

impl Args {
    /// The request these flags make.
    pub fn request(&self) -> MergeRequest {
        MergeRequest {
            strategy: self.strategy.clone(),
            weights: self.weights.clone(),
            density: self.density,
            per_layer: self.per_layer,
            merge_steps: self.merge_steps,
            merge_lr: self.merge_lr,
            batch_size: self.batch_size,
            eps: self.eps,
            attack_steps: self.attack_steps,
            check_images: self.check_images,
            name: self.name.clone(),
            seed: self.seed,
        }
    }
}

struct Merging(PathBuf, MergeRequest);

impl BackendTask for Merging {
    type Output = Result<MergeOutcome>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let mut bar = Bar::new(&format!("{} merge", self.1.strategy));
        Ok(self
            .1
            .run::<B>(&RunDir::open(&self.0)?, &device, &mut bar)?)
    }
}

pub fn execute(a: Args, device: DeviceKind) -> Result<()> {
    let o = dispatch(device, Merging(a.run.clone(), a.request()))??;
    if o.step < o.steps {
        eprintln!(
            "merge: note: the run stopped at step {} of {}",
            o.step, o.steps
        );
    }
    if let Some(c) = &o.check {
        eprintln!(
            "merge: held-out check on {} images (the search's attack): adversarial CE uniform {:.4} -> learned {:.4}; robust accuracy uniform {:.2}% -> learned {:.2}%",
            c.images,
            c.uniform_loss,
            c.learned_loss,
            100.0 * c.uniform_accuracy,
            100.0 * c.learned_accuracy
        );
    }
    if let Some(l) = &o.lambdas {
        eprintln!("merge: weights {l:?} (methods {})", o.methods.join(","));
    }
    eprintln!(
        "merge: {} written to {} (variant merged:{})",
        o.meta["strategy"],
        o.path.display(),
        o.name
    );
    Ok(())
}
