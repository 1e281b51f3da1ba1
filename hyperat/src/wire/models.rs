//! Models on the wire: the server's health, its models, their architecture and
//! evaluation.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `GET /api/health`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// The server's version.
    pub version: String,
    /// Models served.
    pub models: usize,
    /// The burn backend models run on.
    pub backend: String,
    /// Jobs by status.
    pub jobs: std::collections::BTreeMap<String, usize>,
}

/// `GET /api/models`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ModelList {
    /// Every model, in id order.
    pub models: Vec<ModelInfo>,
    /// The model a request that names none gets (the shipped model where there is one).
    pub default: Option<String>,
}

/// What the server says about a model.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ModelInfo {
    /// Id (in URLs and forms).
    pub id: String,
    /// A name for people, where one was given (else show the id).
    pub name: Option<String>,
    /// `checkpoint` or the run's kind (`hyperat`, `lora-at`, …).
    pub kind: String,
    /// Class names.
    pub classes: Vec<String>,
    /// `[C, H, W]`.
    pub input: [usize; 3],
    /// Input channels.
    pub channels: usize,
    /// Normalisation mean (inside the model).
    pub mean: Vec<f32>,
    /// Normalisation std.
    pub std: Vec<f32>,
    /// Variant names (`base`, `method:pgd-at`, …, `merged:uniform`).
    pub variants: Vec<String>,
    /// The variant used when none is named.
    pub default_variant: String,
    /// The training dataset, where known.
    pub dataset: Option<String>,
    /// Architecture summary.
    pub architecture: Architecture,
    /// The run's summary (trainable parameters, seconds), where there is one.
    pub summary: Option<Value>,
    /// The L-inf budget it was tuned against, where it is a tuning run.
    pub train_eps: Option<f32>,
    /// Each variant's clean and robust accuracy, where the model was evaluated.
    pub evaluation: Option<Evaluation>,
    /// How distinct its defenses' LoRAs are (HyperAT runs with recorded diagnostics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defenses: Option<DefenseSimilarity>,
}

/// How distinct a HyperAT run's defenses are: the cosine between each pair of defenses'
/// weight deltas, averaged over the adapted weights, from the run's last recorded
/// diagnostics. A classroom's question: are these really different defenses, or one LoRA
/// under several names (whose merges only rescale it)?
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DefenseSimilarity {
    /// The training step the diagnostics were recorded at.
    pub step: usize,
    /// Every method pair, in the run's method order.
    pub pairs: Vec<PairCosine>,
    /// Mean over every pair and adapted weight.
    pub mean: f64,
}

/// Two defenses' weight deltas compared.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PairCosine {
    /// One method (`pgd-at`, ...).
    pub a: String,
    /// The other.
    pub b: String,
    /// Mean cosine of their deltas over the adapted weights (1: the same change).
    pub cosine: f64,
}

/// What a [`DefenseSimilarity`] says, in three words a page can explain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distinctness {
    /// Mean cosine below 0.7 (the results' target for distinct defenses).
    Distinct,
    /// Between.
    PartlyAlike,
    /// Mean cosine 0.9 or more: one LoRA under several names.
    OneLora,
}

impl DefenseSimilarity {
    /// The reading of its mean cosine.
    pub fn reading(&self) -> Distinctness {
        if self.mean < 0.7 {
            Distinctness::Distinct
        } else if self.mean < 0.9 {
            Distinctness::PartlyAlike
        } else {
            Distinctness::OneLora
        }
    }
}

/// A ViT's shape.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Architecture {
    /// Input height and width.
    pub img_size: [usize; 2],
    /// Patch side.
    pub patch_size: usize,
    /// Token width.
    pub embed_dim: usize,
    /// Blocks.
    pub depth: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// MLP width over the token width.
    pub mlp_ratio: f64,
    /// Classes.
    pub num_classes: usize,
}

/// `GET /api/models/{id}`: the model, with its run's tables where there are some.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ModelDetail {
    /// What `GET /api/models` says.
    #[serde(flatten)]
    pub info: ModelInfo,
    /// The run's `report.json` (a report job's), where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<super::Report>,
    /// The results table beside the run (`../report.json`), where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<super::Report>,
}

/// How a model's variants fared in its evaluation: what a page needs to say what
/// robustness costs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Evaluation {
    /// Test images (the first `n`).
    pub n: usize,
    /// L-inf radius of the attacks.
    pub eps: f32,
    /// The attack behind `robust_acc` ("PGD-20").
    pub attack: String,
    /// Images AutoAttack ran on, where it did.
    pub autoattack_n: Option<usize>,
    /// One entry per evaluated variant.
    pub variants: Vec<VariantFigures>,
}

/// One variant's figures.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct VariantFigures {
    /// Variant name (`base`, `merged:uniform`, ...).
    pub variant: String,
    /// Clean accuracy.
    pub clean_acc: f64,
    /// Robust accuracy under the evaluation's attack (clean and adversarial right).
    pub robust_acc: f64,
    /// Mean top-1 probability on clean images.
    pub mean_confidence: f64,
    /// Robust accuracy under AutoAttack on the first `autoattack_n` images.
    pub autoattack_acc: Option<f64>,
}
