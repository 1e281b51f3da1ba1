//! DARE (Yu et al., ICML 2024), `dare_linear` in peft: drop each delta entry with
//! probability `1 − keep`, rescale the survivors by `1/keep`, then average the methods.

use super::{DenseDeltas, MergeStrategy, MethodLora, check_same_keys, dense};
use crate::error::{Error, Result};
use crate::host_tensor::HostTensor;
use crate::rng::Rng;

/// Drop and rescale, then average.
#[derive(Clone, Copy, Debug)]
pub struct Dare {
    /// Probability an entry survives (0, 1].
    pub keep: f32,
    /// Seed of the drop masks.
    pub seed: u64,
}

impl MergeStrategy for Dare {
    fn name(&self) -> String {
        format!("dare(keep={})", self.keep)
    }

    fn merge(&self, methods: &[MethodLora]) -> Result<DenseDeltas> {
        if !(self.keep > 0.0 && self.keep <= 1.0) {
            return Err(Error::Invalid(format!(
                "DARE keep fraction must be in (0, 1], got {}",
                self.keep
            )));
        }
        check_same_keys(methods)?;
        let mut rng = Rng::new(self.seed);
        let n = methods.len() as f32;
        let mut out = DenseDeltas::new();
        for key in methods[0].factors.keys() {
            let (a0, b0) = &methods[0].factors[key];
            let mut acc = HostTensor::zeros(vec![a0.shape[0], b0.shape[1]]);
            for m in methods {
                let (a, b) = &m.factors[key];
                for (slot, v) in acc.data.iter_mut().zip(dense(a, b, m.scaling).data) {
                    if rng.uniform() < self.keep {
                        *slot += v / self.keep / n;
                    }
                }
            }
            out.insert(*key, acc);
        }
        Ok(out)
    }
}
