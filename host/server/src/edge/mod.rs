//! The HTTP edge: the listener's accept loop and each connection, between the socket and the router.
//!
//! - At most `max_connections` connections are served at once; one more is answered `503` with `Retry-After`
//!   and closed.
//! - Every request head is checked by [`head::Framer`] before hyper reads it (limits on its size, its target
//!   and its number of fields; malformed bytes), and refused in the API's JSON shape: a client never gets one of
//!   hyper's bare `400`/`414`/`431` answers.
//! - A head must arrive within `header_timeout`; a kept-alive connection is closed after `idle_timeout` of
//!   silence; a request's body must have arrived `request_timeout` after its first byte (the body readers of
//!   `extract` answer `408` past it: [`RequestDeadline`]).

mod head;
mod io;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use axum::http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

pub(crate) use head::HeadLimits;

/// How long open connections may take to finish once the server is asked to stop.
const DRAIN: Duration = Duration::from_secs(5);

/// Limits and timeouts of the HTTP listener.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    /// The time a client has to send a request's line and headers: from the connection's start for its first
    /// request, from the first byte of each later one. Past it: `408` (or, if nothing came, the connection is
    /// closed). Default 10 s.
    pub header_timeout: Duration,
    /// The time a request's body has to arrive, from the request's first byte. Past it: `408`. Default 60 s.
    pub request_timeout: Duration,
    /// How long a kept-alive connection may stay silent between requests. Default 60 s.
    pub idle_timeout: Duration,
    /// The largest request line and headers together. Larger: `431`. Default 32 KiB.
    pub max_head_bytes: usize,
    /// The longest request target (path and query). Longer: `414`. Default 8 KiB.
    pub max_uri_bytes: usize,
    /// The most header fields in a request. More: `431`. Default 100.
    pub max_headers: usize,
    /// The most connections served at once. More: `503` with `Retry-After`, closed. Default 1024.
    pub max_connections: usize,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_head_bytes: 32 * 1024,
            max_uri_bytes: 8 * 1024,
            max_headers: 100,
            max_connections: 1024,
        }
    }
}

impl EdgeOptions {
    fn limits(&self) -> HeadLimits {
        HeadLimits {
            max_head_bytes: self.max_head_bytes,
            max_uri_bytes: self.max_uri_bytes,
            max_headers: self.max_headers.max(1),
        }
    }
}

/// When a request's body must have arrived (a request extension set by the edge).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestDeadline {
    pub at: Instant,
    pub timeout: Duration,
}

/// A whole HTTP/1.1 answer with a JSON error body, for the edge to write itself (`Connection: close`).
pub(crate) fn answer(status: StatusCode, message: &str, extra: &[(&str, &str)]) -> Bytes {
    let body = json!({ "error": { "code": crate::error::code_for(status), "message": message } })
        .to_string();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        body.len()
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    Bytes::from(head)
}

/// Serves `router` on `listener` under `options` until `shutdown` completes; then stops accepting, lets open
/// requests finish (up to 5 s) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: EdgeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // The edge has checked each head against smaller limits already; hyper's buffer only needs to hold one.
    http.max_buf_size((options.max_head_bytes + 8 * 1024).max(8 * 1024))
        .max_headers(options.max_headers.max(1))
        .keep_alive(true);
    let http = Arc::new(http);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was accepted: wait a moment.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            connections.spawn(turn_away(stream, options.max_connections));
            continue;
        };
        let (router, http, options, mut stopped) = (
            router.clone(),
            http.clone(),
            options.clone(),
            stopped.clone(),
        );
        connections.spawn(async move {
            let _slot = slot;
            let shared = io::Shared::new();
            let timers = io::Timers {
                header: options.header_timeout,
                idle: options.idle_timeout,
            };
            let io = io::EdgeIo::new(stream, options.limits(), timers, shared.clone());
            let service = Connection {
                router,
                shared,
                request_timeout: options.request_timeout,
            };
            let conn = http.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = async { stopped.wait_for(|s| *s).await.is_ok() } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    if tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(
            left = connections.len(),
            "open connections cut after the drain period"
        );
        connections.abort_all();
    }
    Ok(())
}

/// Answers a connection over the limit `503` and closes it.
async fn turn_away(mut stream: TcpStream, max: usize) {
    let message = format!(
        "the server has {max} connections open (the limit, `max_connections`); try again shortly"
    );
    let answer = answer(
        StatusCode::SERVICE_UNAVAILABLE,
        &message,
        &[("retry-after", "1")],
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    })
    .await;
}

/// The service of one connection: the router, with the request's deadline, and the connection told when each
/// answer has been sent.
#[derive(Clone)]
struct Connection {
    router: Router,
    shared: Arc<io::Shared>,
    request_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for Connection {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let answered = Answered(Some(self.shared.clone()));
        let started = self.shared.take_started().unwrap_or_else(Instant::now);
        let router = self.router.clone();
        let timeout = self.request_timeout;
        Box::pin(async move {
            // A refusal may come before the body is read; the connection then cannot carry another request, and
            // the answer says so (`Connection: close`) so that the client does not reuse it.
            let has_body = request.headers().contains_key(TRANSFER_ENCODING)
                || request
                    .headers()
                    .get(CONTENT_LENGTH)
                    .is_some_and(|v| v.as_bytes() != b"0");
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(RequestDeadline {
                at: started + timeout,
                timeout,
            });
            let mut response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let status = response.status();
            if has_body && (status.is_client_error() || status.is_server_error()) {
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response.map(|body| Body::new(Tracked { body, answered })))
        })
    }
}

/// Tells the connection that its answer is finished when dropped (hyper drops the body once it is sent, or when
/// the connection ends).
struct Answered(Option<Arc<io::Shared>>);

impl Drop for Answered {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.done();
        }
    }
}

/// An answer's body, followed to its end.
struct Tracked {
    body: Body,
    answered: Answered,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            // Sent in full: the connection may read the next request now, before hyper drops the body.
            if let Some(shared) = self.answered.0.take() {
                shared.done();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
