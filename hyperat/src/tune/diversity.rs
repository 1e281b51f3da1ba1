//! A penalty that keeps HyperAT's per-method LoRAs apart **(ours, not in the paper)**.
//!
//! Trained on one shared hypernetwork, the defenses' objectives agree (each attacks with
//! PGD and rewards the right class on the attacked image), and nothing rewards keeping
//! the methods apart: over ten epochs their generated deltas converge to one (pairwise
//! cosine 0.97, `docs/results-fashion-mnist.md`), and merging them only rescales it. With
//! `method_diversity` λ > 0 each step adds λ times the mean, over the adapted weights and
//! the method pairs, of the squared cosine between two methods' deltas: orthogonal deltas
//! cost nothing, identical or opposite ones cost λ. Pushed to orthogonal, some methods
//! stop learning (`docs/sweep-distinct-fashion-mnist.md`); with a margin m
//! (`method_diversity_margin`) a pair costs `max(0, cos² − m²)` instead, so the penalty only
//! stops the deltas from converging past cosine m and leaves them alone below it.

use burn::prelude::*;

use crate::vit::{Adapters, Target};

/// Mean over (block, target, method pair) of `max(0, cos²(ΔW_i, ΔW_j) − margin²)`, the
/// cosine taken over the deltas' entries; a scalar tensor on the adapters' graph (0 with
/// fewer than two methods). Each delta is `A·B` (`[in, r]·[r, out]`, its scaling cancels
/// in the cosine), and `⟨A_i B_i, A_j B_j⟩ = Σ (A_iᵀ A_j) ⊙ (B_i B_jᵀ)` needs only `r × r`
/// products.
pub fn delta_similarity<B: Backend>(
    methods: &[Adapters<B>],
    margin: f64,
    device: &B::Device,
) -> Tensor<B, 1> {
    let margin2 = (margin * margin) as f32;
    let inner = |a: (&Tensor<B, 2>, &Tensor<B, 2>), b: (&Tensor<B, 2>, &Tensor<B, 2>)| {
        let left = a.0.clone().transpose().matmul(b.0.clone());
        let right = a.1.clone().matmul(b.1.clone().transpose());
        (left * right).sum()
    };
    let mut total = Tensor::<B, 1>::zeros([1], device);
    let mut terms = 0usize;
    let Some(first) = methods.first() else {
        return total;
    };
    for layer in 0..first.blocks.len() {
        for target in Target::ALL {
            let factors: Vec<_> = methods
                .iter()
                .filter_map(|m| m.blocks[layer].get(target))
                .map(|d| (&d.lora_a, &d.lora_b))
                .collect();
            if factors.len() != methods.len() {
                continue;
            }
            let norms: Vec<_> = factors.iter().map(|&f| inner(f, f)).collect();
            for i in 0..factors.len() {
                for j in i + 1..factors.len() {
                    let dot = inner(factors[i], factors[j]);
                    let cos2 = dot.powi_scalar(2) / (norms[i].clone() * norms[j].clone() + 1e-12);
                    total = total + (cos2 - margin2).clamp_min(0.0);
                    terms += 1;
                }
            }
        }
    }
    if terms == 0 {
        total
    } else {
        total / terms as f32
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Autodiff;
    use burn::tensor::Distribution;

    use super::*;
    use crate::backend::Cpu;
    use crate::vit::{BlockDeltas, LinearDelta};

    type A = Autodiff<Cpu>;

    fn delta(a: Tensor<A, 2>, b: Tensor<A, 2>) -> LinearDelta<A> {
        LinearDelta {
            lora_a: a,
            lora_b: b,
            scaling: 2.0,
            input_norm: None,
        }
    }

    /// One block with qkv and fc1 deltas.
    fn adapters(qkv: LinearDelta<A>, fc1: LinearDelta<A>) -> Adapters<A> {
        let mut block = BlockDeltas::default();
        block.0[Target::Qkv.index()] = Some(qkv);
        block.0[Target::Fc1.index()] = Some(fc1);
        Adapters {
            blocks: vec![block],
        }
    }

    fn random(shape: [usize; 2], seed: u64) -> Tensor<A, 2> {
        let dev = Default::default();
        A::seed(&dev, seed);
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &dev)
    }

    fn dense_cos2(x: &LinearDelta<A>, y: &LinearDelta<A>) -> f64 {
        let flat = |d: &LinearDelta<A>| {
            let w = d.lora_a.clone().matmul(d.lora_b.clone());
            w.into_data().to_vec::<f32>().unwrap()
        };
        let (p, q) = (flat(x), flat(y));
        let dot: f64 = p
            .iter()
            .zip(&q)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum();
        let n = |v: &[f32]| v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>();
        dot * dot / (n(&p) * n(&q))
    }

    #[test]
    fn equals_the_dense_squared_cosine_and_sees_identical_opposite_and_orthogonal_deltas() {
        let dev = Default::default();
        let (a1, b1) = (random([12, 3], 1), random([3, 20], 2));
        let (a2, b2) = (random([12, 3], 3), random([3, 20], 4));
        let (x, y) = (delta(a1.clone(), b1.clone()), delta(a2.clone(), b2.clone()));
        let want = dense_cos2(&x, &y);
        // Two weights of the pair: the mean of their two terms.
        let pair = [
            adapters(x.clone(), x.clone()),
            adapters(y.clone(), delta(a1.clone(), -b1.clone())),
        ];
        let got = delta_similarity(&pair, 0.0, &dev)
            .into_scalar()
            .elem::<f64>();
        assert!((got - (want + 1.0) / 2.0).abs() < 1e-5, "{got} vs {want}");
        // Deltas on disjoint rows are orthogonal: no penalty.
        let top = Tensor::cat(vec![a1.clone(), Tensor::zeros([12, 3], &dev)], 0);
        let bottom = Tensor::cat(vec![Tensor::zeros([12, 3], &dev), a2.clone()], 0);
        let apart = [
            adapters(delta(top.clone(), b1.clone()), delta(top, b1.clone())),
            adapters(delta(bottom.clone(), b2.clone()), delta(bottom, b2.clone())),
        ];
        let got = delta_similarity(&apart, 0.0, &dev)
            .into_scalar()
            .elem::<f64>();
        assert!(got.abs() < 1e-9, "{got}");
        // One method: nothing to compare.
        let one = delta_similarity(&pair[..1], 0.0, &dev)
            .into_scalar()
            .elem::<f64>();
        assert_eq!(one, 0.0);
    }

    /// Twenty normalised gradient steps on the penalty with `margin`, moving one of two
    /// nearly equal deltas; the squared cosine (no margin) before and after.
    fn descend(margin: f64) -> (f64, f64) {
        let dev = Default::default();
        let (a1, b) = (random([16, 4], 5), random([4, 8], 6));
        // Method 1's delta on both weights, method 2's from `a` (the only thing moved).
        let penalty = |a: &Tensor<A, 2>, margin: f64| {
            let both = |x: &Tensor<A, 2>| {
                adapters(delta(x.clone(), b.clone()), delta(x.clone(), b.clone()))
            };
            delta_similarity(&[both(&a1), both(a)], margin, &dev)
        };
        let cos2 = |a: &Tensor<A, 2>| penalty(a, 0.0).into_scalar().elem::<f64>();
        let mut a2 = a1.clone() + random([16, 4], 7).mul_scalar(0.1);
        let before = cos2(&a2);
        for _ in 0..20 {
            let a = a2.clone().detach().require_grad();
            let sim = penalty(&a, margin);
            if sim.clone().into_scalar().elem::<f64>() == 0.0 {
                break; // below the margin: nothing pulls any more
            }
            let grads = sim.backward();
            // Normalised steps of a tenth of the factor's norm: the test is about the
            // direction the penalty pulls in, not about a learning rate.
            let g = a.grad(&grads).expect("a gradient");
            let size = a.clone().inner().powi_scalar(2).sum().sqrt()
                / g.clone().powi_scalar(2).sum().sqrt();
            let step = g * size.mul_scalar(0.1).unsqueeze::<2>();
            a2 = Tensor::from_inner(a.inner() - step);
        }
        (before, cos2(&a2))
    }

    #[test]
    fn gradient_steps_on_the_penalty_pull_the_deltas_apart() {
        let (before, after) = descend(0.0);
        assert!(before > 0.9, "nearly the same delta: {before}");
        assert!(after < 0.5 * before, "{before} -> {after}");
    }

    #[test]
    fn a_margin_counts_only_the_excess_and_stops_the_pull_there() {
        let dev = Default::default();
        let (x, y) = (
            delta(random([12, 3], 1), random([3, 20], 2)),
            delta(random([12, 3], 3), random([3, 20], 4)),
        );
        let want = dense_cos2(&x, &y);
        let opposite = delta(x.lora_a.clone(), -x.lora_b.clone());
        let pair = [adapters(x.clone(), x.clone()), adapters(y, opposite)];
        let with = |margin: f64| {
            delta_similarity(&pair, margin, &dev)
                .into_scalar()
                .elem::<f64>()
        };
        // Above the margin on both weights: each term loses margin².
        let m = (want / 4.0).sqrt();
        let got = with(m);
        assert!(
            (got - (want + 1.0 - 2.0 * m * m) / 2.0).abs() < 1e-5,
            "{got} vs {want}"
        );
        // The unrelated pair falls below a margin of twice its cosine and costs nothing.
        let m = 2.0 * want.sqrt();
        let got = with(m);
        assert!((got - (1.0 - m * m) / 2.0).abs() < 1e-5, "{got} vs {want}");

        // Pulled apart from nearly equal, a pair stops near the margin's cosine (0.8,
        // cos² 0.64), where it would go on down without one.
        let (before, after) = descend(0.8);
        let (_, free) = descend(0.0);
        assert!(before > 0.9 && after < 0.7, "{before} -> {after}");
        assert!(
            after > 0.5 && after > free + 0.1,
            "{after} vs {free} without a margin"
        );
    }
}
