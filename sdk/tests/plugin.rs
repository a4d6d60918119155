//! `#[action]` and `plugin!` from a plugin's point of view, natively.

use qila_sdk::prelude::*;
use serde_json::{Value, json};

mod actions {
    use super::*;

    /// The input of `add`.
    #[derive(Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct AddInput {
        /// The numbers to add.
        pub numbers: Vec<i64>,
    }

    /// Adds numbers
    /// that may overflow.
    ///
    /// This second paragraph is not part of the summary.
    #[action(example = r#"{"numbers": [1, 2]}"#)]
    pub fn add_numbers(input: AddInput, ctx: &Context) -> Result<i64, Overflow> {
        assert_eq!(ctx.step_id(), "test-step");
        input
            .numbers
            .iter()
            .try_fold(0i64, |a, &b| a.checked_add(b))
            .ok_or(Overflow)
    }

    /// An action's own error type, converted with `Into<Error>`.
    #[derive(Debug)]
    pub struct Overflow;

    impl From<Overflow> for Error {
        fn from(_: Overflow) -> Self {
            Error::invalid_input("the sum overflows")
        }
    }
}

/// Returns its input.
#[action(name = "echo_v2")]
fn echo(input: Value) -> Result<Value, Error> {
    Ok(input)
}

qila_sdk::plugin! {
    name: "sample",
    vendor: "Tests",
    description: concat!("A plugin ", "for tests."),
    actions: [actions::add_numbers, echo],
}

#[test]
fn manifest_from_the_declarations() {
    PLUGIN.check().unwrap();
    let m = PLUGIN.manifest();
    assert_eq!(
        (m.name.as_str(), m.vendor.as_str(), m.description.as_str()),
        ("sample", "Tests", "A plugin for tests.")
    );
    assert_eq!(m.version, env!("CARGO_PKG_VERSION"));
    let add = &m.actions[0];
    assert_eq!(add.name, "add-numbers");
    assert_eq!(add.summary, "Adds numbers that may overflow.");
    assert_eq!(add.example_input.as_deref(), Some(r#"{"numbers": [1, 2]}"#));
    let input: Value = serde_json::from_str(&add.input_schema).unwrap();
    assert_eq!(input["required"], json!(["numbers"]));
    assert_eq!(
        input["properties"]["numbers"]["description"],
        "The numbers to add."
    );
    let output: Value = serde_json::from_str(&add.output_schema).unwrap();
    assert_eq!(output["type"], "integer");
    assert_eq!(m.actions[1].name, "echo_v2");
    assert_eq!(m.actions[1].example_input, None);
}

#[test]
fn invoke_dispatches_and_maps_errors() {
    let ctx = Context::default();
    assert_eq!(
        PLUGIN.invoke("add-numbers", r#"{"numbers":[40,2]}"#, &ctx),
        Ok("42".to_owned())
    );
    assert_eq!(
        PLUGIN.invoke_json("echo_v2", json!({"a": [1]}), &ctx),
        Ok(json!({"a": [1]}))
    );
    let overflow = PLUGIN.invoke_json("add-numbers", json!({"numbers": [i64::MAX, 1]}), &ctx);
    assert_eq!(overflow, Err(Error::invalid_input("the sum overflows")));
    let bad = PLUGIN
        .invoke("add-numbers", r#"{"numbers":[1,"2"]}"#, &ctx)
        .unwrap_err();
    assert!(
        matches!(&bad, Error::InvalidInput(m) if m.starts_with("at `numbers[1]`: invalid type: string")),
        "{bad}"
    );
    let not_json = PLUGIN.invoke("add-numbers", "{", &ctx).unwrap_err();
    assert!(matches!(not_json, Error::InvalidInput(_)));
    let unknown = PLUGIN.invoke("subtract", "{}", &ctx).unwrap_err();
    assert_eq!(
        unknown,
        Error::not_found("plugin `sample` has no action `subtract` (it has: add-numbers, echo_v2)")
    );
}

#[test]
fn the_guest_export_converts_to_the_wit_types() {
    use qila_sdk::bindings::{Guest, InvocationContext, qila::plugin::types::Error as WitError};
    let ctx = InvocationContext {
        run_id: "r".into(),
        step_id: "test-step".into(),
        attempt: 3,
        idempotency_key: "k".into(),
    };
    assert_eq!(__QilaPlugin::describe().actions.len(), 2);
    let out = __QilaPlugin::invoke(
        "add-numbers".into(),
        r#"{"numbers":[1]}"#.into(),
        ctx.clone(),
    );
    assert_eq!(out.ok().as_deref(), Some("1"));
    let err = __QilaPlugin::invoke("nope".into(), "{}".into(), ctx);
    assert!(matches!(err, Err(WitError::NotFound(_))));
}
