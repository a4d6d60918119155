//! `core.transform`: set, remove and rename fields of a JSON value.

use std::collections::BTreeMap;

use qila_sdk::prelude::*;
use serde_json::Value;

use crate::path::Path;

/// The input of `core.transform`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformInput {
    /// The value to transform.
    pub value: Value,
    /// Fields to move, from dotted path to dotted path; a missing source is skipped. Applied first.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Fields to set, by dotted path, creating missing objects on the way. Applied second, in path order.
    #[serde(default)]
    pub set: BTreeMap<String, Value>,
    /// Fields to remove, by dotted path; a missing field is skipped. Applied last.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Renames, sets and removes fields of a JSON value, in that order, and returns the result.
#[action(
    example = r#"{"value": {"src": "10.0.0.1", "raw": "..."}, "rename": {"src": "source.ip"}, "set": {"source.seen": true}, "remove": ["raw"]}"#
)]
pub fn transform(input: TransformInput) -> Result<Value, Error> {
    let mut value = input.value;
    for (from, to) in &input.rename {
        let (from, to) = (parse(from)?, parse(to)?);
        if let Some(moved) = from.remove(&mut value) {
            to.set(&mut value, moved, false)
                .map_err(Error::invalid_input)?;
        }
    }
    for (path, new) in input.set {
        parse(&path)?
            .set(&mut value, new, false)
            .map_err(Error::invalid_input)?;
    }
    for path in &input.remove {
        parse(path)?.remove(&mut value);
    }
    Ok(value)
}

fn parse(path: &str) -> Result<Path<'_>, Error> {
    Path::parse(path).map_err(Error::invalid_input)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::PLUGIN;

    fn run(input: Value) -> Result<Value, Error> {
        PLUGIN.invoke_json("transform", input, &Context::default())
    }

    #[test]
    fn renames_then_sets_then_removes() {
        let out = run(json!({
            "value": {"src": "10.0.0.1", "raw": "x", "tags": ["a"]},
            "rename": {"src": "source.ip", "absent": "nowhere"},
            "set": {"source.seen": true, "tags.1": "b"},
            "remove": ["raw", "not.there"],
        }))
        .unwrap();
        assert_eq!(
            out,
            json!({"source": {"ip": "10.0.0.1", "seen": true}, "tags": ["a", "b"]})
        );
    }

    #[test]
    fn without_operations_returns_the_value() {
        assert_eq!(run(json!({"value": [1, 2]})).unwrap(), json!([1, 2]));
    }

    #[test]
    fn errors_are_invalid_input() {
        let e = run(json!({"value": {"a": "text"}, "set": {"a.b": 1}})).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidInput(m) if m.contains("cannot set `a.b`")),
            "{e}"
        );
        let e = run(json!({"value": {}, "set": {"a..b": 1}})).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)));
        let e = run(json!({"value": {}, "sett": {}})).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidInput(m) if m.contains("unknown field `sett`")),
            "{e}"
        );
        let e = run(json!({"set": {}})).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidInput(m) if m.contains("missing field `value`")),
            "{e}"
        );
    }
}
