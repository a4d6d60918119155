//! Syslog listeners: RFC 5424 and RFC 3164 messages over UDP (one per datagram) and TCP (newline-separated or
//! octet-counted, RFC 6587). Messages are gathered into batches (up to [`BATCH`] messages or [`FLUSH`]) for
//! [`Siem::ingest`]; a full store slows the TCP senders down (their socket is not read) and UDP datagrams that
//! the kernel buffer cannot hold are dropped by the kernel, as with any UDP syslog receiver.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
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

/// Reads one TCP connection: octet-counted frames (`LEN SP MSG`) when a frame starts with a digit, else lines.
/// Silent for `idle_timeout`, or a frame that takes longer than `frame_timeout`: the connection is closed.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tx: mpsc::Sender<(String, Record)>,
    limits: TcpLimits,
) {
    let mut reader = BufReader::new(stream);
    let mut frame = 0u64;
    loop {
        let first = match tokio::time::timeout(limits.idle_timeout, reader.fill_buf()).await {
            Ok(Ok([])) => return,
            Ok(Ok(buf)) => buf[0],
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::debug!(%peer, "syslog TCP connection idle; closed");
                return;
            }
        };
        frame += 1;
        let read = async {
            if first.is_ascii_digit() {
                let mut len = Vec::new();
                (&mut reader)
                    .take(24)
                    .read_until(b' ', &mut len)
                    .await
                    .ok()?;
                let Some(n) = std::str::from_utf8(&len)
                    .ok()
                    .and_then(|s| s.trim().parse::<usize>().ok())
                    .filter(|&n| n <= MAX_MESSAGE)
                else {
                    tracing::warn!(%peer, "syslog TCP frame with a bad length; closing the connection");
                    return None;
                };
                let mut body = vec![0u8; n];
                reader.read_exact(&mut body).await.ok()?;
                Some(body)
            } else {
                let mut line = Vec::new();
                match (&mut reader)
                    .take(MAX_MESSAGE as u64)
                    .read_until(b'\n', &mut line)
                    .await
                {
                    Ok(0) | Err(_) => None,
                    Ok(_) => Some(line),
                }
            }
        };
        let message = match tokio::time::timeout(limits.frame_timeout, read).await {
            Ok(Some(message)) => message,
            Ok(None) => return,
            Err(_) => {
                tracing::warn!(%peer, "syslog TCP message not finished within the frame timeout; closing the connection");
                return;
            }
        };
        let text = String::from_utf8_lossy(&message).trim_end().to_owned();
        if text.is_empty() {
            continue;
        }
        if tx
            .send((format!("{peer} message {frame}"), Record::Text(text)))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Gathers messages into batches and ingests them; a busy store is retried, never dropped.
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
        loop {
            match siem.ingest(source, batch.clone()).await {
                Ok(_) => break,
                Err(SiemError::Busy) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => {
                    tracing::error!(error = %e, source, "syslog batch could not be stored");
                    break;
                }
            }
        }
    }
}
