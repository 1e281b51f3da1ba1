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
    /// From one row of logits (a numerically stable softmax first).
    pub fn from_logits(logits: &[f32]) -> Self {
        let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = logits.iter().map(|v| (v - m).exp()).collect();
        let s: f32 = e.iter().sum();
        Self::from_probs(e.iter().map(|v| v / s).collect())
    }

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

    /// What happened, in the words a lesson uses.
    pub fn verdict(&self) -> Verdict {
        if self.clean.class != self.label {
            Verdict::AlreadyWrong
        } else if self.adversarial.class != self.label {
            Verdict::Fooled
        } else if self.linf == 0.0 {
            Verdict::NothingFound
        } else {
            Verdict::Held
        }
    }
}

/// The outcome of one attack on one image, as a lesson names it. An attack that returns
/// the clean image (APGD and FAB do when they find nothing) is told apart from one whose
/// perturbation the model withstood, so a flat grey δ does not read as a non-attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The model was wrong before the attack: nothing to fool.
    AlreadyWrong,
    /// Right on the clean image, wrong on the attacked one.
    Fooled,
    /// Right on both, under a nonzero perturbation.
    Held,
    /// The attack found no adversarial example within ε and returned the clean image.
    NothingFound,
}

impl Verdict {
    /// Its name on the wire (`fooled`, `held`, `nothing_found`, `already_wrong`).
    pub fn name(self) -> &'static str {
        match self {
            Verdict::AlreadyWrong => "already_wrong",
            Verdict::Fooled => "fooled",
            Verdict::Held => "held",
            Verdict::NothingFound => "nothing_found",
        }
    }

    /// One line for the result's heading. Without a true label (an upload) the attack
    /// pushes away from the model's own answer, so there is no "right" to speak of.
    pub fn headline(self, label_known: bool) -> &'static str {
        match self {
            Verdict::AlreadyWrong => "Already wrong on the clean image",
            Verdict::Fooled if !label_known => "The attack changed the model's answer",
            Verdict::Fooled => "The attack fooled the model",
            Verdict::Held if !label_known => "The model's answer did not change",
            Verdict::Held => "The model held",
            Verdict::NothingFound => {
                "No adversarial example found within ε: the attack returned the clean image"
            }
        }
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

/// A test image to open a lesson on, with how the undefended and the robust model fare.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Showcase {
    /// Position in the images ranked.
    pub index: usize,
    /// The true class (both models get it right on the clean image).
    pub label: usize,
    /// Whether the attack fools the undefended model.
    pub base_fooled: bool,
    /// Whether the robust model keeps the right class under its own attack.
    pub robust_held: bool,
    /// Clean top-1 probabilities of the two models.
    pub base_confidence: f32,
    /// See `base_confidence`.
    pub robust_confidence: f32,
}

/// Ranks images `x` with true `labels` for a lesson: only those that both `base` and
/// `robust` classify right, first those where `attack` fools the base model and the
/// robust one holds (the point of the lesson); within each group one image per class
/// first (a lesson shows several kinds of clothing), by the robust model's confidence.
/// Each model is attacked on its own (white-box), one batch per model.
pub fn showcase<B: AutodiffBackend>(
    base: &dyn Classifier<B>,
    robust: &dyn Classifier<B>,
    attack: &dyn Attack<B>,
    x: Tensor<B::InnerBackend, 4>,
    labels: &[usize],
    seed: u64,
) -> Result<Vec<Showcase>> {
    let on_base = attack_images(base, attack, x.clone(), Some(labels), seed)?;
    let on_robust = attack_images(robust, attack, x, Some(labels), seed)?;
    let top = |p: &Prediction| p.probs.get(p.class).copied().unwrap_or(0.0);
    let mut picks: Vec<Showcase> = on_base
        .iter()
        .zip(&on_robust)
        .enumerate()
        .filter(|(_, (b, r))| b.clean.class == b.label && r.clean.class == r.label)
        .map(|(index, (b, r))| Showcase {
            index,
            label: b.label,
            base_fooled: b.fooled(),
            robust_held: !r.fooled(),
            base_confidence: top(&b.clean),
            robust_confidence: top(&r.clean),
        })
        .collect();
    let point = |s: &Showcase| s.base_fooled && s.robust_held;
    picks.sort_by(|a, b| {
        b.robust_confidence
            .total_cmp(&a.robust_confidence)
            .then(a.index.cmp(&b.index))
    });
    // Rank within its class (0 = the class's most confident image), then stable-sort.
    let mut seen = std::collections::HashMap::new();
    let mut keyed: Vec<(bool, usize, Showcase)> = picks
        .into_iter()
        .map(|s| {
            let r = seen.entry((point(&s), s.label)).or_insert(0usize);
            *r += 1;
            (point(&s), *r, s)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    Ok(keyed.into_iter().map(|k| k.2).collect())
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

    /// `m1` on dark images; on bright ones (mean above 0.5) its logits negated, so its
    /// answer changes: a second model that agrees with `m1` on a known half.
    struct DarkOnly<'a>(&'a Vit<A>);

    impl Classifier<A> for DarkOnly<'_> {
        fn logits(&self, x: Tensor<A, 4>) -> Tensor<A, 2> {
            let [b, ..] = x.dims();
            let bright = x
                .clone()
                .reshape([b, 784])
                .mean_dim(1)
                .greater_elem(0.5)
                .float();
            self.0.logits(x) * (bright * -2.0 + 1.0)
        }
    }

    #[test]
    fn showcase_keeps_images_both_models_get_right_point_first() {
        let m1 = tiny();
        let m2 = DarkOnly(&m1);
        let d = Default::default();
        let mut rng = Rng::new(2);
        let n = 24;
        // Half dark (pixels in [0, 0.4]), half bright ([0.6, 1]).
        let px: Vec<f32> = (0..n * 784)
            .map(|k| 0.4 * rng.uniform() + if k / 784 >= n / 2 { 0.6 } else { 0.0 })
            .collect();
        let x = images::<crate::backend::Cpu>(&px, [1, 28, 28], &d).unwrap();
        let labels: Vec<usize> = predict::<A>(&m1, x.clone())
            .iter()
            .map(|p| p.class)
            .collect();
        let robust_right: Vec<bool> = predict::<A>(&m2, x.clone())
            .iter()
            .zip(&labels)
            .map(|(p, &l)| p.class == l)
            .collect();
        let params = AttackParams {
            eps: 0.1,
            steps: 3,
            ..Default::default()
        };
        let pgd = by_name::<A>("pgd", &params).unwrap();
        let picks = showcase::<A>(&m1, &m2, pgd.as_ref(), x, &labels, 0).unwrap();
        let kept: Vec<usize> = picks.iter().map(|s| s.index).collect();
        let want: Vec<usize> = (0..n).filter(|&i| robust_right[i]).collect();
        assert!(
            !want.is_empty() && want.len() < n,
            "the case filters something"
        );
        let mut sorted = kept.clone();
        sorted.sort();
        assert_eq!(sorted, want, "exactly the images both get right");
        let point = |s: &Showcase| s.base_fooled && s.robust_held;
        assert!(
            picks.windows(2).all(|w| point(&w[0]) >= point(&w[1])),
            "lesson images first"
        );
        // Within a group, no class repeats before every class of the group appeared.
        for group in [true, false] {
            let labels: Vec<usize> = picks
                .iter()
                .filter(|s| point(s) == group)
                .map(|s| s.label)
                .collect();
            let distinct = labels
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len();
            let head: std::collections::HashSet<_> = labels.iter().take(distinct).collect();
            assert_eq!(head.len(), distinct, "{labels:?}");
        }
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

    #[test]
    fn verdicts_tell_a_held_model_from_an_attack_that_found_nothing() {
        let p = |class| Prediction::from_probs((0..3).map(|c| (c == class) as u8 as f32).collect());
        let outcome = |clean, adv, linf| AttackOutcome {
            label: 1,
            clean: p(clean),
            adversarial: p(adv),
            adv_pixels: vec![],
            delta: vec![],
            linf,
            l2: linf,
        };
        assert_eq!(outcome(0, 1, 0.1).verdict(), Verdict::AlreadyWrong);
        assert_eq!(outcome(1, 2, 0.1).verdict(), Verdict::Fooled);
        assert_eq!(outcome(1, 1, 0.1).verdict(), Verdict::Held);
        assert_eq!(outcome(1, 1, 0.0).verdict(), Verdict::NothingFound);
        assert!(
            Verdict::NothingFound
                .headline(true)
                .contains("No adversarial example found")
        );
        // Without a true label the attack only changes the model's own answer.
        assert!(!Verdict::Fooled.headline(false).contains("fooled"));
        let wire = serde_json::to_value(Verdict::NothingFound).unwrap();
        assert_eq!(wire, "nothing_found");
    }
}
