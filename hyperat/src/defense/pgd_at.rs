//! PGD-AT (Madry et al., ICLR 2018): train on PGD examples.
//!
//! Inner: L-inf PGD on the cross-entropy from a uniform random start. Outer:
//! `CE(f(x_adv), y)`.

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde_json::json;

use super::{Defense, DefenseParams};
use crate::attack::{Attack, Classifier, Pgd};
use crate::loss::cross_entropy;
use crate::rng::Rng;

/// Madry et al.'s adversarial training.
#[derive(Clone, Debug)]
pub struct PgdAt(pub DefenseParams);

impl<B: AutodiffBackend> Defense<B> for PgdAt {
    fn name(&self) -> &'static str {
        "pgd-at"
    }

    fn settings(&self) -> serde_json::Value {
        json!({"name": "pgd-at", "eps": self.0.eps, "alpha": self.0.alpha, "steps": self.0.steps,
               "inner": "pgd-ce, uniform start", "outer": "ce(adv)"})
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
        let p = &self.0;
        let pgd = Pgd {
            eps: p.eps,
            alpha: p.alpha,
            steps: p.steps,
            restarts: 1,
            random_start: true,
        };
        Attack::<B>::perturb(&pgd, model, x, y, rng)
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
