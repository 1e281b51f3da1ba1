//! What a run measures while it trains, beside its per-step loss: a hold-out evaluation
//! of every model the run offers (HyperAT: each method's LoRA and the uniform merge; a
//! baseline: its tuned model) every `eval_every` steps, clean and under PGD-10 at the
//! training eps with a fixed seed, so the curves say when a run has converged and
//! whether the methods stay apart in what they do, not only in their weights.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde_json::{Value, json};

use super::{TuneConfig, Tuned};
use crate::attack::{AttackParams, frozen_view};
use crate::data::Dataset;
use crate::error::Result;
use crate::eval::{EvalConfig, evaluate};
use crate::merge::weighted_adapters;
use crate::progress::Silent;

/// Iterations of the hold-out attack.
pub const HOLDOUT_PGD_STEPS: usize = 10;

/// The hold-out records (`kind: holdout`) of `model` at `step`, one per model variant.
pub fn holdout_records<B: AutodiffBackend>(
    model: &Tuned<B>,
    cfg: &TuneConfig,
    images: &Dataset,
    step: usize,
    device: &B::Device,
) -> Result<Vec<Value>> {
    let ec = EvalConfig {
        attack: "pgd".into(),
        params: AttackParams {
            eps: cfg.defense.eps,
            alpha: Some(cfg.defense.eps / 4.0),
            steps: HOLDOUT_PGD_STEPS,
            restarts: 1,
            ..Default::default()
        },
        batch_size: 256,
        seed: 0,
    };
    // A frozen copy: generating factors or evaluating with trainable parameters would
    // record autodiff graphs that no backward ever frees.
    let model = model.clone().no_grad();
    let vit = model.vit.clone();
    let mut variants: Vec<(String, Option<crate::vit::Adapters<B>>)> = vec![];
    match (&model.hyper, &model.lora) {
        (Some(_), _) => {
            for (m, name) in cfg.methods.iter().enumerate() {
                variants.push((
                    format!("method:{name}"),
                    model.adapters(m).map(|a| a.detach()),
                ));
            }
            let loras = model.method_loras(&cfg.methods);
            let k = loras.len();
            let uniform = Tensor::<B, 2>::full([1, k], 1.0 / k as f32, device);
            let merged = weighted_adapters(&loras, &uniform, vit.blocks.len(), device);
            variants.push(("merged:uniform".into(), Some(merged)));
        }
        (None, Some(_)) => variants.push(("tuned".into(), model.adapters(0).map(|a| a.detach()))),
        (None, None) => variants.push(("tuned".into(), None)),
    }
    let mut out = vec![];
    for (name, adapters) in &variants {
        let started = Instant::now();
        let classifier = frozen_view(&vit, adapters.as_ref());
        let r = evaluate::<B>(classifier.as_ref(), images, &ec, device, &mut Silent)?;
        out.push(
            json!({"kind": "holdout", "step": step, "model": name, "n": r.n,
            "attack": format!("pgd-{HOLDOUT_PGD_STEPS}"), "eps": cfg.defense.eps,
            "clean_acc": r.clean_acc, "robust_acc": r.robust_acc,
            "seconds": started.elapsed().as_secs_f64()}),
        );
    }
    Ok(out)
}
