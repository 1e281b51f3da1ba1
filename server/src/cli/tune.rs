//! `hyperat tune`: HyperAT or a baseline on a frozen backbone, resumable.

use std::path::PathBuf;

use anyhow::{Result, bail};
use hyperat::backend::{DeviceKind, DeviceList, DevicesTask, dispatch_devices};
use hyperat::prelude::*;
use hyperat::tune::{RunData, RunDir, TuneRequest, TuneSummary, run_on_nodes, run_parallel};

use super::fraction;
use super::nodes::{NodeArgs, Scratch, exit_on_lost};
use super::progress::Bar;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run folder (created; with --resume, continued).
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in --out from its last checkpoint (with the same or another
    /// number of devices).
    #[arg(long)]
    resume: bool,
    /// Data-parallel over several devices of one backend, e.g. cuda:0,cuda:1 or
    /// cpu:0,cpu:1 (each step's batch split evenly; overrides --device).
    #[arg(long)]
    devices: Option<DeviceList>,
    #[command(flatten)]
    nodes: NodeArgs,
    /// Backbone checkpoint folder (timm format), e.g. from `hyperat pretrain`.
    #[arg(long, required_unless_present = "resume")]
    backbone: Option<PathBuf>,
    /// fashion-mnist, cifar10, cifar100 or folder:PATH.
    #[arg(long, default_value = "fashion-mnist")]
    dataset: String,
    /// hyperat, lora-at, full-lora-at, full-at or linear-probe.
    #[arg(long, default_value = "hyperat")]
    kind: String,
    /// Defense methods (HyperAT samples one per step; baselines take one; the linear
    /// probe none).
    #[arg(long, default_value = "pgd-at,trades,mart")]
    methods: String,
    /// Optimiser steps.
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    /// Passes over the training images instead of --steps (e.g. 3 or 0.5).
    #[arg(long)]
    epochs: Option<f64>,
    /// Images per step.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Warm-up steps (default --warmup-fraction of the steps).
    #[arg(long)]
    warmup: Option<usize>,
    /// Warm-up as a fraction of the steps.
    #[arg(long, default_value_t = 0.05)]
    warmup_fraction: f64,
    /// Global gradient-norm clip (0 = off).
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f64,
    /// HyperAT: train the first method alone for this many steps, then sample
    /// (ours; helps when TRADES/MART's large early KL terms flatten the shared head).
    #[arg(long, default_value_t = 0)]
    method_warmup: usize,
    /// HyperAT: the method warm-up as a fraction of the steps (instead of
    /// --method-warmup).
    #[arg(long, conflicts_with = "method_warmup")]
    method_warmup_fraction: Option<f64>,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Learning-rate multipliers per parameter group, e.g. `method-embed=10,heads=0.5`
    /// (groups: method-embed, embed, generator, heads, classifier).
    #[arg(long, default_value = "")]
    lr_scales: String,
    /// Weight decay per parameter group, e.g. `heads=0.01`.
    #[arg(long, default_value = "")]
    group_decays: String,
    /// HyperAT's method sampling: random (the paper) or balanced (each method once
    /// per round).
    #[arg(long, default_value = "random")]
    sampling: String,
    /// HyperAT: standard deviation of the method embeddings at the start.
    #[arg(long, default_value_t = 1.0)]
    method_embed_std: f32,
    /// HyperAT: the factor heads also read the method embedding (ours).
    #[arg(long)]
    method_to_heads: bool,
    /// LoRA kinds and HyperAT: also train the patch embedding (ours; at small image
    /// sizes the frozen patch embedding is the only way in for the perturbation).
    #[arg(long)]
    train_patch_embed: bool,
    /// HyperAT: weight of a penalty on the squared cosine between the methods'
    /// generated deltas, keeping the defenses' LoRAs apart (ours; 0 = off).
    #[arg(long, default_value_t = TuneRequest::default().method_diversity)]
    method_diversity: f64,
    /// HyperAT: the diversity penalty counts only a pair's squared cosine above this
    /// margin's square: it stops the deltas converging past cosine m, no more (ours).
    #[arg(long, default_value_t = TuneRequest::default().method_diversity_margin)]
    method_diversity_margin: f64,
    /// Inner attack radius, `0.1` or `8/255` (default: the dataset's standard budget, the
    /// one `eval` defaults to: 0.1 for Fashion-MNIST, 8/255 otherwise).
    #[arg(long, value_parser = fraction)]
    eps: Option<f32>,
    /// Inner attack step (default eps/4).
    #[arg(long, value_parser = fraction)]
    alpha: Option<f32>,
    /// Inner attack iterations.
    #[arg(long, default_value_t = 10)]
    attack_steps: usize,
    /// TRADES / MART beta.
    #[arg(long, default_value_t = 6.0)]
    beta: f32,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// LoRA alpha (scaling = alpha / rank).
    #[arg(long, default_value_t = 16.0)]
    lora_alpha: f32,
    /// LoRA targets: all, qv, or a list of qkv,proj,fc1,fc2.
    #[arg(long, default_value = "all")]
    targets: String,
    /// Training images held out (the last ones of the train split) for the adaptive merge.
    #[arg(long, default_value_t = 5000)]
    holdout: usize,
    /// Use only the first N training images (after the hold-out).
    #[arg(long)]
    train_limit: Option<usize>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Checkpoint interval in steps.
    #[arg(long, default_value_t = 100)]
    checkpoint_every: usize,
    /// Evaluate every model of the run on the hold-out (clean and PGD-10) every N
    /// steps (default: about every half epoch; 0 = never).
    #[arg(long)]
    eval_every: Option<usize>,
    /// Hold-out images those evaluations use.
    #[arg(long, default_value_t = 512)]
    eval_images: usize,
}

struct Tuning(Args);

impl Args {
    fn request(&self) -> TuneRequest {
        TuneRequest {
            kind: self.kind.clone(),
            methods: self.methods.clone(),
            dataset: self.dataset.clone(),
            steps: self.steps,
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            warmup: self.warmup,
            warmup_fraction: self.warmup_fraction,
            grad_clip: self.grad_clip,
            method_warmup: self.method_warmup,
            method_warmup_fraction: self.method_warmup_fraction,
            weight_decay: self.weight_decay,
            lr_scales: self.lr_scales.clone(),
            group_decays: self.group_decays.clone(),
            sampling: self.sampling.clone(),
            method_embed_std: self.method_embed_std,
            method_to_heads: self.method_to_heads,
            train_patch_embed: self.train_patch_embed,
            method_diversity: self.method_diversity,
            method_diversity_margin: self.method_diversity_margin,
            eps: self.eps,
            alpha: self.alpha,
            attack_steps: self.attack_steps,
            beta: self.beta,
            rank: self.rank,
            lora_alpha: self.lora_alpha,
            targets: self.targets.clone(),
            holdout: self.holdout,
            train_limit: self.train_limit,
            seed: self.seed,
            checkpoint_every: self.checkpoint_every,
            eval_every: self.eval_every,
            eval_images: self.eval_images,
        }
    }
}

impl DevicesTask for Tuning {
    type Output = Result<TuneSummary>;
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Result<TuneSummary> {
        let a = self.0;
        let nodes = a.nodes.nodes()?;
        // Node 0 alone writes --out; another node starts a new run in a scratch folder
        // (the same start: settings and seed decide it) and resumes from --out.
        let scratch = nodes
            .as_ref()
            .filter(|n| !n.leads() && !a.resume)
            .map(|n| Scratch::for_node(n.rank));
        let run_dir = if a.resume {
            RunDir::open(&a.out)?
        } else {
            let Some(backbone) = &a.backbone else {
                bail!("--backbone is required for a new run")
            };
            let folder = scratch.as_ref().map_or(&a.out, |s| &s.0);
            a.request().create_run(folder, backbone)?
        };
        let info = run_dir.info()?;
        let data = RunData::load(&run_dir)?;
        let peers = devices.len() * nodes.as_ref().map_or(1, |n| n.count);
        eprintln!(
            "tune: {} ({}) on {} images, {} steps at batch {}{}{}, run folder {}",
            info.config.kind.name(),
            info.config.methods.join(","),
            data.train.len(),
            info.config.steps,
            info.config.batch_size,
            match peers {
                1 => String::new(),
                n => format!(" split over {n} devices"),
            },
            match &nodes {
                Some(n) => format!(" of {} nodes (this one: {})", n.count, n.rank),
                None => String::new(),
            },
            a.out.display()
        );
        let mut bar = Bar::new("tune");
        let (train, holdout) = (&data.train, data.holdout.as_ref());
        Ok(match &nodes {
            Some(n) => run_on_nodes::<B>(
                n,
                exit_on_lost("tune"),
                run_dir.path(),
                train,
                holdout,
                &devices,
                &mut bar,
                None,
            )?,
            None => run_parallel::<B>(run_dir.path(), train, holdout, &devices, &mut bar, None)?,
        })
    }
}

pub fn execute(a: Args, device: DeviceKind) -> Result<()> {
    let devices = a.devices.clone().unwrap_or(DeviceList::single(device));
    match dispatch_devices(&devices, Tuning(a))? {
        Ok(s) => eprintln!(
            "tune: done, {} steps in {:.0}s, {} trainable parameters, peak memory {}, \
             parameters {}",
            s.steps,
            s.seconds,
            s.trainable_params,
            s.peak_mem_mib
                .map(|m| format!("{m:.0} MiB"))
                .unwrap_or_else(|| "n/a".into()),
            s.fingerprint.as_deref().unwrap_or("n/a")
        ),
        Err(e) if matches!(e.downcast_ref(), Some(hyperat::Error::Cancelled)) => {
            eprintln!("tune: stopped before the last step; continue with --resume")
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `hyperat tune` with only the required flags.
    #[derive(Parser)]
    struct Bare {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn the_flags_defaults_are_the_requests() {
        let bare = Bare::try_parse_from(["tune", "--backbone", "b", "--out", "o"]).unwrap();
        let from_flags = serde_json::to_value(bare.args.request()).unwrap();
        let from_job = serde_json::to_value(TuneRequest::default()).unwrap();
        assert_eq!(from_flags, from_job);
    }
}
