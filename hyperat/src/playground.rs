//! Single-image work for people looking at a model (the server's predict / attack /
//! compare, the browser's in-page inference): probabilities, one attacked image with
//! its perturbation, and the transfer matrix between variants.

use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::attack::{Attack, Classifier, inner_logits};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Class probabilities of one image and its best classes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Softmax of the logits, one per class.
    pub probs: Vec<f32>,
    /// The most likely class.
    pub class: usize,
    /// Up to five `(class, probability)` pairs, most likely first.
    pub top5: Vec<(usize, f32)>,
}

impl Prediction {
    /// From one row of probabilities.
    pub fn from_probs(probs: Vec<f32>) -> Self {
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let top5: Vec<(usize, f32)> = order.iter().take(5).map(|&i| (i, probs[i])).collect();
        Self {
            class: top5.first().map(|t| t.0).unwrap_or(0),
            top5,
            probs,
        }
    }
}

/// Images `[N, C, H, W]` from host pixels in [0,1] (`N·C·H·W` values).
pub fn images<B: Backend>(
    pixels: &[f32],
    shape: [usize; 3],
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let per = shape.iter().product::<usize>();
    if per == 0 || pixels.is_empty() || !pixels.len().is_multiple_of(per) {
        return Err(Error::Invalid(format!(
            "{} values are not a whole number of {:?} images",
            pixels.len(),
            shape
        )));
    }
    if pixels.iter().any(|p| !(0.0..=1.0).contains(p)) {
        return Err(Error::Invalid("pixels must lie in [0, 1]".into()));
    }
    let [c, h, w] = shape;
    Ok(Tensor::<B, 1>::from_floats(pixels, device).reshape([pixels.len() / per, c, h, w]))
}

/// Predictions for a batch of logits.
pub fn predictions<B: Backend>(logits: Tensor<B, 2>) -> Vec<Prediction> {
    let [n, k] = logits.dims();
    let probs: Vec<f32> = softmax(logits, 1)
        .into_data()
        .convert::<f32>()
        .to_vec()
        .unwrap();
    (0..n)
        .map(|i| Prediction::from_probs(probs[i * k..(i + 1) * k].to_vec()))
        .collect()
}

/// Predictions of `model` for `x` (no graph is kept).
pub fn predict<B: AutodiffBackend>(
    model: &dyn Classifier<B>,
    x: Tensor<B::InnerBackend, 4>,
) -> Vec<Prediction> {
    predictions(inner_logits(model, x))
}

/// One attacked image.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttackOutcome {
    /// The label the attack pushed away from (the given one, else the clean prediction).
    pub label: usize,
    /// Prediction on the clean image.
    pub clean: Prediction,
    /// Prediction on the adversarial image.
    pub adversarial: Prediction,
    /// Adversarial pixels in [0,1], `C·H·W`.
    pub adv_pixels: Vec<f32>,
    /// `x_adv − x`, `C·H·W`.
    pub delta: Vec<f32>,
    /// ‖δ‖∞.
    pub linf: f32,
    /// ‖δ‖₂.
    pub l2: f32,
}

impl AttackOutcome {
    /// Whether the attack changed a correct prediction into a wrong one.
    pub fn fooled(&self) -> bool {
        self.clean.class == self.label && self.adversarial.class != self.label
    }
}

/// The perturbation as an image: grey is zero, ±eps is black / white.
pub fn amplify(delta: &[f32], eps: f32) -> Vec<f32> {
    let k = 0.5 / eps.max(f32::MIN_POSITIVE);
    delta
        .iter()
        .map(|d| (0.5 + d * k).clamp(0.0, 1.0))
        .collect()
}

/// Attacks the images `x` (`[N, C, H, W]`, [0,1]) of `model`; `labels` are the true
/// classes where known (else the clean prediction is attacked).
pub fn attack_images<B: AutodiffBackend>(
    model: &dyn Classifier<B>,
    attack: &dyn Attack<B>,
    x: Tensor<B::InnerBackend, 4>,
    labels: Option<&[usize]>,
    seed: u64,
) -> Result<Vec<AttackOutcome>> {
    let [n, ..] = x.dims();
    let device = x.device();
    let clean = predict(model, x.clone());
    let labels: Vec<usize> = match labels {
        Some(l) if l.len() == n => l.to_vec(),
        Some(l) => {
            return Err(Error::Invalid(format!("{} labels for {n} images", l.len())));
        }
        None => clean.iter().map(|p| p.class).collect(),
    };
    let k = clean.first().map(|p| p.probs.len()).unwrap_or(0);
    if let Some(&bad) = labels.iter().find(|&&l| l >= k) {
        return Err(Error::Invalid(format!(
            "label {bad} is out of range for {k} classes"
        )));
    }
    let y = Tensor::<B::InnerBackend, 1, Int>::from_ints(
        labels
            .iter()
            .map(|&l| l as i64)
            .collect::<Vec<_>>()
            .as_slice(),
        &device,
    );
    let adv = attack.perturb(model, x.clone(), y, &mut Rng::new(seed));
    let adversarial = predict(model, adv.clone());
    let host = |t: Tensor<B::InnerBackend, 4>| -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec().unwrap()
    };
    let (adv_px, delta) = (host(adv.clone()), host(adv - x));
    let per = delta.len() / n.max(1);
    Ok((0..n)
        .map(|i| {
            let d = delta[i * per..(i + 1) * per].to_vec();
            AttackOutcome {
                label: labels[i],
                clean: clean[i].clone(),
                adversarial: adversarial[i].clone(),
                adv_pixels: adv_px[i * per..(i + 1) * per].to_vec(),
                linf: d.iter().fold(0f32, |m, v| m.max(v.abs())),
                l2: d.iter().map(|v| v * v).sum::<f32>().sqrt(),
                delta: d,
            }
        })
        .collect())
}

/// Attacks made on each model, evaluated on every model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Transfer {
    /// Per model: the attack made against it, evaluated on it.
    pub own: Vec<AttackOutcome>,
    /// `matrix[r][c]`: prediction of model `c` on the attack made against model `r`.
    pub matrix: Vec<Vec<Prediction>>,
}

/// For one image: an attack against every model, and every model's prediction on every
/// attack (one batched forward per model).
pub fn transfer<B: AutodiffBackend>(
    models: &[&dyn Classifier<B>],
    attack: &dyn Attack<B>,
    x: Tensor<B::InnerBackend, 4>,
    label: Option<usize>,
    seed: u64,
) -> Result<Transfer> {
    let [n, c, h, w] = x.dims();
    if n != 1 {
        return Err(Error::Invalid(format!("transfer takes one image, got {n}")));
    }
    let labels = label.map(|l| vec![l]);
    let mut own = Vec::with_capacity(models.len());
    for m in models {
        own.extend(attack_images(
            *m,
            attack,
            x.clone(),
            labels.as_deref(),
            seed,
        )?);
    }
    let advs: Vec<f32> = own
        .iter()
        .flat_map(|o| o.adv_pixels.iter().copied())
        .collect();
    let batch = images::<B::InnerBackend>(&advs, [c, h, w], &x.device())?;
    let by_column: Vec<Vec<Prediction>> =
        models.iter().map(|m| predict(*m, batch.clone())).collect();
    let matrix = (0..models.len())
        .map(|r| by_column.iter().map(|col| col[r].clone()).collect())
        .collect();
    Ok(Transfer { own, matrix })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attack::{AttackParams, by_name};
    use crate::backend::CpuAutodiff;
    use crate::{Vit, VitConfig};

    type A = CpuAutodiff;

    fn tiny() -> Vit<A> {
        let mut c = VitConfig::vit_tiny_fmnist();
        c.embed_dim = 16;
        c.depth = 1;
        c.num_heads = 2;
        c.patch_size = 7;
        Vit::<A>::init(&c, &Default::default()).no_grad()
    }

    #[test]
    fn prediction_orders_classes_by_probability() {
        let p = Prediction::from_probs(vec![0.1, 0.5, 0.05, 0.3, 0.02, 0.03]);
        assert_eq!(p.class, 1);
        let order: Vec<usize> = p.top5.iter().map(|t| t.0).collect();
        assert_eq!(order, vec![1, 3, 0, 2, 5]);
    }

    #[test]
    fn amplify_maps_eps_to_the_ends_and_zero_to_grey() {
        assert_eq!(
            amplify(&[-0.1, 0.0, 0.1, 0.3], 0.1),
            vec![0.0, 0.5, 1.0, 1.0]
        );
    }

    #[test]
    fn images_refuse_bad_sizes_and_ranges() {
        let d = Default::default();
        assert!(images::<crate::backend::Cpu>(&[0.5; 10], [1, 2, 2], &d).is_err());
        assert!(images::<crate::backend::Cpu>(&[1.5; 4], [1, 2, 2], &d).is_err());
        let t = images::<crate::backend::Cpu>(&[0.5; 8], [1, 2, 2], &d).unwrap();
        assert_eq!(t.dims(), [2, 1, 2, 2]);
    }

    #[test]
    fn attack_outcome_and_transfer_are_consistent() {
        let (m1, m2) = (tiny(), tiny());
        let d = Default::default();
        let mut rng = Rng::new(1);
        let px: Vec<f32> = (0..784).map(|_| rng.uniform()).collect();
        let x = images::<crate::backend::Cpu>(&px, [1, 28, 28], &d).unwrap();
        let params = AttackParams {
            eps: 0.1,
            steps: 5,
            ..Default::default()
        };
        let pgd = by_name::<A>("pgd", &params).unwrap();
        let out = attack_images::<A>(&m1, pgd.as_ref(), x.clone(), Some(&[3]), 7).unwrap();
        let o = &out[0];
        assert_eq!(o.label, 3);
        assert!(o.linf <= 0.1 + 1e-6 && o.linf > 0.0);
        assert!(o.adv_pixels.iter().all(|p| (0.0..=1.0).contains(p)));
        let s: f32 = o.adversarial.probs.iter().sum();
        assert!((s - 1.0).abs() < 1e-4);
        assert!(attack_images::<A>(&m1, pgd.as_ref(), x.clone(), Some(&[10]), 7).is_err());

        let models: Vec<&dyn Classifier<A>> = vec![&m1, &m2];
        let t = transfer::<A>(&models, pgd.as_ref(), x, Some(3), 7).unwrap();
        assert_eq!(t.matrix.len(), 2);
        for r in 0..2 {
            // The diagonal is each model on its own attack: the same as `own`.
            for (a, b) in t.matrix[r][r].probs.iter().zip(&t.own[r].adversarial.probs) {
                assert!((a - b).abs() < 1e-5);
            }
        }
        // Same seed and model: row 0 equals the single-image call.
        assert_eq!(t.own[0].adv_pixels, o.adv_pixels);
    }
}
