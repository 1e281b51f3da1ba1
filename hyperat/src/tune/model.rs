//! The model a tuning run trains: the ViT plus, depending on the kind, a hypernetwork
//! or a LoRA set.

use burn::module::Module;
use burn::prelude::*;

use super::{TuneConfig, TuneKind};
use crate::config::VitConfig;
use crate::host_tensor::HostTensor;
use crate::hypernet::{Factors, HyperNet};
use crate::lora::LoraSet;
use crate::merge::MethodLora;
use crate::vit::{Adapters, Target, Vit};

/// ViT with its trainable side. Frozen parameters carry `require_grad = false`, so the
/// optimiser never sees them.
#[derive(Module, Debug)]
pub struct Tuned<B: Backend> {
    /// The backbone (frozen except the head, or entirely trainable for full-AT).
    pub vit: Vit<B>,
    /// HyperAT's embeddings, generator and heads.
    pub hyper: Option<HyperNet<B>>,
    /// LoRA-AT's / FullLoRA-AT's factors.
    pub lora: Option<LoraSet<B>>,
}

impl<B: Backend> Tuned<B> {
    /// Every method's LoRA, on the host, named after `names` (the run's methods).
    pub fn method_loras(&self, names: &[String]) -> Vec<MethodLora> {
        let to_host = |ad: &Adapters<B>, name: &str, scaling: f32| {
            let mut factors = std::collections::BTreeMap::new();
            for (layer, b) in ad.blocks.iter().enumerate() {
                for t in Target::ALL {
                    if let Some(d) = b.get(t) {
                        factors.insert(
                            (layer, t),
                            (
                                HostTensor::from_tensor(d.lora_a.clone()),
                                HostTensor::from_tensor(d.lora_b.clone()),
                            ),
                        );
                    }
                }
            }
            MethodLora {
                name: name.to_string(),
                factors,
                scaling,
            }
        };
        match (&self.hyper, &self.lora) {
            (Some(h), _) => names
                .iter()
                .enumerate()
                .map(|(m, n)| to_host(&h.generate(m).adapters(), n, h.scaling))
                .collect(),
            (None, Some(l)) => vec![to_host(&l.adapters(), &names[0], l.scaling)],
            _ => vec![],
        }
    }

    /// Wraps a loaded backbone for `cfg`: freezes what must not train, adds the
    /// trainable side (B factors start at zero: the model starts equal to `vit`).
    pub fn new(vit: Vit<B>, vit_cfg: &VitConfig, cfg: &TuneConfig, device: &B::Device) -> Self {
        let vit = match cfg.kind {
            TuneKind::FullAt => vit,
            _ => {
                let mut v = vit.no_grad();
                v.head.weight = v.head.weight.set_require_grad(true);
                v.head.bias = v.head.bias.map(|b| b.set_require_grad(true));
                if cfg.train_patch_embed {
                    let p = &mut v.patch_embed.proj;
                    p.weight = p.weight.clone().set_require_grad(true);
                    p.bias = p.bias.clone().map(|b| b.set_require_grad(true));
                }
                v
            }
        };
        let mut rng = crate::rng::Rng::new(cfg.seed ^ 0x1A17);
        let hyper = (cfg.kind == TuneKind::Hyperat).then(|| {
            HyperNet::init(
                vit_cfg,
                &cfg.lora,
                &cfg.hyper,
                cfg.methods.len(),
                &mut rng,
                device,
            )
        });
        let lora = matches!(cfg.kind, TuneKind::LoraAt | TuneKind::FullLoraAt).then(|| {
            LoraSet::init(
                vit_cfg,
                &cfg.lora,
                cfg.kind == TuneKind::FullLoraAt,
                &mut rng,
                device,
            )
        });
        // The mean/std constants never train, whatever the kind.
        let mut t = Self { vit, hyper, lora };
        t.vit.mean = t.vit.mean.set_require_grad(false);
        t.vit.std = t.vit.std.set_require_grad(false);
        t
    }

    /// HyperAT's generated factors for method slot `m`.
    pub fn factors(&self, m: usize) -> Option<Factors<B>> {
        self.hyper.as_ref().map(|h| h.generate(m))
    }

    /// The adapters for method slot `m` (generated once; reuse them for every attack step).
    pub fn adapters(&self, m: usize) -> Option<Adapters<B>> {
        match (&self.hyper, &self.lora) {
            (Some(h), _) => Some(h.generate(m).adapters()),
            (None, Some(l)) => Some(l.adapters()),
            _ => None,
        }
    }

    /// Logits with the given adapters (or the plain ViT).
    pub fn logits(&self, x: Tensor<B, 4>, adapters: Option<&Adapters<B>>) -> Tensor<B, 2> {
        match adapters {
            Some(a) => self.vit.forward_with(x, a),
            None => self.vit.forward(x),
        }
    }
}
