//! FreeSWITCH's console/log file lines (`2013-12-31 17:39:54.767815 [WARNING] sofia_reg.c:1478 SIP auth failure
//! (INVITE) … from ip 5.11.47.236`) and their syslog form. Failed SIP authentications and unknown users are
//! `outcome: failure`.

use std::sync::LazyLock;

use regex::Regex;

use crate::common::{ParseError, new_event, parse_datetime_us, parse_ip, year_of};
use crate::syslog::{self, Header, apply_header};
use crate::{Event, Outcome};

/// The dataset name of FreeSWITCH events.
pub const DATASET: &str = "freeswitch";

static LINE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"^(?P<ts>(?:\d{4}-)?\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d+)?)\s+(?:\d+(?:\.\d+)?%\s+)?\[(?P<level>[A-Z]+)\]\s+(?:\[(?P<module>[A-Z]+)\]\s+)?\[?(?P<src>[\w.]+\.c):(?P<srcline>\d+)\]?\s+(?P<msg>.*)$").ok()
});
static AUTH: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"^SIP auth (?P<kind>failure|challenge) \((?P<method>[A-Z]+)\) on sofia profile '(?P<profile>[^']*)' for \[(?P<to>[^\]]*)\] from ip (?P<addr>\S+)").ok()
});
static NO_USER: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^Can't find user \[(?P<to>[^\]]*)\] from (?P<addr>\S+)").ok());
static ACL: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"^IP (?P<addr>\S+) Rejected by acl "(?P<acl>[^"]*)""#).ok());

/// Whether a line starts like a FreeSWITCH log line (`[YYYY-]MM-DD hh:mm:ss.micros [LEVEL] file.c:N`).
pub fn looks_like(line: &str) -> bool {
    LINE.as_ref().is_some_and(|r| r.is_match(line))
}

/// Parses a FreeSWITCH log line, bare or under a syslog header (`freeswitch[pid]: …`).
pub fn parse(line: &str, received_us: i64) -> Result<Event, ParseError> {
    let text = line.trim_end_matches(['\r', '\n']);
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    if let Some(ev) = from_body(&Header::default(), text, line, received_us, true) {
        return Ok(ev);
    }
    match syslog::split(text, received_us) {
        Some((header, msg)) => from_syslog(&header, &msg, line, received_us)
            .ok_or_else(|| ParseError::unrecognised(text)),
        None => Err(ParseError::unrecognised(text)),
    }
}

/// The event of a FreeSWITCH message under a syslog header (the header's time wins); `None` if not FreeSWITCH-shaped.
pub(crate) fn from_syslog(
    header: &Header,
    msg: &str,
    raw: &str,
    received_us: i64,
) -> Option<Event> {
    from_body(header, msg, raw, received_us, header.time_us.is_none())
}

/// Time of `2013-12-31 17:39:54.767815` or `08-03 07:56:53.026292` (year of `received_us`), as UTC.
fn line_time(ts: &str, received_us: i64) -> Option<i64> {
    if ts.len() >= 5 && ts.as_bytes().get(2) == Some(&b'-') {
        return parse_datetime_us(&format!("{:04}-{ts}", year_of(received_us)));
    }
    parse_datetime_us(ts)
}

fn from_body(
    header: &Header,
    body: &str,
    raw: &str,
    received_us: i64,
    own_time: bool,
) -> Option<Event> {
    let c = LINE.as_ref()?.captures(body)?;
    let msg = c.name("msg").map_or("", |m| m.as_str());
    let mut ev = new_event(DATASET, "freeswitch", Some("security"), received_us, raw);
    apply_header(&mut ev, header, msg);
    if own_time && let Some(t) = line_time(&c["ts"], received_us) {
        ev.time_us = t;
    }
    if ev.process.is_none() {
        ev.process = Some("freeswitch".into());
    }
    ev.set("freeswitch.level", &c["level"]);
    ev.set(
        "freeswitch.source",
        format!("{}:{}", &c["src"], &c["srcline"]),
    );
    if let Some(m) = c.name("module") {
        ev.set("freeswitch.module", m.as_str());
    }
    ev.outcome = Some(Outcome::Unknown);
    let mut addr = None;
    let mut to = None;
    if let Some(a) = AUTH.as_ref().and_then(|r| r.captures(msg)) {
        let method = a["method"].to_string();
        let failure = &a["kind"] == "failure";
        ev.action = Some(if failure {
            format!("sip-{}", method.to_ascii_lowercase())
        } else {
            "sip-auth-challenge".into()
        });
        ev.outcome = Some(if failure {
            Outcome::Failure
        } else {
            Outcome::Unknown
        });
        ev.set("sip.method", method);
        ev.set("freeswitch.profile", &a["profile"]);
        addr = Some(a["addr"].to_string());
        to = Some(a["to"].to_string());
    } else if let Some(a) = NO_USER.as_ref().and_then(|r| r.captures(msg)) {
        ev.action = Some("sip-auth".into());
        ev.outcome = Some(Outcome::Failure);
        ev.set("freeswitch.reason", "user not found");
        addr = Some(a["addr"].to_string());
        to = Some(a["to"].to_string());
    } else if let Some(a) = ACL.as_ref().and_then(|r| r.captures(msg)) {
        ev.action = Some("acl-reject".into());
        ev.set("freeswitch.acl", &a["acl"]);
        addr = Some(a["addr"].to_string());
    }
    if let Some(addr) = addr {
        ev.source_ip = parse_ip(&addr);
        ev.set("freeswitch.remote", addr);
    }
    if let Some(to) = to {
        let user = to.split('@').next().unwrap_or("").to_string();
        if !user.is_empty() {
            ev.user = Some(user.clone());
            ev.set("sip.user", user);
        }
        ev.set("sip.to", to);
    }
    ev.sync_ecs_fields();
    Some(ev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn regexes_compile() {
        assert!(LINE.is_some() && AUTH.is_some() && NO_USER.is_some() && ACL.is_some());
    }

    #[test]
    fn auth_failure() {
        let line = "2013-12-31 17:39:54.767815 [WARNING] sofia_reg.c:1478 SIP auth failure (INVITE) on sofia profile 'internal' for [000972543480510@192.168.2.51] from ip 5.11.47.236";
        assert!(looks_like(line));
        let e = parse(line, 0).expect("parses");
        assert_eq!(e.outcome, Some(Outcome::Failure));
        assert_eq!(e.action.as_deref(), Some("sip-invite"));
        assert_eq!(e.user.as_deref(), Some("000972543480510"));
        assert_eq!(e.source_ip, "5.11.47.236".parse().ok());
        assert_eq!(e.fields["@timestamp"], json!("2013-12-31T17:39:54.767815Z"));
        assert_eq!(e.fields["freeswitch.profile"], json!("internal"));
    }

    #[test]
    fn variants() {
        let e = parse("08-03 07:56:53.026292 [WARN] [SOFIA] [sofia_reg.c:4130] Can't find user [101@148.251.134.154] from 192.0.2.3", 1_104_537_600_000_000).expect("parses");
        assert_eq!(e.source_ip, "192.0.2.3".parse().ok());
        assert_eq!(e.fields["@timestamp"], json!("2005-08-03T07:56:53.026292Z"));
        let e = parse("2021-10-29 21:05:58.894719 www.srv.tld freeswitch[123456]: 2021-10-29 14:13:24.894719 82.43% [WARNING] sofia_reg.c:2889 Can't find user [201@::1] from 192.0.2.5", 0).expect("parses");
        assert_eq!(e.source_ip, "192.0.2.5".parse().ok());
        assert_eq!(e.outcome, Some(Outcome::Failure));
        let e = parse("2013-12-31 17:39:54.767815 [DEBUG] sofia.c:7954 IP 185.24.234.141 Rejected by acl \"domains\". Falling back to Digest auth.", 0).expect("parses");
        assert_eq!(e.outcome, Some(Outcome::Unknown));
        assert!(parse("nonsense", 0).is_err());
    }
}
