//! Losses shared by attacks and defenses, on logits `[batch, classes]`.

use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};

/// One-hot `[batch, classes]` of integer labels.
pub fn one_hot<B: Backend>(y: Tensor<B, 1, Int>, classes: usize) -> Tensor<B, 2> {
    y.one_hot(classes).float()
}

/// Per-sample cross-entropy `[batch]`.
pub fn cross_entropy_each<B: Backend>(logits: Tensor<B, 2>, y: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let [b, k] = logits.dims();
    let logp = log_softmax(logits, 1);
    (logp * one_hot(y, k)).sum_dim(1).reshape([b]).neg()
}

/// Mean cross-entropy (PyTorch's `F.cross_entropy` default).
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, y: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    cross_entropy_each(logits, y).mean()
}

/// Per-sample `KL(p || q)` `[batch]` with `p = softmax(p_logits)` treated as given and
/// `q = softmax(q_logits)` (PyTorch's `KLDivLoss(log_softmax(q), softmax(p))` summed
/// over classes).
pub fn kl_each<B: Backend>(p_logits: Tensor<B, 2>, q_logits: Tensor<B, 2>) -> Tensor<B, 1> {
    let [b, _] = p_logits.dims();
    let logp = log_softmax(p_logits, 1);
    let p = logp.clone().exp();
    (p * (logp - log_softmax(q_logits, 1)))
        .sum_dim(1)
        .reshape([b])
}

/// Carlini–Wagner margin `max_{j != y} z_j - z_y` per sample `[batch]`.
pub fn cw_margin<B: Backend>(logits: Tensor<B, 2>, y: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let [b, k] = logits.dims();
    let onehot = one_hot(y, k);
    let real = (logits.clone() * onehot.clone()).sum_dim(1);
    // Push the true class far below every other logit before the max (as the reference code).
    let other = (logits - onehot.mul_scalar(1e4)).max_dim(1);
    (other - real).reshape([b])
}

/// Logits at `idx` (`[batch]` class indices), differentiable in `logits`.
fn pick<B: Backend>(logits: &Tensor<B, 2>, idx: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let b = logits.dims()[0];
    logits.clone().gather(1, idx.reshape([b, 1])).reshape([b])
}

/// Class indices by decreasing logit (no gradient needed: only the logits are picked).
fn ranked<B: Backend>(logits: &Tensor<B, 2>) -> Tensor<B, 2, Int> {
    logits.clone().detach().argsort_descending(1)
}

/// The `k`-th largest logit per sample (0 = largest), given the ranking.
fn kth<B: Backend>(logits: &Tensor<B, 2>, order: &Tensor<B, 2, Int>, k: usize) -> Tensor<B, 1> {
    let b = logits.dims()[0];
    pick(logits, order.clone().narrow(1, k, 1).reshape([b]))
}

/// Croce & Hein's difference-of-logits-ratio loss per sample (to be maximised):
/// `-(z_y - max_{i≠y} z_i) / (z_π1 - z_π3 + 1e-12)`, π sorting the logits decreasingly.
/// Needs at least 3 classes.
pub fn dlr_each<B: Backend>(logits: Tensor<B, 2>, y: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let order = ranked(&logits);
    let b = logits.dims()[0];
    let top_is_y = order
        .clone()
        .narrow(1, 0, 1)
        .reshape([b])
        .equal(y.clone())
        .float();
    let (z1, z2, z3) = (
        kth(&logits, &order, 0),
        kth(&logits, &order, 1),
        kth(&logits, &order, 2),
    );
    let zy = pick(&logits, y);
    let other = z2 * top_is_y.clone() + z1.clone() * top_is_y.neg().add_scalar(1.0);
    (zy - other).neg().div((z1 - z3).add_scalar(1e-12))
}

/// The targeted DLR loss per sample (to be maximised):
/// `-(z_y - z_t) / (z_π1 - (z_π3 + z_π4)/2 + 1e-12)`. Needs at least 4 classes.
pub fn dlr_targeted_each<B: Backend>(
    logits: Tensor<B, 2>,
    y: Tensor<B, 1, Int>,
    target: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let order = ranked(&logits);
    let (z1, z3, z4) = (
        kth(&logits, &order, 0),
        kth(&logits, &order, 2),
        kth(&logits, &order, 3),
    );
    let (zy, zt) = (pick(&logits, y), pick(&logits, target));
    (zy - zt)
        .neg()
        .div((z1 - (z3 + z4).mul_scalar(0.5)).add_scalar(1e-12))
}

/// Softmax probabilities.
pub fn probs<B: Backend>(logits: Tensor<B, 2>) -> Tensor<B, 2> {
    softmax(logits, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    type T = Flex;

    fn t2(v: &[[f32; 3]]) -> Tensor<T, 2> {
        let flat: Vec<f32> = v.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [v.len(), 3]), &Default::default())
    }

    #[test]
    fn matches_hand_computation() {
        let z = [[1.0f32, 2.0, 0.5], [0.0, -1.0, 3.0]];
        let y = Tensor::<T, 1, Int>::from_ints([1, 0], &Default::default());
        let ce = cross_entropy_each(t2(&z), y.clone())
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        for (i, row) in z.iter().enumerate() {
            let lse = row.iter().map(|v| v.exp()).sum::<f32>().ln();
            let label = [1, 0][i];
            assert!((ce[i] - (lse - row[label])).abs() < 1e-5);
        }
        let m = cw_margin(t2(&z), y.clone())
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert!((m[0] - (1.0 - 2.0)).abs() < 1e-5 && (m[1] - 3.0).abs() < 1e-5);
        // DLR: sample 0 (y=1 is the top class): -(2 - 1) / (2 - 0.5); sample 1 (y=0, top 3):
        // -(0 - 3) / (3 - (-1)).
        let d = dlr_each(t2(&z), y.clone())
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert!(
            (d[0] + 1.0 / 1.5).abs() < 1e-6 && (d[1] - 3.0 / 4.0).abs() < 1e-6,
            "{d:?}"
        );
        let q = [[0.0f32, 0.0, 0.0], [1.0, 1.0, 1.0]];
        let kl = kl_each(t2(&z), t2(&q)).into_data().to_vec::<f32>().unwrap();
        for (i, row) in z.iter().enumerate() {
            let lse = row.iter().map(|v| v.exp()).sum::<f32>().ln();
            let want: f32 = row
                .iter()
                .map(|v| {
                    let p = (v - lse).exp();
                    p * ((v - lse) - (1.0f32 / 3.0).ln())
                })
                .sum();
            assert!((kl[i] - want).abs() < 1e-5, "{} vs {want}", kl[i]);
        }
    }
}

#[cfg(test)]
mod dlr_tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};

    #[test]
    fn targeted_dlr_matches_hand_computation_and_has_gradients() {
        type A = Autodiff<Flex>;
        let dev = Default::default();
        let z = Tensor::<A, 2>::from_data(
            TensorData::new(vec![1.0f32, 4.0, 2.0, 0.5, 3.0], [1, 5]),
            &dev,
        )
        .require_grad();
        let y = Tensor::<A, 1, Int>::from_ints([2], &dev);
        let t = Tensor::<A, 1, Int>::from_ints([4], &dev);
        let l = dlr_targeted_each(z.clone(), y, t);
        // sorted: 4, 3, 2, 1, 0.5 -> -(2 - 3) / (4 - (2 + 1)/2)
        let want = 1.0 / (4.0 - 1.5);
        assert!((l.clone().into_scalar() - want).abs() < 1e-6);
        let g = z
            .grad(&l.backward())
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        // d/dz_y = -1/den, d/dz_t = +1/den; the top and the 3rd/4th logits move the denominator.
        assert!(
            (g[2] - (-1.0 / 2.5 + 0.5 * want / 2.5)).abs() < 1e-5,
            "{g:?}"
        );
        assert!((g[4] - 1.0 / 2.5).abs() < 1e-5, "{g:?}");
    }
}
