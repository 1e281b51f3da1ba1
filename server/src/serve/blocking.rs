//! The blocking-pool runner: model work runs off the async executor, a bounded number
//! at a time, under a timeout, and stops when its client goes away.

use std::sync::Arc;

use axum::http::StatusCode;
use hyperat::cancel::CancelToken;
use hyperat::prelude::*;

use super::error::{ApiError, ApiResult};
use super::state::AppState;

/// Runs work on the blocking pool under the concurrency limit `sem` and the timeout.
/// `f` gets a token that is cancelled when the request times out (504) or its client
/// goes away (the handler's future is dropped): work that wraps its models in
/// [`Cancellable`](hyperat::cancel::Cancellable) then ends within one model call and frees the slot.
pub async fn run_blocking<B: AutodiffBackend, T: Send + 'static>(
    s: &AppState<B>,
    sem: &Arc<tokio::sync::Semaphore>,
    f: impl FnOnce(&CancelToken) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let l = &s.config.limits;
    let permit = tokio::time::timeout(l.queue_timeout, sem.clone().acquire_owned())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the server is busy with other requests like this one; try again shortly",
            )
        })?
        .map_err(|_| ApiError::internal("the server is shutting down"))?;
    let token = CancelToken::new();
    let _cancel_on_drop = CancelOnDrop(token.clone());
    let task = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f(&token)
    });
    match tokio::time::timeout(l.work_timeout, task).await {
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "the work took longer than {} s; use fewer steps",
                l.work_timeout.as_secs()
            ),
        )),
        Ok(Err(e)) => Err(ApiError::internal(format!("the computation failed: {e}"))),
        Ok(Ok(r)) => r,
    }
}

/// Cancels its token when dropped: on a timeout, on a dropped request, and (harmlessly)
/// after the work finished.
struct CancelOnDrop(CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}
