//! Adversarial-training defenses: each is an inner attack plus an outer loss.
//!
//! The trainer sees only the [`Defense`] trait; adding a defense is one file and one
//! line in [`by_name`]. Outer losses are pure functions of logits, so each is tested
//! against an independent computation on hand-set logits.

mod fgsm_rs;
mod mart;
mod pgd_at;
mod trades;

pub use fgsm_rs::FgsmRs;
pub use mart::Mart;
pub use pgd_at::PgdAt;
pub use trades::Trades;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::attack::Classifier;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// One adversarial-training method (a "learning task" of HyperAT).
pub trait Defense<B: AutodiffBackend>: Send + Sync {
    /// Registry name (`pgd-at`, `trades`, `mart`, `fgsm-rs`).
    fn name(&self) -> &'static str;
    /// Every hyper-parameter, for run records.
    fn settings(&self) -> serde_json::Value;
    /// Whether [`Defense::outer_loss`] needs the clean logits too.
    fn needs_clean(&self) -> bool;
    /// Inner maximisation against a frozen view of the model.
    fn attack(
        &self,
        model: &dyn Classifier<B>,
        x: Tensor<B::InnerBackend, 4>,
        y: Tensor<B::InnerBackend, 1, Int>,
        rng: &mut Rng,
    ) -> Tensor<B::InnerBackend, 4>;
    /// Outer loss (a scalar) from the adversarial logits and, where needed, the clean ones.
    fn outer_loss(
        &self,
        clean: Option<Tensor<B, 2>>,
        adv: Tensor<B, 2>,
        y: Tensor<B, 1, Int>,
    ) -> Tensor<B, 1>;
}

/// The threat model and hyper-parameters shared by the defenses (method.md §3 defaults:
/// eps 8/255, step 2/255, 10 steps; beta 6 for TRADES and MART).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DefenseParams {
    /// L-inf radius of the inner attack.
    pub eps: f32,
    /// Inner step size.
    pub alpha: f32,
    /// Inner steps.
    pub steps: usize,
    /// TRADES' and MART's beta.
    pub beta: f32,
}

impl Default for DefenseParams {
    fn default() -> Self {
        Self {
            eps: 8.0 / 255.0,
            alpha: 2.0 / 255.0,
            steps: 10,
            beta: 6.0,
        }
    }
}

impl DefenseParams {
    /// Rejects out-of-range values.
    pub fn validate(&self) -> Result<()> {
        if !(self.eps > 0.0 && self.eps <= 1.0 && self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(Error::Invalid(format!(
                "eps and alpha must be in (0, 1], got {} and {}",
                self.eps, self.alpha
            )));
        }
        if self.steps == 0 || self.steps > 1000 {
            return Err(Error::Invalid(format!(
                "inner steps must be in 1..=1000, got {}",
                self.steps
            )));
        }
        if !(self.beta >= 0.0) {
            return Err(Error::Invalid(format!(
                "beta must be non-negative, got {}",
                self.beta
            )));
        }
        Ok(())
    }
}

/// Defense names the registry knows.
pub const DEFENSES: &[&str] = &["pgd-at", "trades", "mart", "fgsm-rs"];

/// Builds a defense by name: the registry (one line per defense).
pub fn by_name<B: AutodiffBackend>(name: &str, p: &DefenseParams) -> Result<Box<dyn Defense<B>>> {
    p.validate()?;
    Ok(match name {
        "pgd-at" => Box::new(PgdAt(p.clone())),
        "trades" => Box::new(Trades(p.clone())),
        "mart" => Box::new(Mart(p.clone())),
        "fgsm-rs" => Box::new(FgsmRs(p.clone())),
        other => {
            return Err(Error::Invalid(format!(
                "unknown defense `{other}` (known: {})",
                DEFENSES.join(", ")
            )));
        }
    })
}

/// Parses a comma-separated list of defense names, checking each.
pub fn parse_list(s: &str) -> Result<Vec<String>> {
    let names: Vec<String> = s
        .split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if names.is_empty() {
        return Err(Error::Invalid("no defense methods given".into()));
    }
    for n in &names {
        if !DEFENSES.contains(&n.as_str()) {
            return Err(Error::Invalid(format!(
                "unknown defense `{n}` (known: {})",
                DEFENSES.join(", ")
            )));
        }
    }
    let mut seen = names.clone();
    seen.sort();
    seen.dedup();
    if seen.len() != names.len() {
        return Err(Error::Invalid(format!(
            "defense list `{s}` names a method twice"
        )));
    }
    Ok(names)
}

#[cfg(test)]
mod tests;
