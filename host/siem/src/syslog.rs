//! Syslog listeners: RFC 5424 and RFC 3164 messages over UDP (one per datagram) and TCP (newline-separated or
//! octet-counted, RFC 6587). Messages are gathered into batches (up to [`BATCH`] messages or [`FLUSH`]) for
//! [`Siem::ingest`]; a full store slows the TCP senders down (their socket is not read) and UDP datagrams that
//! the kernel buffer cannot hold are dropped by the kernel, as with any UDP syslog receiver.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::{Record, Siem, SiemError};

/// The most messages in one batch.
pub const BATCH: usize = 1000;
/// The longest a message waits for its batch to fill.
pub const FLUSH: Duration = Duration::from_millis(200);
/// The longest message taken (RFC 5425 asks receivers for at least 8 KiB; longer TCP frames are cut here).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Receives syslog over UDP on `socket`.
pub fn serve_udp(siem: Siem, socket: UdpSocket) -> JoinHandle<()> {
    let (tx, rx) = mpsc::channel::<(String, Record)>(BATCH * 4);
    tokio::spawn(batcher(siem, "syslog-udp", rx));
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let (n, peer) = match socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "syslog UDP receive failed");
                    continue;
                }
            };
            let text = String::from_utf8_lossy(&buf[..n]).trim_end().to_owned();
            if text.is_empty() {
                continue;
            }
            if tx
                .send((format!("from {peer}"), Record::Text(text)))
                .await
                .is_err()
            {
                return;
            }
        }
    })
}

/// Limits of the syslog TCP listener: how many senders at once, and how long each may take.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Connections served at once; one more is closed at once (senders reconnect). Default 1024.
    pub max_connections: usize,
    /// How long a connection may stay silent between messages before it is closed. Default 5 minutes.
    pub idle_timeout: Duration,
    /// How long a message may take to arrive once its first byte has. Default 30 s.
    pub frame_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            idle_timeout: Duration::from_secs(5 * 60),
            frame_timeout: Duration::from_secs(30),
        }
    }
}

/// Receives syslog over TCP on `listener`, under `limits`: a connection holds at most one message
/// ([`MAX_MESSAGE`]) in memory, so the listener holds at most `max_connections` of them.
pub fn serve_tcp(siem: Siem, listener: TcpListener, limits: TcpLimits) -> JoinHandle<()> {
    let (tx, rx) = mpsc::channel::<(String, Record)>(BATCH * 4);
    tokio::spawn(batcher(siem, "syslog-tcp", rx));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            connection(stream, peer, tx, limits).await;
                            drop(slot);
                        });
                    }
                    Err(_) => {
                        tracing::warn!(%peer, max = limits.max_connections, "syslog TCP connection refused: too many open");
                        drop(stream);
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "syslog TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}

/// The most digits an octet count may have (`MAX_MESSAGE` has 5).
const MAX_COUNT_DIGITS: usize = 5;

/// Why a TCP syslog stream cannot be read on (the connection is closed): where, and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("byte {offset} of the stream (frame {frame}): {message}")]
pub struct FrameError {
    /// The offset in the stream (from 0) where the bad frame starts or the bad byte is.
    pub offset: u64,
    /// The frame's number, from 1.
    pub frame: u64,
    /// What is wrong.
    pub message: String,
}

/// The most bytes one frame takes in the stream: an octet count of [`MAX_COUNT_DIGITS`], its space and
/// [`MAX_MESSAGE`] bytes.
pub const MAX_FRAME: usize = MAX_COUNT_DIGITS + 1 + MAX_MESSAGE;

/// Splits a TCP syslog stream into messages (RFC 6587): a frame that starts with a digit is octet-counted
/// (`LEN SP MSG`, `LEN` at most [`MAX_MESSAGE`]), any other runs to the next `\n` (a line longer than
/// [`MAX_MESSAGE`] is cut there, and its rest is the next message). Once every frame is taken it holds less than
/// one frame ([`MAX_FRAME`]), plus what the next [`Framer::push`] adds, so a sender cannot make it grow; the
/// frames it yields do not depend on how the stream was split into reads, and each byte is looked at a bounded
/// number of times whatever the split (a line that arrives a byte at a time is not searched again from its start).
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Where the first frame not yet taken starts in `buf` (the bytes before are dropped at the next push).
    start: usize,
    /// How far past `start` a line has been searched for its `\n`, without finding one.
    scanned: usize,
    /// The stream offset of `buf[start]`.
    offset: u64,
    frames: u64,
}

impl Framer {
    /// A framer at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes received. Take every frame with [`Framer::next_frame`] before adding more.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// How many frames were taken.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// How many bytes are held: those of frames not yet taken.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether bytes of a frame not yet complete are held.
    pub fn pending(&self) -> bool {
        self.buffered() > 0
    }

    fn rest(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn error(&self, at: usize, message: String) -> FrameError {
        FrameError {
            offset: self.offset + at as u64,
            frame: self.frames + 1,
            message,
        }
    }

    /// Takes the frame of the next `end` bytes, without its first `skip`.
    fn take(&mut self, end: usize, skip: usize) -> Vec<u8> {
        let frame = self.buf[self.start + skip..self.start + end].to_vec();
        self.start += end;
        self.scanned = 0;
        self.offset += end as u64;
        self.frames += 1;
        frame
    }

    /// The next complete frame; `None` when more bytes are needed; an error when the stream is malformed (the
    /// connection should be closed).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let rest = self.rest();
        let Some(&first) = rest.first() else {
            return Ok(None);
        };
        if first.is_ascii_digit() {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            if digits > MAX_COUNT_DIGITS {
                return Err(self.error(
                    0,
                    format!("an octet count longer than {MAX_COUNT_DIGITS} digits (the most is {MAX_MESSAGE})"),
                ));
            }
            let Some(&after) = rest.get(digits) else {
                return Ok(None);
            };
            if after != b' ' {
                return Err(self.error(
                    digits,
                    format!("an octet count must be followed by a space, not byte 0x{after:02x}"),
                ));
            }
            let count: usize = std::str::from_utf8(&rest[..digits])
                .ok()
                .and_then(|d| d.parse().ok())
                .unwrap_or(usize::MAX);
            if count > MAX_MESSAGE {
                return Err(self.error(
                    0,
                    format!("an octet count of {count} is more than the {MAX_MESSAGE} bytes a message may have"),
                ));
            }
            let end = digits + 1 + count;
            if rest.len() < end {
                return Ok(None);
            }
            return Ok(Some(self.take(end, digits + 1)));
        }
        let limit = rest.len().min(MAX_MESSAGE);
        let from = self.scanned.min(limit);
        match rest[from..limit].iter().position(|&b| b == b'\n') {
            Some(i) => Ok(Some(self.take(from + i + 1, 0))),
            None if rest.len() >= MAX_MESSAGE => Ok(Some(self.take(MAX_MESSAGE, 0))),
            None => {
                self.scanned = limit;
                Ok(None)
            }
        }
    }

    /// At the end of the stream: the last frame, if its bytes are complete (a last line needs no `\n`); an
    /// octet-counted frame cut short is an error.
    pub fn finish(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if let Some(frame) = self.next_frame()? {
            return Ok(Some(frame));
        }
        let held = self.buffered();
        match self.rest().first() {
            None => Ok(None),
            Some(b) if b.is_ascii_digit() => Err(self.error(
                held,
                format!(
                    "the stream ends inside an octet-counted frame ({held} bytes of it received)"
                ),
            )),
            Some(_) => Ok(Some(self.take(held, 0))),
        }
    }
}

/// Reads one TCP connection with a [`Framer`], under `limits`: silent for `idle_timeout` between messages, or a
/// message that takes longer than `frame_timeout` once its first byte arrived, and the connection is closed.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    tx: mpsc::Sender<(String, Record)>,
    limits: TcpLimits,
) {
    let mut framer = Framer::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut ended = false;
    // When the message now in the framer began to arrive (None between messages).
    let mut started: Option<tokio::time::Instant> = None;
    while !ended {
        let wait = match started {
            None => limits.idle_timeout,
            Some(at) => limits.frame_timeout.saturating_sub(at.elapsed()),
        };
        match tokio::time::timeout(wait, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => ended = true,
            Ok(Ok(n)) => {
                framer.push(&chunk[..n]);
                started.get_or_insert_with(tokio::time::Instant::now);
            }
            Err(_) if started.is_none() => {
                tracing::debug!(%peer, "syslog TCP connection idle; closed");
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, "syslog TCP message not finished within the frame timeout; closing the connection");
                return;
            }
        }
        loop {
            let next = if ended {
                framer.finish()
            } else {
                framer.next_frame()
            };
            let message = match next {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "malformed syslog TCP stream; closing the connection");
                    return;
                }
            };
            // The rest of the buffer (if any) is the start of the next message, which starts now.
            started = framer.pending().then(tokio::time::Instant::now);
            let text = String::from_utf8_lossy(&message).trim_end().to_owned();
            if text.is_empty() {
                continue;
            }
            let location = format!("{peer} message {}", framer.frames());
            if tx.send((location, Record::Text(text))).await.is_err() {
                return;
            }
        }
    }
}

/// Gathers messages into batches and ingests them; a busy or unavailable store is retried (with backoff, the
/// senders slowed down meanwhile), never dropped.
async fn batcher(siem: Siem, source: &'static str, mut rx: mpsc::Receiver<(String, Record)>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + FLUSH;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(message)) => batch.push(message),
                Ok(None) | Err(_) => break,
            }
        }
        let mut wait = Duration::from_millis(100);
        loop {
            match siem.ingest(source, batch.clone()).await {
                Ok(_) => break,
                Err(SiemError::Busy) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e @ SiemError::Unavailable(_)) => {
                    tracing::warn!(error = %e, source, "syslog batch waits for the store");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    tracing::error!(error = %e, source, "syslog batch could not be stored");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(stream: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut framer = Framer::new();
        framer.push(stream);
        let mut out = Vec::new();
        while let Some(f) = framer.next_frame()? {
            out.push(f);
        }
        if let Some(f) = framer.finish()? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn octet_counted_and_newline_frames() {
        let got = frames(b"5 hello<13>a line\n3 abclast").unwrap();
        assert_eq!(got, [&b"hello"[..], b"<13>a line\n", b"abc", b"last"]);
    }

    #[test]
    fn bad_counts_are_refused_where_they_are() {
        let e = frames(b"2 ok99999999999 x").unwrap_err();
        assert_eq!((e.offset, e.frame), (4, 2), "{e}");
        assert!(e.to_string().contains("longer than 5 digits"), "{e}");
        let e = frames(b"70000 x").unwrap_err();
        assert!(e.to_string().contains("more than the 65536"), "{e}");
        let e = frames(b"12x").unwrap_err();
        assert_eq!(e.offset, 2, "{e}");
        let e = frames(b"10 abc").unwrap_err();
        assert!(
            e.to_string().contains("ends inside an octet-counted frame"),
            "{e}"
        );
    }
}
