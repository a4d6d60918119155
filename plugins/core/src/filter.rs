//! `core.filter`: keep the items of a list that match conditions.

use std::cmp::Ordering;

use qila_sdk::prelude::*;
use regex::Regex;
use serde_json::Value;

use crate::path::Path;

/// The longest regular expression `matches` accepts, in bytes.
const MAX_PATTERN_LEN: usize = 4096;

/// The input of `core.filter`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterInput {
    /// The items to filter.
    pub items: Vec<Value>,
    /// The conditions an item must meet. With no conditions, every item is kept.
    #[serde(rename = "where")]
    pub conditions: Vec<Condition>,
    /// Whether an item must meet all the conditions (the default) or any of them.
    #[serde(default)]
    pub mode: Mode,
}

/// One condition on a field of an item.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The field, by dotted path from the item (`src.ip`, `tags.0`).
    pub field: String,
    /// How to compare the field with `value`.
    pub op: Op,
    /// The value to compare with: required by every operator but `exists`.
    #[serde(default)]
    pub value: Option<Value>,
}

/// A comparison. A missing field meets only `ne` and `exists` with `value: false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Equal (numbers compare by value: `1` equals `1.0`).
    Eq,
    /// Not equal; a missing field is not equal to anything.
    Ne,
    /// Greater than: numbers by value, strings by code point; other types never compare.
    Gt,
    /// Greater than or equal.
    Gte,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
    /// The field's string contains `value` (a string), its array has an element equal to `value`, or its object
    /// has the key `value`.
    Contains,
    /// The field equals one of the elements of `value` (an array).
    In,
    /// The field is present (even if `null`); with `value: false`, absent.
    Exists,
    /// The field is a string that matches the regular expression `value` (Rust `regex` syntax, unanchored).
    Matches,
}

/// Whether an item must meet all the conditions or any of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every condition (and with no conditions, every item is kept).
    #[default]
    All,
    /// At least one condition (and with no conditions, no item is kept).
    Any,
}

/// The output of `core.filter`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FilterOutput {
    /// The items kept, in their original order.
    pub items: Vec<Value>,
    /// How many items were kept.
    pub count: usize,
}

/// Keeps the items of a list that meet all (or any) of the given conditions on their fields.
#[action(
    example = r#"{"items": [{"ip": "10.0.0.1", "score": 90}, {"ip": "10.0.0.2", "score": 10}], "where": [{"field": "score", "op": "gte", "value": 70}]}"#
)]
pub fn filter(input: FilterInput) -> Result<FilterOutput, Error> {
    let tests = input
        .conditions
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Test::compile(c).map_err(|e| Error::invalid_input(format!("at `where[{i}]`: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let items: Vec<Value> = input
        .items
        .into_iter()
        .filter(|item| match input.mode {
            Mode::All => tests.iter().all(|t| t.matches(item)),
            Mode::Any => tests.iter().any(|t| t.matches(item)),
        })
        .collect();
    Ok(FilterOutput {
        count: items.len(),
        items,
    })
}

/// A condition checked and compiled once for all the items.
struct Test<'a> {
    path: Path<'a>,
    op: Op,
    value: Value,
    regex: Option<Regex>,
}

impl<'a> Test<'a> {
    fn compile(c: &'a Condition) -> Result<Self, String> {
        let path = Path::parse(&c.field)?;
        let value = match (c.op, &c.value) {
            (Op::Exists, None) => Value::Bool(true),
            (Op::Exists, Some(v @ Value::Bool(_))) => v.clone(),
            (Op::Exists, Some(_)) => {
                return Err("`exists` takes `value: true` or `value: false`".into());
            }
            (op, None) => return Err(format!("`{}` needs a `value`", op_name(op))),
            (Op::In, Some(v)) if !v.is_array() => return Err("`in` needs an array `value`".into()),
            (Op::Matches, Some(v)) if !v.is_string() => {
                return Err("`matches` needs a string `value`".into());
            }
            (_, Some(v)) => v.clone(),
        };
        let regex = match (&c.op, &value) {
            (Op::Matches, Value::String(pattern)) => {
                if pattern.len() > MAX_PATTERN_LEN {
                    return Err(format!(
                        "the pattern is longer than {MAX_PATTERN_LEN} bytes"
                    ));
                }
                Some(Regex::new(pattern).map_err(|e| format!("invalid regular expression: {e}"))?)
            }
            _ => None,
        };
        Ok(Self {
            path,
            op: c.op,
            value,
            regex,
        })
    }

    fn matches(&self, item: &Value) -> bool {
        let Some(field) = self.path.get(item) else {
            return match self.op {
                Op::Ne => true,
                Op::Exists => self.value == Value::Bool(false),
                _ => false,
            };
        };
        let ordering = || compare(field, &self.value);
        match self.op {
            Op::Eq => json_eq(field, &self.value),
            Op::Ne => !json_eq(field, &self.value),
            Op::Gt => ordering() == Some(Ordering::Greater),
            Op::Gte => matches!(ordering(), Some(Ordering::Greater | Ordering::Equal)),
            Op::Lt => ordering() == Some(Ordering::Less),
            Op::Lte => matches!(ordering(), Some(Ordering::Less | Ordering::Equal)),
            Op::Contains => match (field, &self.value) {
                (Value::String(s), Value::String(needle)) => s.contains(needle.as_str()),
                (Value::Array(items), v) => items.iter().any(|i| json_eq(i, v)),
                (Value::Object(map), Value::String(key)) => map.contains_key(key),
                _ => false,
            },
            Op::In => self
                .value
                .as_array()
                .is_some_and(|set| set.iter().any(|v| json_eq(field, v))),
            Op::Exists => self.value == Value::Bool(true),
            Op::Matches => match (field, &self.regex) {
                (Value::String(s), Some(re)) => re.is_match(s),
                _ => false,
            },
        }
    }
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Eq => "eq",
        Op::Ne => "ne",
        Op::Gt => "gt",
        Op::Gte => "gte",
        Op::Lt => "lt",
        Op::Lte => "lte",
        Op::Contains => "contains",
        Op::In => "in",
        Op::Exists => "exists",
        Op::Matches => "matches",
    }
}

/// JSON equality, except that numbers compare by value.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => compare(a, b) == Some(Ordering::Equal),
        _ => a == b,
    }
}

/// Numbers by value, strings by code point; anything else does not compare.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(x), Some(y), _, _) => Some(x.cmp(&y)),
                (_, _, Some(x), Some(y)) => Some(x.cmp(&y)),
                _ => x.as_f64()?.partial_cmp(&y.as_f64()?),
            }
        }
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::PLUGIN;

    fn run(input: Value) -> Result<Value, Error> {
        PLUGIN.invoke_json("filter", input, &Context::default())
    }

    fn kept(items: Value, conditions: Value) -> Vec<Value> {
        let out = run(json!({"items": items, "where": conditions})).unwrap();
        out["items"].as_array().unwrap().clone()
    }

    #[test]
    fn every_operator() {
        let items = json!([
            {"id": 1, "score": 90, "ip": "10.0.0.1", "tags": ["ssh", "tor"], "user": null},
            {"id": 2, "score": 10.5, "ip": "192.168.1.7", "tags": []},
            {"id": 3, "ip": "8.8.8.8", "meta": {"asn": 15169}},
        ]);
        let ids = |conds: Value| -> Vec<i64> {
            kept(items.clone(), conds)
                .iter()
                .map(|i| i["id"].as_i64().unwrap())
                .collect()
        };
        assert_eq!(
            ids(json!([{"field": "score", "op": "eq", "value": 90.0}])),
            [1]
        );
        assert_eq!(
            ids(json!([{"field": "score", "op": "ne", "value": 90}])),
            [2, 3]
        );
        assert_eq!(
            ids(json!([{"field": "score", "op": "gt", "value": 10.5}])),
            [1]
        );
        assert_eq!(
            ids(json!([{"field": "score", "op": "gte", "value": 10.5}])),
            [1, 2]
        );
        assert_eq!(
            ids(json!([{"field": "score", "op": "lt", "value": 50}])),
            [2]
        );
        assert_eq!(
            ids(json!([{"field": "score", "op": "lte", "value": 90}])),
            [1, 2]
        );
        assert_eq!(ids(json!([{"field": "ip", "op": "gt", "value": "8"}])), [3]);
        assert_eq!(
            ids(json!([{"field": "tags", "op": "contains", "value": "tor"}])),
            [1]
        );
        assert_eq!(
            ids(json!([{"field": "ip", "op": "contains", "value": "168"}])),
            [2]
        );
        assert_eq!(
            ids(json!([{"field": "meta", "op": "contains", "value": "asn"}])),
            [3]
        );
        assert_eq!(
            ids(json!([{"field": "id", "op": "in", "value": [1, 3, 5]}])),
            [1, 3]
        );
        assert_eq!(ids(json!([{"field": "user", "op": "exists"}])), [1]);
        assert_eq!(
            ids(json!([{"field": "user", "op": "exists", "value": false}])),
            [2, 3]
        );
        assert_eq!(
            ids(json!([{"field": "ip", "op": "matches", "value": r"^(10|192\.168)\."}])),
            [1, 2]
        );
        assert_eq!(
            ids(json!([{"field": "meta.asn", "op": "eq", "value": 15169}])),
            [3]
        );
        assert_eq!(
            ids(json!([{"field": "tags.1", "op": "eq", "value": "tor"}])),
            [1]
        );
    }

    #[test]
    fn modes_and_count() {
        let items = json!([{"a": 1}, {"b": 2}, {"a": 1, "b": 2}]);
        let conds = json!([{"field": "a", "op": "exists"}, {"field": "b", "op": "exists"}]);
        let all = run(json!({"items": items, "where": conds})).unwrap();
        assert_eq!(all, json!({"items": [{"a": 1, "b": 2}], "count": 1}));
        let any = run(json!({"items": items, "where": conds, "mode": "any"})).unwrap();
        assert_eq!(any["count"], 3);
        assert_eq!(
            run(json!({"items": items, "where": []})).unwrap()["count"],
            3
        );
    }

    #[test]
    fn bad_conditions_are_invalid_input() {
        for (cond, needle) in [
            (json!({"field": "a", "op": "eq"}), "`eq` needs a `value`"),
            (
                json!({"field": "a", "op": "in", "value": 1}),
                "`in` needs an array",
            ),
            (
                json!({"field": "a", "op": "matches", "value": "("}),
                "invalid regular expression",
            ),
            (
                json!({"field": "a", "op": "exists", "value": 1}),
                "`exists` takes",
            ),
            (
                json!({"field": "a", "op": "like", "value": 1}),
                "unknown variant `like`",
            ),
            (
                json!({"field": "", "op": "eq", "value": 1}),
                "empty segment",
            ),
        ] {
            let e = run(json!({"items": [], "where": [cond]})).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidInput(m) if m.contains(needle)),
                "{e} should contain {needle}"
            );
        }
    }
}
