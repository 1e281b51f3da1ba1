//! HyperAT patch: layer norm's backward over the last dimension in one sweep of the rows.
//!
//! burn-autodiff writes it with generic ops: about fourteen passes over the activation
//! (two means to recompute the statistics, `x_hat`, the products and means of the closed
//! form), each with its own allocation and rayon dispatch. Here each row recomputes its
//! mean and `rstd`, then writes
//! `dx = rstd * (g*gamma - mean(g*gamma) - x_hat * mean(g*gamma * x_hat))`, while
//! `dgamma = sum_rows(g * x_hat)` and `dbeta = sum_rows(g)` accumulate per chunk of rows.
//! The chunks are fixed (not per thread) and their partial sums are added in order, so
//! the result does not depend on the thread count.

use alloc::vec;
use alloc::vec::Vec;
use burn_backend::{DType, TensorMetadata};
use burn_std::Bytes;

use crate::ops::unary::widest_copies;
use crate::{FlexTensor, Layout};

/// Rows per task: partial sums are per chunk, so this also fixes their order.
const ROWS_PER_CHUNK: usize = 64;

/// The gradients of `layer_norm(x, gamma, beta, epsilon)` over the last dimension.
pub struct LayerNormGrads {
    /// `d loss / d x`, shaped like `x`.
    pub x: FlexTensor,
    /// `d loss / d gamma`, `[features]`.
    pub gamma: FlexTensor,
    /// `d loss / d beta`, `[features]`.
    pub beta: FlexTensor,
}

/// Layer norm's gradients for f32 tensors; `None` (nothing done) for other dtypes.
pub fn layer_norm_backward_f32(
    x: &FlexTensor,
    gamma: &FlexTensor,
    grad: &FlexTensor,
    epsilon: f64,
) -> Option<LayerNormGrads> {
    if [x.dtype(), gamma.dtype(), grad.dtype()]
        .iter()
        .any(|d| *d != DType::F32)
    {
        return None;
    }
    let shape = x.shape();
    let features = *shape.as_slice().last()?;
    if features == 0 || grad.shape() != shape || gamma.shape().num_elements() != features {
        return None;
    }
    let (x, gamma, grad) = (x.to_contiguous(), gamma.to_contiguous(), grad.to_contiguous());
    let (xs, gs, g) = (
        x.storage::<f32>(),
        gamma.storage::<f32>(),
        grad.storage::<f32>(),
    );
    let mut dx = vec![0.0f32; xs.len()];
    let chunk = ROWS_PER_CHUNK * features;
    let eps = epsilon as f32;
    let sweep = |(d, (x, g)): (&mut [f32], (&[f32], &[f32]))| {
        let mut sums = vec![0.0f32; 2 * features];
        chunk_widest(d, x, g, gs, &mut sums, eps);
        sums
    };
    #[cfg(feature = "rayon")]
    let partials: Vec<Vec<f32>> = {
        use rayon::prelude::*;
        dx.par_chunks_mut(chunk)
            .zip(xs.par_chunks(chunk).zip(g.par_chunks(chunk)))
            .map(sweep)
            .collect()
    };
    #[cfg(not(feature = "rayon"))]
    let partials: Vec<Vec<f32>> = dx
        .chunks_mut(chunk)
        .zip(xs.chunks(chunk).zip(g.chunks(chunk)))
        .map(sweep)
        .collect();
    let mut sums = vec![0.0f32; 2 * features];
    for p in &partials {
        sums.iter_mut().zip(p).for_each(|(s, v)| *s += v);
    }
    let vector = |v: Vec<f32>| {
        FlexTensor::new(
            Bytes::from_elems(v),
            Layout::contiguous(burn_std::Shape::new([features])),
            DType::F32,
        )
    };
    let dbeta = sums.split_off(features);
    Some(LayerNormGrads {
        x: FlexTensor::new(Bytes::from_elems(dx), Layout::contiguous(shape), DType::F32),
        gamma: vector(sums),
        beta: vector(dbeta),
    })
}

widest_copies! {
    /// `chunk_loop` at the CPU's widest vectors.
    fn chunk_widest[](dx: &mut [f32], x: &[f32], g: &[f32], gamma: &[f32], sums: &mut [f32], eps: f32) => chunk_loop
}

/// One chunk of rows: writes `dx` and adds `g * x_hat` (first half of `sums`) and `g`
/// (second half) per feature.
#[inline(always)]
fn chunk_loop(dx: &mut [f32], x: &[f32], g: &[f32], gamma: &[f32], sums: &mut [f32], eps: f32) {
    let n = gamma.len();
    let (dgamma, dbeta) = sums.split_at_mut(n);
    let inv_n = 1.0 / n as f32;
    let (mut x_hat, mut gg) = (vec![0.0f32; n], vec![0.0f32; n]);
    for ((dx, x), g) in dx
        .chunks_exact_mut(n)
        .zip(x.chunks_exact(n))
        .zip(g.chunks_exact(n))
    {
        let mean = lane_sum(x, x, |v, _| v) * inv_n;
        let var = lane_sum(x, x, |v, _| (v - mean) * (v - mean)) * inv_n;
        let rstd = 1.0 / (var + eps).sqrt();
        for (((((h, p), x), g), gamma), (dgamma, dbeta)) in x_hat
            .iter_mut()
            .zip(gg.iter_mut())
            .zip(x)
            .zip(g)
            .zip(gamma)
            .zip(dgamma.iter_mut().zip(dbeta.iter_mut()))
        {
            *h = (x - mean) * rstd;
            *p = g * gamma;
            *dgamma += g * *h;
            *dbeta += g;
        }
        let mean_g = lane_sum(&gg, &gg, |p, _| p) * inv_n;
        let mean_gx = lane_sum(&gg, &x_hat, |p, h| p * h) * inv_n;
        for ((dx, p), h) in dx.iter_mut().zip(&gg).zip(&x_hat) {
            *dx = rstd * (p - mean_g - h * mean_gx);
        }
    }
}

/// Independent accumulators, so the row sums vectorise.
const LANES: usize = 16;

/// `sum_i f(a_i, b_i)` over `LANES` accumulators.
#[inline(always)]
fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| f(*x, *y))
        .sum();
    for (ca, cb) in ca.zip(cb) {
        for j in 0..LANES {
            acc[j] += f(ca[j], cb[j]);
        }
    }
    acc.iter().sum::<f32>() + tail
}
