//! Who may use the job endpoints: the admin token when the server has one, else callers
//! on this machine; and the token check the work budget uses.

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::extract::FromRequestParts;
use axum::extract::connect_info::{ConnectInfo, MockConnectInfo};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use hyperat::prelude::*;

use super::error::{ApiError, ApiResult};
use super::state::AppState;

/// Who is asking: the peer address (absent when the router runs without a socket;
/// tests set one with `MockConnectInfo`).
pub struct Peer(Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let ext = &parts.extensions;
        Ok(Peer(
            ext.get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0)
                .or_else(|| ext.get::<MockConnectInfo<SocketAddr>>().map(|m| m.0)),
        ))
    }
}

pub fn authorize<B: AutodiffBackend>(
    s: &AppState<B>,
    headers: &HeaderMap,
    peer: &Peer,
) -> ApiResult<()> {
    authorize_with(s, headers, peer, None)
}

/// Whether the request carries `token` as `Authorization: Bearer` (or as `query_token`),
/// compared in constant time.
pub fn bearer_matches(headers: &HeaderMap, query_token: Option<&str>, token: &str) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or(query_token)
        .unwrap_or("");
    // Compare every byte so the time taken does not reveal a matching prefix.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// [`authorize`], also accepting the token as `?access_token=` (a browser's
/// `EventSource` cannot send an `Authorization` header).
pub fn authorize_with<B: AutodiffBackend>(
    s: &AppState<B>,
    headers: &HeaderMap,
    peer: &Peer,
    query_token: Option<&str>,
) -> ApiResult<()> {
    match &s.config.admin_token {
        Some(token) => {
            let same = bearer_matches(headers, query_token, token);
            if same {
                Ok(())
            } else {
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "job endpoints need `Authorization: Bearer <admin token>`",
                ))
            }
        }
        None => match peer {
            Peer(Some(addr)) if addr.ip().is_loopback() => Ok(()),
            _ => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "job endpoints are open to this machine only; start the server with --admin-token to allow others",
            )),
        },
    }
}
