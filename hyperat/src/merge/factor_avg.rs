//! Factor averaging: `ΔW = s·(mean_m B_m)(mean_m A_m)`.
//!
//! Not the same as averaging the products (peft warns about this); offered to show the
//! difference next to the delta merges.

use super::{DenseDeltas, MergeStrategy, MethodLora, check_same_keys, dense};
use crate::error::Result;
use crate::host_tensor::HostTensor;

/// Average A and B separately, then multiply.
#[derive(Clone, Copy, Debug)]
pub struct FactorAvg;

fn mean(ts: &[&HostTensor]) -> HostTensor {
    let mut out = ts[0].clone();
    for t in &ts[1..] {
        out.data.iter_mut().zip(&t.data).for_each(|(a, b)| *a += b);
    }
    let n = ts.len() as f32;
    out.data.iter_mut().for_each(|a| *a /= n);
    out
}

impl MergeStrategy for FactorAvg {
    fn name(&self) -> String {
        "factor-avg".into()
    }

    fn merge(&self, methods: &[MethodLora]) -> Result<DenseDeltas> {
        check_same_keys(methods)?;
        Ok(methods[0]
            .factors
            .keys()
            .map(|key| {
                let a: Vec<&HostTensor> = methods.iter().map(|m| &m.factors[key].0).collect();
                let b: Vec<&HostTensor> = methods.iter().map(|m| &m.factors[key].1).collect();
                (*key, dense(&mean(&a), &mean(&b), methods[0].scaling))
            })
            .collect())
    }
}
