//! Weighted merge: `ΔW = Σ_m λ_m s·B_m A_m` with user-given `λ` (non-negative, sum 1).

use super::{DenseDeltas, MergeStrategy, MethodLora, weighted_sum};
use crate::error::{Error, Result};

/// Fixed per-method weights.
#[derive(Clone, Debug)]
pub struct Weighted {
    /// One weight per method, in the run's method order.
    pub lambdas: Vec<f32>,
}

impl Weighted {
    /// Checks the weights are non-negative and sum to 1 (within 1e-4).
    pub fn new(lambdas: Vec<f32>) -> Result<Self> {
        let sum: f32 = lambdas.iter().sum();
        if lambdas.is_empty() || lambdas.iter().any(|l| !(*l >= 0.0)) || (sum - 1.0).abs() > 1e-4 {
            return Err(Error::Invalid(format!(
                "merge weights must be non-negative and sum to 1, got {lambdas:?}"
            )));
        }
        Ok(Self { lambdas })
    }
}

impl MergeStrategy for Weighted {
    fn name(&self) -> String {
        "weighted".into()
    }

    fn merge(&self, methods: &[MethodLora]) -> Result<DenseDeltas> {
        if methods.len() != self.lambdas.len() {
            return Err(Error::Invalid(format!(
                "{} weights for {} methods",
                self.lambdas.len(),
                methods.len()
            )));
        }
        weighted_sum(methods, &|_| self.lambdas.clone())
    }
}
