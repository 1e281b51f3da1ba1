//! The models a run offers: the undefended backbone, each defense's generated LoRA,
//! each merge, or (for baselines) the tuned model; and model specs on the command line
//! (`DIR` for a timm checkpoint, `RUN_DIR#variant` for a run).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::attack::Classifier;
use crate::checkpoint::{Adapt, Checkpoint, load_vit};
use crate::config::VitConfig;
use crate::error::{Error, Result};
use crate::host_tensor::{
    TensorMap, read_safetensors, read_safetensors_metadata, write_safetensors_with,
};
use crate::io::{read, write_atomic};
use crate::merge::{DenseDeltas, MergeStrategy, Uniform, by_name, fold};
pub use crate::tune::Variant;
use crate::tune::{RunDir, TuneKind};
use crate::vit::{Adapters, Target, Vit};

mod merge_request;
pub use merge_request::{MergeOutcome, MergeRequest};

/// A ready-to-run model: a plain ViT, plus adapters only where they cannot be folded
/// (FullLoRA's LayerNorm-input LoRA).
#[derive(Debug)]
pub struct VariantModel<B: Backend> {
    /// Architecture and preprocessing.
    pub config: VitConfig,
    /// The (folded) ViT.
    pub vit: Vit<B>,
    /// Unfoldable adapters, if any.
    pub adapters: Option<Adapters<B>>,
}

impl<B: Backend> VariantModel<B> {
    /// The same model with nothing left to train: every parameter stops requiring a
    /// gradient and the adapters are cut from the graph. A run's head (and FullLoRA's
    /// adapters) load trainable; evaluated as they are, every attack step's backward
    /// would also compute and keep gradients for them, though only the input's is used.
    pub fn frozen(self) -> Self {
        Self {
            config: self.config,
            vit: self.vit.no_grad(),
            adapters: self.adapters.map(|a| a.detach()),
        }
    }
}

impl<B: Backend> Classifier<B> for VariantModel<B> {
    fn logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        match &self.adapters {
            Some(a) => self.vit.forward_with(x, a),
            None => self.vit.forward(x),
        }
    }
}

/// Saves a merge's dense deltas (`blocks.{l}.{target}.delta`) with metadata.
pub fn save_merge(
    run: &RunDir,
    name: &str,
    deltas: &DenseDeltas,
    meta: HashMap<String, String>,
) -> Result<PathBuf> {
    let map: TensorMap = deltas
        .iter()
        .map(|((l, t), d)| (format!("blocks.{l}.{}.delta", t.path()), d.clone()))
        .collect();
    let path = run.merge_path(name);
    write_atomic(&path, &write_safetensors_with(&map, Some(meta))?)?;
    Ok(path)
}

/// Loads a saved merge.
pub fn load_merge(run: &RunDir, name: &str) -> Result<(DenseDeltas, HashMap<String, String>)> {
    let bytes = read(run.merge_path(name))?;
    let mut out = DenseDeltas::new();
    for (k, v) in read_safetensors(&bytes)? {
        let parsed = k
            .strip_prefix("blocks.")
            .and_then(|r| r.strip_suffix(".delta"))
            .and_then(|r| r.split_once('.'))
            .and_then(|(l, t)| {
                Some((
                    l.parse::<usize>().ok()?,
                    Target::ALL.into_iter().find(|x| x.path() == t)?,
                ))
            });
        let key = parsed.ok_or_else(|| {
            Error::Checkpoint(format!("merge file has an unexpected tensor `{k}`"))
        })?;
        out.insert(key, v);
    }
    Ok((out, read_safetensors_metadata(&bytes)?))
}

/// Builds one variant of the run in `run`, frozen (see [`VariantModel::frozen`]).
pub fn build<B: AutodiffBackend>(
    run: &RunDir,
    variant: &Variant,
    device: &B::Device,
) -> Result<VariantModel<B>> {
    build_unfrozen(run, variant, device).map(VariantModel::frozen)
}

fn build_unfrozen<B: AutodiffBackend>(
    run: &RunDir,
    variant: &Variant,
    device: &B::Device,
) -> Result<VariantModel<B>> {
    let shown = run.path().display();
    if *variant == Variant::Base {
        let (config, vit) = load_vit::<B>(run.backbone_dir(), &Adapt::default(), device)?;
        return Ok(VariantModel {
            config,
            vit,
            adapters: None,
        });
    }
    let (info, config, model, step) = run.load_model::<B>(device)?;
    if step == 0 {
        return Err(Error::Invalid(format!("run {shown} has no checkpoint yet")));
    }
    let kind = info.config.kind;
    let methods = &info.config.methods;
    let folded = |deltas: &DenseDeltas| -> Result<VariantModel<B>> {
        Ok(VariantModel {
            config: config.clone(),
            vit: fold(model.vit.clone(), deltas)?,
            adapters: None,
        })
    };
    match variant {
        Variant::Tuned if kind == TuneKind::Hyperat => Err(Error::Invalid(
            "a HyperAT run offers method:NAME and merged:STRATEGY variants".into(),
        )),
        Variant::Tuned | Variant::Method(_) if kind != TuneKind::Hyperat => {
            if let Variant::Method(m) = variant
                && !methods.contains(m)
            {
                return Err(Error::Invalid(format!(
                    "run {shown} trained with {methods:?}, not `{m}`"
                )));
            }
            match kind {
                TuneKind::LoraAt => folded(&Uniform.merge(&model.method_loras(methods))?),
                TuneKind::FullLoraAt => {
                    let adapters = model.adapters(0);
                    Ok(VariantModel {
                        config,
                        vit: model.vit,
                        adapters,
                    })
                }
                _ => Ok(VariantModel {
                    config,
                    vit: model.vit,
                    adapters: None,
                }),
            }
        }
        Variant::Method(m) => {
            let i = methods.iter().position(|x| x == m).ok_or_else(|| {
                Error::Invalid(format!(
                    "run {shown} has no method `{m}` (it has {methods:?})"
                ))
            })?;
            let one = model.method_loras(methods).swap_remove(i);
            folded(&Uniform.merge(&[one])?)
        }
        Variant::Merged(s) => {
            if kind != TuneKind::Hyperat {
                return Err(Error::Invalid(
                    "merged variants exist for HyperAT runs only".into(),
                ));
            }
            let deltas = if run.merge_path(s).exists() {
                load_merge(run, s)?.0
            } else {
                by_name(s, None, None, info.config.seed)?.merge(&model.method_loras(methods))?
            };
            folded(&deltas)
        }
        Variant::Tuned | Variant::Base => unreachable!("handled above"),
    }
}

/// Loads a model spec: a timm checkpoint folder, or `RUN_DIR[#VARIANT]` (default variant:
/// `merged:uniform` for HyperAT runs, `tuned` for baselines), frozen for evaluation.
pub fn load_spec<B: AutodiffBackend>(spec: &str, device: &B::Device) -> Result<VariantModel<B>> {
    let (path, variant) = match spec.split_once('#') {
        Some((p, v)) => (PathBuf::from(p), Some(v.parse::<Variant>()?)),
        None => (PathBuf::from(spec), None),
    };
    if RunDir::is_run(&path) {
        let run = RunDir::open(&path)?;
        let variant = match variant {
            Some(v) => v,
            None => run.default_variant()?,
        };
        return build::<B>(&run, &variant, device);
    }
    if variant.is_some() {
        return Err(Error::Invalid(format!(
            "{} is not a run folder (no run.json); variants need a run",
            path.display()
        )));
    }
    let (config, vit) = load_vit::<B>(&path, &Adapt::default(), device)?;
    Ok(VariantModel {
        config,
        vit,
        adapters: None,
    }
    .frozen())
}

/// The dataset the model in `spec` was trained on, where it can be told: a run's
/// `run.json`, a pretraining folder's `pretrain.json`, else a 1×28×28 input means
/// Fashion-MNIST (the shipped backbones). What evaluations default to.
pub fn trained_on(spec: &str, config: &VitConfig) -> Option<String> {
    let dir = Path::new(spec.split('#').next().unwrap_or(spec));
    if let Some(info) = RunDir::open(dir).ok().and_then(|r| r.info().ok()) {
        return Some(info.dataset);
    }
    if let Ok(req) = crate::train::PretrainRequest::read(dir) {
        return Some(req.dataset);
    }
    (config.in_chans == 1 && config.img_size == [28, 28]).then(|| "fashion-mnist".to_string())
}

/// A timm checkpoint of a variant (refuses unfoldable variants).
pub fn export<B: Backend>(v: &VariantModel<B>) -> Result<Checkpoint> {
    if v.adapters.is_some() {
        return Err(Error::Invalid(
            "this variant has LayerNorm-input LoRA (FullLoRA-AT), which cannot be folded into plain ViT weights".into(),
        ));
    }
    Ok(Checkpoint::from_vit(&v.config, &v.vit))
}
