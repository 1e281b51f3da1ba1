//! Method embeddings and the shared hypernetwork that generates every LoRA (method.md §2).
//!
//! Learned tables `z_m` (one row per defense method), `u_l` (per block) and `v_t` (per
//! target module) are concatenated, mapped by the generator `G` (Linear → ReLU → Linear
//! → LayerNorm) to a conditioning vector `e`, and one linear A head and one B head per
//! distinct target shape turn `e` into the factors `A_{m,l,t}`, `B_{m,l,t}`. B heads
//! start at zero, so every generated LoRA is zero at step 0 and the tuned model starts
//! equal to the pretrained one. All `L × T` rows of a method go through `G` and the heads
//! as one batch: generating the whole adapter set is a handful of small matmuls.

use burn::module::Param;
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use serde::{Deserialize, Serialize};

use crate::config::VitConfig;
use crate::init;
use crate::lora::{LoraConfig, qv_mask, target_shape};
use crate::rng::Rng;
use crate::vit::{Adapters, LinearDelta, Target};

/// Sizes of the embeddings and the generator (method.md's defaults, marked "ours").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HyperConfig {
    /// Width of each embedding table `z_m`, `u_l`, `v_t` (default 64).
    pub embed_dim: usize,
    /// Hidden width of the generator `G` (default 128).
    pub hidden: usize,
    /// Width of the conditioning vector `e` (default 64).
    pub cond_dim: usize,
    /// Standard deviation of the method embeddings `z_m` at the start (default 1, as
    /// `u_l` and `v_t`): a larger one makes the method a larger part of `G`'s input.
    #[serde(default = "one")]
    pub method_embed_std: f32,
    /// Feed `z_m` to the factor heads beside `e` (heads read `[e; z_m]`) **(ours)**: each
    /// method then has a direct, layer-independent say in its factors, which `G`'s
    /// shared mapping cannot average away.
    #[serde(default)]
    pub method_to_heads: bool,
}

fn one() -> f32 {
    1.0
}

impl Default for HyperConfig {
    fn default() -> Self {
        Self {
            embed_dim: 64,
            hidden: 128,
            cond_dim: 64,
            method_embed_std: 1.0,
            method_to_heads: false,
        }
    }
}

/// The hypernetwork side: embeddings, generator and factor heads.
#[derive(Module, Debug)]
pub struct HyperNet<B: Backend> {
    /// `z_m`: `[methods, embed]`.
    pub method_embed: Param<Tensor<B, 2>>,
    /// `u_l`: `[depth, embed]`.
    pub layer_embed: Param<Tensor<B, 2>>,
    /// `v_t`: `[4, embed]`, rows indexed by [`Target::index`].
    pub module_embed: Param<Tensor<B, 2>>,
    /// `G`'s first layer, `3·embed -> hidden`.
    pub gen_fc1: Linear<B>,
    /// `G`'s second layer, `hidden -> cond`.
    pub gen_fc2: Linear<B>,
    /// `G`'s output LayerNorm.
    pub gen_norm: LayerNorm<B>,
    /// One A head per distinct target shape, `cond -> in·r`.
    pub heads_a: Vec<Linear<B>>,
    /// One B head per distinct target shape, `cond -> r·out` (zero-initialised).
    pub heads_b: Vec<Linear<B>>,
    /// `[r, 3D]` q/v mask when adapting q and v only.
    pub qv_mask: Option<Param<Tensor<B, 2>>>,
    /// Targets (indices of [`Target::ALL`]) in generation order.
    pub targets: Vec<usize>,
    /// Head index of each target.
    pub target_head: Vec<usize>,
    /// `(in, out)` of each head.
    pub head_shapes: Vec<[usize; 2]>,
    /// Blocks.
    pub depth: usize,
    /// LoRA rank.
    pub rank: usize,
    /// LoRA `alpha / r`.
    pub scaling: f32,
    /// Whether the heads read `[e; z_m]` ([`HyperConfig::method_to_heads`]).
    pub method_to_heads: bool,
    /// Multiplies the heads' outputs (1 / cond_dim). Adam moves every head weight by
    /// about lr per step, and a generated entry sums cond_dim such moves: without the
    /// gain the generated LoRA would move ~cond_dim times faster than a plain LoRA at
    /// the same lr (our first runs collapsed to one class within 15 steps at lr 1e-3).
    pub head_gain: f32,
}

/// The generated factors of one method: for every target (in [`HyperNet::targets`]
/// order) `A` as `[depth, in, r]` and `B` as `[depth, r, out]`.
#[derive(Clone, Debug)]
pub struct Factors<B: Backend> {
    /// Per target: `(target, A, B)`.
    pub per_target: Vec<(Target, Tensor<B, 3>, Tensor<B, 3>)>,
    /// `alpha / r`.
    pub scaling: f32,
}

impl<B: Backend> Factors<B> {
    /// The deltas for [`Vit::forward_with`](crate::vit::Vit::forward_with) (views, no copies).
    pub fn adapters(&self) -> Adapters<B> {
        let depth = self.per_target.first().map(|p| p.1.dims()[0]).unwrap_or(0);
        let mut ad = Adapters::empty(depth);
        for (t, a, b) in &self.per_target {
            let [_, i, r] = a.dims();
            let o = b.dims()[2];
            for l in 0..depth {
                ad.set(
                    l,
                    *t,
                    LinearDelta {
                        lora_a: a.clone().narrow(0, l, 1).reshape([i, r]),
                        lora_b: b.clone().narrow(0, l, 1).reshape([r, o]),
                        scaling: self.scaling,
                        input_norm: None,
                    },
                );
            }
        }
        ad
    }

    /// The same factors cut from the autodiff graph (for attack steps).
    pub fn detach(&self) -> Self {
        Self {
            per_target: self
                .per_target
                .iter()
                .map(|(t, a, b)| (*t, a.clone().detach(), b.clone().detach()))
                .collect(),
            scaling: self.scaling,
        }
    }
}

impl<B: Backend> HyperNet<B> {
    /// A fresh hypernetwork for `methods` defenses on `vit`.
    pub fn init(
        vit: &VitConfig,
        lora: &LoraConfig,
        hc: &HyperConfig,
        methods: usize,
        rng: &mut Rng,
        device: &B::Device,
    ) -> Self {
        let e = hc.embed_dim;
        let method_embed = init::normal([methods, e], hc.method_embed_std, rng, device);
        let layer_embed = init::normal([vit.depth, e], 1.0, rng, device);
        let module_embed = init::normal([Target::ALL.len(), e], 1.0, rng, device);
        let gen_fc1 = init::linear(3 * e, hc.hidden, rng, device);
        let gen_fc2 = init::linear(hc.hidden, hc.cond_dim, rng, device);
        let mut head_shapes: Vec<[usize; 2]> = vec![];
        let mut target_head = vec![];
        for &t in &lora.targets {
            let (i, o) = target_shape(vit, t);
            let idx = head_shapes
                .iter()
                .position(|s| *s == [i, o])
                .unwrap_or_else(|| {
                    head_shapes.push([i, o]);
                    head_shapes.len() - 1
                });
            target_head.push(idx);
        }
        let r = lora.rank;
        let head_in = hc.cond_dim + if hc.method_to_heads { e } else { 0 };
        let heads_a = head_shapes
            .iter()
            .map(|&[i, _]| {
                // Generated A entries get std 1/sqrt(in), like a plain LoRA's `A ~ N(0,
                // 1/in)`, when the heads' inputs have unit variance (the output is
                // multiplied by `head_gain` = 1/cond_dim, hence the larger weights).
                let std = hc.cond_dim as f32 / ((head_in * i) as f32).sqrt();
                init::linear_normal(head_in, i * r, std, rng, device)
            })
            .collect();
        let heads_b = head_shapes
            .iter()
            .map(|&[_, o]| {
                LinearConfig::new(head_in, r * o)
                    .with_initializer(Initializer::Zeros)
                    .init(device)
            })
            .collect();
        let qv = (lora.qv_only && lora.targets.contains(&Target::Qkv)).then(|| {
            Param::from_tensor(qv_mask::<B>(r, vit.embed_dim, device)).set_require_grad(false)
        });
        Self {
            method_embed,
            layer_embed,
            module_embed,
            gen_fc1,
            gen_fc2,
            gen_norm: LayerNormConfig::new(hc.cond_dim).init(device),
            heads_a,
            heads_b,
            qv_mask: qv,
            targets: lora.targets.iter().map(|t| t.index()).collect(),
            target_head,
            head_shapes,
            depth: vit.depth,
            rank: r,
            scaling: lora.scaling(),
            method_to_heads: hc.method_to_heads,
            head_gain: 1.0 / hc.cond_dim as f32,
        }
    }

    /// Number of methods the tables hold.
    pub fn methods(&self) -> usize {
        self.method_embed.dims()[0]
    }

    /// The conditioning vectors `e = G([z_m; u_l; v_t])` of method `m`, one row per
    /// (target, layer), targets outer: `[T·L, cond]`.
    pub fn conditioning(&self, m: usize) -> Tensor<B, 2> {
        let l = self.depth;
        let e = self.layer_embed.dims()[1];
        let z = self.method_embed.val().narrow(0, m, 1).expand([l, e]);
        let u = self.layer_embed.val();
        // Rows: for each target, every layer: [z_m; u_l; v_t]  -> [T·L, 3e].
        let rows: Vec<Tensor<B, 2>> = self
            .targets
            .iter()
            .map(|&t| {
                let v = self.module_embed.val().narrow(0, t, 1).expand([l, e]);
                Tensor::cat(vec![z.clone(), u.clone(), v], 1)
            })
            .collect();
        let x = Tensor::cat(rows, 0);
        self.gen_norm
            .forward(self.gen_fc2.forward(relu(self.gen_fc1.forward(x))))
    }

    /// All LoRA factors of method `m`, generated in one batch.
    pub fn generate(&self, m: usize) -> Factors<B> {
        let l = self.depth;
        let mut cond = self.conditioning(m); // [T·L, cond]
        if self.method_to_heads {
            let rows = cond.dims()[0];
            let e = self.method_embed.dims()[1];
            let z = self.method_embed.val().narrow(0, m, 1).expand([rows, e]);
            cond = Tensor::cat(vec![cond, z], 1);
        }
        let r = self.rank;
        let per_target = self
            .targets
            .iter()
            .enumerate()
            .map(|(k, &ti)| {
                let c = cond.clone().narrow(0, k * l, l);
                let h = self.target_head[k];
                let [i, o] = self.head_shapes[h];
                let a = (self.heads_a[h].forward(c.clone()) * self.head_gain).reshape([l, i, r]);
                let mut b = (self.heads_b[h].forward(c) * self.head_gain).reshape([l, r, o]);
                let t = Target::ALL[ti];
                if let (Target::Qkv, Some(mask)) = (t, &self.qv_mask) {
                    b = b * mask.val().unsqueeze::<3>();
                }
                (t, a, b)
            })
            .collect();
        Factors {
            per_target,
            scaling: self.scaling,
        }
    }
}
