//! A part of an evaluation done apart: which batches ([`ShardSpec`]) and what they gave
//! in raw counts ([`EvalShard`]), so shards merge exactly (`super::merge_shards`).

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::attack::checks::SanityReport;
use crate::error::{Error, Result};

/// Shard `index` of `count` (`--shard 1/4`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSpec {
    /// 0-based.
    pub index: usize,
    /// Shards in the evaluation.
    pub count: usize,
}

impl ShardSpec {
    /// The whole evaluation as one shard.
    pub const WHOLE: ShardSpec = ShardSpec { index: 0, count: 1 };

    /// This shard's batches out of `batches`: contiguous, sizes differing by at most one
    /// (empty for some shards when there are more shards than batches: a report's short
    /// AutoAttack subset still splits over every device).
    pub fn batches(self, batches: usize) -> Result<Range<usize>> {
        if self.count == 0 || self.index >= self.count {
            return Err(Error::Invalid(format!(
                "shard {} of {} does not exist",
                self.index, self.count
            )));
        }
        Ok(batches * self.index / self.count..batches * (self.index + 1) / self.count)
    }
}

impl FromStr for ShardSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Invalid(format!("`{s}`: expected INDEX/COUNT, e.g. 0/2"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let spec = ShardSpec {
            index: i.trim().parse().map_err(|_| bad())?,
            count: n.trim().parse().map_err(|_| bad())?,
        };
        if spec.count == 0 || spec.index >= spec.count {
            return Err(Error::Invalid(format!(
                "`{s}`: the index must be below the count"
            )));
        }
        Ok(spec)
    }
}

impl fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// What one shard of an evaluation gave, as counts and per-sample predictions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalShard {
    /// Which shard.
    pub spec: ShardSpec,
    /// Dataset index of its first image.
    pub first_image: usize,
    /// Images in the whole evaluation.
    pub total_images: usize,
    /// Attack radius (for the merged checks).
    pub eps: f32,
    /// The attack and all its settings, seed and batch size included (shards of one
    /// evaluation share them).
    pub attack: serde_json::Value,
    /// Whether an attack ran.
    pub attacked: bool,
    /// Clean predictions of its images.
    pub clean_pred: Vec<u32>,
    /// Adversarial predictions (empty without an attack).
    pub adv_pred: Vec<u32>,
    /// Labels of its images.
    pub labels: Vec<u32>,
    /// Sum of the top-1 softmax probabilities on the clean images.
    pub confidence_sum: f64,
    /// Composite attacks: robust images after each component.
    pub component_robust: Vec<(String, usize)>,
    /// Non-finite values in its adversarial images.
    pub nan_count: usize,
    /// Largest `|x_adv − x|` in it.
    pub max_linf: f32,
    /// The model checks, made on the evaluation's first batch (only in the shard that
    /// holds it).
    pub model_checks: Option<SanityReport>,
    /// Its wall time.
    pub seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batches_once_in_order() {
        for (batches, count) in [(10, 3), (7, 7), (1, 1), (100, 8)] {
            let mut next = 0;
            for index in 0..count {
                let r = ShardSpec { index, count }.batches(batches).unwrap();
                assert_eq!(r.start, next);
                assert!(!r.is_empty());
                next = r.end;
            }
            assert_eq!(next, batches);
        }
        let sizes: Vec<usize> = (0..3)
            .map(|index| ShardSpec { index, count: 3 }.batches(2).unwrap().len())
            .collect();
        assert_eq!(sizes, [0, 1, 1], "more shards than batches: some are empty");
        assert!(ShardSpec { index: 3, count: 3 }.batches(2).is_err());
        assert_eq!(
            "1/4".parse::<ShardSpec>().unwrap(),
            ShardSpec { index: 1, count: 4 }
        );
        for bad in ["4/4", "1", "a/2", "0/0"] {
            assert!(bad.parse::<ShardSpec>().is_err(), "{bad}");
        }
    }
}
