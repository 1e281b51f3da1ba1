//! `hyperat pretrain`: standard training of a backbone, saved as a timm checkpoint;
//! resumable (`--resume`) from its last epoch.

use std::path::PathBuf;

use anyhow::Result;
use hyperat::backend::{DeviceKind, DeviceList, DevicesTask, dispatch_devices};
use hyperat::prelude::*;
use hyperat::train::{PretrainRequest, PretrainSummary};

use super::progress::Bar;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output folder (checkpoint, `metrics.jsonl`, `train.json`).
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in --out from its last epoch (its settings come from there).
    #[arg(long)]
    resume: bool,
    /// Data-parallel over several devices of one backend, e.g. cuda:0,cuda:1 or
    /// cpu:0,cpu:1 (each step's batch split evenly; overrides --device).
    #[arg(long)]
    devices: Option<DeviceList>,
    /// Start from a preset architecture (random weights): vit-tiny-fmnist, vit-mini-fmnist, ….
    #[arg(long, conflicts_with = "from", required_unless_present_any = ["from", "resume"])]
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
    #[arg(long, default_value_t = PretrainRequest::default().epochs)]
    epochs: usize,
    /// Stop after this many optimiser steps.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Keep the last N training images out of training and evaluate on them after each
    /// epoch (0: evaluate on the test split).
    #[arg(long, default_value_t = PretrainRequest::default().holdout)]
    holdout: usize,
    /// Train on the first N (remaining) training images only.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Peak learning rate.
    #[arg(long, default_value_t = PretrainRequest::default().lr)]
    lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = PretrainRequest::default().weight_decay)]
    weight_decay: f64,
    /// Images per step.
    #[arg(long, default_value_t = PretrainRequest::default().batch_size)]
    batch_size: usize,
    /// Warm-up steps (default 5% of all steps).
    #[arg(long)]
    warmup: Option<usize>,
    /// Evaluation images used after each epoch.
    #[arg(long, default_value_t = PretrainRequest::default().eval_limit)]
    eval_limit: usize,
    /// Random-crop padding in pixels (0 = no crop).
    #[arg(long, default_value_t = PretrainRequest::default().crop_pad)]
    crop_pad: usize,
    /// No random horizontal flips.
    #[arg(long)]
    no_hflip: bool,
    /// Seed for initialisation, shuffling and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl Args {
    fn request(&self) -> Result<PretrainRequest> {
        if self.resume {
            return Ok(PretrainRequest::read(&self.out)?);
        }
        Ok(PretrainRequest {
            preset: self
                .preset
                .clone()
                .unwrap_or_else(|| PretrainRequest::default().preset),
            from: self.from.clone(),
            patch_size: self.patch_size,
            dataset: self.dataset.clone(),
            holdout: self.holdout,
            train_limit: self.train_limit,
            epochs: self.epochs,
            max_steps: self.max_steps,
            lr: self.lr,
            weight_decay: self.weight_decay,
            batch_size: self.batch_size,
            warmup: self.warmup,
            eval_limit: self.eval_limit,
            seed: self.seed,
            crop_pad: self.crop_pad,
            hflip: !self.no_hflip,
        })
    }
}

struct Pretraining(Args);

impl DevicesTask for Pretraining {
    type Output = Result<PretrainSummary>;
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Result<PretrainSummary> {
        let req = self.0.request()?;
        eprintln!(
            "pretrain: {} on {}, {} epochs at batch {}{} (crop padding {}, flips {}), folder {}",
            req.from
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| req.preset.clone()),
            req.dataset,
            req.epochs,
            req.batch_size,
            match devices.len() {
                1 => String::new(),
                n => format!(" split over {n} devices"),
            },
            req.crop_pad,
            if req.hflip { "on" } else { "off" },
            self.0.out.display()
        );
        let mut bar = Bar::new("pretrain");
        Ok(req.run_parallel::<B>(&self.0.out, &devices, &mut bar)?)
    }
}

pub fn execute(a: Args, device: DeviceKind) -> Result<()> {
    let out = a.out.clone();
    let devices = a.devices.clone().unwrap_or(DeviceList::single(device));
    let s = dispatch_devices(&devices, Pretraining(a))??;
    eprintln!(
        "pretrain: {} steps in {:.0}s, {} accuracy {}; checkpoint in {}",
        s.steps,
        s.seconds,
        s.eval_split.as_deref().unwrap_or("evaluation"),
        s.eval_acc
            .map(|v| format!("{:.2}%", 100.0 * v))
            .unwrap_or_else(|| "n/a".into()),
        out.display()
    );
    Ok(())
}
