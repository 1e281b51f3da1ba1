//! TRADES' inner maximisation (Zhang et al., ICML 2019), L-inf, inputs in [0,1].
//!
//! Starts at `x + 0.001 · N(0, 1)` (not clamped, as the reference code) and ascends
//! `KL(p(x) || p(x_adv))` (summed) with sign steps, projecting onto the eps-ball and
//! [0,1]. `p(x)` is computed once: the model does not change during the attack.
//! The labels are not used.

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde_json::json;

use super::{Attack, Classifier, pgd_steps};
use crate::loss::kl_each;
use crate::rng::Rng;

/// The KL attack TRADES trains against.
#[derive(Clone, Debug)]
pub struct TradesKl {
    /// L-inf radius.
    pub eps: f32,
    /// Step size.
    pub alpha: f32,
    /// Iterations.
    pub steps: usize,
}

impl<B: AutodiffBackend> Attack<B> for TradesKl {
    fn name(&self) -> &'static str {
        "trades-kl"
    }

    fn settings(&self) -> serde_json::Value {
        json!({"name": "trades-kl", "eps": self.eps, "alpha": self.alpha, "steps": self.steps,
               "start": "x + 0.001 N(0,1)", "loss": "kl", "norm": "Linf"})
    }

    fn perturb(
        &self,
        model: &dyn Classifier<B>,
        x: Tensor<B::InnerBackend, 4>,
        _y: Tensor<B::InnerBackend, 1, Int>,
        rng: &mut Rng,
    ) -> Tensor<B::InnerBackend, 4> {
        let clean = model.logits(Tensor::from_inner(x.clone())).detach();
        let loss = move |z: Tensor<B, 2>| kl_each(clean.clone(), z).sum();
        let shape = x.dims();
        let noise = Tensor::from_data(
            TensorData::new(rng.normal_vec(shape.iter().product()), shape),
            &x.device(),
        );
        let start = x.clone() + noise.mul_scalar(0.001);
        pgd_steps(model, &x, start, self.eps, self.alpha, self.steps, &loss)
    }
}
