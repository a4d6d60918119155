//! What every parser shares: the error type, time and address helpers, and the step that copies the common
//! fields under their ECS names.

use std::net::IpAddr;

use serde_json::{Map, Value};
use thiserror::Error;
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use crate::{Event, LogSource, Outcome};

/// Why a record could not be parsed. It says what is wrong; the caller adds where (file and line, listener and peer).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// The record is empty or only white space.
    #[error("empty record")]
    Empty,
    /// The record looks like JSON but does not parse.
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Json {
        /// 1-based line inside the record.
        line: usize,
        /// 1-based column inside the record.
        column: usize,
        /// What serde_json says.
        message: String,
    },
    /// The JSON is valid but not an object.
    #[error("JSON record is {found}, not an object")]
    NotAnObject {
        /// `an array`, `a string`, …
        found: &'static str,
    },
    /// A field the format requires is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field is present but its value is unusable.
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField {
        /// The field, in the record's own naming.
        field: String,
        /// Why it is unusable.
        reason: String,
    },
    /// The text is neither JSON nor any known log shape (syslog included).
    #[error("unrecognised record (not JSON, syslog or a known log format): {excerpt:?}")]
    Unrecognised {
        /// The first characters of the record.
        excerpt: String,
    },
    /// A Zeek TSV row does not fit the `#fields` header.
    #[error("Zeek row has {found} columns, the #fields header names {expected}")]
    ZeekColumns {
        /// Columns the header names.
        expected: usize,
        /// Columns the row has.
        found: usize,
    },
    /// A Zeek TSV row came before any `#fields` header.
    #[error("Zeek row before any #fields header")]
    ZeekNoHeader,
    /// A record of a binary format (EVTX) could not be read.
    #[error("unreadable record: {0}")]
    Record(String),
    /// A binary file (EVTX) is cut short or damaged here: the message says where the file ends or what is wrong,
    /// and which records were read. The complete records before it (and after it, past damage) are read.
    #[error("{0}")]
    Damaged(String),
}

impl ParseError {
    /// An [`ParseError::Unrecognised`] with the first 80 characters of `text`.
    pub(crate) fn unrecognised(text: &str) -> Self {
        ParseError::Unrecognised {
            excerpt: text.chars().take(80).collect(),
        }
    }

    /// A [`ParseError::Json`] from serde_json's error.
    pub(crate) fn json(err: &serde_json::Error) -> Self {
        ParseError::Json {
            line: err.line(),
            column: err.column(),
            message: err.to_string(),
        }
    }
}

/// The JSON kind of a value, for [`ParseError::NotAnObject`].
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A new event with only the dataset, log source, time and raw record set.
pub(crate) fn new_event(
    dataset: &str,
    product: &str,
    service: Option<&str>,
    time_us: i64,
    raw: &str,
) -> Event {
    Event {
        time_us,
        dataset: dataset.to_string(),
        logsource: LogSource {
            product: Some(product.to_string()),
            service: service.map(str::to_string),
            categories: Vec::new(),
        },
        host: None,
        source_ip: None,
        source_port: None,
        destination_ip: None,
        destination_port: None,
        user: None,
        process: None,
        action: None,
        outcome: None,
        fields: Map::new(),
        raw: raw.to_string(),
    }
}

impl Outcome {
    /// The ECS `event.outcome` value: `success`, `failure` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Unknown => "unknown",
        }
    }
}

impl Event {
    /// Copies the common fields into [`Event::fields`] under their ECS names (`@timestamp`, `host.name`,
    /// `source.ip`, …, `event.dataset`), replacing what was there under those names. Parsers call it last;
    /// call it again after changing a common field.
    pub fn sync_ecs_fields(&mut self) {
        let f = &mut self.fields;
        f.insert("@timestamp".into(), Value::String(rfc3339_us(self.time_us)));
        f.insert("event.dataset".into(), Value::String(self.dataset.clone()));
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                f.insert(k.to_string(), v);
            }
        };
        put("host.name", self.host.clone().map(Value::String));
        put(
            "source.ip",
            self.source_ip.map(|ip| Value::String(ip.to_string())),
        );
        put("source.port", self.source_port.map(Value::from));
        put(
            "destination.ip",
            self.destination_ip.map(|ip| Value::String(ip.to_string())),
        );
        put("destination.port", self.destination_port.map(Value::from));
        put("user.name", self.user.clone().map(Value::String));
        put("process.name", self.process.clone().map(Value::String));
        put("event.action", self.action.clone().map(Value::String));
        put(
            "event.outcome",
            self.outcome.map(|o| Value::String(o.as_str().into())),
        );
    }

    /// Sets a parser field (string value).
    pub(crate) fn set(&mut self, key: &str, value: impl Into<String>) {
        self.fields
            .insert(key.to_string(), Value::String(value.into()));
    }
}

/// RFC 3339 text (UTC, microseconds) for a time in microseconds since the epoch; out-of-range times clamp to the
/// epoch.
pub fn rfc3339_us(time_us: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(time_us) * 1000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// Microseconds since the epoch of an RFC 3339 / ISO 8601 time with offset (`2022-10-11T19:26:52.154080Z`).
pub(crate) fn parse_rfc3339_us(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text.trim(), &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1000).ok()
}

/// Microseconds since the epoch of a time given by parts, in UTC (or at `offset_s` seconds east of UTC).
#[allow(clippy::too_many_arguments)]
pub(crate) fn parts_to_us(
    y: i32,
    mo: u8,
    d: u8,
    h: u8,
    mi: u8,
    s: u8,
    micro: u32,
    offset_s: i32,
) -> Option<i64> {
    let date = Date::from_calendar_date(y, Month::try_from(mo).ok()?, d).ok()?;
    let time = Time::from_hms_micro(h, mi, s, micro).ok()?;
    let off = UtcOffset::from_whole_seconds(offset_s).ok()?;
    let t = PrimitiveDateTime::new(date, time).assume_offset(off);
    i64::try_from(t.unix_timestamp_nanos() / 1000).ok()
}

/// Microseconds since the epoch of `YYYY-MM-DD[T ]hh:mm:ss[.frac][Z|±hh:mm]` (no offset = UTC); also RFC 3339.
pub(crate) fn parse_datetime_us(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Some(us) = parse_rfc3339_us(text) {
        return Some(us);
    }
    let b = text.as_bytes();
    if b.len() < 19 || !(b[10] == b'T' || b[10] == b' ') || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r).and_then(|s| s.parse::<u32>().ok());
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = text.get(19..)?;
    let mut micro = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits: String = frac.chars().take_while(char::is_ascii_digit).collect();
        rest = &frac[digits.len()..];
        let mut six: String = digits.chars().take(6).collect();
        while six.len() < 6 {
            six.push('0');
        }
        micro = six.parse().ok()?;
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        _ => parse_offset(rest)?,
    };
    parts_to_us(
        i32::try_from(y).ok()?,
        mo as u8,
        d as u8,
        h as u8,
        mi as u8,
        s as u8,
        micro,
        offset,
    )
}

/// Seconds east of UTC of `+hh:mm`, `+hhmm` or `+hh`.
fn parse_offset(text: &str) -> Option<i32> {
    let sign = match text.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: String = text[1..].chars().filter(|c| *c != ':').collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) || !(digits.len() == 2 || digits.len() == 4) {
        return None;
    }
    let h: i32 = digits.get(0..2)?.parse().ok()?;
    let m: i32 = if digits.len() == 4 {
        digits.get(2..4)?.parse().ok()?
    } else {
        0
    };
    Some(sign * (h * 3600 + m * 60))
}

/// The UTC calendar year of a time in microseconds (for syslog lines without a year).
pub(crate) fn year_of(time_us: i64) -> i32 {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(time_us) * 1000)
        .map(|t| t.year())
        .unwrap_or(1970)
}

/// Month number of an English three-letter month abbreviation.
pub(crate) fn month_number(name: &str) -> Option<u8> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let lower = name.get(0..3)?.to_ascii_lowercase();
    MONTHS
        .iter()
        .position(|m| *m == lower)
        .and_then(|i| u8::try_from(i + 1).ok())
}

/// An IP address from log text: plain, bracketed (`[::1]`), IPv4-mapped IPv6 reduced to IPv4; `-` and anything
/// else that is not an address give `None`.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    let t = text.trim().trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = t.parse().ok()?;
    Some(ip.to_canonical())
}

/// Splits `addr:port`, `[v6]:port` or a bare address into the address and port.
pub(crate) fn split_host_port(text: &str) -> (Option<IpAddr>, Option<u16>) {
    let t = text.trim();
    if let Some(ip) = parse_ip(t) {
        return (Some(ip), None);
    }
    if let Some((host, port)) = t.rsplit_once(':') {
        let port = port.parse::<u16>().ok();
        if let Some(ip) = parse_ip(host) {
            return (Some(ip), port);
        }
    }
    (None, None)
}

/// The value as text: strings as they are, numbers and booleans printed, others `None`.
pub(crate) fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A non-empty string that is not Windows' or Zeek's "no value" marker (`-`).
pub(crate) fn meaningful(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty() && s != "-" && s != "(empty)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_datetime_us("1970-01-01 00:00:01.5"), Some(1_500_000));
        assert_eq!(parse_datetime_us("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(
            parse_datetime_us("2022-10-11T19:26:52.154080Z"),
            parse_rfc3339_us("2022-10-11T19:26:52.154080Z")
        );
        assert_eq!(parse_datetime_us("garbage"), None);
        assert_eq!(rfc3339_us(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_us(i64::MAX), "1970-01-01T00:00:00Z");
        assert_eq!(year_of(0), 1970);
        assert_eq!(month_number("Feb"), Some(2));
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_ip("::ffff:1.2.3.4"), "1.2.3.4".parse().ok());
        assert_eq!(parse_ip("-"), None);
        assert_eq!(
            split_host_port("1.2.3.4:5060"),
            ("1.2.3.4".parse().ok(), Some(5060))
        );
        assert_eq!(
            split_host_port("[2001:db8::1]:5060"),
            ("2001:db8::1".parse().ok(), Some(5060))
        );
        assert_eq!(
            split_host_port("2001:db8::1"),
            ("2001:db8::1".parse().ok(), None)
        );
    }
}
