//! The worker: runs the queued jobs one at a time, reporting progress to the job's record
//! and subscribers.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use hyperat::cancel::CancelToken;
use hyperat::eval::EvalRequest;
use hyperat::io::write_atomic;
use hyperat::prelude::*;
use hyperat::progress::Progress;
use hyperat::report::{ReportModel, ReportRequest, markdown};
use hyperat::train::PretrainRequest;
use hyperat::tune::{RunData, RunDir, TuneRequest, run_parallel};
use hyperat::variant::MergeRequest;
use serde_json::{Value, json};

use super::check::{merge_source, pretrain_request};
use super::*;
use crate::serve::models::{ModelEntry, load_entry};
use crate::serve::registry::ModelRegistry;

/// Progress of the running job, fed to its record and subscribers.
struct Reporter<'a, B: AutodiffBackend> {
    jobs: &'a Jobs<B>,
    id: String,
    /// The first progress report (units done, when): the ETA counts from it, so the
    /// time spent loading data and models before the first step does not inflate it.
    first: Option<(usize, Instant)>,
    last_save: Instant,
}

impl<B: AutodiffBackend> Progress for Reporter<'_, B> {
    fn update(&mut self, done: usize, total: usize, message: &str) {
        let (first, t0) = *self.first.get_or_insert((done, Instant::now()));
        let rate = (done > first).then(|| t0.elapsed().as_secs_f64() / (done - first) as f64);
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
        let event = JobEvent::Progress(r.progress.clone());
        emit(&mut inner, &self.id, event, false);
        drop(inner);
        if let Some(r) = snapshot {
            let _ = self.jobs.save(&r);
            self.last_save = Instant::now();
        }
    }

    fn metrics(&mut self, record: &Value) {
        let mut inner = self.jobs.inner.lock().expect("jobs lock");
        emit(&mut inner, &self.id, metrics_event(record), true);
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
pub(super) fn worker<B: AutodiffBackend>(
    jobs: Weak<Jobs<B>>,
    models: Arc<ModelRegistry<B>>,
    devices: JobDevices<B>,
) {
    loop {
        let Some(jobs) = jobs.upgrade() else { return };
        let jobs = &*jobs;
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
            r.devices = match r.spec.kind {
                JobKind::Tune | JobKind::Pretrain => devices.names.clone(),
                _ => devices.names[..1].to_vec(),
            };
            let (r, spec) = (r.clone(), r.spec.clone());
            let _ = jobs.save(&r);
            emit(
                &mut inner,
                &id,
                JobEvent::Status {
                    status: JobStatus::Running,
                    error: None,
                    result: None,
                },
                false,
            );
            spec
        };
        let mut rep = Reporter {
            jobs,
            id: id.clone(),
            first: None,
            last_save: Instant::now(),
        };
        let dir = jobs.dir.join(&id);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_job::<B>(&models, &devices.devices, &id, &dir, &spec, &mut rep)
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
                if let Some(mut m) = model {
                    m.name = jobs.get(&id).and_then(|r| r.spec.name).into();
                    models.add(m);
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
            JobEvent::Status {
                status: r.status,
                error: r.error,
                result: r.result,
            },
            false,
        );
        drop(inner);
        for gone in jobs.retain(&id) {
            models.remove(&gone);
        }
    }
}

/// A use case's result as a job sees it: `None` when it was cancelled (a client's
/// cancel, or a shutdown), its error as the job's message.
fn unless_cancelled<T>(result: hyperat::Result<T>) -> Result<Option<T>, String> {
    match result {
        Err(hyperat::Error::Cancelled) => Ok(None),
        other => other.map(Some).map_err(|e| e.to_string()),
    }
}

/// Runs one job; `Ok(None)` when it stopped early (cancel or shutdown).
fn run_job<B: AutodiffBackend>(
    s: &ModelRegistry<B>,
    train_devices: &[B::Device],
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
            let run_dir = if RunDir::is_run(dir) {
                RunDir::open(dir).map_err(err)?
            } else {
                let entry = s
                    .get_or_default(spec.model.as_deref())
                    .map_err(|e| e.detail)?;
                req.create_run(dir, &entry.backbone_dir()).map_err(err)?
            };
            let data = RunData::load(&run_dir).map_err(err)?;
            let (train, holdout) = (&data.train, data.holdout.as_ref());
            let ran = run_parallel::<B>(dir, train, holdout, train_devices, rep, None);
            let Some(summary) = unless_cancelled(ran)? else {
                return Ok(None);
            };
            let model = load_entry::<B>(id, dir, device).map_err(err)?;
            Ok(Some((json!(summary), model)))
        }
        JobKind::Pretrain => {
            let req: PretrainRequest = pretrain_request(&spec.config)?;
            let ran = req.run_parallel::<B>(&dir.join("model"), train_devices, rep);
            let Some(summary) = unless_cancelled(ran)? else {
                return Ok(None);
            };
            let model = load_entry::<B>(id, dir, device).map_err(err)?;
            Ok(Some((json!(summary), model)))
        }
        JobKind::Eval => {
            let req: EvalRequest = parse_config(&spec.config)?;
            let entry = s
                .get_or_default(spec.model.as_deref())
                .map_err(|e| e.detail)?;
            let variant = spec
                .variant
                .clone()
                .unwrap_or_else(|| entry.default_variant.clone());
            let model = entry
                .variant(Some(&variant))
                .ok_or_else(|| format!("model `{}` has no variant `{variant}`", entry.id))?;
            let name = format!("{}#{variant}", entry.id);
            let trained = entry.dataset.as_deref();
            let Some(outcome) =
                unless_cancelled(req.run::<B>(&name, model, &entry.config, trained, device, rep))?
            else {
                return Ok(None);
            };
            let full = serde_json::to_vec(&outcome).expect("json");
            write_atomic(dir.join("eval.json"), &full).map_err(err)?;
            let r = &outcome.report;
            Ok(Some((
                json!({"model": entry.id, "variant": variant, "dataset": outcome.dataset,
                    "split": outcome.split, "n": r.n, "clean_acc": r.clean_acc,
                    "robust_acc": r.robust_acc, "components": r.components, "attack": r.attack,
                    "seconds": r.seconds}),
                None,
            )))
        }
        JobKind::Merge => {
            let req: MergeRequest = parse_config(&spec.config)?;
            let entry = s
                .get_or_default(spec.model.as_deref())
                .map_err(|e| e.detail)?;
            let run = merge_source(&entry).map_err(|e| e.detail)?;
            let Some(outcome) =
                unless_cancelled(req.export::<B>(&run, &dir.join("model"), device, rep))?
            else {
                return Ok(None);
            };
            let model = load_entry::<B>(id, dir, device).map_err(err)?;
            let mut result = json!(outcome);
            // The job's own folder is the server's business, not the client's.
            result["path"] = json!("model");
            result["source"] = json!(entry.id);
            Ok(Some((result, model)))
        }
        JobKind::Report => {
            let mut req: ReportRequest = parse_config(&spec.config)?;
            if req.rows.is_empty() {
                let entry = s
                    .get_or_default(spec.model.as_deref())
                    .map_err(|e| e.detail)?;
                req.rows = entry
                    .variants
                    .iter()
                    .map(|(v, _)| ReportModel {
                        name: None,
                        model: entry.id.clone(),
                        variant: Some(v.clone()),
                    })
                    .collect();
            }
            // A row names a served model; it is measured from its folder.
            let resolve = |row: &ReportModel| {
                let entry = s
                    .get(&row.model)
                    .map_err(|e| hyperat::Error::Invalid(e.detail))?;
                let v = row
                    .variant
                    .clone()
                    .unwrap_or_else(|| entry.default_variant.clone());
                Ok((format!("{}#{v}", entry.id), entry.spec(&v)))
            };
            let Some(report) = unless_cancelled(req.run::<B>(&resolve, device, rep, &mut |_| {}))?
            else {
                return Ok(None);
            };
            write_atomic(
                dir.join("report.json"),
                serde_json::to_string_pretty(&report)
                    .expect("json")
                    .as_bytes(),
            )
            .map_err(err)?;
            let table = markdown(&report.rows, &report.config);
            write_atomic(dir.join("report.md"), table.as_bytes()).map_err(err)?;
            Ok(Some((json!(report), None)))
        }
    }
}
