//! A timm-exact Vision Transformer, generic over the burn backend.
//!
//! The struct tree mirrors timm's state-dict keys (`patch_embed.proj`, `cls_token`,
//! `reg_token`, `pos_embed`, `blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`,
//! `norm`, `fc_norm`, `head`) so loading needs almost no remapping. Inputs are [0,1]
//! pixels: normalisation with the checkpoint's mean/std happens inside [`Vit::forward`],
//! which is what attacks with an eps in pixel space need.

mod block;
pub mod delta;

pub use block::{Attention, Block, Mlp};
pub use delta::{Adapters, BlockDeltas, LinearDelta, Target};

use burn::module::Param;
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;

use crate::config::{GlobalPool, VitConfig};

/// timm's ViT LayerNorm epsilon.
pub const LN_EPS: f64 = 1e-6;

/// A per-channel constant `[1, C, 1, 1]` (input mean/std): a parameter that never trains.
pub fn channel_constant<B: Backend>(v: &[f32], device: &B::Device) -> Param<Tensor<B, 4>> {
    Param::from_tensor(Tensor::<B, 1>::from_floats(v, device).reshape([1, v.len(), 1, 1]))
        .set_require_grad(false)
}

/// A fresh linear with its bias set to zero (timm's init for ViT linears).
pub fn zero_bias<B: Backend>(mut l: Linear<B>) -> Linear<B> {
    l.bias = l.bias.map(|b| b.map(|t| t.zeros_like()));
    l
}

/// The patch embedding: timm's stride-P convolution, computed as one matmul over
/// flattened patches (weight `[C·P·P, D]`, the conv kernel reshaped).
#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    /// Flattened conv kernel as a linear.
    pub proj: Linear<B>,
    /// Patch side in pixels.
    pub patch: usize,
}

impl<B: Backend> PatchEmbed<B> {
    /// `[batch, C, H, W] -> [batch, patches, D]`, patches in row-major (y, x) order.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, c, h, w] = x.dims();
        let p = self.patch;
        let (gh, gw) = (h / p, w / p);
        let patches = x
            .reshape([b, c, gh, p, gw, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([b, gh * gw, c * p * p]);
        block::on_rows(patches, |rows| self.proj.forward(rows))
    }
}

/// The Vision Transformer.
#[derive(Module, Debug)]
pub struct Vit<B: Backend> {
    /// Per-channel input mean `[1, C, 1, 1]` (constant).
    pub mean: Param<Tensor<B, 4>>,
    /// Per-channel input std `[1, C, 1, 1]` (constant).
    pub std: Param<Tensor<B, 4>>,
    /// Patch embedding.
    pub patch_embed: PatchEmbed<B>,
    /// Class token `[1, 1, D]`.
    pub cls_token: Option<Param<Tensor<B, 3>>>,
    /// Register tokens `[1, R, D]`.
    pub reg_token: Option<Param<Tensor<B, 3>>>,
    /// Position embedding `[1, T, D]`.
    pub pos_embed: Param<Tensor<B, 3>>,
    /// Transformer blocks.
    pub blocks: Vec<Block<B>>,
    /// Final LayerNorm before pooling (absent when `fc_norm` is used).
    pub norm: Option<LayerNorm<B>>,
    /// LayerNorm after pooling.
    pub fc_norm: Option<LayerNorm<B>>,
    /// Classifier `[D] -> [classes]`.
    pub head: Linear<B>,
    /// Whether pooling averages patch tokens (else takes the class token).
    pub avg_pool: bool,
    /// Prefix tokens (class + registers).
    pub num_prefix: usize,
    /// Position embeddings skip prefix tokens.
    pub no_embed_class: bool,
}

impl<B: Backend> Vit<B> {
    /// A randomly initialised ViT for `cfg` (timm-like init: normal(0.02) weights,
    /// zero biases, small token embeddings), its weights drawn at once from burn's
    /// generator (so a seed set just before decides them; see
    /// [`crate::named_params::materialize`]).
    pub fn init(cfg: &VitConfig, device: &B::Device) -> Self {
        let vit = Self::init_lazy(cfg, device);
        crate::named_params::materialize(&vit);
        vit
    }

    fn init_lazy(cfg: &VitConfig, device: &B::Device) -> Self {
        let d = cfg.embed_dim;
        let c = cfg.in_chans;
        let p = cfg.patch_size;
        let normal = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        let ln = || LayerNormConfig::new(d).with_epsilon(LN_EPS).init(device);
        let patch_proj = zero_bias(
            LinearConfig::new(c * p * p, d)
                .with_initializer(Initializer::KaimingUniform {
                    gain: 1.0 / 3f64.sqrt(),
                    fan_out_only: false,
                })
                .init(device),
        );
        let head = zero_bias(
            LinearConfig::new(d, cfg.num_classes)
                .with_initializer(normal.clone())
                .init(device),
        );
        Self {
            mean: channel_constant(&cfg.mean, device),
            std: channel_constant(&cfg.std, device),
            patch_embed: PatchEmbed {
                proj: patch_proj,
                patch: p,
            },
            cls_token: cfg.class_token.then(|| normal.init([1, 1, d], device)),
            reg_token: (cfg.reg_tokens > 0).then(|| normal.init([1, cfg.reg_tokens, d], device)),
            pos_embed: normal.init([1, cfg.pos_embed_len(), d], device),
            blocks: (0..cfg.depth)
                .map(|_| Block::init(d, cfg.num_heads, cfg.mlp_hidden(), cfg.qkv_bias, device))
                .collect(),
            norm: (!cfg.use_fc_norm()).then(ln),
            fc_norm: cfg.use_fc_norm().then(ln),
            head,
            avg_pool: cfg.global_pool == GlobalPool::Avg,
            num_prefix: cfg.num_prefix_tokens(),
            no_embed_class: cfg.no_embed_class,
        }
    }

    /// Token width `D`.
    pub fn embed_dim(&self) -> usize {
        self.pos_embed.dims()[2]
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.head.weight.dims()[1]
    }

    /// Normalises [0,1] pixels with the checkpoint's mean/std.
    pub fn normalize(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        (x - self.mean.val()).div(self.std.val())
    }

    /// Patch tokens plus prefix tokens and position embeddings: `[batch, T, D]`.
    fn embed(&self, x: Tensor<B, 4>) -> Tensor<B, 3> {
        let x = self.patch_embed.forward(self.normalize(x));
        let [b, _, d] = x.dims();
        let mut prefix = Vec::with_capacity(3);
        if let Some(cls) = &self.cls_token {
            prefix.push(cls.val().expand([b, 1, d]));
        }
        if let Some(reg) = &self.reg_token {
            let r = reg.dims()[1];
            prefix.push(reg.val().expand([b, r, d]));
        }
        let cat = |x: Tensor<B, 3>, mut prefix: Vec<Tensor<B, 3>>| {
            if prefix.is_empty() {
                x
            } else {
                prefix.push(x);
                Tensor::cat(prefix, 1)
            }
        };
        if self.no_embed_class {
            cat(x + self.pos_embed.val(), prefix)
        } else {
            cat(x, prefix) + self.pos_embed.val()
        }
    }

    /// Token features after the blocks (and `norm`): `[batch, T, D]`.
    pub fn forward_features(
        &self,
        x: Tensor<B, 4>,
        adapters: Option<&Adapters<B>>,
    ) -> Tensor<B, 3> {
        let mut x = self.embed(x);
        let none = BlockDeltas::default();
        for (i, block) in self.blocks.iter().enumerate() {
            let deltas = adapters.and_then(|a| a.blocks.get(i)).unwrap_or(&none);
            x = block.forward(x, deltas);
        }
        match &self.norm {
            Some(norm) => norm.forward(x),
            None => x,
        }
    }

    /// Pooled features `[batch, D]` (class token or mean of patch tokens, then `fc_norm`).
    pub fn pool(&self, x: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, t, d] = x.dims();
        let pooled = if self.avg_pool {
            x.narrow(1, self.num_prefix, t - self.num_prefix)
                .mean_dim(1)
                .reshape([b, d])
        } else {
            x.narrow(1, 0, 1).reshape([b, d])
        };
        match &self.fc_norm {
            Some(norm) => norm.forward(pooled),
            None => pooled,
        }
    }

    /// Logits from token features.
    pub fn forward_head(&self, x: Tensor<B, 3>) -> Tensor<B, 2> {
        self.head.forward(self.pool(x))
    }

    /// Logits `[batch, classes]` for [0,1] pixels `[batch, C, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward_head(self.forward_features(x, None))
    }

    /// Logits with low-rank deltas added to the targeted linears.
    pub fn forward_with(&self, x: Tensor<B, 4>, adapters: &Adapters<B>) -> Tensor<B, 2> {
        self.forward_head(self.forward_features(x, Some(adapters)))
    }
}
