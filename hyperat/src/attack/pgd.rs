//! PGD, L-inf (Madry et al., ICLR 2018), inputs in [0,1].
//!
//! torchattacks' `PGD`: uniform random start in `[-eps, eps]` clamped to [0,1], then
//! `steps` times `x ← Π(x + alpha · sign(∇x CE))` where Π projects onto the eps-ball
//! and [0,1]. Defaults in the registry: eps 8/255, alpha eps/4, 10 steps. With
//! `restarts > 1`, a sample keeps the first restart that fools the model.

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde_json::json;

use super::{Attack, Classifier, pgd_steps, uniform_like, with_restarts};
use crate::loss::cross_entropy;
use crate::rng::Rng;

/// Projected gradient descent on the cross-entropy.
#[derive(Clone, Debug)]
pub struct Pgd {
    /// L-inf radius.
    pub eps: f32,
    /// Step size.
    pub alpha: f32,
    /// Iterations.
    pub steps: usize,
    /// Restarts (each from a new random start).
    pub restarts: usize,
    /// Start from a uniform point in the ball (else from `x`).
    pub random_start: bool,
}

impl<B: AutodiffBackend> Attack<B> for Pgd {
    fn name(&self) -> &'static str {
        "pgd"
    }

    fn settings(&self) -> serde_json::Value {
        json!({"name": "pgd", "eps": self.eps, "alpha": self.alpha, "steps": self.steps,
               "restarts": self.restarts, "random_start": self.random_start, "loss": "ce",
               "norm": "Linf"})
    }

    fn perturb(
        &self,
        model: &dyn Classifier<B>,
        x: Tensor<B::InnerBackend, 4>,
        y: Tensor<B::InnerBackend, 1, Int>,
        rng: &mut Rng,
    ) -> Tensor<B::InnerBackend, 4> {
        let yd = Tensor::<B, 1, Int>::from_inner(y.clone());
        let loss = move |z: Tensor<B, 2>| cross_entropy(z, yd.clone());
        with_restarts(model, &y, self.restarts, rng, |rng| {
            let start = if self.random_start {
                (x.clone() + uniform_like(&x, self.eps, rng)).clamp(0.0, 1.0)
            } else {
                x.clone()
            };
            pgd_steps(model, &x, start, self.eps, self.alpha, self.steps, &loss)
        })
    }
}
