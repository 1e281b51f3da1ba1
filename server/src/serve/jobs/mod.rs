//! Jobs: tune, pretrain, eval and report runs queued by clients and run one at a time
//! on a worker thread. Each job lives in `data-dir/runs/{id}/` with its record in
//! `job.json` (written atomically on every change of state), so a restarted server
//! loses nothing: a job that was running resumes (tuning from its last checkpoint),
//! queued jobs stay queued in order.

mod check;
mod events;
mod record;
mod worker;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use hyperat::cancel::CancelToken;
use hyperat::prelude::*;
use serde_json::Value;
use tokio::sync::broadcast;

use super::models::{ModelEntry, load_entry};
use super::registry::ModelRegistry;

pub use check::{check, parse_config};
pub use events::event_value;
use events::{emit, metrics_event, saved_metrics};
pub use record::*;
use worker::worker;

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

/// The devices jobs run on: the first serves models and runs every job; tuning and
/// pretraining jobs use all of them, one data-parallel peer each.
#[derive(Clone, Debug)]
pub struct JobDevices<B: AutodiffBackend> {
    /// The devices, in peer order.
    pub devices: Vec<B::Device>,
    /// Their names as the job records give them (`cuda:0`).
    pub names: Vec<String>,
}

impl<B: AutodiffBackend> JobDevices<B> {
    /// One device.
    pub fn one(device: B::Device, name: &str) -> Self {
        Self {
            devices: vec![device],
            names: vec![name.to_string()],
        }
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
                    && let Err(e) = write_record(&dir, r)
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

    /// Models of finished tune, pretrain and merge jobs.
    pub fn finished_models(&self, device: &B::Device) -> Vec<ModelEntry<B>> {
        let inner = self.inner.lock().expect("jobs lock");
        inner
            .records
            .values()
            .filter(|r| {
                r.status == JobStatus::Done
                    && matches!(
                        r.spec.kind,
                        JobKind::Tune | JobKind::Pretrain | JobKind::Merge
                    )
            })
            .filter_map(
                |r| match load_entry::<B>(&r.id, &self.dir.join(&r.id), device) {
                    Ok(e) => e.map(|mut e| {
                        e.name = r.spec.name.clone().into();
                        e
                    }),
                    Err(e) => {
                        eprintln!("serve: cannot load the model of job {}: {e}", r.id);
                        None
                    }
                },
            )
            .collect()
    }

    /// Starts the worker thread; it adds the models finished runs make to `models`, and
    /// trains data-parallel over `devices`.
    pub fn start(jobs: &Arc<Self>, models: Arc<ModelRegistry<B>>, devices: JobDevices<B>) {
        let weak = Arc::downgrade(jobs);
        let handle = std::thread::Builder::new()
            .name("hyperat-jobs".into())
            .spawn(move || worker::<B>(weak, models, devices))
            .expect("spawning the job worker");
        *jobs.worker.lock().expect("worker lock") = Some(handle);
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
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let inner = self.inner.lock().expect("jobs lock");
        let mut m = BTreeMap::<String, usize>::new();
        for r in inner.records.values() {
            *m.entry(format!("{:?}", r.status).to_lowercase())
                .or_default() += 1;
        }
        m
    }

    /// Queues a job (checked beforehand by the caller).
    pub fn submit(&self, mut spec: JobSpec) -> hyperat::Result<JobRecord> {
        spec.name = spec
            .name
            .as_deref()
            .and_then(|n| clean_name(n).ok().flatten());
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
            devices: vec![],
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
        write_record(&self.dir, r)
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
                    JobEvent::Status {
                        status: JobStatus::Cancelled,
                        error: None,
                        result: None,
                    },
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

    /// Renames a job (`None`: back to no name), in its record on disk too. `None` if
    /// there is no such job.
    pub fn rename(&self, id: &str, name: Option<String>) -> Option<hyperat::Result<JobRecord>> {
        let mut inner = self.inner.lock().expect("jobs lock");
        let r = inner.records.get_mut(id)?;
        r.spec.name = name;
        let r = r.clone();
        drop(inner);
        Some(self.save(&r).map(|_| r))
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
