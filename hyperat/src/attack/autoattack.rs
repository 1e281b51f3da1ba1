//! AutoAttack (Croce & Hein, ICML 2020), standard version, L-inf: APGD-CE, APGD-T
//! (9 targets), FAB-T (9 targets), Square (5000 queries), each run only on the points
//! every earlier component failed to break; a point's final result is its worst case.
//! [`Attack::perturb_report`] gives the robust flags after each component.

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde_json::json;

use super::apgd::{correct, host_f32, on_robust};
use super::{Apgd, ApgdLoss, ApgdT, Attack, Classifier, FabT, Square};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Component names of the standard version, in order.
pub const STANDARD: &[&str] = &["apgd-ce", "apgd-t", "fab-t", "square"];

/// A sequence of attacks applied to the still-robust points.
pub struct AutoAttack<B: AutodiffBackend> {
    /// The components, in order.
    pub components: Vec<Box<dyn Attack<B>>>,
    /// Whether this is the full standard version (reports say so, or say it is not).
    pub standard: bool,
}

impl<B: AutodiffBackend> AutoAttack<B> {
    /// The components by name with AutoAttack's standard settings: 100 iterations for
    /// the APGDs and FAB, 9 target classes, 5000 Square queries, one restart each.
    pub fn new(eps: f32, names: &[String]) -> Result<Self> {
        Self::scaled(eps, names, 100, 5000)
    }

    /// The same with other budgets (`n_iter` for the APGDs and FAB, `queries` for
    /// Square); anything but (100, 5000) is not the standard version.
    pub fn scaled(eps: f32, names: &[String], n_iter: usize, queries: usize) -> Result<Self> {
        let mut components: Vec<Box<dyn Attack<B>>> = vec![];
        for n in names {
            components.push(match n.as_str() {
                "apgd-ce" => Box::new(Apgd { eps, n_iter, restarts: 1, loss: ApgdLoss::Ce }),
                "apgd-dlr" => Box::new(Apgd { eps, n_iter, restarts: 1, loss: ApgdLoss::Dlr }),
                "apgd-t" => Box::new(ApgdT { eps, n_iter, n_target_classes: 9, restarts: 1 }),
                "fab-t" => Box::new(FabT { eps, n_iter, n_target_classes: 9, restarts: 1 }),
                "square" => Box::new(Square { eps, n_queries: queries, p_init: 0.8, restarts: 1 }),
                other => {
                    return Err(Error::Invalid(format!(
                        "unknown AutoAttack component `{other}` (apgd-ce, apgd-dlr, apgd-t, fab-t, square)"
                    )));
                }
            });
        }
        if components.is_empty() {
            return Err(Error::Invalid(
                "AutoAttack needs at least one component".into(),
            ));
        }
        let standard = names
            .iter()
            .map(String::as_str)
            .eq(STANDARD.iter().copied())
            && n_iter == 100
            && queries == 5000;
        Ok(Self {
            components,
            standard,
        })
    }
}

impl<B: AutodiffBackend> Attack<B> for AutoAttack<B> {
    fn name(&self) -> &'static str {
        "autoattack"
    }

    fn settings(&self) -> serde_json::Value {
        json!({"name": "autoattack", "version": if self.standard { "standard" } else { "custom (not standard AutoAttack)" },
               "components": self.components.iter().map(|c| c.settings()).collect::<Vec<_>>()})
    }

    fn perturb(
        &self,
        model: &dyn Classifier<B>,
        x: Tensor<B::InnerBackend, 4>,
        y: Tensor<B::InnerBackend, 1, Int>,
        rng: &mut Rng,
    ) -> Tensor<B::InnerBackend, 4> {
        self.perturb_report(model, x, y, rng).0
    }

    fn perturb_report(
        &self,
        model: &dyn Classifier<B>,
        x: Tensor<B::InnerBackend, 4>,
        y: Tensor<B::InnerBackend, 1, Int>,
        rng: &mut Rng,
    ) -> (Tensor<B::InnerBackend, 4>, super::ComponentFlags) {
        let mut robust = correct(model, &x, &y);
        let mut adv = host_f32(x.clone());
        let mut after = vec![];
        for c in &self.components {
            // Each component starts from the seed's stream, as AutoAttack re-seeds each one.
            let mut crng = rng.fork();
            on_robust(&x, &y, &mut robust, &mut adv, |xs, ys, _| {
                let found = c.perturb(model, xs, ys.clone(), &mut crng);
                let still = correct(model, &found, &ys);
                (found, still)
            });
            after.push((c.name().to_string(), robust.clone()));
        }
        (
            Tensor::from_data(TensorData::new(adv, x.dims()), &x.device()),
            after,
        )
    }
}
