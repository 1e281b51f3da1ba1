//! AdamW with global gradient-norm clipping and a state keyed by parameter path.
//!
//! PyTorch semantics: `clip_grad_norm_` over all trainable tensors (coefficient
//! `max_norm / (norm + 1e-6)`, capped at 1), then decoupled weight decay
//! `p ← p − lr·wd·p` and the bias-corrected Adam update. burn's own optimiser clips each
//! tensor separately and keys its state by random parameter ids; ours clips globally
//! (method.md §4) and names its moments like the parameters, so a checkpointed run
//! resumes to bit-identical weights.

use std::collections::BTreeMap;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::host::{HostTensor, TensorMap};
use crate::state::Path;

/// AdamW hyper-parameters (PyTorch's defaults, weight decay 0 as method.md gives for the
/// hypernetwork side).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// First-moment decay (0.9).
    pub beta1: f64,
    /// Second-moment decay (0.999).
    pub beta2: f64,
    /// Denominator epsilon (1e-8).
    pub eps: f64,
    /// Decoupled weight decay (0).
    pub weight_decay: f64,
    /// Global gradient-norm clip (1.0); `None` disables it.
    pub max_grad_norm: Option<f64>,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: Some(1.0),
        }
    }
}

/// The optimiser and its state.
#[derive(Debug)]
pub struct AdamW<B: AutodiffBackend> {
    /// Hyper-parameters.
    pub config: AdamWConfig,
    /// Updates taken.
    pub t: usize,
    m: BTreeMap<String, Tensor<B::InnerBackend, 1>>,
    v: BTreeMap<String, Tensor<B::InnerBackend, 1>>,
}

/// What one step saw.
#[derive(Clone, Copy, Debug)]
pub struct StepInfo {
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Trainable tensors that received a gradient.
    pub updated: usize,
}

struct Grads<'a, B: AutodiffBackend> {
    path: Path,
    grads: &'a B::Gradients,
    found: BTreeMap<String, Tensor<B::InnerBackend, 1>>,
    sq: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Grads<'_, B> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !param.is_require_grad() {
            return;
        }
        if let Some(g) = param.val().grad(self.grads) {
            let flat = g.flatten::<1>(0, D - 1);
            let s = flat.clone().powi_scalar(2).sum();
            self.sq = Some(match self.sq.take() {
                Some(acc) => acc + s,
                None => s,
            });
            self.found.insert(self.path.joined(), flat);
        }
    }
}

struct Update<'a, B: AutodiffBackend> {
    path: Path,
    opt: &'a mut AdamW<B>,
    grads: BTreeMap<String, Tensor<B::InnerBackend, 1>>,
    lr: f64,
    clip: f64,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Update<'_, B> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let name = self.path.joined();
        let Some(g) = self.grads.remove(&name) else {
            return param;
        };
        let c = &self.opt.config;
        let t = self.opt.t as i32;
        let g = if self.clip < 1.0 {
            g.mul_scalar(self.clip)
        } else {
            g
        };
        let m = match self.opt.m.remove(&name) {
            Some(m) => m.mul_scalar(c.beta1) + g.clone().mul_scalar(1.0 - c.beta1),
            None => g.clone().mul_scalar(1.0 - c.beta1),
        };
        let v = match self.opt.v.remove(&name) {
            Some(v) => v.mul_scalar(c.beta2) + g.powi_scalar(2).mul_scalar(1.0 - c.beta2),
            None => g.powi_scalar(2).mul_scalar(1.0 - c.beta2),
        };
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        let (id, value, mapper) = param.consume();
        let shape = value.shape();
        let p = value.inner().flatten::<1>(0, D - 1);
        let p = if c.weight_decay > 0.0 {
            p.mul_scalar(1.0 - self.lr * c.weight_decay)
        } else {
            p
        };
        let denom = v.clone().div_scalar(bc2).sqrt().add_scalar(c.eps);
        let p = p - m.clone().div(denom).mul_scalar(self.lr / bc1);
        self.opt.m.insert(name.clone(), m);
        self.opt.v.insert(name, v);
        let new = Tensor::<B, D>::from_inner(p.reshape(shape)).require_grad();
        Param::from_mapped_value(id, new, mapper)
    }
}

impl<B: AutodiffBackend> AdamW<B> {
    /// A fresh optimiser.
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            t: 0,
            m: BTreeMap::new(),
            v: BTreeMap::new(),
        }
    }

    /// One update of every trainable parameter of `module` that has a gradient in
    /// `grads`, with learning rate `lr`.
    pub fn step<M: AutodiffModule<B>>(
        &mut self,
        lr: f64,
        module: M,
        grads: &B::Gradients,
    ) -> (M, StepInfo) {
        let mut gv = Grads::<B> {
            path: Path::default(),
            grads,
            found: BTreeMap::new(),
            sq: None,
        };
        module.visit(&mut gv);
        let norm = gv
            .sq
            .map(|s| s.into_scalar().elem::<f64>().sqrt())
            .unwrap_or(0.0);
        let clip = match self.config.max_grad_norm {
            Some(max) => (max / (norm + 1e-6)).min(1.0),
            None => 1.0,
        };
        let updated = gv.found.len();
        self.t += 1;
        let mut up = Update {
            path: Path::default(),
            opt: self,
            grads: gv.found,
            lr,
            clip,
        };
        let module = module.map(&mut up);
        (
            module,
            StepInfo {
                grad_norm: norm,
                updated,
            },
        )
    }

    /// The moments as named tensors (`m.<path>`, `v.<path>`).
    pub fn state(&self) -> TensorMap {
        let mut out = TensorMap::new();
        for (prefix, map) in [("m", &self.m), ("v", &self.v)] {
            for (k, t) in map {
                out.insert(format!("{prefix}.{k}"), HostTensor::from_tensor(t.clone()));
            }
        }
        out
    }

    /// Restores the moments and step count written by [`AdamW::state`].
    pub fn load_state(&mut self, t: usize, state: &TensorMap, device: &B::Device) -> Result<()> {
        self.t = t;
        self.m.clear();
        self.v.clear();
        for (k, v) in state {
            let tensor = v.to_tensor::<B::InnerBackend, 1>(device);
            match k.split_once('.') {
                Some(("m", name)) => self.m.insert(name.to_string(), tensor),
                Some(("v", name)) => self.v.insert(name.to_string(), tensor),
                _ => {
                    return Err(Error::Checkpoint(format!(
                        "optimiser state has an unexpected tensor `{k}`"
                    )));
                }
            };
        }
        Ok(())
    }
}
