//! [`EdgeIo`]: a client connection as hyper reads it, through the [`Framer`].
//!
//! Every request head is read and checked here before hyper sees a byte of it; a head to refuse is answered
//! here, in JSON, and the connection closed. Only one request is in hand at a time: the next head is read once
//! the previous answer has been sent, so the timers below never cut an answer that is still streaming.
//!
//! Timers, while a head is awaited: a new connection has `header_timeout` to send its first head; a kept-alive
//! connection may stay silent for `idle_timeout` after its last answer, and then has `header_timeout` from the
//! first byte of its next head. A head that does not arrive in time is answered `408` (or, if nothing of it came,
//! the connection is just closed).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::head::{Framer, Head, HeadLimits, Refusal};

/// How many bytes are read from the socket at a time.
const READ_CHUNK: usize = 8 * 1024;
/// How long, and for how many bytes at most, a refused client's input is read and dropped before closing.
const LINGER: Duration = Duration::from_secs(1);
const MAX_LINGER_BYTES: usize = 1024 * 1024;

/// What the connection's reader and its request service share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Requests handed to hyper whose answers are not finished.
    busy: AtomicUsize,
    /// When the last answer finished (or the connection was accepted).
    last_done: Mutex<Instant>,
    /// When each request handed to hyper began (its first byte), oldest first.
    started: Mutex<std::collections::VecDeque<Instant>>,
    /// The reader, waiting for an answer to finish.
    reader: AtomicWaker,
}

impl Shared {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            busy: AtomicUsize::new(0),
            last_done: Mutex::new(Instant::now()),
            started: Mutex::new(Default::default()),
            reader: AtomicWaker::new(),
        })
    }

    /// When the request hyper hands over next began.
    pub(crate) fn take_started(&self) -> Option<Instant> {
        self.started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// An answer has finished (its body was sent, or dropped).
    pub(crate) fn done(&self) {
        *self.last_done.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.busy.fetch_sub(1, Ordering::AcqRel);
        self.reader.wake();
    }

    fn handed(&self, started: Instant) {
        self.started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(started);
        self.busy.fetch_add(1, Ordering::AcqRel);
    }

    fn last_done(&self) -> Instant {
        *self.last_done.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The edge's timers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timers {
    pub header: Duration,
    pub idle: Duration,
}

/// Where the connection is.
enum Phase {
    /// Requests flow.
    Open,
    /// Writing a refusal, then closing.
    Refusing { answer: Bytes, written: usize },
    /// Closing the write side.
    Closing,
    /// Reading (and dropping) what the client still sends for a moment, so that closing with unread bytes does
    /// not reset the connection before the client has read the refusal.
    Lingering { drained: usize },
    /// Closed: hyper reads the end of the stream.
    Closed,
}

/// A client connection read through the [`Framer`].
pub(crate) struct EdgeIo<T> {
    inner: T,
    framer: Framer,
    limits: HeadLimits,
    shared: Arc<Shared>,
    timers: Timers,
    phase: Phase,
    /// Received, not yet handed to hyper.
    pending: Vec<u8>,
    /// How many bytes at the start of `pending` hyper may read.
    released: usize,
    /// How much of the head in `pending` was parsed last (a head can only end at a new line), and whether it had
    /// a line feed: a slow sender costs a parse per line, not per byte.
    parsed: usize,
    newline: bool,
    /// When the head being read began: its first byte, or the connection's start for the first head.
    head_started: Option<Instant>,
    /// The timer of the head being awaited.
    deadline: Pin<Box<Sleep>>,
    deadline_at: Instant,
}

impl<T: AsyncRead + AsyncWrite + Unpin> EdgeIo<T> {
    pub(crate) fn new(inner: T, limits: HeadLimits, timers: Timers, shared: Arc<Shared>) -> Self {
        let now = Instant::now();
        let at = now + timers.header;
        Self {
            inner,
            framer: Framer::new(limits),
            limits,
            shared,
            timers,
            phase: Phase::Open,
            pending: Vec::new(),
            released: 0,
            parsed: 0,
            newline: false,
            head_started: Some(now),
            deadline: Box::pin(tokio::time::sleep_until(at)),
            deadline_at: at,
        }
    }

    /// Reads more bytes from the socket into `pending`; `Ok(0)` at the end of the stream.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut chunk = [0u8; READ_CHUNK];
        let mut buf = ReadBuf::new(&mut chunk);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf))?;
        let n = buf.filled().len();
        self.pending.extend_from_slice(buf.filled());
        Poll::Ready(Ok(n))
    }

    fn refuse(&mut self, refusal: Refusal) {
        tracing::debug!(status = refusal.status.as_u16(), message = %refusal.message, "request head refused");
        self.phase = Phase::Refusing {
            answer: super::answer(refusal.status, &refusal.message, &[]),
            written: 0,
        };
    }

    fn arm(&mut self, at: Instant) {
        if at != self.deadline_at {
            self.deadline_at = at;
            self.deadline.as_mut().reset(at);
        }
    }

    /// Drives a refusal or a close; `Ready` once the stream is closed for hyper.
    fn poll_closing(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut self.phase {
                Phase::Open => return Poll::Pending,
                Phase::Refusing { answer, written } => {
                    while *written < answer.len() {
                        match Pin::new(&mut self.inner).poll_write(cx, &answer[*written..]) {
                            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => break,
                            Poll::Ready(Ok(n)) => *written += n,
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                    self.phase = Phase::Closing;
                }
                Phase::Closing => {
                    let _ = ready!(Pin::new(&mut self.inner).poll_shutdown(cx));
                    let until = Instant::now() + LINGER;
                    self.arm(until);
                    self.phase = Phase::Lingering { drained: 0 };
                }
                Phase::Lingering { drained } => {
                    let mut scratch = [0u8; READ_CHUNK];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                        Poll::Ready(Ok(()))
                            if !buf.filled().is_empty() && *drained < MAX_LINGER_BYTES =>
                        {
                            *drained += buf.filled().len();
                            continue;
                        }
                        Poll::Ready(_) => self.phase = Phase::Closed,
                        Poll::Pending => {
                            ready!(self.deadline.as_mut().poll(cx));
                            self.phase = Phase::Closed;
                        }
                    }
                }
                Phase::Closed => return Poll::Ready(()),
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for EdgeIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !matches!(this.phase, Phase::Open) {
                ready!(this.poll_closing(cx));
                return Poll::Ready(Ok(()));
            }
            if this.released > 0 {
                let n = this.released.min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.drain(..n);
                this.released -= n;
                return Poll::Ready(Ok(()));
            }
            if !this.framer.at_head() {
                if this.framer.lost() && this.shared.busy.load(Ordering::Acquire) == 0 {
                    // The body's framing could not be followed: this request was the connection's last.
                    this.phase = Phase::Closing;
                    continue;
                }
                if this.pending.is_empty() && ready!(this.fill(cx))? == 0 {
                    return Poll::Ready(Ok(()));
                }
                this.released = this.framer.body(&this.pending);
                if this.framer.at_head() {
                    this.head_started = None;
                }
                continue;
            }
            // A head: only once the previous answer is finished.
            this.shared.reader.register(cx.waker());
            if this.shared.busy.load(Ordering::Acquire) > 0 {
                return Poll::Pending;
            }
            if !this.pending.is_empty() {
                let started = *this.head_started.get_or_insert_with(Instant::now);
                let fresh = this.pending[this.parsed.min(this.pending.len())..].contains(&b'\n');
                this.newline |= fresh;
                let over = this.pending.len() > this.limits.max_head_bytes
                    || (!this.newline && this.pending.len() > this.limits.max_uri_bytes + 32);
                let head = if fresh || over {
                    this.parsed = this.pending.len();
                    this.framer.head(&this.pending)
                } else {
                    Head::Partial
                };
                match head {
                    Head::Complete(len) => {
                        this.released = len;
                        this.head_started = None;
                        this.parsed = 0;
                        this.newline = false;
                        this.shared.handed(started);
                        continue;
                    }
                    Head::Refused(refusal) => {
                        this.refuse(refusal);
                        continue;
                    }
                    Head::Partial => {}
                }
            }
            let deadline = match this.head_started {
                Some(started) => started + this.timers.header,
                None => this.shared.last_done() + this.timers.idle,
            };
            this.arm(deadline);
            match this.fill(cx) {
                Poll::Ready(Ok(0)) => {
                    if !this.pending.is_empty() {
                        this.refuse(Refusal {
                            status: StatusCode::BAD_REQUEST,
                            message: "the connection ended inside a request head".into(),
                        });
                        continue;
                    }
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
            ready!(this.deadline.as_mut().poll(cx));
            if this.pending.is_empty() {
                tracing::debug!("idle connection closed");
                this.phase = Phase::Closing;
            } else {
                this.refuse(Refusal {
                    status: StatusCode::REQUEST_TIMEOUT,
                    message: format!(
                        "the request line and headers did not arrive within {} s (the limit, `header_timeout`)",
                        this.timers.header.as_secs_f64()
                    ),
                });
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for EdgeIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMITS: HeadLimits = HeadLimits {
        max_head_bytes: 1024,
        max_uri_bytes: 256,
        max_headers: 16,
    };

    fn edge(
        timers: Timers,
    ) -> (
        EdgeIo<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
        Arc<Shared>,
    ) {
        let (server, client) = tokio::io::duplex(64 * 1024);
        let shared = Shared::new();
        (
            EdgeIo::new(server, LIMITS, timers, shared.clone()),
            client,
            shared,
        )
    }

    const SLOW: Timers = Timers {
        header: Duration::from_secs(60),
        idle: Duration::from_secs(60),
    };

    #[tokio::test]
    async fn a_valid_head_and_its_body_pass_and_the_next_head_waits_for_the_answer() {
        let (mut io, mut client, shared) = edge(SLOW);
        client
            .write_all(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut got = vec![0u8; 41];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
        assert!(shared.take_started().is_some());
        // The second head is held back while the first answer is being sent.
        let mut one = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(100), io.read(&mut one)).await;
        assert!(early.is_err(), "read while busy");
        shared.done();
        let mut second = vec![0u8; 18];
        io.read_exact(&mut second).await.unwrap();
        assert_eq!(&second, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn a_malformed_head_is_answered_in_json_and_the_connection_closed() {
        let (mut io, mut client, _) = edge(SLOW);
        client
            .write_all(b"GET /\xff HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut nothing = Vec::new();
        io.read_to_end(&mut nothing).await.unwrap();
        assert!(nothing.is_empty(), "hyper sees only the end of the stream");
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        assert!(
            answer.contains("content-type: application/json\r\n"),
            "{answer}"
        );
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "invalid", "{json}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_sent_head_gets_408_at_the_header_timeout_and_a_silent_one_is_closed() {
        let timers = Timers {
            header: Duration::from_secs(5),
            idle: Duration::from_secs(30),
        };
        let (mut io, mut client, _) = edge(timers);
        client.write_all(b"GET / HTTP/1.1\r\nHost:").await.unwrap();
        let started = Instant::now();
        let mut nothing = Vec::new();
        io.read_to_end(&mut nothing).await.unwrap();
        // The header timeout, then at most the linger that lets the client read the answer.
        assert!(
            (Duration::from_secs(5)..=Duration::from_secs(5) + LINGER).contains(&started.elapsed())
        );
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");

        let (mut io, mut client, _) = edge(timers);
        let started = Instant::now();
        io.read_to_end(&mut nothing).await.unwrap();
        assert!(
            (Duration::from_secs(5)..=Duration::from_secs(5) + LINGER).contains(&started.elapsed()),
            "a new connection has the header timeout"
        );
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert!(
            answer.is_empty(),
            "nothing is answered to a client that sent nothing"
        );
    }
}
