//! APGD-T (Croce & Hein, ICML 2020): APGD on the targeted DLR loss, once for each of the
//! `n_target_classes` classes ranked highest after the true one on the clean input (9 in
//! AutoAttack's standard version), each run only on the points still robust.

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde_json::json;

use super::apgd::{ApgdLoss, correct, host_f32, on_robust, single_run};
use super::{Attack, Classifier, inner_logits};
use crate::rng::Rng;

/// Targeted APGD with the DLR loss.
#[derive(Clone, Debug)]
pub struct ApgdT {
    /// L-inf radius.
    pub eps: f32,
    /// Iterations per run (100 in AutoAttack).
    pub n_iter: usize,
    /// Target classes tried (9 in AutoAttack; at most classes − 1).
    pub n_target_classes: usize,
    /// Restarts per target class.
    pub restarts: usize,
}

impl<B: AutodiffBackend> Attack<B> for ApgdT {
    fn name(&self) -> &'static str {
        "apgd-t"
    }

    fn settings(&self) -> serde_json::Value {
        json!({"name": "apgd-t", "eps": self.eps, "n_iter": self.n_iter, "n_target_classes": self.n_target_classes,
               "restarts": self.restarts, "loss": "dlr-targeted", "norm": "Linf"})
    }

    fn perturb(
        &self,
        model: &dyn Classifier<B>,
        x: Tensor<B::InnerBackend, 4>,
        y: Tensor<B::InnerBackend, 1, Int>,
        rng: &mut Rng,
    ) -> Tensor<B::InnerBackend, 4> {
        let mut robust = correct(model, &x, &y);
        let mut adv = host_f32(x.clone());
        let classes = inner_logits(model, x.clone().narrow(0, 0, 1)).dims()[1];
        'targets: for rank in 1..=self.n_target_classes.min(classes - 1) {
            for _ in 0..self.restarts {
                if model.stopped() {
                    break 'targets;
                }
                on_robust(&x, &y, &mut robust, &mut adv, |xs, ys, _| {
                    // The class ranked `rank + 1` on the clean input (AutoAttack's
                    // `sort(...)[1][:, -target_class]` with target_class = rank + 1).
                    let n = ys.dims()[0];
                    let order = inner_logits(model, xs.clone()).argsort_descending(1);
                    let target = order.narrow(1, rank, 1).reshape([n]);
                    single_run(
                        model,
                        &xs,
                        &ys,
                        Some(&target),
                        ApgdLoss::Dlr,
                        self.eps,
                        self.n_iter,
                        rng,
                    )
                });
            }
        }
        Tensor::from_data(TensorData::new(adv, x.dims()), &x.device())
    }
}
