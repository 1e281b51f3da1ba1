//! Connection hygiene over real sockets on 127.0.0.1 (issue 16): slow and idle clients
//! are dropped by the header and body timeouts, and a shutdown with event-stream
//! clients attached finishes within its grace period.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use hyperat_server::serve::listen::{ConnLimits, serve};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Running {
    addr: SocketAddr,
    server: Server,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(limits: ConnLimits) -> Running {
    let server = server(None, true);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let state = server.state.clone();
    let task = tokio::spawn(serve(listener, server.router.clone(), limits, async move {
        let _ = stopped.await;
        state.close_streams();
    }));
    Running {
        addr,
        server,
        stop,
        task,
    }
}

fn short() -> ConnLimits {
    ConnLimits {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(2),
        ..ConnLimits::default()
    }
}

/// Reads what the server sends until it closes the connection; `None` if it is still
/// open after `limit`.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend(&buf[..n]),
            }
        }
    })
    .await
    .ok()?;
    Some(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_clients_are_dropped() {
    let r = start(short()).await;
    let patience = Duration::from_secs(4);
    // An idle socket.
    let mut idle = TcpStream::connect(r.addr).await.unwrap();
    // Headers one line at a time (the timeout covers the whole head, not each line).
    let mut slow_head = TcpStream::connect(r.addr).await.unwrap();
    let drip_head = async {
        slow_head
            .write_all(b"GET /api/health HTTP/1.1\r\n")
            .await
            .unwrap();
        for i in 0..20 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let line = format!("x-drip-{i}: 1\r\n");
            if slow_head.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
    };
    let t0 = Instant::now();
    let (idle_closed, ()) = tokio::join!(until_closed(&mut idle, patience), drip_head);
    assert!(idle_closed.is_some(), "an idle socket is closed");
    assert!(
        until_closed(&mut slow_head, patience).await.is_some(),
        "a head sent a line at a time is cut off"
    );
    assert!(t0.elapsed() < Duration::from_secs(8));
    // A body one byte at a time: the body deadline ends it.
    let mut slow_body = TcpStream::connect(r.addr).await.unwrap();
    slow_body
        .write_all(
            format!(
                "POST /api/predict HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: multipart/form-data; boundary={BOUNDARY}\r\ncontent-length: 1000\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let t0 = Instant::now();
    let mut answer = None;
    for _ in 0..40 {
        if slow_body.write_all(b"-").await.is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(250), slow_body.read(&mut buf)).await
        {
            answer = Some(String::from_utf8_lossy(&buf[..n]).to_string());
            break;
        }
    }
    let answer = answer.expect("the server answered the slow body");
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // A kept-alive connection left idle after a request.
    let mut kept = TcpStream::connect(r.addr).await.unwrap();
    kept.write_all(b"GET /api/health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let got = until_closed(&mut kept, patience)
        .await
        .expect("closed when idle");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    r.stop.send(()).unwrap();
    r.task.await.unwrap().unwrap();
    r.server.state.jobs.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_event_streams_within_the_grace_period() {
    let r = start(ConnLimits::default()).await;
    // A job that would run for minutes, and a client following its events.
    let spec = json!({"kind": "tune", "model": "tiny", "config": tiny_request(100_000)});
    let (st, job) = json(&r.server.router, post_json("/api/jobs", &spec, None)).await;
    assert!(st.is_success(), "{job}");
    let id = job["id"].as_str().unwrap();
    let mut sse = TcpStream::connect(r.addr).await.unwrap();
    let req = format!("GET /api/jobs/{id}/events HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n");
    sse.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = sse.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t0 = Instant::now();
    r.stop.send(()).unwrap();
    r.task.await.unwrap().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        t0.elapsed()
    );
    assert!(
        until_closed(&mut sse, Duration::from_secs(2))
            .await
            .is_some(),
        "the event stream ended"
    );
    r.server.state.jobs.stop();
}

/// Many half-open connections (connected, nothing sent) are all closed by the header
/// timeout, and a real request is answered while they are open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_closed_and_do_not_block_others() {
    let r = start(ConnLimits {
        max_connections: 300,
        ..short()
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(r.addr).await.unwrap());
    }
    let mut live = TcpStream::connect(r.addr).await.unwrap();
    live.write_all(b"GET /api/health HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let got = until_closed(&mut live, Duration::from_secs(4))
        .await
        .expect("answered");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    let t0 = Instant::now();
    for s in &mut idle {
        assert!(
            until_closed(s, Duration::from_secs(4)).await.is_some(),
            "closed by the header timeout"
        );
    }
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    r.stop.send(()).unwrap();
    r.task.await.unwrap().unwrap();
    r.server.state.jobs.stop();
}
