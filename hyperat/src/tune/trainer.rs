//! One tuning run's state between steps: the model, the optimiser, the defenses and the
//! step reached, resumed from (and saved to) its [`RunDir`].
//!
//! Everything random is a pure function of `(seed, step)`, so a run resumed from a
//! checkpoint reaches the same weights as one never interrupted.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use super::Tuned;
use super::diversity::delta_similarity;
use super::run_dir::{RunDir, RunInfo, tuned_at};
use crate::attack::frozen_view;
use crate::data::Dataset;
use crate::defense::{Defense, by_name};
use crate::error::{Error, Result};
use crate::loss::cross_entropy;
use crate::optim::{AdamW, AdamWConfig};
use crate::parallel::Peer;
use crate::rng::{Rng, mix, step_batch};
use crate::train::{TrainSnapshot, WarmupCosine};
use crate::vit::Adapters;

/// What one optimiser step did (a `metrics.jsonl` training record).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepRecord {
    /// Steps taken, this one included.
    pub step: usize,
    /// The sampled defense method (`none`: the linear probe's clean step).
    pub method: String,
    /// The outer loss.
    pub loss: f64,
    /// Accuracy on the batch's clean images, where the step classified them.
    pub clean_acc: Option<f64>,
    /// Accuracy on the batch's adversarial images, where the step made them.
    pub adv_acc: Option<f64>,
    /// The learning rate of the step.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Trainable tensors that received a gradient.
    pub grad_tensors: usize,
    /// HyperAT with a diversity penalty: the mean squared cosine between the methods'
    /// deltas it penalised, less the margin's square where it has one (the loss includes
    /// `method_diversity` times it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta_similarity: Option<f64>,
    /// Training time so far (summed over resumptions; hold-out evaluations excluded).
    pub seconds: f64,
}

/// A run being trained.
pub struct Trainer<B: AutodiffBackend> {
    run: RunDir,
    info: RunInfo,
    /// Always `Some` between steps; taken during the update so the optimiser owns the
    /// only reference to the parameters (in-place updates).
    model: Option<Tuned<B>>,
    opt: AdamW<B>,
    defenses: Vec<Box<dyn Defense<B>>>,
    sched: WarmupCosine,
    step: usize,
    seconds: f64,
    device: B::Device,
    peer: Peer,
}

impl<B: AutodiffBackend> Trainer<B> {
    /// The run in `run` at its latest checkpoint (step 0 if none): config, backbone,
    /// trainable tensors and optimiser moments, each read once.
    pub fn resume(run: RunDir, device: &B::Device) -> Result<Self> {
        let info = run.info()?;
        let cfg = &info.config;
        let snapshot = run.snapshot()?;
        let model = tuned_at(&info, &run.backbone()?, snapshot.as_ref(), device)?;
        let defenses = cfg
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
        let (mut step, mut seconds) = (0, 0.0);
        if let Some(snap) = snapshot {
            opt.load_state(snap.optimizer_t, &snap.moments, device)?;
            (step, seconds) = (snap.step, snap.seconds);
        }
        let sched = WarmupCosine {
            lr: cfg.lr,
            min_lr: cfg.min_lr,
            warmup: cfg.warmup.max(1),
            total: cfg.steps,
        };
        Ok(Self {
            run,
            info,
            model: Some(model),
            opt,
            defenses,
            sched,
            step,
            seconds,
            device: device.clone(),
            peer: Peer::ALONE,
        })
    }

    /// This trainer as one peer of a data-parallel run: it takes `peer`'s rows of each
    /// batch and averages gradients and step figures with the other peers.
    pub fn with_peer(mut self, peer: Peer) -> Result<Self> {
        peer.rows(self.info.config.batch_size)?;
        self.peer = peer;
        Ok(self)
    }

    /// Its place in a data-parallel run ([`Peer::ALONE`] on one device).
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// The run folder.
    pub fn run_dir(&self) -> &RunDir {
        &self.run
    }

    /// `run.json`.
    pub fn info(&self) -> &RunInfo {
        &self.info
    }

    /// The model as trained so far.
    pub fn model(&self) -> &Tuned<B> {
        self.model.as_ref().expect("a model between steps")
    }

    /// Steps taken.
    pub fn steps_taken(&self) -> usize {
        self.step
    }

    /// Training seconds so far (summed over resumptions).
    pub fn seconds(&self) -> f64 {
        self.seconds
    }

    /// Whether every planned step is taken.
    pub fn finished(&self) -> bool {
        self.step >= self.info.config.steps
    }

    /// Takes the next step on `train`'s batch for it.
    pub fn step(&mut self, train: &Dataset) -> Result<StepRecord> {
        let started = Instant::now();
        let cfg = &self.info.config;
        let step = self.step;
        if train.len() < cfg.batch_size {
            return Err(Error::Invalid(format!(
                "batch size {} exceeds the {} training images",
                cfg.batch_size,
                train.len()
            )));
        }
        let mut rng = Rng::new(mix(cfg.seed, step as u64, 0x57E9));
        let method = cfg.method_at(step, &mut rng);
        let mut idx = step_batch(train.len(), cfg.batch_size, cfg.seed, step);
        if self.peer.shared() {
            idx = idx[self.peer.rows(idx.len())?].to_vec();
            rng = rng.for_rows(self.peer.shard(cfg.batch_size)?);
        }
        let (x, y) = train.batch::<B::InnerBackend>(&idx, &self.device);
        let model = self.model();
        let adapters = model.adapters(method);
        let (loss, clean_logits, adv_logits) =
            self.outer_loss(method, adapters.as_ref(), x, y.clone(), &mut rng);
        // The diversity penalty sees every method's generated LoRA, not only this step's.
        let (loss, similarity) = match &adapters {
            Some(sampled) if cfg.method_diversity > 0.0 && cfg.methods.len() > 1 => {
                let all: Vec<_> = (0..cfg.methods.len())
                    .map(|m| match m == method {
                        true => Some(sampled.clone()),
                        false => model.adapters(m),
                    })
                    .collect::<Option<_>>()
                    .expect("HyperAT generates every method's adapters");
                let sim = delta_similarity(&all, cfg.method_diversity_margin, &self.device);
                let value = sim.clone().into_scalar().elem::<f64>();
                (loss + sim * cfg.method_diversity, Some(value))
            }
            _ => (loss, None),
        };
        let accuracy = |l: Option<Tensor<B, 2>>| {
            l.map(|l| {
                let hits = l.inner().argmax(1).reshape([idx.len()]).equal(y.clone());
                hits.int().sum().into_scalar().elem::<i64>() as f64 / idx.len() as f64
            })
        };
        let (clean_acc, adv_acc) = (accuracy(clean_logits), accuracy(adv_logits));
        // The whole batch's figures (means over equal shares), the same on every peer,
        // so a diverging loss stops all peers at once.
        let local = [
            loss.clone().into_scalar().elem::<f64>(),
            clean_acc.unwrap_or(0.0),
            adv_acc.unwrap_or(0.0),
        ];
        let [loss_value, clean_mean, adv_mean] =
            self.peer.mean::<B::InnerBackend>(&local, &self.device)?[..]
        else {
            unreachable!("three figures in, three out")
        };
        let (clean_acc, adv_acc) = (clean_acc.map(|_| clean_mean), adv_acc.map(|_| adv_mean));
        if !loss_value.is_finite() {
            return Err(Error::Invalid(format!(
                "loss became {loss_value} at step {step}; lower the learning rate"
            )));
        }
        let mut grads = loss.backward();
        self.peer.average_grads(self.model(), &mut grads)?;
        let lr = self.sched.at(step);
        let model = self.model.take().expect("a model between steps");
        let (next, update) = self.opt.step(lr, model, &grads);
        self.model = Some(next);
        self.step += 1;
        self.seconds += started.elapsed().as_secs_f64();
        Ok(StepRecord {
            step: self.step,
            method: cfg.methods.get(method).cloned().unwrap_or("none".into()),
            loss: loss_value,
            clean_acc,
            adv_acc,
            lr,
            grad_norm: update.grad_norm,
            grad_tensors: update.updated,
            delta_similarity: similarity,
            seconds: self.seconds,
        })
    }

    /// The step's outer loss for method slot `method` (the clean loss without a
    /// defense), with the clean and adversarial logits it computed, for the accuracies.
    #[allow(clippy::type_complexity)]
    fn outer_loss(
        &self,
        method: usize,
        adapters: Option<&Adapters<B>>,
        x: Tensor<B::InnerBackend, 4>,
        y: Tensor<B::InnerBackend, 1, Int>,
        rng: &mut Rng,
    ) -> (Tensor<B, 1>, Option<Tensor<B, 2>>, Option<Tensor<B, 2>>) {
        let model = self.model();
        match self.defenses.get(method) {
            None => {
                let logits = model.logits(Tensor::from_inner(x), adapters);
                (
                    cross_entropy(logits.clone(), Tensor::from_inner(y.clone())),
                    Some(logits),
                    None,
                )
            }
            Some(d) => {
                // Attack a frozen view: same weights, same generated factors, no graph.
                let frozen_vit = model.vit.clone().no_grad();
                let frozen_ad = adapters.map(|a| a.detach());
                let view = frozen_view(&frozen_vit, frozen_ad.as_ref());
                let x_adv = d.attack(view.as_ref(), x.clone(), y.clone(), rng);
                let b = y.dims()[0];
                let yd = Tensor::from_inner(y.clone());
                if d.needs_clean() {
                    // One forward for clean and adversarial images together.
                    let both =
                        model.logits(Tensor::from_inner(Tensor::cat(vec![x, x_adv], 0)), adapters);
                    let clean = both.clone().narrow(0, 0, b);
                    let adv = both.narrow(0, b, b);
                    (
                        d.outer_loss(Some(clean.clone()), adv.clone(), yd),
                        Some(clean),
                        Some(adv),
                    )
                } else {
                    let adv = model.logits(Tensor::from_inner(x_adv), adapters);
                    (d.outer_loss(None, adv.clone(), yd), None, Some(adv))
                }
            }
        }
    }

    /// Writes the checkpoint (model, optimiser moments, step, seconds) atomically.
    pub fn save(&self) -> Result<()> {
        self.run.save_snapshot(&TrainSnapshot::capture(
            self.model(),
            &self.opt,
            self.step,
            self.seconds,
        ))
    }
}
