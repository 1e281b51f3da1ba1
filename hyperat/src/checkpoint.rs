//! timm checkpoints in, timm checkpoints out.
//!
//! Key mapping (timm state dict -> our module tree; Linear weights transposed from
//! PyTorch's `[out, in]` to burn's `[in, out]`, LayerNorm `weight/bias` -> `gamma/beta`):
//!
//! | timm key                             | ours                                   |
//! |--------------------------------------|----------------------------------------|
//! | `patch_embed.proj.weight [D,C,P,P]`  | `patch_embed.proj.weight [C·P·P, D]`   |
//! | `patch_embed.proj.bias [D]`          | `patch_embed.proj.bias`                |
//! | `cls_token [1,1,D]`, `reg_token`     | same                                   |
//! | `pos_embed [1,T,D]`                  | same                                   |
//! | `blocks.{i}.norm{1,2}.{weight,bias}` | `blocks[i].norm{1,2}.{gamma,beta}`     |
//! | `blocks.{i}.attn.{qkv,proj}.*`       | `blocks[i].attn.{qkv,proj}.*`          |
//! | `blocks.{i}.mlp.{fc1,fc2}.*`         | `blocks[i].mlp.{fc1,fc2}.*`            |
//! | `norm.*` / `fc_norm.*`               | `norm` / `fc_norm`                     |
//! | `head.{weight,bias}`                 | `head`                                 |
//!
//! Loading is strict: a missing, unexpected or mis-shaped tensor is an error naming it.
//! [`adapt`] plays the part of timm's `checkpoint_filter_fn`: it resamples position
//! embeddings and patch kernels for another grid and drops the head for another class
//! count, before the strict load.

use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;

use crate::config::{GlobalPool, VitConfig};
use crate::error::{Error, Result};
use crate::host_tensor::{HostTensor, TensorMap};
use crate::resample::{resample_patch_kernel, resample_pos_embed};
use crate::vit::{Attention, Block, LN_EPS, Mlp, PatchEmbed, Vit, channel_constant};

/// Reads a ViT's tensors in timm layout.
pub fn vit_to_tensors<B: Backend>(vit: &Vit<B>, cfg: &VitConfig) -> TensorMap {
    let mut m = TensorMap::new();
    let [c, p, d] = [cfg.in_chans, cfg.patch_size, cfg.embed_dim];
    let pw = HostTensor::from_tensor(vit.patch_embed.proj.weight.val().transpose());
    m.insert(
        "patch_embed.proj.weight".into(),
        HostTensor::new(vec![d, c, p, p], pw.data),
    );
    put_bias(&mut m, "patch_embed.proj", &vit.patch_embed.proj);
    if let Some(t) = &vit.cls_token {
        m.insert("cls_token".into(), HostTensor::from_tensor(t.val()));
    }
    if let Some(t) = &vit.reg_token {
        m.insert("reg_token".into(), HostTensor::from_tensor(t.val()));
    }
    m.insert(
        "pos_embed".into(),
        HostTensor::from_tensor(vit.pos_embed.val()),
    );
    for (i, b) in vit.blocks.iter().enumerate() {
        let pre = format!("blocks.{i}");
        put_norm(&mut m, &format!("{pre}.norm1"), &b.norm1);
        put_linear(&mut m, &format!("{pre}.attn.qkv"), &b.attn.qkv);
        put_linear(&mut m, &format!("{pre}.attn.proj"), &b.attn.proj);
        put_norm(&mut m, &format!("{pre}.norm2"), &b.norm2);
        put_linear(&mut m, &format!("{pre}.mlp.fc1"), &b.mlp.fc1);
        put_linear(&mut m, &format!("{pre}.mlp.fc2"), &b.mlp.fc2);
    }
    if let Some(n) = &vit.norm {
        put_norm(&mut m, "norm", n);
    }
    if let Some(n) = &vit.fc_norm {
        put_norm(&mut m, "fc_norm", n);
    }
    put_linear(&mut m, "head", &vit.head);
    m
}

fn put_linear<B: Backend>(m: &mut TensorMap, name: &str, l: &Linear<B>) {
    m.insert(
        format!("{name}.weight"),
        HostTensor::from_tensor(l.weight.val().transpose()),
    );
    put_bias(m, name, l);
}

fn put_bias<B: Backend>(m: &mut TensorMap, name: &str, l: &Linear<B>) {
    if let Some(b) = &l.bias {
        m.insert(format!("{name}.bias"), HostTensor::from_tensor(b.val()));
    }
}

fn put_norm<B: Backend>(m: &mut TensorMap, name: &str, n: &LayerNorm<B>) {
    m.insert(
        format!("{name}.weight"),
        HostTensor::from_tensor(n.gamma.val()),
    );
    if let Some(b) = &n.beta {
        m.insert(format!("{name}.bias"), HostTensor::from_tensor(b.val()));
    }
}

/// Takes tensors out of a map by name, collecting every problem before failing.
struct Taker<'a, B: Backend> {
    map: TensorMap,
    device: &'a B::Device,
    missing: Vec<String>,
    misshaped: Vec<String>,
}

impl<'a, B: Backend> Taker<'a, B> {
    fn take<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Tensor<B, D> {
        match self.map.remove(name) {
            Some(t) if t.shape == shape => t.to_tensor(self.device),
            Some(t) => {
                self.misshaped
                    .push(format!("{name}: expected {shape:?}, found {:?}", t.shape));
                Tensor::zeros(shape, self.device)
            }
            None => {
                self.missing.push(format!("{name} {shape:?}"));
                Tensor::zeros(shape, self.device)
            }
        }
    }

    fn param<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Param<Tensor<B, D>> {
        Param::from_tensor(self.take(name, shape))
    }

    /// A linear from PyTorch layout `[out, in]`.
    fn linear(&mut self, name: &str, d_in: usize, d_out: usize, bias: bool) -> Linear<B> {
        let w = self
            .take(&format!("{name}.weight"), [d_out, d_in])
            .transpose();
        Linear {
            weight: Param::from_tensor(w),
            bias: bias.then(|| self.param(&format!("{name}.bias"), [d_out])),
        }
    }

    fn norm(&mut self, name: &str, d: usize) -> LayerNorm<B> {
        let mut n = LayerNormConfig::new(d)
            .with_epsilon(LN_EPS)
            .init(self.device);
        n.gamma = self.param(&format!("{name}.weight"), [d]);
        n.beta = Some(self.param(&format!("{name}.bias"), [d]));
        n
    }
}

/// Builds a ViT from timm-layout tensors; strict about names and shapes.
pub fn vit_from_tensors<B: Backend>(
    cfg: &VitConfig,
    map: TensorMap,
    device: &B::Device,
) -> Result<Vit<B>> {
    cfg.validate()?;
    let [c, p, d] = [cfg.in_chans, cfg.patch_size, cfg.embed_dim];
    let hidden = cfg.mlp_hidden();
    let mut t = Taker::<B> {
        map,
        device,
        missing: vec![],
        misshaped: vec![],
    };
    let pw = t
        .take("patch_embed.proj.weight", [d, c, p, p])
        .reshape([d, c * p * p])
        .transpose();
    let patch_embed = PatchEmbed {
        proj: Linear {
            weight: Param::from_tensor(pw),
            bias: Some(t.param("patch_embed.proj.bias", [d])),
        },
        patch: p,
    };
    let cls_token = cfg.class_token.then(|| t.param("cls_token", [1, 1, d]));
    let reg_token = (cfg.reg_tokens > 0).then(|| t.param("reg_token", [1, cfg.reg_tokens, d]));
    let pos_embed = t.param("pos_embed", [1, cfg.pos_embed_len(), d]);
    let blocks = (0..cfg.depth)
        .map(|i| {
            let pre = format!("blocks.{i}");
            Block {
                norm1: t.norm(&format!("{pre}.norm1"), d),
                attn: Attention {
                    qkv: t.linear(&format!("{pre}.attn.qkv"), d, 3 * d, cfg.qkv_bias),
                    proj: t.linear(&format!("{pre}.attn.proj"), d, d, true),
                    num_heads: cfg.num_heads,
                },
                norm2: t.norm(&format!("{pre}.norm2"), d),
                mlp: Mlp {
                    fc1: t.linear(&format!("{pre}.mlp.fc1"), d, hidden, true),
                    fc2: t.linear(&format!("{pre}.mlp.fc2"), hidden, d, true),
                },
            }
        })
        .collect();
    let fc = cfg.use_fc_norm();
    let norm = (!fc).then(|| t.norm("norm", d));
    let fc_norm = fc.then(|| t.norm("fc_norm", d));
    let head = t.linear("head", d, cfg.num_classes, true);
    let unexpected: Vec<String> = t.map.keys().cloned().collect();
    if !t.missing.is_empty() || !t.misshaped.is_empty() || !unexpected.is_empty() {
        let mut parts = vec![];
        if !t.missing.is_empty() {
            parts.push(format!("missing tensors: {}", t.missing.join(", ")));
        }
        if !unexpected.is_empty() {
            parts.push(format!("unexpected tensors: {}", unexpected.join(", ")));
        }
        if !t.misshaped.is_empty() {
            parts.push(format!("mis-shaped tensors: {}", t.misshaped.join("; ")));
        }
        return Err(Error::Checkpoint(parts.join("; ")));
    }
    Ok(Vit {
        mean: channel_constant(&cfg.mean, device),
        std: channel_constant(&cfg.std, device),
        patch_embed,
        cls_token,
        reg_token,
        pos_embed,
        blocks,
        norm,
        fc_norm,
        head,
        avg_pool: cfg.global_pool == GlobalPool::Avg,
        num_prefix: cfg.num_prefix_tokens(),
        no_embed_class: cfg.no_embed_class,
    })
}

/// Changes applied while loading a checkpoint for another task.
#[derive(Clone, Debug, Default)]
pub struct Adapt {
    /// New input size (position embeddings are resampled to the new grid).
    pub img_size: Option<[usize; 2]>,
    /// New patch size (patch kernels are PI-resized, position embeddings resampled).
    pub patch_size: Option<usize>,
    /// New class count (the head is re-initialised).
    pub num_classes: Option<usize>,
    /// New mean/std (e.g. for a dataset with other statistics).
    pub mean_std: Option<(Vec<f32>, Vec<f32>)>,
    /// Class names for the new head.
    pub label_names: Option<Vec<String>>,
    /// Seed for a re-initialised head.
    pub seed: u64,
}

/// timm's `checkpoint_filter_fn` for our needs: returns the new config and tensors.
pub fn adapt(cfg: &VitConfig, mut map: TensorMap, a: &Adapt) -> Result<(VitConfig, TensorMap)> {
    let mut new = cfg.clone();
    if let Some(s) = a.img_size {
        new.img_size = s;
    }
    if let Some(p) = a.patch_size {
        new.patch_size = p;
    }
    if let Some((m, s)) = &a.mean_std {
        new.mean = m.clone();
        new.std = s.clone();
    }
    if let Some(n) = &a.label_names {
        new.label_names = Some(n.clone());
    }
    let classes_changed = a.num_classes.is_some_and(|n| n != cfg.num_classes);
    if let Some(n) = a.num_classes {
        new.num_classes = n;
        if classes_changed && a.label_names.is_none() {
            new.label_names = None;
        }
    }
    new.validate()?;
    let d = cfg.embed_dim;
    if new.patch_size != cfg.patch_size
        && let Some(w) = map.get_mut("patch_embed.proj.weight")
    {
        let data = resample_patch_kernel(&w.data, cfg.patch_size, new.patch_size);
        *w = HostTensor::new(vec![d, cfg.in_chans, new.patch_size, new.patch_size], data);
    }
    if new.grid() != cfg.grid()
        && let Some(pe) = map.get_mut("pos_embed")
    {
        let prefix = if cfg.no_embed_class {
            0
        } else {
            cfg.num_prefix_tokens()
        };
        let data = resample_pos_embed(&pe.data, d, prefix, cfg.grid(), new.grid());
        *pe = HostTensor::new(vec![1, new.pos_embed_len(), d], data);
    }
    if classes_changed {
        let k = new.num_classes;
        let mut rng = crate::rng::Rng::new(a.seed ^ 0x4845_4144);
        let w = (0..k * d).map(|_| rng.normal() * 0.02).collect();
        map.insert("head.weight".into(), HostTensor::new(vec![k, d], w));
        map.insert("head.bias".into(), HostTensor::new(vec![k], vec![0.0; k]));
    }
    Ok((new, map))
}

/// A checkpoint read into memory: config plus tensors, before building on a device.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The architecture and preprocessing.
    pub config: VitConfig,
    /// timm-layout tensors.
    pub tensors: TensorMap,
}

impl Checkpoint {
    /// Parses `config.json` text and `model.safetensors` bytes (works without a file system).
    pub fn from_bytes(config_json: &str, safetensors: &[u8]) -> Result<Self> {
        Ok(Self {
            config: VitConfig::from_hub_json(config_json)?,
            tensors: crate::host_tensor::read_safetensors(safetensors)?,
        })
    }

    /// Captures a live model.
    pub fn from_vit<B: Backend>(config: &VitConfig, vit: &Vit<B>) -> Self {
        Self {
            config: config.clone(),
            tensors: vit_to_tensors(vit, config),
        }
    }

    /// Applies [`adapt`].
    pub fn adapt(self, a: &Adapt) -> Result<Self> {
        let (config, tensors) = adapt(&self.config, self.tensors, a)?;
        Ok(Self { config, tensors })
    }

    /// Builds the model on a device (strict).
    pub fn build<B: Backend>(&self, device: &B::Device) -> Result<Vit<B>> {
        vit_from_tensors(&self.config, self.tensors.clone(), device)
    }

    /// `model.safetensors` bytes.
    pub fn safetensors_bytes(&self) -> Result<Vec<u8>> {
        crate::host_tensor::write_safetensors(&self.tensors)
    }
}

#[cfg(feature = "native")]
mod fs {
    use std::path::Path;

    use super::*;
    use crate::io::{read, write_atomic};

    impl Checkpoint {
        /// Reads a hub folder (`config.json` + `model.safetensors`).
        pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
            let dir = dir.as_ref();
            let cfg = read(dir.join("config.json"))?;
            let cfg = String::from_utf8(cfg).map_err(|_| {
                Error::Config(format!("{}/config.json is not UTF-8", dir.display()))
            })?;
            let st = read(dir.join("model.safetensors"))?;
            Self::from_bytes(&cfg, &st).map_err(|e| e.within(&dir.display().to_string()))
        }

        /// Writes a hub folder atomically file by file (`model.safetensors`, then `config.json`).
        pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
            let dir = dir.as_ref();
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            write_atomic(dir.join("model.safetensors"), &self.safetensors_bytes()?)?;
            write_atomic(
                dir.join("config.json"),
                self.config.to_hub_json().as_bytes(),
            )
        }
    }

    /// Loads a hub folder onto a device, adapting it first.
    pub fn load_vit<B: Backend>(
        dir: impl AsRef<Path>,
        a: &Adapt,
        device: &B::Device,
    ) -> Result<(VitConfig, Vit<B>)> {
        let ck = Checkpoint::load(dir)?.adapt(a)?;
        let vit = ck.build(device)?;
        Ok((ck.config, vit))
    }

    /// Saves a model as a hub folder.
    pub fn save_vit<B: Backend>(
        dir: impl AsRef<Path>,
        cfg: &VitConfig,
        vit: &Vit<B>,
    ) -> Result<()> {
        Checkpoint::from_vit(cfg, vit).save(dir)
    }
}

#[cfg(feature = "native")]
pub use fs::{load_vit, save_vit};
