//! TIES merging (Yadav et al., NeurIPS 2023) over the dense deltas: trim each method's
//! delta to its top `density` fraction by magnitude, elect a sign per entry (sign of
//! the trimmed sum), and average only the entries that agree with it.

use super::{DenseDeltas, MergeStrategy, MethodLora, check_same_keys, dense};
use crate::error::{Error, Result};
use crate::host_tensor::HostTensor;

/// Trim, elect sign, disjoint mean.
#[derive(Clone, Copy, Debug)]
pub struct Ties {
    /// Fraction of entries each method keeps (0, 1].
    pub density: f32,
}

/// Zeroes all but the `keep` largest-magnitude entries.
pub(super) fn trim(v: &mut [f32], density: f32) {
    let keep = ((v.len() as f32 * density).ceil() as usize).min(v.len());
    if keep == v.len() {
        return;
    }
    let mut mags: Vec<f32> = v.iter().map(|x| x.abs()).collect();
    let cut = v.len() - keep;
    mags.select_nth_unstable_by(cut, f32::total_cmp);
    let threshold = mags[cut];
    let mut kept = 0;
    // Keep entries above the threshold, then ties at it until `keep` are kept.
    for x in v.iter_mut() {
        if x.abs() > threshold {
            kept += 1;
        }
    }
    let mut ties_left = keep - kept;
    for x in v.iter_mut() {
        let a = x.abs();
        if a < threshold || (a == threshold && ties_left == 0) {
            *x = 0.0;
        } else if a == threshold {
            ties_left -= 1;
        }
    }
}

impl MergeStrategy for Ties {
    fn name(&self) -> String {
        format!("ties(density={})", self.density)
    }

    fn merge(&self, methods: &[MethodLora]) -> Result<DenseDeltas> {
        if !(self.density > 0.0 && self.density <= 1.0) {
            return Err(Error::Invalid(format!(
                "TIES density must be in (0, 1], got {}",
                self.density
            )));
        }
        check_same_keys(methods)?;
        let mut out = DenseDeltas::new();
        for key in methods[0].factors.keys() {
            let trimmed: Vec<Vec<f32>> = methods
                .iter()
                .map(|m| {
                    let (a, b) = &m.factors[key];
                    let mut d = dense(a, b, m.scaling).data;
                    trim(&mut d, self.density);
                    d
                })
                .collect();
            let (a0, b0) = &methods[0].factors[key];
            let mut merged = HostTensor::zeros(vec![a0.shape[0], b0.shape[1]]);
            for (i, slot) in merged.data.iter_mut().enumerate() {
                let sign = trimmed.iter().map(|d| d[i]).sum::<f32>().signum();
                let agree: Vec<f32> = trimmed
                    .iter()
                    .map(|d| d[i])
                    .filter(|v| *v != 0.0 && v.signum() == sign)
                    .collect();
                if !agree.is_empty() {
                    *slot = agree.iter().sum::<f32>() / agree.len() as f32;
                }
            }
            out.insert(*key, merged);
        }
        Ok(out)
    }
}
