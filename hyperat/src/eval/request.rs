//! An evaluation as a caller asks for it (`hyperat eval`, an eval job): one set of
//! defaults, one validation, one behaviour.

use std::str::FromStr;

use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::{EvalConfig, EvalReport, EvalShard, ShardSpec, evaluate_shard, merge_shards};
use crate::attack::{AttackParams, Classifier, by_name};
use crate::config::VitConfig;
use crate::data::{self, Dataset, Split, standard_eps};
use crate::error::{Error, Result};
use crate::progress::Progress;

/// Which images an evaluation reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalSplit {
    /// The test split (the default; what results are reported on).
    #[default]
    Test,
    /// The training split.
    Train,
    /// The last `holdout` training images, the ones `hyperat tune` keeps out of
    /// training: where settings are chosen without touching the test set.
    Holdout,
}

impl FromStr for EvalSplit {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "test" => Ok(Self::Test),
            "train" => Ok(Self::Train),
            "holdout" => Ok(Self::Holdout),
            other => Err(Error::Invalid(format!(
                "unknown split `{other}` (test, train, holdout)"
            ))),
        }
    }
}

impl std::fmt::Display for EvalSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl EvalSplit {
    /// `test`, `train` or `holdout`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Test => "test",
            Self::Train => "train",
            Self::Holdout => "holdout",
        }
    }
}

/// An evaluation; every field has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalRequest {
    /// Dataset (default: the one the model was trained on, else `fashion-mnist`).
    pub dataset: Option<String>,
    /// Which images (default `test`).
    pub split: EvalSplit,
    /// Size of the hold-out for `split: holdout` (default 5000, as `hyperat tune`).
    pub holdout: usize,
    /// The first N images of the split (default: all of them).
    pub limit: Option<usize>,
    /// `none`, `fgsm`, `pgd` (default), `cw`, `trades-kl`, `apgd-ce`, `apgd-dlr`,
    /// `apgd-t`, `fab-t`, `square` or `autoattack`.
    pub attack: String,
    /// L-inf radius in [0,1] pixels (default: the dataset's standard budget,
    /// [`standard_eps`]: 0.1 for Fashion-MNIST, 8/255 otherwise).
    pub eps: Option<f32>,
    /// Step size (default eps/4).
    pub alpha: Option<f32>,
    /// Attack iterations (default 20: the PGD-20 robust accuracy papers report).
    pub steps: usize,
    /// Random restarts of PGD and CW (default 1).
    pub restarts: usize,
    /// CW confidence kappa (default 50).
    pub kappa: f32,
    /// Square's query budget (default 5000).
    pub queries: usize,
    /// AutoAttack's components (default: the standard version).
    pub aa_attacks: Vec<String>,
    /// Images per batch (default 128).
    pub batch_size: usize,
    /// Seed of the attack's random numbers (default 0).
    pub seed: u64,
}

impl Default for EvalRequest {
    fn default() -> Self {
        let attack = AttackParams::default();
        Self {
            dataset: None,
            split: EvalSplit::Test,
            holdout: 5000,
            limit: None,
            attack: "pgd".into(),
            eps: None,
            alpha: None,
            steps: 20,
            restarts: attack.restarts,
            kappa: attack.kappa,
            queries: attack.queries,
            aa_attacks: attack.aa_attacks,
            batch_size: 128,
            seed: 0,
        }
    }
}

/// The largest batch an evaluation accepts (memory grows with it).
pub const MAX_BATCH: usize = 4096;

/// What an evaluation measured, and of what: `hyperat eval --json` and an eval job's
/// `eval.json` are this.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalOutcome {
    /// The model as the caller named it (a folder, `RUN#variant`, a served model id).
    pub model: String,
    /// The dataset evaluated.
    pub dataset: String,
    /// Its split.
    pub split: EvalSplit,
    /// The request, as given.
    pub request: EvalRequest,
    /// The measurements (flattened: `n`, `clean_acc`, `robust_acc`, predictions, …).
    #[serde(flatten)]
    pub report: EvalReport,
}

/// One shard of an evaluation, with what it evaluated (the JSON `eval --shard` writes).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalShardOutcome {
    /// The model as named on the command line.
    pub model: String,
    /// Dataset evaluated.
    pub dataset: String,
    /// Split evaluated.
    pub split: EvalSplit,
    /// The request as given.
    pub request: EvalRequest,
    /// Its results.
    pub shard: EvalShard,
}

impl EvalShardOutcome {
    /// The outcome of the whole evaluation from all its shards (any order); refuses
    /// shards of different models, datasets or requests.
    pub fn merge(shards: Vec<EvalShardOutcome>) -> Result<EvalOutcome> {
        let first = shards
            .first()
            .ok_or_else(|| Error::Invalid("no shards to merge".into()))?;
        let (model, dataset, split, request) = (
            first.model.clone(),
            first.dataset.clone(),
            first.split,
            first.request.clone(),
        );
        if let Some(other) = shards.iter().find(|s| {
            (&s.model, &s.dataset, s.split, &s.request) != (&model, &dataset, split, &request)
        }) {
            return Err(Error::Invalid(format!(
                "shard {} evaluated another model, dataset or request than shard {}",
                other.shard.spec, first.shard.spec
            )));
        }
        let report = merge_shards(shards.into_iter().map(|s| s.shard).collect())?;
        Ok(EvalOutcome {
            model,
            dataset,
            split,
            request,
            report,
        })
    }
}

impl EvalRequest {
    /// The dataset it reads, for a model trained on `model_dataset`.
    pub fn dataset_name(&self, model_dataset: Option<&str>) -> String {
        self.dataset
            .clone()
            .or_else(|| model_dataset.map(str::to_string))
            .unwrap_or_else(|| "fashion-mnist".into())
    }

    /// The attack's settings on `dataset`.
    pub fn params(&self, dataset: &str) -> AttackParams {
        AttackParams {
            eps: self.eps.unwrap_or_else(|| standard_eps(dataset)),
            alpha: self.alpha,
            steps: self.steps,
            restarts: self.restarts,
            kappa: self.kappa,
            queries: self.queries,
            aa_attacks: self.aa_attacks.clone(),
        }
    }

    /// Rejects what cannot run: an unknown attack or split size, values out of range.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.batch_size > MAX_BATCH {
            return Err(Error::Invalid(format!(
                "batch_size must be in 1..={MAX_BATCH}, got {}",
                self.batch_size
            )));
        }
        if self.limit == Some(0) {
            return Err(Error::Invalid(
                "limit must be at least 1 (leave it out for every image)".into(),
            ));
        }
        if self.split == EvalSplit::Holdout && self.holdout == 0 {
            return Err(Error::Invalid(
                "split `holdout` needs a hold-out of at least 1 image".into(),
            ));
        }
        if self.attack != "none" {
            // The registry is the one authority on names and settings; building an
            // attack allocates nothing.
            let dataset = self.dataset_name(None);
            by_name::<crate::backend::CpuAutodiff>(&self.attack, &self.params(&dataset))?;
        }
        Ok(())
    }

    /// The images to evaluate `cfg`'s model on: `dataset`'s split, cut to `limit`;
    /// an error where the dataset's classes are not the model's.
    pub fn load_data(&self, dataset: &str, cfg: &VitConfig) -> Result<Dataset> {
        let input = Some(cfg.input_shape());
        let mut ds = match self.split {
            EvalSplit::Holdout => {
                data::load(dataset, Split::Train, input)?.split_holdout(self.holdout)?
            }
            EvalSplit::Train => data::load(dataset, Split::Train, input)?,
            EvalSplit::Test => data::load(dataset, Split::Test, input)?,
        };
        if ds.classes.len() != cfg.num_classes {
            return Err(Error::Invalid(format!(
                "the model has {} classes but dataset `{dataset}` has {}",
                cfg.num_classes,
                ds.classes.len()
            )));
        }
        if let Some(n) = self.limit {
            ds.truncate(n);
        }
        Ok(ds)
    }

    /// Evaluates `model` (named `name`, trained on `model_dataset` where known).
    pub fn run<B: AutodiffBackend>(
        &self,
        name: &str,
        model: &dyn Classifier<B>,
        config: &VitConfig,
        model_dataset: Option<&str>,
        device: &B::Device,
        progress: &mut dyn Progress,
    ) -> Result<EvalOutcome> {
        let whole = self.run_shard(
            ShardSpec::WHOLE,
            name,
            model,
            config,
            model_dataset,
            device,
            progress,
        )?;
        EvalShardOutcome::merge(vec![whole])
    }

    /// Evaluates one shard of the request's images (`--shard K/N`), to be merged with the
    /// others by [`EvalShardOutcome::merge`] into what [`EvalRequest::run`] gives.
    #[allow(clippy::too_many_arguments)]
    pub fn run_shard<B: AutodiffBackend>(
        &self,
        spec: ShardSpec,
        name: &str,
        model: &dyn Classifier<B>,
        config: &VitConfig,
        model_dataset: Option<&str>,
        device: &B::Device,
        progress: &mut dyn Progress,
    ) -> Result<EvalShardOutcome> {
        self.validate()?;
        let dataset = self.dataset_name(model_dataset);
        let ds = self.load_data(&dataset, config)?;
        let cfg = EvalConfig {
            attack: self.attack.clone(),
            params: self.params(&dataset),
            batch_size: self.batch_size,
            seed: self.seed,
        };
        let shard = evaluate_shard::<B>(model, &ds, &cfg, spec, device, progress)?;
        Ok(EvalShardOutcome {
            model: name.to_string(),
            dataset,
            split: self.split,
            request: self.clone(),
            shard,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_request_is_every_default() {
        let r: EvalRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(r, EvalRequest::default());
        r.validate().unwrap();
        assert_eq!(r.params(&r.dataset_name(None)).eps, 0.1);
        assert_eq!(r.params("cifar10").eps, 8.0 / 255.0);
        assert_eq!(r.dataset_name(Some("cifar10")), "cifar10");
    }

    #[test]
    fn bad_requests_are_refused_with_the_reason() {
        let cases = [
            (r#"{"attack": "pgdd"}"#, "unknown attack"),
            (r#"{"eps": 2.0}"#, "eps"),
            (r#"{"steps": 0}"#, "steps"),
            (r#"{"batch_size": 0}"#, "batch_size"),
            (r#"{"limit": 0}"#, "limit"),
            (r#"{"split": "holdout", "holdout": 0}"#, "hold-out"),
            (
                r#"{"attack": "autoattack", "aa_attacks": ["pgd"]}"#,
                "component",
            ),
        ];
        for (body, want) in cases {
            let r: EvalRequest = serde_json::from_str(body).unwrap();
            let e = r.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
        assert!(serde_json::from_str::<EvalRequest>(r#"{"atack": "pgd"}"#).is_err());
        assert!(serde_json::from_str::<EvalRequest>(r#"{"split": "val"}"#).is_err());
    }
}
