//! Adaptive merge (the journal version of HyperAT): learn `λ = softmax(w)`, one set for
//! the whole model or one per block, on held-out data, minimising the adversarial
//! cross-entropy of the merged model with everything else frozen.
//!
//! Each step attacks the current merge (PGD on a frozen copy), then takes an Adam step
//! on `w` alone. The merge stays low-rank while learning (factors concatenated, `B`
//! rows scaled by `λ`), so a step costs what a LoRA forward costs.

use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::{DenseDeltas, MergeStrategy, MethodLora, weighted_adapters, weighted_sum};
use crate::attack::{Attack, Pgd, frozen_view};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::loss::{cross_entropy, cross_entropy_each};
use crate::progress::Progress;
use crate::rng::Rng;
use crate::vit::Vit;

/// Settings of the weight search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveConfig {
    /// One weight vector per block (else one for the model).
    pub per_layer: bool,
    /// Adam steps on `w` (default 50).
    pub steps: usize,
    /// Adam learning rate (default 0.05).
    pub lr: f64,
    /// Held-out images per step (default 64).
    pub batch_size: usize,
    /// PGD radius, step and iterations of the inner attack.
    pub eps: f32,
    /// PGD step.
    pub alpha: f32,
    /// PGD iterations.
    pub attack_steps: usize,
    /// Seed of batches and random starts.
    pub seed: u64,
    /// Held-out images [`check_weights`] scores after the search (default 512; 0: none).
    #[serde(default)]
    pub check_images: usize,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            per_layer: false,
            steps: 50,
            lr: 0.05,
            batch_size: 64,
            eps: 8.0 / 255.0,
            alpha: 2.0 / 255.0,
            attack_steps: 10,
            seed: 0,
            check_images: 512,
        }
    }
}

/// A merge with learned per-block (or global) weights.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Learned {
    /// `[1 or depth][methods]`, each row sums to 1.
    pub lambdas: Vec<Vec<f32>>,
}

/// The search's objective and robust accuracy on the first images of the held-out split,
/// for the uniform start and the learned weights: says whether the search improved on
/// HyperAT+ on its own terms (the loss) and on the figure users quote (the accuracy).
/// The search drew its batches from the same split, so this measures how well it
/// optimised, not how it generalises (the test set says that).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldOutCheck {
    /// Held-out images scored (the first ones of the split).
    pub images: usize,
    /// Mean adversarial cross-entropy (the search's objective) of the uniform merge.
    pub uniform_loss: f32,
    /// Its robust accuracy (a fraction) under the search's attack.
    pub uniform_accuracy: f32,
    /// Mean adversarial cross-entropy of the learned merge.
    pub learned_loss: f32,
    /// Its robust accuracy.
    pub learned_accuracy: f32,
}

impl MergeStrategy for Learned {
    fn name(&self) -> String {
        "adaptive".into()
    }

    fn merge(&self, methods: &[MethodLora]) -> Result<DenseDeltas> {
        let rows = &self.lambdas;
        weighted_sum(methods, &|layer| {
            rows[if rows.len() > 1 { layer } else { 0 }].clone()
        })
    }
}

/// Learns the merge weights, then (unless `cfg.check_images` is 0) scores them against
/// the uniform start with [`check_weights`].
pub fn learn_and_check<B: AutodiffBackend>(
    vit: &Vit<B>,
    methods: &[MethodLora],
    val: &Dataset,
    cfg: &AdaptiveConfig,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<(Learned, Option<HeldOutCheck>)> {
    let learned = learn_weights(vit, methods, val, cfg, device, progress)?;
    if cfg.check_images == 0 {
        return Ok((learned, None));
    }
    let uniform = vec![vec![1.0 / methods.len() as f32; methods.len()]];
    let n = cfg.check_images.min(val.len());
    progress.update(0, 2, "merges checked on the held-out images");
    let (uniform_loss, uniform_accuracy) =
        check_weights(vit, methods, &uniform, val, n, cfg, device);
    progress.update(1, 2, "merges checked on the held-out images");
    let (learned_loss, learned_accuracy) =
        check_weights(vit, methods, &learned.lambdas, val, n, cfg, device);
    progress.update(2, 2, "merges checked on the held-out images");
    let check = HeldOutCheck {
        images: n,
        uniform_loss,
        uniform_accuracy,
        learned_loss,
        learned_accuracy,
    };
    Ok((learned, Some(check)))
}

/// Mean adversarial cross-entropy (the search's objective) and robust accuracy (right on
/// the clean image and on its attacked copy, as `hyperat eval` counts) of the merge with
/// `lambdas` (`[1 or depth][methods]`) on the first `n` images of `val`, under the
/// search's attack with a fixed seed: the same random starts for every `lambdas`.
/// `n` must be in `1..=val.len()` ([`learn_and_check`] clamps it).
pub fn check_weights<B: AutodiffBackend>(
    vit: &Vit<B>,
    methods: &[MethodLora],
    lambdas: &[Vec<f32>],
    val: &Dataset,
    n: usize,
    cfg: &AdaptiveConfig,
    device: &B::Device,
) -> (f32, f32) {
    let vit = vit.clone().no_grad();
    let depth = vit.blocks.len();
    let flat: Vec<f32> = lambdas.concat();
    let lambdas = Tensor::<B, 2>::from_data(
        TensorData::new(flat, [lambdas.len(), methods.len()]),
        device,
    );
    let adapters = weighted_adapters(methods, &lambdas, depth, device);
    let model = frozen_view(&vit, Some(&adapters));
    let pgd = cfg.pgd();
    let mut rng = Rng::new(cfg.seed ^ 0x5eed_c4ec);
    let (mut loss, mut right) = (0.0f64, 0usize);
    let batch = cfg.batch_size.max(1);
    for start in (0..n).step_by(batch) {
        let idx: Vec<usize> = (start..(start + batch).min(n)).collect();
        let (x, y) = val.batch::<B::InnerBackend>(&idx, device);
        let b = idx.len();
        let clean = model.logits(Tensor::from_inner(x.clone())).inner();
        let x_adv = Attack::<B>::perturb(&pgd, model.as_ref(), x, y.clone(), &mut rng);
        let logits = model.logits(Tensor::from_inner(x_adv)).inner();
        let each = cross_entropy_each(logits.clone(), y.clone());
        loss += each.sum().into_scalar().elem::<f64>();
        let hit = |l: Tensor<B::InnerBackend, 2>| l.argmax(1).reshape([b]).equal(y.clone()).int();
        right += (hit(clean) * hit(logits)).sum().into_scalar().elem::<i64>() as usize;
    }
    ((loss / n as f64) as f32, right as f32 / n as f32)
}

impl AdaptiveConfig {
    /// The search's inner attack.
    fn pgd(&self) -> Pgd {
        Pgd {
            eps: self.eps,
            alpha: self.alpha,
            steps: self.attack_steps,
            restarts: 1,
            random_start: true,
        }
    }
}

/// Learns the merge weights for `methods` on `val`, with `vit` (and its head) frozen.
pub fn learn_weights<B: AutodiffBackend>(
    vit: &Vit<B>,
    methods: &[MethodLora],
    val: &Dataset,
    cfg: &AdaptiveConfig,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<Learned> {
    if val.len() < cfg.batch_size || cfg.batch_size == 0 {
        return Err(Error::Invalid(format!(
            "held-out split has {} images, batch {}",
            val.len(),
            cfg.batch_size
        )));
    }
    let vit = vit.clone().no_grad();
    let depth = vit.blocks.len();
    let rows = if cfg.per_layer { depth } else { 1 };
    let m = methods.len();
    let mut w = Tensor::<B::InnerBackend, 2>::zeros([rows, m], device); // uniform start
    let (mut m1, mut m2) = (w.zeros_like(), w.zeros_like());
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let pgd = cfg.pgd();
    let mut rng = Rng::new(cfg.seed);
    let mut order: Vec<usize> = vec![];
    progress.update(0, cfg.steps, "merge steps");
    for step in 0..cfg.steps {
        if progress.cancelled() {
            return Err(Error::Cancelled);
        }
        if order.len() < cfg.batch_size {
            order = (0..val.len()).collect();
            rng.shuffle(&mut order);
        }
        let idx: Vec<usize> = order.split_off(order.len() - cfg.batch_size);
        let (x, y) = val.batch::<B::InnerBackend>(&idx, device);
        let wd = Tensor::<B, 2>::from_inner(w.clone()).require_grad();
        let lambdas = softmax(wd.clone(), 1);
        let adapters = weighted_adapters(methods, &lambdas, depth, device);
        let frozen = adapters.detach();
        let x_adv = Attack::<B>::perturb(
            &pgd,
            frozen_view(&vit, Some(&frozen)).as_ref(),
            x,
            y.clone(),
            &mut rng,
        );
        let loss = cross_entropy(
            vit.forward_with(Tensor::from_inner(x_adv), &adapters),
            Tensor::from_inner(y),
        );
        let g = wd.grad(&loss.backward()).expect("w takes part in the loss");
        let t = (step + 1) as i32;
        m1 = m1.mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1);
        m2 = m2.mul_scalar(b2) + g.powi_scalar(2).mul_scalar(1.0 - b2);
        let update = m1.clone().div_scalar(1.0 - b1.powi(t)).div(
            m2.clone()
                .div_scalar(1.0 - b2.powi(t))
                .sqrt()
                .add_scalar(eps),
        );
        w = w - update.mul_scalar(cfg.lr);
        progress.update(step + 1, cfg.steps, "merge steps");
    }
    let lambdas = softmax(w, 1)
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32");
    Ok(Learned {
        lambdas: lambdas.chunks(m).map(<[f32]>::to_vec).collect(),
    })
}
