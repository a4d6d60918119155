//! Property tests of the record parsers on hostile text: syslog messages (RFC 5424 and RFC 3164, as the UDP and
//! TCP listeners hand them over) and text records of any shape (`parse_text`, as `POST /api/v1/events` and `qila
//! ingest` do), mutated from the syslog, sshd, Asterisk, FreeSWITCH and Zeek SIP samples in `tests/fixtures`, and
//! arbitrary. Neither parser panics or takes unbounded time; an event keeps the record as received; a refused
//! record says why, and a JSON error names a line and column inside it.
//!
//! The default run takes a few seconds; `PROPTEST_CASES=5000 cargo test -p qila-events --test syslog_fuzz` runs
//! longer.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use qila_events::{ParseError, parse_syslog, parse_text};

/// Far above what any case takes, far below "unbounded"; debug builds are slow.
const BOUND: Duration = Duration::from_secs(5);

/// 2024-05-01T13:00:00Z, the time of receipt (RFC 3164 dates take its year).
const RECEIVED: i64 = 1_714_568_400_000_000;

const FIXTURES: &[&str] = &[
    include_str!("../../../tests/fixtures/fail2ban/sshd.log"),
    include_str!("../../../tests/fixtures/fail2ban/asterisk.even.log"),
    include_str!("../../../tests/fixtures/fail2ban/freeswitch.log"),
    include_str!("../../../tests/fixtures/zeek/sip.junk.log"),
    include_str!("../../../tests/fixtures/zeek/sip.invalid-content-length.log"),
];

/// Messages of RFC 5424 (its examples) and RFC 3164 that the fixtures do not have.
const SYSLOG: &[&str] = &[
    "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - BOM'su root' failed for lonvick on /dev/pts/8",
    "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.",
    "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"] BOMAn application event log entry...",
    "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\"][examplePriority@32473 class=\"high\"]",
    "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
    "<13>Feb  5 17:32:18 10.0.0.99 myapp[42]: hello world",
    "<38>Feb 25 14:34:10 belka sshd[31600]: Failed password for invalid user admin from 203.0.113.77 port 50270 ssh2",
    "2024-05-01T13:00:00Z host asterisk[2211]: NOTICE[2211] chan_sip.c: Registration from '<sip:100@pbx>' failed for '203.0.113.50:5060' - Wrong password",
];

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

fn seed() -> impl Strategy<Value = String> {
    let lines: Vec<String> = FIXTURES
        .iter()
        .flat_map(|f| f.lines())
        .chain(SYSLOG.iter().copied())
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    proptest::sample::select(lines)
}

/// Bits of syslog and log syntax that mutations insert.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("<".to_owned()),
        Just(">".to_owned()),
        Just("<191>".to_owned()),
        Just("<999>".to_owned()),
        Just("1 ".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("[id@1 a=\"".to_owned()),
        Just("\\\"".to_owned()),
        Just("\"".to_owned()),
        Just("=".to_owned()),
        Just(":".to_owned()),
        Just(" ".to_owned()),
        Just("  ".to_owned()),
        Just("-".to_owned()),
        Just("\t".to_owned()),
        Just("\r".to_owned()),
        Just("\u{0}".to_owned()),
        Just("\u{feff}".to_owned()),
        Just("é".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("2003-10-11T22:14:15.003Z".to_owned()),
        Just("9999-99-99T99:99:99+99:99".to_owned()),
        Just("Feb 30 25:61:61".to_owned()),
        Just("sshd[".to_owned()),
        Just("asterisk".to_owned()),
        Just("freeswitch".to_owned()),
        Just("NOTICE[".to_owned()),
        Just("from 203.0.113.77 port ".to_owned()),
        Just("999999999999999999999".to_owned()),
        "[a-zA-Z0-9.@-]{1,10}",
    ]
}

fn boundary(s: &str, at: usize) -> usize {
    let mut i = at % (s.len() + 1);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn record() -> impl Strategy<Value = String> {
    let mutated = (
        seed(),
        proptest::collection::vec((any::<usize>(), any::<bool>(), token()), 0..6),
    )
        .prop_map(|(mut s, edits)| {
            for (at, insert, t) in edits {
                let i = boundary(&s, at);
                if insert {
                    s.insert_str(i, &t);
                } else {
                    let j = boundary(&s, i + t.len());
                    s.replace_range(i..j.max(i), "");
                }
            }
            s
        });
    prop_oneof![4 => mutated, 1 => any::<String>()]
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn syslog_messages_become_events_that_keep_them(message in record()) {
        let started = Instant::now();
        let got = parse_syslog(&message, RECEIVED);
        prop_assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
        match got {
            Ok(ev) => prop_assert_eq!(ev.raw, message),
            Err(ParseError::Empty) => {
                prop_assert!(message.trim_end_matches(['\r', '\n', '\0']).trim().is_empty(), "{:?}", message)
            }
            Err(e) => return Err(TestCaseError::fail(format!("{message:?}: {e}"))),
        }
    }

    #[test]
    fn text_records_parse_or_say_why(line in record()) {
        let started = Instant::now();
        let got = parse_text(&line, RECEIVED);
        prop_assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
        match got {
            Ok(ev) => prop_assert_eq!(ev.raw, line),
            Err(ParseError::Json { line: l, column, message }) => {
                let lines: Vec<&str> = line.split('\n').collect();
                prop_assert!(l >= 1 && l <= lines.len(), "line {} of {}: {}", l, lines.len(), message);
                prop_assert!(column <= lines[l - 1].len() + 1, "column {} of {:?}", column, lines[l - 1]);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}
