//! Qila's `core` plugin: the building blocks of playbooks that need no capability at all.
//!
//! - `core.transform`: set, remove and rename fields of a JSON value;
//! - `core.filter`: keep the items of a list that match conditions;
//! - `core.pick`: keep only some fields of a JSON value;
//! - `core.echo`: return the input unchanged.
//!
//! Fields are addressed by dotted paths (`src.ip`, `tags.0`): see [`path`].

pub mod filter;
pub mod path;
pub mod pick;
pub mod transform;

use qila_sdk::prelude::*;
use serde_json::Value;

/// Returns its input unchanged.
#[action(example = r#"{"hello": "world"}"#)]
pub fn echo(input: Value) -> Result<Value, Error> {
    Ok(input)
}

qila_sdk::plugin! {
    name: "core",
    vendor: "Qila",
    description: "Building blocks for playbooks: reshape and filter JSON, wait, echo. Needs no capability.",
    actions: [transform::transform, filter::filter, pick::pick, echo],
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn plugin_checks() {
        PLUGIN.check().unwrap();
        let manifest = PLUGIN.manifest();
        assert_eq!(manifest.name, "core");
        let names: Vec<_> = manifest.actions.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["transform", "filter", "pick", "echo"]);
        for action in &manifest.actions {
            let schema: Value = serde_json::from_str(&action.input_schema).unwrap();
            assert_eq!(
                schema["$schema"],
                "https://json-schema.org/draft/2020-12/schema"
            );
            assert!(!action.summary.is_empty() && action.example_input.is_some());
        }
    }

    #[test]
    fn echo_through_the_json_boundary() {
        let input = json!({"a": [1, "two", null]});
        assert_eq!(
            PLUGIN
                .invoke_json("echo", input.clone(), &Context::default())
                .unwrap(),
            input
        );
        assert!(matches!(
            PLUGIN.invoke_json("nope", input, &Context::default()),
            Err(Error::NotFound(_))
        ));
    }
}
