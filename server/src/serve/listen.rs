//! The accept loop of `hyperat serve`: the router on hyper's HTTP/1 with what a server
//! open to a classroom network needs and `axum::serve` does not set — a header read
//! timeout (also the idle keep-alive timeout: hyper starts it whenever it waits for a
//! request head), a deadline for the whole request body, a cap on open connections, and
//! a graceful shutdown that ends event streams and gives up after a grace period.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::Request;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Connection limits of the accept loop.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    /// Time to send a request's head, and how long an idle kept-alive connection stays
    /// open (default 10 s).
    pub header_timeout: Duration,
    /// Time to send a whole request body, from its head on (default 30 s: a 3 MB photo
    /// over a 1 Mbit/s school link).
    pub body_timeout: Duration,
    /// Connections open at once; more wait in the listen backlog (default 512).
    pub max_connections: usize,
    /// How long a shutdown waits for requests in flight before closing them (default 5 s).
    pub shutdown_grace: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 512,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Serves `router` on `listener` until `stop` resolves, then stops accepting, lets the
/// requests in flight finish for at most `limits.shutdown_grace`, and returns. Handlers
/// see the peer address as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    eprintln!("serve: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let (router, body_timeout) = (router.clone(), limits.body_timeout);
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let mut req = req.map(|b| Body::new(Deadline::new(b, body_timeout)));
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            router.clone().oneshot(req)
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _slot = permit;
            // A client that goes away or times out is not the server's error.
            let _ = conn.await;
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => eprintln!(
            "serve: requests still running after {} s; closing them",
            limits.shutdown_grace.as_secs()
        ),
    }
    Ok(())
}

/// A request body that fails once its deadline passes (slow senders hold no connection
/// and no handler for longer than that).
struct Deadline {
    inner: Incoming,
    timer: Pin<Box<tokio::time::Sleep>>,
    after: Duration,
}

impl Deadline {
    fn new(inner: Incoming, after: Duration) -> Self {
        Self {
            inner,
            timer: Box::pin(tokio::time::sleep(after)),
            after,
        }
    }
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.timer.as_mut().poll(cx).is_ready() {
            let msg = format!(
                "the request body took longer than {} s to arrive",
                self.after.as_secs()
            );
            return Poll::Ready(Some(Err(msg.into())));
        }
        Pin::new(&mut self.inner).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
