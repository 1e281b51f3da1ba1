//! Each outer loss against an independent f64 computation on hand-set logits.

use burn::prelude::*;

use super::*;
use crate::backend::CpuAutodiff;

type A = CpuAutodiff;

const CLEAN: [[f64; 3]; 2] = [[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]];
const ADV: [[f64; 3]; 2] = [[0.3, 1.5, -0.2], [1.0, -0.5, 0.8]];
const Y: [usize; 2] = [0, 2];

fn t(v: &[[f64; 3]; 2]) -> Tensor<A, 2> {
    let flat: Vec<f32> = v.iter().flatten().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(flat, [2, 3]), &Default::default())
}

fn y() -> Tensor<A, 1, Int> {
    Tensor::from_data(
        TensorData::new(Y.iter().map(|&v| v as i64).collect::<Vec<_>>(), [2]),
        &Default::default(),
    )
}

fn softmax(z: &[f64; 3]) -> [f64; 3] {
    let m = z.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    [e[0] / s, e[1] / s, e[2] / s]
}

fn ce(z: &[f64; 3], y: usize) -> f64 {
    -softmax(z)[y].ln()
}

fn kl(p: &[f64; 3], q: &[f64; 3]) -> f64 {
    (0..3).map(|k| p[k] * (p[k].ln() - q[k].ln())).sum()
}

fn loss(name: &str) -> f64 {
    let p = DefenseParams::default();
    let d = by_name::<A>(name, &p).unwrap();
    let clean = d.needs_clean().then(|| t(&CLEAN));
    d.outer_loss(clean, t(&ADV), y()).into_scalar() as f64
}

fn close(got: f64, want: f64) {
    assert!(
        (got - want).abs() < 1e-5 * want.abs().max(1.0),
        "{got} vs {want}"
    );
}

#[test]
fn pgd_at_and_fgsm_rs_are_adversarial_cross_entropy() {
    let want = (ce(&ADV[0], Y[0]) + ce(&ADV[1], Y[1])) / 2.0;
    close(loss("pgd-at"), want);
    close(loss("fgsm-rs"), want);
}

#[test]
fn trades_is_clean_ce_plus_beta_kl() {
    let mut want = 0.0;
    for i in 0..2 {
        want += ce(&CLEAN[i], Y[i]) + 6.0 * kl(&softmax(&CLEAN[i]), &softmax(&ADV[i]));
    }
    close(loss("trades"), want / 2.0);
}

#[test]
fn mart_matches_the_reference_formula() {
    let mut want = 0.0;
    for i in 0..2 {
        let pa = softmax(&ADV[i]);
        let pn = softmax(&CLEAN[i]);
        let wrong = (0..3)
            .filter(|&k| k != Y[i])
            .map(|k| pa[k])
            .fold(0.0, f64::max);
        let bce = ce(&ADV[i], Y[i]) - (1.0001 - wrong + 1e-12).ln();
        let klv: f64 = (0..3)
            .map(|k| pn[k] * (pn[k].ln() - (pa[k] + 1e-12).ln()))
            .sum();
        want += bce + 6.0 * klv * (1.000_000_1 - pn[Y[i]]);
    }
    close(loss("mart"), want / 2.0);
}

#[test]
fn losses_have_gradients_for_both_logit_sets() {
    for name in ["trades", "mart"] {
        let d = by_name::<A>(name, &DefenseParams::default()).unwrap();
        let c = t(&CLEAN).require_grad();
        let a = t(&ADV).require_grad();
        let g = d.outer_loss(Some(c.clone()), a.clone(), y()).backward();
        for (what, x) in [("clean", &c), ("adv", &a)] {
            let s = x.grad(&g).unwrap().abs().sum().into_scalar();
            assert!(s > 0.0, "{name}: no gradient for {what} logits");
        }
    }
}

#[test]
fn registry_and_lists() {
    assert!(by_name::<A>("awp", &DefenseParams::default()).is_err());
    assert!(
        by_name::<A>(
            "trades",
            &DefenseParams {
                beta: -1.0,
                ..Default::default()
            }
        )
        .is_err()
    );
    assert_eq!(
        parse_list("pgd-at, trades,mart").unwrap(),
        vec!["pgd-at", "trades", "mart"]
    );
    assert!(parse_list("pgd-at,pgd-at").is_err());
    assert!(
        parse_list("pgd-at,nope")
            .unwrap_err()
            .to_string()
            .contains("nope")
    );
    for name in DEFENSES {
        assert_eq!(
            by_name::<A>(name, &DefenseParams::default())
                .unwrap()
                .name(),
            *name
        );
    }
}
