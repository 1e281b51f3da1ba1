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
    let shapes: Vec<(usize, Target, usize, usize)> = (0..2)
        .flat_map(|l| {
            Target::ALL.map(|t| {
                let (i, o) = crate::lora::target_shape(&cfg, t);
                (l, t, i, o)
            })
        })
        .collect();
    let ms: Vec<MethodLora> = (0..3).map(|s| method("m", 10 + s, &shapes)).collect();
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
        rel(vit.forward(x.clone()), unfolded) > 1e-3,
        "the merge changes the logits"
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
