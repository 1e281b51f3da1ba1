//! `hyperat report`: the comparison table of a list of models, as markdown and JSON;
//! with `--deltas RUN_DIR`, how alike a HyperAT run's per-method LoRAs are.

use std::path::PathBuf;

use anyhow::{Result, bail};
use hyperat::backend::{
    BackendTask, DeviceKind, DeviceList, DevicesTask, dispatch, dispatch_devices,
};
use hyperat::eval::ShardSpec;
use hyperat::prelude::*;
use hyperat::report::{Report, ReportModel, ReportRequest, ReportShard, markdown, merge_report};
use hyperat::tune::RunDir;
use hyperat::tune::diagnostics::{DeltaDiagnostics, run_diagnostics};

use super::fraction;
use super::progress::Bar;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Models, comma-separated (so a NAME cannot hold a comma): `NAME=SPEC` or `SPEC`,
    /// where SPEC is a timm folder or RUN_DIR#variant.
    #[arg(long, value_delimiter = ',', required_unless_present_any = ["deltas", "merge"])]
    models: Vec<String>,
    /// Instead of evaluating models: the delta-similarity table of this HyperAT run
    /// (pairwise cosine of the methods' weight deltas per block and target, their norms
    /// relative to the frozen weights, the embeddings' cosines). No data needed.
    #[arg(long, conflicts_with = "models")]
    deltas: Option<PathBuf>,
    /// fashion-mnist, cifar10, cifar100 or folder:PATH.
    #[arg(long, default_value_t = ReportRequest::default().dataset)]
    dataset: String,
    /// First N test images.
    #[arg(long, default_value_t = ReportRequest::default().limit)]
    limit: usize,
    /// L-inf radius, `0.1` or `8/255` (default: the dataset's standard budget, 0.1 for
    /// Fashion-MNIST, 8/255 otherwise).
    #[arg(long, value_parser = fraction)]
    eps: Option<f32>,
    /// Step size (default eps/4).
    #[arg(long, value_parser = fraction)]
    alpha: Option<f32>,
    /// PGD and CW iterations.
    #[arg(long, default_value_t = ReportRequest::default().steps)]
    steps: usize,
    /// Images per batch.
    #[arg(long, default_value_t = ReportRequest::default().batch_size)]
    batch_size: usize,
    /// Attack seed.
    #[arg(long, default_value_t = ReportRequest::default().seed)]
    seed: u64,
    /// Also run standard AutoAttack on the first N images (0: none; slow: about 10 s
    /// per robust image on a 2-core CPU).
    #[arg(long, default_value_t = ReportRequest::default().aa_limit)]
    aa_limit: usize,
    /// Write the report (threat model and rows) as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the markdown table.
    #[arg(long)]
    md: Option<PathBuf>,
    /// Evaluate only shard K of N of every row's images (whole batches) and write it to
    /// --json, for `--merge` (one process or machine per shard).
    #[arg(long, requires = "json", conflicts_with = "devices")]
    shard: Option<ShardSpec>,
    /// Split every row's images over several devices of one backend in this process,
    /// e.g. cuda:0,cuda:1 (one shard per device, merged; overrides --device).
    #[arg(long)]
    devices: Option<DeviceList>,
    /// Merge the shard files of one report (comma-separated) into the report one pass
    /// would write; evaluates nothing.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["models", "shard", "deltas"])]
    merge: Option<Vec<PathBuf>>,
}

impl Args {
    /// The request these flags make.
    pub fn request(&self) -> ReportRequest {
        ReportRequest {
            rows: self.models.iter().map(|m| ReportModel::parse(m)).collect(),
            dataset: self.dataset.clone(),
            limit: self.limit,
            eps: self.eps,
            alpha: self.alpha,
            steps: self.steps,
            batch_size: self.batch_size,
            seed: self.seed,
            aa_limit: self.aa_limit,
        }
    }
}

/// A row's spec as given on the command line (a folder or `RUN_DIR#variant`).
fn as_given(row: &ReportModel) -> hyperat::Result<(String, String)> {
    let spec = match &row.variant {
        Some(v) => format!("{}#{v}", row.model),
        None => row.model.clone(),
    };
    Ok((spec.clone(), spec))
}

/// The report on every device (one shard each), or one `--shard` of it.
struct Table(ReportRequest, Option<ShardSpec>);

enum Measured {
    Whole(Report),
    Shard(ReportShard),
}

impl DevicesTask for Table {
    type Output = Result<Measured>;
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        let (req, shard) = (self.0, self.1);
        let mut bar = Bar::new("report");
        if let Some(spec) = shard {
            let device = &devices[0];
            return Ok(Measured::Shard(
                req.run_shard::<B>(&as_given, spec, device, &mut bar)?,
            ));
        }
        let steps = req.steps;
        let report = req.run_on_devices::<B>(&as_given, &devices, &mut bar, &mut |row| {
            eprintln!(
                "{}: clean {:.2}% PGD-{steps} {:.2}% CW-{steps} {:.2}%",
                row.name,
                100.0 * row.clean_acc,
                100.0 * row.pgd_acc,
                100.0 * row.cw_acc
            )
        })?;
        Ok(Measured::Whole(report))
    }
}

struct Deltas(PathBuf);

impl BackendTask for Deltas {
    type Output = Result<DeltaDiagnostics>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let (info, _, model, step) = RunDir::open(&self.0)?.load_model::<B>(&device)?;
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

pub fn execute(a: Args, device: DeviceKind) -> Result<()> {
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
    let report = match &a.merge {
        Some(files) => merge_report(
            files
                .iter()
                .map(|f| ReportShard::read(f))
                .collect::<hyperat::Result<Vec<_>>>()?,
        )?,
        None => {
            let devices = a.devices.clone().unwrap_or(DeviceList::single(device));
            match dispatch_devices(&devices, Table(a.request(), a.shard))?? {
                Measured::Whole(report) => report,
                Measured::Shard(shard) => {
                    let path = json.as_deref().expect("--shard requires --json");
                    hyperat::io::write_atomic(path, serde_json::to_string(&shard)?.as_bytes())?;
                    eprintln!(
                        "report: shard {} of {} rows written to {}; merge with --merge",
                        shard.shard,
                        shard.rows.len(),
                        path.display()
                    );
                    return Ok(());
                }
            }
        }
    };
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
