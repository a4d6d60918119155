//! EVTX files read chunk by chunk with the `evtx` crate, including the partial chunk of a file cut short.
//!
//! The crate reads whole 64 KiB chunks only: its parser counts the chunks by the file's size and drops an
//! incomplete last one without a word, so a copy cut short (or a log still being written) read as `0 events`.
//! This reader walks the chunks itself and reads a partial chunk this way:
//!
//! 1. It walks the chunk's record headers (`**\0\0`, size, record id, ..., and the copy of the size that ends
//!    each record) up to the cut. The complete records are those that end before it with their size copy in place.
//! 2. It copies the chunk up to the end of the last complete record into a zeroed 64 KiB buffer and sets the
//!    copy's free-space offset there, so that the crate's own walk ends exactly after that record.
//! 3. It parses the copy with the crate like any other chunk. A record's names and templates are written in it or
//!    in an earlier record of its chunk (EVTX defines each where it is first used), so every complete record
//!    renders as it does in the uncut file; string-table buckets that point past the copy read as empty names no
//!    complete record refers to.
//!
//! Padding alone (without step 2) would be wrong: a record cut inside its BinXML, padded with zeros, can read as a
//! shorter, valid-looking record (a zero byte is the end-of-stream token). Parsing the records from the refused
//! bytes by hand would duplicate the crate's BinXML renderer.
//!
//! After the complete records, one [`ParseError::Damaged`] item at `byte N` says where the file ends and what
//! was cut. Every other error of the crate (a bad chunk header, a damaged record) is an item at the byte where the
//! damage is, and reading goes on with the next record or chunk.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::common::ParseError;
use crate::files::{FileError, Location, Record};
use crate::windows;

/// Bytes of the file header before the first chunk.
pub const FILE_HEADER_SIZE: u64 = 4096;
/// Bytes of a chunk.
pub const CHUNK_SIZE: u64 = 65536;
/// Bytes of a chunk's header, before its first record.
pub const CHUNK_HEADER_SIZE: usize = 512;
/// Bytes of a record's header (magic, size, record id, time).
const RECORD_HEADER_SIZE: usize = 24;
/// The smallest record: its header and the copy of its size.
const RECORD_MIN_SIZE: u32 = RECORD_HEADER_SIZE as u32 + 4;
const RECORD_MAGIC: &[u8; 4] = b"**\0\0";

/// A record found by walking a chunk's record headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSpan {
    /// Where it starts, from the start of its chunk.
    pub offset: u32,
    /// Its size in bytes, header and size copy included.
    pub size: u32,
    /// The record id of its header.
    pub id: u64,
}

/// Why a walk over a chunk's record headers stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkEnd {
    /// At the chunk's free space, its last record, or zeros where the next record would start.
    End,
    /// The data ends inside the record at `offset`; `size` is its declared size when its header was read.
    Cut {
        /// Where the cut record starts, from the start of its chunk.
        offset: u32,
        /// Its declared size, when the header is there to say.
        size: Option<u32>,
    },
    /// The bytes at `offset` are not a record header, or the record's size or size copy is wrong.
    Damaged {
        /// Where, from the start of its chunk.
        offset: u32,
        /// What is wrong.
        why: &'static str,
    },
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    let bytes = data.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// Walks the record headers of `chunk` (a chunk's bytes, possibly fewer than [`CHUNK_SIZE`]), from the end of
/// its header to its free space, its last record or the end of the bytes: the records found and why it stopped.
pub fn walk_records(chunk: &[u8]) -> (Vec<RecordSpan>, WalkEnd) {
    let mut spans = Vec::new();
    let free = u32_at(chunk, 48).map_or(chunk.len(), |f| f as usize);
    let last_id = u64_at(chunk, 32).unwrap_or(u64::MAX);
    // A free-space offset past the chunk says nothing: walk to the end of the data.
    let live_end = if (CHUNK_HEADER_SIZE..=CHUNK_SIZE as usize).contains(&free) {
        free
    } else {
        CHUNK_SIZE as usize
    };
    let mut at = CHUNK_HEADER_SIZE;
    let end = loop {
        if at >= live_end {
            break WalkEnd::End;
        }
        let offset = at as u32;
        if at + RECORD_HEADER_SIZE > chunk.len() {
            // The data ends before this record's header does: a cut, unless what is there is no record at all.
            let rest = &chunk[at.min(chunk.len())..];
            let magic = &RECORD_MAGIC[..rest.len().min(RECORD_MAGIC.len())];
            break if rest.starts_with(magic) {
                WalkEnd::Cut { offset, size: None }
            } else if rest.iter().all(|b| *b == 0) {
                WalkEnd::End
            } else {
                WalkEnd::Damaged {
                    offset,
                    why: "no record header here",
                }
            };
        }
        if &chunk[at..at + 4] != RECORD_MAGIC {
            // Zeros where a record would start are where the free space really starts (a header whose
            // free-space offset is too large, as the crate also reads it).
            break if chunk[at..].iter().all(|b| *b == 0) {
                WalkEnd::End
            } else {
                WalkEnd::Damaged {
                    offset,
                    why: "no record header here",
                }
            };
        }
        let (Some(size), Some(id)) = (u32_at(chunk, at + 4), u64_at(chunk, at + 8)) else {
            break WalkEnd::Cut { offset, size: None };
        };
        if size < RECORD_MIN_SIZE || at as u64 + u64::from(size) > CHUNK_SIZE {
            break WalkEnd::Damaged {
                offset,
                why: "the record's size does not fit its chunk",
            };
        }
        let record_end = at + size as usize;
        if record_end > chunk.len() {
            break WalkEnd::Cut {
                offset,
                size: Some(size),
            };
        }
        if u32_at(chunk, record_end - 4) != Some(size) {
            break WalkEnd::Damaged {
                offset,
                why: "the record does not end with the copy of its size",
            };
        }
        spans.push(RecordSpan { offset, size, id });
        at = record_end;
        if id == last_id {
            break WalkEnd::End;
        }
    };
    (spans, end)
}

/// The chunk that holds the oldest records, where Windows (and the `evtx` crate) start reading a log that has
/// wrapped around: the one whose header names the lowest first record id.
fn oldest_chunk(headers: &[(u64, u64)]) -> usize {
    headers
        .iter()
        .enumerate()
        .filter(|(_, (first, last))| first <= last && *first != 0)
        .min_by_key(|(_, (first, _))| *first)
        .map_or(0, |(i, _)| i)
}

/// An error of the crate with its causes, `outer: inner: innermost`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// One item of a chunk's records before it becomes a [`Record`]: an event's JSON with its record id, or damage
/// at a byte of the file.
enum Item {
    Event(u64, Value),
    Damage(u64, String),
}

/// The reader's state: the file, the order of its chunks, and what the current chunk left to yield.
struct Reader {
    file: File,
    size: u64,
    order: Vec<u64>,
    next: usize,
    /// The message for the end of the file when it is cut short (yielded after the last chunk's records).
    truncation: Option<(u64, String)>,
    /// The chunk that is cut, whose records end with `truncation`.
    partial: Option<u64>,
    settings: Arc<evtx::ParserSettings>,
    pending: std::collections::VecDeque<Item>,
}

/// Opens `path` (its first bytes are `ElfFile\0`) and streams its records in record order.
pub(crate) fn records(
    path: &Path,
    received_us: i64,
) -> Result<impl Iterator<Item = Record> + Send + use<>, FileError> {
    let io = |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut header = Vec::with_capacity(FILE_HEADER_SIZE as usize);
    (&mut file)
        .take(FILE_HEADER_SIZE)
        .read_to_end(&mut header)
        .map_err(io)?;
    let mut reader = Reader {
        file,
        size,
        order: Vec::new(),
        next: 0,
        truncation: None,
        partial: None,
        settings: Arc::new(evtx::ParserSettings::default()),
        pending: Default::default(),
    };
    if size < FILE_HEADER_SIZE {
        reader.truncation = Some((
            size,
            format!(
                "truncated: the file ends at byte {size}, inside its {FILE_HEADER_SIZE}-byte file header; no records"
            ),
        ));
    } else {
        let header = evtx::EvtxFileHeader::from_stream(&mut std::io::Cursor::new(&header))
            .map_err(|e| FileError::Evtx {
                path: path.to_path_buf(),
                message: chain(&e),
            })?;
        reader.plan(header.chunk_count).map_err(io)?;
    }
    let mut last_id = 0u64;
    Ok(std::iter::from_fn(move || {
        let item = reader.next_item()?;
        Some(match item {
            Item::Event(header_id, data) => {
                // The event's own EventRecordID, as evtx_dump and Chainsaw show it.
                let id = data
                    .pointer("/Event/System/EventRecordID")
                    .and_then(Value::as_u64)
                    .unwrap_or(header_id);
                last_id = id;
                let raw = data.to_string();
                Record {
                    location: Location::Record(id),
                    result: windows::parse_value(&data, &raw, received_us),
                }
            }
            Item::Damage(byte, message) => Record {
                location: Location::Byte(byte),
                result: Err(ParseError::Damaged(if last_id == 0 {
                    message
                } else {
                    format!("{message} (the last record read is {last_id})")
                })),
            },
        })
    }))
}

impl Reader {
    /// Decides the order of the chunks (oldest first, as the crate does) and whether the file is cut short.
    fn plan(&mut self, header_chunks: u16) -> std::io::Result<()> {
        let data = self.size - FILE_HEADER_SIZE;
        let full = data / CHUNK_SIZE;
        let tail = data % CHUNK_SIZE;
        let chunks = full + u64::from(tail > 0);
        let mut headers = Vec::new();
        for n in 0..chunks {
            let mut head = [0u8; 40];
            self.file.seek(SeekFrom::Start(chunk_start(n)))?;
            let ids = match self.file.read_exact(&mut head) {
                Ok(()) if head.starts_with(b"ElfChnk\0") => (
                    u64_at(&head, 24).unwrap_or(0),
                    u64_at(&head, 32).unwrap_or(0),
                ),
                _ => (0, 0),
            };
            headers.push(ids);
        }
        let oldest = oldest_chunk(&headers) as u64;
        self.order = (oldest..chunks).chain(0..oldest).collect();
        if tail > 0 {
            self.partial = Some(full);
        } else if full < u64::from(header_chunks) {
            self.truncation = Some((
                self.size,
                format!(
                    "truncated: the file ends at byte {} after {full} whole chunks; its header names {header_chunks}",
                    self.size
                ),
            ));
        }
        Ok(())
    }

    fn next_item(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            let Some(&n) = self.order.get(self.next) else {
                return self
                    .truncation
                    .take()
                    .map(|(byte, message)| Item::Damage(byte, message));
            };
            self.next += 1;
            self.read_chunk(n);
        }
    }

    /// Reads chunk `n` into `pending`: its records, then (for the cut chunk) where the file ends.
    fn read_chunk(&mut self, n: u64) {
        let start = chunk_start(n);
        let mut data = Vec::with_capacity(CHUNK_SIZE as usize);
        let read = self
            .file
            .seek(SeekFrom::Start(start))
            .and_then(|_| (&mut self.file).take(CHUNK_SIZE).read_to_end(&mut data));
        if let Err(e) = read {
            self.pending.push_back(Item::Damage(
                start,
                format!("chunk {n} at byte {start} cannot be read: {e}"),
            ));
            return;
        }
        let cut = self.partial == Some(n) || data.len() < CHUNK_SIZE as usize;
        if data.iter().all(|b| *b == 0) {
            // An empty chunk (the crate skips them too); a cut one still ends the file.
            if cut {
                self.pending.push_back(self.cut_message(n, None));
            }
            return;
        }
        if data.len() < CHUNK_HEADER_SIZE {
            self.pending.push_back(Item::Damage(
                self.size,
                format!(
                    "truncated: the file ends at byte {}, inside the {CHUNK_HEADER_SIZE}-byte header of chunk {n} \
                     (which starts at byte {start}); no records of it",
                    self.size
                ),
            ));
            return;
        }
        let (spans, end) = walk_records(&data);
        if cut {
            // Only the complete records, with the crate's walk stopped after the last of them (see the module).
            let complete = spans
                .last()
                .map_or(CHUNK_HEADER_SIZE, |s| (s.offset + s.size) as usize);
            data.truncate(complete);
            data.resize(CHUNK_SIZE as usize, 0);
            data[48..52].copy_from_slice(&(complete as u32).to_le_bytes());
        }
        self.render(n, data, &spans);
        if cut {
            let item = self.cut_message(n, Some((spans.len(), end)));
            self.pending.push_back(item);
        }
    }

    /// The item that says where the file ends inside chunk `n`; `walk` is what its record walk found.
    fn cut_message(&self, n: u64, walk: Option<(usize, WalkEnd)>) -> Item {
        let start = chunk_start(n);
        let ends = format!("truncated: the file ends at byte {}", self.size);
        let text = match walk {
            None => format!("{ends}, inside chunk {n} (at byte {start}), which is empty"),
            Some((count, WalkEnd::End)) => format!(
                "{ends}, inside chunk {n} (at byte {start}) after its last record; its {count} records were read"
            ),
            Some((count, WalkEnd::Cut { offset, size })) => {
                let record = start + u64::from(offset);
                let what = match size {
                    Some(size) => format!("the record at byte {record} ({size} bytes) is cut"),
                    None if record >= self.size => {
                        format!("the records from byte {record} on are missing")
                    }
                    None => format!("the header of the record at byte {record} is cut"),
                };
                format!(
                    "{ends}, inside chunk {n} (at byte {start}): {what}; the {count} complete records before it were read"
                )
            }
            Some((count, WalkEnd::Damaged { offset, why })) => format!(
                "{ends}, inside chunk {n} (at byte {start}); it is damaged at byte {}: {why}; the {count} records before it were read",
                start + u64::from(offset)
            ),
        };
        Item::Damage(self.size, text)
    }

    /// Renders a whole chunk's records with the crate (catching a panic of the parser), each error at its byte.
    fn render(&mut self, n: u64, data: Vec<u8>, spans: &[RecordSpan]) {
        let start = chunk_start(n);
        let settings = Arc::clone(&self.settings);
        let at_id = |id: u64| {
            spans
                .iter()
                .find(|s| s.id == id)
                .map_or(start, |s| start + u64::from(s.offset))
        };
        let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut out = Vec::new();
            let mut chunk = match evtx::EvtxChunkData::new(data, false) {
                Ok(chunk) => chunk,
                Err(e) => {
                    out.push(Item::Damage(
                        start,
                        format!("damaged: chunk {n} at byte {start}: {}", chain(&e)),
                    ));
                    return out;
                }
            };
            chunk.number = Some(n);
            let mut parsed = match chunk.parse(settings) {
                Ok(parsed) => parsed,
                Err(e) => {
                    out.push(Item::Damage(
                        start,
                        format!("damaged: chunk {n} at byte {start}: {}", chain(&e)),
                    ));
                    return out;
                }
            };
            for record in parsed.iter() {
                let record = match record {
                    Ok(record) => record,
                    Err(e) => {
                        let byte = match &e {
                            evtx::err::EvtxError::FailedToReadRecordAt { offset, .. } => {
                                start + offset
                            }
                            evtx::err::EvtxError::FailedToParseRecord { record_id, .. } => {
                                at_id(*record_id)
                            }
                            _ => start,
                        };
                        out.push(Item::Damage(
                            byte,
                            format!("damaged: the record at byte {byte}: {}", chain(&e)),
                        ));
                        continue;
                    }
                };
                let byte = start
                    + record
                        .binxml_offset
                        .saturating_sub(RECORD_HEADER_SIZE as u64);
                match record.into_json_value() {
                    Ok(r) => out.push(Item::Event(r.event_record_id, r.data)),
                    Err(e) => out.push(Item::Damage(
                        byte,
                        format!("damaged: the record at byte {byte}: {}", chain(&e)),
                    )),
                }
            }
            out
        }))
        .unwrap_or_else(|_| {
            vec![Item::Damage(
                start,
                format!("damaged: the EVTX parser failed on chunk {n} at byte {start}"),
            )]
        });
        self.pending.extend(rendered);
    }
}

/// Where chunk `n` starts in the file.
pub fn chunk_start(n: u64) -> u64 {
    FILE_HEADER_SIZE.saturating_add(n.saturating_mul(CHUNK_SIZE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::read_file;

    fn sample() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/chainsaw/security_sample.evtx"
        );
        std::fs::read(path).expect("the fixture")
    }

    /// The oracle, from the crate on the uncut file: each record's end in the file and its JSON.
    fn uncut(bytes: &[u8]) -> Vec<(u64, Value)> {
        let mut parser = evtx::EvtxParser::from_buffer(bytes.to_vec()).expect("parses");
        let settings = Arc::new(evtx::ParserSettings::default());
        let mut out = Vec::new();
        for (n, chunk) in parser.chunks().enumerate() {
            let mut chunk = chunk.expect("a whole chunk");
            let mut parsed = chunk.parse(Arc::clone(&settings)).expect("parses");
            for record in parsed.iter() {
                let record = record.expect("a record");
                let end = chunk_start(n as u64)
                    + record.binxml_offset
                    + u64::from(record.binxml_size)
                    + 4;
                out.push((end, record.into_json_value().expect("renders").data));
            }
        }
        out
    }

    fn read_cut(bytes: &[u8], cut: usize) -> Vec<Record> {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("cut.evtx");
        std::fs::write(&path, &bytes[..cut]).expect("written");
        read_file(&path, 0).expect("opens").collect()
    }

    #[test]
    fn a_cut_file_yields_its_complete_records_then_says_where_it_ends() {
        let bytes = sample();
        let oracle = uncut(&bytes);
        assert_eq!(oracle.len(), 10);
        let mut cuts: Vec<usize> = vec![
            8,
            100,
            4095,
            4096,
            4097,
            4096 + 300,
            4096 + 511,
            4096 + 512,
            4096 + 530,
        ];
        for (end, _) in &oracle {
            let end = *end as usize;
            cuts.extend([end - 1, end, end + 1, end + 30]);
        }
        cuts.extend([bytes.len() - 1, bytes.len() - 60000]);
        for cut in cuts {
            let records = read_cut(&bytes, cut);
            let (last, events) = records.split_last().expect("at least the damage item");
            let expected: Vec<&Value> = oracle
                .iter()
                .filter(|(end, _)| *end as usize <= cut)
                .map(|(_, v)| v)
                .collect();
            let got: Vec<Value> = events
                .iter()
                .map(|r| {
                    serde_json::from_str(&r.result.as_ref().expect("an event").raw).expect("JSON")
                })
                .collect();
            assert_eq!(got.len(), expected.len(), "cut at {cut}");
            assert!(
                got.iter().zip(&expected).all(|(g, e)| g == *e),
                "cut at {cut}: records differ"
            );
            assert_eq!(last.location, Location::Byte(cut as u64), "cut at {cut}");
            let Err(ParseError::Damaged(message)) = &last.result else {
                panic!("cut at {cut}: {last:?}");
            };
            assert!(
                message.contains(&format!("the file ends at byte {cut}")),
                "{message}"
            );
        }
        // Whole, it reads as before: ten events, no damage.
        let whole = read_cut(&bytes, bytes.len());
        assert_eq!(whole.len(), 10);
        assert!(whole.iter().all(|r| r.result.is_ok()));
    }

    #[test]
    fn the_walk_finds_records_and_why_it_stopped() {
        let bytes = sample();
        let chunk = &bytes[FILE_HEADER_SIZE as usize..];
        let (spans, end) = walk_records(chunk);
        assert_eq!(spans.len(), 10);
        assert_eq!(end, WalkEnd::End);
        let (spans, end) = walk_records(&chunk[..3560 + 100]);
        assert_eq!(spans.len(), 1);
        assert_eq!(
            end,
            WalkEnd::Cut {
                offset: 3560,
                size: Some(1152)
            }
        );
        let (_, end) = walk_records(&chunk[..3560 + 5]);
        assert_eq!(
            end,
            WalkEnd::Cut {
                offset: 3560,
                size: None
            }
        );
        let mut damaged = chunk.to_vec();
        damaged[3560] = b'X';
        let (spans, end) = walk_records(&damaged);
        assert_eq!(spans.len(), 1);
        assert!(matches!(end, WalkEnd::Damaged { offset: 3560, .. }));
    }

    #[test]
    fn damage_inside_a_whole_chunk_is_at_its_byte_and_reading_goes_on() {
        let mut bytes = sample();
        // Break the second record's header: the crate reports it and resyncs on the third.
        let at = FILE_HEADER_SIZE as usize + 3560;
        bytes[at..at + 4].copy_from_slice(b"XXXX");
        let records = read_cut(&bytes, bytes.len());
        let damage: Vec<&Record> = records.iter().filter(|r| r.result.is_err()).collect();
        assert_eq!(damage.len(), 1, "{records:?}");
        assert_eq!(damage[0].location, Location::Byte(at as u64));
        assert_eq!(records.iter().filter(|r| r.result.is_ok()).count(), 9);
    }
}
