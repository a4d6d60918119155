//! Any other JSON object: the object is kept as the fields, and the common fields are taken from ECS names
//! (`@timestamp`, `host.name`, `source.ip`, …) or common alternatives (`timestamp`, `src_ip`, …) when present.

use serde_json::{Map, Value};

use crate::common::{ParseError, json_kind, new_event, parse_datetime_us, parse_ip, value_text};
use crate::{Event, Outcome};

/// The dataset name of generic JSON events.
pub const DATASET: &str = "json";

/// Reads a field that may be a dotted key (`"host.name"`) or a nested path (`host: {name}`).
fn lookup<'a>(obj: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = obj.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut cur = obj.get(parts.next()?)?;
    for p in parts {
        cur = cur.get(p)?;
    }
    Some(cur)
}

fn first_text(obj: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| lookup(obj, k).and_then(value_text))
        .filter(|s| !s.is_empty())
}

/// A time from a JSON value: RFC 3339 text, or a number of seconds, milliseconds or microseconds since the epoch.
fn time_of(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => parse_datetime_us(s),
        Value::Number(n) => {
            let f = n.as_f64()?;
            let us = if f.abs() >= 1e14 {
                f
            } else if f.abs() >= 1e11 {
                f * 1e3
            } else {
                f * 1e6
            };
            us.is_finite().then(|| us.round() as i64)
        }
        _ => None,
    }
}

/// Parses a generic JSON object.
pub fn parse_value(value: Value, raw: &str, received_us: i64) -> Result<Event, ParseError> {
    let obj = match value {
        Value::Object(o) => o,
        other => {
            return Err(ParseError::NotAnObject {
                found: json_kind(&other),
            });
        }
    };
    let time_us = ["@timestamp", "timestamp", "time", "ts", "event.created"]
        .iter()
        .find_map(|k| lookup(&obj, k).and_then(time_of))
        .unwrap_or(received_us);
    let product = first_text(&obj, &["observer.product", "event.module"]);
    let mut ev = new_event(DATASET, "", None, time_us, raw);
    ev.logsource.product = product.map(|p| p.to_ascii_lowercase());
    ev.host = first_text(
        &obj,
        &[
            "host.name",
            "host.hostname",
            "hostname",
            "host",
            "computer",
            "Computer",
        ],
    );
    ev.source_ip = first_text(
        &obj,
        &[
            "source.ip",
            "src_ip",
            "source_ip",
            "src",
            "client.ip",
            "client_ip",
        ],
    )
    .and_then(|t| parse_ip(&t));
    ev.source_port = first_text(&obj, &["source.port", "src_port", "source_port", "sport"])
        .and_then(|t| t.parse().ok());
    ev.destination_ip = first_text(
        &obj,
        &[
            "destination.ip",
            "dest_ip",
            "dst_ip",
            "destination_ip",
            "dst",
            "server.ip",
        ],
    )
    .and_then(|t| parse_ip(&t));
    ev.destination_port = first_text(
        &obj,
        &[
            "destination.port",
            "dest_port",
            "dst_port",
            "destination_port",
            "dport",
        ],
    )
    .and_then(|t| t.parse().ok());
    ev.user = first_text(&obj, &["user.name", "user", "username", "user_name"]);
    ev.process = first_text(
        &obj,
        &["process.name", "process.executable", "process", "program"],
    );
    ev.action = first_text(&obj, &["event.action", "action"]);
    ev.outcome = first_text(&obj, &["event.outcome", "outcome"]).map(|o| {
        match o.to_ascii_lowercase().as_str() {
            "success" | "succeeded" | "ok" | "allowed" => Outcome::Success,
            "failure" | "failed" | "fail" | "denied" => Outcome::Failure,
            _ => Outcome::Unknown,
        }
    });
    ev.fields = obj;
    ev.sync_ecs_fields();
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ecs_and_aliases() {
        let v = json!({"@timestamp": "2024-01-01T00:00:00Z", "host": {"name": "web1"}, "src_ip": "1.2.3.4",
                       "user": {"name": "alice"}, "event": {"outcome": "failure"}, "msg": "x"});
        let e = parse_value(v, "raw", 5).expect("parses");
        assert_eq!(e.time_us, 1_704_067_200_000_000);
        assert_eq!(e.host.as_deref(), Some("web1"));
        assert_eq!(e.source_ip, "1.2.3.4".parse().ok());
        assert_eq!(e.user.as_deref(), Some("alice"));
        assert_eq!(e.outcome, Some(Outcome::Failure));
        assert_eq!(e.fields["msg"], json!("x"));
        assert_eq!(e.fields["source.ip"], json!("1.2.3.4"));
        assert_eq!(e.raw, "raw");
    }

    #[test]
    fn epoch_numbers_and_non_objects() {
        let e = parse_value(json!({"time": 1_700_000_000_000_i64}), "", 0).expect("parses");
        assert_eq!(e.time_us, 1_700_000_000_000_000);
        assert_eq!(
            parse_value(json!([1]), "", 0),
            Err(ParseError::NotAnObject { found: "an array" })
        );
    }
}
