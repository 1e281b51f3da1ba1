//! Comparison tables on the wire: `hyperat report --json`, a report job's result, the
//! tables a model's page shows.

use serde::{Deserialize, Serialize};

/// Robust accuracy after one component of a composite attack.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ComponentAcc {
    /// Component name.
    pub name: String,
    /// Robust accuracy after it (and every earlier one).
    pub robust_acc: f64,
}

/// The threat model of the table.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ReportConfig {
    /// L-inf radius.
    pub eps: f32,
    /// Step size.
    pub alpha: f32,
    /// PGD and CW iterations (the table's "PGD-k", "CW-k").
    pub steps: usize,
    /// Images per batch.
    pub batch_size: usize,
    /// Attack seed.
    pub seed: u64,
    /// Also run standard AutoAttack on the first N images (0: none). It costs about
    /// 2000 gradient and 5000 forward passes per robust image, hence a subset.
    #[serde(default)]
    pub aa_limit: usize,
}

/// One row.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ReportRow {
    /// Display name.
    pub name: String,
    /// Model spec (`DIR` or `RUN_DIR#variant`).
    pub spec: String,
    /// Images evaluated.
    pub n: usize,
    /// Clean accuracy.
    pub clean_acc: f64,
    /// Mean top-1 softmax probability on the clean images.
    #[serde(default)]
    pub mean_confidence: f64,
    /// Robust accuracy under PGD.
    pub pgd_acc: f64,
    /// Per image, in dataset order: `1` where PGD left it robust (clean and adversarial
    /// both right), else `0`: what a paired test between two rows needs.
    #[serde(default)]
    pub pgd_robust_flags: Option<String>,
    /// Robust accuracy under CW.
    pub cw_acc: f64,
    /// Trainable parameters of the run (none for a plain checkpoint).
    pub trainable_params: Option<usize>,
    /// Training wall time in seconds.
    pub train_seconds: Option<f64>,
    /// Peak resident memory during training, MiB.
    pub peak_mem_mib: Option<f64>,
    /// Evaluation wall time in seconds.
    pub eval_seconds: f64,
    /// Standard AutoAttack robust accuracy on the first `aa_n` images.
    #[serde(default)]
    pub aa_acc: Option<f64>,
    /// Images AutoAttack ran on.
    #[serde(default)]
    pub aa_n: Option<usize>,
    /// PGD robust accuracy on the same `aa_n` images (for the gap).
    #[serde(default)]
    pub aa_pgd_acc: Option<f64>,
    /// Robust accuracy after each AutoAttack component.
    #[serde(default)]
    pub aa_components: Option<Vec<ComponentAcc>>,
}

/// A report as `hyperat report --json` writes it: the threat model and one row per model.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Report {
    /// The threat model every row was measured under.
    pub config: ReportConfig,
    /// One row per model, in the order asked for.
    pub rows: Vec<ReportRow>,
}
