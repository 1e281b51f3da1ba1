//! Adversarial tuning of a frozen ViT: HyperAT and its baselines through one trainer.
//!
//! [`TuneKind`] says what trains: the hypernetwork side (HyperAT), one plain LoRA set
//! (LoRA-AT), LoRA with LayerNorm inputs (FullLoRA-AT), every weight (full fine-tuning)
//! or the head alone (linear probe, no AT). The trainer only ever sees a [`Defense`]
//! trait object per method; the model only ever sees [`Adapters`].

mod model;
mod request;
mod run;

pub use model::Tuned;
pub use request::{TuneRequest, read_run_info, train_set};
pub use run::{RunInfo, TuneSummary, checkpoint_step_of, load_run, peak_mem_mib, run, start_run};

use serde::{Deserialize, Serialize};

use crate::defense::DefenseParams;
use crate::error::{Error, Result};
use crate::hypernet::HyperConfig;
use crate::lora::LoraConfig;

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
    /// Global gradient-norm clip (default 1.0).
    pub grad_clip: f64,
    /// Seed of initialisation, data order, method sampling and attacks.
    pub seed: u64,
    /// Write an atomic checkpoint every N steps (and at the end).
    pub checkpoint_every: usize,
    /// Record metrics every N steps.
    pub log_every: usize,
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
            grad_clip: 1.0,
            seed: 0,
            checkpoint_every: 100,
            log_every: 1,
        }
    }
}

impl TuneConfig {
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
