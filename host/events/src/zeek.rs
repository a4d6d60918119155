//! Zeek logs, above all `sip.log`: the TSV form (`#separator \x09`, `#fields …`, `-` unset, `(empty)` empty) read
//! statefully line by line, and the JSON form (one object per line with `ts`, `id.orig_h`, …).

use serde_json::{Map, Number, Value};

use crate::common::{ParseError, json_kind, new_event, parse_datetime_us, parse_ip, value_text};
use crate::{Event, Outcome};

/// Whether a JSON object looks like a Zeek JSON log record (has `id.orig_h`).
pub fn is_zeek(value: &Value) -> bool {
    value.get("id.orig_h").is_some() || value.get("id").and_then(|i| i.get("orig_h")).is_some()
}

/// Parses one Zeek JSON log record. The log's path (`sip`) is taken from `_path` when present, else `sip`.
pub fn parse_value(value: &Value, raw: &str, received_us: i64) -> Result<Event, ParseError> {
    let obj = value.as_object().ok_or(ParseError::NotAnObject {
        found: json_kind(value),
    })?;
    let path = obj
        .get("_path")
        .and_then(Value::as_str)
        .unwrap_or("sip")
        .to_string();
    build(obj.clone(), &path, raw, received_us)
}

/// The state of a Zeek TSV log read line by line: the header directives seen so far.
#[derive(Debug, Clone)]
pub struct ZeekTsv {
    separator: String,
    set_separator: String,
    empty_field: String,
    unset_field: String,
    path: String,
    fields: Vec<String>,
    types: Vec<String>,
}

impl Default for ZeekTsv {
    fn default() -> Self {
        Self {
            separator: "\t".into(),
            set_separator: ",".into(),
            empty_field: "(empty)".into(),
            unset_field: "-".into(),
            path: "sip".into(),
            fields: Vec::new(),
            types: Vec::new(),
        }
    }
}

/// Decodes `\xHH` escapes (Zeek writes the separator as `\x09`).
fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("\\x") {
        out.push_str(&rest[..i]);
        let hex = rest.get(i + 2..i + 4);
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(b) if b.is_ascii() => {
                out.push(char::from(b));
                rest = &rest[i + 4..];
            }
            _ => {
                out.push_str("\\x");
                rest = &rest[i + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

impl ZeekTsv {
    /// A reader with Zeek's default directives and no `#fields` yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one line: header lines (`#…`) update the state and give `None`; empty lines give `None`; a data row
    /// gives its event or why it is unusable.
    pub fn line(&mut self, line: &str, received_us: i64) -> Option<Result<Event, ParseError>> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return None;
        }
        if let Some(directive) = line.strip_prefix('#') {
            if let Some(sep) = directive.strip_prefix("separator ") {
                self.separator = unescape(sep);
                return None;
            }
            let mut parts = directive.split(self.separator.as_str());
            let name = parts.next().unwrap_or("");
            let values: Vec<String> = parts.map(str::to_string).collect();
            let first = values.first().cloned().unwrap_or_default();
            match name {
                "set_separator" => self.set_separator = first,
                "empty_field" => self.empty_field = first,
                "unset_field" => self.unset_field = first,
                "path" => self.path = first,
                "fields" => self.fields = values,
                "types" => self.types = values,
                _ => {}
            }
            return None;
        }
        Some(self.row(line, received_us))
    }

    fn row(&self, line: &str, received_us: i64) -> Result<Event, ParseError> {
        if self.fields.is_empty() {
            return Err(ParseError::ZeekNoHeader);
        }
        let cells: Vec<&str> = line.split(self.separator.as_str()).collect();
        if cells.len() != self.fields.len() {
            return Err(ParseError::ZeekColumns {
                expected: self.fields.len(),
                found: cells.len(),
            });
        }
        let mut obj = Map::new();
        for (i, (name, cell)) in self.fields.iter().zip(cells).enumerate() {
            if cell == self.unset_field {
                continue;
            }
            let ty = self.types.get(i).map_or("string", String::as_str);
            let value = if cell == self.empty_field {
                if ty.starts_with("vector") || ty.starts_with("set") {
                    Value::Array(Vec::new())
                } else {
                    Value::String(String::new())
                }
            } else if ty.starts_with("vector") || ty.starts_with("set") {
                Value::Array(
                    cell.split(self.set_separator.as_str())
                        .map(|s| Value::String(s.to_string()))
                        .collect(),
                )
            } else {
                typed(name, ty, cell)?
            };
            obj.insert(name.clone(), value);
        }
        build(obj, &self.path, line, received_us)
    }
}

/// A TSV cell as the JSON value of its Zeek type.
fn typed(name: &str, ty: &str, cell: &str) -> Result<Value, ParseError> {
    let bad = |what: &str| ParseError::InvalidField {
        field: name.to_string(),
        reason: format!("{cell:?} is not a valid {what}"),
    };
    Ok(match ty {
        "count" | "port" => Value::from(cell.parse::<u64>().map_err(|_| bad(ty))?),
        "int" => Value::from(cell.parse::<i64>().map_err(|_| bad(ty))?),
        "time" | "interval" | "double" => {
            let f = cell.parse::<f64>().map_err(|_| bad(ty))?;
            Number::from_f64(f)
                .map(Value::Number)
                .ok_or_else(|| bad(ty))?
        }
        "bool" => Value::Bool(match cell {
            "T" => true,
            "F" => false,
            _ => return Err(bad(ty)),
        }),
        _ => Value::String(cell.to_string()),
    })
}

/// Reads a field that may be dotted (`id.orig_h`) or nested (`id: {orig_h}`).
fn field<'a>(obj: &'a Map<String, Value>, dotted: &str) -> Option<&'a Value> {
    obj.get(dotted).or_else(|| {
        let (a, b) = dotted.split_once('.')?;
        obj.get(a)?.get(b)
    })
}

/// The event of a Zeek record (TSV row or JSON object) of log `path`.
fn build(
    obj: Map<String, Value>,
    path: &str,
    raw: &str,
    received_us: i64,
) -> Result<Event, ParseError> {
    let time_us = match obj.get("ts") {
        None => received_us,
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite() && f.abs() < 1e11)
            .map(|f| (f * 1e6).round() as i64)
            .ok_or_else(|| ParseError::InvalidField {
                field: "ts".into(),
                reason: "out of range".into(),
            })?,
        Some(Value::String(s)) => parse_datetime_us(s).ok_or_else(|| ParseError::InvalidField {
            field: "ts".into(),
            reason: format!("{s:?} is not a time"),
        })?,
        Some(_) => {
            return Err(ParseError::InvalidField {
                field: "ts".into(),
                reason: "not a time".into(),
            });
        }
    };
    let dataset = format!("zeek.{path}");
    let mut ev = new_event(&dataset, "zeek", Some(path), time_us, raw);
    let text = |k: &str| field(&obj, k).and_then(value_text);
    ev.source_ip = text("id.orig_h").and_then(|t| parse_ip(&t));
    ev.source_port = text("id.orig_p").and_then(|t| t.parse().ok());
    ev.destination_ip = text("id.resp_h").and_then(|t| parse_ip(&t));
    ev.destination_port = text("id.resp_p").and_then(|t| t.parse().ok());
    if let Some(method) = text("method").filter(|m| !m.is_empty()) {
        ev.action = Some(format!("sip-{}", method.to_ascii_lowercase()));
    }
    ev.user = text("request_from").and_then(|f| {
        let start = f.find("sip:")? + 4;
        let user = f[start..].split(['@', '>', ';']).next()?.to_string();
        (!user.is_empty()).then_some(user)
    });
    ev.outcome = Some(
        match text("status_code").and_then(|s| s.parse::<u16>().ok()) {
            Some(200..=299) => Outcome::Success,
            Some(401 | 407) | None => Outcome::Unknown,
            Some(400..=699) => Outcome::Failure,
            Some(_) => Outcome::Unknown,
        },
    );
    let user_agent = text("user_agent");
    ev.fields = obj;
    if let Some(ua) = user_agent {
        ev.set("user_agent.original", ua);
    }
    ev.sync_ecs_fields();
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HEADER: &str = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tsip\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tmethod\trequest_from\tuser_agent\tstatus_code\trequest_path\n#types\ttime\tstring\taddr\tport\taddr\tport\tstring\tstring\tstring\tcount\tvector[string]";

    #[test]
    fn tsv_row() {
        let mut z = ZeekTsv::new();
        for l in HEADER.lines() {
            assert!(z.line(l, 0).is_none());
        }
        let row = "1120470866.420372\tCx\t1.1.1.1\t31000\t1.1.1.2\t5060\tREGISTER\t<sip:301@x>\tfriendly-scanner\t403\t(empty)";
        let e = z.line(row, 0).expect("a row").expect("parses");
        assert_eq!(e.dataset, "zeek.sip");
        assert_eq!(e.time_us, 1_120_470_866_420_372);
        assert_eq!(e.source_port, Some(31000));
        assert_eq!(e.action.as_deref(), Some("sip-register"));
        assert_eq!(e.user.as_deref(), Some("301"));
        assert_eq!(e.outcome, Some(Outcome::Failure));
        assert_eq!(e.fields["user_agent.original"], json!("friendly-scanner"));
        assert_eq!(e.fields["request_path"], json!([]));
        assert_eq!(e.fields["id.resp_p"], json!(5060));
        assert!(matches!(
            z.line("a\tb", 0),
            Some(Err(ParseError::ZeekColumns { .. }))
        ));
        assert!(matches!(
            ZeekTsv::new().line("a\tb", 0),
            Some(Err(ParseError::ZeekNoHeader))
        ));
    }

    #[test]
    fn json_record() {
        let v = json!({"ts": 1.5, "uid": "C1", "id.orig_h": "10.0.0.1", "id.orig_p": 5060, "id.resp_h": "10.0.0.2",
                       "id.resp_p": 5060, "method": "INVITE", "status_code": 200});
        assert!(is_zeek(&v));
        let e = parse_value(&v, "{}", 0).expect("parses");
        assert_eq!(e.time_us, 1_500_000);
        assert_eq!(e.outcome, Some(Outcome::Success));
        assert_eq!(e.destination_ip, "10.0.0.2".parse().ok());
        let bad = json!({"ts": "yesterday", "id.orig_h": "1.1.1.1"});
        assert!(matches!(
            parse_value(&bad, "", 0),
            Err(ParseError::InvalidField { .. })
        ));
    }
}
