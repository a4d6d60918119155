//! Outbound HTTP, through the host only.
//!
//! The host sends the request on the plugin's behalf and refuses URLs whose host the administrator did not grant
//! to the plugin ([`Error::Denied`]); connection errors and timeouts are [`Error::Transient`]. A component that
//! never calls this module does not import the `http` interface, and so cannot reach the network at all.
//!
//! ```no_run
//! use qila_sdk::{Error, http::Request};
//!
//! # fn demo() -> Result<(), Error> {
//! let response = Request::get("https://api.example.com/v1/ip/192.0.2.1")
//!     .header("accept", "application/json")
//!     .bearer_secret("example_api_key") // the host adds `Authorization: Bearer <value>`
//!     .timeout_ms(5_000)
//!     .send()?
//!     .error_for_status()?;
//! let report: serde_json::Value = response.json()?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};

use crate::Error;

/// An HTTP request, built with [`Request::new`] or one of the method shorthands and sent with [`Request::send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    bearer_secret: Option<String>,
    timeout_ms: Option<u32>,
}

impl Request {
    /// A request with `method` (`GET`, `POST`, `PUT`, `PATCH`, `DELETE` or `HEAD`) to the absolute `http` or
    /// `https` URL `url`.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: None,
            bearer_secret: None,
            timeout_ms: None,
        }
    }

    /// A `GET` request to `url`.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` request to `url`.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }

    /// A `PUT` request to `url`.
    pub fn put(url: impl Into<String>) -> Self {
        Self::new("PUT", url)
    }

    /// A `PATCH` request to `url`.
    pub fn patch(url: impl Into<String>) -> Self {
        Self::new("PATCH", url)
    }

    /// A `DELETE` request to `url`.
    pub fn delete(url: impl Into<String>) -> Self {
        Self::new("DELETE", url)
    }

    /// Adds a header. Headers with the same name are all sent, in order.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body to raw bytes.
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sets the body to `value` as JSON and adds `content-type: application/json`.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Self, Error> {
        let body = serde_json::to_vec(value)?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Has the host send `Authorization: Bearer <value of the secret name>`; the plugin never sees the value.
    /// The secret must have been granted to the plugin, or the request fails with [`Error::Denied`].
    #[must_use]
    pub fn bearer_secret(mut self, name: impl Into<String>) -> Self {
        self.bearer_secret = Some(name.into());
        self
    }

    /// Gives up after `ms` milliseconds. The host caps it at the step's remaining time.
    #[must_use]
    pub fn timeout_ms(mut self, ms: u32) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    /// Gives up after `timeout` (saturating at `u32::MAX` milliseconds). The host caps it at the step's remaining
    /// time.
    #[must_use]
    pub fn timeout(self, timeout: Duration) -> Self {
        self.timeout_ms(u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX))
    }

    /// The method.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The headers, in the order they were added.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first header named `name` (ignoring ASCII case), if any.
    pub fn header_value(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body, if any.
    pub fn body_bytes(&self) -> Option<&[u8]> {
        self.body.as_deref()
    }

    /// The name of the secret the host sends as a bearer token, if any.
    pub fn bearer_secret_name(&self) -> Option<&str> {
        self.bearer_secret.as_deref()
    }

    /// The timeout in milliseconds, if any.
    pub fn timeout_millis(&self) -> Option<u32> {
        self.timeout_ms
    }

    /// Sends the request through the host and waits for its response. Same as [`send`].
    pub fn send(self) -> Result<Response, Error> {
        send(self)
    }
}

/// An HTTP response. Any status is a response: use [`Response::error_for_status`] to turn failures into errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers as name and value.
    pub headers: Vec<(String, String)>,
    /// The body (the host caps its size).
    pub body: Vec<u8>,
}

impl Response {
    /// A response with `status`, no headers and `body`: for test doubles.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first header named `name` (ignoring ASCII case), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body as text, with invalid UTF-8 replaced by U+FFFD.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; a body that is not a `T` is an [`Error::Failed`].
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::failed(format!("response body is not the JSON expected: {e}")))
    }

    /// The response itself when its status is 2xx; otherwise [`Error::Transient`] for 408, 429 and 5xx (worth a
    /// retry) and [`Error::Failed`] for the rest. The error message carries the status and the start of the body.
    pub fn error_for_status(self) -> Result<Self, Error> {
        if self.is_success() {
            return Ok(self);
        }
        let mut excerpt = self.text();
        if excerpt.len() > 200 {
            let cut = (0..=200)
                .rev()
                .find(|&i| excerpt.is_char_boundary(i))
                .unwrap_or(0);
            excerpt.truncate(cut);
            excerpt.push('…');
        }
        let message = format!("HTTP {}: {}", self.status, excerpt.trim());
        Err(match self.status {
            408 | 429 | 500..=599 => Error::transient(message),
            _ => Error::failed(message),
        })
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Sends `request` through the host and waits for its response.
///
/// Fails with [`Error::Denied`] when the URL's host (or the bearer secret) was not granted to the plugin, and with
/// [`Error::Transient`] on connection errors and timeouts. In a native test, the request goes to the handler
/// installed with [`crate::testing::mock_http`], and fails with [`Error::Denied`] when there is none.
pub fn send(request: Request) -> Result<Response, Error> {
    #[cfg(target_arch = "wasm32")]
    {
        use crate::bindings::qila::plugin::http as wit;
        let request = wit::Request {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
            bearer_secret: request.bearer_secret,
            timeout_ms: request.timeout_ms,
        };
        wit::send(&request)
            .map(|r| Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            })
            .map_err(Error::from)
    }
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::send_http(&request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_for_status_classifies() {
        assert!(Response::new(204, "").error_for_status().is_ok());
        assert!(
            matches!(Response::new(503, "busy").error_for_status(), Err(Error::Transient(m)) if m == "HTTP 503: busy")
        );
        assert!(matches!(
            Response::new(429, "").error_for_status(),
            Err(Error::Transient(_))
        ));
        assert!(matches!(
            Response::new(404, "").error_for_status(),
            Err(Error::Failed(_))
        ));
        let long = "é".repeat(300);
        let Err(e) = Response::new(400, long).error_for_status() else {
            panic!("400 is an error")
        };
        assert!(e.message().ends_with('…') && e.message().len() < 220);
    }

    #[test]
    fn builder_sets_everything() {
        let r = Request::post("https://example.com/hook")
            .json(&serde_json::json!({"a": 1}))
            .unwrap()
            .bearer_secret("token")
            .timeout(Duration::from_secs(2));
        assert_eq!(r.method(), "POST");
        assert_eq!(r.header_value("Content-Type"), Some("application/json"));
        assert_eq!(r.body_bytes(), Some(&br#"{"a":1}"#[..]));
        assert_eq!(r.bearer_secret_name(), Some("token"));
        assert_eq!(r.timeout_millis(), Some(2000));
    }
}
