//! Predictions and attacks on the wire: one image through a model, an attack on it, every
//! variant attacked, the test images to pick from, and errors.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::inspect::{Prediction, Verdict};

/// A model's answer on one image.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PredictionView {
    /// The predicted class.
    pub class: usize,
    /// Its name.
    pub name: String,
    /// Its probability.
    pub confidence: f32,
    /// Softmax probabilities, one per class.
    pub probs: Vec<f32>,
    /// The five most likely classes, most likely first.
    pub top5: Vec<ClassProb>,
}

impl PredictionView {
    /// A prediction with its classes named (`class N` past the end of `classes`).
    pub fn of(p: &Prediction, classes: &[String]) -> Self {
        let name = |i: usize| {
            classes
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("class {i}"))
        };
        Self {
            class: p.class,
            name: name(p.class),
            confidence: p.probs.get(p.class).copied().unwrap_or(0.0),
            probs: p.probs.clone(),
            top5: p
                .top5
                .iter()
                .map(|&(class, prob)| ClassProb {
                    class,
                    name: name(class),
                    prob,
                })
                .collect(),
        }
    }

    /// The probability of class `c` (0 where there is none).
    pub fn prob(&self, c: usize) -> f32 {
        self.probs.get(c).copied().unwrap_or(0.0)
    }
}

/// A class and its probability.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ClassProb {
    /// Class index.
    pub class: usize,
    /// Class name.
    pub name: String,
    /// Probability.
    pub prob: f32,
}

/// `POST /api/predict`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PredictResponse {
    /// The model's id.
    pub model: String,
    /// The variant that answered.
    pub variant: String,
    /// Its answer.
    pub prediction: PredictionView,
    /// Server-side time of the forward pass, ms.
    pub latency_ms: f64,
}

/// One attack's outcome on one image, against one variant.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AttackView {
    /// The class the attack pushed away from (the true one where known).
    pub label: usize,
    /// Its name.
    pub label_name: Option<String>,
    /// The answer on the clean image.
    pub clean: PredictionView,
    /// The answer on the attacked image.
    pub adversarial: PredictionView,
    /// Whether the clean answer is `label`.
    pub clean_correct: bool,
    /// Whether the attacked answer is `label`.
    pub adversarial_correct: bool,
    /// Right before, wrong after.
    pub fooled: bool,
    /// What happened, in one word.
    pub verdict: Verdict,
    /// What happened, in one line for people.
    pub headline: String,
    /// Whether `label` is the true class (a sample, or an upload with its class).
    pub label_known: bool,
    /// Largest pixel change.
    pub linf: f32,
    /// L2 norm of the change.
    pub l2: f32,
    /// The attacked image, a PNG data URL.
    pub adversarial_png: String,
    /// The change, amplified to be seen, a PNG data URL.
    pub perturbation_png: String,
}

#[cfg(feature = "image")]
impl AttackView {
    /// An attack's outcome on one image of `shape` as the API shows it: answers named,
    /// the attacked image and the change amplified to ±`eps` as PNG data URLs.
    pub fn of(
        o: &crate::inspect::AttackOutcome,
        label_known: bool,
        classes: &[String],
        shape: [usize; 3],
        eps: f32,
    ) -> crate::Result<Self> {
        use crate::data::png_data_url;
        Ok(Self {
            label: o.label,
            label_name: classes.get(o.label).cloned(),
            clean: PredictionView::of(&o.clean, classes),
            adversarial: PredictionView::of(&o.adversarial, classes),
            clean_correct: o.clean.class == o.label,
            adversarial_correct: o.adversarial.class == o.label,
            fooled: o.fooled(),
            verdict: o.verdict(),
            headline: o.verdict().headline(label_known).into(),
            label_known,
            linf: o.linf,
            l2: o.l2,
            adversarial_png: png_data_url(&o.adv_pixels, shape)?,
            perturbation_png: png_data_url(&crate::inspect::amplify(&o.delta, eps), shape)?,
        })
    }
}

/// `POST /api/attack`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AttackResponse {
    /// The outcome.
    #[serde(flatten)]
    pub outcome: AttackView,
    /// The model's id.
    pub model: String,
    /// The variant attacked.
    pub variant: String,
    /// The attack and every setting it ran with.
    pub attack: AttackSettings,
    /// The clean image, a PNG data URL.
    pub clean_png: String,
    /// Where the image came from (`{"upload": …}` or `{"dataset": …, "sample": …}`).
    pub source: Value,
    /// Server-side time, ms.
    pub ms: f64,
}

/// `POST /api/compare`: every variant attacked, and how each attack transfers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CompareResponse {
    /// The model's id.
    pub model: String,
    /// Its variants, in the order of `rows` and of the matrix.
    pub variants: Vec<String>,
    /// The attack and every setting it ran with.
    pub attack: AttackSettings,
    /// The class every attack pushed away from.
    pub label: usize,
    /// Its name.
    pub label_name: Option<String>,
    /// The clean image, a PNG data URL.
    pub clean_png: String,
    /// Where the image came from.
    pub source: Value,
    /// Each variant attacked directly.
    pub rows: Vec<CompareRow>,
    /// `transfer[i][j]`: the attack made on variant `i`, shown to variant `j`.
    pub transfer: Vec<Vec<TransferCell>>,
    /// Server-side time, ms.
    pub ms: f64,
}

/// One variant attacked directly.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CompareRow {
    /// The outcome.
    #[serde(flatten)]
    pub outcome: AttackView,
    /// The variant.
    pub variant: String,
}

/// One variant's answer on an image attacked against another.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TransferCell {
    /// Its answer.
    pub class: usize,
    /// The answer's name.
    pub name: String,
    /// Whether it is the label.
    pub correct: bool,
    /// The label's probability.
    pub label_prob: Option<f32>,
}

/// `GET /api/samples`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SampleList {
    /// The dataset (its test split).
    pub dataset: String,
    /// Its class names.
    pub classes: Vec<String>,
    /// `[C, H, W]`.
    pub shape: [usize; 3],
    /// The images picked.
    pub samples: Vec<Sample>,
}

/// One test image.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Sample {
    /// Index in the test split.
    pub id: usize,
    /// Its class.
    pub label: u32,
    /// The class's name.
    pub name: String,
    /// The image, a PNG data URL.
    pub png: String,
}

/// `GET /api/models/{id}/showcase`: test images ranked for the lesson "the undefended
/// model is fooled, the robust one holds".
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Showcase {
    /// The model's id.
    pub model: String,
    /// The dataset.
    pub dataset: String,
    /// The undefended variant.
    pub base: String,
    /// The robust variant.
    pub robust: String,
    /// The attack and its settings.
    pub attack: AttackSettings,
    /// Test images ranked.
    pub ranked: usize,
    /// Of them, those both variants get right.
    pub both_right: usize,
    /// Of those, the ones that make the point.
    pub base_fooled_robust_held: usize,
    /// The images, best lesson first.
    pub images: Vec<ShowcaseImage>,
    /// Server-side time, ms.
    pub ms: f64,
}

/// One ranked image.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ShowcaseImage {
    /// Index in the test split.
    pub sample: usize,
    /// Its class.
    pub label: usize,
    /// The class's name.
    pub label_name: Option<String>,
    /// The image, a PNG data URL.
    pub png: String,
    /// Whether the attack fooled the undefended variant.
    pub base_fooled: bool,
    /// Whether the robust variant held.
    pub robust_held: bool,
    /// The undefended variant's top-1 probability on the clean image.
    pub base_confidence: f32,
    /// The robust variant's.
    pub robust_confidence: f32,
}

/// An attack's name and every setting it ran with (which settings depends on the
/// attack: `eps`, `alpha`, `steps`, `restarts`, …).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AttackSettings {
    /// `fgsm`, `pgd`, `cw`, …
    pub name: String,
    /// The rest, by name.
    #[serde(flatten)]
    pub settings: std::collections::BTreeMap<String, Value>,
}

impl AttackSettings {
    /// From an attack's `settings()` (an object with its `name`); empty where it is not
    /// one.
    pub fn from_value(v: Value) -> Self {
        serde_json::from_value(v).unwrap_or_default()
    }
}

/// Every error: `{error, detail}` with the HTTP status.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorBody {
    /// A short code for programs (`not_found`, `invalid`, `busy`, …).
    pub error: String,
    /// What was wrong, in a sentence for people.
    pub detail: String,
}
