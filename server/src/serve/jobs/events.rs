//! Job events: what subscribers of a job's stream hear (and late ones get from its
//! history), as [`JobEvent`]s tagged by `type`.

use std::path::Path;

use hyperat::io::read_records;
use hyperat::tune::RunDir;
use hyperat::wire::{JobEvent, JobKind, JobRecord, MetricRecord};
use serde_json::Value;

use super::{HISTORY, Inner};

/// The JSON an event goes out as (tagged by `type`, the SSE event's name).
pub fn event_value(event: &JobEvent) -> Value {
    serde_json::to_value(event).expect("events serialize")
}

/// A metrics record (a line of `metrics.jsonl`) as an event.
pub(super) fn metrics_event(record: &Value) -> JobEvent {
    JobEvent::Metrics(serde_json::from_value(record.clone()).unwrap_or_default())
}

/// Sends an event to subscribers; `keep` also stores it for late ones.
pub(super) fn emit(inner: &mut Inner, id: &str, event: JobEvent, keep: bool) {
    let event = event_value(&event);
    if let Some(l) = inner.live.get_mut(id) {
        if keep && l.history.len() < HISTORY {
            l.history.push(event.clone());
        }
        let _ = l.tx.send(event);
    }
}

/// A tuning run's metric records up to its last checkpoint (what it resumes from).
pub(super) fn saved_metrics(dir: &Path, r: &JobRecord) -> Vec<Value> {
    let records: Vec<Value> = match RunDir::open(dir) {
        Ok(run) if r.spec.kind == JobKind::Tune => run.saved_metrics(),
        _ => read_records(&dir.join("metrics.jsonl")),
    };
    records
        .into_iter()
        .filter_map(|v| serde_json::from_value::<MetricRecord>(v).ok())
        .map(|m| event_value(&JobEvent::Metrics(m)))
        .collect()
}
