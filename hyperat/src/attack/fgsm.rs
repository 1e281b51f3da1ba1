//! FGSM (Goodfellow et al., ICLR 2015), L-inf, inputs in [0,1].
//!
//! `x_adv = clamp(x + eps · sign(∇x CE(f(x), y)), 0, 1)`, no random start
//! (torchattacks' `FGSM`, default eps 8/255).

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde_json::json;

use super::{Attack, Classifier, input_grad};
use crate::loss::cross_entropy;
use crate::rng::Rng;

/// Fast gradient sign method.
#[derive(Clone, Debug)]
pub struct Fgsm {
    /// L-inf radius.
    pub eps: f32,
}

impl<B: AutodiffBackend> Attack<B> for Fgsm {
    fn name(&self) -> &'static str {
        "fgsm"
    }

    fn settings(&self) -> serde_json::Value {
        json!({"name": "fgsm", "eps": self.eps, "norm": "Linf"})
    }

    fn perturb(
        &self,
        model: &dyn Classifier<B>,
        x: Tensor<B::InnerBackend, 4>,
        y: Tensor<B::InnerBackend, 1, Int>,
        _rng: &mut Rng,
    ) -> Tensor<B::InnerBackend, 4> {
        let y = Tensor::<B, 1, Int>::from_inner(y);
        let g = input_grad(model, x.clone(), |z| cross_entropy(z, y));
        (x + g.sign().mul_scalar(self.eps)).clamp(0.0, 1.0)
    }
}
