//! Reading log files record by record, the format detected by content: EVTX (`ElfFile\0`), Zeek TSV
//! (`#separator`), JSON Lines, concatenated pretty-printed JSON objects (SigmaHQ's samples) and plain text
//! logs (one record a line, empty lines skipped). Large files are streamed, except the pretty-JSON case.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;
use thiserror::Error;

use crate::Event;
use crate::common::ParseError;
use crate::parse::{parse_json, parse_text};
use crate::zeek::ZeekTsv;

/// Where in a file a record starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    /// 1-based line number (text, JSON and Zeek files).
    Line(u64),
    /// EVTX record number (`EventRecordID`).
    Record(u64),
    /// A byte offset from the start of the file: where a binary file (EVTX) ends or is damaged.
    Byte(u64),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(n) => write!(f, "line {n}"),
            Location::Record(n) => write!(f, "record {n}"),
            Location::Byte(n) => write!(f, "byte {n}"),
        }
    }
}

/// One record of a file: where it starts, and its event or why it is unusable.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Where it starts.
    pub location: Location,
    /// Its event, or why it could not be parsed.
    pub result: Result<Event, ParseError>,
}

/// Why a file could not be read at all (a bad record is a [`Record`] with an error instead).
#[derive(Debug, Error)]
pub enum FileError {
    /// Opening or reading failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file starts like EVTX but its header is unusable.
    #[error("cannot read EVTX file {path}: {message}")]
    Evtx {
        /// The file.
        path: PathBuf,
        /// What the EVTX parser says.
        message: String,
    },
}

/// The format [`read_file`] detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Windows EVTX.
    Evtx,
    /// Zeek TSV log.
    ZeekTsv,
    /// One JSON object per line.
    JsonLines,
    /// JSON objects one after another, possibly pretty-printed over many lines.
    JsonObjects,
    /// Text log, one record per line.
    Text,
}

/// The records of a file, in order. Iterate it; [`FileRecords::format`] says what was detected.
pub struct FileRecords {
    format: FileFormat,
    inner: Box<dyn Iterator<Item = Record> + Send>,
}

impl FileRecords {
    /// The detected format.
    pub fn format(&self) -> FileFormat {
        self.format
    }
}

impl fmt::Debug for FileRecords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileRecords")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl Iterator for FileRecords {
    type Item = Record;
    fn next(&mut self) -> Option<Record> {
        self.inner.next()
    }
}

/// The file's size in bytes, for a progress bar.
pub fn count_hint(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

const SNIFF: usize = 64 * 1024;

/// Opens `path`, detects its format by content and returns its records. Events without their own time get
/// `received_us`.
pub fn read_file(path: &Path, received_us: i64) -> Result<FileRecords, FileError> {
    let io = |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut head = Vec::with_capacity(SNIFF);
    file.by_ref()
        .take(SNIFF as u64)
        .read_to_end(&mut head)
        .map_err(io)?;
    let format = detect(&head);
    let inner: Box<dyn Iterator<Item = Record> + Send> = match format {
        FileFormat::Evtx => Box::new(crate::evtx_file::records(path, received_us)?),
        FileFormat::JsonObjects => {
            let bytes = std::fs::read(path).map_err(io)?;
            Box::new(json_objects(&String::from_utf8_lossy(&bytes), received_us).into_iter())
        }
        FileFormat::ZeekTsv => {
            let mut zeek = ZeekTsv::new();
            Box::new(
                lines(File::open(path).map_err(io)?).filter_map(move |(n, line)| {
                    let result = match line {
                        Ok(line) => zeek.line(&line, received_us)?,
                        Err(e) => Err(e),
                    };
                    Some(Record {
                        location: Location::Line(n),
                        result,
                    })
                }),
            )
        }
        FileFormat::JsonLines | FileFormat::Text => Box::new(
            lines(File::open(path).map_err(io)?).filter_map(move |(n, line)| {
                let result = match line {
                    Ok(line) if line.trim().is_empty() => return None,
                    Ok(line) => parse_text(&line, received_us),
                    Err(e) => Err(e),
                };
                Some(Record {
                    location: Location::Line(n),
                    result,
                })
            }),
        ),
    };
    Ok(FileRecords { format, inner })
}

/// The format of a file from its first bytes.
fn detect(head: &[u8]) -> FileFormat {
    if head.starts_with(b"ElfFile\0") {
        return FileFormat::Evtx;
    }
    let text = String::from_utf8_lossy(head);
    let text = text.trim_start_matches('\u{feff}');
    if text.lines().take(20).any(|l| l.starts_with("#separator")) {
        return FileFormat::ZeekTsv;
    }
    let Some(first) = text.lines().find(|l| !l.trim().is_empty()) else {
        return FileFormat::Text;
    };
    if first.trim_start().starts_with('{') {
        let one_line_value = serde_json::from_str::<Value>(first.trim()).is_ok();
        return if one_line_value {
            FileFormat::JsonLines
        } else {
            FileFormat::JsonObjects
        };
    }
    FileFormat::Text
}

/// The lines of a file with their 1-based numbers; invalid UTF-8 is replaced, a read error ends the file with
/// one error item.
fn lines(file: File) -> impl Iterator<Item = (u64, Result<String, ParseError>)> + Send {
    let mut reader = BufReader::new(file);
    let mut n = 0u64;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut buf = Vec::new();
        n += 1;
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    buf.pop();
                }
                Some((n, Ok(String::from_utf8_lossy(&buf).into_owned())))
            }
            Err(e) => {
                done = true;
                Some((n, Err(ParseError::Record(format!("read error: {e}")))))
            }
        }
    })
}

/// The records of a text of JSON values one after another; each starts at the line of its first character and
/// keeps its own text as `raw`. A syntax error ends the list with one error at its line.
pub fn json_objects(text: &str, received_us: i64) -> Vec<Record> {
    let mut out = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let mut prev_end = 0usize;
    let mut line = 1u64;
    let mut counted_to = 0usize;
    let line_at = |offset: usize, line: &mut u64, counted_to: &mut usize| {
        let upto = offset.min(text.len());
        if upto > *counted_to {
            *line += text.as_bytes()[*counted_to..upto]
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64;
            *counted_to = upto;
        }
        *line
    };
    loop {
        let item = stream.next();
        let end = stream.byte_offset();
        match item {
            None => break,
            Some(Ok(value)) => {
                let slice = text.get(prev_end..end).unwrap_or("");
                let start = prev_end + (slice.len() - slice.trim_start().len());
                let at = line_at(start, &mut line, &mut counted_to);
                let raw = text.get(start..end).unwrap_or("").to_string();
                out.push(Record {
                    location: Location::Line(at),
                    result: parse_json(value, raw, received_us),
                });
                prev_end = end;
            }
            Some(Err(err)) => {
                let slice = text.get(prev_end..).unwrap_or("");
                let start = prev_end + (slice.len() - slice.trim_start().len());
                let at = line_at(start, &mut line, &mut counted_to);
                let mut e = ParseError::json(&err);
                if let ParseError::Json { line: l, .. } = &mut e {
                    // serde_json counts from the start of the text; make it relative to the record.
                    *l = (*l as u64).saturating_sub(at - 1) as usize;
                }
                out.push(Record {
                    location: Location::Line(at),
                    result: Err(e),
                });
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_objects_start_lines() {
        let text = "{\n  \"a\": 1\n}\n\n{\"b\": 2}\n  {\n\"c\":\n3}\n";
        let recs = json_objects(text, 0);
        let at: Vec<Location> = recs.iter().map(|r| r.location).collect();
        assert_eq!(
            at,
            [Location::Line(1), Location::Line(5), Location::Line(6)]
        );
        assert_eq!(
            recs[1].result.as_ref().map(|e| e.raw.as_str()),
            Ok("{\"b\": 2}")
        );
        let bad = json_objects("{\"a\":1}\n{\"b\":", 0);
        assert_eq!(bad.len(), 2);
        assert_eq!(bad[1].location, Location::Line(2));
        assert!(bad[1].result.is_err());
    }

    #[test]
    fn detection() {
        assert_eq!(detect(b"ElfFile\0rest"), FileFormat::Evtx);
        assert_eq!(detect(b"### x\n#separator \\x09\n"), FileFormat::ZeekTsv);
        assert_eq!(detect(b"\n{\"a\":1}\n{\"a\":2}\n"), FileFormat::JsonLines);
        assert_eq!(detect(b"{\n \"a\": 1\n}\n"), FileFormat::JsonObjects);
        assert_eq!(
            detect(b"Feb 25 14:34:10 belka sshd[1]: x\n"),
            FileFormat::Text
        );
        assert_eq!(Location::Record(3).to_string(), "record 3");
    }
}
