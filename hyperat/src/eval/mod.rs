//! Clean and adversarial accuracy over a dataset, batch by batch.
//!
//! Conventions: `clean_pred` / `adv_pred` are per-sample predictions in dataset order
//! (every sample is attacked, as torchattacks does); `robust_acc` counts a sample as
//! robust only when both its clean and its adversarial prediction are right (the
//! standard robust accuracy, never above `clean_acc`); `adv_acc` is the plain accuracy
//! on the adversarial images.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::attack::checks::{SanityReport, model_checks, result_checks};
use crate::attack::{AttackParams, Classifier, by_name, inner_logits, inner_predict};
use crate::cancel::Cancellable;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::rng::Rng;

mod request;
pub use crate::wire::ComponentAcc;
pub use request::{EvalOutcome, EvalRequest, EvalSplit, MAX_BATCH};

/// What to evaluate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalConfig {
    /// Attack name (`none`, `fgsm`, `pgd`, `cw`, ...).
    pub attack: String,
    /// Attack settings.
    pub params: AttackParams,
    /// Images per batch.
    pub batch_size: usize,
    /// Seed of the attack's random numbers.
    pub seed: u64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            attack: "none".into(),
            params: AttackParams::default(),
            batch_size: 128,
            seed: 0,
        }
    }
}

/// Results of one evaluation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    /// Images evaluated.
    pub n: usize,
    /// Clean accuracy.
    pub clean_acc: f64,
    /// Mean top-1 softmax probability on the clean images (how sure the model is,
    /// right or wrong).
    #[serde(default)]
    pub mean_confidence: f64,
    /// Robust accuracy (clean and adversarial both right); `None` without an attack.
    pub robust_acc: Option<f64>,
    /// Accuracy on the adversarial images alone.
    pub adv_acc: Option<f64>,
    /// Clean predictions in dataset order.
    pub clean_pred: Vec<u32>,
    /// Adversarial predictions in dataset order.
    pub adv_pred: Option<Vec<u32>>,
    /// Labels in dataset order.
    pub labels: Vec<u32>,
    /// The attack and all its settings.
    pub attack: serde_json::Value,
    /// Largest `|x_adv - x|` seen (must not exceed eps).
    pub max_linf: Option<f32>,
    /// For composite attacks (AutoAttack): robust accuracy after each component.
    pub components: Option<Vec<ComponentAcc>>,
    /// AutoAttack-style sanity checks (with an attack).
    pub checks: Option<SanityReport>,
    /// Wall time in seconds.
    pub seconds: f64,
}

fn to_u32<B: Backend>(t: Tensor<B, 1, Int>) -> Vec<u32> {
    t.into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .expect("int data")
        .into_iter()
        .map(|v| v as u32)
        .collect()
}

/// Evaluates `model` on `ds` under `cfg`.
pub fn evaluate<B: AutodiffBackend>(
    model: &dyn Classifier<B>,
    ds: &Dataset,
    cfg: &EvalConfig,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<EvalReport> {
    if cfg.batch_size == 0 {
        return Err(Error::Invalid("batch size must be positive".into()));
    }
    let attack = match cfg.attack.as_str() {
        "none" => None,
        name => Some(by_name::<B>(name, &cfg.params)?),
    };
    let start = Instant::now();
    let mut rng = Rng::new(cfg.seed);
    let (mut clean_pred, mut adv_pred, mut max_linf) = (vec![], vec![], 0f32);
    let mut nan_count = 0usize;
    let mut confidence_sum = 0f64;
    let mut component_robust: Vec<(String, usize)> = vec![];
    let mut checks: Option<SanityReport> = None;
    let batches = ds.ordered_batches(cfg.batch_size);
    // With a token, attacks stop within a step of a cancel, not at the batch's end.
    let token = progress.cancel_token();
    let guarded = token
        .as_ref()
        .map(|t| Cancellable::new(model, ds.classes.len(), t));
    let model: &dyn Classifier<B> = match &guarded {
        Some(g) => g,
        None => model,
    };
    let stop = |progress: &dyn Progress| {
        progress.cancelled() || token.as_ref().is_some_and(|t| t.is_cancelled())
    };
    progress.update(0, ds.len(), "images");
    for idx in &batches {
        if stop(progress) {
            return Err(Error::Cancelled);
        }
        let (x, y) = ds.batch::<B::InnerBackend>(idx, device);
        let logits = inner_logits(model, x.clone());
        confidence_sum += softmax(logits.clone(), 1)
            .max_dim(1)
            .sum()
            .into_scalar()
            .elem::<f64>();
        clean_pred.extend(to_u32(logits.argmax(1).reshape([idx.len()])));
        if let Some(a) = &attack {
            if checks.is_none() {
                checks = Some(model_checks::<B>(model, &x, &y));
            }
            let (adv, after) = a.perturb_report(model, x.clone(), y, &mut rng);
            for (i, (name, robust)) in after.into_iter().enumerate() {
                if component_robust.len() <= i {
                    component_robust.push((name, 0));
                }
                component_robust[i].1 += robust.iter().filter(|r| **r).count();
            }
            nan_count += adv.clone().is_nan().int().sum().into_scalar().elem::<i64>() as usize;
            max_linf = max_linf.max((adv.clone() - x).abs().max().into_scalar().elem::<f32>());
            adv_pred.extend(to_u32(inner_predict(model, adv)));
        }
        if stop(progress) {
            // The batch's attack was cut short: its predictions mean nothing.
            return Err(Error::Cancelled);
        }
        progress.update(clean_pred.len(), ds.len(), "images");
    }
    let labels = ds.labels[..clean_pred.len()].to_vec();
    let n = labels.len();
    let acc =
        |p: &[u32]| p.iter().zip(&labels).filter(|(a, b)| a == b).count() as f64 / n.max(1) as f64;
    let clean_acc = acc(&clean_pred);
    let (robust_acc, adv_acc, adv) = if attack.is_some() {
        let robust = (0..n)
            .filter(|&i| clean_pred[i] == labels[i] && adv_pred[i] == labels[i])
            .count();
        (
            Some(robust as f64 / n.max(1) as f64),
            Some(acc(&adv_pred)),
            Some(adv_pred),
        )
    } else {
        (None, None, None)
    };
    let mut attack_json = attack
        .as_ref()
        .map(|a| a.settings())
        .unwrap_or_else(|| serde_json::json!({"name": "none"}));
    attack_json["seed"] = serde_json::json!(cfg.seed);
    attack_json["batch_size"] = serde_json::json!(cfg.batch_size);
    if let Some(c) = checks.as_mut() {
        result_checks(
            c,
            cfg.params.eps,
            max_linf,
            nan_count,
            clean_acc,
            robust_acc.unwrap_or(0.0),
        );
    }
    let components = (!component_robust.is_empty()).then(|| {
        component_robust
            .into_iter()
            .map(|(name, r)| ComponentAcc {
                name,
                robust_acc: r as f64 / n.max(1) as f64,
            })
            .collect()
    });
    Ok(EvalReport {
        n,
        clean_acc,
        mean_confidence: confidence_sum / n.max(1) as f64,
        robust_acc,
        adv_acc,
        clean_pred,
        adv_pred: adv,
        labels,
        attack: attack_json,
        max_linf: attack.is_some().then_some(max_linf),
        components,
        checks,
        seconds: start.elapsed().as_secs_f64(),
    })
}
