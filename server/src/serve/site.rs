//! Requests a browser sends on another site's behalf are refused. A page on
//! `evil.example` can make a browser send requests to `127.0.0.1:3000` (a form post, or
//! DNS rebinding: its own name re-pointed at this machine, so the browser believes it is
//! same-origin). Two checks stop both:
//! - `Host` must be an IP literal, `localhost`, or allowed with `--allowed-host`
//!   (rebinding needs a name the attacker controls);
//! - `Origin`, when a browser sends one on a request that changes state (anything but
//!   GET, HEAD, OPTIONS), must be this server's own origin or allowed with
//!   `--allowed-origin`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Which other hosts and origins the API answers.
#[derive(Clone, Debug, Default)]
pub struct SiteRules {
    /// Host names accepted besides IP literals and `localhost` (`--allowed-host`), e.g.
    /// `hyperat.school.example`.
    pub allowed_hosts: Vec<String>,
    /// Origins accepted besides the server's own (`--allowed-origin`), e.g.
    /// `https://lessons.school.example`.
    pub allowed_origins: Vec<String>,
}

impl SiteRules {
    /// Whether a `Host` header value (`name[:port]`) may be served.
    pub fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        name.eq_ignore_ascii_case("localhost")
            || name.parse::<IpAddr>().is_ok()
            || self
                .allowed_hosts
                .iter()
                .any(|a| a.eq_ignore_ascii_case(name))
    }

    /// Whether a state-changing request from `origin` may be served by a server reached
    /// as `host`.
    pub fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let own = origin
            .split_once("://")
            .is_some_and(|(_, rest)| host.is_some_and(|h| rest.eq_ignore_ascii_case(h)));
        own || self
            .allowed_origins
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }
}

/// The name part of a `Host` value: `[::1]:3000` → `::1`, `a.example:80` → `a.example`.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Middleware applying [`SiteRules`] to every API request.
pub async fn same_site(State(rules): State<Arc<SiteRules>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(h) = host
        && !rules.host_allowed(h)
    {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "unknown_host",
            format!(
                "this server does not answer to `{h}`; start it with --allowed-host {} to allow that name",
                host_name(h)
            ),
        )
        .into_response();
    }
    let changes_state = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if changes_state
        && let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
        && !rules.origin_allowed(origin, host)
    {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "foreign_origin",
            format!(
                "requests from pages on {origin} are refused; start the server with --allowed-origin {origin} to allow them"
            ),
        )
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_origins() {
        let r = SiteRules {
            allowed_hosts: vec!["hyperat.school.example".into()],
            allowed_origins: vec!["https://lessons.school.example/".into()],
        };
        for ok in [
            "127.0.0.1:3000",
            "localhost",
            "LOCALHOST:80",
            "[::1]:3000",
            "10.0.0.7",
            "hyperat.school.example:3000",
        ] {
            assert!(r.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:3000",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
        ] {
            assert!(!r.host_allowed(bad), "{bad}");
        }
        assert!(r.origin_allowed("http://127.0.0.1:3000", Some("127.0.0.1:3000")));
        assert!(r.origin_allowed("https://lessons.school.example", Some("10.0.0.7")));
        assert!(!r.origin_allowed("http://evil.example", Some("127.0.0.1:3000")));
        assert!(!r.origin_allowed("http://127.0.0.1:3001", Some("127.0.0.1:3000")));
        assert!(!r.origin_allowed("null", Some("127.0.0.1:3000")));
    }
}
