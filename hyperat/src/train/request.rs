//! Pretraining as a caller asks for it (CLI flags, a server job): one set of defaults,
//! one validation, and a resumable output folder.
//!
//! The folder holds `pretrain.json` (the request), `checkpoint.safetensors` while
//! training (after every epoch), `metrics.jsonl`, and when done the timm checkpoint
//! (`config.json`, `model.safetensors`) with `train.json` (settings and summary).

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::{PretrainConfig, PretrainSummary, TrainSnapshot, pretrain_parallel};
use crate::checkpoint::{Adapt, Checkpoint, save_vit};
use crate::config::VitConfig;
use crate::data::{self, Augment, Dataset, Split};
use crate::error::{Error, Result};
use crate::io::{read, truncate_metrics, write_atomic};
use crate::parallel::check_split;
use crate::progress::Progress;
use crate::vit::Vit;

/// A pretraining run; every field has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainRequest {
    /// Architecture preset with random weights (default `vit-tiny-fmnist`); ignored
    /// when `from` is given.
    pub preset: String,
    /// Start from this timm checkpoint folder instead (its head is replaced for the
    /// dataset's classes, position embeddings resampled for its image size).
    pub from: Option<PathBuf>,
    /// Re-patch a `from` checkpoint to this patch size.
    pub patch_size: Option<usize>,
    /// `fashion-mnist`, `cifar10`, `cifar100` or `folder:PATH`.
    pub dataset: String,
    /// The last N training images are kept out of training (default 5000, the images
    /// `hyperat tune` holds out too) and evaluated after each epoch; 0 evaluates on the
    /// test split instead.
    pub holdout: usize,
    /// Train on the first N (remaining) training images only.
    pub train_limit: Option<usize>,
    /// Passes over the training set (default 5).
    pub epochs: usize,
    /// Stop after this many optimiser steps.
    pub max_steps: Option<usize>,
    /// Peak learning rate (default 1e-3).
    pub lr: f64,
    /// AdamW weight decay (default 0.05).
    pub weight_decay: f64,
    /// Images per step (default 128).
    pub batch_size: usize,
    /// Warm-up steps (default 5% of all steps).
    pub warmup: Option<usize>,
    /// Evaluation images used after each epoch (default 2000).
    pub eval_limit: usize,
    /// Seed of the initial weights, the data order and the augmentation (default 0).
    pub seed: u64,
    /// Random-crop padding in pixels (default 2; 0 = no crop).
    pub crop_pad: usize,
    /// Random horizontal flips (default on).
    pub hflip: bool,
}

impl Default for PretrainRequest {
    fn default() -> Self {
        let loop_defaults = PretrainConfig::default();
        Self {
            preset: "vit-tiny-fmnist".into(),
            from: None,
            patch_size: None,
            dataset: "fashion-mnist".into(),
            holdout: 5000,
            train_limit: None,
            epochs: loop_defaults.epochs,
            max_steps: None,
            lr: loop_defaults.lr,
            weight_decay: loop_defaults.weight_decay,
            batch_size: loop_defaults.batch_size,
            warmup: None,
            eval_limit: loop_defaults.eval_limit,
            seed: 0,
            crop_pad: loop_defaults.augment.crop_pad,
            hflip: loop_defaults.augment.hflip,
        }
    }
}

impl PretrainRequest {
    /// Checks what can be checked without data.
    pub fn validate(&self) -> Result<()> {
        if self.from.is_none() {
            VitConfig::preset(&self.preset)?;
        }
        if self.epochs == 0 || self.batch_size == 0 || self.max_steps == Some(0) {
            return Err(Error::Invalid(
                "epochs, batch size and max steps must be positive".into(),
            ));
        }
        if !(self.lr > 0.0) || !(self.weight_decay >= 0.0) {
            return Err(Error::Invalid(format!(
                "lr must be positive and weight decay non-negative, got {} and {}",
                self.lr, self.weight_decay
            )));
        }
        if self.crop_pad > 16 {
            return Err(Error::Invalid(format!(
                "crop padding of {} px is more than 16",
                self.crop_pad
            )));
        }
        Ok(())
    }

    /// The training loop's settings.
    pub fn loop_config(&self) -> PretrainConfig {
        PretrainConfig {
            epochs: self.epochs,
            max_steps: self.max_steps,
            lr: self.lr,
            weight_decay: self.weight_decay,
            batch_size: self.batch_size,
            warmup: self.warmup,
            eval_limit: self.eval_limit,
            seed: self.seed,
            augment: Augment {
                crop_pad: self.crop_pad,
                hflip: self.hflip,
            },
            ..Default::default()
        }
    }

    /// The request a folder was started with (to resume it).
    pub fn read(out: &Path) -> Result<Self> {
        let path = out.join("pretrain.json");
        serde_json::from_slice(&read(&path)?)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Trains (or resumes, or finds finished) the backbone in `out`; returns the summary.
    pub fn run<B: AutodiffBackend>(
        &self,
        out: &Path,
        device: &B::Device,
        progress: &mut dyn Progress,
    ) -> Result<PretrainSummary> {
        self.run_parallel::<B>(out, std::slice::from_ref(device), progress)
    }

    /// [`PretrainRequest::run`] data-parallel over `devices` (each step's batch split
    /// evenly over them; see [`crate::parallel`]).
    pub fn run_parallel<B: AutodiffBackend>(
        &self,
        out: &Path,
        devices: &[B::Device],
        progress: &mut dyn Progress,
    ) -> Result<PretrainSummary> {
        self.validate()?;
        check_split(self.batch_size, devices.len())?;
        let default_device = B::Device::default();
        let device = devices.first().unwrap_or(&default_device);
        let request_path = out.join("pretrain.json");
        if request_path.exists() {
            if Self::read(out)? != *self {
                return Err(Error::Invalid(format!(
                    "{} holds a pretraining run with other settings (resume it, or use another folder)",
                    out.display()
                )));
            }
        } else {
            write_atomic(
                &request_path,
                serde_json::to_string_pretty(self).expect("json").as_bytes(),
            )?;
        }
        if let Some(summary) = finished(out)? {
            return Ok(summary);
        }
        let (train, eval_set) = self.data()?;
        let (cfg, vit) = self.initial_model::<B>(&train, device)?;
        let state = out.join("checkpoint.safetensors");
        let metrics_path = out.join("metrics.jsonl");
        truncate_metrics(&metrics_path, TrainSnapshot::step_of(&state)?)?;
        let mut metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .map_err(|e| Error::io(&metrics_path, e))?;
        let mut write_err = None;
        let mut log = |v: serde_json::Value| {
            if let Err(e) = writeln!(metrics, "{v}") {
                write_err.get_or_insert(Error::io(&metrics_path, e));
            }
        };
        let lc = self.loop_config();
        let mut forward = Forward {
            progress,
            log: &mut log,
        };
        let (vit, summary) = pretrain_parallel(
            vit,
            &train,
            eval_set.as_ref().map(|(n, d)| (*n, d)),
            &lc,
            devices,
            &mut forward,
            Some(&state),
        )?;
        if let Some(e) = write_err {
            return Err(e);
        }
        save_vit(out, &cfg, &vit)?;
        let info = serde_json::json!({"request": self, "config": lc, "summary": summary,
                                      "params": vit.num_params()});
        write_atomic(
            out.join("train.json"),
            serde_json::to_string_pretty(&info)
                .expect("json")
                .as_bytes(),
        )?;
        std::fs::remove_file(&state).map_err(|e| Error::io(&state, e))?;
        Ok(summary)
    }

    /// The training images (less the hold-out, cut to `train_limit`) and the set
    /// evaluated after each epoch: the hold-out, else the test split when there is one.
    fn data(&self) -> Result<(Dataset, Option<(&'static str, Dataset)>)> {
        let folder_input = match (&self.from, self.dataset.starts_with("folder:")) {
            (_, false) => None,
            (Some(dir), true) => Some(Checkpoint::load(dir)?.config.input_shape()),
            (None, true) => Some(VitConfig::preset(&self.preset)?.input_shape()),
        };
        let mut train = data::load(&self.dataset, Split::Train, folder_input)?;
        let held_out = (self.holdout > 0)
            .then(|| train.split_holdout(self.holdout))
            .transpose()?;
        if let Some(n) = self.train_limit {
            train.truncate(n);
        }
        let eval_set = match held_out {
            Some(h) => Some(("holdout", h)),
            None => data::load(&self.dataset, Split::Test, Some(train.shape))
                .ok()
                .map(|t| ("test", t)),
        };
        Ok((train, eval_set))
    }

    /// The architecture for `train`'s images and classes, with its starting weights.
    fn initial_model<B: AutodiffBackend>(
        &self,
        train: &Dataset,
        device: &B::Device,
    ) -> Result<(VitConfig, Vit<B>)> {
        let [c, h, w] = train.shape;
        let classes = train.classes.clone();
        let (cfg, vit) = match &self.from {
            None => {
                let mut cfg = VitConfig::preset(&self.preset)?;
                if cfg.in_chans != c {
                    return Err(Error::Invalid(format!(
                        "preset {} takes {} channels, dataset `{}` has {c}",
                        self.preset, cfg.in_chans, self.dataset
                    )));
                }
                cfg.img_size = [h, w];
                cfg.num_classes = classes.len();
                cfg.label_names = Some(classes);
                cfg.validate()?;
                B::seed(device, self.seed);
                let vit = Vit::<B>::init(&cfg, device);
                (cfg, vit)
            }
            Some(dir) => {
                let adapt = Adapt {
                    img_size: Some([h, w]),
                    patch_size: self.patch_size,
                    num_classes: Some(classes.len()),
                    label_names: Some(classes),
                    seed: self.seed,
                    ..Default::default()
                };
                let ck = Checkpoint::load(dir)?.adapt(&adapt)?;
                if ck.config.in_chans != c {
                    return Err(Error::Invalid(format!(
                        "{} takes {} channels, dataset `{}` has {c}",
                        dir.display(),
                        ck.config.in_chans,
                        self.dataset
                    )));
                }
                let vit = ck.build::<B>(device)?;
                (ck.config, vit)
            }
        };
        Ok((cfg, vit))
    }
}

/// The summary of a finished folder (`train.json` beside the checkpoint), if it is one.
fn finished(out: &Path) -> Result<Option<PretrainSummary>> {
    let path = out.join("train.json");
    if !path.exists() || !out.join("model.safetensors").exists() {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_slice(&read(&path)?)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    Ok(serde_json::from_value(v["summary"].clone()).ok())
}

/// Passes progress on and writes each metrics record to the folder's file as well.
struct Forward<'a> {
    progress: &'a mut dyn Progress,
    log: &'a mut dyn FnMut(serde_json::Value),
}

impl Progress for Forward<'_> {
    fn update(&mut self, done: usize, total: usize, message: &str) {
        self.progress.update(done, total, message);
    }
    fn metrics(&mut self, record: &serde_json::Value) {
        (self.log)(record.clone());
        self.progress.metrics(record);
    }
    fn cancelled(&self) -> bool {
        self.progress.cancelled()
    }
}
