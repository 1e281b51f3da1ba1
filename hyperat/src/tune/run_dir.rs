//! A tuning run's folder, and the one place that knows its layout.
//!
//! `run.json` (the config), `backbone/` (the timm checkpoint the run started from),
//! `checkpoint.safetensors` (trainable tensors `model.*`, optimiser moments `opt.*`, the
//! step in the metadata; written atomically every `checkpoint_every` steps),
//! `metrics.jsonl` (one record per logged step, hold-out evaluation and diagnostic),
//! `merges/NAME.safetensors` (saved merges) and, when done, `summary.json`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{TuneConfig, Tuned};
use crate::checkpoint::Checkpoint;
use crate::config::VitConfig;
use crate::error::{Error, Result};
use crate::io::{read, read_records, truncate_metrics, write_atomic};
use crate::named_params::load_named;
use crate::train::TrainSnapshot;

/// `run.json`: the config plus what the run is tuning.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunInfo {
    /// Tuning configuration.
    pub config: TuneConfig,
    /// Dataset spec the run trains on.
    pub dataset: String,
    /// Where the backbone came from (informational; the run keeps its own copy).
    pub backbone_source: String,
    /// Images at the end of the train split held out for the adaptive merge.
    #[serde(default)]
    pub holdout: usize,
    /// Train on the first N remaining images only.
    #[serde(default)]
    pub train_limit: Option<usize>,
}

/// `summary.json`: what a finished run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TuneSummary {
    /// Steps taken in total.
    pub steps: usize,
    /// Trainable scalars.
    pub trainable_params: usize,
    /// Training wall time in seconds (summed over resumptions).
    pub seconds: f64,
    /// Peak resident memory of the process in MiB (Linux `VmHWM`).
    pub peak_mem_mib: Option<f64>,
    /// The trained parameters' [`fingerprint`](crate::named_params::fingerprint): every
    /// peer and node of a data-parallel run ends with the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// A run folder that holds a run (its `run.json` exists).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates a run folder: `run.json` and a copy of the backbone. Refuses a folder
    /// that already holds a run (that one is resumed, not overwritten).
    pub fn create(path: &Path, info: &RunInfo, backbone: &Checkpoint) -> Result<Self> {
        info.config.validate()?;
        if Self::is_run(path) {
            return Err(Error::Invalid(format!(
                "{} already holds a run (resume it instead)",
                path.display()
            )));
        }
        let run = Self {
            path: path.to_path_buf(),
        };
        backbone.save(run.backbone_dir())?;
        write_atomic(
            run.file("run.json"),
            serde_json::to_string_pretty(info).expect("json").as_bytes(),
        )?;
        Ok(run)
    }

    /// Opens the run in `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if !Self::is_run(path) {
            return Err(Error::Invalid(format!(
                "{} is not a run folder (no run.json)",
                path.display()
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// The run a model folder holds: the folder itself, or its `hyperat/` (how a
    /// shipped model keeps its run beside its exports).
    pub fn find(path: &Path) -> Option<Self> {
        [path.to_path_buf(), path.join("hyperat")]
            .into_iter()
            .find(|p| Self::is_run(p))
            .map(|path| Self { path })
    }

    /// Whether `path` holds a run.
    pub fn is_run(path: &Path) -> bool {
        path.join("run.json").is_file()
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// `run.json`.
    pub fn info(&self) -> Result<RunInfo> {
        serde_json::from_slice(&read(self.file("run.json"))?)
            .map_err(|e| Error::Config(format!("{}/run.json: {e}", self.path.display())))
    }

    /// The run's own copy of its backbone (a timm checkpoint folder).
    pub fn backbone_dir(&self) -> PathBuf {
        self.file("backbone")
    }

    /// The backbone, loaded.
    pub fn backbone(&self) -> Result<Checkpoint> {
        Checkpoint::load(self.backbone_dir())
    }

    fn checkpoint_path(&self) -> PathBuf {
        self.file("checkpoint.safetensors")
    }

    /// Whether a checkpoint has been written.
    pub fn has_checkpoint(&self) -> bool {
        self.checkpoint_path().is_file()
    }

    /// The step of the latest checkpoint (0 when there is none yet), from its header.
    pub fn checkpoint_step(&self) -> Result<usize> {
        TrainSnapshot::step_of(&self.checkpoint_path())
    }

    /// The latest checkpoint, if any.
    pub fn snapshot(&self) -> Result<Option<TrainSnapshot>> {
        let path = self.checkpoint_path();
        path.exists()
            .then(|| TrainSnapshot::read(&path))
            .transpose()
    }

    /// The run's model at its latest checkpoint (untrained at step 0), with the
    /// backbone's config and the step.
    pub fn load_model<B: AutodiffBackend>(
        &self,
        device: &B::Device,
    ) -> Result<(RunInfo, VitConfig, Tuned<B>, usize)> {
        let info = self.info()?;
        let backbone = self.backbone()?;
        let snapshot = self.snapshot()?;
        let model = tuned_at(&info, &backbone, snapshot.as_ref(), device)?;
        let step = snapshot.map_or(0, |s| s.step);
        Ok((info, backbone.config, model, step))
    }

    /// Replaces the checkpoint (atomically).
    pub fn save_snapshot(&self, snapshot: &TrainSnapshot) -> Result<()> {
        snapshot.write(&self.checkpoint_path())
    }

    /// `metrics.jsonl`.
    pub fn metrics_path(&self) -> PathBuf {
        self.file("metrics.jsonl")
    }

    /// The metrics log opened for appending after `step`: records past it (left by a
    /// run stopped after its last checkpoint) are dropped first, so a resumed run
    /// appends without duplicates.
    pub fn metrics_from(&self, step: usize) -> Result<MetricsLog> {
        let path = self.metrics_path();
        truncate_metrics(&path, step)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(MetricsLog { path, file })
    }

    /// The metric records up to the latest checkpoint: what the run resumes from, and
    /// so what it will have logged whatever happens next.
    pub fn saved_metrics(&self) -> Vec<Value> {
        let upto = self.checkpoint_step().unwrap_or(0);
        let mut records = read_records(&self.metrics_path());
        records.retain(|v| v["step"].as_u64().is_none_or(|s| s as usize <= upto));
        records
    }

    /// How distinct its defenses' LoRAs were at the latest checkpoint (HyperAT runs that
    /// recorded diagnostics).
    pub fn defense_similarity(&self) -> Option<crate::wire::DefenseSimilarity> {
        super::diagnostics::DeltaDiagnostics::last_similarity(&self.saved_metrics())
    }

    /// `summary.json`, once the run finished.
    pub fn summary(&self) -> Option<TuneSummary> {
        serde_json::from_slice(&read(self.file("summary.json")).ok()?).ok()
    }

    /// Writes `summary.json` (the run is finished).
    pub fn save_summary(&self, summary: &TuneSummary) -> Result<()> {
        write_atomic(
            self.file("summary.json"),
            serde_json::to_string_pretty(summary)
                .expect("json")
                .as_bytes(),
        )
    }

    /// The file of the saved merge `name`.
    pub fn merge_path(&self, name: &str) -> PathBuf {
        self.file("merges").join(format!("{name}.safetensors"))
    }

    /// The names of the saved merges, sorted.
    pub fn merge_names(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.file("merges")) else {
            return vec![];
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".safetensors")
                    .map(String::from)
            })
            .collect();
        names.sort();
        names
    }
}

/// An open `metrics.jsonl`, one JSON record per line.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Appends one record.
    pub fn append(&mut self, record: &Value) -> Result<()> {
        writeln!(self.file, "{record}").map_err(|e| Error::io(&self.path, e))
    }
}

/// The model a run builds on `backbone`, with `snapshot`'s trained tensors if any. The
/// backend is seeded with the run's seed first: the untrained factors are its function.
pub(super) fn tuned_at<B: AutodiffBackend>(
    info: &RunInfo,
    backbone: &Checkpoint,
    snapshot: Option<&TrainSnapshot>,
    device: &B::Device,
) -> Result<Tuned<B>> {
    <B as Backend>::seed(device, info.config.seed);
    let model = Tuned::new(
        backbone.build::<B>(device)?,
        &backbone.config,
        &info.config,
        device,
    );
    match snapshot {
        Some(s) => load_named(model, &s.model, device),
        None => Ok(model),
    }
}
