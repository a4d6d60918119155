//! Text output of the API commands: tables, times, durations.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

/// Column-aligned rows under a header, two spaces between columns; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i + 1 < columns {
                text.push_str(cell);
                let pad = widths[i] - cell.chars().count() + 2;
                text.extend(std::iter::repeat_n(' ', pad));
            } else {
                text.push_str(cell);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// A Unix-milliseconds timestamp as UTC RFC 3339 to the second (`2025-05-01T12:00:00Z`), `-` for none.
pub fn time_ms(ms: Option<i64>) -> String {
    match ms {
        Some(ms) if ms >= 0 => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms as u64))
                .to_string()
        }
        _ => "-".into(),
    }
}

/// A Unix-microseconds timestamp as UTC time of day with milliseconds (`12:00:00.123`).
pub fn clock_us(us: i64) -> String {
    let ms = (us / 1000).max(0) as u64;
    let full = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string();
    // 2025-05-01T12:00:00.123Z -> 12:00:00.123
    full.get(11..23).unwrap_or(&full).to_string()
}

/// A duration between two Unix-milliseconds timestamps, short (`350ms`, `4.2s`, `3m12s`), `-` when unknown.
pub fn span_ms(from: Option<i64>, to: Option<i64>) -> String {
    match (from, to) {
        (Some(a), Some(b)) if b >= a => short_duration(Duration::from_millis((b - a) as u64)),
        _ => "-".into(),
    }
}

/// A short human duration.
pub fn short_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// A string field of a JSON object, `-` when absent or null; numbers and booleans as text.
pub fn field(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// An integer field of a JSON object.
pub fn int(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

/// A one-line summary of a playbook version's `triggers`: the kinds it declares (`manual, webhook, schedule`).
pub fn triggers(v: &Value) -> String {
    let mut kinds = Vec::new();
    if let Value::Object(map) = v {
        for (key, value) in map {
            let declared = match value {
                Value::Null | Value::Bool(false) => false,
                Value::Array(a) => !a.is_empty(),
                Value::Object(o) => !o.is_empty() || key != "events",
                _ => true,
            };
            if declared {
                kinds.push(key.as_str());
            }
        }
    }
    if kinds.is_empty() {
        "-".into()
    } else {
        kinds.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns_and_do_not_pad_the_last() {
        let t = table(
            &["ID", "STATUS", "ERROR"],
            &[
                vec!["a".into(), "succeeded".into(), "".into()],
                vec!["bbbb".into(), "failed".into(), "boom".into()],
            ],
        );
        assert_eq!(
            t,
            "ID    STATUS     ERROR\na     succeeded\nbbbb  failed     boom\n"
        );
    }

    #[test]
    fn times_and_durations() {
        assert_eq!(time_ms(Some(0)), "1970-01-01T00:00:00Z");
        assert_eq!(time_ms(None), "-");
        assert_eq!(clock_us(3_723_456_789), "01:02:03.456");
        assert_eq!(span_ms(Some(1000), Some(1350)), "350ms");
        assert_eq!(span_ms(Some(0), Some(4200)), "4.2s");
        assert_eq!(span_ms(Some(0), Some(192_000)), "3m12s");
        assert_eq!(span_ms(Some(0), None), "-");
    }

    #[test]
    fn trigger_summaries_name_what_is_declared() {
        assert_eq!(
            triggers(
                &json!({"manual": true, "webhook": {"signature": false}, "schedules": [], "events": []})
            ),
            "manual, webhook"
        );
        assert_eq!(triggers(&json!({"manual": false})), "-");
    }
}
