//! Uniform merge, HyperAT+: `ΔW = (1/M) Σ_m s·B_m A_m`.

use super::{DenseDeltas, MergeStrategy, MethodLora, weighted_sum};
use crate::error::Result;

/// Equal weights for every method.
#[derive(Clone, Copy, Debug)]
pub struct Uniform;

impl MergeStrategy for Uniform {
    fn name(&self) -> String {
        "uniform".into()
    }

    fn merge(&self, methods: &[MethodLora]) -> Result<DenseDeltas> {
        let w = vec![1.0 / methods.len().max(1) as f32; methods.len()];
        weighted_sum(methods, &|_| w.clone())
    }
}
