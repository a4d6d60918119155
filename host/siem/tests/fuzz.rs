//! Property tests of what the SIEM reads from the network: the syslog TCP [`Framer`] (RFC 6587) and the NDJSON
//! splitter of `POST /api/v1/events`, seeded from the syslog, Asterisk, FreeSWITCH and Zeek SIP samples in
//! `tests/fixtures`. Neither panics on any bytes (invalid UTF-8 included) nor takes unbounded time; what they
//! yield does not depend on how the input was split into reads or requests; the framer never holds more than one
//! frame plus the read just pushed; errors name where they are (a stream offset, a line number).
//!
//! The default run takes a few seconds; `PROPTEST_CASES=2000 cargo test -p qila-siem --test fuzz` runs longer.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use qila_siem::Record;
use qila_siem::ndjson;
use qila_siem::syslog::{FrameError, Framer, MAX_FRAME, MAX_MESSAGE};

/// Far above what any case takes, far below "unbounded"; debug builds are slow.
const BOUND: Duration = Duration::from_secs(5);

const FIXTURES: &[&str] = &[
    include_str!("../../../tests/fixtures/fail2ban/sshd.log"),
    include_str!("../../../tests/fixtures/fail2ban/asterisk.even.log"),
    include_str!("../../../tests/fixtures/fail2ban/freeswitch.log"),
    include_str!("../../../tests/fixtures/zeek/sip.junk.log"),
    include_str!("../../../tests/fixtures/zeek/sip.invalid-content-length.log"),
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

/// A line of the fixtures, or a syslog line of the listeners' tests.
fn seed_line() -> impl Strategy<Value = String> {
    let mut lines: Vec<String> = FIXTURES
        .iter()
        .flat_map(|f| f.lines())
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    lines.push("<38>Feb 25 14:34:10 belka sshd[31600]: Failed password for invalid user admin from 203.0.113.77 port 50270 ssh2".into());
    lines.push("<13>1 2024-05-01T13:00:00.250Z h1 app 42 ID47 [ex@32473 a=\"1\"] a message".into());
    lines.push("<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\"] BOMAn application event".into());
    proptest::sample::select(lines)
}

/// A message that is a syslog line or any text (both without `\n`), at times near or over [`MAX_MESSAGE`].
fn message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => seed_line().prop_map(String::into_bytes),
        2 => proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..64),
        1 => (MAX_MESSAGE - 4..MAX_MESSAGE + 4).prop_map(|n| vec![b'x'; n]),
    ]
}

/// How a message travels in the stream.
#[derive(Debug, Clone)]
enum Piece {
    /// `MSG\n` (the message given `<13>` in front if it starts with a digit).
    Line(Vec<u8>),
    /// `LEN SP MSG`.
    Counted(Vec<u8>),
    /// Bytes of any kind.
    Junk(Vec<u8>),
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        4 => message().prop_map(Piece::Line),
        4 => message().prop_map(|m| Piece::Counted(m.into_iter().take(MAX_MESSAGE).collect())),
        1 => proptest::collection::vec(any::<u8>(), 0..32).prop_map(Piece::Junk),
    ]
}

impl Piece {
    /// The bytes in the stream, and the frames they make when the stream is well formed (no junk).
    fn encode(&self) -> (Vec<u8>, Vec<Vec<u8>>) {
        match self {
            Self::Line(m) => {
                let mut m = m.clone();
                if m.first().is_none_or(u8::is_ascii_digit) {
                    m.splice(0..0, *b"<13>");
                }
                let mut bytes = m.clone();
                bytes.push(b'\n');
                // A line longer than a message is cut into messages.
                let frames = if bytes.len() > MAX_MESSAGE {
                    vec![bytes[..MAX_MESSAGE].to_vec(), bytes[MAX_MESSAGE..].to_vec()]
                } else {
                    vec![bytes.clone()]
                };
                (bytes, frames)
            }
            Self::Counted(m) => {
                let mut bytes = format!("{} ", m.len()).into_bytes();
                bytes.extend_from_slice(m);
                (bytes, vec![m.clone()])
            }
            Self::Junk(b) => (b.clone(), Vec::new()),
        }
    }
}

/// Everything a framer yields from `stream` read in chunks of `sizes` (cycled), checking on the way that it holds
/// no more than one frame plus the chunk just pushed.
fn read(stream: &[u8], sizes: &[usize]) -> Result<Vec<Vec<u8>>, FrameError> {
    let mut framer = Framer::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut sizes = sizes.iter().cycle();
    while at < stream.len() {
        let n = (*sizes.next().unwrap_or(&stream.len())).clamp(1, stream.len() - at);
        framer.push(&stream[at..at + n]);
        at += n;
        assert!(
            framer.buffered() < MAX_FRAME + n,
            "holds {} bytes after a read of {n}",
            framer.buffered()
        );
        while let Some(frame) = framer.next_frame()? {
            out.push(frame);
        }
        assert!(
            framer.buffered() < MAX_FRAME,
            "holds {} bytes with every frame taken",
            framer.buffered()
        );
    }
    if let Some(frame) = framer.finish()? {
        out.push(frame);
    }
    Ok(out)
}

fn sizes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(prop_oneof![1usize..8, 8usize..512, 512usize..20_000], 1..8)
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn frames_do_not_depend_on_how_the_stream_is_read(
        pieces in proptest::collection::vec(piece(), 0..12),
        sizes in sizes(),
    ) {
        let mut stream = Vec::new();
        let mut want = Vec::new();
        let mut junk = false;
        for p in &pieces {
            let (bytes, frames) = p.encode();
            stream.extend_from_slice(&bytes);
            want.extend(frames);
            junk |= matches!(p, Piece::Junk(_));
        }
        let started = Instant::now();
        let whole = read(&stream, &[stream.len().max(1)]);
        let split = read(&stream, &sizes);
        prop_assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
        prop_assert_eq!(&split, &whole);
        if !junk {
            prop_assert_eq!(whole, Ok(want));
        }
        if let Err(e) = split {
            prop_assert!(e.offset <= stream.len() as u64, "{} in a stream of {}", e, stream.len());
        }
    }

    #[test]
    fn a_bad_frame_is_reported_at_its_offset(
        before in proptest::collection::vec(piece().prop_filter("well formed", |p| !matches!(p, Piece::Junk(_))), 0..6),
        bad in 0usize..4,
        after in proptest::collection::vec(any::<u8>(), 0..16),
        sizes in sizes(),
    ) {
        let mut stream = Vec::new();
        let mut frames = 0;
        for p in &before {
            let (bytes, f) = p.encode();
            stream.extend_from_slice(&bytes);
            frames += f.len() as u64;
        }
        let at = stream.len() as u64;
        // The bad frame, where in it the error is, and what it says.
        let (bytes, into, says): (&[u8], u64, &str) = match bad {
            0 => (b"123456 x", 0, "longer than 5 digits"),
            1 => (b"12x", 2, "followed by a space, not byte 0x78"),
            2 => (b"70000 ", 0, "more than the 65536 bytes"),
            _ => (b"10 abc", 6, "ends inside an octet-counted frame"),
        };
        stream.extend_from_slice(bytes);
        if bad < 3 {
            stream.extend_from_slice(&after);
        }
        let e = read(&stream, &sizes).unwrap_err();
        prop_assert_eq!((e.offset, e.frame), (at + into, frames + 1), "{}", e);
        prop_assert!(e.to_string().contains(says), "{}", e);
        prop_assert!(e.to_string().starts_with(&format!("byte {} of the stream (frame {})", at + into, frames + 1)), "{}", e);
    }

    #[test]
    fn a_line_that_arrives_a_byte_at_a_time_is_framed_in_linear_time(n in MAX_MESSAGE - 8..MAX_MESSAGE + 8) {
        let mut stream = vec![b'a'; n];
        stream.push(b'\n');
        let started = Instant::now();
        let frames = read(&stream, &[1]).unwrap();
        prop_assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
        prop_assert_eq!(frames.iter().map(Vec::len).sum::<usize>(), n + 1);
    }
}

/// A record as comparable data: (location, kind, text, reason).
fn flat(records: Vec<(String, Record)>) -> Vec<(String, &'static str, String, String)> {
    records
        .into_iter()
        .map(|(at, r)| match r {
            Record::Text(t) => (at, "text", t, String::new()),
            Record::Json(v, t) => (at, "json", format!("{v} {t}"), String::new()),
            Record::Undecodable(t, why) => (at, "undecodable", t, why),
        })
        .collect()
}

fn line_number(location: &str) -> usize {
    location
        .strip_prefix("line ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a location that is not `line N`: {location}"))
}

/// An NDJSON line: a fixture line as text or as a JSON string, a JSON object, or bytes of any kind.
fn ndjson_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => seed_line().prop_map(String::into_bytes),
        2 => seed_line().prop_map(|l| serde_json::to_string(&l).unwrap().into_bytes()),
        2 => (seed_line(), any::<u16>()).prop_map(|(l, n)| serde_json::json!({ "message": l, "n": n }).to_string().into_bytes()),
        1 => Just(Vec::new()),
        1 => Just(b"  \r".to_vec()),
        1 => proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..40),
    ]
}

fn body(lines: &[Vec<u8>], crlf: bool) -> Vec<u8> {
    let mut body = Vec::new();
    for l in lines {
        body.extend_from_slice(l);
        body.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
    }
    body
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn ndjson_never_panics_and_numbers_every_record_by_its_line(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let started = Instant::now();
        let records = ndjson::records(&bytes);
        prop_assert!(started.elapsed() < BOUND);
        let lines = bytes.split(|&b| b == b'\n').count();
        let mut last = 0;
        for (location, record) in &records {
            let n = line_number(location);
            prop_assert!(n > last && n <= lines, "{} after line {} of {}", location, last, lines);
            last = n;
            if let Record::Undecodable(_, why) = record {
                prop_assert!(why.starts_with("not UTF-8 (byte "), "{}", why);
            }
        }
    }

    #[test]
    fn ndjson_records_do_not_depend_on_how_the_lines_are_split_into_requests(
        lines in proptest::collection::vec(ndjson_line(), 0..16),
        cut in any::<usize>(),
        crlf in any::<bool>(),
    ) {
        let cut = cut % (lines.len() + 1);
        let whole = flat(ndjson::records(&body(&lines, crlf)));
        let mut parts = flat(ndjson::records(&body(&lines[..cut], crlf)));
        for (at, kind, text, why) in flat(ndjson::records(&body(&lines[cut..], crlf))) {
            parts.push((format!("line {}", line_number(&at) + cut), kind, text, why));
        }
        prop_assert_eq!(whole, parts);
    }

    #[test]
    fn a_line_that_is_not_utf8_is_reported_with_its_line_and_byte(
        lines in proptest::collection::vec(seed_line(), 1..12),
        which in any::<usize>(),
        at in any::<usize>(),
        bad in proptest::sample::select(vec![vec![0xffu8], vec![0xc3], vec![0xe2, 0x82], vec![0xed, 0xa0, 0x80]]),
    ) {
        let which = which % lines.len();
        let line = &lines[which];
        let mut i = at % (line.len() + 1);
        while !line.is_char_boundary(i) {
            i -= 1;
        }
        let mut bytes: Vec<Vec<u8>> = lines.iter().map(|l| l.clone().into_bytes()).collect();
        bytes[which].splice(i..i, bad);
        let records = ndjson::records(&body(&bytes, false));
        prop_assert_eq!(records.len(), lines.len());
        let (location, record) = &records[which];
        prop_assert_eq!(location, &format!("line {}", which + 1));
        let reason = match record {
            Record::Undecodable(_, why) => why.clone(),
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        };
        prop_assert_eq!(reason, format!("not UTF-8 (byte {i})"));
    }
}
