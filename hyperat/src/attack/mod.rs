//! Adversarial attacks in [0,1] pixel space with torchattacks' semantics.
//!
//! Every attack sees only a [`Classifier`] (a map from [0,1] images to logits, with
//! normalisation inside), so it works on the base ViT, a LoRA variant, a merged export
//! or any other model. Input gradients come from burn's autodiff, for whole batches.
//! Random numbers (random starts, TRADES' noise) come from the caller's seeded
//! [`Rng`], so a seed fixes the result on every backend.

mod apgd;
mod apgd_t;
mod autoattack;
pub mod checks;
mod cw;
mod fab;
mod fgsm;
mod pgd;
mod square;
mod trades;

pub use apgd::{Apgd, ApgdLoss};
pub use apgd_t::ApgdT;
pub use autoattack::{AutoAttack, STANDARD};
pub use cw::Cw;
pub use fab::FabT;
pub use fgsm::Fgsm;
pub use pgd::Pgd;
pub use square::{BlackBox, Square};
pub use trades::TradesKl;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::vit::{Adapters, Vit};

/// A model mapping [0,1] pixels `[batch, C, H, W]` to logits `[batch, classes]`.
pub trait Classifier<B: Backend> {
    /// Logits; normalisation happens inside.
    fn logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2>;
    /// Whether whoever runs the attack gave up on it ([`crate::cancel::Cancellable`]):
    /// attacks check it at every step and stop early; their result is then thrown away.
    fn stopped(&self) -> bool {
        false
    }
}

/// Forward-only logits of an autodiff classifier, on the inner backend.
///
/// burn-autodiff 0.21 registers even untracked operations in its graph and frees them
/// only when some `backward` runs: a long stretch of forwards without one (Square's
/// 5000 queries, a server answering predictions) grew by about 1 KB per operation, with
/// no bound (a report's AutoAttack reached 24 GB). A one-element backward after the
/// forward frees them; every forward without gradients goes through here.
pub fn inner_logits<B: AutodiffBackend>(
    model: &dyn Classifier<B>,
    x: Tensor<B::InnerBackend, 4>,
) -> Tensor<B::InnerBackend, 2> {
    let device = x.device();
    let logits = model.logits(Tensor::from_inner(x)).inner();
    release_untracked::<B>(&device);
    logits
}

/// Forward-only predicted classes `[b]` of an autodiff classifier (see [`inner_logits`]).
pub fn inner_predict<B: AutodiffBackend>(
    model: &dyn Classifier<B>,
    x: Tensor<B::InnerBackend, 4>,
) -> Tensor<B::InnerBackend, 1, Int> {
    let b = x.dims()[0];
    inner_logits(model, x).argmax(1).reshape([b])
}

/// Frees the graph entries of finished untracked operations (see [`inner_logits`]).
fn release_untracked<B: AutodiffBackend>(device: &B::Device) {
    let _ = Tensor::<B, 1>::zeros([1], device)
        .require_grad()
        .sum()
        .backward();
}

impl<B: Backend> Classifier<B> for Vit<B> {
    fn logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(x)
    }
}

/// A ViT with low-rank deltas (a LoRA variant) as one classifier.
#[derive(Debug)]
pub struct Adapted<'a, B: Backend> {
    /// The frozen model.
    pub vit: &'a Vit<B>,
    /// The deltas added to its linears.
    pub adapters: &'a Adapters<B>,
}

impl<B: Backend> Classifier<B> for Adapted<'_, B> {
    fn logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.vit.forward_with(x, self.adapters)
    }
}

/// A frozen ViT with frozen (detached) deltas as one classifier for attacks and
/// evaluation: the deltas folded into the weights (`W + scaling·A·B`) where they fold, so
/// each attack step runs the plain model instead of a low-rank side path (four small
/// matmuls and an extra pass over each linear's output, forward and backward); deltas
/// with an input norm (FullLoRA) stay a side path. Folding changes only float rounding.
pub fn frozen_view<'a, B: Backend>(
    vit: &'a Vit<B>,
    adapters: Option<&'a Adapters<B>>,
) -> Box<dyn Classifier<B> + 'a> {
    match adapters {
        None => Box::new(vit.clone()),
        Some(a) => match a.fold_into(vit.clone()) {
            Some(folded) => Box::new(folded),
            None => Box::new(Adapted { vit, adapters: a }),
        },
    }
}

/// Robust flags (per sample) after each named component of a composite attack.
pub type ComponentFlags = Vec<(String, Vec<bool>)>;

/// An adversarial attack.
pub trait Attack<B: AutodiffBackend>: Send + Sync {
    /// Registry name (`fgsm`, `pgd`, `cw`, ...).
    fn name(&self) -> &'static str;
    /// Every setting, for reports.
    fn settings(&self) -> serde_json::Value;
    /// Adversarial examples for clean `x` in [0,1] with labels `y`; the result is
    /// detached, within the eps-ball of `x` and inside [0,1].
    fn perturb(
        &self,
        model: &dyn Classifier<B>,
        x: Tensor<B::InnerBackend, 4>,
        y: Tensor<B::InnerBackend, 1, Int>,
        rng: &mut Rng,
    ) -> Tensor<B::InnerBackend, 4>;

    /// Like [`Attack::perturb`], plus, for composite attacks (AutoAttack), the robust
    /// flags after each component.
    fn perturb_report(
        &self,
        model: &dyn Classifier<B>,
        x: Tensor<B::InnerBackend, 4>,
        y: Tensor<B::InnerBackend, 1, Int>,
        rng: &mut Rng,
    ) -> (Tensor<B::InnerBackend, 4>, ComponentFlags) {
        (self.perturb(model, x, y, rng), vec![])
    }
}

/// Reads a budget written as a number or a fraction (`0.03`, `8/255`), the way papers
/// write eps; refuses division by zero and non-finite values.
pub fn parse_fraction(s: &str) -> Result<f32> {
    let num = |t: &str| {
        t.trim()
            .parse::<f64>()
            .map_err(|e| Error::Invalid(format!("`{s}`: {e}")))
    };
    let v = match s.split_once('/') {
        Some((a, b)) => {
            let (a, b) = (num(a)?, num(b)?);
            if b == 0.0 {
                return Err(Error::Invalid(format!("division by zero in `{s}`")));
            }
            a / b
        }
        None => num(s)?,
    };
    if !v.is_finite() {
        return Err(Error::Invalid(format!("`{s}` is not a finite number")));
    }
    Ok(v as f32)
}

/// Settings shared by the registry's attacks (flags of `hyperat eval`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttackParams {
    /// L-inf radius in [0,1] pixel units.
    pub eps: f32,
    /// Step size; `None` means `eps / 4` (2/255 for 8/255).
    pub alpha: Option<f32>,
    /// Iterations.
    pub steps: usize,
    /// Random restarts (PGD, CW).
    pub restarts: usize,
    /// CW confidence `kappa` (the margin is capped there).
    pub kappa: f32,
    /// Square's query budget.
    pub queries: usize,
    /// AutoAttack's components (default: the standard version).
    pub aa_attacks: Vec<String>,
}

impl Default for AttackParams {
    fn default() -> Self {
        Self {
            eps: 8.0 / 255.0,
            alpha: None,
            steps: 10,
            restarts: 1,
            kappa: 50.0,
            queries: 5000,
            aa_attacks: STANDARD.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl AttackParams {
    /// Model calls (forward and backward) attack `name` may make per image, at most:
    /// steps (or queries) × restarts, × 9 target classes for the targeted attacks; the
    /// sum of the components for AutoAttack. What an interactive request is budgeted by.
    pub fn work(&self, name: &str) -> usize {
        let r = self.restarts.max(1);
        match name {
            "fgsm" => 1,
            "apgd-t" | "fab-t" => 9 * self.steps * r,
            "square" => self.queries * r,
            "autoattack" => self
                .aa_attacks
                .iter()
                .map(|a| match a.as_str() {
                    "apgd-t" | "fab-t" => 9 * 100,
                    "square" => 5000,
                    _ => 100,
                })
                .sum(),
            _ => self.steps * r,
        }
    }

    /// The step size in use.
    pub fn alpha(&self) -> f32 {
        self.alpha.unwrap_or(self.eps / 4.0)
    }

    /// Rejects out-of-range values.
    pub fn validate(&self) -> Result<()> {
        if !(self.eps > 0.0 && self.eps <= 1.0) {
            return Err(Error::Invalid(format!(
                "eps must be in (0, 1], got {}",
                self.eps
            )));
        }
        if !(self.alpha() > 0.0 && self.alpha() <= 1.0) {
            return Err(Error::Invalid(format!(
                "alpha must be in (0, 1], got {}",
                self.alpha()
            )));
        }
        if self.steps == 0 || self.steps > 10_000 {
            return Err(Error::Invalid(format!(
                "steps must be in 1..=10000, got {}",
                self.steps
            )));
        }
        if self.restarts == 0 || self.restarts > 100 {
            return Err(Error::Invalid(format!(
                "restarts must be in 1..=100, got {}",
                self.restarts
            )));
        }
        Ok(())
    }
}

/// Attack names the registry knows.
pub const ATTACKS: &[&str] = &[
    "fgsm",
    "pgd",
    "cw",
    "trades-kl",
    "apgd-ce",
    "apgd-dlr",
    "apgd-t",
    "fab-t",
    "square",
    "autoattack",
];

/// Builds an attack by name: the registry (one line per attack).
pub fn by_name<B: AutodiffBackend>(name: &str, p: &AttackParams) -> Result<Box<dyn Attack<B>>> {
    p.validate()?;
    Ok(match name {
        "fgsm" => Box::new(Fgsm { eps: p.eps }),
        "pgd" => Box::new(Pgd {
            eps: p.eps,
            alpha: p.alpha(),
            steps: p.steps,
            restarts: p.restarts,
            random_start: true,
        }),
        "cw" => Box::new(Cw {
            eps: p.eps,
            alpha: p.alpha(),
            steps: p.steps,
            restarts: p.restarts,
            kappa: p.kappa,
        }),
        "apgd-ce" => Box::new(Apgd {
            eps: p.eps,
            n_iter: p.steps,
            restarts: p.restarts,
            loss: ApgdLoss::Ce,
        }),
        "apgd-dlr" => Box::new(Apgd {
            eps: p.eps,
            n_iter: p.steps,
            restarts: p.restarts,
            loss: ApgdLoss::Dlr,
        }),
        "apgd-t" => Box::new(ApgdT {
            eps: p.eps,
            n_iter: p.steps,
            n_target_classes: 9,
            restarts: p.restarts,
        }),
        "fab-t" => Box::new(FabT {
            eps: p.eps,
            n_iter: p.steps,
            n_target_classes: 9,
            restarts: p.restarts,
        }),
        "square" => Box::new(Square {
            eps: p.eps,
            n_queries: p.queries,
            p_init: 0.8,
            restarts: p.restarts,
        }),
        "autoattack" => Box::new(AutoAttack::new(p.eps, &p.aa_attacks)?),
        "trades-kl" => Box::new(TradesKl {
            eps: p.eps,
            alpha: p.alpha(),
            steps: p.steps,
        }),
        other => {
            return Err(Error::Invalid(format!(
                "unknown attack `{other}` (known: {})",
                ATTACKS.join(", ")
            )));
        }
    })
}

/// Gradient of `loss(model(x))` with respect to the input `x`.
pub fn input_grad<B: AutodiffBackend>(
    model: &dyn Classifier<B>,
    x: Tensor<B::InnerBackend, 4>,
    loss: impl FnOnce(Tensor<B, 2>) -> Tensor<B, 1>,
) -> Tensor<B::InnerBackend, 4> {
    let x = Tensor::<B, 4>::from_inner(x).require_grad();
    let l = loss(model.logits(x.clone()));
    let grads = l.backward();
    x.grad(&grads).expect("the input takes part in the loss")
}

/// Projects `adv` onto the eps-ball around `x` and into [0,1].
pub fn project<B: Backend>(adv: Tensor<B, 4>, x: Tensor<B, 4>, eps: f32) -> Tensor<B, 4> {
    let delta = (adv - x.clone()).clamp(-eps, eps);
    (x + delta).clamp(0.0, 1.0)
}

/// Uniform noise in `[-eps, eps]` shaped like `x`, from the host RNG.
pub fn uniform_like<B: Backend>(x: &Tensor<B, 4>, eps: f32, rng: &mut Rng) -> Tensor<B, 4> {
    let shape = x.dims();
    let n = shape.iter().product();
    Tensor::from_data(
        TensorData::new(rng.uniform_vec(n, -eps, eps), shape),
        &x.device(),
    )
}

/// Predicted classes.
pub fn predict<B: Backend>(model: &dyn Classifier<B>, x: Tensor<B, 4>) -> Tensor<B, 1, Int> {
    let b = x.dims()[0];
    model.logits(x).argmax(1).reshape([b])
}

/// One L-inf PGD run: `steps` sign-gradient steps of size `alpha` on `loss` from `start`,
/// projecting after each step (torchattacks' loop).
pub(crate) fn pgd_steps<B: AutodiffBackend>(
    model: &dyn Classifier<B>,
    x: &Tensor<B::InnerBackend, 4>,
    start: Tensor<B::InnerBackend, 4>,
    eps: f32,
    alpha: f32,
    steps: usize,
    loss: &dyn Fn(Tensor<B, 2>) -> Tensor<B, 1>,
) -> Tensor<B::InnerBackend, 4> {
    let mut adv = start;
    for _ in 0..steps {
        if model.stopped() {
            break;
        }
        let g = input_grad(model, adv.clone(), loss);
        adv = project(adv + g.sign().mul_scalar(alpha), x.clone(), eps);
    }
    adv
}

/// Runs `restarts` attempts of `run` and keeps, per sample, the first one that fools
/// the model (else the first attempt's result), as Madry et al.'s evaluation does.
pub(crate) fn with_restarts<B: AutodiffBackend>(
    model: &dyn Classifier<B>,
    y: &Tensor<B::InnerBackend, 1, Int>,
    restarts: usize,
    rng: &mut Rng,
    mut run: impl FnMut(&mut Rng) -> Tensor<B::InnerBackend, 4>,
) -> Tensor<B::InnerBackend, 4> {
    let mut best = run(rng);
    if restarts <= 1 {
        return best;
    }
    let mut robust = inner_predict(model, best.clone()).equal(y.clone());
    for _ in 1..restarts {
        if model.stopped() {
            break;
        }
        let adv = run(rng);
        let fooled = inner_predict(model, adv.clone()).not_equal(y.clone());
        let take = robust.clone().bool_and(fooled);
        let [b, c, h, w] = best.dims();
        let mask = take.clone().reshape([b, 1, 1, 1]).expand([b, c, h, w]);
        best = best.mask_where(mask, adv);
        robust = robust.bool_and(take.bool_not());
    }
    best
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_aa;
