//! API errors: a status code and a JSON body `{error, detail}`, never a panic.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyperat::data::UploadError;
use hyperat::wire::ErrorBody;

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
            Json(ErrorBody {
                error: self.error.into(),
                detail: self.detail,
            }),
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

/// The largest framework error body turned into JSON (rejections say a line or two).
const MAX_ERROR_BODY: usize = 4096;

/// Middleware: every error the framework answers by itself (a body over the limit, a
/// malformed query, path, JSON or multipart body, a wrong method) comes back in the
/// API's `{error, detail}` JSON contract instead of plain text or an empty body.
pub async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, MAX_ERROR_BODY).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let detail = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut out = ApiError::new(status, error_kind(status), detail).into_response();
    for (name, value) in parts.headers.iter() {
        // Keep what the client needs to act on (`Allow` on a 405, `Retry-After`).
        if name == axum::http::header::ALLOW || name == axum::http::header::RETRY_AFTER {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// The `error` field for a status the framework chose.
fn error_kind(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        s if s.is_server_error() => "internal",
        _ => "error",
    }
}

/// What a handler that panicked answers: a 500 in the JSON contract; the server keeps
/// serving (the panic is caught per request).
pub fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown");
    eprintln!("serve: a handler panicked: {what}");
    ApiError::internal("the server hit a bug answering this request; it goes on serving")
        .into_response()
}
