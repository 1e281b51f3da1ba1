//! The tuning loop, its run folder, checkpoints and resumption.
//!
//! A run folder holds `run.json` (the config), `backbone/` (the timm checkpoint the run
//! started from), `checkpoint.safetensors` (trainable tensors `model.*`, optimiser
//! moments `opt.*`, the step in the metadata; written atomically every
//! `checkpoint_every` steps), `metrics.jsonl` (one record per logged step) and, when
//! done, `summary.json`. Everything random is a pure function of `(seed, step)`, so a
//! run resumed from a checkpoint reaches the same weights as one never interrupted.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::diagnostics::run_diagnostics;
use super::monitor::holdout_records;
use super::{TuneConfig, Tuned};
use crate::attack::{Adapted, Classifier};
use crate::checkpoint::Checkpoint;
use crate::config::VitConfig;
use crate::data::Dataset;
use crate::defense::{Defense, by_name};
use crate::error::{Error, Result};
use crate::io::{read, truncate_metrics, write_atomic};
use crate::loss::cross_entropy;
use crate::named_params::{count_trainable, load_named};
use crate::optim::{AdamW, AdamWConfig};
use crate::progress::Progress;
use crate::rng::{Rng, mix, step_batch};
use crate::train::{TrainSnapshot, WarmupCosine};

/// `run.json`: the config plus what the run is tuning.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunInfo {
    /// Tuning configuration.
    pub config: TuneConfig,
    /// Dataset spec the run trains on.
    pub dataset: String,
    /// Where the backbone came from (informational; the run keeps its own copy).
    pub backbone_source: String,
    /// Images at the end of the train split held out for the adaptive merge.
    #[serde(default)]
    pub holdout: usize,
    /// Train on the first N remaining images only.
    #[serde(default)]
    pub train_limit: Option<usize>,
}

/// `summary.json`: what a finished run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TuneSummary {
    /// Steps taken in total.
    pub steps: usize,
    /// Trainable scalars.
    pub trainable_params: usize,
    /// Training wall time in seconds (summed over resumptions).
    pub seconds: f64,
    /// Peak resident memory of the process in MiB (Linux `VmHWM`).
    pub peak_mem_mib: Option<f64>,
}

/// Creates a run folder: `run.json` and a copy of the backbone.
pub fn start_run(dir: &Path, info: &RunInfo, backbone: &Checkpoint) -> Result<()> {
    info.config.validate()?;
    if dir.join("run.json").exists() {
        return Err(Error::Invalid(format!(
            "{} already holds a run (resume it instead)",
            dir.display()
        )));
    }
    backbone.save(dir.join("backbone"))?;
    write_atomic(
        dir.join("run.json"),
        serde_json::to_string_pretty(info).expect("json").as_bytes(),
    )
}

/// Reads a run folder's config, backbone and latest checkpoint (step 0 if none).
pub fn load_run<B: AutodiffBackend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(RunInfo, VitConfig, Tuned<B>, usize)> {
    let text = read(dir.join("run.json"))?;
    let info: RunInfo = serde_json::from_slice(&text)
        .map_err(|e| Error::Config(format!("{}/run.json: {e}", dir.display())))?;
    let ck = Checkpoint::load(dir.join("backbone"))?;
    B::seed(device, info.config.seed);
    let mut model = Tuned::new(ck.build::<B>(device)?, &ck.config, &info.config, device);
    let mut step = 0;
    let path = dir.join("checkpoint.safetensors");
    if path.exists() {
        let snap = TrainSnapshot::read(&path)?;
        model = load_named(model, &snap.model, device)?;
        step = snap.step;
    }
    Ok((info, ck.config, model, step))
}

/// The step of a run folder's latest checkpoint (0 when there is none yet).
pub fn checkpoint_step_of(dir: &Path) -> Result<usize> {
    TrainSnapshot::step_of(&dir.join("checkpoint.safetensors"))
}

/// Runs (or resumes) the run in `dir` on `train` until its last step, or until
/// `stop_at` steps (to simulate an interruption). Returns the summary when finished;
/// [`Error::Cancelled`] when it stopped before (a cancel through `progress`, or
/// `stop_at`), the folder holding its last checkpoint to resume from.
/// With a `holdout` set (and `eval_every` in the config), every model of the run is
/// evaluated on it as it trains; HyperAT runs also record their delta diagnostics at
/// every checkpoint.
pub fn run<B: AutodiffBackend>(
    dir: &Path,
    train: &Dataset,
    holdout: Option<&Dataset>,
    device: &B::Device,
    progress: &mut dyn Progress,
    stop_at: Option<usize>,
) -> Result<TuneSummary> {
    let (info, _vit_cfg, mut model, start) = load_run::<B>(dir, device)?;
    let cfg = &info.config;
    if train.len() < cfg.batch_size {
        return Err(Error::Invalid(format!(
            "batch size {} exceeds the {} training images",
            cfg.batch_size,
            train.len()
        )));
    }
    let defenses: Vec<Box<dyn Defense<B>>> = cfg
        .methods
        .iter()
        .map(|m| by_name::<B>(m, &cfg.defense))
        .collect::<Result<_>>()?;
    let mut opt = AdamW::<B>::new(AdamWConfig {
        weight_decay: cfg.weight_decay,
        max_grad_norm: (cfg.grad_clip > 0.0).then_some(cfg.grad_clip),
        ..Default::default()
    });
    opt.groups = cfg.groups.clone();
    let mut seconds = 0.0;
    if start > 0 {
        let snap = TrainSnapshot::read(&dir.join("checkpoint.safetensors"))?;
        opt.load_state(snap.optimizer_t, &snap.moments, device)?;
        seconds = snap.seconds;
    }
    let metrics_path = dir.join("metrics.jsonl");
    truncate_metrics(&metrics_path, start)?;
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(|e| Error::io(&metrics_path, e))?;
    let sched = WarmupCosine {
        lr: cfg.lr,
        min_lr: cfg.min_lr,
        warmup: cfg.warmup.max(1),
        total: cfg.steps,
    };
    let end = stop_at.unwrap_or(cfg.steps).min(cfg.steps);
    let eval_images = holdout.filter(|_| cfg.eval_every > 0).map(|h| {
        let mut sub = h.clone();
        sub.truncate(cfg.eval_images);
        sub
    });
    let mut record = |r: serde_json::Value, progress: &mut dyn Progress| -> Result<()> {
        writeln!(metrics, "{r}").map_err(|e| Error::io(&metrics_path, e))?;
        progress.metrics(&r);
        Ok(())
    };
    let clock = Instant::now();
    // Hold-out evaluations are not training: their time is left out of `seconds`.
    let mut monitor_secs = 0.0;
    let mut last_save = start;
    progress.update(start, cfg.steps, "steps");
    for step in start..end {
        if progress.cancelled() {
            break;
        }
        let mut rng = Rng::new(mix(cfg.seed, step as u64, 0x57E9));
        let idx = step_batch(train.len(), cfg.batch_size, cfg.seed, step);
        let (x, y) = train.batch::<B::InnerBackend>(&idx, device);
        let method = cfg.method_at(step, &mut rng);
        let adapters = model.adapters(method);
        let defense = defenses.get(method);
        let (loss, clean_logits, adv_logits) = match defense {
            None => {
                let logits = model.logits(Tensor::from_inner(x), adapters.as_ref());
                (
                    cross_entropy(logits.clone(), Tensor::from_inner(y.clone())),
                    Some(logits),
                    None,
                )
            }
            Some(d) => {
                // Attack a frozen view: same weights, same generated factors, no graph.
                let frozen_vit = model.vit.clone().no_grad();
                let frozen_ad = adapters.as_ref().map(|a| a.detach());
                let view: Box<dyn Classifier<B> + '_> = match &frozen_ad {
                    Some(a) => Box::new(Adapted {
                        vit: &frozen_vit,
                        adapters: a,
                    }),
                    None => Box::new(frozen_vit.clone()),
                };
                let x_adv = d.attack(view.as_ref(), x.clone(), y.clone(), &mut rng);
                let b = idx.len();
                let yd = Tensor::from_inner(y.clone());
                if d.needs_clean() {
                    // One forward for clean and adversarial images together.
                    let both = model.logits(
                        Tensor::from_inner(Tensor::cat(vec![x, x_adv], 0)),
                        adapters.as_ref(),
                    );
                    let clean = both.clone().narrow(0, 0, b);
                    let adv = both.narrow(0, b, b);
                    (
                        d.outer_loss(Some(clean.clone()), adv.clone(), yd),
                        Some(clean),
                        Some(adv),
                    )
                } else {
                    let adv = model.logits(Tensor::from_inner(x_adv), adapters.as_ref());
                    (d.outer_loss(None, adv.clone(), yd), None, Some(adv))
                }
            }
        };
        let loss_value = loss.clone().into_scalar().elem::<f64>();
        if !loss_value.is_finite() {
            return Err(Error::Invalid(format!(
                "loss became {loss_value} at step {step}; lower the learning rate"
            )));
        }
        let grads = loss.backward();
        let lr = sched.at(step);
        let (next, info_step) = opt.step(lr, model, &grads);
        model = next;
        if (step + 1) % cfg.log_every.max(1) == 0 || step + 1 == cfg.steps {
            let acc = |l: Option<Tensor<B, 2>>| {
                l.map(|l| {
                    let p = l.inner().argmax(1).reshape([idx.len()]);
                    p.equal(y.clone()).int().sum().into_scalar().elem::<i64>() as f64
                        / idx.len() as f64
                })
            };
            let r = json!({"step": step + 1, "method": cfg.methods.get(method).map(String::as_str).unwrap_or("none"),
                "loss": loss_value, "clean_acc": acc(clean_logits), "adv_acc": acc(adv_logits), "lr": lr,
                "grad_norm": info_step.grad_norm, "grad_tensors": info_step.updated, "seconds": seconds + clock.elapsed().as_secs_f64() - monitor_secs});
            record(r, progress)?;
        }
        let done = step + 1;
        // Every `eval_every` steps, and at the end of runs long enough to have had one
        // (a short classroom run does not pay for a curve of one point).
        if let Some(images) = &eval_images
            && (done % cfg.eval_every == 0 || (done == cfg.steps && cfg.steps > cfg.eval_every))
        {
            let started = Instant::now();
            for r in holdout_records(&model, cfg, images, done, device)? {
                record(r, progress)?;
            }
            monitor_secs += started.elapsed().as_secs_f64();
        }
        progress.update(
            step + 1,
            cfg.steps,
            cfg.methods
                .get(method)
                .map(String::as_str)
                .unwrap_or("clean"),
        );
        if done % cfg.checkpoint_every == 0 || done == end {
            if let Some(d) = run_diagnostics(&model, &cfg.methods) {
                record(d.record(done), progress)?;
            }
            TrainSnapshot::capture(
                &model,
                &opt,
                step + 1,
                seconds + clock.elapsed().as_secs_f64() - monitor_secs,
            )
            .write(&dir.join("checkpoint.safetensors"))?;
            last_save = step + 1;
        }
    }
    if last_save < cfg.steps {
        return Err(Error::Cancelled);
    }
    let summary = TuneSummary {
        steps: cfg.steps,
        trainable_params: count_trainable(&model),
        seconds: seconds + clock.elapsed().as_secs_f64() - monitor_secs,
        peak_mem_mib: peak_mem_mib(),
    };
    write_atomic(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)
            .expect("json")
            .as_bytes(),
    )?;
    Ok(summary)
}

/// Peak resident set size of this process (Linux), in MiB.
pub fn peak_mem_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
