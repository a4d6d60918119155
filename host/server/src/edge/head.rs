//! The request head reader and body framing of one HTTP/1 connection, without I/O.
//!
//! [`Framer`] sees every byte a client sends before hyper does. It checks each request head with the same parser
//! and rules as hyper (httparse, `http::Method`, `http::Uri`, Content-Length and Transfer-Encoding as hyper 1
//! reads them) and under the edge's limits, so that a head hyper would answer with a bare `400`/`414`/`431` is
//! answered here in the API's JSON shape instead; then it follows the body's framing (a length, or chunks) to
//! find where the next head starts.

use axum::http::{Method, StatusCode, Uri};

/// Limits on a request head.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadLimits {
    /// The request line and headers together, in bytes.
    pub max_head_bytes: usize,
    /// The request target (path and query), in bytes.
    pub max_uri_bytes: usize,
    /// How many header fields.
    pub max_headers: usize,
}

/// A head the edge refuses: the status and the message of its JSON answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// `400`, `414`, `431` or `505`.
    pub status: StatusCode,
    /// What is wrong, and the limit when one was passed.
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// What [`Framer::head`] found in the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Head {
    /// Not a whole head yet (and nothing wrong so far).
    Partial,
    /// A valid head of this many bytes; its body (if any) follows.
    Complete(usize),
    /// A head to refuse.
    Refused(Refusal),
}

/// Where the reader is in the byte stream of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before or inside a request head.
    Head,
    /// In a body of known length: this many bytes remain.
    Length(u64),
    /// In a chunked body.
    Chunked(Chunk),
    /// The chunked framing could not be followed (hyper will refuse the body); nothing more is framed.
    Lost,
}

/// Where the reader is in a chunked body (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the chunk size's hex digits.
    Size {
        value: u64,
        digits: u8,
    },
    /// After the size: whitespace or a chunk extension, up to CR.
    Extension {
        size: u64,
    },
    /// After the size line's CR.
    SizeLf {
        size: u64,
    },
    /// In the chunk's data: this many bytes remain.
    Data(u64),
    /// After the data: CR, then LF.
    DataCr,
    DataLf,
    /// In the trailer section, at the start of a line.
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// After a trailer line's CR.
    TrailerLf,
    /// After the final empty line's CR.
    EndLf,
}

/// The most bytes of chunk extensions tolerated in one body (hyper refuses more than 16 KiB).
const MAX_EXTENSION_BYTES: u64 = 16 * 1024;

/// Reads the byte stream of one connection: request heads, then their bodies.
#[derive(Debug)]
pub(crate) struct Framer {
    limits: HeadLimits,
    state: State,
    extension_bytes: u64,
}

impl Framer {
    pub(crate) fn new(limits: HeadLimits) -> Self {
        Self {
            limits,
            state: State::Head,
            extension_bytes: 0,
        }
    }

    /// Whether the next bytes are (the start of) a request head.
    pub(crate) fn at_head(&self) -> bool {
        self.state == State::Head
    }

    /// Whether the chunked framing was lost: no further head can be found on this connection.
    pub(crate) fn lost(&self) -> bool {
        self.state == State::Lost
    }

    /// Checks the head at the start of `buf`. On [`Head::Complete`], the framer moves on to its body.
    pub(crate) fn head(&mut self, buf: &[u8]) -> Head {
        debug_assert!(self.at_head());
        match check_head(buf, &self.limits) {
            Ok(Some((len, body))) => {
                self.state = body;
                self.extension_bytes = 0;
                Head::Complete(len)
            }
            Ok(None) => Head::Partial,
            Err(refusal) => Head::Refused(refusal),
        }
    }

    /// How many bytes at the start of `buf` belong to the current body (all of `buf` while the body goes on).
    /// Moves to the next head once the body ends.
    pub(crate) fn body(&mut self, buf: &[u8]) -> usize {
        match self.state {
            State::Head => 0,
            State::Lost => buf.len(),
            State::Length(remaining) => {
                let n = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
                let left = remaining - n as u64;
                self.state = if left == 0 {
                    State::Head
                } else {
                    State::Length(left)
                };
                n
            }
            State::Chunked(chunk) => {
                let mut chunk = chunk;
                let mut i = 0;
                while i < buf.len() {
                    if let Chunk::Data(remaining) = chunk {
                        let n = usize::try_from(remaining)
                            .map_or(buf.len() - i, |r| r.min(buf.len() - i));
                        i += n;
                        let left = remaining - n as u64;
                        chunk = if left == 0 {
                            Chunk::DataCr
                        } else {
                            Chunk::Data(left)
                        };
                        continue;
                    }
                    let byte = buf[i];
                    i += 1;
                    match self.step(chunk, byte) {
                        Some(Some(next)) => chunk = next,
                        Some(None) => {
                            self.state = State::Head;
                            return i;
                        }
                        None => {
                            self.state = State::Lost;
                            return buf.len();
                        }
                    }
                }
                self.state = State::Chunked(chunk);
                buf.len()
            }
        }
    }

    /// One byte of chunked framing: the next state, `Some(None)` at the body's end, `None` when it is malformed.
    fn step(&mut self, chunk: Chunk, byte: u8) -> Option<Option<Chunk>> {
        let next = match chunk {
            Chunk::Size { value, digits } => match byte {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    // 16 hex digits overflow nothing hyper takes; more is refused by hyper too.
                    if digits >= 15 {
                        return None;
                    }
                    let digit = u64::from((byte as char).to_digit(16)?);
                    Chunk::Size {
                        value: value * 16 + digit,
                        digits: digits + 1,
                    }
                }
                _ if digits == 0 => return None,
                b'\r' => Chunk::SizeLf { size: value },
                b';' | b' ' | b'\t' => Chunk::Extension { size: value },
                _ => return None,
            },
            Chunk::Extension { size } => match byte {
                b'\r' => Chunk::SizeLf { size },
                b'\n' => return None,
                _ => {
                    self.extension_bytes += 1;
                    if self.extension_bytes > MAX_EXTENSION_BYTES {
                        return None;
                    }
                    Chunk::Extension { size }
                }
            },
            Chunk::SizeLf { size } => match byte {
                b'\n' if size == 0 => Chunk::TrailerStart,
                b'\n' => Chunk::Data(size),
                _ => return None,
            },
            Chunk::Data(_) => unreachable!("data is skipped in bulk"),
            Chunk::DataCr => match byte {
                b'\r' => Chunk::DataLf,
                _ => return None,
            },
            Chunk::DataLf => match byte {
                b'\n' => Chunk::Size {
                    value: 0,
                    digits: 0,
                },
                _ => return None,
            },
            Chunk::TrailerStart => match byte {
                b'\r' => Chunk::EndLf,
                b'\n' => return Some(None),
                _ => Chunk::Trailer,
            },
            Chunk::Trailer => match byte {
                b'\r' => Chunk::TrailerLf,
                b'\n' => Chunk::TrailerStart,
                _ => Chunk::Trailer,
            },
            Chunk::TrailerLf => match byte {
                b'\n' => Chunk::TrailerStart,
                _ => return None,
            },
            Chunk::EndLf => match byte {
                b'\n' => return Some(None),
                _ => return None,
            },
        };
        Some(Some(next))
    }
}

/// Parses the head at the start of `buf`: `Ok(None)` while it is incomplete, else its length and how its body is
/// framed.
fn check_head(buf: &[u8], limits: &HeadLimits) -> Result<Option<(usize, State)>, Refusal> {
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut request = httparse::Request::new(&mut headers);
    let parsed = request.parse(buf);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return match partial_too_large(buf, limits) {
                Some(refusal) => Err(refusal),
                None => Ok(None),
            };
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "the request has more than {} header fields (the limit, `max_headers`)",
                    limits.max_headers
                ),
            ));
        }
        Err(e) => return Err(malformed(buf, &request, e)),
    };
    if len > limits.max_head_bytes {
        return Err(head_too_large(limits));
    }
    let (Some(method), Some(path), Some(version)) = (request.method, request.path, request.version)
    else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "the request line is incomplete",
        ));
    };
    if path.len() > limits.max_uri_bytes {
        return Err(uri_too_long(limits));
    }
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "the request method is not a valid token",
        )
    })?;
    Uri::try_from(path).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("the request target is not a valid URI: {e}"),
        )
    })?;
    let body = framing(&method, version, request.headers)?;
    Ok(Some((len, body)))
}

/// How the body of a head is framed, by hyper's rules (RFC 9112 §6.3 for requests).
fn framing(
    method: &Method,
    version: u8,
    headers: &[httparse::Header<'_>],
) -> Result<State, Refusal> {
    let bad = |message: &str| Refusal::new(StatusCode::BAD_REQUEST, message);
    let mut length: Option<u64> = None;
    let mut chunked = None;
    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            if version == 0 {
                return Err(bad("HTTP/1.0 requests cannot carry Transfer-Encoding"));
            }
            let last = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.rsplit(',').next())
                .map(str::trim);
            chunked = Some(last.is_some_and(|e| e.eq_ignore_ascii_case("chunked")));
            length = None;
        } else if header.name.eq_ignore_ascii_case("content-length") {
            if chunked.is_some() {
                continue;
            }
            let n = digits(header.value)
                .ok_or_else(|| bad("Content-Length is not a number of bytes"))?;
            if length.is_some_and(|prev| prev != n) {
                return Err(bad(
                    "the request has several different Content-Length headers",
                ));
            }
            if n > u64::MAX - 2 {
                return Err(bad("Content-Length is out of range"));
            }
            length = Some(n);
        }
    }
    let _ = method;
    match (chunked, length) {
        (Some(false), _) => Err(bad(
            "Transfer-Encoding must end with `chunked` (no other transfer coding is accepted)",
        )),
        (Some(true), _) => Ok(State::Chunked(Chunk::Size {
            value: 0,
            digits: 0,
        })),
        (None, Some(n)) if n > 0 => Ok(State::Length(n)),
        (None, _) => Ok(State::Head),
    }
}

/// A decimal number of ASCII digits, as hyper reads Content-Length (no sign, no spaces, no list).
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| match b {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
}

/// A head still incomplete may already be over a limit.
fn partial_too_large(buf: &[u8], limits: &HeadLimits) -> Option<Refusal> {
    // The request line (after any empty lines before it) is the first line.
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = &buf[start..];
    let line_end = line.iter().position(|&b| b == b'\n');
    let line_len = line_end.unwrap_or(line.len());
    // method SP target SP version: the target cannot be longer than the line.
    if line_end.is_none() && line_len > limits.max_uri_bytes + 32 {
        return Some(uri_too_long(limits));
    }
    if buf.len() > limits.max_head_bytes {
        return Some(head_too_large(limits));
    }
    None
}

fn uri_too_long(limits: &HeadLimits) -> Refusal {
    Refusal::new(
        StatusCode::URI_TOO_LONG,
        format!(
            "the request target (path and query) is longer than {} bytes (the limit, `max_uri`)",
            limits.max_uri_bytes
        ),
    )
}

fn head_too_large(limits: &HeadLimits) -> Refusal {
    Refusal::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        format!(
            "the request line and headers are larger than {} bytes (the limit, `max_head`)",
            limits.max_head_bytes
        ),
    )
}

/// The refusal of a head httparse could not read, naming the line it stopped in.
fn malformed(buf: &[u8], request: &httparse::Request<'_, '_>, error: httparse::Error) -> Refusal {
    let (status, what) = match error {
        httparse::Error::Version if version_like(buf) => (
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            "the HTTP version is not supported; send HTTP/1.1",
        ),
        httparse::Error::Version => (StatusCode::BAD_REQUEST, "the HTTP version is malformed"),
        httparse::Error::Token if request.method.is_none() => (
            StatusCode::BAD_REQUEST,
            "the request method is not a valid token",
        ),
        httparse::Error::Token => (
            StatusCode::BAD_REQUEST,
            "the request target has a byte a URI may not contain",
        ),
        httparse::Error::HeaderName => (StatusCode::BAD_REQUEST, "a header name is malformed"),
        httparse::Error::HeaderValue => {
            (StatusCode::BAD_REQUEST, "a header value has a control byte")
        }
        httparse::Error::NewLine => (StatusCode::BAD_REQUEST, "a line does not end in CRLF"),
        httparse::Error::Status | httparse::Error::TooManyHeaders => {
            (StatusCode::BAD_REQUEST, "the request head is malformed")
        }
    };
    let line = if request.method.is_none() || request.path.is_none() || request.version.is_none() {
        1
    } else {
        // httparse fills the headers it read: the bad line follows them.
        2 + request
            .headers
            .iter()
            .take_while(|h| !h.name.is_empty())
            .count()
    };
    Refusal::new(
        status,
        format!("malformed request head, line {line}: {what}"),
    )
}

/// Whether the request line ends in a well-formed `HTTP/<digit>.<digit>` (an unsupported version, not garbage).
fn version_like(buf: &[u8]) -> bool {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = &buf[start..];
    let line = &line[..line
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(line.len())];
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    matches!(version, [b'H', b'T', b'T', b'P', b'/', a, b'.', b] if a.is_ascii_digit() && b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_head_bytes: 1024,
        max_uri_bytes: 128,
        max_headers: 8,
    };

    fn head(bytes: &[u8]) -> Head {
        Framer::new(LIMITS).head(bytes)
    }

    fn refused(bytes: &[u8]) -> StatusCode {
        match head(bytes) {
            Head::Refused(r) => r.status,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn valid_heads_are_complete_and_their_bodies_are_framed() {
        let mut f = Framer::new(LIMITS);
        let req =
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n\r\n";
        let Head::Complete(n) = f.head(req) else {
            panic!()
        };
        assert_eq!(&req[n..n + 5], b"hello");
        assert_eq!(f.body(&req[n..n + 2]), 2);
        assert_eq!(f.body(&req[n + 2..]), 3, "the body ends after its length");
        assert!(f.at_head());
        assert_eq!(f.head(&req[n + 5..]), Head::Complete(req.len() - n - 5));
        assert!(f.at_head(), "no body");
        assert_eq!(head(b"GET / HTTP/1.1\r\nHost: x\r\n"), Head::Partial);
        assert_eq!(head(b"\r\nGET / HTTP/1.0\r\n\r\n"), Head::Complete(20));
    }

    #[test]
    fn chunked_bodies_are_followed_to_their_end_in_any_split() {
        let body = b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let head =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n";
        for split in 0..body.len() {
            let mut f = Framer::new(LIMITS);
            assert!(matches!(f.head(head), Head::Complete(_)));
            let a = f.body(&body[..split]);
            let end = if a < split {
                a
            } else {
                split + f.body(&body[split..])
            };
            assert_eq!(&body[end..], b"NEXT", "split at {split}");
            assert!(f.at_head());
        }
        let mut f = Framer::new(LIMITS);
        assert!(matches!(f.head(head), Head::Complete(_)));
        assert_eq!(f.body(b"zz\r\n"), 4);
        assert!(
            f.lost(),
            "malformed chunks are left to hyper, and end the connection"
        );
    }

    #[test]
    fn malformed_and_oversized_heads_are_refused_with_the_status_hyper_would_give() {
        assert_eq!(
            refused(b"G\xffT / HTTP/1.1\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            refused(b"GET /\xff HTTP/1.1\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nX\xff: 1\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            refused(b"GET / HTTP/2.0\r\n\r\n"),
            StatusCode::HTTP_VERSION_NOT_SUPPORTED
        );
        assert_eq!(refused(b"GET / HTTQ/1.1\r\n\r\n"), StatusCode::BAD_REQUEST);
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nA: 1\rB: 2\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(200));
        assert_eq!(refused(long.as_bytes()), StatusCode::URI_TOO_LONG);
        let unfinished = format!("GET /{}", "a".repeat(200));
        assert_eq!(refused(unfinished.as_bytes()), StatusCode::URI_TOO_LONG);
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "A: 1\r\n".repeat(9));
        assert_eq!(
            refused(many.as_bytes()),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let big = format!("GET / HTTP/1.1\r\nA: {}\r\n", "x".repeat(1100));
        assert_eq!(
            refused(big.as_bytes()),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        for framing in [
            "Content-Length: 1\r\nContent-Length: 2",
            "Content-Length: -1",
            "Content-Length: 1, 1",
            "Content-Length: 99999999999999999999999",
            "Transfer-Encoding: gzip",
        ] {
            let req = format!("POST / HTTP/1.1\r\n{framing}\r\n\r\n");
            assert_eq!(
                refused(req.as_bytes()),
                StatusCode::BAD_REQUEST,
                "{framing}"
            );
        }
        assert_eq!(
            refused(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        let Head::Refused(r) = head(b"GET / HTTP/1.1\r\nGood: 1\r\nBad Name: 2\r\n\r\n") else {
            panic!()
        };
        assert!(r.message.contains("line 3"), "{}", r.message);
    }
}
