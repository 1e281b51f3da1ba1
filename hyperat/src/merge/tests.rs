//! Merges against hand computations, and folding against the unfolded model.

use burn::prelude::*;

use super::*;
use crate::backend::Cpu;
use crate::config::VitConfig;
use crate::rng::Rng;

fn method(name: &str, seed: u64, shapes: &[(usize, Target, usize, usize)]) -> MethodLora {
    let mut rng = Rng::new(seed);
    let mut factors = BTreeMap::new();
    for &(layer, t, i, o) in shapes {
        let a = HostTensor::new(vec![i, 2], rng.normal_vec(i * 2));
        let b = HostTensor::new(vec![2, o], rng.normal_vec(2 * o));
        factors.insert((layer, t), (a, b));
    }
    MethodLora {
        name: name.into(),
        factors,
        scaling: 0.5,
    }
}

fn small() -> Vec<MethodLora> {
    let shapes = [(0, Target::Proj, 3, 3), (1, Target::Fc1, 3, 4)];
    vec![
        method("a", 1, &shapes),
        method("b", 2, &shapes),
        method("c", 3, &shapes),
    ]
}

fn product(m: &MethodLora, key: (usize, Target)) -> Vec<f32> {
    let (a, b) = &m.factors[&key];
    let (i, r, o) = (a.shape[0], a.shape[1], b.shape[1]);
    let mut out = vec![0.0; i * o];
    for x in 0..i {
        for y in 0..o {
            out[x * o + y] = (0..r)
                .map(|k| a.data[x * r + k] * b.data[k * o + y])
                .sum::<f32>()
                * m.scaling;
        }
    }
    out
}

/// `(block, target, in, out)` for every target of every block of `cfg`.
fn every_target(cfg: &VitConfig) -> Vec<(usize, Target, usize, usize)> {
    (0..cfg.depth)
        .flat_map(|l| {
            Target::ALL.map(|t| {
                let (i, o) = crate::lora::target_shape(cfg, t);
                (l, t, i, o)
            })
        })
        .collect()
}

#[test]
fn uniform_weighted_and_factor_average() {
    let ms = small();
    let key = (1, Target::Fc1);
    let u = Uniform.merge(&ms).unwrap();
    let w = Weighted::new(vec![0.5, 0.25, 0.25])
        .unwrap()
        .merge(&ms)
        .unwrap();
    let (pa, pb, pc) = (
        product(&ms[0], key),
        product(&ms[1], key),
        product(&ms[2], key),
    );
    for j in 0..12 {
        assert!((u[&key].data[j] - (pa[j] + pb[j] + pc[j]) / 3.0).abs() < 1e-5);
        assert!((w[&key].data[j] - (0.5 * pa[j] + 0.25 * pb[j] + 0.25 * pc[j])).abs() < 1e-5);
    }
    // Factor averaging is not the average of the products.
    let f = FactorAvg.merge(&ms).unwrap();
    assert!(
        f[&key]
            .data
            .iter()
            .zip(&u[&key].data)
            .any(|(a, b)| (a - b).abs() > 1e-3)
    );
    assert!(Weighted::new(vec![0.5, 0.6]).is_err());
    assert!(Weighted::new(vec![1.0]).unwrap().merge(&ms).is_err());
}

#[test]
fn ties_trims_elects_and_averages_agreeing_entries() {
    let mut v = vec![0.1, -3.0, 2.0, 0.5];
    ties::trim(&mut v, 0.5);
    assert_eq!(v, vec![0.0, -3.0, 2.0, 0.0]);
    let ms = small();
    let key = (0, Target::Proj);
    let t = Ties { density: 1.0 }.merge(&ms).unwrap();
    let ps: Vec<Vec<f32>> = ms.iter().map(|m| product(m, key)).collect();
    for j in 0..9 {
        let sign = ps.iter().map(|p| p[j]).sum::<f32>().signum();
        let agree: Vec<f32> = ps
            .iter()
            .map(|p| p[j])
            .filter(|v| v.signum() == sign)
            .collect();
        let want = agree.iter().sum::<f32>() / agree.len() as f32;
        assert!((t[&key].data[j] - want).abs() < 1e-5);
    }
}

#[test]
fn dare_keeps_everything_at_keep_one_and_is_seeded() {
    let ms = small();
    let u = Uniform.merge(&ms).unwrap();
    let d = Dare { keep: 1.0, seed: 0 }.merge(&ms).unwrap();
    for (k, v) in &u {
        for (a, b) in v.data.iter().zip(&d[k].data) {
            assert!((a - b).abs() < 1e-5);
        }
    }
    let d1 = Dare { keep: 0.5, seed: 7 }.merge(&ms).unwrap();
    let d2 = Dare { keep: 0.5, seed: 7 }.merge(&ms).unwrap();
    assert_eq!(d1, d2);
    assert!(d1[&(1, Target::Fc1)].data.contains(&0.0));
}

#[test]
fn folding_equals_the_unfolded_model() {
    let dev = Default::default();
    let mut cfg = VitConfig::vit_tiny_fmnist();
    cfg.embed_dim = 16;
    cfg.depth = 2;
    cfg.num_heads = 2;
    let vit = Vit::<Cpu>::init(&cfg, &dev);
    let shapes = every_target(&cfg);
    let mut ms: Vec<MethodLora> = (0..3).map(|s| method("m", 10 + s, &shapes)).collect();
    // Different scalings: the low-rank and the dense paths must apply each method's own.
    ms[1].scaling = 1.5;
    let mut rng = Rng::new(2);
    let x = Tensor::<Cpu, 4>::from_data(
        TensorData::new(rng.uniform_vec(4 * 784, 0.0, 1.0), [4, 1, 28, 28]),
        &dev,
    );
    let rel = |a: Tensor<Cpu, 2>, b: Tensor<Cpu, 2>| {
        let scale = b.clone().abs().max().into_scalar();
        (a - b).abs().max().into_scalar() / scale
    };
    // Uniform: folded vs low-rank weighted adapters (non-zero B, so the delta matters).
    let lambdas = Tensor::<Cpu, 2>::from_data(TensorData::new(vec![1.0f32 / 3.0; 3], [1, 3]), &dev);
    let unfolded = vit.forward_with(x.clone(), &weighted_adapters(&ms, &lambdas, 2, &dev));
    let folded = fold(vit.clone(), &Uniform.merge(&ms).unwrap())
        .unwrap()
        .forward(x.clone());
    assert!(
        rel(folded.clone(), unfolded.clone()) < 1e-5,
        "{}",
        rel(folded.clone(), unfolded.clone())
    );
    assert!(
        rel(vit.forward(x.clone()), unfolded.clone()) > 1e-3,
        "the merge changes the logits"
    );
    // The attacks' view folds the same adapters into the weights; one with an input
    // norm (FullLoRA) does not fold and stays a side path with the same logits.
    let mut adapters = weighted_adapters(&ms, &lambdas, 2, &dev);
    let folded_view = crate::attack::frozen_view(&vit, Some(&adapters)).logits(x.clone());
    assert!(rel(folded_view, unfolded.clone()) < 1e-5);
    let d = adapters.blocks[1].0[Target::Fc2.index()].as_mut().unwrap();
    let width = d.lora_a.dims()[0];
    d.input_norm = Some((Tensor::ones([width], &dev), Tensor::zeros([width], &dev)));
    assert!(adapters.fold_into(vit.clone()).is_none());
    let side = crate::attack::frozen_view(&vit, Some(&adapters)).logits(x.clone());
    assert!(rel(side.clone(), vit.forward_with(x.clone(), &adapters)) == 0.0);
    assert!(
        rel(side, unfolded) > 1e-6,
        "the input norm changes the logits"
    );
    // TIES (not low-rank): folded vs the dense deltas as adapters.
    let ties = Ties { density: 0.3 }.merge(&ms).unwrap();
    let unfolded = vit.forward_with(x.clone(), &dense_adapters(&ties, 2, &dev));
    let folded = fold(vit.clone(), &ties).unwrap().forward(x);
    assert!(rel(folded, unfolded) < 1e-5);
    // Non-finite merges are refused.
    let mut bad = ties.clone();
    bad.values_mut().next().unwrap().data[0] = f32::NAN;
    assert!(fold(vit, &bad).is_err());
}

/// The adaptive search must move its weight onto the LoRA that keeps the held-out loss
/// low: the labels are the plain model's predictions, method `keep` changes nothing and
/// method `break` moves the logits away from them. A sign slip in the Adam update or in
/// the weighting would favour `break`.
#[test]
fn adaptive_search_favours_the_lora_that_fits_and_its_check_says_so() {
    const SCRAMBLE: f32 = 0.05;
    use crate::backend::CpuAutodiff;
    use crate::checkpoint::{Adapt, load_vit};
    use crate::data::Dataset;
    use crate::progress::Silent;
    use burn::module::AutodiffModule;

    let dev = Default::default();
    // A fixed model (timm's reference checkpoint), not one from the backend's shared RNG,
    // which tests running side by side draw from in no set order.
    // Relative to the package root, where cargo runs tests: `env!("CARGO_MANIFEST_DIR")`
    // would name the clone that compiled the test, which a shared target dir reuses.
    let fixture = "../tests/fixtures/timm/vit_tiny_p4_28_c1";
    let (cfg, mut vit) =
        load_vit::<CpuAutodiff>(fixture, &Adapt::default(), &dev).expect("fixture loads");
    // A confident head, so the labels are far from ties.
    vit.head.weight = vit.head.weight.map(|w| w.mul_scalar(30.0));
    let shapes = every_target(&cfg);
    let mut keep = method("keep", 1, &shapes);
    let mut scramble = method("break", 2, &shapes);
    // `keep` adds nothing (B = 0): the labels are the plain model's predictions.
    for (_, b) in keep.factors.values_mut() {
        b.data.iter_mut().for_each(|v| *v = 0.0);
    }
    // Weak enough that the loss rises steadily with its weight.
    for (_, b) in scramble.factors.values_mut() {
        b.data.iter_mut().for_each(|v| *v *= SCRAMBLE);
    }
    let methods = [keep, scramble];
    let n = 48;
    let mut rng = Rng::new(5);
    // Images of different brightness and texture, so the model tells them apart.
    let pixels: Vec<u8> = (0..n)
        .flat_map(|i| {
            let (base, spread) = (i * 5 % 200, 8 + i * 7 % 48);
            (0..784)
                .map(|_| (base + rng.below(spread)) as u8)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut val = Dataset {
        name: "toy".into(),
        shape: [1, 28, 28],
        pixels,
        labels: vec![0; n],
        classes: (0..10).map(|c| c.to_string()).collect(),
    };
    let (x, _) = val.batch::<Cpu>(&(0..n).collect::<Vec<_>>(), &dev);
    let only_keep = Tensor::<Cpu, 2>::from_data(TensorData::new(vec![1.0f32, 0.0], [1, 2]), &dev);
    let fitted = vit
        .valid()
        .forward_with(x, &weighted_adapters(&methods, &only_keep, 2, &dev))
        .argmax(1)
        .into_data()
        .convert::<i64>();
    val.labels = fitted
        .to_vec::<i64>()
        .unwrap()
        .iter()
        .map(|&c| c as u32)
        .collect();
    let distinct: std::collections::BTreeSet<u32> = val.labels.iter().copied().collect();
    assert!(distinct.len() >= 2, "the labels vary: {distinct:?}");
    let acfg = AdaptiveConfig {
        steps: 20,
        lr: 0.1,
        batch_size: 16,
        // No perturbation: the test is about the search, not the attack (whose
        // adversarial loss on a random toy model has no direction worth asserting).
        eps: 0.0,
        alpha: 0.0,
        attack_steps: 1,
        check_images: 32,
        ..AdaptiveConfig::default()
    };
    let (learned, check) = learn_and_check(&vit, &methods, &val, &acfg, &dev, &mut Silent).unwrap();
    let l = &learned.lambdas[0];
    assert_eq!(learned.lambdas.len(), 1);
    assert!((l[0] + l[1] - 1.0).abs() < 1e-5, "{l:?}");
    assert!(l[0] > 0.7, "weight on the LoRA that fits: {l:?}");
    let c = check.expect("check_images > 0");
    assert_eq!(c.images, 32);
    assert!(c.learned_loss < c.uniform_loss, "{c:?}");
    assert!(c.learned_accuracy >= c.uniform_accuracy, "{c:?}");
    // The check scores exactly the weights it is given: all on `keep` is the plain model,
    // right on every image; all on `break` is worse than uniform.
    let only = |w: Vec<f32>| check_weights(&vit, &methods, &[w], &val, 32, &acfg, &dev);
    let (keep_loss, keep_acc) = only(vec![1.0, 0.0]);
    let (break_loss, break_acc) = only(vec![0.0, 1.0]);
    assert_eq!(keep_acc, 1.0);
    assert!(
        keep_loss < c.uniform_loss && c.uniform_loss < break_loss,
        "{keep_loss} {break_loss} {c:?}"
    );
    assert!(break_acc < c.uniform_accuracy, "{break_acc} {c:?}");
    // Per layer: one row per block, each a distribution.
    let per_layer = AdaptiveConfig {
        per_layer: true,
        check_images: 0,
        ..acfg
    };
    let (learned, check) =
        learn_and_check(&vit, &methods, &val, &per_layer, &dev, &mut Silent).unwrap();
    assert!(check.is_none());
    assert_eq!(learned.lambdas.len(), 2);
    assert!(
        learned.lambdas.iter().all(|r| r[0] > 0.5),
        "{:?}",
        learned.lambdas
    );
}
