//! APGD (Croce & Hein, ICML 2020), L-inf, inputs in [0,1]: PGD with momentum 0.75 and
//! a step size that halves at checkpoints where progress stalls; no step size to tune.
//!
//! A port of AutoAttack's `autopgd_base.py` (Linf): random start on the eps-sphere,
//! step size `2·eps`, checkpoints every `p_j` iterations with `p` shrinking from
//! `0.22·n_iter` by `0.03·n_iter` down to `0.06·n_iter`; at a checkpoint a sample's step
//! halves (and it restarts from its best point) when fewer than `rho = 0.75` of the last
//! steps increased the loss, or when the step was not halved last time and the best loss
//! did not improve. Restarts run only on points still classified correctly. Losses:
//! cross-entropy (APGD-CE), DLR, or targeted DLR (APGD-T, [`super::ApgdT`]).

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde_json::json;

use super::{Attack, Classifier, inner_predict};
use crate::loss::{cross_entropy_each, dlr_each, dlr_targeted_each};
use crate::rng::Rng;

/// The loss APGD maximises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApgdLoss {
    /// Cross-entropy.
    Ce,
    /// Difference of logits ratio.
    Dlr,
}

/// Untargeted APGD.
#[derive(Clone, Debug)]
pub struct Apgd {
    /// L-inf radius.
    pub eps: f32,
    /// Iterations per run (100 in AutoAttack).
    pub n_iter: usize,
    /// Runs from new random starts, on the points still robust.
    pub restarts: usize,
    /// Loss.
    pub loss: ApgdLoss,
}

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// Per-sample loss, correctness and input gradient at `x`.
fn evaluate<B: AutodiffBackend>(
    model: &dyn Classifier<B>,
    x: &Tensor<Inner<B>, 4>,
    y: &Tensor<Inner<B>, 1, Int>,
    target: Option<&Tensor<Inner<B>, 1, Int>>,
    loss: ApgdLoss,
) -> (Vec<f32>, Vec<bool>, Tensor<Inner<B>, 4>) {
    let xa = Tensor::<B, 4>::from_inner(x.clone()).require_grad();
    let logits = model.logits(xa.clone());
    let yd = Tensor::<B, 1, Int>::from_inner(y.clone());
    let l = match (target, loss) {
        (Some(t), _) => dlr_targeted_each(logits.clone(), yd, Tensor::from_inner(t.clone())),
        (None, ApgdLoss::Ce) => cross_entropy_each(logits.clone(), yd),
        (None, ApgdLoss::Dlr) => dlr_each(logits.clone(), yd),
    };
    let grad = xa
        .grad(&l.clone().sum().backward())
        .expect("the input takes part in the loss");
    let b = y.dims()[0];
    let pred = logits.inner().argmax(1).reshape([b]).equal(y.clone());
    (host_f32(l.inner()), host_bool(pred), grad)
}

pub(crate) fn host_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 data")
}

pub(crate) fn host_bool<B: Backend>(t: Tensor<B, 1, Bool>) -> Vec<bool> {
    t.int()
        .into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .expect("int data")
        .into_iter()
        .map(|v| v != 0)
        .collect()
}

/// A `[b, 1, 1, 1]` mask from per-sample flags, broadcast to `like`'s shape.
pub(crate) fn sample_mask<B: Backend>(flags: &[bool], like: &Tensor<B, 4>) -> Tensor<B, 4, Bool> {
    let [b, c, h, w] = like.dims();
    let v: Vec<i64> = flags.iter().map(|&f| i64::from(f)).collect();
    Tensor::<B, 1, Int>::from_data(TensorData::new(v, [b]), &like.device())
        .equal_elem(1)
        .reshape([b, 1, 1, 1])
        .expand([b, c, h, w])
}

fn project<B: Backend>(v: Tensor<B, 4>, x: &Tensor<B, 4>, eps: f32) -> Tensor<B, 4> {
    v.max_pair(x.clone().sub_scalar(eps))
        .min_pair(x.clone().add_scalar(eps))
        .clamp(0.0, 1.0)
}

/// AutoAttack's `check_oscillation`: whether at most `k·rho` of the last `k` steps
/// increased the loss (indices before the first step wrap around, as in Python).
fn oscillates(loss_steps: &[Vec<f32>], j: usize, k: usize, rho: f32, s: usize) -> bool {
    let n = loss_steps.len() as isize;
    let at = |i: isize| loss_steps[i.rem_euclid(n) as usize][s];
    let up = (0..k as isize)
        .filter(|&c| at(j as isize - c) > at(j as isize - c - 1))
        .count();
    up as f32 <= k as f32 * rho
}

/// One APGD run on every sample of `x`: the adversarial points found (the last
/// misclassified iterate; `x`'s random start where none) and which stayed correct.
pub(crate) fn single_run<B: AutodiffBackend>(
    model: &dyn Classifier<B>,
    x: &Tensor<Inner<B>, 4>,
    y: &Tensor<Inner<B>, 1, Int>,
    target: Option<&Tensor<Inner<B>, 1, Int>>,
    loss: ApgdLoss,
    eps: f32,
    n_iter: usize,
    rng: &mut Rng,
) -> (Tensor<Inner<B>, 4>, Vec<bool>) {
    let rho = 0.75f32;
    let n2 = ((0.22 * n_iter as f64) as usize).max(1);
    let n_min = ((0.06 * n_iter as f64) as usize).max(1);
    let size_decr = ((0.03 * n_iter as f64) as usize).max(1);
    let dims = x.dims();
    let b = dims[0];
    let per = dims[1] * dims[2] * dims[3];
    // Random start: a uniform direction scaled so its largest coordinate is eps.
    let mut t = rng.uniform_vec(b * per, -1.0, 1.0);
    for row in t.chunks_mut(per) {
        let m = row.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-12);
        row.iter_mut().for_each(|v| *v *= eps / m);
    }
    let start = Tensor::<Inner<B>, 4>::from_data(TensorData::new(t, dims), &x.device());
    let mut x_adv = (x.clone() + start).clamp(0.0, 1.0);
    let (mut x_best, mut x_best_adv) = (x_adv.clone(), x_adv.clone());
    let (l0, pred0, mut grad) = evaluate(model, &x_adv, y, target, loss);
    let mut grad_best = grad.clone();
    let mut acc = pred0;
    let mut loss_best = l0;
    let mut loss_steps = vec![vec![0f32; b]; n_iter];
    let mut step = vec![2.0 * eps; b];
    let mut x_adv_old = x_adv.clone();
    let (mut k, mut counter3) = (n2, 0);
    let mut loss_best_last = loss_best.clone();
    let mut reduced_last = vec![true; b];
    let step_tensor =
        |s: &[f32]| Tensor::<Inner<B>, 1>::from_floats(s, &x.device()).reshape([b, 1, 1, 1]);
    for i in 0..n_iter {
        if model.stopped() {
            break;
        }
        let grad2 = x_adv.clone() - x_adv_old;
        x_adv_old = x_adv.clone();
        let a = if i > 0 { 0.75 } else { 1.0 };
        let x1 = project(x_adv.clone() + grad.sign() * step_tensor(&step), x, eps);
        let x1 = project(
            x_adv.clone() + (x1 - x_adv.clone()).mul_scalar(a) + grad2.mul_scalar(1.0 - a),
            x,
            eps,
        );
        x_adv = x1;
        let (l, pred, g) = evaluate(model, &x_adv, y, target, loss);
        grad = g;
        let fooled: Vec<bool> = pred.iter().map(|p| !p).collect();
        acc.iter_mut().zip(&pred).for_each(|(a, p)| *a = *a && *p);
        if fooled.iter().any(|&f| f) {
            x_best_adv = x_best_adv.mask_where(sample_mask(&fooled, &x_adv), x_adv.clone());
        }
        let improved: Vec<bool> = l.iter().zip(&loss_best).map(|(n, o)| n > o).collect();
        if improved.iter().any(|&f| f) {
            let m = sample_mask(&improved, &x_adv);
            x_best = x_best.mask_where(m.clone(), x_adv.clone());
            grad_best = grad_best.mask_where(m, grad.clone());
            loss_best
                .iter_mut()
                .zip(&l)
                .zip(&improved)
                .for_each(|((o, n), f)| {
                    if *f {
                        *o = *n
                    }
                });
        }
        loss_steps[i] = l;
        counter3 += 1;
        if counter3 == k {
            let fl: Vec<bool> = (0..b)
                .map(|s| {
                    oscillates(&loss_steps, i, k, rho, s)
                        || (!reduced_last[s] && loss_best_last[s] >= loss_best[s])
                })
                .collect();
            reduced_last = fl.clone();
            loss_best_last = loss_best.clone();
            if fl.iter().any(|&f| f) {
                step.iter_mut().zip(&fl).for_each(|(st, f)| {
                    if *f {
                        *st /= 2.0
                    }
                });
                let m = sample_mask(&fl, &x_adv);
                x_adv = x_adv.mask_where(m.clone(), x_best.clone());
                grad = grad.mask_where(m, grad_best.clone());
            }
            k = k.saturating_sub(size_decr).max(n_min);
            counter3 = 0;
        }
    }
    (x_best_adv, acc)
}

/// Runs `run` on the points of `x` still marked robust in `robust`, writing the
/// adversarial points it finds into `adv` (AutoAttack's restart and target loops).
pub(crate) fn on_robust<B: Backend>(
    x: &Tensor<B, 4>,
    y: &Tensor<B, 1, Int>,
    robust: &mut [bool],
    adv: &mut [f32],
    run: impl FnOnce(Tensor<B, 4>, Tensor<B, 1, Int>, &[usize]) -> (Tensor<B, 4>, Vec<bool>),
) {
    let idx: Vec<usize> = (0..robust.len()).filter(|&i| robust[i]).collect();
    if idx.is_empty() {
        return;
    }
    let device = x.device();
    let sel = Tensor::<B, 1, Int>::from_data(
        TensorData::new(
            idx.iter().map(|&i| i as i64).collect::<Vec<_>>(),
            [idx.len()],
        ),
        &device,
    );
    let (found, still) = run(
        x.clone().select(0, sel.clone()),
        y.clone().select(0, sel),
        &idx,
    );
    let per = x.dims()[1..].iter().product::<usize>();
    let found = host_f32(found);
    for (j, &i) in idx.iter().enumerate() {
        if !still[j] {
            robust[i] = false;
            adv[i * per..(i + 1) * per].copy_from_slice(&found[j * per..(j + 1) * per]);
        }
    }
}

/// Clean correctness of `x`.
pub(crate) fn correct<B: AutodiffBackend>(
    model: &dyn Classifier<B>,
    x: &Tensor<Inner<B>, 4>,
    y: &Tensor<Inner<B>, 1, Int>,
) -> Vec<bool> {
    host_bool(inner_predict(model, x.clone()).equal(y.clone()))
}

impl<B: AutodiffBackend> Attack<B> for Apgd {
    fn name(&self) -> &'static str {
        match self.loss {
            ApgdLoss::Ce => "apgd-ce",
            ApgdLoss::Dlr => "apgd-dlr",
        }
    }

    fn settings(&self) -> serde_json::Value {
        json!({"name": Attack::<B>::name(self), "eps": self.eps, "n_iter": self.n_iter,
               "restarts": self.restarts, "rho": 0.75, "momentum": 0.75, "norm": "Linf"})
    }

    fn perturb(
        &self,
        model: &dyn Classifier<B>,
        x: Tensor<Inner<B>, 4>,
        y: Tensor<Inner<B>, 1, Int>,
        rng: &mut Rng,
    ) -> Tensor<Inner<B>, 4> {
        let mut robust = correct(model, &x, &y);
        let mut adv = host_f32(x.clone());
        for _ in 0..self.restarts {
            if model.stopped() {
                break;
            }
            on_robust(&x, &y, &mut robust, &mut adv, |xs, ys, _| {
                single_run(model, &xs, &ys, None, self.loss, self.eps, self.n_iter, rng)
            });
        }
        Tensor::from_data(TensorData::new(adv, x.dims()), &x.device())
    }
}
