//! CW-k: L-inf PGD on the Carlini–Wagner margin (the "CW-20" of the robust-ViT
//! literature, e.g. Mo et al., NeurIPS 2022), inputs in [0,1].
//!
//! Ascends `min(max_{j≠y} z_j − z_y, kappa)` (the reference code's
//! `-clamp(z_y - max_other + kappa, min=0)`), from a uniform random start, with the
//! same step and projection as [`super::Pgd`].

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde_json::json;

use super::{Attack, Classifier, pgd_steps, uniform_like, with_restarts};
use crate::loss::cw_margin;
use crate::rng::Rng;

/// PGD on the CW margin loss.
#[derive(Clone, Debug)]
pub struct Cw {
    /// L-inf radius.
    pub eps: f32,
    /// Step size.
    pub alpha: f32,
    /// Iterations.
    pub steps: usize,
    /// Restarts.
    pub restarts: usize,
    /// Confidence: the margin stops counting beyond `kappa`.
    pub kappa: f32,
}

impl<B: AutodiffBackend> Attack<B> for Cw {
    fn name(&self) -> &'static str {
        "cw"
    }

    fn settings(&self) -> serde_json::Value {
        json!({"name": "cw", "eps": self.eps, "alpha": self.alpha, "steps": self.steps,
               "restarts": self.restarts, "kappa": self.kappa, "random_start": true,
               "loss": "cw-margin", "norm": "Linf"})
    }

    fn perturb(
        &self,
        model: &dyn Classifier<B>,
        x: Tensor<B::InnerBackend, 4>,
        y: Tensor<B::InnerBackend, 1, Int>,
        rng: &mut Rng,
    ) -> Tensor<B::InnerBackend, 4> {
        let yd = Tensor::<B, 1, Int>::from_inner(y.clone());
        let kappa = self.kappa;
        let loss = move |z: Tensor<B, 2>| cw_margin(z, yd.clone()).clamp_max(kappa).sum();
        with_restarts(model, &y, self.restarts, rng, |rng| {
            let start = (x.clone() + uniform_like(&x, self.eps, rng)).clamp(0.0, 1.0);
            pgd_steps(model, &x, start, self.eps, self.alpha, self.steps, &loss)
        })
    }
}
