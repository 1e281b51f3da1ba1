//! FGSM-RS, "fast AT" (Wong et al., ICLR 2020): one FGSM step from a random start.
//!
//! Inner: `δ ~ U(-eps, eps)`, one sign step of `1.25·eps`, projected to the eps-ball and
//! [0,1]. Outer: `CE(f(x_adv), y)`. Its cost is one input gradient, not `steps` of them.

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde_json::json;

use super::{Defense, DefenseParams};
use crate::attack::{Attack, Classifier, Pgd};
use crate::loss::cross_entropy;
use crate::rng::Rng;

/// Fast adversarial training with a random start.
#[derive(Clone, Debug)]
pub struct FgsmRs(pub DefenseParams);

impl<B: AutodiffBackend> Defense<B> for FgsmRs {
    fn name(&self) -> &'static str {
        "fgsm-rs"
    }

    fn settings(&self) -> serde_json::Value {
        json!({"name": "fgsm-rs", "eps": self.0.eps, "alpha": 1.25 * self.0.eps, "steps": 1,
               "inner": "fgsm, uniform start", "outer": "ce(adv)"})
    }

    fn needs_clean(&self) -> bool {
        false
    }

    fn attack(
        &self,
        model: &dyn Classifier<B>,
        x: Tensor<B::InnerBackend, 4>,
        y: Tensor<B::InnerBackend, 1, Int>,
        rng: &mut Rng,
    ) -> Tensor<B::InnerBackend, 4> {
        let eps = self.0.eps;
        let step = Pgd {
            eps,
            alpha: 1.25 * eps,
            steps: 1,
            restarts: 1,
            random_start: true,
        };
        Attack::<B>::perturb(&step, model, x, y, rng)
    }

    fn outer_loss(
        &self,
        _clean: Option<Tensor<B, 2>>,
        adv: Tensor<B, 2>,
        y: Tensor<B, 1, Int>,
    ) -> Tensor<B, 1> {
        cross_entropy(adv, y)
    }
}
