//! `hyperat report`: the comparison table of a list of models, as markdown and JSON;
//! with `--deltas RUN_DIR`, how alike a HyperAT run's per-method LoRAs are.

use std::path::PathBuf;

use anyhow::{Result, bail};
use hyperat::backend::{BackendTask, DeviceKind, dispatch};
use hyperat::data::{self, Split};
use hyperat::prelude::*;
use hyperat::report::{Report, ReportConfig, evaluate_row, markdown};
use hyperat::tune::diagnostics::{DeltaDiagnostics, run_diagnostics};
use hyperat::tune::load_run;
use hyperat::variant::load_spec;

use super::fraction;
use super::progress::Bar;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Models: `NAME=SPEC` or `SPEC`, where SPEC is a timm folder or RUN_DIR#variant.
    #[arg(long, value_delimiter = ',', required_unless_present = "deltas")]
    models: Vec<String>,
    /// Instead of evaluating models: the delta-similarity table of this HyperAT run
    /// (pairwise cosine of the methods' weight deltas per block and target, their norms
    /// relative to the frozen weights, the embeddings' cosines). No data needed.
    #[arg(long, conflicts_with = "models")]
    deltas: Option<PathBuf>,
    /// fashion-mnist, cifar10, cifar100 or folder:PATH.
    #[arg(long, default_value = "fashion-mnist")]
    dataset: String,
    /// First N test images.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// L-inf radius.
    #[arg(long, default_value = "8/255", value_parser = fraction)]
    eps: f32,
    /// Step size (default eps/4).
    #[arg(long, value_parser = fraction)]
    alpha: Option<f32>,
    /// PGD and CW iterations.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 250)]
    batch_size: usize,
    /// Attack seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also run standard AutoAttack on the first N images (0: none; slow: about 10 s
    /// per robust image on a 2-core CPU).
    #[arg(long, default_value_t = 0)]
    aa_limit: usize,
    /// Write the rows as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the markdown table.
    #[arg(long)]
    md: Option<PathBuf>,
}

struct Task(Args);

impl BackendTask for Task {
    type Output = Result<Report>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let a = self.0;
        let cfg = ReportConfig {
            eps: a.eps,
            alpha: a.alpha.unwrap_or(a.eps / 4.0),
            steps: a.steps,
            batch_size: a.batch_size,
            seed: a.seed,
            aa_limit: a.aa_limit,
        };
        let mut rows = vec![];
        let mut ds = None;
        for m in &a.models {
            let (name, spec) = m.split_once('=').unwrap_or((m.as_str(), m.as_str()));
            if ds.is_none() {
                let shape = load_spec::<B>(spec, &device)?.config.input_shape();
                let mut d = data::load(&a.dataset, Split::Test, Some(shape))?;
                d.truncate(a.limit);
                ds = Some(d);
            }
            let mut bar = Bar::new(&format!("report {name}"));
            let row = evaluate_row::<B>(
                name,
                spec,
                ds.as_ref().expect("loaded"),
                &cfg,
                &device,
                &mut bar,
            )?;
            drop(bar);
            eprintln!(
                "{name}: clean {:.2}% PGD-{} {:.2}% CW-{} {:.2}%",
                100.0 * row.clean_acc,
                cfg.steps,
                100.0 * row.pgd_acc,
                cfg.steps,
                100.0 * row.cw_acc
            );
            rows.push(row);
        }
        if rows.is_empty() {
            bail!("no models given");
        }
        Ok(Report { config: cfg, rows })
    }
}

struct Deltas(PathBuf);

impl BackendTask for Deltas {
    type Output = Result<DeltaDiagnostics>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let (info, _, model, step) = load_run::<B>(&self.0, &device)?;
        let Some(d) = run_diagnostics(&model, &info.config.methods) else {
            bail!(
                "{} is a {} run: one LoRA, nothing to compare (HyperAT runs only)",
                self.0.display(),
                info.config.kind.name()
            )
        };
        eprintln!(
            "{}: step {step}, methods {}",
            self.0.display(),
            info.config.methods.join(", ")
        );
        Ok(d)
    }
}

pub fn run_cli(a: Args, device: DeviceKind) -> Result<()> {
    let (json, md) = (a.json.clone(), a.md.clone());
    if let Some(run) = a.deltas {
        let d = dispatch(device, Deltas(run))??;
        let table = d.markdown();
        println!("{table}");
        if let Some(p) = json {
            hyperat::io::write_atomic(&p, serde_json::to_string_pretty(&d)?.as_bytes())?;
        }
        if let Some(p) = md {
            hyperat::io::write_atomic(&p, table.as_bytes())?;
        }
        return Ok(());
    }
    let report = dispatch(device, Task(a))??;
    let table = markdown(&report.rows, &report.config);
    println!("{table}");
    if let Some(p) = json {
        hyperat::io::write_atomic(&p, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    if let Some(p) = md {
        hyperat::io::write_atomic(&p, table.as_bytes())?;
    }
    Ok(())
}
