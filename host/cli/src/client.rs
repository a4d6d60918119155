//! The HTTP client of the commands that talk to a running `qila serve`: `qila playbook`, `qila runs`,
//! `qila approve`.
//!
//! Errors are of two kinds, with their exit codes: the server answered with an error (`{"error": {"code",
//! "message", "diagnostics"?}}`), printed as `error: MESSAGE` and one `file:line:col: message` line per
//! diagnostic, exit 1; or the request could not be made at all (no server, a bad URL, a broken stream), exit 2.

use std::process::ExitCode;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Where the server is and who we are to it.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The URL of a running `qila serve`.
    #[arg(
        long,
        global = true,
        env = "QILA_SERVER",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub server: String,
    /// An API token (`qila token create`, or the admin token `qila serve` printed on its first start).
    #[arg(
        long,
        global = true,
        env = "QILA_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

/// A failed request.
#[derive(Debug)]
pub enum ClientError {
    /// The server refused: its status, message and diagnostics.
    Api {
        status: StatusCode,
        message: String,
        diagnostics: Vec<String>,
        /// How long the server asked the client to wait before trying again (`Retry-After`), when it said.
        retry_after: Option<Duration>,
    },
    /// The server could not be reached, or its answer could not be read.
    Unreachable { url: String, cause: String },
    /// The command was given something it cannot use (a bad URL).
    Usage(String),
}

impl ClientError {
    /// The exit code: 1 when the server refused, 2 when it could not be asked.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Api { .. } => ExitCode::from(1),
            Self::Unreachable { .. } | Self::Usage(_) => ExitCode::from(2),
        }
    }

    /// Prints the error on stderr and returns the exit code.
    pub fn report(&self, has_token: bool) -> ExitCode {
        eprintln!("{}", self.render(has_token));
        self.exit_code()
    }

    /// The error as printed.
    pub fn render(&self, has_token: bool) -> String {
        match self {
            Self::Api {
                status,
                message,
                diagnostics,
                ..
            } => {
                let mut text = format!("error: {message}");
                if *status == StatusCode::UNAUTHORIZED && !has_token {
                    text.push_str(
                        "\n(no token given: pass --token or set QILA_TOKEN, e.g. to the admin token `qila serve` \
                         printed on its first start, or to one from `qila token create`)",
                    );
                }
                for d in diagnostics {
                    text.push('\n');
                    text.push_str(d);
                }
                text
            }
            Self::Unreachable { url, cause } => format!(
                "error: cannot reach the Qila server at {url}: {cause}; is `qila serve` running? (set --server or \
                 QILA_SERVER)"
            ),
            Self::Usage(message) => format!("error: {message}"),
        }
    }
}

/// What went wrong with a request, without the URL (named beside it): the innermost cause of a connection
/// failure (reqwest's own message is only "error sending request for url (...)").
fn cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    let inner = source.to_string();
    if e.is_timeout() {
        "the request timed out".into()
    } else if e.is_connect() || e.is_request() || e.is_body() || e.is_decode() {
        inner
    } else {
        e.to_string()
    }
}

/// An API client.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client of the server at `args.server`.
    pub fn new(args: &ClientArgs) -> Result<Self, ClientError> {
        let base = args.server.trim_end_matches('/').to_string();
        let url = reqwest::Url::parse(&base)
            .map_err(|e| ClientError::Usage(format!("invalid --server URL `{base}`: {e}")))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(ClientError::Usage(format!(
                "invalid --server URL `{base}`: the scheme must be http or https"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("qila/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Usage(format!("cannot make an HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            token: args.token.clone().filter(|t| !t.is_empty()),
        })
    }

    /// Whether a token is set.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The full URL of an API path (`/api/v1/...`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, self.url(path));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        req
    }

    fn unreachable(&self, e: &reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            cause: cause(e),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let response = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let retry = retry_after(response.headers());
        let body = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        if !status.is_success() {
            return Err(api_error(status, &body, retry));
        }
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            cause: format!("the answer is not JSON ({e})"),
        })
    }

    /// `GET path`, with query parameters.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.send(self.request(Method::GET, path).query(query))
            .await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    /// `POST path` with a raw body and extra headers.
    pub async fn post_bytes(
        &self,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
        headers: &[(&str, String)],
    ) -> Result<Value, ClientError> {
        let mut req = self
            .request(Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        self.send(req).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.request(Method::DELETE, path)).await
    }

    /// `GET path` as a server-sent event stream, resuming after the event with id `last_id` when given.
    pub async fn events(
        &self,
        path: &str,
        last_id: Option<&str>,
    ) -> Result<EventStream, ClientError> {
        let mut req = self
            .request(Method::GET, path)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = last_id {
            req = req.header("Last-Event-ID", id);
        }
        let response = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if !status.is_success() {
            let retry = retry_after(response.headers());
            let body = response.bytes().await.map_err(|e| self.unreachable(&e))?;
            return Err(api_error(status, &body, retry));
        }
        Ok(EventStream {
            response,
            parser: SseParser::default(),
            base: self.base.clone(),
        })
    }
}

/// A `Retry-After` header: delay-seconds, or an HTTP date (as a delay from now; zero when it is past).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// The error of a non-2xx answer, with the server's `Retry-After`.
fn api_error(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> ClientError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let text = || {
        let text = String::from_utf8_lossy(body).trim().to_string();
        if text.is_empty() {
            format!("the server answered {status}")
        } else {
            format!("the server answered {status}: {text}")
        }
    };
    match error {
        Some(Value::Object(e)) => ClientError::Api {
            status,
            message: e
                .get("message")
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(text),
            diagnostics: e
                .get("diagnostics")
                .and_then(Value::as_array)
                .map(|ds| ds.iter().map(diagnostic_line).collect())
                .unwrap_or_default(),
            retry_after,
        },
        Some(Value::String(message)) => ClientError::Api {
            status,
            message: message.clone(),
            diagnostics: Vec::new(),
            retry_after,
        },
        _ => ClientError::Api {
            status,
            message: text(),
            diagnostics: Vec::new(),
            retry_after,
        },
    }
}

/// `file:line:col: message` from a diagnostic as the API sends it (an object, or already a line).
pub fn diagnostic_line(d: &Value) -> String {
    match d {
        Value::String(s) => s.clone(),
        Value::Object(o) => {
            let message = o.get("message").and_then(Value::as_str).unwrap_or("");
            match o.get("file").and_then(Value::as_str) {
                Some(file) => format!(
                    "{file}:{}:{}: {message}",
                    o.get("line").and_then(Value::as_u64).unwrap_or(1),
                    o.get("col")
                        .or_else(|| o.get("column"))
                        .and_then(Value::as_u64)
                        .unwrap_or(1)
                ),
                None => message.to_string(),
            }
        }
        other => other.to_string(),
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// `event:`, `message` when absent.
    pub event: String,
    /// `data:` lines, joined by newlines.
    pub data: String,
    /// `id:`, when given.
    pub id: Option<String>,
}

/// A stream of server-sent events.
pub struct EventStream {
    response: reqwest::Response,
    parser: SseParser,
    base: String,
}

impl EventStream {
    /// The next event, or `None` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<Event>, ClientError> {
        loop {
            if let Some(event) = self.parser.next_event() {
                return Ok(Some(event));
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => self.parser.push(&bytes),
                Ok(None) => return Ok(None),
                Err(e) => {
                    return Err(ClientError::Unreachable {
                        url: self.base.clone(),
                        cause: cause(&e),
                    });
                }
            }
        }
    }
}

/// An incremental parser of the `text/event-stream` format.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    current: Event,
    has_data: bool,
}

impl SseParser {
    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete event in what was received, if any.
    pub fn next_event(&mut self) -> Option<Event> {
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() {
                // A blank line dispatches the event (one without data is dropped, per the spec).
                let event = std::mem::take(&mut self.current);
                if std::mem::take(&mut self.has_data) {
                    return Some(Event {
                        event: if event.event.is_empty() {
                            "message".into()
                        } else {
                            event.event
                        },
                        ..event
                    });
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string()),
                None => (line.clone(), String::new()),
            };
            match field.as_str() {
                "event" => self.current.event = value,
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(&value);
                    self.has_data = true;
                }
                "id" => self.current.id = Some(value),
                _ => {}
            }
        }
        None
    }
}

/// Percent-encodes one path segment (run ids and step ids are plain, playbook names too, but be safe).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sse_events_are_parsed_across_chunks() {
        let mut p = SseParser::default();
        p.push(b": keep-alive\n\nid: 3\nevent: transition\ndata: {\"seq\":");
        assert_eq!(p.next_event(), None);
        p.push(b"3}\r\n\r\nevent: end\ndata: {}\n\ndata: a\ndata: b\n\n");
        assert_eq!(
            p.next_event(),
            Some(Event {
                event: "transition".into(),
                data: "{\"seq\":3}".into(),
                id: Some("3".into())
            })
        );
        assert_eq!(
            p.next_event(),
            Some(Event {
                event: "end".into(),
                data: "{}".into(),
                id: None
            })
        );
        assert_eq!(
            p.next_event(),
            Some(Event {
                event: "message".into(),
                data: "a\nb".into(),
                id: None
            })
        );
        assert_eq!(p.next_event(), None);
    }

    #[test]
    fn retry_after_is_read_in_seconds_or_as_a_date() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        headers.insert(
            reqwest::header::RETRY_AFTER,
            httpdate::fmt_http_date(later).parse().unwrap(),
        );
        let wait = retry_after(&headers).unwrap();
        assert!(
            wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        headers.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn api_errors_show_their_message_and_diagnostics() {
        let body = json!({"error": {"code": "invalid_playbook", "message": "the playbook is invalid", "diagnostics": [
            {"file": "a.yaml", "line": 6, "col": 5, "message": "steps.a: unknown key `wiht`"},
            "b.yaml:1:1: cannot parse"
        ]}});
        let e = api_error(StatusCode::BAD_REQUEST, body.to_string().as_bytes(), None);
        assert_eq!(
            e.render(true),
            "error: the playbook is invalid\na.yaml:6:5: steps.a: unknown key `wiht`\nb.yaml:1:1: cannot parse"
        );
        assert_eq!(e.exit_code(), ExitCode::from(1));
        let e = api_error(
            StatusCode::UNAUTHORIZED,
            br#"{"error":{"code":"unauthorized","message":"a token is required"}}"#,
            None,
        );
        assert!(e.render(false).contains("QILA_TOKEN"));
        assert!(!e.render(true).contains("QILA_TOKEN"));
        let e = api_error(StatusCode::BAD_GATEWAY, b"upstream down", None);
        assert_eq!(
            e.render(true),
            "error: the server answered 502 Bad Gateway: upstream down"
        );
    }

    #[test]
    fn unreachable_servers_exit_2_and_say_what_to_check() {
        let e = ClientError::Unreachable {
            url: "http://127.0.0.1:1".into(),
            cause: "connection refused".into(),
        };
        assert_eq!(e.exit_code(), ExitCode::from(2));
        assert_eq!(
            e.render(true),
            "error: cannot reach the Qila server at http://127.0.0.1:1: connection refused; is `qila serve` \
             running? (set --server or QILA_SERVER)"
        );
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(segment("ip-triage"), "ip-triage");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }
}
