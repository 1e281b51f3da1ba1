//! The comparison table: clean, PGD and CW accuracy of a list of models, with each
//! run's trainable parameters, training time and peak memory.

use std::path::Path;

use crate::error::{Error, Result};
use crate::eval::EvalReport;
use crate::tune::{RunDir, TuneSummary};
pub use crate::wire::{Evaluation, Report, ReportConfig, ReportRow, VariantFigures};

mod request;
mod shard;
pub use request::{ReportModel, ReportRequest};
pub use shard::{ReportShard, RowShard, RowTask, merge_report, merge_row};

impl Report {
    /// Reads a report written by `hyperat report --json`.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Data(format!("{}: not a report: {e}", path.display())))
    }

    /// The figures of the rows named after `variants` (a model's evaluation, its rows
    /// named by variant), in `variants`' order; `None` where no row matches.
    pub fn of_variants(&self, variants: &[String]) -> Option<Evaluation> {
        let rows: Vec<VariantFigures> = variants
            .iter()
            .filter_map(|v| self.rows.iter().find(|r| &r.name == v))
            .map(|r| VariantFigures {
                variant: r.name.clone(),
                clean_acc: r.clean_acc,
                robust_acc: r.pgd_acc,
                mean_confidence: r.mean_confidence,
                autoattack_acc: r.aa_acc,
            })
            .collect();
        let n = self.rows.first()?.n;
        (!rows.is_empty()).then(|| Evaluation {
            n,
            eps: self.config.eps,
            attack: format!("PGD-{}", self.config.steps),
            autoattack_n: self.rows.iter().find_map(|r| r.aa_n),
            variants: rows,
        })
    }
}

fn run_summary(spec: &str) -> Option<TuneSummary> {
    RunDir::open(Path::new(spec.split('#').next()?))
        .ok()?
        .summary()
}

/// `1`/`0` per image: robust (clean and adversarial right) or not.
fn robust_flags(r: &EvalReport) -> String {
    let adv = r.adv_pred.as_deref().unwrap_or(&[]);
    (0..adv.len())
        .map(|i| {
            if r.clean_pred[i] == r.labels[i] && adv[i] == r.labels[i] {
                '1'
            } else {
                '0'
            }
        })
        .collect()
}

/// Robust accuracy of a report on its first `n` images.
fn robust_on_first(r: &EvalReport, n: usize) -> f64 {
    let adv = r.adv_pred.as_deref().unwrap_or(&[]);
    let n = n.min(adv.len());
    let robust = (0..n)
        .filter(|&i| r.clean_pred[i] == r.labels[i] && adv[i] == r.labels[i])
        .count();
    robust as f64 / n.max(1) as f64
}

/// The table as markdown.
pub fn markdown(rows: &[ReportRow], cfg: &ReportConfig) -> String {
    let pct = |v: f64| format!("{:.2}", 100.0 * v);
    let opt = |v: Option<String>| v.unwrap_or_else(|| "—".into());
    let aa_n = rows.iter().find_map(|r| r.aa_n);
    let aa_head = aa_n.map_or(String::new(), |n| {
        format!(
            " AutoAttack (first {n}) | PGD-{k} − AA (same {n}) |",
            k = cfg.steps
        )
    });
    let mut s = format!(
        "| model | clean | PGD-{k} | CW-{k} |{aa_head} trainable params | train time | peak memory |\n|---|---|---|---|{}---|---|---|\n",
        if aa_n.is_some() { "---|---|" } else { "" },
        k = cfg.steps
    );
    for r in rows {
        let aa = if aa_n.is_some() {
            format!(
                " {} | {} |",
                opt(r.aa_acc.map(pct)),
                opt(r.aa_acc.zip(r.aa_pgd_acc).map(|(a, p)| pct(p - a)))
            )
        } else {
            String::new()
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} |{aa} {} | {} | {} |\n",
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
         {}\n",
        rows.first().map(|r| r.n).unwrap_or(0),
        cfg.eps,
        cfg.alpha,
        cfg.steps,
        cfg.seed,
        match aa_n {
            Some(n) => format!(
                "AutoAttack: the standard version (APGD-CE, APGD-T, FAB-T, Square) at the same eps on the first {n} images."
            ),
            None => format!("Not AutoAttack: PGD-{k} and CW-{k} only.", k = cfg.steps),
        },
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, pgd: f64, aa: Option<(f64, f64)>) -> ReportRow {
        ReportRow {
            name: name.into(),
            spec: name.into(),
            n: 100,
            clean_acc: 0.8,
            mean_confidence: 0.7,
            pgd_acc: pgd,
            pgd_robust_flags: None,
            cw_acc: pgd - 0.05,
            trainable_params: None,
            train_seconds: None,
            peak_mem_mib: None,
            eval_seconds: 1.0,
            aa_acc: aa.map(|a| a.0),
            aa_n: aa.map(|_| 50),
            aa_pgd_acc: aa.map(|a| a.1),
            aa_components: None,
        }
    }

    #[test]
    fn a_report_round_trips_and_gives_its_variants_figures() {
        let cfg = ReportConfig {
            eps: 0.1,
            alpha: 0.025,
            steps: 20,
            batch_size: 8,
            seed: 0,
            aa_limit: 0,
        };
        let report = Report {
            config: cfg,
            rows: vec![row("base", 0.02, None), row("merged:uniform", 0.6, None)],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("evaluation.json");
        std::fs::write(&path, serde_json::to_vec(&report).unwrap()).unwrap();
        let back = Report::read(&path).unwrap();
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let e = back
            .of_variants(&names(&["merged:uniform", "method:mart", "base"]))
            .unwrap();
        assert_eq!((e.n, e.attack.as_str(), e.eps), (100, "PGD-20", 0.1));
        let got: Vec<(&str, f64)> = e
            .variants
            .iter()
            .map(|v| (v.variant.as_str(), v.robust_acc))
            .collect();
        assert_eq!(got, [("merged:uniform", 0.6), ("base", 0.02)]);
        assert!(back.of_variants(&names(&["tuned"])).is_none());
        std::fs::write(&path, b"[1, 2]").unwrap();
        let err = Report::read(&path).unwrap_err().to_string();
        assert!(err.contains("not a report"), "{err}");
    }

    #[test]
    fn markdown_has_autoattack_columns_only_when_measured() {
        let cfg = ReportConfig {
            eps: 0.1,
            alpha: 0.01,
            steps: 20,
            batch_size: 8,
            seed: 0,
            aa_limit: 50,
        };
        let plain = markdown(&[row("a", 0.4, None)], &cfg);
        assert!(!plain.contains("AutoAttack (first") && plain.contains("Not AutoAttack"));
        let md = markdown(
            &[row("a", 0.4, Some((0.30, 0.36))), row("b", 0.2, None)],
            &cfg,
        );
        let lines: Vec<&str> = md.lines().collect();
        assert!(lines[0].contains("AutoAttack (first 50) | PGD-20 − AA (same 50)"));
        let cols = |l: &str| l.matches('|').count();
        assert!(lines[..4].iter().all(|l| cols(l) == cols(lines[0])), "{md}");
        assert!(lines[2].contains("| 30.00 | 6.00 |"), "{}", lines[2]);
        assert!(lines[3].contains("| — | — |"), "{}", lines[3]);
    }

    #[test]
    fn robust_accuracy_on_a_prefix() {
        let r = EvalReport {
            n: 4,
            clean_acc: 0.75,
            mean_confidence: 0.5,
            robust_acc: Some(0.5),
            adv_acc: Some(0.5),
            clean_pred: vec![1, 2, 3, 0],
            adv_pred: Some(vec![1, 0, 3, 0]),
            labels: vec![1, 2, 0, 0],
            attack: serde_json::json!({}),
            max_linf: Some(0.1),
            components: None,
            checks: None,
            seconds: 0.0,
        };
        assert_eq!(robust_flags(&r), "1001");
        assert_eq!(robust_on_first(&r, 2), 0.5);
        assert_eq!(robust_on_first(&r, 4), 0.5);
        assert_eq!(robust_on_first(&r, 1), 1.0);
    }
}
