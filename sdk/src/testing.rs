//! Test doubles for the host, for native unit tests (not compiled for `wasm32`).
//!
//! Natively there is no host: the SDK's wrappers for host calls ([`crate::log`], [`crate::http`],
//! [`crate::secrets`], [`crate::kv`]) use the doubles in this module instead. Each test runs on its own thread and
//! every double is private to its thread, so tests do not see each other's state.
//!
//! ```
//! use qila_sdk::{Error, http::{Request, Response}, testing};
//!
//! testing::mock_http(|request| {
//!     assert_eq!(request.url(), "https://hooks.example.com/x");
//!     Ok(Response::new(200, "ok"))
//! });
//! let response = Request::post("https://hooks.example.com/x").send()?;
//! assert_eq!(response.text(), "ok");
//!
//! testing::grant_secret("api_key", "s3cret");
//! assert_eq!(qila_sdk::secrets::reveal("api_key")?, "s3cret");
//! assert!(matches!(qila_sdk::secrets::reveal("other"), Err(Error::Denied(_))));
//! # Ok::<(), Error>(())
//! ```
//!
//! To run a *built component* through the real sandbox (limits, grants, the WIT boundary) from a test, use the
//! host's harness instead: `qila_sandbox::testing::Harness` (see `docs/plugin-guide.md`).

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::Error;
use crate::http::{Request, Response};
use crate::log::Level;

type HttpHandler = Box<dyn FnMut(&Request) -> Result<Response, Error>>;

#[derive(Default)]
struct Host {
    http: Option<HttpHandler>,
    secrets: BTreeMap<String, String>,
    kv: BTreeMap<String, Vec<u8>>,
    logs: Vec<(Level, String)>,
}

thread_local! {
    static HOST: RefCell<Host> = RefCell::new(Host::default());
}

/// Sends every HTTP request of this thread to `handler`, replacing any previous handler.
pub fn mock_http(handler: impl FnMut(&Request) -> Result<Response, Error> + 'static) {
    HOST.with_borrow_mut(|h| h.http = Some(Box::new(handler)));
}

/// Grants the secret `name` with `value` to this thread.
pub fn grant_secret(name: impl Into<String>, value: impl Into<String>) {
    HOST.with_borrow_mut(|h| h.secrets.insert(name.into(), value.into()));
}

/// Takes the messages logged on this thread so far, oldest first.
pub fn logs() -> Vec<(Level, String)> {
    HOST.with_borrow_mut(|h| std::mem::take(&mut h.logs))
}

/// Forgets this thread's HTTP handler, secrets, key-value entries and logs.
pub fn reset() {
    HOST.with_borrow_mut(|h| *h = Host::default());
}

pub(crate) fn record_log(level: Level, message: &str) {
    eprintln!("[{level:?}] {message}");
    HOST.with_borrow_mut(|h| h.logs.push((level, message.to_owned())));
}

pub(crate) fn send_http(request: &Request) -> Result<Response, Error> {
    // Take the handler out while it runs, so that it may itself use the doubles.
    let handler = HOST.with_borrow_mut(|h| h.http.take());
    let Some(mut handler) = handler else {
        return Err(Error::denied(format!(
            "no HTTP in a native test: install a handler with qila_sdk::testing::mock_http ({} {})",
            request.method(),
            request.url()
        )));
    };
    let response = handler(request);
    HOST.with_borrow_mut(|h| {
        h.http.get_or_insert(handler);
    });
    response
}

pub(crate) fn reveal_secret(name: &str) -> Result<String, Error> {
    HOST.with_borrow(|h| h.secrets.get(name).cloned())
        .ok_or_else(|| {
            Error::denied(format!(
                "secret `{name}` was not granted (qila_sdk::testing::grant_secret)"
            ))
        })
}

pub(crate) fn kv_get(key: &str) -> Option<Vec<u8>> {
    HOST.with_borrow(|h| h.kv.get(key).cloned())
}

pub(crate) fn kv_set(key: &str, value: &[u8]) {
    HOST.with_borrow_mut(|h| h.kv.insert(key.to_owned(), value.to_owned()));
}

pub(crate) fn kv_delete(key: &str) {
    HOST.with_borrow_mut(|h| h.kv.remove(key));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_are_per_thread_and_resettable() {
        crate::log::info("hello");
        assert_eq!(logs(), vec![(Level::Info, "hello".to_owned())]);
        assert!(logs().is_empty());
        crate::kv::set_json("k", &[1, 2]).unwrap();
        assert_eq!(
            crate::kv::get_json::<Vec<i32>>("k").unwrap(),
            Some(vec![1, 2])
        );
        std::thread::spawn(|| assert_eq!(crate::kv::get("k").unwrap(), None))
            .join()
            .unwrap();
        assert!(matches!(
            Request::get("http://x/").send(),
            Err(Error::Denied(_))
        ));
        reset();
        assert_eq!(crate::kv::get("k").unwrap(), None);
    }
}
