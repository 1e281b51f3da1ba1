//! Parameter initialisation from our seeded [`Rng`] instead of the backend's global
//! generator: a run's initial weights then depend on its seed alone, not on what other
//! threads drew (tests run in parallel), nor on the backend.

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;

use crate::rng::Rng;

/// `N(0, std²)` entries.
pub fn normal<B: Backend, const D: usize>(
    shape: [usize; D],
    std: f32,
    rng: &mut Rng,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    let n = shape.iter().product();
    let v: Vec<f32> = rng.normal_vec(n).into_iter().map(|x| x * std).collect();
    Param::from_tensor(Tensor::from_data(TensorData::new(v, shape), device))
}

/// `U(-bound, bound)` entries.
pub fn uniform<B: Backend, const D: usize>(
    shape: [usize; D],
    bound: f32,
    rng: &mut Rng,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    let n = shape.iter().product();
    Param::from_tensor(Tensor::from_data(
        TensorData::new(rng.uniform_vec(n, -bound, bound), shape),
        device,
    ))
}

/// PyTorch's `nn.Linear` default: weight and bias `U(-1/sqrt(in), 1/sqrt(in))`.
pub fn linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    rng: &mut Rng,
    device: &B::Device,
) -> Linear<B> {
    let bound = 1.0 / (d_in as f32).sqrt();
    Linear {
        weight: uniform([d_in, d_out], bound, rng, device),
        bias: Some(uniform([d_out], bound, rng, device)),
    }
}

/// A linear with `N(0, std²)` weights and a zero bias.
pub fn linear_normal<B: Backend>(
    d_in: usize,
    d_out: usize,
    std: f32,
    rng: &mut Rng,
    device: &B::Device,
) -> Linear<B> {
    Linear {
        weight: normal([d_in, d_out], std, rng, device),
        bias: Some(Param::from_tensor(Tensor::zeros([d_out], device))),
    }
}
