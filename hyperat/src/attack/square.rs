//! Square Attack (Andriushchenko et al., ECCV 2020), L-inf, score-based: random square
//! updates at the vertices of the eps-box, kept when they lower the margin. It needs
//! logits only: it runs through [`BlackBox`], a forward-only interface on a backend
//! without autodiff, so it cannot take a gradient.
//!
//! A port of AutoAttack's `square.py` (Linf, margin loss, `p_init` 0.8, 5000 queries):
//! vertical-stripe initialisation; at iteration `i` one `s × s` square (the same
//! position for the batch, a random sign per channel) with
//! `s = round(sqrt(p(i)·n_features/c))`, `p` halving on AutoAttack's schedule; only
//! the points not yet fooled are queried.

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde_json::json;

use super::apgd::{host_bool, host_f32};
use super::{Attack, Classifier, inner_logits};
use crate::loss::cw_margin;
use crate::rng::Rng;

/// A model seen only through its logits (no gradients exist on a plain backend).
pub trait BlackBox<B: Backend> {
    /// Logits for [0,1] pixels.
    fn logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2>;
    /// See [`Classifier::stopped`].
    fn stopped(&self) -> bool {
        false
    }
}

/// The inner-backend forward of an autodiff classifier, as a black box.
struct Forward<'a, B: AutodiffBackend>(&'a dyn Classifier<B>);

impl<B: AutodiffBackend> BlackBox<B::InnerBackend> for Forward<'_, B> {
    fn logits(&self, x: Tensor<B::InnerBackend, 4>) -> Tensor<B::InnerBackend, 2> {
        inner_logits(self.0, x)
    }
    fn stopped(&self) -> bool {
        self.0.stopped()
    }
}

/// The Square Attack.
#[derive(Clone, Debug)]
pub struct Square {
    /// L-inf radius.
    pub eps: f32,
    /// Queries per run (5000 in AutoAttack).
    pub n_queries: usize,
    /// Initial square fraction (0.8).
    pub p_init: f32,
    /// Restarts on the points still robust.
    pub restarts: usize,
}

impl Square {
    /// AutoAttack's `p_selection`: the square fraction at iteration `it`.
    fn p(&self, it: usize) -> f32 {
        let it = (it as f64 / self.n_queries as f64 * 10000.0) as usize;
        let div = match it {
            0..=10 => 1.0,
            11..=50 => 2.0,
            51..=200 => 4.0,
            201..=500 => 8.0,
            501..=1000 => 16.0,
            1001..=2000 => 32.0,
            2001..=4000 => 64.0,
            4001..=6000 => 128.0,
            6001..=8000 => 256.0,
            _ => 512.0,
        };
        self.p_init / div
    }

    /// Margins `z_y − max_{j≠y} z_j` per sample (the loss AutoAttack's Square minimises).
    fn margins<B: Backend>(
        model: &dyn BlackBox<B>,
        x: Tensor<B, 4>,
        y: Tensor<B, 1, Int>,
    ) -> Vec<f32> {
        host_f32(cw_margin(model.logits(x), y).neg())
    }

    /// One run on every sample: the best points found and the queries used.
    pub fn single_run<B: Backend>(
        &self,
        model: &dyn BlackBox<B>,
        x: &Tensor<B, 4>,
        y: &Tensor<B, 1, Int>,
        rng: &mut Rng,
    ) -> (Tensor<B, 4>, usize) {
        let [n, c, h, w] = x.dims();
        let dev = x.device();
        let sign = |rng: &mut Rng| if rng.uniform() < 0.5 { -1.0f32 } else { 1.0 };
        // Vertical stripes: one sign per (sample, channel, column).
        let stripes: Vec<f32> = (0..n * c * w).map(|_| sign(rng) * self.eps).collect();
        let stripes = Tensor::<B, 4>::from_data(TensorData::new(stripes, [n, c, 1, w]), &dev)
            .expand([n, c, h, w]);
        let mut best = host_f32((x.clone() + stripes).clamp(0.0, 1.0));
        let xs = host_f32(x.clone());
        let ys: Vec<i64> = y
            .clone()
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .expect("labels");
        let per = c * h * w;
        let mut margin = Self::margins(
            model,
            Tensor::from_data(TensorData::new(best.clone(), [n, c, h, w]), &dev),
            y.clone(),
        );
        let mut queries = 1;
        let n_features = (c * h * w) as f32;
        for i in 0..self.n_queries {
            if model.stopped() {
                break;
            }
            let live: Vec<usize> = (0..n).filter(|&s| margin[s] > 0.0).collect();
            if live.is_empty() {
                break;
            }
            let s =
                ((self.p(i) * n_features / c as f32).sqrt().round() as usize).clamp(1, h.min(w));
            let vh = (rng.uniform() * (h - s) as f32) as usize;
            let vw = (rng.uniform() * (w - s) as f32) as usize;
            let signs: Vec<f32> = (0..c).map(|_| sign(rng) * 2.0 * self.eps).collect();
            let mut cand = Vec::with_capacity(live.len() * per);
            for &smp in &live {
                let base = smp * per;
                let mut img = best[base..base + per].to_vec();
                for ch in 0..c {
                    for r in vh..vh + s {
                        for col in vw..vw + s {
                            let k = ch * h * w + r * w + col;
                            let orig = xs[base + k];
                            img[k] = (img[k] + signs[ch])
                                .clamp(orig - self.eps, orig + self.eps)
                                .clamp(0.0, 1.0);
                        }
                    }
                }
                cand.extend(img);
            }
            let yl: Vec<i64> = live.iter().map(|&s| ys[s]).collect();
            let m = Self::margins(
                model,
                Tensor::from_data(TensorData::new(cand.clone(), [live.len(), c, h, w]), &dev),
                Tensor::from_data(TensorData::new(yl, [live.len()]), &dev),
            );
            queries += 1;
            for (j, &smp) in live.iter().enumerate() {
                if m[j] < margin[smp] || m[j] <= 0.0 {
                    margin[smp] = m[j];
                    best[smp * per..(smp + 1) * per].copy_from_slice(&cand[j * per..(j + 1) * per]);
                }
            }
        }
        (
            Tensor::from_data(TensorData::new(best, [n, c, h, w]), &dev),
            queries,
        )
    }

    /// The attack through a black box: points still correct get `restarts` runs.
    pub fn perturb_black_box<B: Backend>(
        &self,
        model: &dyn BlackBox<B>,
        x: Tensor<B, 4>,
        y: Tensor<B, 1, Int>,
        rng: &mut Rng,
    ) -> Tensor<B, 4> {
        let correct = |x: Tensor<B, 4>, y: Tensor<B, 1, Int>| {
            let b = y.dims()[0];
            host_bool(model.logits(x).argmax(1).reshape([b]).equal(y))
        };
        let mut robust = correct(x.clone(), y.clone());
        let mut adv = host_f32(x.clone());
        for _ in 0..self.restarts {
            if model.stopped() {
                break;
            }
            super::apgd::on_robust(&x, &y, &mut robust, &mut adv, |xs, ys, _| {
                let (found, _) = self.single_run(model, &xs, &ys, rng);
                let still = correct(found.clone(), ys);
                (found, still)
            });
        }
        Tensor::from_data(TensorData::new(adv, x.dims()), &x.device())
    }
}

impl<B: AutodiffBackend> Attack<B> for Square {
    fn name(&self) -> &'static str {
        "square"
    }

    fn settings(&self) -> serde_json::Value {
        json!({"name": "square", "eps": self.eps, "n_queries": self.n_queries, "p_init": self.p_init,
               "restarts": self.restarts, "loss": "margin", "norm": "Linf"})
    }

    fn perturb(
        &self,
        model: &dyn Classifier<B>,
        x: Tensor<B::InnerBackend, 4>,
        y: Tensor<B::InnerBackend, 1, Int>,
        rng: &mut Rng,
    ) -> Tensor<B::InnerBackend, 4> {
        self.perturb_black_box(&Forward(model), x, y, rng)
    }
}
