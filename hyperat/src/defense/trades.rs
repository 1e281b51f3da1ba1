//! TRADES (Zhang et al., ICML 2019).
//!
//! Inner: [`TradesKl`](crate::attack::TradesKl) (KL ascent from `x + 0.001·N(0,1)`).
//! Outer: `CE(f(x), y) + beta · mean_i KL(p(x_i) || p(x_adv_i))` (the reference code's
//! `KLDivLoss(size_average=False) / batch_size`), beta 6; gradients flow through both
//! the clean and the adversarial logits.

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde_json::json;

use super::{Defense, DefenseParams};
use crate::attack::{Attack, Classifier, TradesKl};
use crate::loss::{cross_entropy, kl_each};
use crate::rng::Rng;

/// TRADES' trade-off between accuracy and robustness.
#[derive(Clone, Debug)]
pub struct Trades(pub DefenseParams);

impl<B: AutodiffBackend> Defense<B> for Trades {
    fn name(&self) -> &'static str {
        "trades"
    }

    fn settings(&self) -> serde_json::Value {
        json!({"name": "trades", "eps": self.0.eps, "alpha": self.0.alpha, "steps": self.0.steps,
               "beta": self.0.beta, "inner": "kl, start x + 0.001 N(0,1)",
               "outer": "ce(clean) + beta * kl(clean || adv)"})
    }

    fn needs_clean(&self) -> bool {
        true
    }

    fn attack(
        &self,
        model: &dyn Classifier<B>,
        x: Tensor<B::InnerBackend, 4>,
        y: Tensor<B::InnerBackend, 1, Int>,
        rng: &mut Rng,
    ) -> Tensor<B::InnerBackend, 4> {
        let p = &self.0;
        Attack::<B>::perturb(
            &TradesKl {
                eps: p.eps,
                alpha: p.alpha,
                steps: p.steps,
            },
            model,
            x,
            y,
            rng,
        )
    }

    fn outer_loss(
        &self,
        clean: Option<Tensor<B, 2>>,
        adv: Tensor<B, 2>,
        y: Tensor<B, 1, Int>,
    ) -> Tensor<B, 1> {
        let clean = clean.expect("TRADES needs clean logits");
        cross_entropy(clean.clone(), y) + kl_each(clean, adv).mean().mul_scalar(self.0.beta)
    }
}
