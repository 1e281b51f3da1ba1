//! The tuning loop: a [`Trainer`] stepped to the end of its run, logging, evaluating
//! on the hold-out and checkpointing as the run's config asks.

use std::path::Path;

use burn::tensor::backend::AutodiffBackend;

use super::diagnostics::run_diagnostics;
use super::monitor::holdout_records;
use super::nodes::{Nodes, OnLost};
use super::run_dir::{RunDir, TuneSummary};
use super::trainer::Trainer;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::named_params::{count_trainable, fingerprint, trainable_tensors};
use crate::parallel::{Peer, Peers, on_devices};
use crate::progress::Progress;
use crate::rng::mix;

/// Runs (or resumes) the run in `dir` on `train` until its last step, or until
/// `stop_at` steps (to simulate an interruption). Returns the summary when finished;
/// [`Error::Cancelled`] when it stopped before (a cancel through `progress`, or
/// `stop_at`), the folder holding its last checkpoint to resume from.
/// With a `holdout` set (and `eval_every` in the config), every model of the run is
/// evaluated on it as it trains; HyperAT runs also record their delta diagnostics at
/// every checkpoint.
pub fn run<B: AutodiffBackend>(
    dir: &Path,
    train: &Dataset,
    holdout: Option<&Dataset>,
    device: &B::Device,
    progress: &mut dyn Progress,
    stop_at: Option<usize>,
) -> Result<TuneSummary> {
    run_as::<B>(Peer::ALONE, dir, train, holdout, device, progress, stop_at)
}

/// [`run`] data-parallel over `devices` (one peer per device, each on its own thread;
/// see [`super::parallel`]): the same run, each step's batch split evenly over the
/// peers. `progress` follows (and may cancel) the run through peer 0.
pub fn run_parallel<B: AutodiffBackend>(
    dir: &Path,
    train: &Dataset,
    holdout: Option<&Dataset>,
    devices: &[B::Device],
    progress: &mut dyn Progress,
    stop_at: Option<usize>,
) -> Result<TuneSummary> {
    on_devices::<B, _>(devices, progress, |peer, device, progress| {
        run_as::<B>(peer, dir, train, holdout, device, progress, stop_at)
    })
}

/// [`run_parallel`] as node `nodes.rank` of a run over several processes (see
/// [`super::nodes`]): every node runs the same number of `devices`, the batch splits
/// over all of them, and node 0 alone writes the run folder in `dir`. The other nodes
/// read `dir` only to resume (a shared or copied folder); for a new run each node
/// creates its own (equal) start. `on_lost` is called if another node stops first.
#[allow(clippy::too_many_arguments)]
pub fn run_on_nodes<B: AutodiffBackend>(
    nodes: &Nodes,
    on_lost: OnLost,
    dir: &Path,
    train: &Dataset,
    holdout: Option<&Dataset>,
    devices: &[B::Device],
    progress: &mut dyn Progress,
    stop_at: Option<usize>,
) -> Result<TuneSummary> {
    let local = devices.len().max(1);
    let default_device = [B::Device::default()];
    let devices = if devices.is_empty() {
        &default_device[..]
    } else {
        devices
    };
    let watch = nodes.join(run_key(dir)?, on_lost)?;
    let peers = Peers {
        first: nodes.rank * local,
        count: nodes.count * local,
        config: nodes.collective_config(local)?,
    };
    let summary = peers
        .run::<B, _>(devices, progress, |peer, device, progress| {
            run_as::<B>(peer, dir, train, holdout, device, progress, stop_at)
        })
        .inspect_err(|e| {
            if matches!(e, Error::PeerLost(_)) {
                watch.settle()
            }
        })?;
    // The barrier before anything closes: another node may still fetch this one's
    // share. Then every peer leaves the collective (closing its connections cleanly),
    // node 0 last, as it hosts the orchestrator the others leave through.
    watch.finish()?;
    (peers.first..peers.first + local).for_each(|rank| {
        Peer {
            rank,
            count: peers.count,
        }
        .leave::<B::InnerBackend>();
    });
    watch.close();
    Ok(summary)
}

/// What a node's run must agree on with the other nodes: its settings and its step.
fn run_key(dir: &Path) -> Result<u64> {
    let run = RunDir::open(dir)?;
    let settings = serde_json::to_string(&run.info()?.config).expect("json");
    let step = match run.has_checkpoint() {
        true => run.checkpoint_step()?,
        false => 0,
    };
    Ok(settings.bytes().fold(mix(0, step as u64, 0x4E0D), |h, b| {
        mix(h, u64::from(b), 0x4E0D)
    }))
}

/// [`run`] as one peer: only peer 0 writes the run folder and evaluates.
fn run_as<B: AutodiffBackend>(
    peer: Peer,
    dir: &Path,
    train: &Dataset,
    holdout: Option<&Dataset>,
    device: &B::Device,
    progress: &mut dyn Progress,
    stop_at: Option<usize>,
) -> Result<TuneSummary> {
    let mut trainer = Trainer::<B>::resume(RunDir::open(dir)?, device)?.with_peer(peer)?;
    let cfg = trainer.info().config.clone();
    let end = stop_at.unwrap_or(cfg.steps).min(cfg.steps);
    let eval_images = holdout
        .filter(|_| cfg.eval_every > 0 && peer.leads())
        .map(|h| {
            let mut sub = h.clone();
            sub.truncate(cfg.eval_images);
            sub
        });
    let mut log = match peer.leads() {
        true => Some(trainer.run_dir().metrics_from(trainer.steps_taken())?),
        false => None,
    };
    let mut record = |r: serde_json::Value, progress: &mut dyn Progress| -> Result<()> {
        if let Some(log) = &mut log {
            log.append(&r)?;
            progress.metrics(&r);
        }
        Ok(())
    };
    progress.update(trainer.steps_taken(), cfg.steps, "steps");
    // Peer 0's cancel stops every peer before the same step.
    while trainer.steps_taken() < end
        && !peer.any::<B::InnerBackend>(progress.cancelled(), device)?
    {
        let step = trainer.step(train)?;
        let done = step.step;
        if done % cfg.log_every.max(1) == 0 || done == cfg.steps {
            record(serde_json::to_value(&step).expect("json"), progress)?;
        }
        // Every `eval_every` steps, and at the end of runs long enough to have had one
        // (a short classroom run does not pay for a curve of one point).
        if let Some(images) = &eval_images
            && (done % cfg.eval_every == 0 || (done == cfg.steps && cfg.steps > cfg.eval_every))
        {
            for r in holdout_records(trainer.model(), &cfg, images, done, device)? {
                record(r, progress)?;
            }
        }
        let label = if step.method == "none" {
            "clean"
        } else {
            &step.method
        };
        progress.update(done, cfg.steps, label);
        if peer.leads() && (done % cfg.checkpoint_every == 0 || done == end) {
            if let Some(d) = run_diagnostics(trainer.model(), &cfg.methods) {
                record(d.record(done), progress)?;
            }
            trainer.save()?;
        }
    }
    // Stopped early (a cancel, or `stop_at`), the run resumes from its last checkpoint.
    if !trainer.finished() {
        return Err(Error::Cancelled);
    }
    let summary = TuneSummary {
        steps: cfg.steps,
        trainable_params: count_trainable(trainer.model()),
        seconds: trainer.seconds(),
        peak_mem_mib: peak_mem_mib(),
        fingerprint: Some(fingerprint(&trainable_tensors(trainer.model()))),
    };
    if peer.leads() {
        trainer.run_dir().save_summary(&summary)?;
    }
    Ok(summary)
}

/// Peak resident set size of this process (Linux), in MiB.
pub fn peak_mem_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
