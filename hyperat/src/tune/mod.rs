//! Adversarial tuning of a frozen ViT: HyperAT and its baselines through one trainer.
//!
//! [`TuneKind`] says what trains: the hypernetwork side (HyperAT), one plain LoRA set
//! (LoRA-AT), LoRA with LayerNorm inputs (FullLoRA-AT), every weight (full fine-tuning)
//! or the head alone (linear probe, no AT). The trainer only ever sees a [`Defense`]
//! trait object per method; the model only ever sees [`Adapters`].

pub mod diagnostics;
pub mod diversity;
mod model;
pub mod monitor;
pub mod nodes;
mod request;
mod run;
mod run_dir;
mod trainer;
mod variants;

pub use model::Tuned;
pub use request::{RunData, TuneRequest};
pub use run::{peak_mem_mib, run, run_on_nodes, run_parallel};
pub use run_dir::{MetricsLog, RunDir, RunInfo, TuneSummary};
pub use trainer::{StepRecord, Trainer};
pub use variants::Variant;

use serde::{Deserialize, Serialize};

use crate::defense::DefenseParams;
use crate::error::{Error, Result};
use crate::hypernet::HyperConfig;
use crate::lora::LoraConfig;
use crate::optim::GroupRule;
use crate::rng::{Rng, mix};

/// What trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TuneKind {
    /// Hypernetwork-generated LoRA per method, one method sampled per step, plus the head.
    Hyperat,
    /// One plain LoRA set and the head, one defense.
    LoraAt,
    /// LoRA with a learnable LayerNorm before each LoRA's input, and the head.
    FullLoraAt,
    /// Every weight of the ViT (full fine-tuning), one defense.
    FullAt,
    /// The head alone on clean images (no adversarial training).
    LinearProbe,
}

impl TuneKind {
    /// Names accepted on the command line.
    pub const NAMES: &[&str] = &[
        "hyperat",
        "lora-at",
        "full-lora-at",
        "full-at",
        "linear-probe",
    ];

    /// Parses a kind name.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "hyperat" => TuneKind::Hyperat,
            "lora-at" => TuneKind::LoraAt,
            "full-lora-at" | "fulllora-at" => TuneKind::FullLoraAt,
            "full-at" => TuneKind::FullAt,
            "linear-probe" => TuneKind::LinearProbe,
            other => {
                return Err(Error::Invalid(format!(
                    "unknown tuning kind `{other}` (known: {})",
                    Self::NAMES.join(", ")
                )));
            }
        })
    }

    /// The name as [`TuneKind::parse`] takes it.
    pub fn name(self) -> &'static str {
        match self {
            TuneKind::Hyperat => "hyperat",
            TuneKind::LoraAt => "lora-at",
            TuneKind::FullLoraAt => "full-lora-at",
            TuneKind::FullAt => "full-at",
            TuneKind::LinearProbe => "linear-probe",
        }
    }
}

/// Everything a tuning run is made of (written to `run.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TuneConfig {
    /// What trains.
    pub kind: TuneKind,
    /// Defense methods; HyperAT samples one per step, the others use exactly one
    /// (the linear probe none).
    pub methods: Vec<String>,
    /// Inner attack and loss hyper-parameters.
    pub defense: DefenseParams,
    /// LoRA placement and size.
    pub lora: LoraConfig,
    /// Embedding and generator sizes.
    pub hyper: HyperConfig,
    /// Optimiser steps.
    pub steps: usize,
    /// Images per step (default 64).
    pub batch_size: usize,
    /// Peak learning rate (default 1e-3; use ~1e-4 for full fine-tuning).
    pub lr: f64,
    /// Final learning rate of the cosine (default 1e-6).
    pub min_lr: f64,
    /// Linear warm-up steps (default 5% of the steps).
    pub warmup: usize,
    /// HyperAT only: the first N steps train the first method alone (default 0: sample
    /// from the start) **(ours)**. TRADES and MART start with KL terms above 30 on an
    /// undefended backbone, and the shared head and generator shrink them fastest by
    /// flattening every prediction; a PGD-AT warm-up gives them a robust start instead.
    #[serde(default)]
    pub method_warmup: usize,
    /// Decoupled weight decay (default 0 on the hypernetwork side).
    pub weight_decay: f64,
    /// Parameter groups with their own learning-rate scale and weight decay (see
    /// [`param_groups`]); none by default.
    #[serde(default)]
    pub groups: Vec<GroupRule>,
    /// Also train the patch embedding (LoRA kinds and HyperAT; ours, off by default):
    /// at 28 px the perturbation reaches the adapted blocks only through it.
    #[serde(default)]
    pub train_patch_embed: bool,
    /// HyperAT: weight of the penalty on the squared cosine between the methods'
    /// generated deltas ([`diversity`]; ours, default 0 = off).
    #[serde(default)]
    pub method_diversity: f64,
    /// HyperAT: the penalty counts only a pair's squared cosine above this margin's
    /// square ([`diversity`]; default 0: all of it).
    #[serde(default)]
    pub method_diversity_margin: f64,
    /// How HyperAT picks each step's method after the warm-up (default: uniformly at
    /// random, as the paper).
    #[serde(default)]
    pub sampling: Sampling,
    /// Global gradient-norm clip (default 1.0).
    pub grad_clip: f64,
    /// Seed of initialisation, data order, method sampling and attacks.
    pub seed: u64,
    /// Write an atomic checkpoint every N steps (and at the end).
    pub checkpoint_every: usize,
    /// Record metrics every N steps.
    pub log_every: usize,
    /// Evaluate every model of the run on the hold-out every N steps and at the end
    /// when the run is longer than N (clean and PGD-10; 0 = never).
    #[serde(default)]
    pub eval_every: usize,
    /// Hold-out images those evaluations use (the first N of the hold-out).
    #[serde(default = "default_eval_images")]
    pub eval_images: usize,
}

fn default_eval_images() -> usize {
    512
}

impl Default for TuneConfig {
    fn default() -> Self {
        Self {
            kind: TuneKind::Hyperat,
            methods: vec!["pgd-at".into(), "trades".into(), "mart".into()],
            defense: DefenseParams::default(),
            lora: LoraConfig::default(),
            hyper: HyperConfig::default(),
            steps: 1000,
            batch_size: 64,
            lr: 1e-3,
            min_lr: 1e-6,
            warmup: 50,
            method_warmup: 0,
            weight_decay: 0.0,
            groups: vec![],
            train_patch_embed: false,
            method_diversity: 0.0,
            method_diversity_margin: 0.0,
            sampling: Sampling::Random,
            grad_clip: 1.0,
            seed: 0,
            checkpoint_every: 100,
            log_every: 1,
            eval_every: 0,
            eval_images: default_eval_images(),
        }
    }
}

/// How HyperAT picks the defense of each step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sampling {
    /// Uniformly at random, independently per step (the paper).
    #[default]
    Random,
    /// Every method once per round of `M` steps, in a random order per round: equal
    /// counts at any point of the run **(ours)**.
    Balanced,
}

impl Sampling {
    /// `random` or `balanced`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "random" => Ok(Sampling::Random),
            "balanced" => Ok(Sampling::Balanced),
            other => Err(Error::Invalid(format!(
                "unknown sampling `{other}` (random, balanced)"
            ))),
        }
    }
}

/// The parameter-group names [`param_groups`] takes, with the path prefixes they cover.
pub const GROUPS: &[(&str, &[&str])] = &[
    ("method-embed", &["hyper.method_embed"]),
    ("embed", &["hyper.layer_embed", "hyper.module_embed"]),
    ("generator", &["hyper.gen_"]),
    ("heads", &["hyper.heads_"]),
    ("classifier", &["vit.head."]),
];

/// Parameter groups from `lr_scales` (`method-embed=10,heads=0.5`: learning-rate
/// multipliers) and `decays` (`heads=0.01`: weight decays) over [`GROUPS`]' names.
pub fn param_groups(lr_scales: &str, decays: &str) -> Result<Vec<GroupRule>> {
    let parse = |list: &str, what: &str| -> Result<Vec<(String, f64)>> {
        let mut out = vec![];
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| Error::Invalid(format!("{what}: `{item}` is not GROUP=VALUE")))?;
            if !GROUPS.iter().any(|(g, _)| *g == name) {
                let names: Vec<&str> = GROUPS.iter().map(|(g, _)| *g).collect();
                return Err(Error::Invalid(format!(
                    "{what}: unknown parameter group `{name}` (known: {})",
                    names.join(", ")
                )));
            }
            let v: f64 = value
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| {
                    Error::Invalid(format!("{what}: `{value}` is not a non-negative number"))
                })?;
            out.push((name.to_string(), v));
        }
        Ok(out)
    };
    let (scales, wds) = (
        parse(lr_scales, "lr scales")?,
        parse(decays, "weight decays")?,
    );
    let mut rules = vec![];
    for (name, prefixes) in GROUPS {
        let lr_scale = scales
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v);
        let weight_decay = wds.iter().rev().find(|(n, _)| n == name).map(|(_, v)| *v);
        if lr_scale.is_none() && weight_decay.is_none() {
            continue;
        }
        for p in *prefixes {
            rules.push(GroupRule {
                prefix: p.to_string(),
                lr_scale: lr_scale.unwrap_or(1.0),
                weight_decay,
            });
        }
    }
    Ok(rules)
}

impl TuneConfig {
    /// The method slot trained at `step` (HyperAT samples; the others have one).
    /// Random sampling draws from `rng`, the step's generator.
    pub fn method_at(&self, step: usize, rng: &mut Rng) -> usize {
        let m = self.methods.len();
        if m <= 1 || step < self.method_warmup {
            return 0;
        }
        match self.sampling {
            Sampling::Random => rng.below(m),
            Sampling::Balanced => {
                let k = step - self.method_warmup;
                let mut order: Vec<usize> = (0..m).collect();
                Rng::new(mix(self.seed, (k / m) as u64, 0xBA1A)).shuffle(&mut order);
                order[k % m]
            }
        }
    }

    /// Checks the combination.
    pub fn validate(&self) -> Result<()> {
        self.defense.validate()?;
        if !self.methods.is_empty() {
            crate::defense::parse_list(&self.methods.join(","))?;
        }
        let want = match self.kind {
            TuneKind::Hyperat => None,
            TuneKind::LinearProbe => Some(0),
            _ => Some(1),
        };
        match want {
            Some(0) if !self.methods.is_empty() => {
                return Err(Error::Invalid(
                    "the linear probe trains without a defense; give no methods".into(),
                ));
            }
            Some(1) if self.methods.len() != 1 => {
                return Err(Error::Invalid(format!(
                    "{} trains with exactly one defense",
                    self.kind.name()
                )));
            }
            _ => {}
        }
        if self.method_warmup > 0 && self.kind != TuneKind::Hyperat {
            return Err(Error::Invalid(
                "the method warm-up is HyperAT's (the baselines train one method)".into(),
            ));
        }
        if self.train_patch_embed && matches!(self.kind, TuneKind::FullAt | TuneKind::LinearProbe) {
            return Err(Error::Invalid(format!(
                "{} decides itself whether the patch embedding trains",
                self.kind.name()
            )));
        }
        if !(self.method_diversity >= 0.0 && self.method_diversity.is_finite()) {
            return Err(Error::Invalid(format!(
                "method diversity must be a non-negative number, got {}",
                self.method_diversity
            )));
        }
        if !(0.0..1.0).contains(&self.method_diversity_margin) {
            return Err(Error::Invalid(format!(
                "method diversity margin must be a cosine in [0, 1), got {}",
                self.method_diversity_margin
            )));
        }
        if self.method_diversity_margin > 0.0 && self.method_diversity == 0.0 {
            return Err(Error::Invalid(
                "a method diversity margin needs a method diversity weight above 0".into(),
            ));
        }
        if self.method_diversity > 0.0 && (self.kind != TuneKind::Hyperat || self.methods.len() < 2)
        {
            return Err(Error::Invalid(
                "the method diversity penalty needs a HyperAT run of two or more methods".into(),
            ));
        }
        if self.method_warmup > self.steps {
            return Err(Error::Invalid(format!(
                "method warm-up ({}) exceeds the {} steps",
                self.method_warmup, self.steps
            )));
        }
        if self.steps == 0 || self.batch_size == 0 || self.checkpoint_every == 0 {
            return Err(Error::Invalid(
                "steps, batch size and checkpoint interval must be positive".into(),
            ));
        }
        if !(self.lr > 0.0) {
            return Err(Error::Invalid(format!(
                "lr must be positive, got {}",
                self.lr
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diversity_margin_is_a_cosine_below_one_and_needs_a_penalty_weight() {
        let with = |weight: f64, margin: f64| TuneConfig {
            method_diversity: weight,
            method_diversity_margin: margin,
            ..TuneConfig::default()
        };
        with(1.0, 0.6).validate().expect("a margin with a weight");
        with(1.0, 0.0).validate().expect("the plain penalty");
        for (weight, margin) in [(1.0, 1.0), (1.0, -0.1), (1.0, f64::NAN), (0.0, 0.6)] {
            let err = with(weight, margin).validate().unwrap_err().to_string();
            assert!(err.contains("margin"), "{weight}, {margin}: {err}");
        }
    }
}
