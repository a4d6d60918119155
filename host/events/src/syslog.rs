//! Generic syslog (RFC 5424 and RFC 3164, via `syslog_loose`), and the header split the program-specific
//! parsers share: a line whose program is `sshd`, `asterisk` or `freeswitch` goes to that parser with the
//! header's host and time.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use crate::common::{ParseError, month_number, new_event, parse_datetime_us, parts_to_us, year_of};
use crate::{Event, asterisk, freeswitch, linux_auth};

/// The dataset name of generic syslog events.
pub const DATASET: &str = "syslog";

/// The parts of a syslog header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// The header's time, microseconds since the epoch (UTC when the line gives no offset).
    pub time_us: Option<i64>,
    /// HOSTNAME.
    pub host: Option<String>,
    /// APP-NAME / TAG (`sshd`, `asterisk`).
    pub program: Option<String>,
    /// PROCID (`31602`).
    pub pid: Option<String>,
    /// RFC 5424 MSGID.
    pub msgid: Option<String>,
    /// Facility name (`auth`), when the line has a PRI.
    pub facility: Option<String>,
    /// Severity name (`info`), when the line has a PRI.
    pub severity: Option<String>,
    /// RFC 5424 structured data, `id.param` = value.
    pub structured: Vec<(String, String)>,
}

static BRACKET_PROGRAM: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"^(?:<\d{1,3}>)?(?P<mon>[A-Za-z]{3}) +(?P<day>\d{1,2}) (?P<h>\d{2}):(?P<m>\d{2}):(?P<s>\d{2}) +\[(?P<prog>[^\]\s]+)\]:? +(?P<msg>.*)$").ok()
});
static ISO_HEADER: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"^(?:<\d{1,3}>)?(?P<ts>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?) +(?P<host>[^\s\[:]+) +(?P<prog>[^\s\[:]+)(?:\[(?P<pid>[^\]\s]*)\])?: ?(?P<msg>.*)$").ok()
});

/// Splits a syslog line into header and message. `None` when the line has no syslog header at all.
pub fn split(line: &str, received_us: i64) -> Option<(Header, String)> {
    let year = year_of(received_us);
    if let Some(c) = BRACKET_PROGRAM.as_ref().and_then(|r| r.captures(line)) {
        let num = |k: &str| c.name(k).and_then(|m| m.as_str().parse::<u8>().ok());
        let time_us = month_number(&c["mon"]).and_then(|mo| {
            parts_to_us(year, mo, num("day")?, num("h")?, num("m")?, num("s")?, 0, 0)
        });
        let header = Header {
            time_us,
            program: Some(c["prog"].to_string()),
            ..Header::default()
        };
        return Some((header, c["msg"].to_string()));
    }
    if let Some(c) = ISO_HEADER.as_ref().and_then(|r| r.captures(line)) {
        let header = Header {
            time_us: parse_datetime_us(&c["ts"]),
            host: Some(c["host"].to_string()),
            program: Some(c["prog"].to_string()),
            pid: c.name("pid").map(|m| m.as_str().to_string()),
            ..Header::default()
        };
        return Some((header, c["msg"].to_string()));
    }
    let m = syslog_loose::parse_message_with_year_tz(
        line,
        move |_| year,
        Some(chrono::Utc),
        syslog_loose::Variant::Either,
    );
    if m.timestamp.is_none() && m.hostname.is_none() && m.appname.is_none() && m.facility.is_none()
    {
        return None;
    }
    let non_empty = |s: Option<&str>| s.filter(|s| !s.is_empty() && *s != "-").map(str::to_string);
    let mut structured = Vec::new();
    for element in &m.structured_data {
        for (k, v) in &element.params {
            structured.push((format!("{}.{}", element.id, k), v.to_string()));
        }
    }
    let header = Header {
        time_us: m.timestamp.map(|t| t.timestamp_micros()),
        host: non_empty(m.hostname),
        program: non_empty(m.appname),
        pid: m.procid.map(|p| p.to_string()),
        msgid: non_empty(m.msgid),
        facility: m.facility.map(|f| {
            format!("{f:?}")
                .trim_start_matches("LOG_")
                .to_ascii_lowercase()
        }),
        severity: m.severity.map(|s| {
            format!("{s:?}")
                .trim_start_matches("SEV_")
                .to_ascii_lowercase()
        }),
        structured,
    };
    Some((header, m.msg.to_string()))
}

/// Parses one syslog message (RFC 5424 or 3164; 3164 dates take the year of `received_us`). A line from `sshd`,
/// `asterisk` or `freeswitch` goes to that program's parser; any other becomes a `syslog` event. A message with
/// no syslog header becomes a `syslog` event with only `message` (this is what arrived on a syslog socket).
pub fn parse(line: &str, received_us: i64) -> Result<Event, ParseError> {
    let trimmed = line.trim_end_matches(['\r', '\n', '\0']);
    if trimmed.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    match split(trimmed, received_us) {
        Some((header, msg)) => Ok(dispatch(&header, &msg, line, received_us)),
        None => Ok(generic(&Header::default(), trimmed, line, received_us)),
    }
}

/// Sends a split line to the parser for its program.
pub(crate) fn dispatch(header: &Header, msg: &str, raw: &str, received_us: i64) -> Event {
    let program = header.program.as_deref().unwrap_or("").to_ascii_lowercase();
    if program.starts_with("sshd") {
        return linux_auth::from_syslog(header, msg, raw, received_us);
    }
    if program == "asterisk"
        && let Some(ev) = asterisk::from_syslog(header, msg, raw, received_us)
    {
        return ev;
    }
    if program == "freeswitch"
        && let Some(ev) = freeswitch::from_syslog(header, msg, raw, received_us)
    {
        return ev;
    }
    generic(header, msg, raw, received_us)
}

/// The header's fields (`syslog.*`, `message`) into an event's `fields`, and host, process and time.
pub(crate) fn apply_header(ev: &mut Event, header: &Header, msg: &str) {
    if let Some(t) = header.time_us {
        ev.time_us = t;
    }
    ev.host = header.host.clone();
    ev.process = header.program.clone();
    let f = &mut ev.fields;
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            f.insert(k.to_string(), Value::String(v.clone()));
        }
    };
    put("syslog.hostname", &header.host);
    put("syslog.appname", &header.program);
    put("syslog.procid", &header.pid);
    put("syslog.msgid", &header.msgid);
    put("syslog.facility", &header.facility);
    put("syslog.severity", &header.severity);
    for (k, v) in &header.structured {
        f.insert(format!("syslog.sd.{k}"), Value::String(v.clone()));
    }
    f.insert("message".into(), Value::String(msg.to_string()));
}

/// A generic syslog event: product = program name (or `syslog`), outcome unknown.
pub(crate) fn generic(header: &Header, msg: &str, raw: &str, received_us: i64) -> Event {
    let product = header
        .program
        .as_deref()
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|| "syslog".into());
    let mut ev = new_event(DATASET, &product, None, received_us, raw);
    apply_header(&mut ev, header, msg);
    ev.sync_ecs_fields();
    ev
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const Y2005: i64 = 1_104_537_600_000_000; // 2005-01-01T00:00:00Z

    #[test]
    fn regexes_compile() {
        assert!(BRACKET_PROGRAM.is_some() && ISO_HEADER.is_some());
    }

    #[test]
    fn rfc3164_generic() {
        let e = parse(
            "<13>Feb  5 17:32:18 10.0.0.99 myapp[42]: hello world",
            Y2005,
        )
        .expect("parses");
        assert_eq!(e.dataset, "syslog");
        assert_eq!(e.logsource.product.as_deref(), Some("myapp"));
        assert_eq!(e.host.as_deref(), Some("10.0.0.99"));
        assert_eq!(e.fields["message"], json!("hello world"));
        assert_eq!(e.fields["syslog.procid"], json!("42"));
        assert_eq!(e.fields["@timestamp"], json!("2005-02-05T17:32:18Z"));
    }

    #[test]
    fn rfc5424_structured_data() {
        let line = r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3"] An application event"#;
        let e = parse(line, 0).expect("parses");
        assert_eq!(e.fields["syslog.sd.exampleSDID@32473.iut"], json!("3"));
        assert_eq!(e.fields["message"], json!("An application event"));
        assert_eq!(e.time_us, 1_065_910_455_003_000);
    }

    #[test]
    fn headerless_and_empty() {
        assert_eq!(parse("  \n", 0), Err(ParseError::Empty));
        let e = parse("just text", 7).expect("parses");
        assert_eq!(e.time_us, 7);
        assert_eq!(e.fields["message"], json!("just text"));
        assert!(split("just text", 0).is_none());
    }

    #[test]
    fn iso_header_and_bracket_program() {
        let (h, msg) = split(
            "2016-09-25T18:57:58.150982 www.srv.tld freeswitch[122921]: x y",
            0,
        )
        .expect("splits");
        assert_eq!(h.program.as_deref(), Some("freeswitch"));
        assert_eq!(h.host.as_deref(), Some("www.srv.tld"));
        assert_eq!(msg, "x y");
        let (h, msg) =
            split("Jun 25 23:53:34 [sshd] User root from 1.2.3.4 x", Y2005).expect("splits");
        assert_eq!(h.program.as_deref(), Some("sshd"));
        assert_eq!(msg, "User root from 1.2.3.4 x");
    }
}
