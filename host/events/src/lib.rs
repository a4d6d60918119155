//! Qila's SIEM events: every record that comes in (HTTP NDJSON, syslog, files) is parsed into one [`Event`], which
//! keeps the record exactly as received and adds the common fields of `docs/events.md` plus the fields detection
//! rules name.

// A library reports through `tracing` and its errors, never on the process's stdout or stderr.
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::net::IpAddr;

pub mod asterisk;
mod common;
mod evtx_file;
pub mod files;
pub mod freeswitch;
pub mod json;
pub mod linux_auth;
pub mod parse;
pub mod syslog;
pub mod windows;
pub mod zeek;

pub use common::{ParseError, parse_ip, rfc3339_us};
pub use files::{FileError, FileFormat, FileRecords, Location, Record, count_hint, read_file};
pub use parse::{parse_json, parse_syslog, parse_text};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where an event comes from, in Sigma's terms: rules are routed to the events whose log source they name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogSource {
    /// `windows`, `linux`, `asterisk`, `freeswitch`, `zeek`, …
    pub product: Option<String>,
    /// `security`, `sysmon`, `sshd`, `auth`, `sip`, …
    pub service: Option<String>,
    /// Every Sigma category the event belongs to (a Sysmon event 13 is both `registry_set` and `registry_event`).
    pub categories: Vec<String>,
}

/// Whether the action an event records succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It succeeded (a logon, a registration).
    Success,
    /// It failed (a wrong password, a refused registration).
    Failure,
    /// The record says neither.
    Unknown,
}

/// A normalised event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened, in microseconds since the Unix epoch (UTC); when the record has no time, when it was
    /// received.
    pub time_us: i64,
    /// Which parser read it: `windows`, `linux.auth`, `asterisk`, `freeswitch`, `zeek.sip`, `syslog` or `json`.
    pub dataset: String,
    /// The Sigma log source, for rule routing.
    pub logsource: LogSource,
    /// The host that recorded it.
    pub host: Option<String>,
    /// Where the action came from.
    pub source_ip: Option<IpAddr>,
    /// The source port.
    pub source_port: Option<u16>,
    /// What the action went to.
    pub destination_ip: Option<IpAddr>,
    /// The destination port.
    pub destination_port: Option<u16>,
    /// The account acting or acted upon.
    pub user: Option<String>,
    /// The process (image path or program name).
    pub process: Option<String>,
    /// What happened, e.g. `logon`, `sip-register`, `process-start`.
    pub action: Option<String>,
    /// Whether it succeeded.
    pub outcome: Option<Outcome>,
    /// The fields detection rules name: the parser's own (for Windows, `System` and `EventData` flattened), plus
    /// the common fields under their ECS names (`source.ip`, `user.name`, …).
    pub fields: Map<String, Value>,
    /// The record exactly as received.
    pub raw: String,
}
