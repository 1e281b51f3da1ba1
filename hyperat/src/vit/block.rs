//! One pre-norm transformer block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`.

use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::module::linear;

use super::LN_EPS;
use super::delta::{BlockDeltas, LinearDelta, Target};

/// `linear(x) + delta(x)`: the frozen layer plus an optional low-rank update.
pub(crate) fn linear_with<B: Backend>(
    layer: &Linear<B>,
    x: Tensor<B, 3>,
    delta: Option<&LinearDelta<B>>,
) -> Tensor<B, 3> {
    // The low-rank path stays batched: its thin products (rank 8) gain from splitting
    // over images, and its weight gradients are small.
    match delta {
        Some(d) => on_rows(x.clone(), |x| layer.forward(x)) + d.apply(x),
        None => on_rows(x, |x| layer.forward(x)),
    }
}

/// `f` applied to `x` `[batch, tokens, in]` as one `[batch·tokens, in]` matrix. A
/// product with a weight on the 3-D tensor is a batched matmul: one small gemm per
/// image, packing the weight each time, and a weight gradient made of one `[in, out]`
/// product per image summed afterwards; on the matrix each is one gemm. The reshapes
/// are views.
pub(crate) fn on_rows<B: Backend>(
    x: Tensor<B, 3>,
    f: impl FnOnce(Tensor<B, 2>) -> Tensor<B, 2>,
) -> Tensor<B, 3> {
    let [b, n, d] = x.dims();
    let y = f(x.reshape([b * n, d]));
    let out = y.dims()[1];
    y.reshape([b, n, out])
}

/// Multi-head self-attention with a fused `qkv` linear (timm's `Attention`).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `[D] -> [3D]`; output rows are q, k, v, each split by head.
    pub qkv: Linear<B>,
    /// `[D] -> [D]`.
    pub proj: Linear<B>,
    /// Number of heads.
    pub num_heads: usize,
}

impl<B: Backend> Attention<B> {
    /// `[batch, tokens, dim] -> [batch, tokens, dim]`.
    pub fn forward(&self, x: Tensor<B, 3>, deltas: &BlockDeltas<B>) -> Tensor<B, 3> {
        let [b, n, d] = x.dims();
        let hd = d / self.num_heads;
        // timm scales q before the product: `head_dim` times fewer multiplications
        // (forward and backward) than scaling the `tokens x tokens` scores.
        let [q, k, v] = self.qkv_heads(x, deltas.get(Target::Qkv), (hd as f64).powf(-0.5));
        let scores = q.matmul(k.swap_dims(2, 3));
        let ctx = softmax(scores, 3).matmul(v); // [batch, heads, tokens, head_dim]
        let ctx = ctx.swap_dims(1, 2).reshape([b, n, d]);
        linear_with(&self.proj, ctx, deltas.get(Target::Proj))
    }

    /// q, k and v as `[batch, heads, tokens, head_dim]`, each from its third of the fused
    /// `qkv` weight (and of the delta's `B`). Slicing the small weight rather than the
    /// `tokens x 3·dim` output spares the backward three zero-filled output-sized
    /// gradients and their sum; the products are the same dot products. q is multiplied
    /// by `q_scale` while still contiguous (a strided view takes flex's slow path).
    fn qkv_heads(
        &self,
        x: Tensor<B, 3>,
        delta: Option<&LinearDelta<B>>,
        q_scale: f64,
    ) -> [Tensor<B, 4>; 3] {
        let [b, n, d] = x.dims();
        let h = self.num_heads;
        let code = delta.map(|delta| delta.down(x.clone()));
        let x = x.reshape([b * n, d]); // one gemm per product (see `on_rows`)
        let weight = self.qkv.weight.val();
        let bias = self.qkv.bias.as_ref().map(|bias| bias.val());
        [0, 1, 2].map(|part| {
            let columns = part * d..(part + 1) * d;
            let mut y = linear(
                x.clone(),
                weight.clone().narrow(1, columns.start, d),
                bias.clone().map(|bias| bias.narrow(0, columns.start, d)),
            );
            if let (Some(delta), Some(code)) = (delta, &code) {
                y = y + delta.up(code.clone(), Some(columns)).reshape([b * n, d]);
            }
            if part == 0 {
                y = y.mul_scalar(q_scale);
            }
            // Views only: flex's batched matmul takes strided operands.
            y.reshape([b, n, h, d / h]).swap_dims(1, 2)
        })
    }
}

/// `fc1 -> GELU (erf) -> fc2`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `[D] -> [hidden]`.
    pub fc1: Linear<B>,
    /// `[hidden] -> [D]`.
    pub fc2: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// `[batch, tokens, dim] -> [batch, tokens, dim]`.
    pub fn forward(&self, x: Tensor<B, 3>, deltas: &BlockDeltas<B>) -> Tensor<B, 3> {
        let x = gelu(linear_with(&self.fc1, x, deltas.get(Target::Fc1)));
        linear_with(&self.fc2, x, deltas.get(Target::Fc2))
    }
}

/// A pre-norm transformer block (timm's `Block` without layer scale or drop path).
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// LayerNorm before attention.
    pub norm1: LayerNorm<B>,
    /// Self-attention.
    pub attn: Attention<B>,
    /// LayerNorm before the MLP.
    pub norm2: LayerNorm<B>,
    /// Feed-forward network.
    pub mlp: Mlp<B>,
}

impl<B: Backend> Block<B> {
    /// A randomly initialised block (trunc-normal-like weights, zero biases).
    pub fn init(
        dim: usize,
        heads: usize,
        hidden: usize,
        qkv_bias: bool,
        device: &B::Device,
    ) -> Self {
        let init = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        let lin = |i, o, bias| {
            super::zero_bias(
                LinearConfig::new(i, o)
                    .with_bias(bias)
                    .with_initializer(init.clone())
                    .init(device),
            )
        };
        let ln = || LayerNormConfig::new(dim).with_epsilon(LN_EPS).init(device);
        Self {
            norm1: ln(),
            attn: Attention {
                qkv: lin(dim, 3 * dim, qkv_bias),
                proj: lin(dim, dim, true),
                num_heads: heads,
            },
            norm2: ln(),
            mlp: Mlp {
                fc1: lin(dim, hidden, true),
                fc2: lin(hidden, dim, true),
            },
        }
    }

    /// `[batch, tokens, dim] -> [batch, tokens, dim]`.
    pub fn forward(&self, x: Tensor<B, 3>, deltas: &BlockDeltas<B>) -> Tensor<B, 3> {
        let x = x.clone() + self.attn.forward(self.norm1.forward(x), deltas);
        x.clone() + self.mlp.forward(self.norm2.forward(x), deltas)
    }

    /// The frozen linear a target names.
    pub fn linear(&self, t: Target) -> &Linear<B> {
        match t {
            Target::Qkv => &self.attn.qkv,
            Target::Proj => &self.attn.proj,
            Target::Fc1 => &self.mlp.fc1,
            Target::Fc2 => &self.mlp.fc2,
        }
    }

    /// Mutable access to the linear a target names (for folding merged deltas).
    pub fn linear_mut(&mut self, t: Target) -> &mut Linear<B> {
        match t {
            Target::Qkv => &mut self.attn.qkv,
            Target::Proj => &mut self.attn.proj,
            Target::Fc1 => &mut self.mlp.fc1,
            Target::Fc2 => &mut self.mlp.fc2,
        }
    }
}
