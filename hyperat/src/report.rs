//! The comparison table: clean, PGD and CW accuracy of a list of models, with each
//! run's trainable parameters, training time and peak memory.

use std::path::Path;

use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::attack::AttackParams;
use crate::data::Dataset;
use crate::error::Result;
use crate::eval::{EvalConfig, evaluate};
use crate::progress::Progress;
use crate::tune::TuneSummary;
use crate::variant::load_spec;

/// The threat model of the table.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
}

/// One row.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReportRow {
    /// Display name.
    pub name: String,
    /// Model spec (`DIR` or `RUN_DIR#variant`).
    pub spec: String,
    /// Images evaluated.
    pub n: usize,
    /// Clean accuracy.
    pub clean_acc: f64,
    /// Robust accuracy under PGD.
    pub pgd_acc: f64,
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
}

fn run_summary(spec: &str) -> Option<TuneSummary> {
    let dir = spec.split('#').next()?;
    let text = std::fs::read(Path::new(dir).join("summary.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Evaluates one model: clean, PGD-k and CW-k on `ds`.
pub fn evaluate_row<B: AutodiffBackend>(
    name: &str,
    spec: &str,
    ds: &Dataset,
    cfg: &ReportConfig,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<ReportRow> {
    let model = load_spec::<B>(spec, device)?;
    let params = AttackParams {
        eps: cfg.eps,
        alpha: Some(cfg.alpha),
        steps: cfg.steps,
        restarts: 1,
        ..Default::default()
    };
    let run = |attack: &str, progress: &mut dyn Progress| {
        let ec = EvalConfig {
            attack: attack.into(),
            params: params.clone(),
            batch_size: cfg.batch_size,
            seed: cfg.seed,
        };
        evaluate::<B>(&model, ds, &ec, device, progress)
    };
    let pgd = run("pgd", progress)?;
    let cw = run("cw", progress)?;
    let summary = spec.contains('#').then(|| run_summary(spec)).flatten();
    let base = spec.ends_with("#base");
    Ok(ReportRow {
        name: name.to_string(),
        spec: spec.to_string(),
        n: pgd.n,
        clean_acc: pgd.clean_acc,
        pgd_acc: pgd.robust_acc.unwrap_or(0.0),
        cw_acc: cw.robust_acc.unwrap_or(0.0),
        trainable_params: summary
            .as_ref()
            .filter(|_| !base)
            .map(|s| s.trainable_params),
        train_seconds: summary.as_ref().filter(|_| !base).map(|s| s.seconds),
        peak_mem_mib: summary
            .as_ref()
            .filter(|_| !base)
            .and_then(|s| s.peak_mem_mib),
        eval_seconds: pgd.seconds + cw.seconds,
    })
}

/// The table as markdown.
pub fn markdown(rows: &[ReportRow], cfg: &ReportConfig) -> String {
    let pct = |v: f64| format!("{:.2}", 100.0 * v);
    let opt = |v: Option<String>| v.unwrap_or_else(|| "—".into());
    let mut s = format!(
        "| model | clean | PGD-{k} | CW-{k} | trainable params | train time | peak memory |\n|---|---|---|---|---|---|---|\n",
        k = cfg.steps
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.name,
            pct(r.clean_acc),
            pct(r.pgd_acc),
            pct(r.cw_acc),
            opt(r.trainable_params.map(|p| format!("{p}"))),
            opt(r.train_seconds.map(|t| format!("{:.0} s", t))),
            opt(r.peak_mem_mib.map(|m| format!("{:.0} MiB", m))),
        ));
    }
    s.push_str(&format!(
        "\nAccuracies in %, on {} test images; L∞ eps {:.4}, step {:.4}, {} steps, random start, seed {}. \
         Robust accuracy counts an image only when its clean and adversarial predictions are both right. \
         Not AutoAttack: PGD-{k} and CW-{k} only.\n",
        rows.first().map(|r| r.n).unwrap_or(0),
        cfg.eps,
        cfg.alpha,
        cfg.steps,
        cfg.seed,
        k = cfg.steps
    ));
    s
}
