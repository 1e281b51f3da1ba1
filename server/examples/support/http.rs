#![allow(dead_code)]
//! A minimal HTTP/1.1 client for the load examples: one request per fresh connection,
//! so every request pays the whole round trip a browser's first request pays.

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const BOUNDARY: &str = "hyperat-load-boundary";

/// A multipart body of text fields and an optional `image` file.
pub fn form(fields: &[(&str, String)], image: Option<&[u8]>) -> Vec<u8> {
    let mut b = Vec::new();
    for (k, v) in fields {
        b.extend(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    if let Some(img) = image {
        b.extend(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n\r\n")
                .as_bytes(),
        );
        b.extend(img);
        b.extend(b"\r\n");
    }
    b.extend(format!("--{BOUNDARY}--\r\n").as_bytes());
    b
}

/// The multipart content type of [`form`] bodies.
pub fn multipart() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// One request over a fresh connection; `headers` are extra `Name: value\r\n` lines.
/// Returns (status, seconds, response body).
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> std::io::Result<(u16, f64, Vec<u8>)> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let host = if headers.to_ascii_lowercase().contains("host:") {
        String::new()
    } else {
        format!("Host: {addr}\r\n")
    };
    let ct = content_type
        .map(|c| format!("Content-Type: {c}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\n{host}{headers}{ct}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await?;
    let status = std::str::from_utf8(&resp[..resp.len().min(12)])
        .ok()
        .and_then(|l| l.get(9..12))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| resp[i + 4..].to_vec())
        .unwrap_or_default();
    Ok((status, t0.elapsed().as_secs_f64(), body))
}

/// A multipart POST; returns (status, seconds).
pub async fn post(addr: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, f64)> {
    let (st, secs, _) = request(addr, "POST", path, "", Some(&multipart()), body).await?;
    Ok((st, secs))
}

/// The `p` quantile of sorted samples.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}
