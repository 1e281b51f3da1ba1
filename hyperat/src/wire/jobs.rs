//! Jobs on the wire: what a client submits, and the record the server keeps and sends.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// HyperAT or a baseline on a model's backbone (`config`: a `TuneRequest`).
    Tune,
    /// A backbone from a preset (`config`: a `PretrainRequest` without `from`).
    Pretrain,
    /// Clean and adversarial accuracy of a model's variant (`config`: an `EvalRequest`).
    Eval,
    /// Clean / PGD / CW table of several variants (`config`: a `ReportRequest` whose rows
    /// name served models).
    Report,
    /// A merge of a served HyperAT model's per-method LoRAs, folded into a new served
    /// model; the source is left as it was (`config`: a `MergeRequest`).
    Merge,
}

/// A job as a client submits it: `{"kind": "tune", "model": "...", "config": {...}}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// What to run.
    pub kind: JobKind,
    /// The model it works on (tune, eval; default: the first model).
    #[serde(default)]
    pub model: Option<String>,
    /// The variant (eval; default: the model's default).
    #[serde(default)]
    pub variant: Option<String>,
    /// A name for people ("tune · 3 methods · 60 steps · 10:42"); the model a tune or
    /// pretrain job makes is listed under it. At most [`MAX_NAME`] characters.
    #[serde(default)]
    pub name: Option<String>,
    /// Kind-specific settings; every field has a default.
    #[serde(default)]
    pub config: Value,
}

/// The longest job name accepted, in characters.
pub const MAX_NAME: usize = 80;

/// A job name as given, trimmed; an error where it is too long or holds control
/// characters. An empty name is no name.
pub fn clean_name(name: &str) -> Result<Option<String>, String> {
    let name = name.trim();
    if name.chars().count() > MAX_NAME {
        return Err(format!("name: at most {MAX_NAME} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("name: no control characters".into());
    }
    Ok((!name.is_empty()).then(|| name.to_string()))
}

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for the worker.
    Queued,
    /// On the worker (or interrupted by a restart, and resumed first on the next start).
    Running,
    /// Finished.
    Done,
    /// Stopped with an error.
    Failed,
    /// Cancelled by a client.
    Cancelled,
}

impl JobKind {
    /// Its name on the wire (`tune`, `pretrain`, `eval`, `report`, `merge`).
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Tune => "tune",
            JobKind::Pretrain => "pretrain",
            JobKind::Eval => "eval",
            JobKind::Report => "report",
            JobKind::Merge => "merge",
        }
    }
}

impl JobStatus {
    /// Its name on the wire (`queued`, `running`, `done`, `failed`, `cancelled`).
    pub fn name(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the job will not change any more.
    pub fn terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Done | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// Progress of a job.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct JobProgress {
    /// Units done.
    pub done: usize,
    /// Units in all.
    pub total: usize,
    /// What the units are, or the method of the last step.
    pub message: String,
    /// Estimated seconds left.
    pub eta_s: Option<f64>,
}

/// `job.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct JobRecord {
    /// Id (also the folder name).
    pub id: String,
    /// What was asked.
    pub spec: JobSpec,
    /// Where it is.
    pub status: JobStatus,
    /// Unix seconds.
    pub created: f64,
    /// Unix seconds of the (latest) start.
    pub started: Option<f64>,
    /// Unix seconds of the end.
    pub finished: Option<f64>,
    /// How often it was started (more than once after a restart).
    #[serde(default)]
    pub attempts: usize,
    /// Set when a server shutdown interrupted the run (it resumes at the next start); a
    /// `running` record without it means the process died while running the job.
    #[serde(default)]
    pub interrupted: bool,
    /// How often the process died while running this job.
    #[serde(default)]
    pub crashes: usize,
    /// Progress.
    pub progress: JobProgress,
    /// Why it failed.
    pub error: Option<String>,
    /// What it measured.
    pub result: Option<Value>,
    /// The devices its latest start ran on (`cpu`, `cuda:1`; a tuning job uses every device the
    /// server was started with, `hyperat serve --devices`).
    #[serde(default)]
    pub devices: Vec<String>,
}

/// `GET /api/jobs`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct JobList {
    /// Every job, newest first.
    pub jobs: Vec<JobRecord>,
    /// Job folders whose record could not be read back (not run).
    pub corrupt: Vec<CorruptJob>,
}

/// A job folder whose `job.json` did not parse.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CorruptJob {
    /// The folder under `runs/`.
    pub folder: String,
    /// Why it was not read.
    pub error: String,
}

/// Body of `PATCH /api/jobs/{id}`: the new name (empty or null: no name).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct JobRename {
    /// At most [`MAX_NAME`] characters, no control characters.
    pub name: Option<String>,
}

/// One record of a run's `metrics.jsonl`, as its job's event stream carries it: a
/// training step (`step`, `method`, `loss`, `clean_acc`, `adv_acc`, …), or with `kind`
/// an evaluation on the hold-out (`kind: holdout`, per `model`) or the delta
/// diagnostics (`kind: diagnostics`). Open-ended: the numbers are by name.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MetricRecord {
    /// The optimiser step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    /// `holdout` or `diagnostics`; none for a training step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The defense method a training step sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The model a hold-out evaluation measured (`method:trades`, `merged:uniform`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Everything else, by name.
    #[serde(flatten)]
    pub values: std::collections::BTreeMap<String, Value>,
}

impl MetricRecord {
    /// A number by name (`loss`, `clean_acc`, `robust_acc`, `delta_cosine_mean`, …).
    pub fn number(&self, key: &str) -> Option<f64> {
        self.values.get(key).and_then(Value::as_f64)
    }

    /// What a chart draws one line per: the `method`, `model` or `kind`.
    pub fn series(&self, by: Series) -> Option<&str> {
        match by {
            Series::Method => self.method.as_deref(),
            Series::Model => self.model.as_deref(),
            Series::Kind => self.kind.as_deref(),
        }
    }
}

/// Which field of a [`MetricRecord`] names its line in a chart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Series {
    /// The sampled defense (training steps).
    Method,
    /// The evaluated model (hold-out evaluations).
    Model,
    /// The record's kind.
    Kind,
}

/// `DELETE /api/jobs/{id}` of a finished job.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct JobDeleted {
    /// Always true.
    pub deleted: bool,
    /// The record, as it was.
    pub job: JobRecord,
}

/// `DELETE /api/jobs/{id}`: a queued or running job's record, now cancelled (or
/// cancelling), or a finished job deleted.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum JobCancelled {
    /// A finished job, deleted with its folder and model.
    Deleted(JobDeleted),
    /// A queued or running job, cancelled.
    Cancelled(JobRecord),
}

/// One server-sent event of `GET /api/jobs/{id}/events` (its `event:` line is the
/// type; the data is this, tagged by `type`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum JobEvent {
    /// The record when the stream opens.
    Snapshot {
        /// The job's record (boxed: the other events are small).
        job: Box<JobRecord>,
    },
    /// Units done, with an estimate of the time left.
    Progress(JobProgress),
    /// A training or evaluation record.
    Metrics(MetricRecord),
    /// The job changed status; the last event of a finished job.
    Status {
        /// The new status.
        status: JobStatus,
        /// Why it failed.
        #[serde(default)]
        error: Option<String>,
        /// What it measured, when done.
        #[serde(default)]
        result: Option<Value>,
    },
}
