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
use crate::host_tensor::{HostTensor, TensorMap};
use crate::named_params::Path;

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

/// A parameter group: the parameters whose path starts with `prefix` train at
/// `lr_scale` times the scheduled learning rate with their own weight decay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupRule {
    /// Dotted path prefix (`hyper.method_embed`, `vit.head`, …).
    pub prefix: String,
    /// Multiplies the learning rate.
    pub lr_scale: f64,
    /// Decoupled weight decay of the group (`None`: the optimiser's).
    pub weight_decay: Option<f64>,
}

/// The optimiser and its state.
#[derive(Debug)]
pub struct AdamW<B: AutodiffBackend> {
    /// Hyper-parameters.
    pub config: AdamWConfig,
    /// Parameter groups, first match wins; parameters in none use the defaults.
    pub groups: Vec<GroupRule>,
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
        let rule = self.opt.groups.iter().find(|g| name.starts_with(&g.prefix));
        let lr = self.lr * rule.map_or(1.0, |g| g.lr_scale);
        let weight_decay = rule.and_then(|g| g.weight_decay).unwrap_or(c.weight_decay);
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
        let p = if weight_decay > 0.0 {
            p.mul_scalar(1.0 - lr * weight_decay)
        } else {
            p
        };
        let denom = v.clone().div_scalar(bc2).sqrt().add_scalar(c.eps);
        let p = p - m.clone().div(denom).mul_scalar(lr / bc1);
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
            groups: vec![],
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

#[cfg(test)]
mod tests {
    use burn::nn::Linear;

    use super::*;
    use crate::backend::CpuAutodiff;
    use crate::named_params::named_tensors;

    type A = CpuAutodiff;

    /// PyTorch's `torch.optim.AdamW` step for one tensor, in f64.
    fn reference_step(
        p: &mut [f64],
        g: &[f64],
        m: &mut [f64],
        v: &mut [f64],
        t: i32,
        lr: f64,
        wd: f64,
    ) {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        for i in 0..p.len() {
            p[i] *= 1.0 - lr * wd;
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            let mh = m[i] / (1.0 - b1.powi(t));
            let vh = v[i] / (1.0 - b2.powi(t));
            p[i] -= lr * mh / (vh.sqrt() + eps);
        }
    }

    /// Two steps on `loss = Σ (W x + b)²` with global clipping and a parameter group
    /// (the bias at 3× the learning rate, without decay) match the reference.
    #[test]
    fn matches_pytorch_adamw_with_clipping_and_groups() {
        let dev = Default::default();
        let w0 = [0.5f32, -1.0, 2.0, 0.25, -0.75, 1.5];
        let b0 = [0.1f32, -0.2];
        let mut lin = Linear::<A> {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(w0.to_vec(), [3, 2]),
                &dev,
            )),
            bias: Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(b0.to_vec(), [2]),
                &dev,
            ))),
        };
        let x = [1.0f64, -2.0, 0.5];
        let mut opt = AdamW::<A>::new(AdamWConfig {
            weight_decay: 0.1,
            max_grad_norm: Some(1.0),
            ..Default::default()
        });
        opt.groups = vec![GroupRule {
            prefix: "bias".into(),
            lr_scale: 3.0,
            weight_decay: Some(0.0),
        }];
        let (mut w, mut b): (Vec<f64>, Vec<f64>) = (
            w0.iter().map(|v| *v as f64).collect(),
            b0.iter().map(|v| *v as f64).collect(),
        );
        let (mut mw, mut vw, mut mb, mut vb) =
            (vec![0.0; 6], vec![0.0; 6], vec![0.0; 2], vec![0.0; 2]);
        for (t, lr) in [(1, 0.01), (2, 0.02)] {
            let xt = Tensor::<A, 2>::from_data(
                TensorData::new(x.iter().map(|v| *v as f32).collect::<Vec<_>>(), [1, 3]),
                &dev,
            );
            let loss = lin.forward(xt).powi_scalar(2).sum();
            let grads = loss.backward();
            lin = opt.step(lr, lin, &grads).0;
            // Reference: y_j = Σ_i x_i W[i][j] + b_j; dL/dW[i][j] = 2 y_j x_i, dL/db_j = 2 y_j.
            let y: Vec<f64> = (0..2)
                .map(|j| (0..3).map(|i| x[i] * w[i * 2 + j]).sum::<f64>() + b[j])
                .collect();
            let gw: Vec<f64> = (0..6).map(|k| 2.0 * y[k % 2] * x[k / 2]).collect();
            let gb: Vec<f64> = y.iter().map(|v| 2.0 * v).collect();
            let norm = gw.iter().chain(&gb).map(|g| g * g).sum::<f64>().sqrt();
            let c = (1.0 / (norm + 1e-6)).min(1.0);
            let gw: Vec<f64> = gw.iter().map(|g| g * c).collect();
            let gb: Vec<f64> = gb.iter().map(|g| g * c).collect();
            reference_step(&mut w, &gw, &mut mw, &mut vw, t, lr, 0.1);
            reference_step(&mut b, &gb, &mut mb, &mut vb, t, 3.0 * lr, 0.0);
        }
        let got = named_tensors(&lin);
        for (name, want) in [("weight", &w), ("bias", &b)] {
            for (g, r) in got[name].data.iter().zip(want.iter()) {
                assert!((*g as f64 - r).abs() < 1e-6, "{name}: {g} vs {r}");
            }
        }
    }
}
