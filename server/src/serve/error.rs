//! API errors: a status code and a JSON body `{error, detail}`, never a panic.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyperat::data::UploadError;
use serde_json::json;

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Short machine-readable kind (`not_found`, `invalid`, ...).
    pub error: &'static str,
    /// What was wrong, in words.
    pub detail: String,
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// Any status with a kind and detail.
    pub fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            error,
            detail: detail.into(),
        }
    }
    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }
    /// 422: well-formed but unacceptable values.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", detail)
    }
    /// 400: a malformed request.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }
    /// 500: our fault.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.error, "detail": self.detail})),
        )
            .into_response()
    }
}

impl From<hyperat::Error> for ApiError {
    fn from(e: hyperat::Error) -> Self {
        match e {
            hyperat::Error::Invalid(_) | hyperat::Error::Config(_) => Self::invalid(e.to_string()),
            hyperat::Error::Data(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "data", e.to_string())
            }
            _ => Self::internal(e.to_string()),
        }
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::Unsupported(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                e.to_string(),
            ),
            UploadError::Corrupt(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "undecodable",
                e.to_string(),
            ),
        }
    }
}

impl From<axum::extract::multipart::MultipartError> for ApiError {
    fn from(e: axum::extract::multipart::MultipartError) -> Self {
        // A body cut off by the size limit surfaces as a stream error; every multipart
        // failure is the client's body, so never a 5xx.
        let text = e.body_text();
        let status = if e.status().is_client_error() {
            e.status()
        } else if too_large(&e) {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        Self::new(status, "bad_multipart", text)
    }
}

/// Whether an error was caused by a body over the size limit.
fn too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(x) = cur {
        if x.is::<http_body_util::LengthLimitError>() || x.to_string().contains("length limit") {
            return true;
        }
        cur = x.source();
    }
    false
}
