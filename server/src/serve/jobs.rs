//! Jobs: tune, pretrain, eval and report runs queued by clients and run one at a time
//! on a worker thread. Each job lives in `data-dir/runs/{id}/` with its record in
//! `job.json` (written atomically on every change of state), so a restarted server
//! loses nothing: a job that was running resumes (tuning from its last checkpoint),
//! queued jobs stay queued in order.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hyperat::attack::AttackParams;
use hyperat::cancel::CancelToken;
use hyperat::data::{self, Split};
use hyperat::eval::{EvalConfig, evaluate};
use hyperat::io::write_atomic;
use hyperat::prelude::*;
use hyperat::progress::Progress;
use hyperat::report::{ReportConfig, evaluate_row, markdown};
use hyperat::train::PretrainRequest;
use hyperat::tune::{RunData, TuneRequest, checkpoint_step_of, read_run_info, run};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::models::{ModelEntry, load_entry};
use super::state::AppState;

/// What a job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// HyperAT or a baseline on a model's backbone (`config`: a `TuneRequest`).
    Tune,
    /// A backbone from a preset (`config`: a [`PretrainRequest`] without `from`).
    Pretrain,
    /// Clean and adversarial accuracy of a model's variant (`config`: an [`EvalJob`]).
    Eval,
    /// Clean / PGD / CW table of several variants (`config`: a [`ReportJob`]).
    Report,
}

/// A job as a client submits it: `{"kind": "tune", "model": "...", "config": {...}}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// Kind-specific settings; every field has a default.
    #[serde(default)]
    pub config: Value,
}

/// Settings of an eval job.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalJob {
    /// Dataset (default: the model's, else `fashion-mnist`).
    pub dataset: Option<String>,
    /// First N test images (default 1000).
    pub limit: usize,
    /// Attack name (default `pgd`; `none` for clean accuracy only).
    pub attack: String,
    /// Radius (default 0.1).
    pub eps: f32,
    /// Step (default eps/4).
    pub alpha: Option<f32>,
    /// Iterations (default 20).
    pub steps: usize,
    /// Restarts (default 1).
    pub restarts: usize,
    /// Square's queries (default 5000).
    pub queries: usize,
    /// Images per batch (default 128).
    pub batch_size: usize,
    /// Seed (default 0).
    pub seed: u64,
}

impl Default for EvalJob {
    fn default() -> Self {
        Self {
            dataset: None,
            limit: 1000,
            attack: "pgd".into(),
            eps: 0.1,
            alpha: None,
            steps: 20,
            restarts: 1,
            queries: 5000,
            batch_size: 128,
            seed: 0,
        }
    }
}

/// One row of a report job.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportRowSpec {
    /// Display name (default `model#variant`).
    #[serde(default)]
    pub name: Option<String>,
    /// Model id.
    pub model: String,
    /// Variant (default: the model's default).
    #[serde(default)]
    pub variant: Option<String>,
}

/// Settings of a report job.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportJob {
    /// Rows (default: every variant of the job's model).
    pub rows: Vec<ReportRowSpec>,
    /// Dataset (default `fashion-mnist`).
    pub dataset: String,
    /// First N test images (default 1000).
    pub limit: usize,
    /// Radius (default 0.1), step (default 0.01) and iterations (default 20).
    pub eps: f32,
    /// Step size.
    pub alpha: f32,
    /// PGD and CW iterations.
    pub steps: usize,
    /// Seed.
    pub seed: u64,
    /// Standard AutoAttack on the first N images too (default 0: none).
    pub aa_limit: usize,
}

impl Default for ReportJob {
    fn default() -> Self {
        Self {
            rows: vec![],
            dataset: "fashion-mnist".into(),
            limit: 1000,
            eps: 0.1,
            alpha: 0.01,
            steps: 20,
            seed: 0,
            aa_limit: 0,
        }
    }
}

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

impl JobStatus {
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
}

struct Live {
    history: Vec<Value>,
    tx: broadcast::Sender<Value>,
}

#[derive(Default)]
struct Inner {
    records: BTreeMap<String, JobRecord>,
    queue: VecDeque<String>,
    cancel: HashSet<String>,
    /// The running job's token: cancelled with the job or at shutdown, so that work
    /// checking inside a unit (an evaluation's attack) stops within a step.
    token: Option<(String, CancelToken)>,
    live: BTreeMap<String, Live>,
    /// `runs/*/job.json` files that could not be read back: (folder, why).
    corrupt: Vec<(String, String)>,
}

/// The job queue, its records and the worker.
pub struct Jobs<B: AutodiffBackend> {
    dir: PathBuf,
    inner: Mutex<Inner>,
    wake: Condvar,
    stop: AtomicBool,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    counter: AtomicU64,
    _backend: PhantomData<fn() -> B>,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A job's record read back from `runs/{folder}/job.json`: its id must be a job id and
/// name its own folder (a record cannot send the worker elsewhere).
fn read_record(folder: &str, bytes: &[u8]) -> Result<JobRecord, String> {
    let r: JobRecord = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if !valid_id(&r.id) {
        return Err(format!("`{}` is not a job id", r.id));
    }
    if r.id != folder {
        return Err(format!(
            "the record's id `{}` is not its folder's name",
            r.id
        ));
    }
    Ok(r)
}

/// Job ids are `job-` followed by digits and dashes (what [`Jobs::submit`] makes).
pub fn valid_id(id: &str) -> bool {
    id.strip_prefix("job-").is_some_and(|rest| {
        !rest.is_empty()
            && rest.len() <= 40
            && rest.bytes().all(|b| b.is_ascii_digit() || b == b'-')
    })
}

/// Times the process may die running one job before the job is marked failed instead of
/// resumed (a job that runs the machine out of memory would do it at every start).
const MAX_CRASHES: usize = 2;

/// A record as found at start-up: a job left `running` without a shutdown's mark died
/// with the process; after [`MAX_CRASHES`] such deaths it fails instead of resuming.
/// Returns whether the record changed.
fn after_restart(r: &mut JobRecord) -> bool {
    if r.status != JobStatus::Running {
        return false;
    }
    if !r.interrupted {
        r.crashes += 1;
    }
    r.interrupted = false;
    if r.crashes >= MAX_CRASHES {
        r.status = JobStatus::Failed;
        r.finished = Some(now());
        r.error = Some(format!(
            "the server died {} times while running this job (out of memory?); not resumed again",
            r.crashes
        ));
    }
    true
}

/// Finished jobs kept (records, folders, models); the oldest beyond go.
const KEEP_FINISHED: usize = 200;
/// Age after which a finished job goes (30 days).
const KEEP_SECONDS: f64 = 30.0 * 24.0 * 3600.0;

/// Finished jobs past the retention: beyond the newest [`KEEP_FINISHED`], or finished
/// more than [`KEEP_SECONDS`] ago.
fn expired(records: &BTreeMap<String, JobRecord>, now: f64) -> Vec<String> {
    let mut finished: Vec<&JobRecord> = records.values().filter(|r| r.status.terminal()).collect();
    finished.sort_by(|a, b| {
        let end = |r: &JobRecord| r.finished.unwrap_or(r.created);
        end(b).total_cmp(&end(a)).then(b.id.cmp(&a.id))
    });
    finished
        .iter()
        .enumerate()
        .filter(|(i, r)| {
            *i >= KEEP_FINISHED || now - r.finished.unwrap_or(r.created) > KEEP_SECONDS
        })
        .map(|(_, r)| r.id.clone())
        .collect()
}

/// Deletes a job's folder (its id was checked: it names a folder under `runs/`).
fn remove_folder(runs: &Path, id: &str) {
    if valid_id(id)
        && let Err(e) = std::fs::remove_dir_all(runs.join(id))
        && e.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("serve: cannot remove job folder {id}: {e}");
    }
}

/// Most records a job's event history keeps for late subscribers.
const HISTORY: usize = 20_000;

impl<B: AutodiffBackend> Jobs<B> {
    /// Reads every `runs/*/job.json`: running jobs go first in the queue (they resume),
    /// then queued ones by creation time.
    pub fn open(data_dir: &Path) -> hyperat::Result<Self> {
        let dir = data_dir.join("runs");
        let mut inner = Inner::default();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.filter_map(|e| e.ok()) {
                let folder = e.file_name().to_string_lossy().to_string();
                let path = e.path().join("job.json");
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                match read_record(&folder, &bytes) {
                    Ok(r) => {
                        inner.records.insert(r.id.clone(), r);
                    }
                    Err(why) => {
                        eprintln!("serve: ignoring {}: {why}", path.display());
                        inner.corrupt.push((folder, why));
                    }
                }
            }
            for r in inner.records.values_mut() {
                if after_restart(r)
                    && let Err(e) = write_atomic(
                        dir.join(&r.id).join("job.json"),
                        serde_json::to_string_pretty(r).expect("json").as_bytes(),
                    )
                {
                    eprintln!("serve: cannot update job {}: {e}", r.id);
                }
            }
        }
        let mut pending: Vec<&JobRecord> = inner
            .records
            .values()
            .filter(|r| !r.status.terminal())
            .collect();
        pending.sort_by(|a, b| {
            (a.status != JobStatus::Running)
                .cmp(&(b.status != JobStatus::Running))
                .then(a.created.total_cmp(&b.created))
                .then(a.id.cmp(&b.id))
        });
        inner.queue = pending.iter().map(|r| r.id.clone()).collect();
        for id in expired(&inner.records, now()) {
            inner.records.remove(&id);
            remove_folder(&dir, &id);
        }
        // Finished jobs' events are read from disk when someone asks (see `subscribe`).
        let live: Vec<(String, Vec<Value>)> = inner
            .records
            .values()
            .map(|r| {
                let history = if r.status.terminal() {
                    vec![]
                } else {
                    saved_metrics(&dir.join(&r.id), r)
                };
                (r.id.clone(), history)
            })
            .collect();
        for (id, history) in live {
            inner.live.insert(
                id,
                Live {
                    history,
                    tx: broadcast::channel(1024).0,
                },
            );
        }
        Ok(Self {
            dir,
            inner: Mutex::new(inner),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            worker: Mutex::new(None),
            counter: AtomicU64::new(0),
            _backend: PhantomData,
        })
    }

    /// Models of finished tune and pretrain jobs.
    pub fn finished_models(&self, device: &B::Device) -> Vec<ModelEntry<B>> {
        let inner = self.inner.lock().expect("jobs lock");
        inner
            .records
            .values()
            .filter(|r| {
                r.status == JobStatus::Done
                    && matches!(r.spec.kind, JobKind::Tune | JobKind::Pretrain)
            })
            .filter_map(
                |r| match load_entry::<B>(&r.id, &self.dir.join(&r.id), device) {
                    Ok(e) => e,
                    Err(e) => {
                        eprintln!("serve: cannot load the model of job {}: {e}", r.id);
                        None
                    }
                },
            )
            .collect()
    }

    /// Starts the worker thread.
    pub fn start(state: &Arc<AppState<B>>) {
        let weak = Arc::downgrade(state);
        let handle = std::thread::Builder::new()
            .name("hyperat-jobs".into())
            .spawn(move || worker::<B>(weak))
            .expect("spawning the job worker");
        *state.jobs.worker.lock().expect("worker lock") = Some(handle);
    }

    /// Stops the worker after its current unit of work (a tuning step); a running job
    /// stays `running` on disk and resumes at the next start. Blocks until it stopped.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some((_, t)) = &self.inner.lock().expect("jobs lock").token {
            t.cancel();
        }
        self.wake.notify_all();
        if let Some(h) = self.worker.lock().expect("worker lock").take() {
            let _ = h.join();
        }
    }

    /// Job counts by status.
    pub fn counts(&self) -> Value {
        let inner = self.inner.lock().expect("jobs lock");
        let mut m = BTreeMap::<String, usize>::new();
        for r in inner.records.values() {
            *m.entry(format!("{:?}", r.status).to_lowercase())
                .or_default() += 1;
        }
        json!(m)
    }

    /// Queues a job (checked beforehand by the caller).
    pub fn submit(&self, spec: JobSpec) -> hyperat::Result<JobRecord> {
        let t = now();
        let id = format!(
            "job-{}-{}",
            (t * 1000.0) as u64,
            self.counter.fetch_add(1, Ordering::SeqCst)
        );
        let record = JobRecord {
            id: id.clone(),
            spec,
            status: JobStatus::Queued,
            created: t,
            started: None,
            finished: None,
            attempts: 0,
            interrupted: false,
            crashes: 0,
            progress: JobProgress::default(),
            error: None,
            result: None,
        };
        std::fs::create_dir_all(self.dir.join(&id))
            .map_err(|e| hyperat::Error::io(&self.dir, e))?;
        self.save(&record)?;
        let mut inner = self.inner.lock().expect("jobs lock");
        inner.records.insert(id.clone(), record.clone());
        inner.live.insert(
            id.clone(),
            Live {
                history: vec![],
                tx: broadcast::channel(1024).0,
            },
        );
        inner.queue.push_back(id);
        drop(inner);
        self.wake.notify_all();
        Ok(record)
    }

    fn save(&self, r: &JobRecord) -> hyperat::Result<()> {
        write_atomic(
            self.dir.join(&r.id).join("job.json"),
            serde_json::to_string_pretty(r).expect("json").as_bytes(),
        )
    }

    /// Job folders whose record could not be read back: (folder, why).
    pub fn corrupt(&self) -> Vec<(String, String)> {
        self.inner.lock().expect("jobs lock").corrupt.clone()
    }

    /// Every record, newest first.
    pub fn list(&self) -> Vec<JobRecord> {
        let inner = self.inner.lock().expect("jobs lock");
        let mut v: Vec<JobRecord> = inner.records.values().cloned().collect();
        v.sort_by(|a, b| b.created.total_cmp(&a.created).then(b.id.cmp(&a.id)));
        v
    }

    /// One record.
    pub fn get(&self, id: &str) -> Option<JobRecord> {
        self.inner
            .lock()
            .expect("jobs lock")
            .records
            .get(id)
            .cloned()
    }

    /// Cancels a queued or running job; `None` if there is no such job.
    pub fn cancel(&self, id: &str) -> Option<JobRecord> {
        let mut inner = self.inner.lock().expect("jobs lock");
        let status = inner.records.get(id)?.status;
        match status {
            JobStatus::Queued => {
                inner.queue.retain(|q| q != id);
                let r = inner.records.get_mut(id).expect("present");
                r.status = JobStatus::Cancelled;
                r.finished = Some(now());
                let r = r.clone();
                let _ = self.save(&r);
                emit(
                    &mut inner,
                    id,
                    json!({"type": "status", "status": "cancelled"}),
                    false,
                );
                Some(r)
            }
            JobStatus::Running => {
                inner.cancel.insert(id.to_string());
                if let Some((running, t)) = &inner.token
                    && running == id
                {
                    t.cancel();
                }
                inner.records.get(id).cloned()
            }
            _ => inner.records.get(id).cloned(),
        }
    }

    /// The record, the events so far, and a receiver of the ones to come.
    pub fn subscribe(
        &self,
        id: &str,
    ) -> Option<(JobRecord, Vec<Value>, broadcast::Receiver<Value>)> {
        let inner = self.inner.lock().expect("jobs lock");
        let r = inner.records.get(id)?.clone();
        let live = inner.live.get(id)?;
        let history = if r.status.terminal() && live.history.is_empty() {
            saved_metrics(&self.dir.join(id), &r)
        } else {
            live.history.clone()
        };
        Some((r, history, live.tx.subscribe()))
    }

    /// Deletes a finished job: its record, events and folder (the caller removes its
    /// model). `None` if there is no such job or it has not finished.
    pub fn delete_finished(&self, id: &str) -> Option<JobRecord> {
        let mut inner = self.inner.lock().expect("jobs lock");
        if !inner.records.get(id)?.status.terminal() {
            return None;
        }
        let r = inner.records.remove(id)?;
        inner.live.remove(id);
        drop(inner);
        remove_folder(&self.dir, id);
        Some(r)
    }

    /// Applies the retention after a job finished: drops the finished job's in-memory
    /// events where they are on disk, and deletes expired jobs; returns their ids (their
    /// models are the caller's to remove).
    fn retain(&self, finished: &str) -> Vec<String> {
        let mut inner = self.inner.lock().expect("jobs lock");
        if self.dir.join(finished).join("metrics.jsonl").is_file()
            && let Some(l) = inner.live.get_mut(finished)
        {
            l.history = Vec::new();
        }
        let gone = expired(&inner.records, now());
        for id in &gone {
            inner.records.remove(id);
            inner.live.remove(id);
        }
        drop(inner);
        for id in &gone {
            remove_folder(&self.dir, id);
        }
        gone
    }
}

/// Sends an event to subscribers; `keep` also stores it for late ones.
fn emit(inner: &mut Inner, id: &str, event: Value, keep: bool) {
    if let Some(l) = inner.live.get_mut(id) {
        if keep && l.history.len() < HISTORY {
            l.history.push(event.clone());
        }
        let _ = l.tx.send(event);
    }
}

/// A tuning run's metric records up to its last checkpoint (what it resumes from).
fn saved_metrics(dir: &Path, r: &JobRecord) -> Vec<Value> {
    let upto = if r.spec.kind == JobKind::Tune {
        checkpoint_step_of(dir).unwrap_or(0)
    } else {
        usize::MAX
    };
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["step"].as_u64().is_none_or(|s| s as usize <= upto))
        .map(|mut v| {
            v["type"] = json!("metrics");
            v
        })
        .collect()
}

/// Progress of the running job, fed to its record and subscribers.
struct Reporter<'a, B: AutodiffBackend> {
    jobs: &'a Jobs<B>,
    id: String,
    clock: Instant,
    first: Option<usize>,
    last_save: Instant,
}

impl<B: AutodiffBackend> Progress for Reporter<'_, B> {
    fn update(&mut self, done: usize, total: usize, message: &str) {
        let first = *self.first.get_or_insert(done);
        let rate =
            (done > first).then(|| self.clock.elapsed().as_secs_f64() / (done - first) as f64);
        let eta = rate.map(|r| r * total.saturating_sub(done) as f64);
        let mut inner = self.jobs.inner.lock().expect("jobs lock");
        let Some(r) = inner.records.get_mut(&self.id) else {
            return;
        };
        r.progress = JobProgress {
            done,
            total,
            message: message.to_string(),
            eta_s: eta,
        };
        let snapshot = (self.last_save.elapsed().as_secs_f64() > 2.0).then(|| r.clone());
        emit(
            &mut inner,
            &self.id,
            json!({"type": "progress", "done": done, "total": total, "message": message, "eta_s": eta}),
            false,
        );
        drop(inner);
        if let Some(r) = snapshot {
            let _ = self.jobs.save(&r);
            self.last_save = Instant::now();
        }
    }

    fn metrics(&mut self, record: &Value) {
        let mut event = record.clone();
        event["type"] = json!("metrics");
        let mut inner = self.jobs.inner.lock().expect("jobs lock");
        emit(&mut inner, &self.id, event, true);
    }

    fn cancel_token(&self) -> Option<CancelToken> {
        let inner = self.jobs.inner.lock().expect("jobs lock");
        inner
            .token
            .as_ref()
            .filter(|(id, _)| *id == self.id)
            .map(|(_, t)| t.clone())
    }

    fn cancelled(&self) -> bool {
        self.jobs.stop.load(Ordering::SeqCst)
            || self
                .jobs
                .inner
                .lock()
                .expect("jobs lock")
                .cancel
                .contains(&self.id)
    }
}

/// What a finished job leaves: its result, and a model to add (tune, pretrain).
type Finished<B> = (Value, Option<ModelEntry<B>>);

/// The worker: one job at a time until stopped.
fn worker<B: AutodiffBackend>(state: Weak<AppState<B>>) {
    loop {
        let Some(s) = state.upgrade() else { return };
        let jobs = &s.jobs;
        let id = {
            let mut inner = jobs.inner.lock().expect("jobs lock");
            loop {
                if jobs.stop.load(Ordering::SeqCst) {
                    return;
                }
                if let Some(id) = inner.queue.pop_front() {
                    break id;
                }
                let (guard, _) = jobs
                    .wake
                    .wait_timeout(inner, std::time::Duration::from_millis(500))
                    .expect("jobs lock");
                inner = guard;
            }
        };
        let spec = {
            let mut inner = jobs.inner.lock().expect("jobs lock");
            inner.token = Some((id.clone(), CancelToken::new()));
            let r = inner.records.get_mut(&id).expect("queued job has a record");
            r.status = JobStatus::Running;
            r.started = Some(now());
            r.attempts += 1;
            let (r, spec) = (r.clone(), r.spec.clone());
            let _ = jobs.save(&r);
            emit(
                &mut inner,
                &id,
                json!({"type": "status", "status": "running"}),
                false,
            );
            spec
        };
        let mut rep = Reporter {
            jobs,
            id: id.clone(),
            clock: Instant::now(),
            first: None,
            last_save: Instant::now(),
        };
        let dir = jobs.dir.join(&id);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_job::<B>(&s, &id, &dir, &spec, &mut rep)
        }))
        .unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            Err(format!("the job crashed: {msg}"))
        });
        let stopping = jobs.stop.load(Ordering::SeqCst);
        // A finished run's model is served before anyone hears the job is done.
        let outcome = outcome.map(|o| {
            o.map(|(result, model)| {
                if let Some(m) = model {
                    s.add_model(m);
                }
                result
            })
        });
        let mut inner = jobs.inner.lock().expect("jobs lock");
        let cancelled = inner.cancel.remove(&id);
        let r = inner.records.get_mut(&id).expect("record");
        match outcome {
            Ok(Some(result)) => {
                r.status = JobStatus::Done;
                r.result = Some(result);
            }
            _ if cancelled => r.status = JobStatus::Cancelled,
            Ok(None) | Err(_) if stopping => {
                // Interrupted by a shutdown: stays `running`, resumes at the next start.
                r.interrupted = true;
                let r = r.clone();
                let _ = jobs.save(&r);
                return;
            }
            Ok(None) => r.status = JobStatus::Cancelled,
            Err(e) => {
                r.status = JobStatus::Failed;
                r.error = Some(e);
            }
        }
        r.finished = Some(now());
        let r = r.clone();
        let _ = jobs.save(&r);
        emit(
            &mut inner,
            &id,
            json!({"type": "status", "status": r.status, "error": r.error, "result": r.result}),
            false,
        );
        drop(inner);
        for gone in jobs.retain(&id) {
            s.remove_model(&gone);
        }
    }
}

/// Runs one job; `Ok(None)` when it stopped early (cancel or shutdown).
fn run_job<B: AutodiffBackend>(
    s: &AppState<B>,
    id: &str,
    dir: &Path,
    spec: &JobSpec,
    rep: &mut Reporter<'_, B>,
) -> Result<Option<Finished<B>>, String> {
    let err = |e: hyperat::Error| e.to_string();
    let device = &s.device;
    match spec.kind {
        JobKind::Tune => {
            let req: TuneRequest = parse_config(&spec.config)?;
            let info = if dir.join("run.json").is_file() {
                read_run_info(dir).map_err(err)?
            } else {
                let entry = s
                    .model_or_default(spec.model.as_deref())
                    .map_err(|e| e.detail)?;
                req.create_run(dir, &entry.backbone_dir()).map_err(err)?
            };
            let data = RunData::load(dir, &info).map_err(err)?;
            let ran = run::<B>(dir, &data.train, data.holdout.as_ref(), device, rep, None);
            let Some(summary) = ran.map_err(err)? else {
                return Ok(None);
            };
            let model = load_entry::<B>(id, dir, device).map_err(err)?;
            Ok(Some((json!(summary), model)))
        }
        JobKind::Pretrain => {
            let req: PretrainRequest = pretrain_request(&spec.config)?;
            let summary = match req.run::<B>(&dir.join("model"), device, rep) {
                Err(hyperat::Error::Cancelled) => return Ok(None),
                other => other.map_err(err)?,
            };
            let model = load_entry::<B>(id, dir, device).map_err(err)?;
            Ok(Some((json!(summary), model)))
        }
        JobKind::Eval => {
            let e: EvalJob = parse_config(&spec.config)?;
            let entry = s
                .model_or_default(spec.model.as_deref())
                .map_err(|e| e.detail)?;
            let variant = spec
                .variant
                .clone()
                .unwrap_or_else(|| entry.default_variant.clone());
            let model = entry
                .variant(Some(&variant))
                .ok_or_else(|| format!("model `{}` has no variant `{variant}`", entry.id))?;
            let name = e
                .dataset
                .clone()
                .or_else(|| entry.dataset.clone())
                .unwrap_or_else(|| "fashion-mnist".into());
            let mut ds =
                data::load(&name, Split::Test, Some(entry.config.input_shape())).map_err(err)?;
            ds.truncate(e.limit);
            let ec = EvalConfig {
                attack: e.attack.clone(),
                params: AttackParams {
                    eps: e.eps,
                    alpha: e.alpha,
                    steps: e.steps,
                    restarts: e.restarts,
                    queries: e.queries,
                    ..Default::default()
                },
                batch_size: e.batch_size,
                seed: e.seed,
            };
            let report = match evaluate::<B>(model, &ds, &ec, device, rep) {
                Err(_) if rep.cancelled() => return Ok(None),
                r => r.map_err(err)?,
            };
            let full =
                json!({"model": entry.id, "variant": variant, "dataset": name, "report": report});
            write_atomic(dir.join("eval.json"), full.to_string().as_bytes()).map_err(err)?;
            Ok(Some((
                json!({"model": entry.id, "variant": variant, "dataset": name, "n": report.n,
                    "clean_acc": report.clean_acc, "robust_acc": report.robust_acc,
                    "components": report.components, "attack": report.attack, "seconds": report.seconds}),
                None,
            )))
        }
        JobKind::Report => {
            let r: ReportJob = parse_config(&spec.config)?;
            let rows: Vec<(String, String)> = if r.rows.is_empty() {
                let entry = s
                    .model_or_default(spec.model.as_deref())
                    .map_err(|e| e.detail)?;
                entry
                    .variants
                    .iter()
                    .map(|(v, _)| (format!("{}#{v}", entry.id), entry.spec(v)))
                    .collect()
            } else {
                r.rows
                    .iter()
                    .map(|row| {
                        let entry = s.model(&row.model).map_err(|e| e.detail)?;
                        let v = row
                            .variant
                            .clone()
                            .unwrap_or_else(|| entry.default_variant.clone());
                        Ok((
                            row.name
                                .clone()
                                .unwrap_or_else(|| format!("{}#{v}", entry.id)),
                            entry.spec(&v),
                        ))
                    })
                    .collect::<Result<_, String>>()?
            };
            let mut ds = data::load(&r.dataset, Split::Test, None).map_err(err)?;
            ds.truncate(r.limit);
            let cfg = ReportConfig {
                eps: r.eps,
                alpha: r.alpha,
                steps: r.steps,
                batch_size: 128,
                seed: r.seed,
                aa_limit: r.aa_limit,
            };
            let mut out = vec![];
            for (name, spec) in rows {
                if rep.cancelled() {
                    return Ok(None);
                }
                match evaluate_row::<B>(&name, &spec, &ds, &cfg, device, rep) {
                    Err(_) if rep.cancelled() => return Ok(None),
                    row => out.push(row.map_err(err)?),
                }
            }
            write_atomic(
                dir.join("report.json"),
                serde_json::to_string_pretty(&out).expect("json").as_bytes(),
            )
            .map_err(err)?;
            write_atomic(dir.join("report.md"), markdown(&out, &cfg).as_bytes()).map_err(err)?;
            Ok(Some((json!(out), None)))
        }
    }
}

/// Parses a job's `config` (absent means every default).
pub fn parse_config<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, String> {
    let v = if v.is_null() { json!({}) } else { v.clone() };
    serde_json::from_value(v).map_err(|e| format!("config: {e}"))
}

/// A pretrain job's request: every `hyperat pretrain` setting but `from` (a job names
/// no server paths).
fn pretrain_request(v: &Value) -> Result<PretrainRequest, String> {
    let req: PretrainRequest = parse_config(v)?;
    if req.from.is_some() {
        return Err("config: `from` is not accepted in a job (start from a preset)".into());
    }
    Ok(req)
}

/// Jobs read only the datasets the server knows by name: a path (`folder:…`) from a
/// client would let it probe and read the server's files.
fn known_dataset(name: &str) -> Result<(), super::error::ApiError> {
    if name == "fmnist" || super::state::DATASETS.contains(&name) {
        Ok(())
    } else {
        Err(super::error::ApiError::invalid(format!(
            "dataset `{name}`: jobs take one of {} (no paths)",
            super::state::DATASETS.join(", ")
        )))
    }
}

/// Checks a spec before it is queued (unknown fields, bad values, unknown models).
pub fn check<B: AutodiffBackend>(
    s: &AppState<B>,
    spec: &JobSpec,
) -> Result<(), super::error::ApiError> {
    use super::error::ApiError;
    let inv = ApiError::invalid;
    match spec.kind {
        JobKind::Tune => {
            let req: TuneRequest = parse_config(&spec.config).map_err(inv)?;
            known_dataset(&req.dataset)?;
            let entry = s.model_or_default(spec.model.as_deref())?;
            let ck = hyperat::checkpoint::Checkpoint::load(entry.backbone_dir())?;
            req.validate(&ck)?;
            if req.steps > 1_000_000 || req.batch_size > 4096 {
                return Err(inv(
                    "steps at most 1000000, batch_size at most 4096".to_string()
                ));
            }
        }
        JobKind::Pretrain => {
            let req = pretrain_request(&spec.config).map_err(inv)?;
            known_dataset(&req.dataset)?;
            req.validate()?;
        }
        JobKind::Eval => {
            let e: EvalJob = parse_config(&spec.config).map_err(inv)?;
            if let Some(d) = &e.dataset {
                known_dataset(d)?;
            }
            let entry = s.model_or_default(spec.model.as_deref())?;
            if let Some(v) = &spec.variant
                && entry.variant(Some(v)).is_none()
            {
                return Err(ApiError::not_found(format!(
                    "model `{}` has no variant `{v}`",
                    entry.id
                )));
            }
            if e.attack != "none" {
                hyperat::attack::by_name::<B>(
                    &e.attack,
                    &AttackParams {
                        eps: e.eps,
                        alpha: e.alpha,
                        steps: e.steps,
                        restarts: e.restarts,
                        ..Default::default()
                    },
                )?;
            }
        }
        JobKind::Report => {
            let r: ReportJob = parse_config(&spec.config).map_err(inv)?;
            known_dataset(&r.dataset)?;
            for row in &r.rows {
                let entry = s.model(&row.model)?;
                if let Some(v) = &row.variant
                    && entry.variant(Some(v)).is_none()
                {
                    return Err(ApiError::not_found(format!(
                        "model `{}` has no variant `{v}`",
                        entry.id
                    )));
                }
            }
            if r.rows.is_empty() {
                s.model_or_default(spec.model.as_deref())?;
            }
            AttackParams {
                eps: r.eps,
                alpha: Some(r.alpha),
                steps: r.steps,
                ..Default::default()
            }
            .validate()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, status: JobStatus, finished: Option<f64>) -> JobRecord {
        JobRecord {
            id: id.into(),
            spec: JobSpec {
                kind: JobKind::Eval,
                model: None,
                variant: None,
                config: Value::Null,
            },
            status,
            created: 0.0,
            started: None,
            finished,
            attempts: 1,
            interrupted: false,
            crashes: 0,
            progress: JobProgress::default(),
            error: None,
            result: None,
        }
    }

    #[test]
    fn retention_drops_the_oldest_and_the_stale_finished_jobs_only() {
        let now = 100.0 * 24.0 * 3600.0;
        let mut records = BTreeMap::new();
        for i in 0..KEEP_FINISHED + 3 {
            let id = format!("job-{i}-0");
            records.insert(
                id.clone(),
                record(&id, JobStatus::Done, Some(now - i as f64)),
            );
        }
        let stale = "job-9999-0";
        records.insert(
            stale.into(),
            record(stale, JobStatus::Failed, Some(now - KEEP_SECONDS - 1.0)),
        );
        let running = "job-5-1";
        records.insert(running.into(), record(running, JobStatus::Running, None));
        let mut gone = expired(&records, now);
        gone.sort();
        let mut want: Vec<String> = (KEEP_FINISHED..KEEP_FINISHED + 3)
            .map(|i| format!("job-{i}-0"))
            .collect();
        want.push(stale.into());
        want.sort();
        assert_eq!(gone, want);
    }

    #[test]
    fn job_ids() {
        assert!(valid_id("job-1796012851045-6"));
        for bad in ["../../escape", "job-", "job-1/../x", "other-1", "job-1a"] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
