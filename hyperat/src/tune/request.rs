//! A tuning run as a caller asks for it (CLI flags, a server job): the few choices a
//! user makes, with method.md's defaults for the rest, turned into a run folder.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{RunDir, RunInfo, Sampling, TuneConfig, TuneKind, param_groups};
use crate::checkpoint::{Adapt, Checkpoint};
use crate::data::{self, Dataset, Split};
use crate::defense::{DefenseParams, parse_list};
use crate::error::{Error, Result};
use crate::hypernet::HyperConfig;
use crate::lora::LoraConfig;

/// What a new tuning run needs; every field but the backbone has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TuneRequest {
    /// `hyperat`, `lora-at`, `full-lora-at`, `full-at` or `linear-probe`.
    pub kind: String,
    /// Defense methods, comma-separated (HyperAT samples one per step; baselines take
    /// one; the linear probe none). Default `pgd-at,trades,mart`.
    pub methods: String,
    /// `fashion-mnist`, `cifar10`, `cifar100` or `folder:PATH`.
    pub dataset: String,
    /// Optimiser steps (default 1000); ignored when `epochs` is given.
    pub steps: usize,
    /// Passes over the training images instead of `steps` (each epoch is
    /// `train images / batch_size` steps, the short remainder dropped).
    pub epochs: Option<f64>,
    /// Images per step (default 64).
    pub batch_size: usize,
    /// Peak learning rate (default 1e-3).
    pub lr: f64,
    /// Warm-up steps (default `warmup_fraction` of the steps).
    pub warmup: Option<usize>,
    /// Warm-up as a fraction of the steps when `warmup` is not given (default 0.05).
    pub warmup_fraction: f64,
    /// Global gradient-norm clip (default 1.0; 0 turns it off).
    pub grad_clip: f64,
    /// HyperAT: steps that train the first method alone before sampling starts
    /// (default 0).
    pub method_warmup: usize,
    /// HyperAT: the method warm-up as a fraction of the steps (overrides
    /// `method_warmup`; for budgets given in epochs).
    pub method_warmup_fraction: Option<f64>,
    /// AdamW weight decay (default 0).
    pub weight_decay: f64,
    /// Learning-rate multipliers per parameter group, `method-embed=10,heads=0.5`
    /// (groups: method-embed, embed, generator, heads, classifier; default none).
    pub lr_scales: String,
    /// Weight decay per parameter group, `heads=0.01` (default: `weight_decay`).
    pub group_decays: String,
    /// HyperAT's method sampling: `random` (default, the paper) or `balanced`.
    pub sampling: String,
    /// HyperAT: standard deviation of the method embeddings at the start (default 1).
    pub method_embed_std: f32,
    /// HyperAT: the factor heads also read the method embedding (default off; ours).
    pub method_to_heads: bool,
    /// LoRA kinds and HyperAT: also train the patch embedding (default off; ours).
    pub train_patch_embed: bool,
    /// Inner attack radius in [0,1] pixels (default 8/255).
    pub eps: f32,
    /// Inner attack step (default eps/4).
    pub alpha: Option<f32>,
    /// Inner attack iterations (default 10).
    pub attack_steps: usize,
    /// TRADES / MART beta (default 6).
    pub beta: f32,
    /// LoRA rank (default 8).
    pub rank: usize,
    /// LoRA alpha; scaling = alpha / rank (default 16).
    pub lora_alpha: f32,
    /// LoRA targets: `all`, `qv`, or a list of `qkv,proj,fc1,fc2`.
    pub targets: String,
    /// Training images held out at the end of the train split for the adaptive merge
    /// (default 5000).
    pub holdout: usize,
    /// Train on the first N remaining images only.
    pub train_limit: Option<usize>,
    /// Seed (default 0).
    pub seed: u64,
    /// Checkpoint interval in steps (default 100).
    pub checkpoint_every: usize,
    /// Hold-out evaluation of every model of the run every N steps (default: about
    /// every half epoch; 0 = never).
    pub eval_every: Option<usize>,
    /// Hold-out images each of those evaluations uses (default 512).
    pub eval_images: usize,
}

impl Default for TuneRequest {
    fn default() -> Self {
        Self {
            kind: "hyperat".into(),
            methods: "pgd-at,trades,mart".into(),
            dataset: "fashion-mnist".into(),
            steps: 1000,
            epochs: None,
            batch_size: 64,
            lr: 1e-3,
            warmup: None,
            warmup_fraction: 0.05,
            grad_clip: 1.0,
            method_warmup: 0,
            method_warmup_fraction: None,
            weight_decay: 0.0,
            lr_scales: String::new(),
            group_decays: String::new(),
            sampling: "random".into(),
            method_embed_std: 1.0,
            method_to_heads: false,
            train_patch_embed: false,
            eps: 8.0 / 255.0,
            alpha: None,
            attack_steps: 10,
            beta: 6.0,
            rank: 8,
            lora_alpha: 16.0,
            targets: "all".into(),
            holdout: 5000,
            train_limit: None,
            seed: 0,
            checkpoint_every: 100,
            eval_every: None,
            eval_images: 512,
        }
    }
}

impl TuneRequest {
    /// The full configuration, checked against the backbone's architecture, for
    /// `train_images` training images (which turn epochs into steps).
    pub fn config(&self, backbone: &Checkpoint, train_images: usize) -> Result<TuneConfig> {
        let per_epoch = train_images / self.batch_size.max(1);
        let steps = match self.epochs {
            Some(e) if !(e > 0.0 && e <= 10_000.0) => {
                return Err(Error::Invalid(format!(
                    "epochs must be in (0, 10000], got {e}"
                )));
            }
            Some(e) => ((e * per_epoch as f64).round() as usize).max(1),
            None => self.steps,
        };
        if !(0.0..1.0).contains(&self.warmup_fraction) {
            return Err(Error::Invalid(format!(
                "warm-up fraction must be in [0, 1), got {}",
                self.warmup_fraction
            )));
        }
        if !(self.method_embed_std > 0.0 && self.method_embed_std <= 100.0) {
            return Err(Error::Invalid(format!(
                "method embedding std must be in (0, 100], got {}",
                self.method_embed_std
            )));
        }
        if !(self.grad_clip >= 0.0) {
            return Err(Error::Invalid(format!(
                "gradient clip must be non-negative (0 = off), got {}",
                self.grad_clip
            )));
        }
        let kind = TuneKind::parse(&self.kind)?;
        let methods = match kind {
            TuneKind::LinearProbe => vec![],
            _ => parse_list(&self.methods)?,
        };
        let (targets, qv_only) = LoraConfig::parse_targets(&self.targets)?;
        let cfg = TuneConfig {
            kind,
            methods,
            defense: DefenseParams {
                eps: self.eps,
                alpha: self.alpha.unwrap_or(self.eps / 4.0),
                steps: self.attack_steps,
                beta: self.beta,
            },
            lora: LoraConfig {
                rank: self.rank,
                alpha: self.lora_alpha,
                targets,
                qv_only,
            },
            hyper: HyperConfig {
                method_embed_std: self.method_embed_std,
                method_to_heads: self.method_to_heads,
                ..HyperConfig::default()
            },
            steps,
            batch_size: self.batch_size,
            lr: self.lr,
            warmup: self
                .warmup
                .unwrap_or((self.warmup_fraction * steps as f64).round() as usize),
            method_warmup: match self.method_warmup_fraction {
                Some(f) if !(0.0..=1.0).contains(&f) => {
                    return Err(Error::Invalid(format!(
                        "method warm-up fraction must be in [0, 1], got {f}"
                    )));
                }
                Some(f) => (f * steps as f64).round() as usize,
                None => self.method_warmup,
            },
            weight_decay: self.weight_decay,
            groups: param_groups(&self.lr_scales, &self.group_decays)?,
            train_patch_embed: self.train_patch_embed,
            sampling: Sampling::parse(&self.sampling)?,
            grad_clip: self.grad_clip,
            seed: self.seed,
            checkpoint_every: self.checkpoint_every,
            eval_every: self.eval_every.unwrap_or((per_epoch / 2).max(1)),
            eval_images: self.eval_images,
            ..Default::default()
        };
        cfg.validate()?;
        cfg.lora.validate(&backbone.config)?;
        Ok(cfg)
    }

    /// Checks the request against the backbone without reading the dataset.
    pub fn validate(&self, backbone: &Checkpoint) -> Result<()> {
        self.config(backbone, self.batch_size.max(1)).map(|_| ())
    }

    /// Creates the run folder `dir` (config and a copy of the backbone in `backbone_dir`).
    pub fn create_run(&self, dir: &Path, backbone_dir: &Path) -> Result<RunDir> {
        let ck = Checkpoint::load(backbone_dir)?;
        let train_images = RunData::split(
            data::load(&self.dataset, Split::Train, Some(ck.config.input_shape()))?,
            self.holdout,
            self.train_limit,
        )?
        .train
        .len();
        let info = RunInfo {
            config: self.config(&ck, train_images)?,
            dataset: self.dataset.clone(),
            backbone_source: backbone_dir.display().to_string(),
            holdout: self.holdout,
            train_limit: self.train_limit,
        };
        RunDir::create(dir, &info, &ck.adapt(&Adapt::default())?)
    }
}

/// A run's images: the training set and the hold-out kept out of it.
#[derive(Clone, Debug)]
pub struct RunData {
    /// What trains: the train split minus the hold-out, cut to `train_limit`.
    pub train: Dataset,
    /// The last `holdout` images of the train split (`None` when 0).
    pub holdout: Option<Dataset>,
}

impl RunData {
    /// Splits a train split the way every run does.
    pub fn split(mut train: Dataset, holdout: usize, train_limit: Option<usize>) -> Result<Self> {
        let held = (holdout > 0)
            .then(|| train.split_holdout(holdout))
            .transpose()?;
        if let Some(n) = train_limit {
            train.truncate(n);
        }
        Ok(Self {
            train,
            holdout: held,
        })
    }

    /// A run's images: its dataset at the backbone's input size.
    pub fn load(run: &RunDir) -> Result<Self> {
        let info = run.info()?;
        let input = run.backbone()?.config.input_shape();
        Self::split(
            data::load(&info.dataset, Split::Train, Some(input))?,
            info.holdout,
            info.train_limit,
        )
    }
}
