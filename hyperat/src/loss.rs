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
        let m = cw_margin(t2(&z), y).into_data().to_vec::<f32>().unwrap();
        assert!((m[0] - (1.0 - 2.0)).abs() < 1e-5 && (m[1] - 3.0).abs() < 1e-5);
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
