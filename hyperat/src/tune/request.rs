//! A tuning run as a caller asks for it (CLI flags, a server job): the few choices a
//! user makes, with method.md's defaults for the rest, turned into a run folder.

use std::path::Path;

use super::{RunDir, RunInfo, Sampling, TuneConfig, TuneKind, param_groups};
use crate::checkpoint::{Adapt, Checkpoint};
use crate::data::{self, Dataset, Split};
use crate::defense::{DefenseParams, parse_list};
use crate::error::{Error, Result};
use crate::hypernet::HyperConfig;
use crate::lora::LoraConfig;
pub use crate::wire::TuneRequest;

impl TuneRequest {
    /// The full configuration, checked against the backbone's architecture, for
    /// `train_images` training images (which turn epochs into steps).
    pub fn config(&self, backbone: &Checkpoint, train_images: usize) -> Result<TuneConfig> {
        let per_epoch = train_images / self.batch_size.max(1);
        let eps = self
            .eps
            .unwrap_or_else(|| data::standard_eps(&self.dataset));
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
                eps,
                alpha: self.alpha.unwrap_or(eps / 4.0),
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
            method_diversity: self.method_diversity,
            method_diversity_margin: self.method_diversity_margin,
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
