//! `core.pick`: keep only some fields of a JSON value.

use qila_sdk::prelude::*;
use serde_json::{Map, Value};

use crate::path::Path;

/// The input of `core.pick`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PickInput {
    /// The value to pick fields from.
    pub value: Value,
    /// The fields to keep, by dotted path.
    pub fields: Vec<String>,
}

/// Keeps only the given fields of a JSON value, at the same paths; fields that are missing are left out.
///
/// Picking `src.ip` and `user` from `{"src": {"ip": "10.0.0.1", "port": 22}, "user": "root", "pid": 7}` gives
/// `{"src": {"ip": "10.0.0.1"}, "user": "root"}`. An index into an array keeps the array's earlier positions as
/// `null`, so that indices still line up. The output is always an object.
#[action(
    example = r#"{"value": {"src": {"ip": "10.0.0.1", "port": 22}, "user": "root", "pid": 7}, "fields": ["src.ip", "user"]}"#
)]
pub fn pick(input: PickInput) -> Result<Value, Error> {
    let mut out = Value::Object(Map::new());
    for field in &input.fields {
        let path = Path::parse(field).map_err(Error::invalid_input)?;
        if let Some(found) = path.get(&input.value) {
            // Padding is bounded by the source array, which holds at least as many items.
            path.set(&mut out, found.clone(), true)
                .map_err(Error::invalid_input)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keeps_the_shape_and_leaves_out_missing_fields() {
        let value = json!({"src": {"ip": "10.0.0.1", "port": 22}, "user": "root", "list": [{"a": 1}, {"a": 2, "b": 3}]});
        let out = pick(PickInput {
            value,
            fields: vec![
                "src.ip".into(),
                "user".into(),
                "list.1.b".into(),
                "nope".into(),
            ],
        });
        assert_eq!(
            out.unwrap(),
            json!({"src": {"ip": "10.0.0.1"}, "user": "root", "list": [null, {"b": 3}]})
        );
    }

    #[test]
    fn whole_value_fields_and_conflicts() {
        let value = json!({"a": {"b": 1}});
        let out = pick(PickInput {
            value: value.clone(),
            fields: vec!["a".into(), "a.b".into()],
        })
        .unwrap();
        assert_eq!(out, value);
        // The output is always an object: a top-level index becomes a key.
        let out = pick(PickInput {
            value: json!([1]),
            fields: vec!["0".into()],
        })
        .unwrap();
        assert_eq!(out, json!({"0": 1}));
    }
}
