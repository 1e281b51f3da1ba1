//! AutoAttack's sanity checks (`checks.py`): signs that a robustness number may be
//! inflated by the model rather than earned.

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::apgd::host_f32;
use super::{Classifier, inner_logits, input_grad};
use crate::loss::cross_entropy_each;

/// What the checks found; `warnings` says it in words.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SanityReport {
    /// The outputs look like probabilities (rows in [0,1] summing to 1), not logits.
    pub outputs_look_like_probabilities: bool,
    /// Fraction of checked images whose input gradient is exactly zero.
    pub zero_gradient_fraction: f64,
    /// Two forwards of the same batch gave different outputs.
    pub non_deterministic: bool,
    /// Largest `|x_adv − x|` over all evaluated images.
    pub max_linf: f32,
    /// Whether `max_linf ≤ eps` (with 1e-6 float slack).
    pub within_eps: bool,
    /// Non-finite values in the adversarial images.
    pub nan_count: usize,
    /// Clean accuracy ≥ robust accuracy.
    pub clean_ge_robust: bool,
    /// Human-readable warnings (empty when all is well).
    pub warnings: Vec<String>,
}

/// The model-level checks on one batch: output range, zero gradients, determinism.
pub fn model_checks<B: AutodiffBackend>(
    model: &dyn Classifier<B>,
    x: &Tensor<B::InnerBackend, 4>,
    y: &Tensor<B::InnerBackend, 1, Int>,
) -> SanityReport {
    let mut r = SanityReport::default();
    let out1 = host_f32(inner_logits(model, x.clone()));
    let out2 = host_f32(inner_logits(model, x.clone()));
    let k = out1.len() / y.dims()[0].max(1);
    r.outputs_look_like_probabilities = out1.chunks(k.max(1)).all(|row| {
        row.iter().all(|v| (0.0..=1.0).contains(v)) && (row.iter().sum::<f32>() - 1.0).abs() < 1e-4
    });
    if r.outputs_look_like_probabilities {
        r.warnings.push("the model's outputs look like probabilities; attacks expect logits (AutoAttack's check_range_output)".into());
    }
    r.non_deterministic = out1 != out2;
    if r.non_deterministic {
        r.warnings.push("the model's output changes between two identical forward passes: randomised defenses need EOT (check_randomized)".into());
    }
    let yd = Tensor::<B, 1, Int>::from_inner(y.clone());
    let g = host_f32(input_grad::<B>(model, x.clone(), |z| {
        cross_entropy_each(z, yd).sum()
    }));
    let per = g.len() / y.dims()[0].max(1);
    let zero = g
        .chunks(per.max(1))
        .filter(|row| row.iter().all(|v| *v == 0.0))
        .count();
    r.zero_gradient_fraction = zero as f64 / y.dims()[0].max(1) as f64;
    if zero > 0 {
        r.warnings.push(format!(
            "{:.1}% of the checked images have an all-zero input gradient: possible gradient masking (check_zero_gradients)",
            100.0 * r.zero_gradient_fraction
        ));
    }
    r
}

/// Finishes the report with the result-level checks.
pub fn result_checks(
    r: &mut SanityReport,
    eps: f32,
    max_linf: f32,
    nan_count: usize,
    clean: f64,
    robust: f64,
) {
    r.max_linf = max_linf;
    r.within_eps = max_linf <= eps + 1e-6;
    r.nan_count = nan_count;
    r.clean_ge_robust = clean >= robust;
    if !r.within_eps {
        r.warnings
            .push(format!("max |delta| {max_linf} exceeds eps {eps}"));
    }
    if nan_count > 0 {
        r.warnings.push(format!(
            "{nan_count} non-finite values in the adversarial images"
        ));
    }
    if !r.clean_ge_robust {
        r.warnings.push(format!(
            "robust accuracy {robust} exceeds clean accuracy {clean}"
        ));
    }
}
