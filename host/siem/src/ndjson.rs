//! The body of `POST /api/v1/events`: NDJSON (one JSON object per line) or a plain-text log, split into records.

use crate::Record;

/// Splits an NDJSON (or plain-text log) body into records, each with where it is (`line N`, from 1): a line that
/// is a JSON string is that log line; any other line is parsed as it is (a JSON object, or a log line); blank
/// lines are skipped. A line that is not UTF-8 becomes [`Record::Undecodable`] with the byte offset, in the
/// line, of its first bad byte (the SIEM keeps it as a dead letter). A `\r` before the `\n` is dropped.
pub fn records(body: &[u8]) -> Vec<(String, Record)> {
    body.split(|&b| b == b'\n')
        .enumerate()
        .filter_map(|(i, line)| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                return None;
            }
            let location = format!("line {}", i + 1);
            let record = match std::str::from_utf8(line) {
                Ok(text) if text.starts_with('"') => match serde_json::from_str::<String>(text) {
                    Ok(inner) => Record::Text(inner),
                    Err(_) => Record::Text(text.to_owned()),
                },
                Ok(text) => Record::Text(text.to_owned()),
                Err(e) => Record::Undecodable(
                    String::from_utf8_lossy(line).into_owned(),
                    format!("not UTF-8 (byte {})", e.valid_up_to()),
                ),
            };
            Some((location, record))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_lines_become_records_with_their_line_numbers() {
        let body = b"{\"a\":1}\n\n\"Feb 25 14:34:10 belka sshd[1]: hi\"\r\nplain line\n\xff\xfe\n";
        let got = records(body);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].0, "line 1");
        assert!(matches!(&got[1].1, Record::Text(t) if t.starts_with("Feb 25")));
        assert_eq!(got[2].0, "line 4");
        assert!(matches!(&got[3].1, Record::Undecodable(_, reason) if reason.contains("UTF-8")));
    }
}
