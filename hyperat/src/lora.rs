//! LoRA factors for the frozen ViT: which linears, what rank, and a plain learnable set.
//!
//! `y = base(x) + scaling · B(A x)` with `scaling = alpha / r` on the delta only (peft's
//! convention). Factors are either parameters ([`LoraSet`], the LoRA-AT and FullLoRA-AT
//! baselines) or tensors a hypernetwork generates ([`crate::hypernet`]); both end up as
//! [`Adapters`] handed to [`Vit::forward_with`](crate::vit::Vit::forward_with).

use burn::module::Param;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::VitConfig;
use crate::error::{Error, Result};
use crate::vit::{Adapters, LinearDelta, Target};

/// Where LoRA goes and its size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank `r` (default 8).
    pub rank: usize,
    /// `alpha` (default 16); `scaling = alpha / r`.
    pub alpha: f32,
    /// Targeted linears of every block (default all four).
    pub targets: Vec<Target>,
    /// On `qkv`, adapt only the q and v parts (the k columns of `B` stay zero).
    pub qv_only: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            targets: Target::ALL.to_vec(),
            qv_only: false,
        }
    }
}

impl LoraConfig {
    /// `alpha / r`.
    pub fn scaling(&self) -> f32 {
        self.alpha / self.rank as f32
    }

    /// Parses `qkv,proj,fc1,fc2` (or `all`, or `qv` for q/v-only on qkv).
    pub fn parse_targets(s: &str) -> Result<(Vec<Target>, bool)> {
        match s {
            "all" => return Ok((Target::ALL.to_vec(), false)),
            "qv" => return Ok((vec![Target::Qkv], true)),
            _ => {}
        }
        let mut out = vec![];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let t = Target::parse(part).ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown LoRA target `{part}` (qkv, proj, fc1, fc2, all, qv)"
                ))
            })?;
            if !out.contains(&t) {
                out.push(t);
            }
        }
        if out.is_empty() {
            return Err(Error::Invalid("no LoRA targets given".into()));
        }
        out.sort();
        Ok((out, false))
    }

    /// Checks the rank against the model.
    pub fn validate(&self, vit: &VitConfig) -> Result<()> {
        if self.rank == 0 || self.rank > vit.embed_dim {
            return Err(Error::Invalid(format!(
                "LoRA rank must be in 1..={}, got {}",
                vit.embed_dim, self.rank
            )));
        }
        if !(self.alpha > 0.0) {
            return Err(Error::Invalid(format!(
                "LoRA alpha must be positive, got {}",
                self.alpha
            )));
        }
        if self.targets.is_empty() {
            return Err(Error::Invalid("no LoRA targets".into()));
        }
        Ok(())
    }
}

/// `(in, out)` of a target linear.
pub fn target_shape(vit: &VitConfig, t: Target) -> (usize, usize) {
    let (d, h) = (vit.embed_dim, vit.mlp_hidden());
    match t {
        Target::Qkv => (d, 3 * d),
        Target::Proj => (d, d),
        Target::Fc1 => (d, h),
        Target::Fc2 => (h, d),
    }
}

/// `[r, 3D]` mask keeping the q and v columns of a qkv `B` factor.
pub fn qv_mask<B: Backend>(rank: usize, dim: usize, device: &B::Device) -> Tensor<B, 2> {
    let row: Vec<f32> = (0..3 * dim)
        .map(|j| {
            if (dim..2 * dim).contains(&j) {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    Tensor::<B, 1>::from_floats(row.as_slice(), device)
        .reshape([1, 3 * dim])
        .repeat_dim(0, rank)
}

/// One learnable LoRA pair (and, for FullLoRA, a LayerNorm on its input).
#[derive(Module, Debug)]
pub struct LoraPair<B: Backend> {
    /// `[in, r]`, `N(0, 1/in)` at the start.
    pub lora_a: Param<Tensor<B, 2>>,
    /// `[r, out]`, zeros (the model starts equal to the pretrained one).
    pub lora_b: Param<Tensor<B, 2>>,
    /// FullLoRA's LN-LoRA: LayerNorm gamma on the delta's input.
    pub norm_gamma: Option<Param<Tensor<B, 1>>>,
    /// FullLoRA's LN-LoRA: LayerNorm beta on the delta's input.
    pub norm_beta: Option<Param<Tensor<B, 1>>>,
}

/// A plain LoRA set over every block and target: the LoRA-AT baseline, or FullLoRA-AT
/// with `ln_lora` (a learnable LayerNorm before each LoRA's input).
#[derive(Module, Debug)]
pub struct LoraSet<B: Backend> {
    /// Pairs in (layer, target) order, targets as in the config.
    pub pairs: Vec<LoraPair<B>>,
    /// `[r, 3D]` q/v mask when adapting q and v only.
    pub qv_mask: Option<Param<Tensor<B, 2>>>,
    /// Blocks.
    pub depth: usize,
    /// Targets, as indices of [`Target::ALL`].
    pub targets: Vec<usize>,
    /// `alpha / r`.
    pub scaling: f32,
}

impl<B: Backend> LoraSet<B> {
    /// A fresh set: `A ~ N(0, 1/in)` (the LoRA paper's Gaussian; the PyTorch parity
    /// recipe uses it), `B` zero, norms identity.
    pub fn init(
        vit: &VitConfig,
        cfg: &LoraConfig,
        ln_lora: bool,
        rng: &mut crate::rng::Rng,
        device: &B::Device,
    ) -> Self {
        let mut pairs = vec![];
        for _ in 0..vit.depth {
            for &t in &cfg.targets {
                let (i, o) = target_shape(vit, t);
                let std = 1.0 / (i as f32).sqrt();
                pairs.push(LoraPair {
                    lora_a: crate::init::normal([i, cfg.rank], std, rng, device),
                    lora_b: Param::from_tensor(Tensor::zeros([cfg.rank, o], device)),
                    norm_gamma: ln_lora.then(|| Param::from_tensor(Tensor::ones([i], device))),
                    norm_beta: ln_lora.then(|| Param::from_tensor(Tensor::zeros([i], device))),
                });
            }
        }
        let qv = (cfg.qv_only && cfg.targets.contains(&Target::Qkv)).then(|| {
            Param::from_tensor(qv_mask::<B>(cfg.rank, vit.embed_dim, device))
                .set_require_grad(false)
        });
        Self {
            pairs,
            qv_mask: qv,
            depth: vit.depth,
            targets: cfg.targets.iter().map(|t| t.index()).collect(),
            scaling: cfg.scaling(),
        }
    }

    /// The deltas for [`Vit::forward_with`](crate::vit::Vit::forward_with).
    pub fn adapters(&self) -> Adapters<B> {
        let mut ad = Adapters::empty(self.depth);
        let mut it = self.pairs.iter();
        for layer in 0..self.depth {
            for &ti in &self.targets {
                let p = it.next().expect("one pair per (layer, target)");
                let t = Target::ALL[ti];
                let mut lora_b = p.lora_b.val();
                if let (Target::Qkv, Some(mask)) = (t, &self.qv_mask) {
                    lora_b = lora_b * mask.val();
                }
                let input_norm = match (&p.norm_gamma, &p.norm_beta) {
                    (Some(g), Some(b)) => Some((g.val(), b.val())),
                    _ => None,
                };
                ad.set(
                    layer,
                    t,
                    LinearDelta {
                        lora_a: p.lora_a.val(),
                        lora_b,
                        scaling: self.scaling,
                        input_norm,
                    },
                );
            }
        }
        ad
    }
}
