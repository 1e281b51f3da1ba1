//! Job records: what a client asks (the spec), where a job is (status, progress), its
//! `job.json`, and the rules for records read back at start (ids, crashes, retention).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

pub use hyperat::wire::{
    JobEvent, JobKind, JobProgress, JobRecord, JobSpec, JobStatus, MAX_NAME, clean_name,
};

pub(super) fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A job's record read back from `runs/{folder}/job.json`: its id must be a job id and
/// name its own folder (a record cannot send the worker elsewhere).
pub(super) fn read_record(folder: &str, bytes: &[u8]) -> Result<JobRecord, String> {
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
pub(super) const MAX_CRASHES: usize = 2;

/// A record as found at start-up: a job left `running` without a shutdown's mark died
/// with the process; after [`MAX_CRASHES`] such deaths it fails instead of resuming.
/// Returns whether the record changed.
pub(super) fn after_restart(r: &mut JobRecord) -> bool {
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
pub(super) const KEEP_FINISHED: usize = 200;
/// Age after which a finished job goes (30 days).
pub(super) const KEEP_SECONDS: f64 = 30.0 * 24.0 * 3600.0;

/// Finished jobs past the retention: beyond the newest [`KEEP_FINISHED`], or finished
/// more than [`KEEP_SECONDS`] ago.
pub(super) fn expired(records: &BTreeMap<String, JobRecord>, now: f64) -> Vec<String> {
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

/// Writes `runs/{id}/job.json` atomically.
pub(super) fn write_record(runs: &Path, r: &JobRecord) -> hyperat::Result<()> {
    hyperat::io::write_atomic(
        runs.join(&r.id).join("job.json"),
        serde_json::to_string_pretty(r).expect("json").as_bytes(),
    )
}

/// Deletes a job's folder (its id was checked: it names a folder under `runs/`).
pub(super) fn remove_folder(runs: &Path, id: &str) {
    if valid_id(id)
        && let Err(e) = std::fs::remove_dir_all(runs.join(id))
        && e.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("serve: cannot remove job folder {id}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn record(id: &str, status: JobStatus, finished: Option<f64>) -> JobRecord {
        JobRecord {
            id: id.into(),
            spec: JobSpec {
                kind: JobKind::Eval,
                model: None,
                variant: None,
                name: None,
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
            devices: vec![],
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
