//! A tuning run as a caller asks for it (CLI flags, a server job): the few choices a
//! user makes, with method.md's defaults for the rest, turned into a run folder.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{RunInfo, TuneConfig, TuneKind, start_run};
use crate::checkpoint::{Adapt, Checkpoint};
use crate::data::{self, Dataset, Split};
use crate::defense::{DefenseParams, parse_list};
use crate::error::{Error, Result};
use crate::hypernet::HyperConfig;
use crate::io::read;
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
    /// Optimiser steps (default 1000).
    pub steps: usize,
    /// Images per step (default 64).
    pub batch_size: usize,
    /// Peak learning rate (default 1e-3).
    pub lr: f64,
    /// Warm-up steps (default 5% of the steps).
    pub warmup: Option<usize>,
    /// HyperAT: steps that train the first method alone before sampling starts
    /// (default 0).
    pub method_warmup: usize,
    /// AdamW weight decay (default 0).
    pub weight_decay: f64,
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
}

impl Default for TuneRequest {
    fn default() -> Self {
        Self {
            kind: "hyperat".into(),
            methods: "pgd-at,trades,mart".into(),
            dataset: "fashion-mnist".into(),
            steps: 1000,
            batch_size: 64,
            lr: 1e-3,
            warmup: None,
            method_warmup: 0,
            weight_decay: 0.0,
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
        }
    }
}

impl TuneRequest {
    /// The full configuration, checked against the backbone's architecture.
    pub fn config(&self, backbone: &Checkpoint) -> Result<TuneConfig> {
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
            hyper: HyperConfig::default(),
            steps: self.steps,
            batch_size: self.batch_size,
            lr: self.lr,
            warmup: self.warmup.unwrap_or(self.steps / 20),
            method_warmup: self.method_warmup,
            weight_decay: self.weight_decay,
            seed: self.seed,
            checkpoint_every: self.checkpoint_every,
            ..Default::default()
        };
        cfg.validate()?;
        cfg.lora.validate(&backbone.config)?;
        Ok(cfg)
    }

    /// Creates the run folder `dir` (config and a copy of the backbone in `backbone_dir`).
    pub fn create_run(&self, dir: &Path, backbone_dir: &Path) -> Result<RunInfo> {
        let ck = Checkpoint::load(backbone_dir)?;
        let info = RunInfo {
            config: self.config(&ck)?,
            dataset: self.dataset.clone(),
            backbone_source: backbone_dir.display().to_string(),
            holdout: self.holdout,
            train_limit: self.train_limit,
        };
        start_run(dir, &info, &ck.adapt(&Adapt::default())?)?;
        Ok(info)
    }
}

/// Reads a run folder's `run.json`.
pub fn read_run_info(dir: &Path) -> Result<RunInfo> {
    serde_json::from_slice(&read(dir.join("run.json"))?)
        .map_err(|e| Error::Config(format!("{}/run.json: {e}", dir.display())))
}

/// The training images of a run: its dataset's train split at the backbone's input
/// size, minus the hold-out, cut to `train_limit`.
pub fn train_set(dir: &Path, info: &RunInfo) -> Result<Dataset> {
    let input = Checkpoint::load(dir.join("backbone"))?.config.input_shape();
    let mut train = data::load(&info.dataset, Split::Train, Some(input))?;
    train.split_holdout(info.holdout)?;
    if let Some(n) = info.train_limit {
        train.truncate(n);
    }
    Ok(train)
}
