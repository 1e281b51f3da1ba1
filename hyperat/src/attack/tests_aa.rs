//! AutoAttack's components on tiny models.

use burn::module::AutodiffModule;
use burn::prelude::*;

use super::fab::projection_linf;
use super::*;
use crate::backend::{Cpu, CpuAutodiff};
use crate::config::VitConfig;

type A = CpuAutodiff;

/// A deliberately weak model: a two-layer perceptron on raw pixels, 10 classes.
#[derive(Clone)]
struct Mlp<B: Backend> {
    w1: Tensor<B, 2>,
    w2: Tensor<B, 2>,
}

impl<B: Backend> Mlp<B> {
    fn new(device: &B::Device) -> Self {
        let mut rng = Rng::new(41);
        let t = |r: &mut Rng, i: usize, o: usize, s: f32| {
            let v: Vec<f32> = r.normal_vec(i * o).into_iter().map(|x| x * s).collect();
            Tensor::from_data(TensorData::new(v, [i, o]), device)
        };
        Self {
            w1: t(&mut rng, 784, 32, 0.1),
            w2: t(&mut rng, 32, 10, 0.5),
        }
    }
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let b = x.dims()[0];
        burn::tensor::activation::relu(x.reshape([b, 784]).matmul(self.w1.clone()))
            .matmul(self.w2.clone())
    }
}

impl Classifier<A> for Mlp<A> {
    fn logits(&self, x: Tensor<A, 4>) -> Tensor<A, 2> {
        self.forward(x)
    }
}

fn weak_mlp(n: usize) -> (Mlp<A>, Tensor<Cpu, 4>, Tensor<Cpu, 1, Int>) {
    let dev = Default::default();
    let m = Mlp::<A>::new(&dev);
    let mut rng = Rng::new(31);
    let x = Tensor::from_data(
        TensorData::new(rng.uniform_vec(n * 784, 0.0, 1.0), [n, 1, 28, 28]),
        &dev,
    );
    let y = predict(&m, Tensor::from_inner(x.clone())).inner();
    (m, x, y)
}

fn mlp_fooled(m: &Mlp<A>, adv: Tensor<Cpu, 4>, y: &Tensor<Cpu, 1, Int>) -> Vec<bool> {
    let inner = Mlp {
        w1: m.w1.clone().inner(),
        w2: m.w2.clone().inner(),
    };
    let b = y.dims()[0];
    apgd::host_bool(
        inner
            .forward(adv)
            .argmax(1)
            .reshape([b])
            .not_equal(y.clone()),
    )
}

fn weak_vit(n: usize) -> (Vit<A>, Tensor<Cpu, 4>, Tensor<Cpu, 1, Int>) {
    let dev = Default::default();
    let mut cfg = VitConfig::vit_tiny_fmnist();
    cfg.embed_dim = 16;
    cfg.depth = 1;
    cfg.num_heads = 2;
    cfg.patch_size = 7;
    <A as Backend>::seed(&dev, 23);
    let vit = Vit::<A>::init(&cfg, &dev).no_grad();
    let mut rng = Rng::new(31);
    let x = Tensor::from_data(
        TensorData::new(rng.uniform_vec(n * 784, 0.0, 1.0), [n, 1, 28, 28]),
        &dev,
    );
    let y = predict(&vit.valid(), x.clone());
    (vit, x, y)
}

/// A radius at which the weak model is partly, not wholly, broken.
const EPS_WEAK: f32 = 0.01;

#[test]
fn every_component_stays_in_the_ball_and_in_range() {
    let (vit, x, y) = weak_mlp(4);
    let eps = 0.02;
    let names: Vec<String> = STANDARD.iter().map(|s| s.to_string()).collect();
    let aa = AutoAttack::<A>::scaled(eps, &names, 5, 30).unwrap();
    assert!(!aa.standard);
    for c in aa.components.iter().chain(
        [Box::new(Apgd {
            eps,
            n_iter: 5,
            restarts: 2,
            loss: ApgdLoss::Dlr,
        }) as Box<dyn Attack<A>>]
        .iter(),
    ) {
        let adv = c.perturb(&vit, x.clone(), y.clone(), &mut Rng::new(1));
        let d = (adv.clone() - x.clone()).abs().max().into_scalar();
        assert!(d <= eps + 1e-6, "{}: |delta| {d}", c.name());
        assert!(
            adv.clone().min().into_scalar() >= 0.0 && adv.max().into_scalar() <= 1.0,
            "{}",
            c.name()
        );
    }
}

/// A forward-only model on a backend without autodiff: no gradient can be taken.
struct CountingBlackBox {
    vit: Mlp<Cpu>,
    queries: std::cell::Cell<usize>,
}

impl BlackBox<Cpu> for CountingBlackBox {
    fn logits(&self, x: Tensor<Cpu, 4>) -> Tensor<Cpu, 2> {
        self.queries.set(self.queries.get() + 1);
        self.vit.forward(x)
    }
}

#[test]
fn square_runs_on_logits_alone() {
    let (m, x, y) = weak_mlp(4);
    let inner = Mlp {
        w1: m.w1.clone().inner(),
        w2: m.w2.clone().inner(),
    };
    let bb = CountingBlackBox {
        vit: inner,
        queries: Default::default(),
    };
    let sq = Square {
        eps: 0.1,
        n_queries: 50,
        p_init: 0.8,
        restarts: 1,
    };
    let adv = sq.perturb_black_box(&bb, x.clone(), y.clone(), &mut Rng::new(3));
    assert!(bb.queries.get() > 1, "Square queried the model");
    assert!((adv.clone() - x).abs().max().into_scalar() <= 0.1 + 1e-6);
    assert!(
        mlp_fooled(&m, adv, &y).iter().any(|f| *f),
        "eps 0.1 breaks the weak model"
    );
}

#[test]
fn apgd_finds_what_pgd_finds_on_a_weak_model() {
    let (m, x, y) = weak_mlp(16);
    let eps = EPS_WEAK;
    let pgd = Pgd {
        eps,
        alpha: eps / 4.0,
        steps: 10,
        restarts: 1,
        random_start: true,
    };
    let by_pgd = mlp_fooled(
        &m,
        Attack::<A>::perturb(&pgd, &m, x.clone(), y.clone(), &mut Rng::new(5)),
        &y,
    );
    let apgd = Apgd {
        eps,
        n_iter: 100,
        restarts: 1,
        loss: ApgdLoss::Ce,
    };
    let by_apgd = mlp_fooled(
        &m,
        Attack::<A>::perturb(&apgd, &m, x, y.clone(), &mut Rng::new(5)),
        &y,
    );
    assert!(
        by_pgd.iter().any(|f| !*f),
        "eps small enough that PGD-10 misses some: {by_pgd:?}"
    );
    assert!(
        by_pgd.iter().any(|f| *f),
        "the model is weak enough for PGD-10: {by_pgd:?}"
    );
    for (i, (p, a)) in by_pgd.iter().zip(&by_apgd).enumerate() {
        assert!(
            !p || *a,
            "image {i}: PGD-10 found an adversarial point, APGD-CE did not"
        );
    }
}

#[test]
fn autoattack_is_the_worst_case_of_its_components_and_seeded() {
    let (m, x, y) = weak_mlp(12);
    let eps = EPS_WEAK / 2.0;
    let names: Vec<String> = STANDARD.iter().map(|s| s.to_string()).collect();
    let aa = AutoAttack::<A>::scaled(eps, &names, 10, 40).unwrap();
    let (adv1, after) = aa.perturb_report(&m, x.clone(), y.clone(), &mut Rng::new(7));
    let (adv2, _) = aa.perturb_report(&m, x.clone(), y.clone(), &mut Rng::new(7));
    assert_eq!(
        adv1.to_data(),
        adv2.to_data(),
        "a fixed seed fixes the result"
    );
    let counts: Vec<usize> = after
        .iter()
        .map(|(_, r)| r.iter().filter(|v| **v).count())
        .collect();
    assert!(
        counts.windows(2).all(|w| w[1] <= w[0]),
        "robust counts only fall: {counts:?}"
    );
    let final_robust = mlp_fooled(&m, adv1, &y).iter().filter(|f| !**f).count();
    assert_eq!(final_robust, *counts.last().unwrap());
    // The first component inside AutoAttack is APGD-CE run from the same stream.
    let apgd = Apgd {
        eps,
        n_iter: 10,
        restarts: 1,
        loss: ApgdLoss::Ce,
    };
    let alone = Attack::<A>::perturb(&apgd, &m, x, y.clone(), &mut Rng::new(7).fork());
    let alone_robust = mlp_fooled(&m, alone, &y).iter().filter(|f| !**f).count();
    assert_eq!(counts[0], alone_robust);
    assert!(final_robust <= alone_robust);
}

#[test]
fn fab_projection_reaches_the_hyperplane_with_the_smallest_step() {
    // w·(t + d) = b with t = (0.5, 0.5), w = (1, 1), b = 1.5: d = (0.25, 0.25).
    let d = projection_linf(&[0.5, 0.5], &[1.0, 1.0], 1.5);
    assert!(
        (d[0] - 0.25).abs() < 1e-6 && (d[1] - 0.25).abs() < 1e-6,
        "{d:?}"
    );
    // Negative weight: the coordinate moves the other way.
    let d = projection_linf(&[0.5, 0.5], &[1.0, -1.0], 0.4);
    assert!(
        (d[0] - 0.2).abs() < 1e-6 && (d[1] + 0.2).abs() < 1e-6,
        "{d:?}"
    );
    // Unreachable inside the box: the box corner.
    let d = projection_linf(&[0.5, 0.5], &[1.0, 1.0], 5.0);
    assert!(
        (d[0] - 0.5).abs() < 1e-6 && (d[1] - 0.5).abs() < 1e-6,
        "{d:?}"
    );
}

#[test]
fn sanity_checks_flag_probabilities_and_pass_logits() {
    let (vit, x, y) = weak_vit(4);
    let r = checks::model_checks::<A>(&vit, &x, &y);
    assert!(
        !r.outputs_look_like_probabilities && !r.non_deterministic && r.warnings.is_empty(),
        "{r:?}"
    );
    struct Softmaxed<'a>(&'a Vit<A>);
    impl Classifier<A> for Softmaxed<'_> {
        fn logits(&self, x: Tensor<A, 4>) -> Tensor<A, 2> {
            burn::tensor::activation::softmax(self.0.forward(x), 1)
        }
    }
    let r = checks::model_checks::<A>(&Softmaxed(&vit), &x, &y);
    assert!(r.outputs_look_like_probabilities && !r.warnings.is_empty());
}
