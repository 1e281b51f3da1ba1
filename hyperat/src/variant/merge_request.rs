//! Merging a HyperAT run's per-method LoRAs into a new variant, as a caller asks for it
//! (`hyperat merge`): one set of defaults, one validation, one behaviour.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::save_merge;
use crate::checkpoint::Checkpoint;
use crate::config::VitConfig;
use crate::data::{self, Split};
use crate::error::{Error, Result};
use crate::merge::{
    AdaptiveConfig, DenseDeltas, HeldOutCheck, MergeStrategy, STRATEGIES, by_name, fold,
    learn_and_check,
};
use crate::progress::Progress;
use crate::tune::{RunDir, TuneKind};
use crate::vit::Vit;
pub use crate::wire::MergeRequest;

/// What a merge wrote.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MergeOutcome {
    /// The merge's name: the run's variant `merged:NAME`.
    pub name: String,
    /// Its file.
    pub path: PathBuf,
    /// The run's step it merged, and the steps the run asked for.
    pub step: usize,
    /// The run's planned steps (`step < steps`: the run had not finished).
    pub steps: usize,
    /// The methods, in the run's order.
    pub methods: Vec<String>,
    /// The weights, where the strategy has them (weighted; adaptive: one row per block
    /// or one for the model).
    pub lambdas: Option<Vec<Vec<f32>>>,
    /// Adaptive: the learned weights against the uniform start on held-out images.
    pub check: Option<HeldOutCheck>,
    /// The metadata saved in the merge's file.
    pub meta: HashMap<String, String>,
}

impl MergeRequest {
    /// The merge's name.
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.strategy.clone())
    }

    /// Rejects an unknown strategy, a name that is not a plain file name, bad settings.
    pub fn validate(&self) -> Result<()> {
        if !STRATEGIES.contains(&self.strategy.as_str()) {
            return Err(Error::Invalid(format!(
                "unknown merge strategy `{}` ({})",
                self.strategy,
                STRATEGIES.join(", ")
            )));
        }
        let name = self.name();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || name.starts_with('.')
        {
            return Err(Error::Invalid(format!(
                "merge name `{name}`: 1 to 64 letters, digits, `-`, `_` or `.`, not starting with `.`"
            )));
        }
        if self.strategy == "adaptive" && (self.merge_steps == 0 || self.batch_size == 0) {
            return Err(Error::Invalid(
                "adaptive merge: merge_steps and batch_size must be positive".into(),
            ));
        }
        if self.strategy != "adaptive" {
            by_name(
                &self.strategy,
                self.weights.clone(),
                self.density,
                self.seed,
            )?;
        }
        Ok(())
    }

    /// Merges the HyperAT run in `run` and saves the merge there (its variant
    /// `merged:NAME` from then on).
    pub fn run<B: AutodiffBackend>(
        &self,
        run: &RunDir,
        device: &B::Device,
        progress: &mut dyn Progress,
    ) -> Result<MergeOutcome> {
        let merged = self.merge::<B>(run, device, progress)?;
        let path = save_merge(
            run,
            &merged.outcome.name,
            &merged.deltas,
            merged.outcome.meta.clone(),
        )?;
        Ok(MergeOutcome {
            path,
            ..merged.outcome
        })
    }

    /// Merges the HyperAT run in `run` and writes the merged model, folded into a plain
    /// ViT, as a timm checkpoint in `out`, leaving the run as it was (what a served
    /// merge job does: the weights `run` then `export --variant merged:NAME` give).
    pub fn export<B: AutodiffBackend>(
        &self,
        run: &RunDir,
        out: &Path,
        device: &B::Device,
        progress: &mut dyn Progress,
    ) -> Result<MergeOutcome> {
        let merged = self.merge::<B>(run, device, progress)?;
        let vit = fold(merged.vit, &merged.deltas)?;
        Checkpoint::from_vit(&merged.config, &vit).save(out)?;
        Ok(MergeOutcome {
            path: out.to_path_buf(),
            ..merged.outcome
        })
    }

    fn merge<B: AutodiffBackend>(
        &self,
        run: &RunDir,
        device: &B::Device,
        progress: &mut dyn Progress,
    ) -> Result<Merged<B>> {
        self.validate()?;
        let (info, vit_config, model, step) = run.load_model::<B>(device)?;
        let shape = vit_config.input_shape();
        if info.config.kind != TuneKind::Hyperat {
            return Err(Error::Invalid(format!(
                "{} is a {} run; merging needs a HyperAT run",
                run.path().display(),
                info.config.kind.name()
            )));
        }
        let methods = model.valid().method_loras(&info.config.methods);
        let mut meta = HashMap::from([
            ("strategy".to_string(), self.strategy.clone()),
            ("methods".to_string(), info.config.methods.join(",")),
            ("step".to_string(), step.to_string()),
        ]);
        let (deltas, lambdas, check) = if self.strategy == "adaptive" {
            if info.holdout == 0 {
                return Err(Error::Invalid(
                    "the run held out no training images (holdout 0); the adaptive merge needs them"
                        .into(),
                ));
            }
            let mut train = data::load(&info.dataset, Split::Train, Some(shape))?;
            let val = train.split_off(info.holdout);
            let d = &info.config.defense;
            let cfg = AdaptiveConfig {
                per_layer: self.per_layer,
                steps: self.merge_steps,
                lr: self.merge_lr,
                batch_size: self.batch_size,
                eps: self.eps.unwrap_or(d.eps),
                alpha: self.eps.map(|e| e / 4.0).unwrap_or(d.alpha),
                attack_steps: self.attack_steps.unwrap_or(d.steps),
                seed: self.seed,
                check_images: self.check_images,
            };
            let (learned, check) =
                learn_and_check::<B>(&model.vit, &methods, &val, &cfg, device, progress)?;
            meta.insert("lambdas".into(), json(&learned.lambdas));
            if let Some(c) = &check {
                meta.insert("check".into(), json(c));
            }
            meta.insert("adaptive".into(), json(&cfg));
            let deltas = learned.merge(&methods)?;
            (deltas, Some(learned.lambdas), check)
        } else {
            let s = by_name(
                &self.strategy,
                self.weights.clone(),
                self.density,
                self.seed,
            )?;
            meta.insert("strategy".into(), s.name());
            if let Some(w) = &self.weights {
                meta.insert("lambdas".into(), json(w));
            }
            let lambdas = self.weights.clone().map(|w| vec![w]);
            (s.merge(&methods)?, lambdas, None)
        };
        Ok(Merged {
            deltas,
            outcome: MergeOutcome {
                name: self.name(),
                path: PathBuf::new(),
                step,
                steps: info.config.steps,
                methods: info.config.methods.clone(),
                lambdas,
                check,
                meta,
            },
            vit: model.vit.valid(),
            config: vit_config,
        })
    }
}

/// A merge before it is written: its deltas, what it did, and the run's (frozen) ViT
/// and config to fold it into.
struct Merged<B: AutodiffBackend> {
    deltas: DenseDeltas,
    outcome: MergeOutcome,
    vit: Vit<B::InnerBackend>,
    config: VitConfig,
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals() {
        let r: MergeRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(r, MergeRequest::default());
        r.validate().unwrap();
        assert_eq!(r.name(), "uniform");
        for (body, want) in [
            (r#"{"strategy": "mean"}"#, "unknown merge strategy"),
            (r#"{"name": "../x"}"#, "merge name"),
            (r#"{"name": ""}"#, "merge name"),
            (r#"{"strategy": "weighted"}"#, "weight"),
            (
                r#"{"strategy": "adaptive", "merge_steps": 0}"#,
                "merge_steps",
            ),
        ] {
            let r: MergeRequest = serde_json::from_str(body).unwrap();
            let e = r.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
    }
}
