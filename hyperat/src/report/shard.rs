//! A report split over devices or processes: each shard evaluates every row on its part
//! of the images (whole batches, as `hyperat eval --shard` does), and the shards merge
//! into the report one pass writes (the same per-sample predictions, so the same
//! figures: every batch draws its attack's random numbers from its own stream).

use std::path::Path;

use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::{Report, ReportConfig, ReportRow, robust_flags, robust_on_first, run_summary};
use crate::attack::AttackParams;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::{EvalConfig, EvalReport, EvalShard, ShardSpec, evaluate_shard, merge_shards};
use crate::progress::Progress;
use crate::variant::VariantModel;

/// One row's evaluations (PGD, CW and, if asked, AutoAttack) on one shard of the images.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RowShard {
    /// Row name.
    pub name: String,
    /// Model spec (`DIR` or `RUN_DIR#variant`).
    pub spec: String,
    /// PGD-k on the shard's images.
    pub pgd: EvalShard,
    /// CW-k on them.
    pub cw: EvalShard,
    /// AutoAttack on the shard's part of the first `aa_limit` images.
    pub aa: Option<EvalShard>,
}

/// What `hyperat report --shard K/N --json FILE` writes: the threat model and every
/// row's shard, for `hyperat report --merge`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReportShard {
    /// The threat model (shards of one report share it).
    pub config: ReportConfig,
    /// Which shard.
    pub shard: ShardSpec,
    /// One per row, in the report's order.
    pub rows: Vec<RowShard>,
}

impl ReportShard {
    /// Reads a shard file written by `hyperat report --shard`.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Data(format!("{}: not a report shard: {e}", path.display())))
    }
}

/// What a row's shard evaluates: which model, on which images, under which threat model.
pub struct RowTask<'a, B: AutodiffBackend> {
    /// Row name.
    pub name: &'a str,
    /// Model spec.
    pub spec: &'a str,
    /// The model, loaded on `device`.
    pub model: &'a VariantModel<B>,
    /// The report's images.
    pub ds: &'a Dataset,
    /// The threat model.
    pub config: &'a ReportConfig,
}

impl<B: AutodiffBackend> RowTask<'_, B> {
    /// Evaluates shard `shard` of the images on `device`.
    pub fn evaluate(
        &self,
        shard: ShardSpec,
        device: &B::Device,
        progress: &mut dyn Progress,
    ) -> Result<RowShard> {
        let cfg = self.config;
        let run =
            |ds: &Dataset, attack: &str, params: AttackParams, progress: &mut dyn Progress| {
                let ec = EvalConfig {
                    attack: attack.into(),
                    params,
                    batch_size: cfg.batch_size,
                    seed: cfg.seed,
                };
                evaluate_shard::<B>(self.model, ds, &ec, shard, device, progress)
            };
        let params = AttackParams {
            eps: cfg.eps,
            alpha: Some(cfg.alpha),
            steps: cfg.steps,
            restarts: 1,
            ..Default::default()
        };
        let pgd = run(self.ds, "pgd", params.clone(), progress)?;
        let cw = run(self.ds, "cw", params, progress)?;
        let aa = if cfg.aa_limit > 0 {
            let mut sub = self.ds.clone();
            sub.truncate(cfg.aa_limit);
            let params = AttackParams {
                eps: cfg.eps,
                ..Default::default()
            };
            Some(run(&sub, "autoattack", params, progress)?)
        } else {
            None
        };
        Ok(RowShard {
            name: self.name.to_string(),
            spec: self.spec.to_string(),
            pgd,
            cw,
            aa,
        })
    }
}

/// The row of all its shards (any order); refuses shards of different rows.
pub fn merge_row(shards: Vec<RowShard>) -> Result<ReportRow> {
    let first = shards
        .first()
        .ok_or_else(|| Error::Invalid("no shards to merge".into()))?;
    let (name, spec) = (first.name.clone(), first.spec.clone());
    if let Some(other) = shards.iter().find(|s| s.name != name || s.spec != spec) {
        return Err(Error::Invalid(format!(
            "shards of different rows: `{name}` ({spec}) and `{}` ({})",
            other.name, other.spec
        )));
    }
    if shards.iter().any(|s| s.aa.is_some() != first.aa.is_some()) {
        return Err(Error::Invalid(format!(
            "row `{name}`: some shards ran AutoAttack and some did not"
        )));
    }
    let mut pgd = vec![];
    let mut cw = vec![];
    let mut aa = vec![];
    for s in shards {
        pgd.push(s.pgd);
        cw.push(s.cw);
        aa.extend(s.aa);
    }
    let pgd = merge_shards(pgd)?;
    let cw = merge_shards(cw)?;
    let aa = (!aa.is_empty()).then(|| merge_shards(aa)).transpose()?;
    Ok(row_of(&name, &spec, pgd, cw, aa))
}

/// The report of all its shard files (any order): the same threat model and rows in
/// every one, each shard once.
pub fn merge_report(shards: Vec<ReportShard>) -> Result<Report> {
    let first = shards
        .first()
        .ok_or_else(|| Error::Invalid("no shards to merge".into()))?;
    let config = first.config.clone();
    let key = serde_json::to_value(&config).expect("json");
    let rows = first.rows.len();
    for s in &shards {
        if serde_json::to_value(&s.config).expect("json") != key || s.rows.len() != rows {
            return Err(Error::Invalid(format!(
                "shard {} comes from another report (threat model or rows differ)",
                s.shard
            )));
        }
    }
    let mut by_row: Vec<Vec<RowShard>> = (0..rows).map(|_| vec![]).collect();
    for s in shards {
        for (i, r) in s.rows.into_iter().enumerate() {
            by_row[i].push(r);
        }
    }
    let rows = by_row
        .into_iter()
        .map(merge_row)
        .collect::<Result<Vec<_>>>()?;
    Ok(Report { config, rows })
}

/// A row from its merged evaluations, with its run's training figures.
fn row_of(
    name: &str,
    spec: &str,
    pgd: EvalReport,
    cw: EvalReport,
    aa: Option<EvalReport>,
) -> ReportRow {
    let summary = spec.contains('#').then(|| run_summary(spec)).flatten();
    let base = spec.ends_with("#base");
    let trained = summary.as_ref().filter(|_| !base);
    ReportRow {
        name: name.to_string(),
        spec: spec.to_string(),
        n: pgd.n,
        clean_acc: pgd.clean_acc,
        mean_confidence: pgd.mean_confidence,
        pgd_acc: pgd.robust_acc.unwrap_or(0.0),
        pgd_robust_flags: Some(robust_flags(&pgd)),
        cw_acc: cw.robust_acc.unwrap_or(0.0),
        trainable_params: trained.map(|s| s.trainable_params),
        train_seconds: trained.map(|s| s.seconds),
        peak_mem_mib: trained.and_then(|s| s.peak_mem_mib),
        eval_seconds: pgd.seconds + cw.seconds + aa.as_ref().map_or(0.0, |a| a.seconds),
        aa_pgd_acc: aa.as_ref().map(|a| robust_on_first(&pgd, a.n)),
        aa_acc: aa.as_ref().and_then(|a| a.robust_acc),
        aa_n: aa.as_ref().map(|a| a.n),
        aa_components: aa.and_then(|a| a.components),
    }
}
