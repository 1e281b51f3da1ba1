//! Standard (non-adversarial) training of a ViT: the backbone HyperAT later tunes.
//!
//! AdamW with linear warm-up and cosine decay, cross-entropy, shuffled batches from a
//! seed; after every epoch the clean accuracy on a test subset goes to the metrics.

use std::time::Instant;

use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::WarmupCosine;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::{EvalConfig, evaluate};
use crate::loss::cross_entropy;
use crate::progress::{Progress, Silent};
use crate::rng::Rng;
use crate::vit::Vit;

/// Settings of [`pretrain`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PretrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Stop after this many steps (all epochs if `None`).
    pub max_steps: Option<usize>,
    /// Peak learning rate (default 1e-3).
    pub lr: f64,
    /// Final learning rate of the cosine (default 1e-5).
    pub min_lr: f64,
    /// Warm-up steps (default 5% of all steps).
    pub warmup: Option<usize>,
    /// AdamW decoupled weight decay (default 0.05).
    pub weight_decay: f64,
    /// Images per step (default 128).
    pub batch_size: usize,
    /// Shuffling seed.
    pub seed: u64,
    /// Test images evaluated after each epoch (default 2000; 0 = none).
    pub eval_limit: usize,
    /// Log every N steps (default 20).
    pub log_every: usize,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        Self {
            epochs: 5,
            max_steps: None,
            lr: 1e-3,
            min_lr: 1e-5,
            warmup: None,
            weight_decay: 0.05,
            batch_size: 128,
            seed: 0,
            eval_limit: 2000,
            log_every: 20,
        }
    }
}

/// What [`pretrain`] measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PretrainSummary {
    /// Optimiser steps taken.
    pub steps: usize,
    /// Final clean test accuracy on the evaluated subset.
    pub test_acc: Option<f64>,
    /// Training wall time in seconds.
    pub seconds: f64,
}

/// Trains every parameter of `vit` (except the constant mean/std) on `train`.
/// `metrics` receives one JSON object per logged step and per epoch.
pub fn pretrain<B: AutodiffBackend>(
    mut vit: Vit<B>,
    train: &Dataset,
    test: Option<&Dataset>,
    cfg: &PretrainConfig,
    device: &B::Device,
    progress: &mut dyn Progress,
    metrics: &mut dyn FnMut(serde_json::Value),
) -> Result<(Vit<B>, PretrainSummary)> {
    let per_epoch = train.len() / cfg.batch_size.max(1);
    if per_epoch == 0 {
        return Err(Error::Invalid(format!(
            "batch size {} is larger than the training set ({} images)",
            cfg.batch_size,
            train.len()
        )));
    }
    let total = cfg
        .max_steps
        .unwrap_or(usize::MAX)
        .min(per_epoch * cfg.epochs);
    let sched = WarmupCosine {
        lr: cfg.lr,
        min_lr: cfg.min_lr,
        warmup: cfg.warmup.unwrap_or(total / 20).max(1),
        total,
    };
    let mut optim = AdamWConfig::new()
        .with_weight_decay(cfg.weight_decay as f32)
        .with_epsilon(1e-8)
        .init::<B, Vit<B>>();
    let mut rng = Rng::new(cfg.seed);
    let start = Instant::now();
    let (mut step, mut test_acc) = (0, None);
    let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
    progress.update(0, total, "steps");
    for epoch in 0..cfg.epochs {
        for idx in train.shuffled_batches(cfg.batch_size, &mut rng) {
            if step >= total {
                break;
            }
            if progress.cancelled() {
                return Err(Error::Invalid("cancelled".into()));
            }
            let (x, y) = train.batch::<B>(&idx, device);
            let logits = vit.forward(x);
            let loss = cross_entropy(logits.clone(), y.clone());
            let pred = logits.argmax(1).reshape([idx.len()]);
            let batch_correct = pred.equal(y).int().sum().into_scalar().elem::<i64>() as usize;
            let loss_value = loss.clone().into_scalar().elem::<f64>();
            if !loss_value.is_finite() {
                return Err(Error::Invalid(format!(
                    "loss became {loss_value} at step {step}; lower the learning rate"
                )));
            }
            let grads = GradientsParams::from_grads(loss.backward(), &vit);
            let lr = sched.at(step);
            vit = optim.step(lr, vit, grads);
            step += 1;
            loss_sum += loss_value * idx.len() as f64;
            correct += batch_correct;
            seen += idx.len();
            if step % cfg.log_every.max(1) == 0 || step == total {
                metrics(
                    json!({"kind": "train", "epoch": epoch, "step": step, "lr": lr,
                               "loss": loss_sum / seen as f64, "acc": correct as f64 / seen as f64,
                               "seconds": start.elapsed().as_secs_f64()}),
                );
                (loss_sum, correct, seen) = (0.0, 0, 0);
            }
            progress.update(step, total, "steps");
        }
        test_acc = eval_epoch(&vit, test, cfg, device, epoch, step, &start, metrics)?;
        if step >= total {
            break;
        }
    }
    Ok((
        vit,
        PretrainSummary {
            steps: step,
            test_acc,
            seconds: start.elapsed().as_secs_f64(),
        },
    ))
}

/// Clean accuracy on the first `eval_limit` test images, logged as an `eval` record.
fn eval_epoch<B: AutodiffBackend>(
    vit: &Vit<B>,
    test: Option<&Dataset>,
    cfg: &PretrainConfig,
    device: &B::Device,
    epoch: usize,
    step: usize,
    start: &Instant,
    metrics: &mut dyn FnMut(serde_json::Value),
) -> Result<Option<f64>> {
    let Some(test) = test.filter(|_| cfg.eval_limit > 0) else {
        return Ok(None);
    };
    let mut sub = test.clone();
    sub.truncate(cfg.eval_limit);
    let ec = EvalConfig {
        batch_size: 256,
        ..Default::default()
    };
    let r = evaluate::<B>(vit, &sub, &ec, device, &mut Silent)?;
    metrics(
        json!({"kind": "eval", "epoch": epoch, "step": step, "n": r.n,
                   "test_acc": r.clean_acc, "seconds": start.elapsed().as_secs_f64()}),
    );
    Ok(Some(r.clean_acc))
}
