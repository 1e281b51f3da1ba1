//! `hyperat eval`: clean and adversarial accuracy of a model on a dataset
//! ([`EvalRequest`]: the same settings and defaults as an eval job).

use std::path::PathBuf;

use anyhow::Result;
use hyperat::backend::{DeviceKind, DeviceList, DevicesTask, dispatch_devices};
use hyperat::eval::{EvalOutcome, EvalRequest, EvalShardOutcome, EvalSplit, ShardSpec};
use hyperat::prelude::*;
use hyperat::progress::{Progress, Silent};
use hyperat::variant::{load_spec, trained_on};
use serde_json::json;

use super::fraction;
use super::progress::Bar;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model: a timm folder (`config.json` + `model.safetensors`) or a run's variant,
    /// `RUN_DIR#merged:uniform`, `RUN_DIR#method:trades`, `RUN_DIR#base`, `RUN_DIR#tuned`.
    #[arg(long, required_unless_present = "merge")]
    model: Option<String>,
    /// fashion-mnist, cifar10, cifar100 or folder:PATH (default: the one the model was
    /// trained on, else fashion-mnist).
    #[arg(long)]
    dataset: Option<String>,
    /// test, train, or holdout: the last `--holdout` training images, the ones `hyperat
    /// tune` keeps out of training (a validation set for choosing settings without the
    /// test set).
    #[arg(long, default_value_t = EvalRequest::default().split)]
    split: EvalSplit,
    /// Size of the hold-out (as `hyperat tune --holdout`).
    #[arg(long, default_value_t = EvalRequest::default().holdout)]
    holdout: usize,
    /// Evaluate the first N images (file order); all if absent.
    #[arg(long)]
    limit: Option<usize>,
    /// Images per batch.
    #[arg(long, default_value_t = EvalRequest::default().batch_size)]
    batch_size: usize,
    /// none, fgsm, pgd, cw, trades-kl, apgd-ce, apgd-dlr, apgd-t, fab-t, square or
    /// autoattack (standard: APGD-CE, APGD-T, FAB-T, Square).
    #[arg(long, default_value_t = EvalRequest::default().attack)]
    attack: String,
    /// AutoAttack's components (default: the standard version).
    #[arg(long, value_delimiter = ',', default_values_t = EvalRequest::default().aa_attacks)]
    aa_attacks: Vec<String>,
    /// Square's query budget.
    #[arg(long, default_value_t = EvalRequest::default().queries)]
    queries: usize,
    /// L-inf radius in [0,1] pixels, `0.1` or `8/255` (default: the dataset's standard
    /// budget, 0.1 for Fashion-MNIST, 8/255 otherwise).
    #[arg(long, value_parser = fraction)]
    eps: Option<f32>,
    /// Step size (default eps/4).
    #[arg(long, value_parser = fraction)]
    alpha: Option<f32>,
    /// Attack iterations.
    #[arg(long, default_value_t = EvalRequest::default().steps)]
    steps: usize,
    /// Random restarts (pgd, cw).
    #[arg(long, default_value_t = EvalRequest::default().restarts)]
    restarts: usize,
    /// CW confidence kappa.
    #[arg(long, default_value_t = EvalRequest::default().kappa)]
    kappa: f32,
    /// Seed of the attack's random numbers.
    #[arg(long, default_value_t = EvalRequest::default().seed)]
    seed: u64,
    /// Write the full report (with per-sample predictions) here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Evaluate only shard K of N (e.g. 0/2: whole batches, contiguous) and write its
    /// results to --json, for `--merge` (one process or machine per shard).
    #[arg(long, requires = "json")]
    shard: Option<ShardSpec>,
    /// Split the images over several devices of one backend in this process, e.g.
    /// cuda:0,cuda:1 (one shard per device, merged; overrides --device).
    #[arg(long, conflicts_with = "shard")]
    devices: Option<DeviceList>,
    /// Merge the shard files of one evaluation (comma-separated) into the JSON one pass
    /// would write; evaluates nothing.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["model", "shard"])]
    merge: Option<Vec<PathBuf>>,
}

impl Args {
    /// The request these flags make.
    pub fn request(&self) -> EvalRequest {
        EvalRequest {
            dataset: self.dataset.clone(),
            split: self.split,
            holdout: self.holdout,
            limit: self.limit,
            attack: self.attack.clone(),
            eps: self.eps,
            alpha: self.alpha,
            steps: self.steps,
            restarts: self.restarts,
            kappa: self.kappa,
            queries: self.queries,
            aa_attacks: self.aa_attacks.clone(),
            batch_size: self.batch_size,
            seed: self.seed,
        }
    }
}

struct Evaluation(Args, String);

impl DevicesTask for Evaluation {
    type Output = Result<Vec<EvalShardOutcome>>;
    /// One shard per device (each loads the model on its device), or `--shard`'s on one.
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        let (a, name) = (self.0, self.1);
        let req = a.request();
        req.validate()?;
        let label = format!("eval {}", a.attack);
        if devices.len() == 1 {
            let spec = a.shard.unwrap_or(ShardSpec::WHOLE);
            let bar = &mut Bar::new(&label);
            return Ok(vec![evaluate_on::<B>(&req, &name, spec, &devices[0], bar)?]);
        }
        let count = devices.len();
        std::thread::scope(|s| {
            let (req, name) = (&req, &name);
            let others: Vec<_> = (1..count)
                .map(|index| {
                    let device = &devices[index];
                    let spec = ShardSpec { index, count };
                    s.spawn(move || evaluate_on::<B>(req, name, spec, device, &mut Silent))
                })
                .collect();
            let spec = ShardSpec { index: 0, count };
            let first = evaluate_on::<B>(req, name, spec, &devices[0], &mut Bar::new(&label));
            let mut all = vec![first?];
            for h in others {
                all.push(h.join().expect("an evaluation thread panicked")?);
            }
            Ok(all)
        })
    }
}

/// Shard `spec` of the request on `device`, the model loaded there.
fn evaluate_on<B: AutodiffBackend>(
    req: &EvalRequest,
    name: &str,
    spec: ShardSpec,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<EvalShardOutcome> {
    let model = load_spec::<B>(name, device)?;
    let trained = trained_on(name, &model.config);
    let config = &model.config;
    Ok(req.run_shard::<B>(
        spec,
        name,
        &model,
        config,
        trained.as_deref(),
        device,
        progress,
    )?)
}

pub fn execute(a: Args, device: DeviceKind) -> Result<()> {
    let out = a.json.clone();
    if let Some(files) = &a.merge {
        return merge(files, out.as_deref());
    }
    let Some(name) = a.model.clone() else {
        anyhow::bail!("--model is required (or --merge SHARD_FILES)")
    };
    let shard = a.shard;
    let devices = a.devices.clone().unwrap_or(DeviceList::single(device));
    let device_names = devices.names().join(",");
    let mut results = dispatch_devices(&devices, Evaluation(a, name))??;
    if let (Some(spec), Some(path)) = (shard, &out) {
        let result = results.pop().expect("one shard");
        let mut v = serde_json::to_value(&result)?;
        v["device"] = json!(device_names);
        hyperat::io::write_atomic(path, serde_json::to_string(&v)?.as_bytes())?;
        eprintln!(
            "eval: shard {spec} ({} images from {}) written to {}; merge with --merge",
            result.shard.labels.len(),
            result.shard.first_image,
            path.display()
        );
        return Ok(());
    }
    print_and_save(
        &EvalShardOutcome::merge(results)?,
        &device_names,
        out.as_deref(),
    )
}

/// `--merge`: the shard files' outcome, as one pass would have written it (`device`:
/// the shards' devices).
fn merge(files: &[PathBuf], out: Option<&std::path::Path>) -> Result<()> {
    let mut shards = Vec::new();
    let mut devices: Vec<String> = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", f.display()))?;
        if let Some(d) = v["device"]
            .as_str()
            .filter(|d| !devices.iter().any(|x| x == d))
        {
            devices.push(d.to_string());
        }
        shards.push(serde_json::from_value::<EvalShardOutcome>(v).map_err(|e| {
            anyhow::anyhow!("{}: not a shard file of `eval --shard`: {e}", f.display())
        })?);
    }
    print_and_save(&EvalShardOutcome::merge(shards)?, &devices.join(","), out)
}

fn print_and_save(
    outcome: &EvalOutcome,
    device: &str,
    out: Option<&std::path::Path>,
) -> Result<()> {
    let r = &outcome.report;
    let pct = |v: f64| format!("{:.2}%", 100.0 * v);
    let what = format!("{} {} n={}", outcome.dataset, outcome.split, r.n);
    match r.robust_acc {
        Some(rob) => eprintln!(
            "{what}: clean {} (mean confidence {:.3}) robust {} ({} eps {} in {:.1}s, max |delta| {:.5})",
            pct(r.clean_acc),
            r.mean_confidence,
            pct(rob),
            r.attack["name"].as_str().unwrap_or("?"),
            r.attack["eps"],
            r.seconds,
            r.max_linf.unwrap_or(0.0)
        ),
        None => eprintln!(
            "{what}: clean {} (mean confidence {:.3}) ({:.1}s)",
            pct(r.clean_acc),
            r.mean_confidence,
            r.seconds
        ),
    }
    for c in r.components.iter().flatten() {
        eprintln!("  robust accuracy after {}: {}", c.name, pct(c.robust_acc));
    }
    if let Some(c) = &r.checks {
        for w in &c.warnings {
            eprintln!("warning: {w}");
        }
    }
    if let Some(path) = out {
        let mut v = serde_json::to_value(outcome)?;
        v["device"] = json!(device);
        hyperat::io::write_atomic(path, serde_json::to_string(&v)?.as_bytes())?;
    }
    Ok(())
}
