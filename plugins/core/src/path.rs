//! Dotted paths into JSON values: `a.b.0.c`.
//!
//! A path is a list of at most [`MAX_SEGMENTS`] non-empty segments separated by `.`. A segment names an object's
//! key or, when the value at that point is an array, an index into it. Keys that contain `.` cannot be addressed.

use serde_json::{Map, Value};

/// The most segments a path may have.
pub const MAX_SEGMENTS: usize = 128;

/// A parsed dotted path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path<'a> {
    text: &'a str,
    segments: Vec<&'a str>,
}

impl<'a> Path<'a> {
    /// Parses `text`: an empty path, an empty segment (`a..b`, `.a`) or too many segments is an error.
    pub fn parse(text: &'a str) -> Result<Self, String> {
        let segments: Vec<&str> = text.split('.').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(format!(
                "`{text}` is not a dotted path (it has an empty segment)"
            ));
        }
        if segments.len() > MAX_SEGMENTS {
            return Err(format!("`{text}` has more than {MAX_SEGMENTS} segments"));
        }
        Ok(Self { text, segments })
    }

    /// The path as written.
    pub fn as_str(&self) -> &'a str {
        self.text
    }

    /// The value at this path, if any.
    pub fn get<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        self.segments.iter().try_fold(root, |v, seg| match v {
            Value::Object(map) => map.get(*seg),
            Value::Array(items) => items.get(index(seg)?),
            _ => None,
        })
    }

    /// Removes and returns the value at this path, if any.
    pub fn remove(&self, root: &mut Value) -> Option<Value> {
        let (last, parents) = self.segments.split_last()?;
        let parent = parents.iter().try_fold(root, |v, seg| match v {
            Value::Object(map) => map.get_mut(*seg),
            Value::Array(items) => items.get_mut(index(seg)?),
            _ => None,
        })?;
        match parent {
            Value::Object(map) => map.remove(*last),
            Value::Array(items) => {
                let i = index(last).filter(|&i| i < items.len())?;
                Some(items.remove(i))
            }
            _ => None,
        }
    }

    /// Sets the value at this path, creating what is missing on the way: an array where the next segment is a
    /// number, else an object (a `null` on the way is replaced the same way). An index may be at most the array's
    /// length (which appends) unless `pad` is true, when the array is first padded with nulls. Fails when the path
    /// goes through a string, number or boolean, or indexes an array with a key.
    pub fn set(&self, root: &mut Value, value: Value, pad: bool) -> Result<(), String> {
        set_in(root, &self.segments, value, pad)
            .map_err(|e| format!("cannot set `{}`: {e}", self.text))
    }
}

fn set_in(target: &mut Value, segments: &[&str], value: Value, pad: bool) -> Result<(), String> {
    let Some((seg, rest)) = segments.split_first() else {
        *target = value;
        return Ok(());
    };
    if target.is_null() {
        *target = if index(seg).is_some() {
            Value::Array(Vec::new())
        } else {
            Value::Object(Map::new())
        };
    }
    let slot = match target {
        Value::Object(map) => map.entry(*seg).or_insert(Value::Null),
        Value::Array(items) => {
            let i = index(seg).ok_or_else(|| format!("`{seg}` is not an index into an array"))?;
            if i > items.len() && !pad {
                return Err(format!(
                    "index {i} is past the end of an array of {} items",
                    items.len()
                ));
            }
            if i >= items.len() {
                items.resize(i + 1, Value::Null);
            }
            &mut items[i]
        }
        scalar => return Err(format!("`{seg}` would be inside the scalar {scalar}")),
    };
    set_in(slot, rest, value, pad)
}

fn index(seg: &str) -> Option<usize> {
    if seg.bytes().all(|b| b.is_ascii_digit()) {
        seg.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn get_walks_objects_and_arrays() {
        let v = json!({"a": {"b": [{"c": 1}, {"c": 2}]}});
        assert_eq!(Path::parse("a.b.1.c").unwrap().get(&v), Some(&json!(2)));
        assert_eq!(Path::parse("a.b.9.c").unwrap().get(&v), None);
        assert_eq!(Path::parse("a.b.x").unwrap().get(&v), None);
        assert!(Path::parse("a..b").is_err() && Path::parse("").is_err());
        assert!(Path::parse(&"a.".repeat(200)).is_err());
    }

    #[test]
    fn set_creates_and_refuses_scalars() {
        let mut v = json!({"a": 1, "n": null});
        Path::parse("x.y")
            .unwrap()
            .set(&mut v, json!(true), false)
            .unwrap();
        Path::parse("n.0")
            .unwrap()
            .set(&mut v, json!("first"), false)
            .unwrap();
        assert_eq!(v, json!({"a": 1, "n": ["first"], "x": {"y": true}}));
        assert!(
            Path::parse("a.b")
                .unwrap()
                .set(&mut v, json!(0), false)
                .is_err()
        );
        assert!(
            Path::parse("n.5")
                .unwrap()
                .set(&mut v, json!(0), false)
                .is_err()
        );
        Path::parse("n.2")
            .unwrap()
            .set(&mut v, json!(0), true)
            .unwrap();
        assert_eq!(v["n"], json!(["first", null, 0]));
    }

    #[test]
    fn remove_returns_the_value() {
        let mut v = json!({"a": {"b": [1, 2, 3]}});
        assert_eq!(Path::parse("a.b.1").unwrap().remove(&mut v), Some(json!(2)));
        assert_eq!(Path::parse("a.zz").unwrap().remove(&mut v), None);
        assert_eq!(v, json!({"a": {"b": [1, 3]}}));
    }
}
