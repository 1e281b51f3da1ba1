//! The models a run folder offers, by name: the backbone, each defense's LoRA, each
//! merge (HyperAT), or the tuned model (baselines), and which one a run stands for.

use std::fmt;
use std::str::FromStr;

use super::TuneKind;
use super::run_dir::{RunDir, RunInfo};
use crate::error::{Error, Result};

/// One model of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The backbone the run started from (undefended).
    Base,
    /// A baseline run's tuned model.
    Tuned,
    /// One defense's LoRA (HyperAT: generated for that method).
    Method(String),
    /// A merge of the methods' LoRAs (`uniform`, `adaptive`, ...).
    Merged(String),
}

impl FromStr for Variant {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.split_once(':') {
            None if s == "base" => Ok(Variant::Base),
            None if s == "tuned" => Ok(Variant::Tuned),
            Some(("method", m)) if !m.is_empty() => Ok(Variant::Method(m.to_string())),
            Some(("merged", m)) if !m.is_empty() => Ok(Variant::Merged(m.to_string())),
            _ => Err(Error::Invalid(format!(
                "unknown variant `{s}` (base, tuned, method:NAME, merged:STRATEGY)"
            ))),
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Variant::Base => f.write_str("base"),
            Variant::Tuned => f.write_str("tuned"),
            Variant::Method(m) => write!(f, "method:{m}"),
            Variant::Merged(m) => write!(f, "merged:{m}"),
        }
    }
}

impl RunDir {
    /// The variants the run offers, in display order: the backbone, then each method's
    /// LoRA, the uniform merge and the saved merges (HyperAT), or the tuned model.
    pub fn variants(&self) -> Result<Vec<Variant>> {
        let info = self.info()?;
        let mut v = vec![Variant::Base];
        match info.config.kind {
            TuneKind::Hyperat => {
                v.extend(info.config.methods.into_iter().map(Variant::Method));
                v.push(Variant::Merged("uniform".into()));
                v.extend(
                    self.merge_names()
                        .into_iter()
                        .filter(|n| n != "uniform")
                        .map(Variant::Merged),
                );
            }
            _ => v.push(Variant::Tuned),
        }
        Ok(v)
    }

    /// The model the run stands for (see [`RunInfo::default_variant`]).
    pub fn default_variant(&self) -> Result<Variant> {
        Ok(self.info()?.default_variant())
    }
}

impl RunInfo {
    /// The model a run stands for: the uniform merge (HyperAT+) for HyperAT, the tuned
    /// model for a baseline.
    pub fn default_variant(&self) -> Variant {
        match self.config.kind {
            TuneKind::Hyperat => Variant::Merged("uniform".into()),
            _ => Variant::Tuned,
        }
    }
}
