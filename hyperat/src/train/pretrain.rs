//! Standard (non-adversarial) training of a ViT: the backbone HyperAT later tunes.
//!
//! AdamW (PyTorch semantics, [`crate::optim`]) with linear warm-up and cosine decay,
//! cross-entropy, a fresh permutation of the data per epoch and per-step augmentation,
//! both functions of `(seed, step)`. After every epoch the clean accuracy on the
//! evaluation set (the hold-out, or the test split) goes to the metrics and, given a
//! state file, the weights, the optimiser and
//! the step are checkpointed there atomically: a killed run resumes from its last epoch
//! and reaches the weights an uninterrupted one would.

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{TrainSnapshot, WarmupCosine};
use crate::data::{Augment, Dataset};
use crate::error::{Error, Result};
use crate::eval::{EvalConfig, evaluate};
use crate::loss::cross_entropy;
use crate::optim::{AdamW, AdamWConfig};
use crate::parallel::{Peer, on_devices};
use crate::progress::{Progress, Silent};
use crate::rng::{Rng, mix, step_batch};
use crate::vit::Vit;

/// Settings of [`pretrain`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// Seed of the data order and the augmentation.
    pub seed: u64,
    /// Evaluation images used after each epoch (default 2000; 0 = none).
    pub eval_limit: usize,
    /// Log every N steps (default 20).
    pub log_every: usize,
    /// Training-time augmentation (default: 2-px crop and horizontal flip).
    #[serde(default)]
    pub augment: Augment,
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
            augment: Augment::default(),
        }
    }
}

impl PretrainConfig {
    /// Optimiser steps over `n` training images (drops each epoch's short remainder).
    pub fn total_steps(&self, n: usize) -> usize {
        let per_epoch = n / self.batch_size.max(1);
        self.max_steps
            .unwrap_or(usize::MAX)
            .min(per_epoch * self.epochs)
    }
}

/// What [`pretrain`] measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PretrainSummary {
    /// Optimiser steps taken.
    pub steps: usize,
    /// Final clean accuracy on the evaluation set (the hold-out, or the test split).
    pub eval_acc: Option<f64>,
    /// Which split `eval_acc` was measured on.
    pub eval_split: Option<String>,
    /// Training wall time in seconds (summed over resumptions).
    pub seconds: f64,
}

/// Trains every parameter of `vit` (except the constant mean/std) on `train`.
/// `progress` receives one metrics record per logged step and per epoch. With `state`, the
/// run checkpoints there after every epoch and, if the file exists, resumes from it
/// (the caller keeps its metrics file consistent: [`TrainSnapshot::step_of`] says where
/// it left).
pub fn pretrain<B: AutodiffBackend>(
    vit: Vit<B>,
    train: &Dataset,
    eval_set: Option<(&str, &Dataset)>,
    cfg: &PretrainConfig,
    device: &B::Device,
    progress: &mut dyn Progress,
    state: Option<&Path>,
) -> Result<(Vit<B>, PretrainSummary)> {
    let devices = std::slice::from_ref(device);
    pretrain_parallel(vit, train, eval_set, cfg, devices, progress, state)
}

/// [`pretrain`] data-parallel over `devices` (one peer per device, see
/// [`crate::parallel`]): each step's batch splits evenly over the peers, whose averaged
/// gradients make the single-device step. Peer 0 evaluates, reports to `progress` and
/// writes `state`; the trained model returned is peer 0's.
pub fn pretrain_parallel<B: AutodiffBackend>(
    vit: Vit<B>,
    train: &Dataset,
    eval_set: Option<(&str, &Dataset)>,
    cfg: &PretrainConfig,
    devices: &[B::Device],
    progress: &mut dyn Progress,
    state: Option<&Path>,
) -> Result<(Vit<B>, PretrainSummary)> {
    let start = Mutex::new(vit);
    on_devices::<B, _>(devices, progress, |peer, device, progress| {
        let vit = start
            .lock()
            .expect("the starting model")
            .clone()
            .fork(device);
        let run = PeerRun {
            peer,
            device,
            state,
        };
        run.pretrain(vit, train, eval_set, cfg, progress)
    })
}

/// Where one peer of [`pretrain_parallel`] runs.
struct PeerRun<'a, B: Backend> {
    peer: Peer,
    device: &'a B::Device,
    /// Read by every peer to resume, written by peer 0.
    state: Option<&'a Path>,
}

impl<B: AutodiffBackend> PeerRun<'_, B> {
    fn pretrain(
        &self,
        mut vit: Vit<B>,
        train: &Dataset,
        eval_set: Option<(&str, &Dataset)>,
        cfg: &PretrainConfig,
        progress: &mut dyn Progress,
    ) -> Result<(Vit<B>, PretrainSummary)> {
        let (peer, device) = (self.peer, self.device);
        let per_epoch = train.len() / cfg.batch_size.max(1);
        if per_epoch == 0 {
            return Err(Error::Invalid(format!(
                "batch size {} is larger than the training set ({} images)",
                cfg.batch_size,
                train.len()
            )));
        }
        let rows = peer.rows(cfg.batch_size)?;
        let total = cfg.total_steps(train.len());
        let sched = WarmupCosine {
            lr: cfg.lr,
            min_lr: cfg.min_lr,
            warmup: cfg.warmup.unwrap_or(total / 20).max(1),
            total,
        };
        vit.mean = vit.mean.set_require_grad(false);
        vit.std = vit.std.set_require_grad(false);
        let mut opt = AdamW::<B>::new(AdamWConfig {
            weight_decay: cfg.weight_decay,
            max_grad_norm: None,
            ..Default::default()
        });
        let (mut step, mut seconds_before) = (0, 0.0);
        if let Some(path) = self.state.filter(|p| p.exists()) {
            let snap = TrainSnapshot::read(path)?;
            vit = snap.restore(vit, &mut opt, device)?;
            (step, seconds_before) = (snap.step, snap.seconds);
        }
        let start = Instant::now();
        let seconds = |start: &Instant| seconds_before + start.elapsed().as_secs_f64();
        let mut eval_acc = None;
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0f64, 0usize);
        progress.update(step, total, "steps");
        while step < total {
            if peer.any::<B::InnerBackend>(progress.cancelled(), device)? {
                return Err(Error::Cancelled);
            }
            let idx = step_batch(train.len(), cfg.batch_size, cfg.seed, step);
            let mut rng = Rng::new(mix(cfg.seed, step as u64, 0xA064));
            let (x, y) =
                train.augmented_rows::<B>(&idx, rows.clone(), &cfg.augment, &mut rng, device);
            let logits = vit.forward(x);
            let loss = cross_entropy(logits.clone(), y.clone());
            let pred = logits.argmax(1).reshape([rows.len()]);
            let hits = pred.equal(y).int().sum().into_scalar().elem::<i64>() as f64;
            // The whole batch's loss and accuracy (means over equal shares), the same on
            // every peer, so a diverging loss stops all peers at once.
            let local = [
                loss.clone().into_scalar().elem::<f64>(),
                hits / rows.len() as f64,
            ];
            let [loss_value, batch_acc] = peer.mean::<B::InnerBackend>(&local, device)?[..] else {
                unreachable!("two figures in, two out")
            };
            if !loss_value.is_finite() {
                return Err(Error::Invalid(format!(
                    "loss became {loss_value} at step {step}; lower the learning rate"
                )));
            }
            let mut grads = loss.backward();
            peer.average_grads(&vit, &mut grads)?;
            let lr = sched.at(step);
            vit = opt.step(lr, vit, &grads).0;
            step += 1;
            loss_sum += loss_value * idx.len() as f64;
            correct += batch_acc * idx.len() as f64;
            seen += idx.len();
            let epoch = (step - 1) / per_epoch;
            if step % cfg.log_every.max(1) == 0 || step == total {
                progress.metrics(
                    &json!({"kind": "train", "epoch": epoch, "step": step, "lr": lr,
                               "loss": loss_sum / seen as f64, "acc": correct / seen as f64,
                               "seconds": seconds(&start)}),
                );
                (loss_sum, correct, seen) = (0.0, 0.0, 0);
            }
            progress.update(step, total, "steps");
            if peer.leads() && (step % per_epoch == 0 || step == total) {
                let at = (epoch, step, seconds(&start));
                eval_acc = eval_epoch(&vit, eval_set, cfg, device, at, progress)?;
                if let Some(path) = self.state {
                    TrainSnapshot::capture(&vit, &opt, step, seconds(&start)).write(path)?;
                }
            }
        }
        let summary = PretrainSummary {
            steps: step,
            eval_acc,
            eval_split: eval_set.map(|(name, _)| name.to_string()),
            seconds: seconds(&start),
        };
        Ok((vit, summary))
    }
}

/// Clean accuracy on the first `eval_limit` images of the evaluation set, logged as an
/// `eval` record (`at`: epoch, step and seconds so far).
fn eval_epoch<B: AutodiffBackend>(
    vit: &Vit<B>,
    eval_set: Option<(&str, &Dataset)>,
    cfg: &PretrainConfig,
    device: &B::Device,
    (epoch, step, seconds): (usize, usize, f64),
    progress: &mut dyn Progress,
) -> Result<Option<f64>> {
    let Some((split, set)) = eval_set.filter(|_| cfg.eval_limit > 0) else {
        return Ok(None);
    };
    let mut sub = set.clone();
    sub.truncate(cfg.eval_limit);
    let ec = EvalConfig {
        batch_size: 256,
        ..Default::default()
    };
    // A frozen copy: evaluated with trainable parameters, every forward would record an
    // autodiff graph that no backward ever frees.
    let frozen = vit.clone().no_grad();
    let r = evaluate::<B>(&frozen, &sub, &ec, device, &mut Silent)?;
    progress.metrics(
        &json!({"kind": "eval", "epoch": epoch, "step": step, "n": r.n,
                   "split": split, "acc": r.clean_acc, "seconds": seconds}),
    );
    Ok(Some(r.clean_acc))
}
