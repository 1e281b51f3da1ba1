//! Clean and adversarial accuracy over a dataset, batch by batch.
//!
//! Conventions: `clean_pred` / `adv_pred` are per-sample predictions in dataset order
//! (every sample is attacked, as torchattacks does); `robust_acc` counts a sample as
//! robust only when both its clean and its adversarial prediction are right (the
//! standard robust accuracy, never above `clean_acc`); `adv_acc` is the plain accuracy
//! on the adversarial images.
//!
//! Work splits into shards of whole batches ([`evaluate_shard`], [`merge_shards`]):
//! every batch's random numbers are a function of the seed and the batch's index, so
//! shards evaluated apart (other processes, other machines) merge into the report one
//! pass would give.

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
use crate::rng::{Rng, mix};

mod request;
mod shard;
pub use crate::wire::ComponentAcc;
pub use request::{EvalOutcome, EvalRequest, EvalShardOutcome, EvalSplit, MAX_BATCH};
pub use shard::{EvalShard, ShardSpec};

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
    let whole = evaluate_shard(model, ds, cfg, ShardSpec::WHOLE, device, progress)?;
    merge_shards(vec![whole])
}

/// Evaluates shard `spec` of `ds`: a contiguous run of whole batches (the batches of
/// `ds.ordered_batches(cfg.batch_size)`, split as evenly as they go).
pub fn evaluate_shard<B: AutodiffBackend>(
    model: &dyn Classifier<B>,
    ds: &Dataset,
    cfg: &EvalConfig,
    spec: ShardSpec,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<EvalShard> {
    if cfg.batch_size == 0 {
        return Err(Error::Invalid("batch size must be positive".into()));
    }
    let attack = match cfg.attack.as_str() {
        "none" => None,
        name => Some(by_name::<B>(name, &cfg.params)?),
    };
    let start = Instant::now();
    let all = ds.ordered_batches(cfg.batch_size);
    let range = spec.batches(all.len())?;
    let first_image = range.start * cfg.batch_size;
    let images: usize = all[range.clone()].iter().map(Vec::len).sum();
    let mut attack_json = attack
        .as_ref()
        .map(|a| a.settings())
        .unwrap_or_else(|| serde_json::json!({"name": "none"}));
    attack_json["seed"] = serde_json::json!(cfg.seed);
    attack_json["batch_size"] = serde_json::json!(cfg.batch_size);
    let mut out = EvalShard {
        spec,
        first_image,
        total_images: ds.len(),
        eps: cfg.params.eps,
        attack: attack_json,
        attacked: attack.is_some(),
        clean_pred: vec![],
        adv_pred: vec![],
        labels: vec![],
        confidence_sum: 0.0,
        component_robust: vec![],
        nan_count: 0,
        max_linf: 0.0,
        model_checks: None,
        seconds: 0.0,
    };
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
    progress.update(0, images, "images");
    for (b, idx) in all.iter().enumerate().take(range.end).skip(range.start) {
        if stop(progress) {
            return Err(Error::Cancelled);
        }
        let (x, y) = ds.batch::<B::InnerBackend>(idx, device);
        out.labels.extend(idx.iter().map(|&i| ds.labels[i]));
        let logits = inner_logits(model, x.clone());
        out.confidence_sum += softmax(logits.clone(), 1)
            .max_dim(1)
            .sum()
            .into_scalar()
            .elem::<f64>();
        out.clean_pred
            .extend(to_u32(logits.argmax(1).reshape([idx.len()])));
        if let Some(a) = &attack {
            if b == 0 {
                out.model_checks = Some(model_checks::<B>(model, &x, &y));
            }
            // The batch's own stream: shards evaluated apart draw what one pass would.
            let mut rng = Rng::new(mix(cfg.seed, b as u64, 0xE7A1));
            let (adv, after) = a.perturb_report(model, x.clone(), y, &mut rng);
            for (i, (name, robust)) in after.into_iter().enumerate() {
                if out.component_robust.len() <= i {
                    out.component_robust.push((name, 0));
                }
                out.component_robust[i].1 += robust.iter().filter(|r| **r).count();
            }
            out.nan_count += adv.clone().is_nan().int().sum().into_scalar().elem::<i64>() as usize;
            let linf = (adv.clone() - x).abs().max().into_scalar().elem::<f32>();
            out.max_linf = out.max_linf.max(linf);
            out.adv_pred.extend(to_u32(inner_predict(model, adv)));
        }
        if stop(progress) {
            // The batch's attack was cut short: its predictions mean nothing.
            return Err(Error::Cancelled);
        }
        progress.update(out.clean_pred.len(), images, "images");
    }
    out.seconds = start.elapsed().as_secs_f64();
    Ok(out)
}

/// The report of a whole evaluation from all its shards (any order): per-sample
/// predictions in dataset order, accuracies and checks over every image, the model
/// checks of the first batch, the longest shard's time. Refuses shards of different
/// evaluations, missing or repeated shards.
pub fn merge_shards(mut shards: Vec<EvalShard>) -> Result<EvalReport> {
    shards.sort_by_key(|s| s.spec.index);
    let first = shards
        .first()
        .ok_or_else(|| Error::Invalid("no shards to merge".into()))?
        .clone();
    // A shard without images (more shards than batches) attacked nothing: it has no
    // components to count.
    let component_names: Vec<String> = shards
        .iter()
        .find(|s| !s.labels.is_empty())
        .map(|s| s.component_robust.iter().map(|(n, _)| n.clone()).collect())
        .unwrap_or_default();
    let mut next_image = 0;
    for (i, s) in shards.iter().enumerate() {
        if s.spec.count != shards.len() || s.spec.index != i {
            return Err(Error::Invalid(format!(
                "expected shards 0..{} of one evaluation, got shard {} of {}",
                shards.len(),
                s.spec.index,
                s.spec.count
            )));
        }
        if s.attack != first.attack || s.total_images != first.total_images {
            return Err(Error::Invalid(format!(
                "shard {} comes from another evaluation (attack settings or images differ)",
                s.spec.index
            )));
        }
        // Shard files come from elsewhere: a malformed one is an error, not a panic.
        let n = s.labels.len();
        if s.clean_pred.len() != n
            || s.adv_pred.len() != if s.attacked { n } else { 0 }
            || (n > 0 && s.component_robust.len() != component_names.len())
        {
            return Err(Error::Invalid(format!(
                "shard {} is inconsistent: its predictions, labels or attack components differ in number",
                s.spec.index
            )));
        }
        if s.first_image != next_image {
            return Err(Error::Invalid(format!(
                "shard {} starts at image {}, expected {next_image}",
                s.spec.index, s.first_image
            )));
        }
        next_image += s.labels.len();
    }
    if next_image != first.total_images {
        return Err(Error::Invalid(format!(
            "the shards cover {next_image} of {} images",
            first.total_images
        )));
    }
    let cat = |f: fn(&EvalShard) -> &Vec<u32>| -> Vec<u32> {
        shards.iter().flat_map(|s| f(s).iter().copied()).collect()
    };
    let (clean_pred, adv_pred, labels) = (
        cat(|s| &s.clean_pred),
        cat(|s| &s.adv_pred),
        cat(|s| &s.labels),
    );
    let n = labels.len();
    let share = |count: usize| count as f64 / n.max(1) as f64;
    let hits = |p: &[u32]| p.iter().zip(&labels).filter(|(a, b)| a == b).count();
    let clean_acc = share(hits(&clean_pred));
    let max_linf = shards.iter().map(|s| s.max_linf).fold(0f32, f32::max);
    let nan_count = shards.iter().map(|s| s.nan_count).sum();
    let (robust_acc, adv_acc, adv) = if first.attacked {
        let robust = (0..n)
            .filter(|&i| clean_pred[i] == labels[i] && adv_pred[i] == labels[i])
            .count();
        (
            Some(share(robust)),
            Some(share(hits(&adv_pred))),
            Some(adv_pred),
        )
    } else {
        (None, None, None)
    };
    let mut checks = shards.iter().find_map(|s| s.model_checks.clone());
    if let Some(c) = checks.as_mut() {
        let robust = robust_acc.unwrap_or(0.0);
        result_checks(c, first.eps, max_linf, nan_count, clean_acc, robust);
    }
    let components = (!component_names.is_empty()).then(|| {
        component_names
            .iter()
            .enumerate()
            .map(|(i, name)| ComponentAcc {
                name: name.clone(),
                robust_acc: share(
                    shards
                        .iter()
                        .filter_map(|s| s.component_robust.get(i))
                        .map(|c| c.1)
                        .sum(),
                ),
            })
            .collect()
    });
    Ok(EvalReport {
        n,
        clean_acc,
        mean_confidence: shards.iter().map(|s| s.confidence_sum).sum::<f64>() / n.max(1) as f64,
        robust_acc,
        adv_acc,
        clean_pred,
        adv_pred: adv,
        labels,
        attack: first.attack.clone(),
        max_linf: first.attacked.then_some(max_linf),
        components,
        checks,
        seconds: shards.iter().map(|s| s.seconds).fold(0.0, f64::max),
    })
}
