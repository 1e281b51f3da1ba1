//! Job endpoints: submit, list, inspect, stream events, cancel. Guarded: with an
//! admin token configured they need `Authorization: Bearer TOKEN`; without one they
//! answer loopback clients only (a classroom server: students attack, the teacher trains).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use hyperat::prelude::*;
use tokio::sync::broadcast::error::RecvError;

use super::api::Shared;
use super::auth::{Peer, authorize, authorize_with};
use super::error::{ApiError, ApiResult};
use super::jobs::{JobSpec, check, clean_name, event_value};
use hyperat::wire::{
    CorruptJob, JobCancelled, JobDeleted, JobEvent, JobList, JobRecord, JobRename,
};

/// Job bodies must say they are JSON: a cross-site page can post `text/plain` (or a form)
/// without the browser asking first, but not `application/json`.
fn require_json(headers: &HeaderMap) -> ApiResult<()> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "a job is a JSON body: send it as Content-Type: application/json (got {:?})",
                ct
            ),
        ))
    }
}

fn unknown_job(id: &str) -> ApiError {
    ApiError::not_found(format!("unknown job `{id}`"))
}

/// `POST /api/jobs`: `{"kind": "tune"|"pretrain"|"eval"|"report", "model", "variant", "config"}`.
pub async fn submit<B: AutodiffBackend>(
    State(s): Shared<B>,
    headers: HeaderMap,
    peer: Peer,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    authorize(&s, &headers, &peer)?;
    require_json(&headers)?;
    let spec: JobSpec =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(format!("job spec: {e}")))?;
    {
        let s = s.clone();
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || check(&s.models, &spec, s.train_peers))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??;
    }
    let r = s.jobs.submit(spec)?;
    Ok((StatusCode::CREATED, Json(r)).into_response())
}

/// `GET /api/jobs`.
pub async fn list<B: AutodiffBackend>(
    State(s): Shared<B>,
    headers: HeaderMap,
    peer: Peer,
) -> ApiResult<Json<JobList>> {
    authorize(&s, &headers, &peer)?;
    let corrupt = s
        .jobs
        .corrupt()
        .into_iter()
        .map(|(folder, error)| CorruptJob { folder, error })
        .collect();
    Ok(Json(JobList {
        jobs: s.jobs.list(),
        corrupt,
    }))
}

/// `GET /api/jobs/{id}`.
pub async fn get<B: AutodiffBackend>(
    State(s): Shared<B>,
    headers: HeaderMap,
    peer: Peer,
    Path(id): Path<String>,
) -> ApiResult<Json<JobRecord>> {
    authorize(&s, &headers, &peer)?;
    let r = s.jobs.get(&id).ok_or_else(|| unknown_job(&id))?;
    Ok(Json(r))
}

/// `DELETE /api/jobs/{id}`: cancels a queued or running job; deletes a finished one (its
/// record, events, folder and model).
pub async fn cancel<B: AutodiffBackend>(
    State(s): Shared<B>,
    headers: HeaderMap,
    peer: Peer,
    Path(id): Path<String>,
) -> ApiResult<Json<JobCancelled>> {
    authorize(&s, &headers, &peer)?;
    if let Some(job) = s.jobs.delete_finished(&id) {
        s.models.remove(&id);
        return Ok(Json(JobCancelled::Deleted(JobDeleted {
            deleted: true,
            job,
        })));
    }
    let r = s.jobs.cancel(&id).ok_or_else(|| unknown_job(&id))?;
    Ok(Json(JobCancelled::Cancelled(r)))
}

/// `PATCH /api/jobs/{id}`: `{"name": "…"}` renames a job and the model it made (an
/// empty or null name removes the name).
pub async fn rename<B: AutodiffBackend>(
    State(s): Shared<B>,
    headers: HeaderMap,
    peer: Peer,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<JobRecord>> {
    authorize(&s, &headers, &peer)?;
    require_json(&headers)?;
    let r: JobRename =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(format!("rename: {e}")))?;
    let name = match r.name {
        Some(n) => clean_name(&n).map_err(ApiError::invalid)?,
        None => None,
    };
    let record = s
        .jobs
        .rename(&id, name.clone())
        .ok_or_else(|| unknown_job(&id))??;
    s.models.rename(&id, name);
    Ok(Json(record))
}

/// Query of the event stream.
#[derive(Debug, serde::Deserialize)]
pub struct TokenQuery {
    access_token: Option<String>,
}

/// `GET /api/jobs/{id}/events`: server-sent events. First `snapshot` (the record), then
/// every stored `metrics` record, then live `progress`, `metrics` and `status` events;
/// the stream ends after the final status.
pub async fn events<B: AutodiffBackend>(
    State(s): Shared<B>,
    headers: HeaderMap,
    peer: Peer,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    authorize_with(&s, &headers, &peer, q.access_token.as_deref())?;
    let (record, history, rx) = s.jobs.subscribe(&id).ok_or_else(|| unknown_job(&id))?;
    let done = record.status.terminal();
    let end = done.then(|| JobEvent::Status {
        status: record.status,
        error: record.error.clone(),
        result: record.result.clone(),
    });
    let mut first = vec![event_value(&JobEvent::Snapshot {
        job: Box::new(record),
    })];
    first.extend(history);
    first.extend(end.as_ref().map(event_value));
    let head = stream::iter(first);
    let tail = stream::unfold((rx, done), |(mut rx, done)| async move {
        if done {
            return None;
        }
        loop {
            match rx.recv().await {
                Ok(v) => {
                    let end = v["type"] == "status"
                        && matches!(v["status"].as_str(), Some("done" | "failed" | "cancelled"));
                    return Some((v, (rx, end)));
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let events = head.chain(tail).take_until(s.streams_closed()).map(|v| {
        let kind = v["type"].as_str().unwrap_or("message").to_string();
        Ok(Event::default().event(kind).data(v.to_string()))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
