//! Hostile: probes the WASI surface (files, directories, environment, clocks) and traps around host calls. The
//! host gives a plugin no preopened directory and no environment, lets it read clocks, counts a sleep against the
//! wall-clock timeout, and survives a trap right after an `http` call.

use qila_sdk::http::Request;
use qila_sdk::prelude::*;

/// A path to probe.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathInput {
    /// The path: `/etc/passwd`, `/`, `.`, `../..`.
    pub path: String,
}

/// What the plugin managed to read (the sandbox failed if this holds anything from the host).
#[derive(Serialize, JsonSchema)]
pub struct Probed {
    /// The content or entries read, when the read succeeded.
    pub content: Option<String>,
    /// The error WASI returned, when it failed.
    pub error: Option<String>,
}

/// Reads a file of the host's filesystem.
#[action(example = r#"{"path": "/etc/passwd"}"#)]
pub fn read_file(input: PathInput) -> Result<Probed, Error> {
    Ok(match std::fs::read_to_string(&input.path) {
        Ok(content) => Probed { content: Some(content), error: None },
        Err(e) => Probed { content: None, error: Some(e.to_string()) },
    })
}

/// Lists a directory of the host's filesystem.
#[action(example = r#"{"path": "/"}"#)]
pub fn list_dir(input: PathInput) -> Result<Probed, Error> {
    Ok(match std::fs::read_dir(&input.path) {
        Ok(entries) => {
            let names: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            Probed { content: Some(names.join(",")), error: None }
        }
        Err(e) => Probed { content: None, error: Some(e.to_string()) },
    })
}

/// The environment and arguments the plugin sees.
#[derive(Serialize, JsonSchema)]
pub struct Environment {
    /// Every variable, as `NAME=value`.
    pub vars: Vec<String>,
    /// The program arguments.
    pub args: Vec<String>,
}

/// Reads the environment variables and arguments.
#[action(example = "{}")]
pub fn environment(_input: serde_json::Value) -> Result<Environment, Error> {
    Ok(Environment {
        vars: std::env::vars().map(|(k, v)| format!("{k}={v}")).collect(),
        args: std::env::args().collect(),
    })
}

/// What the clocks say.
#[derive(Serialize, JsonSchema)]
pub struct Clocks {
    /// Wall-clock time, ms since the Unix epoch.
    pub wall_ms: u64,
    /// Monotonic time measured across `sleep_ms` of WASI sleep, in ms.
    pub slept_ms: u64,
}

/// The input of `probe.clock`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClockInput {
    /// How long to sleep (WASI `poll`), in ms.
    pub sleep_ms: u64,
}

/// Reads the wall clock, and sleeps on the monotonic clock.
#[action(example = r#"{"sleep_ms": 10}"#)]
pub fn clock(input: ClockInput) -> Result<Clocks, Error> {
    let wall_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let start = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(input.sleep_ms));
    Ok(Clocks {
        wall_ms,
        slept_ms: start.elapsed().as_millis() as u64,
    })
}

/// The input of `probe.fetch-then-trap`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchInput {
    /// The URL to GET before trapping.
    pub url: String,
}

/// GETs a URL, then traps (panics) with the response in hand.
#[action(example = r#"{"url": "http://127.0.0.1:9/"}"#)]
pub fn fetch_then_trap(input: FetchInput) -> Result<serde_json::Value, Error> {
    let response = Request::get(input.url).send()?;
    panic!("trapping with an HTTP {} response in hand", response.status);
}

qila_sdk::plugin! {
    name: "probe",
    vendor: "Qila tests",
    description: "Hostile: probes files, environment and clocks, and traps after an HTTP call.",
    actions: [read_file, list_dir, environment, clock, fetch_then_trap],
}
