//! The vendored burn-flex's patched elementwise paths (vendor/burn-flex/PATCHED.md)
//! against a plain host computation: broadcast binary ops on the shapes a ViT makes
//! (position embeddings, per-channel normalisation, layer norm's per-row scalars),
//! shared and unique left operands, sizes on both sides of the parallel threshold;
//! the softmax row kernel; GELU and its backward on the run-time-chosen vector copies.

use burn::prelude::*;
use burn::tensor::activation::{gelu, softmax};
use hyperat::backend::{Cpu, CpuAutodiff};

/// A deterministic pseudo-random sequence in [-scale, scale).
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn tensor<B: Backend, const D: usize>(v: &[f32], shape: [usize; D]) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), &Default::default())
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

/// Row-major index of `at` in `shape`, with size-1 dims of `shape` broadcast.
fn broadcast_index(at: &[usize], shape: &[usize]) -> usize {
    at.iter()
        .zip(shape)
        .fold(0, |i, (&a, &n)| i * n + if n == 1 { 0 } else { a })
}

/// `op(lhs, rhs)` with numpy broadcasting, on the host.
fn reference(
    lhs: &[f32],
    l_shape: &[usize],
    rhs: &[f32],
    r_shape: &[usize],
    op: fn(f32, f32) -> f32,
) -> Vec<f32> {
    let n: usize = l_shape.iter().product();
    let mut at = vec![0; l_shape.len()];
    (0..n)
        .map(|mut i| {
            for d in (0..l_shape.len()).rev() {
                at[d] = i % l_shape[d];
                i /= l_shape[d];
            }
            op(
                lhs[broadcast_index(&at, l_shape)],
                rhs[broadcast_index(&at, r_shape)],
            )
        })
        .collect()
}

#[test]
fn broadcast_binary_ops_match_the_host() {
    type Op = fn(Tensor<Cpu, 4>, Tensor<Cpu, 4>) -> Tensor<Cpu, 4>;
    type HostOp = fn(f32, f32) -> f32;
    let ops: [(Op, HostOp); 4] = [
        (|a, b| a + b, |a, b| a + b),
        (|a, b| a - b, |a, b| a - b),
        (|a, b| a * b, |a, b| a * b),
        (|a, b| a / b, |a, b| a / b),
    ];
    // (lhs, rhs): position embeddings, per-channel normalisation of one channel and of
    // three, layer norm's per-row mean, a row shared across the batch only, a rhs that
    // fits neither pattern, same shapes; each small and above the parallel threshold.
    let cases: [([usize; 4], [usize; 4]); 14] = [
        ([2, 1, 5, 6], [1, 1, 5, 6]),
        ([64, 1, 50, 64], [1, 1, 50, 64]),
        ([3, 1, 7, 7], [1, 1, 1, 1]),
        ([128, 1, 28, 28], [1, 1, 1, 1]),
        ([128, 3, 16, 16], [1, 3, 1, 1]),
        ([2, 3, 4, 5], [1, 3, 1, 1]),
        ([2, 3, 5, 6], [2, 3, 5, 1]),
        ([64, 2, 50, 64], [64, 2, 50, 1]),
        ([4, 2, 5, 6], [1, 2, 1, 6]),
        ([64, 2, 50, 64], [64, 1, 1, 64]),
        ([3, 4, 5, 6], [3, 1, 5, 1]),
        ([64, 4, 50, 8], [1, 4, 1, 8]),
        ([3, 4, 5, 6], [3, 4, 5, 6]),
        ([64, 4, 50, 8], [64, 4, 50, 8]),
    ];
    for (k, (l_shape, r_shape)) in cases.into_iter().enumerate() {
        let lhs = values(l_shape.iter().product(), 2 * k as u64, 2.0);
        // Away from zero, so that division is well conditioned.
        let rhs: Vec<f32> = values(r_shape.iter().product(), 2 * k as u64 + 1, 1.0)
            .into_iter()
            .map(|v| v + v.signum() * 0.5)
            .collect();
        for (op, host_op) in ops {
            let want = reference(&lhs, &l_shape, &rhs, &r_shape, host_op);
            let b = tensor::<Cpu, 4>(&rhs, r_shape);
            // A unique lhs is written in place; a shared one must be left as it was.
            let unique = host(op(tensor(&lhs, l_shape), b.clone()));
            let shared = tensor::<Cpu, 4>(&lhs, l_shape);
            let from_shared = host(op(shared.clone(), b));
            assert_eq!(unique, want, "{l_shape:?} with {r_shape:?}, unique lhs");
            assert_eq!(
                from_shared, want,
                "{l_shape:?} with {r_shape:?}, shared lhs"
            );
            assert_eq!(host(shared), lhs, "the shared lhs was modified");
        }
    }
}

#[test]
fn softmax_rows_match_an_f64_reference() {
    // Row lengths with and without a vector tail, one below the lane count.
    for (rows, len) in [(3, 5), (17, 50), (5_120, 50), (64, 197), (40, 64)] {
        let x = values(rows * len, len as u64, 8.0);
        let got = host(softmax(tensor::<Cpu, 2>(&x, [rows, len]), 1));
        for (row, out) in x.chunks(len).zip(got.chunks(len)) {
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let e: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for (g, e) in out.iter().zip(&e) {
                let want = e / sum;
                assert!(
                    (*g as f64 - want).abs() <= 2e-7 + 1e-5 * want,
                    "rows {rows} len {len}: {g} vs {want}"
                );
            }
        }
    }
}

#[test]
fn gelu_and_its_backward_match_an_f64_reference() {
    // Above and below the parallel threshold; a length that leaves a vector tail.
    for n in [1_000, 409_601] {
        let x = values(n, n as u64, 6.0);
        let forward = host(gelu(tensor::<Cpu, 1>(&x, [n])));
        let input = tensor::<CpuAutodiff, 1>(&x, [n]).require_grad();
        let weights = values(n, 7, 1.0);
        let loss = (gelu(input.clone()) * tensor::<CpuAutodiff, 1>(&weights, [n])).sum();
        let grad = host(input.grad(&loss.backward()).unwrap());
        let erf = |v: f64| libm_erf(v / std::f64::consts::SQRT_2);
        for i in 0..n {
            let v = x[i] as f64;
            let cdf = 0.5 * (1.0 + erf(v));
            let pdf = (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let (want_y, want_g) = (v * cdf, weights[i] as f64 * (cdf + v * pdf));
            assert!(
                (forward[i] as f64 - want_y).abs() <= 2e-6 * (1.0 + want_y.abs()),
                "gelu({v})"
            );
            assert!(
                (grad[i] as f64 - want_g).abs() <= 2e-6 * (1.0 + want_g.abs()),
                "gelu'({v})"
            );
        }
    }
}

/// `erf` in f64 from its Maclaurin series (the standard library has none); at the
/// test's largest |x| = 6/√2 the alternating terms cancel away ~7 of f64's 16 digits,
/// far below the tolerance.
fn libm_erf(x: f64) -> f64 {
    let a = x.abs();
    if a >= 6.0 {
        return x.signum();
    }
    // Maclaurin series of erf, summed until the terms vanish.
    let (mut term, mut sum, mut k) = (a, a, 0.0);
    while term.abs() > 1e-17 * sum.abs() {
        k += 1.0;
        term *= -a * a / k;
        sum += term / (2.0 * k + 1.0);
    }
    (2.0 / std::f64::consts::PI.sqrt() * sum).copysign(x)
}
