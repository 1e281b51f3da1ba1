//! The workloads `hyperat bench` times: the figures docs/performance.md
//! compares with PyTorch 2.15 + timm on the same machine.
//!
//! Tiny ViT (28 px, patch 4, dim 64, depth 4, heads 4) at batch 128: an eval forward,
//! one AdamW training step, one PGD-10 adversarial training step (10 input-gradient
//! steps + 1 update) and a PGD-20 attack of the batch. ViT-S/16 (224 px) at batch 8:
//! an eval forward and a training step, and its linear layers' products timed alone
//! ([`MATMUL_PRODUCTS`]: is a gap to PyTorch the matmul's?). Each figure is the median
//! of `reps` runs after one warm-up run; beside it, the heap allocations of one timed run
//! (where the binary counts them: [`crate::alloc_count`]).

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::alloc_count::{self, Allocations};
use crate::attack::{Attack, Pgd};
use crate::config::VitConfig;
use crate::loss::cross_entropy;
use crate::rng::Rng;
use crate::vit::Vit;

/// Timings for the tiny Fashion-MNIST ViT at batch 128 (milliseconds, medians).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TinyTimes {
    /// Eval forward.
    pub forward_ms: f64,
    /// Forward + backward + AdamW.
    pub train_step_ms: f64,
    /// PGD-10 on the batch + one training step on the result.
    pub pgd10_at_step_ms: f64,
    /// PGD-20 attack of the batch.
    pub pgd20_attack_ms: f64,
}

/// Timings for ViT-S/16 at 224 px, batch 8 (milliseconds, medians).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SmallTimes {
    /// Eval forward.
    pub forward_ms: f64,
    /// Forward + backward + AdamW.
    pub train_step_ms: f64,
    /// Its linear layers' products alone ([`MATMUL_PRODUCTS`]).
    #[serde(default)]
    pub matmul: Vec<MatmulRate>,
}

/// ViT-S/16's linear-layer products at batch 8 (1576 token rows): name, `[m, k, n]`,
/// and whether the left operand is a transposed view (the weight gradient `xᵀ·dy`).
/// `tools/bench_torch.py` times the same list.
pub const MATMUL_PRODUCTS: [(&str, [usize; 3], bool); 5] = [
    ("qkv", [1576, 384, 1152], false),
    ("proj", [1576, 384, 384], false),
    ("fc1", [1576, 384, 1536], false),
    ("fc2", [1576, 1536, 384], false),
    ("qkv weight grad", [384, 1576, 1152], true),
];

/// One product of [`MATMUL_PRODUCTS`], timed alone.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MatmulRate {
    /// Its name in [`MATMUL_PRODUCTS`].
    pub product: String,
    /// `[m, k, n]`.
    pub shape: [usize; 3],
    /// Median time (milliseconds).
    pub ms: f64,
    /// `2·m·k·n` over the median time.
    pub gflops: f64,
}

/// HyperAT on the tiny ViT at batch 128 (milliseconds, medians).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HyperTimes {
    /// Generating every LoRA factor of one method (with the autodiff graph).
    pub generate_ms: f64,
    /// One HyperAT PGD-10 training step (generate, PGD-10 with the factors reused,
    /// outer loss, backward, AdamW).
    pub pgd10_step_ms: f64,
    /// `generate_ms / pgd10_step_ms`.
    pub generate_fraction: f64,
    /// Eval forward of the exported (merged, folded) model.
    pub merged_forward_ms: f64,
    /// Eval forward of the plain backbone, measured alternately with the merged one.
    pub plain_forward_ms: f64,
}

/// All figures of one `hyperat bench` run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    /// Backend name.
    pub device: String,
    /// Tiny ViT figures.
    pub tiny_vit_28: TinyTimes,
    /// HyperAT figures on the tiny ViT.
    pub hyperat_28: HyperTimes,
    /// ViT-S/16 figures (absent with `--skip-small`).
    pub vit_s16_224: Option<SmallTimes>,
    /// Heap allocations of one run of each workload, in the order timed (empty where
    /// the binary does not count them).
    #[serde(default)]
    pub allocations: Vec<WorkloadAllocations>,
}

/// The heap allocations of one run of a workload (its last timed run).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkloadAllocations {
    /// The workload, as the CLI prints it.
    pub workload: String,
    /// What it allocated.
    #[serde(flatten)]
    pub allocations: Allocations,
}

/// Times workloads and keeps the allocations of each one's last timed run.
struct Meter<'d, B: Backend> {
    device: &'d B::Device,
    reps: usize,
    allocations: Vec<WorkloadAllocations>,
}

impl<B: Backend> Meter<'_, B> {
    /// The median of `reps` timed runs of `f` after one warm-up, in milliseconds.
    fn median_ms(&mut self, workload: &str, mut f: impl FnMut()) -> f64 {
        let device = self.device;
        f();
        let _ = B::sync(device);
        let mut last = None;
        let mut t: Vec<f64> = (0..self.reps.max(1))
            .map(|_| {
                let s = Instant::now();
                ((), last) = alloc_count::count(|| {
                    f();
                    let _ = B::sync(device);
                });
                s.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        if let Some(allocations) = last
            && !self.allocations.iter().any(|w| w.workload == workload)
        {
            let workload = workload.to_string();
            self.allocations.push(WorkloadAllocations {
                workload,
                allocations,
            });
        }
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    }
}

fn inputs<B: Backend>(
    cfg: &VitConfig,
    batch: usize,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
    let mut rng = Rng::new(1);
    let [c, h, w] = cfg.input_shape();
    let x = rng.uniform_vec(batch * c * h * w, 0.0, 1.0);
    let y: Vec<i64> = (0..batch)
        .map(|_| rng.below(cfg.num_classes) as i64)
        .collect();
    (
        Tensor::from_data(TensorData::new(x, [batch, c, h, w]), device),
        Tensor::from_data(TensorData::new(y, [batch]), device),
    )
}

/// Times forward and training step of `cfg` at `batch` (workloads named after
/// `model`); returns (forward, train step).
fn forward_and_train<B: AutodiffBackend>(
    meter: &mut Meter<B>,
    model: &str,
    cfg: &VitConfig,
    batch: usize,
) -> (f64, f64, Vit<B>) {
    let device = meter.device;
    let mut vit = Vit::<B>::init(cfg, device);
    let (x, y) = inputs::<B::InnerBackend>(cfg, batch, device);
    let eval = vit.valid();
    let fwd = meter.median_ms(&format!("{model}: forward"), || {
        let _ = eval.forward(x.clone()).into_data();
    });
    let mut optim = AdamWConfig::new().init::<B, Vit<B>>();
    let (xa, ya) = (
        Tensor::<B, 4>::from_inner(x),
        Tensor::<B, 1, Int>::from_inner(y),
    );
    let train = meter.median_ms(&format!("{model}: train step"), || {
        let loss = cross_entropy(vit.forward(xa.clone()), ya.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &vit);
        vit = optim.step(1e-4, vit.clone(), grads);
    });
    (fwd, train, vit)
}

/// Runs every workload on `device`.
pub fn run<B: AutodiffBackend>(
    device: &B::Device,
    device_name: &str,
    reps: usize,
    small: bool,
) -> BenchReport {
    let cfg = VitConfig::vit_tiny_fmnist();
    let mut meter = Meter::<B> {
        device,
        reps,
        allocations: vec![],
    };
    let (forward_ms, train_step_ms, mut vit) = forward_and_train(&mut meter, "tiny ViT", &cfg, 128);
    let (x, y) = inputs::<B::InnerBackend>(&cfg, 128, device);
    let pgd = |steps| Pgd {
        eps: 8.0 / 255.0,
        alpha: 2.0 / 255.0,
        steps,
        restarts: 1,
        random_start: true,
    };
    let mut rng = Rng::new(0);
    let mut optim = AdamWConfig::new().init::<B, Vit<B>>();
    let pgd10 = pgd(10);
    let pgd10_at_step_ms = meter.median_ms("tiny ViT: PGD-10 AT step", || {
        let frozen = vit.clone().no_grad();
        let adv = pgd10.perturb(&frozen, x.clone(), y.clone(), &mut rng);
        let loss = cross_entropy(
            vit.forward(Tensor::from_inner(adv)),
            Tensor::from_inner(y.clone()),
        );
        let grads = GradientsParams::from_grads(loss.backward(), &vit);
        vit = optim.step(1e-4, vit.clone(), grads);
    });
    let frozen = vit.clone().no_grad();
    let pgd20 = pgd(20);
    let pgd20_attack_ms = meter.median_ms("tiny ViT: PGD-20 attack", || {
        let _ = Attack::<B>::perturb(&pgd20, &frozen, x.clone(), y.clone(), &mut rng).into_data();
    });
    let hyperat_28 = hyper_times(&mut meter, &cfg, &x, &y);
    let vit_s16_224 = small.then(|| {
        let (forward_ms, train_step_ms, _) =
            forward_and_train(&mut meter, "ViT-S/16", &VitConfig::vit_small_224(), 8);
        SmallTimes {
            forward_ms,
            train_step_ms,
            matmul: matmul_rates(&mut meter),
        }
    });
    BenchReport {
        device: device_name.to_string(),
        tiny_vit_28: TinyTimes {
            forward_ms,
            train_step_ms,
            pgd10_at_step_ms,
            pgd20_attack_ms,
        },
        hyperat_28,
        vit_s16_224,
        allocations: meter.allocations,
    }
}

/// Times each of [`MATMUL_PRODUCTS`] alone.
fn matmul_rates<B: Backend>(meter: &mut Meter<B>) -> Vec<MatmulRate> {
    let device = meter.device;
    let mut rng = Rng::new(3);
    let mut tensor = |rows: usize, cols: usize| {
        let v = rng.uniform_vec(rows * cols, -1.0, 1.0);
        Tensor::<B, 2>::from_data(TensorData::new(v, [rows, cols]), device)
    };
    MATMUL_PRODUCTS
        .iter()
        .map(|&(product, shape @ [m, k, n], lhs_transposed)| {
            let lhs = match lhs_transposed {
                true => tensor(k, m).transpose(),
                false => tensor(m, k),
            };
            let rhs = tensor(k, n);
            let ms = meter.median_ms(&format!("ViT-S/16 matmul: {product}"), || {
                let _ = lhs.clone().matmul(rhs.clone());
            });
            let flop = 2.0 * (m * k * n) as f64;
            MatmulRate {
                product: product.to_string(),
                shape,
                ms,
                gflops: flop / ms / 1e6,
            }
        })
        .collect()
}

fn hyper_times<B: AutodiffBackend>(
    meter: &mut Meter<B>,
    cfg: &VitConfig,
    x: &Tensor<B::InnerBackend, 4>,
    y: &Tensor<B::InnerBackend, 1, Int>,
) -> HyperTimes {
    let device = meter.device;
    use crate::attack::frozen_view;
    use crate::merge::{MergeStrategy, Uniform, fold};
    use crate::tune::{TuneConfig, Tuned};
    let tc = TuneConfig::default();
    let mut model = Tuned::<B>::new(Vit::init(cfg, device), cfg, &tc, device);
    let generate_ms = meter.median_ms("HyperAT: generate all LoRA factors", || {
        let f = model.factors(0).expect("hyperat");
        let _ = f.per_target[0].2.clone().into_data();
    });
    let pgd = Pgd {
        eps: 8.0 / 255.0,
        alpha: 2.0 / 255.0,
        steps: 10,
        restarts: 1,
        random_start: true,
    };
    let mut opt = crate::optim::AdamW::<B>::new(Default::default());
    let mut rng = Rng::new(2);
    let mut m = 0;
    let pgd10_step_ms = meter.median_ms("HyperAT: PGD-10 step", || {
        m = (m + 1) % 3;
        let adapters = model.adapters(m).expect("hyperat");
        let (frozen_vit, frozen_ad) = (model.vit.clone().no_grad(), adapters.detach());
        let view = frozen_view(&frozen_vit, Some(&frozen_ad));
        let adv = pgd.perturb(view.as_ref(), x.clone(), y.clone(), &mut rng);
        let loss = cross_entropy(
            model.logits(Tensor::from_inner(adv), Some(&adapters)),
            Tensor::from_inner(y.clone()),
        );
        let grads = loss.backward();
        model = opt.step(1e-4, model.clone(), &grads).0;
    });
    let inner = model.valid();
    let methods = inner.method_loras(&tc.methods);
    let merged = fold(inner.vit.clone(), &Uniform.merge(&methods).expect("merge")).expect("fold");
    let plain = inner.vit;
    let (mut tm, mut tp) = (vec![], vec![]);
    let reps = std::mem::replace(&mut meter.reps, 1);
    for _ in 0..reps.max(1) {
        tm.push(meter.median_ms("HyperAT: merged export forward", || {
            let _ = merged.forward(x.clone()).into_data();
        }));
        tp.push(
            meter.median_ms("tiny ViT: forward (beside the merged)", || {
                let _ = plain.forward(x.clone()).into_data();
            }),
        );
    }
    meter.reps = reps;
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    HyperTimes {
        generate_ms,
        pgd10_step_ms,
        generate_fraction: generate_ms / pgd10_step_ms,
        merged_forward_ms: med(tm),
        plain_forward_ms: med(tp),
    }
}

#[cfg(test)]
mod tests {
    use super::MATMUL_PRODUCTS;

    /// `tools/bench_torch.py` must time the same products, or the two benches' matmul
    /// figures are not comparable.
    #[test]
    fn the_python_bench_times_the_same_products() {
        // Relative to the package root, where cargo runs tests: `env!("CARGO_MANIFEST_DIR")`
        // would name the clone that compiled the test, which a shared target dir reuses.
        let path = "../tools/bench_torch.py";
        let python = std::fs::read_to_string(path).unwrap();
        let start = python
            .find("MATMUL_PRODUCTS = [")
            .expect("list in bench_torch.py");
        let list = &python[start..start + python[start..].find("\n]").unwrap()];
        let rows: Vec<&str> = list.lines().skip(1).map(str::trim).collect();
        let ours: Vec<String> = MATMUL_PRODUCTS
            .iter()
            .map(|(name, [m, k, n], t)| {
                let t = if *t { "True" } else { "False" };
                format!("(\"{name}\", ({m}, {k}, {n}), {t}),")
            })
            .collect();
        assert_eq!(rows, ours);
    }
}
