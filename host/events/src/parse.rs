//! The entry points: one text line, one JSON value, or one syslog message in; one [`Event`] or a
//! [`ParseError`] out.

use serde_json::Value;

use crate::common::{ParseError, json_kind};
use crate::{Event, asterisk, freeswitch, json, syslog, windows, zeek};

/// Parses one record of text, detecting its shape: a JSON object (Windows if it has `Event.System`, Zeek if it
/// has `id.orig_h`, else generic JSON); an Asterisk line (`[YYYY-MM-DD hh:mm:ss] LEVEL[`); a FreeSWITCH line
/// (`YYYY-MM-DD hh:mm:ss.micros [LEVEL] sofia…`); else syslog (RFC 5424/3164; `sshd`, `asterisk` and
/// `freeswitch` programs go to their parsers). Empty lines, invalid or non-object JSON and text of no known
/// shape are errors.
pub fn parse_text(line: &str, received_us: i64) -> Result<Event, ParseError> {
    let text = line
        .trim_start_matches('\u{feff}')
        .trim_end_matches(['\r', '\n']);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ParseError::Empty);
    }
    if asterisk::looks_like(text) {
        return asterisk::parse(text, received_us).map(|e| with_raw(e, line));
    }
    if trimmed.starts_with(['{', '[', '"']) {
        match serde_json::from_str::<Value>(trimmed) {
            Ok(value) => return parse_json(value, line.to_string(), received_us),
            Err(err) if trimmed.starts_with(['{', '"']) => return Err(ParseError::json(&err)),
            Err(_) => {}
        }
    }
    if freeswitch::looks_like(text) {
        return freeswitch::parse(text, received_us).map(|e| with_raw(e, line));
    }
    if let Some((header, msg)) = syslog::split(text, received_us) {
        return Ok(syslog::dispatch(&header, &msg, line, received_us));
    }
    // Header-less forms: the journal's `NOTICE[566]: chan_sip.c:…`.
    if let Ok(ev) = asterisk::parse(text, received_us) {
        return Ok(with_raw(ev, line));
    }
    Err(ParseError::unrecognised(trimmed))
}

fn with_raw(mut ev: Event, raw: &str) -> Event {
    raw.clone_into(&mut ev.raw);
    ev
}

/// Parses one JSON record (`raw` is its text as received): Windows if it has `Event.System`, Zeek if it has
/// `id.orig_h`, else generic JSON. Non-objects are errors.
pub fn parse_json(value: Value, raw: String, received_us: i64) -> Result<Event, ParseError> {
    if !value.is_object() {
        return Err(ParseError::NotAnObject {
            found: json_kind(&value),
        });
    }
    if windows::is_windows(&value) {
        return windows::parse_value(&value, &raw, received_us);
    }
    if value.get("Event").is_some()
        && value
            .get("Event")
            .and_then(|e| e.get("EventData").or_else(|| e.get("UserData")))
            .is_some()
    {
        return Err(ParseError::MissingField("Event.System"));
    }
    if zeek::is_zeek(&value) {
        return zeek::parse_value(&value, &raw, received_us);
    }
    json::parse_value(value, &raw, received_us)
}

/// Parses one syslog message as received by the UDP/TCP listeners (RFC 5424 or 3164; 3164 dates take the
/// year of `received_us`). A message without a syslog header still becomes a `syslog` event; only an empty
/// message is an error.
pub fn parse_syslog(message: &str, received_us: i64) -> Result<Event, ParseError> {
    syslog::parse(message, received_us)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Outcome;

    #[test]
    fn detects_shapes() {
        let w = parse_text(
            r#"{"Event":{"System":{"EventID":4624,"Channel":"Security"},"EventData":{}}}"#,
            0,
        )
        .expect("windows");
        assert_eq!(w.dataset, "windows");
        let z =
            parse_text(r#"{"ts":1.0,"id.orig_h":"1.2.3.4","method":"INVITE"}"#, 0).expect("zeek");
        assert_eq!(z.dataset, "zeek.sip");
        let j = parse_text(r#"{"a":1}"#, 0).expect("json");
        assert_eq!(j.dataset, "json");
        let a = parse_text("[2012-02-13 17:21:54] NOTICE[1638] chan_sip.c: Registration from '<sip:301@example.com>' failed for '1.2.3.4' - Wrong password", 0).expect("asterisk");
        assert_eq!(a.dataset, "asterisk");
        let f = parse_text("2013-12-31 17:39:54.767815 [WARNING] sofia_reg.c:2531 Can't find user [1001@192.168.2.51] from 5.11.47.236", 0).expect("fs");
        assert_eq!(f.dataset, "freeswitch");
        let s = parse_text(
            "Feb 25 14:34:10 belka sshd[31602]: Invalid user x from 1.2.3.4",
            0,
        )
        .expect("sshd");
        assert_eq!(
            (s.dataset.as_str(), s.outcome),
            ("linux.auth", Some(Outcome::Failure))
        );
        let g = parse_text("<13>Feb 25 14:34:10 belka cron[1]: job done", 0).expect("syslog");
        assert_eq!(g.dataset, "syslog");
        let w = parse_text("2016-09-25T18:57:58.150982 www.srv.tld freeswitch[122921]: 2016-09-25 18:57:58.150982 [WARNING] sofia_reg.c:2889 Can't find user [201@::1] from 192.0.2.1", 0).expect("fs syslog");
        assert_eq!(
            (w.dataset.as_str(), w.host.as_deref()),
            ("freeswitch", Some("www.srv.tld"))
        );
    }

    #[test]
    fn malformed() {
        assert_eq!(parse_text("", 0), Err(ParseError::Empty));
        assert_eq!(parse_text(" \r\n", 0), Err(ParseError::Empty));
        assert!(matches!(
            parse_text(r#"{"Event": {"#, 0),
            Err(ParseError::Json { .. })
        ));
        assert_eq!(
            parse_text("[1,2]", 0),
            Err(ParseError::NotAnObject { found: "an array" })
        );
        assert_eq!(
            parse_text("\"s\"", 0),
            Err(ParseError::NotAnObject { found: "a string" })
        );
        assert_eq!(
            parse_text(r#"{"Event":{"System":{"Channel":"Security"}}}"#, 0),
            Err(ParseError::MissingField("Event.System.EventID"))
        );
        assert!(matches!(
            parse_text("\u{1}\u{2}garbage\u{7f}", 0),
            Err(ParseError::Unrecognised { .. })
        ));
        assert_eq!(parse_syslog("", 0), Err(ParseError::Empty));
        assert!(parse_syslog("no header", 0).is_ok());
    }

    #[test]
    fn random_bytes_never_panic() {
        // xorshift64*, fixed seed: deterministic "fuzzing" without extra crates.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let alphabet: &[u8] = b"{}[]\":,0123456789.-+ eE\\ntruefalsnul<>@#%Event System EventID id.orig_h sshd[ NOTICE \x00\xff\x80\t\n";
        for i in 0..3000 {
            let len = (next() % 120) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if i % 2 == 0 {
                        alphabet[(r as usize) % alphabet.len()]
                    } else {
                        (r >> 8) as u8
                    }
                })
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_text(&text, 0);
            let _ = parse_syslog(&text, 0);
            if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                let _ = parse_json(v, text.to_string(), 0);
            }
        }
    }
}
