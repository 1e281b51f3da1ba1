//! Attacks on models simple enough to solve by hand, plus invariants on a small ViT.

use burn::module::AutodiffModule;
use burn::prelude::*;

use super::*;
use crate::backend::{Cpu, CpuAutodiff};
use crate::config::VitConfig;

type A = CpuAutodiff;

/// `logits = flatten(x) · W` with `W` `[pixels, 2]`.
struct LinearModel {
    w: Tensor<A, 2>,
}

impl Classifier<A> for LinearModel {
    fn logits(&self, x: Tensor<A, 4>) -> Tensor<A, 2> {
        let b = x.dims()[0];
        x.reshape([b as i32, -1]).matmul(self.w.clone())
    }
}

fn setup() -> (LinearModel, Vec<f32>, Tensor<Cpu, 4>, Tensor<Cpu, 1, Int>) {
    let dev = Default::default();
    // Four pixels; class 1 minus class 0 weights: +1, -2, +0.5, -0.25.
    let diff = [1.0f32, -2.0, 0.5, -0.25];
    let mut w = vec![];
    for d in diff {
        w.extend([0.0, d]);
    }
    let model = LinearModel {
        w: Tensor::from_data(TensorData::new(w, [4, 2]), &dev),
    };
    let x = vec![0.5f32, 0.02, 0.97, 0.3, 0.1, 0.5, 0.5, 0.9];
    let xt = Tensor::from_data(TensorData::new(x.clone(), [2, 1, 2, 2]), &dev);
    let y = Tensor::from_data(TensorData::new(vec![0i64, 1], [2]), &dev);
    (model, diff.to_vec(), xt, y)
}

/// The known optimum: move each pixel by eps against the true class, then clamp.
fn expected(x: &[f32], diff: &[f32], labels: [f32; 2], eps: f32) -> Vec<f32> {
    x.iter()
        .enumerate()
        .map(|(i, v)| {
            let toward_other = if labels[i / 4] == 0.0 {
                diff[i % 4]
            } else {
                -diff[i % 4]
            };
            (v + eps * toward_other.signum()).clamp(0.0, 1.0)
        })
        .collect()
}

fn close(a: &[f32], b: &[f32]) {
    for (p, q) in a.iter().zip(b) {
        assert!((p - q).abs() < 1e-6, "{a:?} vs {b:?}");
    }
}

#[test]
fn fgsm_and_pgd_find_the_known_perturbation_of_a_linear_model() {
    let (model, diff, x, y) = setup();
    let xv = x.clone().into_data().to_vec::<f32>().unwrap();
    let eps = 0.05;
    let want = expected(&xv, &diff, [0.0, 1.0], eps);
    let mut rng = Rng::new(0);
    let fgsm = by_name::<A>(
        "fgsm",
        &AttackParams {
            eps,
            ..Default::default()
        },
    )
    .unwrap();
    let adv = fgsm.perturb(&model, x.clone(), y.clone(), &mut rng);
    close(&adv.into_data().to_vec::<f32>().unwrap(), &want);
    // PGD from a random start reaches the same corner: 10 steps of eps/4 cover 2·eps.
    let pgd = by_name::<A>(
        "pgd",
        &AttackParams {
            eps,
            steps: 10,
            ..Default::default()
        },
    )
    .unwrap();
    let adv = pgd.perturb(&model, x.clone(), y.clone(), &mut rng);
    close(&adv.into_data().to_vec::<f32>().unwrap(), &want);
    // CW on a linear model has the same sign gradient.
    let cw = by_name::<A>(
        "cw",
        &AttackParams {
            eps,
            steps: 10,
            ..Default::default()
        },
    )
    .unwrap();
    let adv = cw.perturb(&model, x, y, &mut rng);
    close(&adv.into_data().to_vec::<f32>().unwrap(), &want);
}

#[test]
fn pgd_with_one_step_from_the_clean_point_is_fgsm_with_alpha() {
    let (model, diff, x, y) = setup();
    let xv = x.clone().into_data().to_vec::<f32>().unwrap();
    let pgd = Pgd {
        eps: 0.1,
        alpha: 0.03,
        steps: 1,
        restarts: 1,
        random_start: false,
    };
    let adv = Attack::<A>::perturb(&pgd, &model, x, y, &mut Rng::new(3));
    close(
        &adv.into_data().to_vec::<f32>().unwrap(),
        &expected(&xv, &diff, [0.0, 1.0], 0.03),
    );
}

fn small_vit() -> (Vit<A>, Tensor<Cpu, 4>, Tensor<Cpu, 1, Int>) {
    let dev = Default::default();
    let mut cfg = VitConfig::vit_tiny_fmnist();
    cfg.embed_dim = 16;
    cfg.depth = 1;
    cfg.num_heads = 2;
    <A as Backend>::seed(&dev, 17);
    let vit = Vit::<A>::init(&cfg, &dev).no_grad();
    let mut rng = Rng::new(11);
    let x = Tensor::from_data(
        TensorData::new(rng.uniform_vec(6 * 784, 0.0, 1.0), [6, 1, 28, 28]),
        &dev,
    );
    // Labels = the model's own clean predictions, so clean accuracy is 1.
    let y = predict(&vit.valid(), x.clone());
    (vit, x, y)
}

#[test]
fn every_attack_stays_in_the_ball_and_in_range() {
    let (vit, x, y) = small_vit();
    let eps = 8.0 / 255.0;
    for name in ATTACKS {
        let p = AttackParams {
            eps,
            steps: 3,
            restarts: 2,
            ..Default::default()
        };
        let attack = by_name::<A>(name, &p).unwrap();
        let adv = attack.perturb(&vit, x.clone(), y.clone(), &mut Rng::new(5));
        let d = (adv.clone() - x.clone()).abs().max().into_scalar();
        assert!(d <= eps + 1e-6, "{name}: |delta| = {d}");
        assert!(
            adv.clone().min().into_scalar() >= 0.0 && adv.max().into_scalar() <= 1.0,
            "{name}"
        );
    }
}

#[test]
fn robust_accuracy_never_exceeds_clean_and_a_seed_fixes_the_result() {
    let (vit, x, y) = small_vit();
    let p = AttackParams {
        eps: 0.2,
        steps: 5,
        restarts: 2,
        ..Default::default()
    };
    let pgd = by_name::<A>("pgd", &p).unwrap();
    let a1 = pgd.perturb(&vit, x.clone(), y.clone(), &mut Rng::new(9));
    let a2 = pgd.perturb(&vit, x.clone(), y.clone(), &mut Rng::new(9));
    assert_eq!(a1.to_data(), a2.to_data());
    let inner = vit.valid();
    let clean = predict(&inner, x)
        .equal(y.clone())
        .int()
        .sum()
        .into_scalar();
    let robust = predict(&inner, a1).equal(y).int().sum().into_scalar();
    assert!(robust <= clean, "{robust} > {clean}");
}

#[test]
fn registry_refuses_bad_settings_by_name() {
    assert!(by_name::<A>("deepfool", &AttackParams::default()).is_err());
    assert!(
        by_name::<A>(
            "pgd",
            &AttackParams {
                eps: 0.0,
                ..Default::default()
            }
        )
        .is_err()
    );
    assert!(
        by_name::<A>(
            "pgd",
            &AttackParams {
                eps: 1.5,
                ..Default::default()
            }
        )
        .is_err()
    );
    assert!(
        by_name::<A>(
            "pgd",
            &AttackParams {
                steps: 0,
                ..Default::default()
            }
        )
        .is_err()
    );
}

#[test]
fn input_gradient_matches_finite_differences() {
    // Directional derivatives along the gradient and along a random direction: in f32 a
    // per-pixel difference quotient drowns in rounding, a step of L2 length 0.1 spread
    // over all pixels does not.
    let (vit, x, y) = small_vit();
    let yd = Tensor::<A, 1, Int>::from_inner(y.clone());
    let g = input_grad::<A>(&vit, x.clone(), |z| {
        crate::loss::cross_entropy_each(z, yd.clone()).sum()
    });
    let inner = vit.valid();
    let f = |x: Tensor<Cpu, 4>| -> f64 {
        crate::loss::cross_entropy_each(inner.forward(x), y.clone())
            .sum()
            .into_scalar() as f64
    };
    let norm = |t: &Tensor<Cpu, 4>| (t.clone().powi_scalar(2).sum().into_scalar() as f64).sqrt();
    let mut rng = Rng::new(4);
    let random = Tensor::<Cpu, 4>::from_data(
        TensorData::new(rng.normal_vec(6 * 784), [6, 1, 28, 28]),
        &Default::default(),
    );
    for dir in [g.clone(), random] {
        let d = dir.clone().div_scalar(norm(&dir) as f32);
        let h = 0.1f32;
        let fd = (f(x.clone() + d.clone().mul_scalar(h)) - f(x.clone() - d.clone().mul_scalar(h)))
            / (2.0 * h as f64);
        let analytic = (g.clone() * d).sum().into_scalar() as f64;
        assert!(
            (fd - analytic).abs() <= 0.02 * norm(&g),
            "fd {fd} vs analytic {analytic} (|g| {})",
            norm(&g)
        );
    }
}
