//! The single-op softmax, log-softmax and layer-norm backwards of the vendored
//! burn-autodiff (vendor/burn-autodiff/PATCHED.md) against the decomposed forms burn
//! used before and against central finite differences of an f64 reference.
//!
//! Every check is of `d/dx sum(w * f(x))` for fixed random weights `w`, so each input
//! element's gradient depends on the whole row.

use burn::nn::LayerNormConfig;
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};
use hyperat::backend::CpuAutodiff;

type A = CpuAutodiff;

/// A deterministic pseudo-random sequence in [-scale, scale).
fn values(n: usize, seed: u64, scale: f64) -> Vec<f64> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn tensor(v: &[f64], shape: [usize; 3]) -> Tensor<A, 3> {
    let data: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(data, shape), &Default::default())
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data()
        .to_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

/// The largest difference relative to the largest magnitude of `want`.
fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-12);
    got.iter()
        .zip(want)
        .fold(0f64, |m, (g, w)| m.max((g - w).abs()))
        / scale
}

/// Central differences of `f` (an f64 reference) at `x`.
fn finite_diff(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let h = 1e-6;
    let mut p = x.to_vec();
    (0..x.len())
        .map(|i| {
            p[i] = x[i] + h;
            let up = f(&p);
            p[i] = x[i] - h;
            let down = f(&p);
            p[i] = x[i];
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// `sum(w * g(rows))` where `g` maps each row (along the last dimension) of `x`.
fn rowwise(x: &[f64], w: &[f64], cols: usize, g: impl Fn(&[f64]) -> Vec<f64>) -> f64 {
    x.chunks(cols)
        .zip(w.chunks(cols))
        .map(|(row, wr)| g(row).iter().zip(wr).map(|(a, b)| a * b).sum::<f64>())
        .sum()
}

fn softmax_ref(row: &[f64]) -> Vec<f64> {
    let max = row.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = row.iter().map(|v| (v - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// Softmax written the way burn's default decomposed it before the patch.
fn softmax_decomposed(x: Tensor<A, 3>, dim: usize) -> Tensor<A, 3> {
    let max = x.clone().detach().max_dim(dim);
    let e = (x - max).exp();
    let s = e.clone().sum_dim(dim);
    e / s
}

const SHAPE: [usize; 3] = [3, 5, 7];

fn input_grad(x: &[f64], w: &[f64], f: impl Fn(Tensor<A, 3>) -> Tensor<A, 3>) -> Vec<f64> {
    input_grad_of(SHAPE, x, w, f)
}

fn input_grad_of(
    shape: [usize; 3],
    x: &[f64],
    w: &[f64],
    f: impl Fn(Tensor<A, 3>) -> Tensor<A, 3>,
) -> Vec<f64> {
    let xt = tensor(x, shape).require_grad();
    let loss = (f(xt.clone()) * tensor(w, shape)).sum();
    let grads = loss.backward();
    host(xt.grad(&grads).unwrap())
}

#[test]
fn softmax_backward_matches_decomposition_and_finite_differences() {
    let x = values(105, 1, 3.0);
    let w = values(105, 2, 1.0);
    for dim in [2, 1] {
        let fused = input_grad(&x, &w, |t| softmax(t, dim));
        let decomposed = input_grad(&x, &w, |t| softmax_decomposed(t, dim));
        assert!(
            rel_err(&fused, &decomposed) <= 1e-5,
            "dim {dim}: {fused:?} vs {decomposed:?}"
        );
        let fwd = host(softmax(tensor(&x, SHAPE), dim).inner());
        let fwd_ref = host(softmax_decomposed(tensor(&x, SHAPE), dim).inner());
        assert!(rel_err(&fwd, &fwd_ref) <= 1e-6);
    }
    // Finite differences along the last dimension.
    let fused = input_grad(&x, &w, |t| softmax(t, 2));
    let fd = finite_diff(&x, |p| rowwise(p, &w, 7, softmax_ref));
    assert!(rel_err(&fused, &fd) <= 1e-5, "{}", rel_err(&fused, &fd));
    // Rows of 2 lane blocks and a tail, over more rows than one of flex's tasks takes.
    let shape = [2, 140, 37];
    let x = values(2 * 140 * 37, 11, 3.0);
    let w = values(2 * 140 * 37, 12, 1.0);
    let fused = input_grad_of(shape, &x, &w, |t| softmax(t, 2));
    let decomposed = input_grad_of(shape, &x, &w, |t| softmax_decomposed(t, 2));
    assert!(rel_err(&fused, &decomposed) <= 1e-5);
    let fd = finite_diff(&x, |p| rowwise(p, &w, 37, softmax_ref));
    assert!(rel_err(&fused, &fd) <= 1e-5, "{}", rel_err(&fused, &fd));
}

#[test]
fn log_softmax_backward_matches_decomposition_and_finite_differences() {
    let x = values(105, 3, 3.0);
    let w = values(105, 4, 1.0);
    let fused = input_grad(&x, &w, |t| log_softmax(t, 2));
    let decomposed = input_grad(&x, &w, |t| softmax_decomposed(t, 2).log());
    assert!(rel_err(&fused, &decomposed) <= 1e-5);
    let fd = finite_diff(&x, |p| {
        rowwise(p, &w, 7, |r| {
            softmax_ref(r).iter().map(|v| v.ln()).collect()
        })
    });
    assert!(rel_err(&fused, &fd) <= 1e-5, "{}", rel_err(&fused, &fd));
}

fn layer_norm_ref(row: &[f64], gamma: &[f64], beta: &[f64], eps: f64) -> Vec<f64> {
    let n = row.len() as f64;
    let mean = row.iter().sum::<f64>() / n;
    let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let rstd = 1.0 / (var + eps).sqrt();
    row.iter()
        .enumerate()
        .map(|(i, v)| (v - mean) * rstd * gamma[i] + beta[i])
        .collect()
}

#[test]
fn layer_norm_backward_matches_decomposition_and_finite_differences() {
    // Rows shorter than the fused kernel's 16 lanes, and rows of 2 lane blocks and a
    // tail over 3 chunks of 64 rows (the kernel's partial sums).
    check_layer_norm_backward(SHAPE);
    check_layer_norm_backward([2, 70, 37]);
}

fn check_layer_norm_backward(shape: [usize; 3]) {
    let (n, f) = (shape.iter().product::<usize>(), shape[2]);
    let eps = 1e-6;
    let x = values(n, 5, 2.0);
    let w = values(n, 6, 1.0);
    let gamma: Vec<f64> = values(f, 7, 0.5).iter().map(|v| 1.0 + v).collect();
    let beta = values(f, 8, 0.5);
    let device = Default::default();

    let mut ln = LayerNormConfig::new(f).with_epsilon(eps).init::<A>(&device);
    let g32: Vec<f32> = gamma.iter().map(|&v| v as f32).collect();
    let b32: Vec<f32> = beta.iter().map(|&v| v as f32).collect();
    ln.gamma = ln
        .gamma
        .map(|_| Tensor::from_floats(g32.as_slice(), &device).require_grad());
    ln.beta = ln
        .beta
        .map(|b| b.map(|_| Tensor::from_floats(b32.as_slice(), &device).require_grad()));

    // The fused op (burn-nn's LayerNorm calls the backend's layer_norm).
    let xt = tensor(&x, shape).require_grad();
    let grads = (ln.forward(xt.clone()) * tensor(&w, shape))
        .sum()
        .backward();
    let dx = host(xt.grad(&grads).unwrap());
    let dgamma = host(ln.gamma.val().grad(&grads).unwrap());
    let dbeta = host(ln.beta.as_ref().unwrap().val().grad(&grads).unwrap());

    // The decomposition burn's default used before the patch.
    let xt2 = tensor(&x, shape).require_grad();
    let gt = Tensor::<A, 1>::from_floats(g32.as_slice(), &device).require_grad();
    let bt = Tensor::<A, 1>::from_floats(b32.as_slice(), &device).require_grad();
    let mean = xt2.clone().mean_dim(2);
    let centered = xt2.clone() - mean;
    let var = (centered.clone() * centered.clone()).mean_dim(2);
    let y = centered / (var + eps).sqrt() * gt.clone().reshape([1, 1, f])
        + bt.clone().reshape([1, 1, f]);
    let grads2 = (y * tensor(&w, shape)).sum().backward();
    let dx2 = host(xt2.grad(&grads2).unwrap());
    assert!(rel_err(&dx, &dx2) <= 1e-5, "dx {}", rel_err(&dx, &dx2));
    assert!(rel_err(&dgamma, &host(gt.grad(&grads2).unwrap())) <= 1e-5);
    assert!(rel_err(&dbeta, &host(bt.grad(&grads2).unwrap())) <= 1e-5);

    // Finite differences of the f64 reference, for x, gamma and beta.
    let loss =
        |x: &[f64], g: &[f64], b: &[f64]| rowwise(x, &w, f, |r| layer_norm_ref(r, g, b, eps));
    let fd_x = finite_diff(&x, |p| loss(p, &gamma, &beta));
    let fd_g = finite_diff(&gamma, |p| loss(&x, p, &beta));
    let fd_b = finite_diff(&beta, |p| loss(&x, &gamma, p));
    assert!(
        rel_err(&dx, &fd_x) <= 1e-5,
        "dx vs fd {}",
        rel_err(&dx, &fd_x)
    );
    assert!(
        rel_err(&dgamma, &fd_g) <= 1e-5,
        "dgamma vs fd {}",
        rel_err(&dgamma, &fd_g)
    );
    assert!(
        rel_err(&dbeta, &fd_b) <= 1e-5,
        "dbeta vs fd {}",
        rel_err(&dbeta, &fd_b)
    );
}
