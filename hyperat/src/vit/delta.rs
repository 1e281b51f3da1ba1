//! Low-rank updates passed into the ViT's linears.
//!
//! The ViT knows nothing of how a delta was made (a plain LoRA, a hypernetwork, a merge):
//! it only adds `scaling · B(A x)` to the frozen linear's output. Keeping this a plain
//! value (not a module) lets the hypernetwork generate the factors once per training
//! step and every attack step reuse them.

use burn::prelude::*;

/// Which linear of a block a delta targets (timm's names).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// `attn.qkv`: `[D] -> [3D]`.
    Qkv,
    /// `attn.proj`: `[D] -> [D]`.
    Proj,
    /// `mlp.fc1`: `[D] -> [hidden]`.
    Fc1,
    /// `mlp.fc2`: `[hidden] -> [D]`.
    Fc2,
}

impl Target {
    /// All targets, in module order.
    pub const ALL: [Target; 4] = [Target::Qkv, Target::Proj, Target::Fc1, Target::Fc2];

    /// timm's module path inside a block.
    pub fn path(self) -> &'static str {
        match self {
            Target::Qkv => "attn.qkv",
            Target::Proj => "attn.proj",
            Target::Fc1 => "mlp.fc1",
            Target::Fc2 => "mlp.fc2",
        }
    }

    /// Short name (`qkv`, `proj`, `fc1`, `fc2`).
    pub fn name(self) -> &'static str {
        match self {
            Target::Qkv => "qkv",
            Target::Proj => "proj",
            Target::Fc1 => "fc1",
            Target::Fc2 => "fc2",
        }
    }

    /// Parses a short name.
    pub fn parse(s: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Index in [`Target::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A low-rank update of one linear: `y = base(x) + scaling · (norm(x) · lora_a) · lora_b`.
///
/// Factors use burn's row layout (`x · W`): `lora_a` is `[in, r]`, `lora_b` is `[r, out]`,
/// the transposes of peft's `lora_A.weight` / `lora_B.weight`.
#[derive(Clone, Debug)]
pub struct LinearDelta<B: Backend> {
    /// Down projection, `[in, r]`.
    pub lora_a: Tensor<B, 2>,
    /// Up projection, `[r, out]`.
    pub lora_b: Tensor<B, 2>,
    /// Multiplies only the low-rank term (`alpha / r`).
    pub scaling: f32,
    /// Optional LayerNorm `(gamma, beta)` on the delta's input (FullLoRA's LN-LoRA).
    pub input_norm: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
}

impl<B: Backend> LinearDelta<B> {
    /// The low-rank term for `x` `[..., in]` -> `[..., out]`.
    pub fn apply<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.up(self.down(x), None)
    }

    /// The rank-`r` code `A x` (after the input norm, if any): computed once when several
    /// column ranges of the output are wanted (see [`Self::up`]).
    pub fn down<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let x = match &self.input_norm {
            Some((g, b)) => layer_norm(x, g.clone(), b.clone(), crate::vit::LN_EPS),
            None => x,
        };
        x.matmul(self.lora_a.clone().unsqueeze::<D>())
    }

    /// `scaling · B code`, for the output columns `columns` (all when `None`). The
    /// scaling goes on the `rank x out` factor, not on the `tokens x out` product.
    pub fn up<const D: usize>(
        &self,
        code: Tensor<B, D>,
        columns: Option<core::ops::Range<usize>>,
    ) -> Tensor<B, D> {
        let b = match columns {
            Some(c) => self.lora_b.clone().narrow(1, c.start, c.len()),
            None => self.lora_b.clone(),
        };
        code.matmul(b.mul_scalar(self.scaling).unsqueeze::<D>())
    }

    pub fn detach(&self) -> Self {
        fn cut<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Tensor<B, D> {
            t.clone().detach().set_require_grad(false)
        }
        Self {
            lora_a: cut(&self.lora_a),
            lora_b: cut(&self.lora_b),
            scaling: self.scaling,
            input_norm: self.input_norm.as_ref().map(|(g, b)| (cut(g), cut(b))),
        }
    }

    /// The dense update `scaling · A·B` in row layout `[in, out]` (requires no input norm).
    pub fn dense(&self) -> Tensor<B, 2> {
        self.lora_a
            .clone()
            .matmul(self.lora_b.clone())
            .mul_scalar(self.scaling)
    }
}

/// LayerNorm over the last dimension with explicit parameters.
pub fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    use burn::tensor::TensorPrimitive;
    Tensor::from_primitive(TensorPrimitive::Float(B::layer_norm(
        x.into_primitive().tensor(),
        gamma.into_primitive().tensor(),
        Some(beta.into_primitive().tensor()),
        eps,
    )))
}

/// The deltas for one block, indexed by [`Target::index`].
#[derive(Clone, Debug)]
pub struct BlockDeltas<B: Backend>(pub [Option<LinearDelta<B>>; 4]);

impl<B: Backend> Default for BlockDeltas<B> {
    fn default() -> Self {
        Self([None, None, None, None])
    }
}

impl<B: Backend> BlockDeltas<B> {
    /// The delta for `t`, if any.
    pub fn get(&self, t: Target) -> Option<&LinearDelta<B>> {
        self.0[t.index()].as_ref()
    }
}

/// Deltas for every block of a ViT (an "adapter set").
#[derive(Clone, Debug)]
pub struct Adapters<B: Backend> {
    /// One entry per block, in depth order.
    pub blocks: Vec<BlockDeltas<B>>,
}

impl<B: Backend> Adapters<B> {
    /// An empty set for `depth` blocks.
    pub fn empty(depth: usize) -> Self {
        Self {
            blocks: (0..depth).map(|_| BlockDeltas::default()).collect(),
        }
    }

    /// Sets the delta of block `layer`, target `t`.
    pub fn set(&mut self, layer: usize, t: Target, delta: LinearDelta<B>) {
        self.blocks[layer].0[t.index()] = Some(delta);
    }

    /// The delta of block `layer`, target `t`.
    pub fn get(&self, layer: usize, t: Target) -> Option<&LinearDelta<B>> {
        self.blocks.get(layer).and_then(|b| b.get(t))
    }

    /// `vit` with every delta added to its linear's weight (`W + scaling·A·B`), or `None`
    /// when a delta has an input norm and so does not fold (see
    /// [`crate::attack::frozen_view`]). The weights keep their ids.
    pub fn fold_into(&self, mut vit: super::Vit<B>) -> Option<super::Vit<B>> {
        let mut deltas = self.blocks.iter().flat_map(|b| b.0.iter()).flatten();
        if deltas.any(|d| d.input_norm.is_some()) {
            return None;
        }
        for (block, deltas) in vit.blocks.iter_mut().zip(&self.blocks) {
            for (t, d) in Target::ALL.into_iter().zip(&deltas.0) {
                if let Some(d) = d {
                    let lin = block.linear_mut(t);
                    lin.weight = lin.weight.clone().map(|w| w + d.dense());
                }
            }
        }
        Some(vit)
    }

    /// Every delta cut from the autodiff graph: attack steps reuse the factors generated
    /// for the training step without back-propagating into the generator.
    pub fn detach(&self) -> Self {
        Self {
            blocks: self
                .blocks
                .iter()
                .map(|b| BlockDeltas(b.0.clone().map(|d| d.map(|d| d.detach()))))
                .collect(),
        }
    }
}
