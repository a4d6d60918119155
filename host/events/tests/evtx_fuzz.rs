//! Property tests of the EVTX reader, seeded from `tests/fixtures/chainsaw/security_sample.evtx`: the file cut
//! at random offsets, with random bytes flipped, and with random ranges spliced over (or into) other places. Each
//! must read without a panic, within a bounded time, and every error must name a position (a byte of the file,
//! or the record or line it is about). A pure cut must also yield exactly the complete records before it, then
//! say where the file ends.
//!
//! The default run takes a few seconds; `PROPTEST_CASES=5000 cargo test -p qila-events --test evtx_fuzz` runs
//! longer.

use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use qila_events::ParseError;
use qila_events::files::{Location, Record, read_file};

const SAMPLE: &[u8] = include_bytes!("../../../tests/fixtures/chainsaw/security_sample.evtx");

/// Far above what a case takes (milliseconds), far below "unbounded"; debug builds are slow.
const BOUND: Duration = Duration::from_secs(10);

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

/// Reads `bytes` as a file and checks the properties every input must have; returns its records.
fn read(bytes: &[u8]) -> Vec<Record> {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("fuzz.evtx");
    std::fs::write(&path, bytes).expect("written");
    let started = Instant::now();
    let records: Vec<Record> = match read_file(Path::new(&path), 0) {
        Ok(records) => records.collect(),
        Err(e) => {
            // Only a header the crate refuses: the message names the file.
            assert!(e.to_string().contains("fuzz.evtx"), "{e}");
            Vec::new()
        }
    };
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
    for r in &records {
        if let Err(e) = &r.result {
            assert!(!e.to_string().is_empty());
            match r.location {
                Location::Byte(n) => assert!(n <= bytes.len() as u64, "{n} past the end: {e}"),
                Location::Record(_) | Location::Line(_) => {
                    assert!(
                        !matches!(e, ParseError::Damaged(_)),
                        "damage not at a byte: {e}"
                    )
                }
            }
        }
    }
    records
}

/// The end (from the start of the file) of each record of the sample's one chunk, from the record headers.
fn record_ends() -> Vec<usize> {
    let chunk = &SAMPLE[4096..];
    let mut at = 512;
    let mut ends = Vec::new();
    while chunk[at..at + 4] == *b"**\0\0" {
        at += u32::from_le_bytes(chunk[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        ends.push(4096 + at);
    }
    ends
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn a_cut_yields_the_complete_records_then_where_the_file_ends(cut in 8..SAMPLE.len()) {
        let records = read(&SAMPLE[..cut]);
        let complete = record_ends().iter().filter(|end| **end <= cut).count();
        let (last, events) = records.split_last().expect("the truncation at least");
        prop_assert_eq!(last.location, Location::Byte(cut as u64));
        let ends = format!("ends at byte {cut}");
        prop_assert!(
            matches!(&last.result, Err(ParseError::Damaged(m)) if m.contains(&ends)),
            "{:?}",
            last
        );
        prop_assert_eq!(events.len(), complete);
        prop_assert!(events.iter().all(|r| r.result.is_ok()));
    }

    #[test]
    fn flipped_bytes_never_panic_and_errors_are_placed(
        flips in prop::collection::vec((0..SAMPLE.len(), any::<u8>()), 1..24),
        cut in prop::option::of(8..SAMPLE.len()),
    ) {
        let mut bytes = SAMPLE.to_vec();
        for (at, byte) in flips {
            bytes[at] = byte;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut);
        }
        read(&bytes);
    }

    #[test]
    fn spliced_ranges_never_panic_and_errors_are_placed(
        from in 0..SAMPLE.len(),
        len in 1..4096usize,
        to in 0..SAMPLE.len(),
        insert in any::<bool>(),
    ) {
        let piece = SAMPLE[from..(from + len).min(SAMPLE.len())].to_vec();
        let mut bytes = SAMPLE.to_vec();
        if insert {
            // Everything after `to` moves: no record is where its chunk says.
            bytes.splice(to..to, piece);
        } else {
            let end = (to + piece.len()).min(bytes.len());
            bytes[to..end].copy_from_slice(&piece[..end - to]);
        }
        read(&bytes);
    }
}
