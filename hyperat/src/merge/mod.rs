//! Merging the per-method LoRAs into one update, and folding it into the weights.
//!
//! A strategy is a pure function from every method's factors to one dense delta per
//! (block, target) (peft's habit: merge deltas, not factors — except factor averaging,
//! offered for comparison). Folding adds the delta to `W0`: the result is a plain ViT
//! with no inference overhead, exportable in timm format.

mod adaptive;
mod dare;
mod factor_avg;
mod ties;
mod uniform;
mod weighted;

pub use adaptive::{
    AdaptiveConfig, HeldOutCheck, Learned, check_weights, learn_and_check, learn_weights,
};
pub use dare::Dare;
pub use factor_avg::FactorAvg;
pub use ties::Ties;
pub use uniform::Uniform;
pub use weighted::Weighted;

use std::collections::BTreeMap;

use burn::module::Param;
use burn::prelude::*;

use crate::error::{Error, Result};
use crate::host_tensor::HostTensor;
use crate::vit::{Adapters, LinearDelta, Target, Vit};

/// One method's LoRA on the host: `(A [in, r], B [r, out])` per (block, target).
#[derive(Clone, Debug, PartialEq)]
pub struct MethodLora {
    /// Defense name.
    pub name: String,
    /// Factors by (block, target).
    pub factors: BTreeMap<(usize, Target), (HostTensor, HostTensor)>,
    /// `alpha / r`.
    pub scaling: f32,
}

/// One dense update `[in, out]` (burn's row layout) per (block, target).
pub type DenseDeltas = BTreeMap<(usize, Target), HostTensor>;

/// A way of merging per-method LoRAs.
pub trait MergeStrategy {
    /// Registry name.
    fn name(&self) -> String;
    /// The merged dense deltas.
    fn merge(&self, methods: &[MethodLora]) -> Result<DenseDeltas>;
}

/// Strategy names [`by_name`] knows (`adaptive` needs data: see [`learn_weights`]).
pub const STRATEGIES: &[&str] = &[
    "uniform",
    "weighted",
    "adaptive",
    "factor-avg",
    "ties",
    "dare",
];

/// Builds a data-free strategy: the registry. `weights` feeds `weighted`; `density`
/// feeds TIES (kept fraction, default 0.2) and DARE (kept fraction 1 − p, default 0.5).
pub fn by_name(
    name: &str,
    weights: Option<Vec<f32>>,
    density: Option<f32>,
    seed: u64,
) -> Result<Box<dyn MergeStrategy>> {
    Ok(match name {
        "uniform" => Box::new(Uniform),
        "weighted" => {
            Box::new(Weighted::new(weights.ok_or_else(|| {
                Error::Invalid("the weighted merge needs --weights".into())
            })?)?)
        }
        "factor-avg" => Box::new(FactorAvg),
        "ties" => Box::new(Ties {
            density: density.unwrap_or(0.2),
        }),
        "dare" => Box::new(Dare {
            keep: density.unwrap_or(0.5),
            seed,
        }),
        "adaptive" => {
            return Err(Error::Invalid(
                "the adaptive merge learns its weights from data".into(),
            ));
        }
        other => {
            return Err(Error::Invalid(format!(
                "unknown merge `{other}` (known: {})",
                STRATEGIES.join(", ")
            )));
        }
    })
}

/// `scaling · A·B` on the host, `[in, out]`.
pub fn dense(a: &HostTensor, b: &HostTensor, scaling: f32) -> HostTensor {
    let (i, r, o) = (a.shape[0], a.shape[1], b.shape[1]);
    let mut out = vec![0f32; i * o];
    for row in 0..i {
        let dst = &mut out[row * o..(row + 1) * o];
        for k in 0..r {
            let av = a.data[row * r + k] * scaling;
            if av != 0.0 {
                for (d, bv) in dst.iter_mut().zip(&b.data[k * o..(k + 1) * o]) {
                    *d += av * bv;
                }
            }
        }
    }
    HostTensor::new(vec![i, o], out)
}

/// `Σ_m w_m · scaling · A_m B_m` for every (block, target); `w(block)` gives the
/// per-method weights of a block.
pub fn weighted_sum(methods: &[MethodLora], w: &dyn Fn(usize) -> Vec<f32>) -> Result<DenseDeltas> {
    check_same_keys(methods)?;
    let mut out = DenseDeltas::new();
    for (key, _) in methods[0].factors.iter() {
        let mut acc: Option<HostTensor> = None;
        for (m, wm) in methods.iter().zip(w(key.0)) {
            let (a, b) = &m.factors[key];
            let d = dense(a, b, m.scaling * wm);
            acc = Some(match acc {
                None => d,
                Some(mut t) => {
                    t.data.iter_mut().zip(&d.data).for_each(|(x, y)| *x += y);
                    t
                }
            });
        }
        out.insert(*key, acc.expect("at least one method"));
    }
    Ok(out)
}

fn check_same_keys(methods: &[MethodLora]) -> Result<()> {
    let first = methods
        .first()
        .ok_or_else(|| Error::Invalid("nothing to merge".into()))?;
    for m in methods {
        if m.factors.keys().ne(first.factors.keys()) {
            return Err(Error::Invalid(format!(
                "methods `{}` and `{}` adapt different layers",
                first.name, m.name
            )));
        }
    }
    Ok(())
}

/// Adds the deltas to the frozen weights: a plain ViT. Refuses non-finite results.
pub fn fold<B: Backend>(mut vit: Vit<B>, deltas: &DenseDeltas) -> Result<Vit<B>> {
    for ((layer, t), d) in deltas {
        if !d.is_finite() {
            return Err(Error::Invalid(format!(
                "merged delta of block {layer} {} is not finite",
                t.name()
            )));
        }
        let block = vit
            .blocks
            .get_mut(*layer)
            .ok_or_else(|| Error::Invalid(format!("the model has no block {layer}")))?;
        let lin = block.linear_mut(*t);
        let w = lin.weight.val();
        if w.dims().to_vec() != d.shape {
            return Err(Error::Invalid(format!(
                "delta for block {layer} {} has shape {:?}, weight {:?}",
                t.name(),
                d.shape,
                w.dims()
            )));
        }
        let device = w.device();
        let (id, value, mapper) = lin.weight.clone().consume();
        let rg = value.is_require_grad();
        let new = (value + d.to_tensor::<B, 2>(&device)).set_require_grad(rg);
        lin.weight = Param::from_mapped_value(id, new, mapper);
    }
    Ok(vit)
}

/// Dense deltas as adapters (`x·Δ·I`), to run an unfolded merge (tests, comparisons).
pub fn dense_adapters<B: Backend>(
    deltas: &DenseDeltas,
    depth: usize,
    device: &B::Device,
) -> Adapters<B> {
    let mut ad = Adapters::empty(depth);
    for ((layer, t), d) in deltas {
        let o = d.shape[1];
        ad.set(
            *layer,
            *t,
            LinearDelta {
                lora_a: d.to_tensor::<B, 2>(device),
                lora_b: Tensor::eye(o, device),
                scaling: 1.0,
                input_norm: None,
            },
        );
    }
    ad
}

/// `Σ_m λ_m LoRA_m` kept low-rank (factors concatenated): the unfolded weighted merge.
/// `lambdas` is `[1, M]` (global) or `[depth, M]` (per block), and may carry gradients.
pub fn weighted_adapters<B: Backend>(
    methods: &[MethodLora],
    lambdas: &Tensor<B, 2>,
    depth: usize,
    device: &B::Device,
) -> Adapters<B> {
    let mut ad = Adapters::empty(depth);
    let per_layer = lambdas.dims()[0] > 1;
    for key in methods[0].factors.keys() {
        let row = lambdas
            .clone()
            .narrow(0, if per_layer { key.0 } else { 0 }, 1);
        let mut a_parts = vec![];
        let mut b_parts = vec![];
        for (mi, m) in methods.iter().enumerate() {
            let (a, b) = &m.factors[key];
            a_parts.push(a.to_tensor::<B, 2>(device));
            // Each method's own `scaling` goes into its B rows (as `weighted_sum` applies
            // it), so the learned merge is the one later saved even if the scalings differ.
            let weight = row.clone().narrow(1, mi, 1).mul_scalar(m.scaling);
            b_parts.push(b.to_tensor::<B, 2>(device) * weight);
        }
        ad.set(
            key.0,
            key.1,
            LinearDelta {
                lora_a: Tensor::cat(a_parts, 1),
                lora_b: Tensor::cat(b_parts, 0),
                scaling: 1.0,
                input_norm: None,
            },
        );
    }
    ad
}

#[cfg(test)]
mod tests;
