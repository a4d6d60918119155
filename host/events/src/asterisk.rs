//! Asterisk's `messages`/`full` log (`[2012-02-13 17:21:54] NOTICE[1638] chan_sip.c: …`), its syslog and journal
//! forms, and the security event log (`SecurityEvent="InvalidPassword",…`). Failed registrations, failed
//! authentications and calls rejected for unknown extensions (toll-fraud probing) are `outcome: failure`.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use crate::common::{
    ParseError, month_number, new_event, parse_datetime_us, parts_to_us, split_host_port, year_of,
};
use crate::syslog::{self, Header, apply_header};
use crate::{Event, Outcome};

/// The dataset name of Asterisk events.
pub const DATASET: &str = "asterisk";

static BRACKET_TIME: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"^\[(?P<ts>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?|[A-Z][a-z]{2} +\d{1,2} \d{2}:\d{2}:\d{2})\]\s*(?P<rest>.*)$").ok()
});
static BODY: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"^(?P<level>[A-Z]+)\s?\[(?P<tid>\d+)\](?:\[(?P<cid>[^\]]*)\])?:?\s+(?:(?P<src>[\w./-]+\.c)(?::\d+)?(?:\s+(?:in\s+)?(?P<func>\w+))?:\s+)?(?P<msg>.*)$").ok()
});

/// One kind of Asterisk message: pattern, SIP method, action and whether it is a failure.
struct Kind {
    re: Regex,
    method: Option<&'static str>,
    action: &'static str,
    failure: bool,
}

const KINDS: &[(&str, Option<&str>, &str, bool)] = &[
    (
        r"Registration from '(?P<from>[^']*)' failed for '(?P<addr>[^']+)' - (?P<reason>.*)$",
        Some("REGISTER"),
        "sip-register",
        true,
    ),
    (
        r"Request (?:'(?P<method>[A-Z]+)' )?from '(?P<from>.*)' failed for '(?P<addr>[^']+)'(?: \(callid: (?P<callid>[^)]*)\))? - (?P<reason>.*)$",
        None,
        "sip-auth",
        true,
    ),
    (
        r"Call from '(?P<from>[^']*)' \((?:[A-Z]+:)?(?P<addr>[^)]+)\) to extension '(?P<ext>[^']*)' rejected because (?P<reason>.*?)(?: in context '(?P<context>[^']*)')?\.?$",
        Some("INVITE"),
        "sip-invite",
        true,
    ),
    (
        r"Host (?P<addr>\S+) failed (?:to authenticate as|MD5 authentication for) '(?P<from>[^']*)'",
        None,
        "iax2-auth",
        true,
    ),
    (
        r"^(?P<addr>\S+) failed to authenticate as '(?P<from>[^']*)'",
        None,
        "ami-auth",
        true,
    ),
    (
        r"Rejecting unknown SIP connection from (?P<addr>[^\s\x22]+)",
        Some("INVITE"),
        "sip-invite",
        true,
    ),
    (
        r"Failed to authenticate (?:user|device) (?P<from>[^@]*@(?P<addr>[^>:;\s]+)\S*)",
        None,
        "sip-auth",
        true,
    ),
    (
        r"No registration for peer '(?P<from>[^']*)' \(from (?P<addr>[^)]+)\)",
        Some("REGISTER"),
        "sip-register",
        true,
    ),
    (
        r"hacking attempt detected '(?P<addr>[^']+)'",
        None,
        "sip-auth",
        true,
    ),
    (
        r"Registered SIP '(?P<from>[^']*)' at (?P<addr>\S+)",
        Some("REGISTER"),
        "sip-register",
        false,
    ),
];

static KIND_RES: LazyLock<Vec<Kind>> = LazyLock::new(|| {
    KINDS
        .iter()
        .filter_map(|(re, method, action, failure)| {
            Regex::new(re).ok().map(|re| Kind {
                re,
                method: *method,
                action,
                failure: *failure,
            })
        })
        .collect()
});
static SECURITY_KEY: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"(?:^|",)([A-Za-z][A-Za-z0-9_]*)=""#).ok());
static SIP_USER: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"sips?:([^@>;:]+)@").ok());

/// Whether a line starts like an Asterisk log line (`[date] LEVEL[`).
pub fn looks_like(line: &str) -> bool {
    BRACKET_TIME
        .as_ref()
        .and_then(|r| r.captures(line))
        .and_then(|c| c.name("rest"))
        .is_some_and(|rest| BODY.as_ref().is_some_and(|b| b.is_match(rest.as_str())))
}

/// Parses an Asterisk log line: `[time] LEVEL[tid] file.c: msg`, the syslog form (`asterisk[pid]: LEVEL[tid]: …`)
/// or the journal form without time (`LEVEL[tid]: file.c:…`).
pub fn parse(line: &str, received_us: i64) -> Result<Event, ParseError> {
    let text = line.trim_end_matches(['\r', '\n']);
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    if let Some(c) = BRACKET_TIME.as_ref().and_then(|r| r.captures(text)) {
        let header = Header {
            time_us: bracket_time(&c["ts"], received_us),
            ..Header::default()
        };
        return from_body(&header, &c["rest"], line, received_us)
            .ok_or_else(|| ParseError::unrecognised(text));
    }
    if let Some(ev) = from_body(&Header::default(), text, line, received_us) {
        return Ok(ev);
    }
    match syslog::split(text, received_us) {
        Some((header, msg)) => from_syslog(&header, &msg, line, received_us)
            .ok_or_else(|| ParseError::unrecognised(text)),
        None => Err(ParseError::unrecognised(text)),
    }
}

/// The time in `[…]`: `2012-02-13 17:21:54` or `Jan 18 17:39:50` (year of `received_us`), as UTC.
fn bracket_time(ts: &str, received_us: i64) -> Option<i64> {
    if let Some(us) = parse_datetime_us(ts) {
        return Some(us);
    }
    let mut parts = ts.split_whitespace();
    let mo = month_number(parts.next()?)?;
    let day: u8 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<u8>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    parts_to_us(year_of(received_us), mo, day, h, m, s, 0, 0)
}

/// The event of an Asterisk message under a syslog header; `None` if the message is not Asterisk-shaped.
pub(crate) fn from_syslog(
    header: &Header,
    msg: &str,
    raw: &str,
    received_us: i64,
) -> Option<Event> {
    from_body(header, msg, raw, received_us)
}

/// The event of `LEVEL[tid] file.c: msg` (or a bare security-log line).
fn from_body(header: &Header, body: &str, raw: &str, received_us: i64) -> Option<Event> {
    let caps = BODY.as_ref()?.captures(body)?;
    let msg = caps.name("msg").map_or("", |m| m.as_str());
    let mut ev = new_event(DATASET, "asterisk", Some("security"), received_us, raw);
    apply_header(&mut ev, header, msg);
    if ev.process.is_none() {
        ev.process = Some("asterisk".into());
    }
    for (name, field) in [
        ("level", "asterisk.level"),
        ("tid", "asterisk.thread"),
        ("cid", "asterisk.call_id"),
        ("src", "asterisk.source"),
        ("func", "asterisk.function"),
    ] {
        if let Some(m) = caps.name(name) {
            ev.set(field, m.as_str());
        }
    }
    ev.outcome = Some(Outcome::Unknown);
    if msg.starts_with("SecurityEvent=") {
        security_event(&mut ev, msg, header.time_us.is_none());
    } else if let Some((kind, c)) = KIND_RES
        .iter()
        .find_map(|k| k.re.captures(msg).map(|c| (k, c)))
    {
        let get = |k: &str| c.name(k).map(|m| m.as_str().to_string());
        let method = get("method").or_else(|| kind.method.map(str::to_string));
        let action = match method.as_deref() {
            Some(m) if kind.action == "sip-auth" => format!("sip-{}", m.to_ascii_lowercase()),
            _ => kind.action.to_string(),
        };
        ev.action = Some(action);
        ev.outcome = Some(if kind.failure {
            Outcome::Failure
        } else {
            Outcome::Success
        });
        if let Some(m) = method {
            ev.set("sip.method", m);
        }
        if let Some(addr) = get("addr") {
            let (ip, port) = split_host_port(&addr);
            ev.source_ip = ip;
            ev.source_port = port;
            ev.set("asterisk.remote", addr);
        }
        if let Some(from) = get("from") {
            let user = SIP_USER
                .as_ref()
                .and_then(|r| r.captures(&from))
                .and_then(|u| u.get(1))
                .map(|u| u.as_str().to_string());
            let user = user.or_else(|| {
                (!from.is_empty() && !from.contains(['<', '"', '@'])).then(|| from.clone())
            });
            ev.user = user;
            ev.set("sip.from", from);
        }
        if let Some(ext) = get("ext") {
            ev.set("sip.extension", ext);
        }
        if let Some(ctx) = get("context") {
            ev.set("sip.context", ctx);
        }
        if let Some(cid) = get("callid") {
            ev.set("sip.call_id", cid);
        }
        if let Some(reason) = get("reason") {
            ev.set("asterisk.reason", reason);
        }
        if let Some(u) = ev.user.clone() {
            ev.set("sip.user", u);
        }
    }
    ev.sync_ecs_fields();
    Some(ev)
}

/// The key="value" pairs of a security-log line (values may hold quotes; a value ends where `",Key="` starts).
pub fn security_pairs(msg: &str) -> Vec<(String, String)> {
    let Some(re) = SECURITY_KEY.as_ref() else {
        return Vec::new();
    };
    let starts: Vec<(usize, usize, String)> = re
        .captures_iter(msg)
        .filter_map(|c| {
            Some((
                c.get(0)?.start(),
                c.get(0)?.end(),
                c.get(1)?.as_str().to_string(),
            ))
        })
        .collect();
    let mut pairs = Vec::new();
    for (i, (_, value_start, key)) in starts.iter().enumerate() {
        let end = starts
            .get(i + 1)
            .map_or(msg.len(), |(next_start, _, _)| *next_start);
        let value = msg.get(*value_start..end).unwrap_or("");
        let value = if i + 1 == starts.len() {
            value.strip_suffix('"').unwrap_or(value)
        } else {
            value
        };
        pairs.push((key.clone(), value.to_string()));
    }
    pairs
}

/// Fills an event from an Asterisk security-log message.
fn security_event(ev: &mut Event, msg: &str, time_from_event: bool) {
    let pairs = security_pairs(msg);
    for (k, v) in &pairs {
        ev.fields.insert(k.clone(), Value::String(v.clone()));
    }
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let address = |v: Option<&str>| {
        // IPV4/UDP/1.2.3.4/5060
        let mut parts = v?.splitn(4, '/');
        let (_family, _proto, ip, port) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next());
        Some((
            crate::common::parse_ip(ip)?,
            port.and_then(|p| p.parse::<u16>().ok()),
        ))
    };
    if let Some((ip, port)) = address(get("RemoteAddress")) {
        ev.source_ip = Some(ip);
        ev.source_port = port;
    }
    if let Some((ip, port)) = address(get("LocalAddress")) {
        ev.destination_ip = Some(ip);
        ev.destination_port = port;
    }
    ev.user = get("AccountID")
        .filter(|a| !a.is_empty() && *a != "<unknown>")
        .map(str::to_string);
    if time_from_event
        && let Some(tv) = get("EventTV")
        && let Some(us) = parse_event_tv(tv)
    {
        ev.time_us = us;
    }
    let event = get("SecurityEvent").unwrap_or("");
    let service = get("Service").unwrap_or("").to_ascii_lowercase();
    ev.action = Some(match service.as_str() {
        "sip" | "pjsip" => "sip-auth".to_string(),
        "ami" => "ami-auth".to_string(),
        "" => "asterisk-security".to_string(),
        other => format!("{other}-auth"),
    });
    let outcome = match event {
        "SuccessfulAuth" => Outcome::Success,
        "ChallengeSent" => Outcome::Unknown,
        _ if get("Severity") == Some("Error") => Outcome::Failure,
        "InvalidAccountID"
        | "InvalidPassword"
        | "ChallengeResponseFailed"
        | "FailedACL"
        | "RequestNotAllowed"
        | "AuthMethodNotAllowed"
        | "RequestBadFormat"
        | "UnexpectedAddress"
        | "InvalidTransport" => Outcome::Failure,
        _ => Outcome::Unknown,
    };
    ev.outcome = Some(outcome);
}

/// `EventTV`: `1373098165-824497` (seconds-microseconds) or `2015-05-24T08:42:16.296+0300`.
fn parse_event_tv(tv: &str) -> Option<i64> {
    if let Some((s, us)) = tv.split_once('-')
        && let (Ok(s), Ok(us)) = (s.parse::<i64>(), us.parse::<i64>())
    {
        return s.checked_mul(1_000_000)?.checked_add(us);
    }
    parse_datetime_us(tv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn regexes_compile() {
        assert_eq!(KIND_RES.len(), KINDS.len());
        assert!(
            BRACKET_TIME.is_some()
                && BODY.is_some()
                && SECURITY_KEY.is_some()
                && SIP_USER.is_some()
        );
    }

    #[test]
    fn chan_sip_registration() {
        let line = "[2012-02-13 17:21:54] NOTICE[1638] chan_sip.c: Registration from '<sip:301@example.com>' failed for '1.2.3.4' - Wrong password";
        assert!(looks_like(line));
        let e = parse(line, 0).expect("parses");
        assert_eq!(e.outcome, Some(Outcome::Failure));
        assert_eq!(e.action.as_deref(), Some("sip-register"));
        assert_eq!(e.fields["sip.method"], json!("REGISTER"));
        assert_eq!(e.user.as_deref(), Some("301"));
        assert_eq!(e.source_ip, "1.2.3.4".parse().ok());
        assert_eq!(e.fields["@timestamp"], json!("2012-02-13T17:21:54Z"));
        assert_eq!(e.logsource.service.as_deref(), Some("security"));
    }

    #[test]
    fn pjsip_request_and_call() {
        let e = parse("[2016-05-06 07:08:09] NOTICE[17103] res_pjsip/pjsip_distributor.c: Request 'INVITE' from '\"test2\" <sip:test2@3.4.5.6>' failed for '192.0.2.7:5679' (callid: cafebabe) - No matching endpoint found", 0).expect("parses");
        assert_eq!(e.action.as_deref(), Some("sip-invite"));
        assert_eq!(e.source_port, Some(5679));
        assert_eq!(e.fields["sip.call_id"], json!("cafebabe"));
        let e = parse("[2016-01-28 10:34:31] NOTICE[3477][C-000003c3] chan_sip.c: Call from '' (1.2.3.4:10836) to extension '0+441772285407' rejected because extension not found in context 'default'.", 0).expect("parses");
        assert_eq!(e.fields["sip.extension"], json!("0+441772285407"));
        assert_eq!(e.fields["sip.context"], json!("default"));
        assert_eq!(e.user, None);
        assert_eq!(e.outcome, Some(Outcome::Failure));
    }

    #[test]
    fn security_log() {
        let line = r#"[2015-05-25 07:19:19] SECURITY[6988] res_security_log.c: SecurityEvent="InvalidAccountID",EventTV="2015-05-25T07:19:19.015+0300",Severity="Error",Service="PJSIP",EventVersion="1",AccountID="70000180",SessionID="!@#$%^&   *(}((')[ -+"++",LocalAddress="IPV4/UDP/1.2.3.4/5060",RemoteAddress="IPV4/UDP/10.250.251.252/5061""#;
        let e = parse(line, 0).expect("parses");
        assert_eq!(e.fields["SessionID"], json!("!@#$%^&   *(}((')[ -+\"++"));
        assert_eq!(
            e.fields["RemoteAddress"],
            json!("IPV4/UDP/10.250.251.252/5061")
        );
        assert_eq!(e.source_ip, "10.250.251.252".parse().ok());
        assert_eq!(e.destination_port, Some(5060));
        assert_eq!(e.user.as_deref(), Some("70000180"));
        assert_eq!(e.outcome, Some(Outcome::Failure));
        assert_eq!(e.action.as_deref(), Some("sip-auth"));
        assert_eq!(
            parse_event_tv("1373098165-824497"),
            Some(1_373_098_165_824_497)
        );
    }

    #[test]
    fn syslog_and_journal_forms() {
        let e = parse("Nov 4 18:30:40 localhost asterisk[32229]: NOTICE[32257]: chan_sip.c:23417 in handle_request_register: Registration from '<sip:301@example.com>' failed for '192.168.200.100:36998' - Wrong password", 0).expect("parses");
        assert_eq!(e.host.as_deref(), Some("localhost"));
        assert_eq!(
            e.fields["asterisk.function"],
            json!("handle_request_register")
        );
        let e = parse("NOTICE[566]: chan_sip.c:28926 handle_request_register: Registration from '\"28\" <sip:28@127.0.0.100>' failed for '192.0.2.1:7998' - Wrong password", 7).expect("parses");
        assert_eq!(e.time_us, 7);
        assert_eq!(e.source_ip, "192.0.2.1".parse().ok());
        assert!(parse("garbage", 0).is_err());
    }
}
