use std::borrow::Cow;

use rsigma_eval::{Event, EventValue};
use serde_json::{Map, Value};

/// An event's detection fields as rsigma sees them: a field is found by its exact name first (so `source.ip` and
/// `Event.System.EventID`-style dotted names both work), then as a dotted path into nested objects and arrays.
/// Correlation rules record the event by `reference` rather than by a copy of its fields.
pub struct EventView<'a> {
    fields: &'a Map<String, Value>,
    reference: &'a str,
}

impl<'a> EventView<'a> {
    /// A view of `fields`, known in correlation findings as `reference`.
    pub fn new(fields: &'a Map<String, Value>, reference: &'a str) -> Self {
        Self { fields, reference }
    }
}

/// How deep a dotted path or a keyword search goes into nested values.
const MAX_DEPTH: usize = 64;

fn lookup<'v>(value: &'v Value, path: &[&str], out: &mut Vec<&'v Value>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    let Some((head, rest)) = path.split_first() else {
        out.push(value);
        return;
    };
    match value {
        Value::Object(map) => {
            if let Some(child) = map.get(*head) {
                lookup(child, rest, out, depth + 1);
            }
        }
        Value::Array(items) => {
            for item in items {
                lookup(item, path, out, depth + 1);
            }
        }
        _ => {}
    }
}

fn any_string(value: &Value, pred: &dyn Fn(&str) -> bool, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    match value {
        Value::String(s) => pred(s),
        Value::Array(items) => items.iter().any(|v| any_string(v, pred, depth + 1)),
        Value::Object(map) => map.values().any(|v| any_string(v, pred, depth + 1)),
        _ => false,
    }
}

fn all_strings<'v>(value: &'v Value, out: &mut Vec<Cow<'v, str>>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match value {
        Value::String(s) => out.push(Cow::Borrowed(s)),
        Value::Array(items) => items.iter().for_each(|v| all_strings(v, out, depth + 1)),
        Value::Object(map) => map.values().for_each(|v| all_strings(v, out, depth + 1)),
        _ => {}
    }
}

impl Event for EventView<'_> {
    fn get_field(&self, path: &str) -> Option<EventValue<'_>> {
        if let Some(value) = self.fields.get(path) {
            return Some(EventValue::from(value));
        }
        let (head, rest) = path.split_once('.')?;
        let root = self.fields.get(head)?;
        let parts: Vec<&str> = rest.split('.').collect();
        let mut found = Vec::new();
        lookup(root, &parts, &mut found, 0);
        match found.len() {
            0 => None,
            1 => Some(EventValue::from(found[0])),
            _ => Some(EventValue::Array(
                found.into_iter().map(EventValue::from).collect(),
            )),
        }
    }

    fn any_string_value(&self, pred: &dyn Fn(&str) -> bool) -> bool {
        self.fields.values().any(|v| any_string(v, pred, 0))
    }

    fn all_string_values(&self) -> Vec<Cow<'_, str>> {
        let mut out = Vec::new();
        self.fields
            .values()
            .for_each(|v| all_strings(v, &mut out, 0));
        out
    }

    /// Only the reference: correlation windows keep `{"id": reference}` per event, not a copy of the event.
    fn to_json(&self) -> Value {
        serde_json::json!({ "id": self.reference })
    }

    fn field_keys(&self) -> Vec<Cow<'_, str>> {
        self.fields
            .keys()
            .map(|k| Cow::Borrowed(k.as_str()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn exact_names_win_over_paths_and_paths_reach_into_arrays() {
        let fields = map(json!({
            "source.ip": "10.0.0.1",
            "source": {"ip": "other"},
            "dns": {"answers": [{"data": "1.1.1.1"}, {"data": "8.8.8.8"}]}
        }));
        let view = EventView::new(&fields, "r1");
        assert_eq!(
            view.get_field("source.ip")
                .and_then(|v| v.as_str().map(|s| s.into_owned())),
            Some("10.0.0.1".to_owned())
        );
        let Some(EventValue::Array(items)) = view.get_field("dns.answers.data") else {
            panic!("expected both answers");
        };
        assert_eq!(items.len(), 2);
        assert!(view.get_field("dns.missing").is_none());
        assert!(view.any_string_value(&|s| s == "8.8.8.8"));
        assert_eq!(view.to_json(), json!({"id": "r1"}));
    }
}
