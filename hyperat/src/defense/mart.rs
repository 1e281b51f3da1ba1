//! MART (Wang et al., ICLR 2020): misclassification-aware adversarial training.
//!
//! Inner: L-inf PGD on the cross-entropy from `x + 0.001·N(0,1)` (the reference code's
//! start). Outer, exactly as the reference code, with beta 6:
//!
//! ```text
//! CE(f(x_adv), y) − mean_i log(1.0001 − max_{k≠y} p_k(x_adv_i) + 1e-12)
//!   + beta · mean_i[ KL(p(x_i) || p(x_adv_i) + 1e-12) · (1.0000001 − p_y(x_i)) ]
//! ```

use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::AutodiffBackend;
use serde_json::json;

use super::{Defense, DefenseParams};
use crate::attack::{Classifier, pgd_steps};
use crate::loss::{cross_entropy, one_hot};
use crate::rng::Rng;

/// MART's boosted CE plus a misclassification-weighted KL.
#[derive(Clone, Debug)]
pub struct Mart(pub DefenseParams);

impl<B: AutodiffBackend> Defense<B> for Mart {
    fn name(&self) -> &'static str {
        "mart"
    }

    fn settings(&self) -> serde_json::Value {
        json!({"name": "mart", "eps": self.0.eps, "alpha": self.0.alpha, "steps": self.0.steps,
               "beta": self.0.beta, "inner": "pgd-ce, start x + 0.001 N(0,1)",
               "outer": "bce(adv) + beta * mean(kl(clean || adv) * (1 - p_y(clean)))"})
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
        let yd = Tensor::<B, 1, Int>::from_inner(y);
        let loss = move |z: Tensor<B, 2>| cross_entropy(z, yd.clone());
        let shape = x.dims();
        let noise = Tensor::from_data(
            TensorData::new(rng.normal_vec(shape.iter().product()), shape),
            &x.device(),
        );
        let start = x.clone() + noise.mul_scalar(0.001);
        pgd_steps(model, &x, start, p.eps, p.alpha, p.steps, &loss)
    }

    fn outer_loss(
        &self,
        clean: Option<Tensor<B, 2>>,
        adv: Tensor<B, 2>,
        y: Tensor<B, 1, Int>,
    ) -> Tensor<B, 1> {
        let clean = clean.expect("MART needs clean logits");
        let [b, k] = adv.dims();
        let onehot = one_hot(y.clone(), k);
        let adv_p = softmax(adv.clone(), 1);
        // Largest wrong-class probability: probabilities are <= 1, so subtracting 2 at the
        // true class removes it from the max.
        let wrong_max = (adv_p.clone() - onehot.clone().mul_scalar(2.0))
            .max_dim(1)
            .reshape([b]);
        let bce = cross_entropy(adv, y) - (wrong_max.neg().add_scalar(1.0001 + 1e-12)).log().mean();
        let nat_logp = log_softmax(clean, 1);
        let nat_p = nat_logp.clone().exp();
        let kl = (nat_p.clone() * (nat_logp - adv_p.add_scalar(1e-12).log()))
            .sum_dim(1)
            .reshape([b]);
        let true_p = (nat_p * onehot).sum_dim(1).reshape([b]);
        let weighted = (kl * true_p.neg().add_scalar(1.000_000_1)).mean();
        bce + weighted.mul_scalar(self.0.beta)
    }
}
