//! FAB-T (Croce & Hein, ICML 2020), targeted, L-inf: the minimal-perturbation attack
//! that linearises the decision boundary towards a target class and projects onto it,
//! biased back towards the clean image.
//!
//! A port of AutoAttack's `fab_base.py` / `fab_pt.py` (targeted, Linf) with its
//! `projection_linf`: 100 iterations, `eta` 1.05, `beta` 0.9, `alpha_max` 0.1; targets
//! are the classes ranked 2nd … 10th on the clean input; the first restart starts at the
//! clean point, later ones at a random point. A point counts as broken only when the
//! smallest adversarial perturbation found is within eps.

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde_json::json;

use super::apgd::{correct, host_bool, host_f32, on_robust};
use super::{Attack, Classifier, inner_logits, inner_predict};
use crate::rng::Rng;

/// Targeted FAB.
#[derive(Clone, Debug)]
pub struct FabT {
    /// L-inf radius (a success needs a perturbation within it).
    pub eps: f32,
    /// Iterations per run (100).
    pub n_iter: usize,
    /// Target classes tried (9 in AutoAttack).
    pub n_target_classes: usize,
    /// Runs per target (the first from the clean point).
    pub restarts: usize,
}

const ETA: f32 = 1.05;
const BETA: f32 = 0.9;
const ALPHA_MAX: f32 = 0.1;

/// AutoAttack's `projection_linf` for one point: the smallest L-inf step `d` (within the
/// box [0,1] − t) with `w·(t + d) = b`, or the box corner nearest to it.
pub(crate) fn projection_linf(t: &[f32], w: &[f32], b: f32) -> Vec<f32> {
    let n = t.len();
    let wt: f32 = w.iter().zip(t).map(|(a, b)| a * b).sum();
    let sign = if wt - b >= 0.0 { 1.0 } else { -1.0 };
    let w: Vec<f32> = w.iter().map(|v| v * sign).collect();
    let b = b * sign;
    let a: Vec<f32> = w.iter().map(|&v| f32::from(u8::from(v < 0.0))).collect();
    let mut d: Vec<f32> = (0..n)
        .map(|i| if w[i] != 0.0 { a[i] - t[i] } else { 0.0 })
        .collect();
    let p: Vec<f32> = (0..n).map(|i| a[i] - t[i] * (2.0 * a[i] - 1.0)).collect();
    let mut indp: Vec<usize> = (0..n).collect();
    indp.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    let bb = b - w.iter().zip(t).map(|(x, y)| x * y).sum::<f32>();
    let b0: f32 = w.iter().zip(&d).map(|(x, y)| x * y).sum();
    let (mut s, mut sb) = (vec![0f32; n], vec![0f32; n]);
    let (mut acc_s, mut acc_b) = (0f32, b0);
    for j in 0..n {
        let i = indp[n - 1 - j];
        acc_s += w[i].abs();
        acc_b += -w[i] * d[i];
        s[j] = acc_s;
        sb[j] = acc_b;
    }
    let b2 = sb[n - 1] - s[n - 1] * p[indp[0]];
    let c_l = bb - b2 > 0.0;
    let c2 = (bb - b0 > 0.0) && !c_l;
    if c_l {
        let lmbd = ((bb - sb[n - 1]) / -s[n - 1]).max(0.0);
        for i in 0..n {
            d[i] = (2.0 * a[i] - 1.0) * lmbd;
        }
    } else if c2 {
        let (mut lb, mut ub) = (0f32, (n - 1) as f32);
        for _ in 0..(n as f64).log2().ceil() as usize {
            let c4 = ((lb + ub) / 2.0).floor();
            let k = c4 as usize;
            let cur = indp[n - 1 - k];
            if bb - (sb[k] - s[k] * p[cur]) > 0.0 {
                lb = c4;
            } else {
                ub = c4;
            }
        }
        let k = lb as usize;
        let lmbd = ((bb - sb[k]) / -s[k]).max(0.0);
        for i in 0..n {
            d[i] = lmbd.min(d[i]) * a[i] + (-lmbd).max(d[i]) * (1.0 - a[i]);
        }
    }
    for i in 0..n {
        if w[i] == 0.0 {
            d[i] = 0.0;
        }
    }
    d
}

impl FabT {
    /// `f_target − f_y` per sample and its input gradient (the hyperplane to project on).
    fn diff_and_grad<B: AutodiffBackend>(
        model: &dyn Classifier<B>,
        x: &[f32],
        dims: [usize; 4],
        y: &Tensor<B::InnerBackend, 1, Int>,
        target: &Tensor<B::InnerBackend, 1, Int>,
        device: &B::Device,
    ) -> (Vec<f32>, Vec<f32>) {
        let n = dims[0];
        let xa =
            Tensor::<B, 4>::from_data(TensorData::new(x.to_vec(), dims), device).require_grad();
        let logits = model.logits(xa.clone());
        let pick = |idx: &Tensor<B::InnerBackend, 1, Int>| {
            logits
                .clone()
                .gather(
                    1,
                    Tensor::<B, 1, Int>::from_inner(idx.clone()).reshape([n, 1]),
                )
                .reshape([n])
        };
        let diff = pick(target) - pick(y);
        let g = xa
            .grad(&diff.clone().sum().backward())
            .expect("input gradient");
        (host_f32(diff.inner()), host_f32(g))
    }

    /// One run towards `target`: the smallest-L-inf adversarial points found (the clean
    /// point where none) and their L-inf sizes (`1e10` where none).
    fn single_run<B: AutodiffBackend>(
        &self,
        model: &dyn Classifier<B>,
        x: &Tensor<B::InnerBackend, 4>,
        y: &Tensor<B::InnerBackend, 1, Int>,
        target: &Tensor<B::InnerBackend, 1, Int>,
        random_start: bool,
        rng: &mut Rng,
    ) -> Vec<f32> {
        let dims = x.dims();
        let (n, per) = (dims[0], dims[1] * dims[2] * dims[3]);
        let device = x.device();
        let x0 = host_f32(x.clone());
        let mut adv = x0.clone();
        let mut res = vec![1e10f32; n];
        let mut x1 = x0.clone();
        if random_start {
            for s in 0..n {
                let t = rng.uniform_vec(per, -1.0, 1.0);
                let m = t.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-12);
                let r = res[s].min(self.eps);
                for i in 0..per {
                    x1[s * per + i] = (x0[s * per + i] + r * t[i] / m * 0.5).clamp(0.0, 1.0);
                }
            }
        }
        for _ in 0..self.n_iter {
            if model.stopped() {
                break;
            }
            let (df, dg) = Self::diff_and_grad::<B>(model, &x1, dims, y, target, &device);
            for s in 0..n {
                let (xs, gs) = (
                    x1[s * per..(s + 1) * per].to_vec(),
                    &dg[s * per..(s + 1) * per],
                );
                // Hyperplane w·z = b through the linearisation of f_target − f_y = 0 at x1.
                let b = -df[s] + gs.iter().zip(&xs).map(|(g, v)| g * v).sum::<f32>();
                let d1 = projection_linf(&xs, gs, b);
                let d2 = projection_linf(&x0[s * per..(s + 1) * per], gs, b);
                let a1 = d1.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-8);
                let a2 = d2.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-8);
                let alpha = (a1 / (a1 + a2)).clamp(0.0, ALPHA_MAX);
                for i in 0..per {
                    let orig = x0[s * per + i];
                    let v = (xs[i] + ETA * d1[i]) * (1.0 - alpha) + (orig + d2[i] * ETA) * alpha;
                    x1[s * per + i] = v.clamp(0.0, 1.0);
                }
            }
            let t =
                Tensor::<B::InnerBackend, 4>::from_data(TensorData::new(x1.clone(), dims), &device);
            let fooled: Vec<bool> = correct(model, &t, y).into_iter().map(|c| !c).collect();
            for s in (0..n).filter(|&s| fooled[s]) {
                let row = s * per..(s + 1) * per;
                let size = x1[row.clone()]
                    .iter()
                    .zip(&x0[row.clone()])
                    .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
                if size < res[s] {
                    res[s] = size;
                    adv[row.clone()].copy_from_slice(&x1[row.clone()]);
                }
                for i in row {
                    x1[i] = x0[i] + (x1[i] - x0[i]) * BETA;
                }
            }
        }
        adv
    }
}

impl<B: AutodiffBackend> Attack<B> for FabT {
    fn name(&self) -> &'static str {
        "fab-t"
    }

    fn settings(&self) -> serde_json::Value {
        json!({"name": "fab-t", "eps": self.eps, "n_iter": self.n_iter, "n_target_classes": self.n_target_classes,
               "restarts": self.restarts, "eta": ETA, "beta": BETA, "alpha_max": ALPHA_MAX, "norm": "Linf"})
    }

    fn perturb(
        &self,
        model: &dyn Classifier<B>,
        x: Tensor<B::InnerBackend, 4>,
        y: Tensor<B::InnerBackend, 1, Int>,
        rng: &mut Rng,
    ) -> Tensor<B::InnerBackend, 4> {
        let mut robust = correct(model, &x, &y);
        let mut adv = host_f32(x.clone());
        let classes = inner_logits(model, x.clone().narrow(0, 0, 1)).dims()[1];
        let eps = self.eps;
        'targets: for rank in 1..=self.n_target_classes.min(classes - 1) {
            for restart in 0..self.restarts {
                if model.stopped() {
                    break 'targets;
                }
                on_robust(&x, &y, &mut robust, &mut adv, |xs, ys, _| {
                    let n = ys.dims()[0];
                    let dims = xs.dims();
                    let order = inner_logits(model, xs.clone()).argsort_descending(1);
                    let target = order.narrow(1, rank, 1).reshape([n]);
                    let found = self.single_run(model, &xs, &ys, &target, restart > 0, rng);
                    let per = dims[1] * dims[2] * dims[3];
                    let clean = host_f32(xs.clone());
                    let t = Tensor::<B::InnerBackend, 4>::from_data(
                        TensorData::new(found.clone(), dims),
                        &xs.device(),
                    );
                    let right = host_bool(inner_predict(model, t.clone()).equal(ys));
                    // Still robust: classified right, or the perturbation exceeds eps.
                    let still: Vec<bool> = (0..n)
                        .map(|s| {
                            let size = (0..per).fold(0f32, |a, i| {
                                a.max((found[s * per + i] - clean[s * per + i]).abs())
                            });
                            right[s] || size > eps
                        })
                        .collect();
                    (t, still)
                });
            }
        }
        Tensor::from_data(TensorData::new(adv, x.dims()), &x.device())
    }
}
