//! A plugin as the SDK sees it: its manifest and its actions.

use schemars::JsonSchema;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::bindings::qila::plugin::types::{ActionInfo, Manifest};
use crate::{Context, Error};

/// A plugin: what [`plugin!`](crate::plugin!) declares as `PLUGIN` in the crate that invokes it.
///
/// The component's `describe` and `invoke` exports call [`Plugin::manifest`] and [`Plugin::invoke`]. Call them
/// natively in tests to check the manifest and to run actions through their JSON boundary, exactly as the host
/// would (input deserialised with `deny_unknown_fields` and friends, output serialised).
#[derive(Debug)]
pub struct Plugin {
    name: &'static str,
    version: &'static str,
    vendor: &'static str,
    description: &'static str,
    actions: &'static [ActionEntry],
}

impl Plugin {
    #[doc(hidden)]
    pub const fn new(
        name: &'static str,
        version: &'static str,
        vendor: &'static str,
        description: &'static str,
        actions: &'static [ActionEntry],
    ) -> Self {
        Self {
            name,
            version,
            vendor,
            description,
            actions,
        }
    }

    /// The plugin's name: the `<plugin>` of `<plugin>.<action>`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The plugin's version (its crate's `CARGO_PKG_VERSION`).
    pub fn version(&self) -> &'static str {
        self.version
    }

    /// The names of the plugin's actions, in declaration order.
    pub fn action_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.actions.iter().map(|a| a.name)
    }

    /// The manifest, with each action's JSON Schemas generated from its input and output types.
    pub fn manifest(&self) -> Manifest {
        Manifest {
            name: self.name.to_owned(),
            version: self.version.to_owned(),
            vendor: self.vendor.to_owned(),
            description: self.description.to_owned(),
            actions: self
                .actions
                .iter()
                .map(|a| ActionInfo {
                    name: a.name.to_owned(),
                    summary: a.summary.to_owned(),
                    input_schema: (a.input_schema)(),
                    output_schema: (a.output_schema)(),
                    example_input: a.example.map(str::to_owned),
                })
                .collect(),
        }
    }

    /// Runs `action` on the JSON text `input`: [`Error::NotFound`] for an unknown action, [`Error::InvalidInput`]
    /// (naming the offending field) for an input that does not deserialise, else what the action returns.
    pub fn invoke(&self, action: &str, input: &str, ctx: &Context) -> Result<String, Error> {
        let entry = self
            .actions
            .iter()
            .find(|a| a.name == action)
            .ok_or_else(|| {
                let known = self.action_names().collect::<Vec<_>>().join(", ");
                Error::not_found(format!(
                    "plugin `{}` has no action `{action}` (it has: {known})",
                    self.name
                ))
            })?;
        (entry.run)(input, ctx)
    }

    /// [`Plugin::invoke`] with JSON values: handy in tests.
    pub fn invoke_json(&self, action: &str, input: Value, ctx: &Context) -> Result<Value, Error> {
        let output = self.invoke(action, &input.to_string(), ctx)?;
        serde_json::from_str(&output).map_err(Error::from)
    }

    /// Checks what the host checks at install, and more: plugin and action names are well formed, action names
    /// are unique, every action has a summary, and every example input deserialises into its action's input type.
    /// Returns every problem found. Call it from a unit test.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if !is_valid_name(self.name) {
            problems.push(format!(
                "plugin name `{}` must be lower-case letters, digits, `-` and `_`",
                self.name
            ));
        }
        if self.actions.is_empty() {
            problems.push("the plugin has no actions".to_owned());
        }
        for (i, a) in self.actions.iter().enumerate() {
            if !is_valid_name(a.name) {
                problems.push(format!(
                    "action name `{}` must be lower-case letters, digits, `-` and `_`",
                    a.name
                ));
            }
            if self.actions[..i].iter().any(|b| b.name == a.name) {
                problems.push(format!("action `{}` is declared twice", a.name));
            }
            if a.summary.trim().is_empty() {
                problems.push(format!("action `{}` has no summary", a.name));
            }
            if let Some(example) = a.example
                && let Err(e) = (a.check_input)(example)
            {
                problems.push(format!(
                    "the example of action `{}` is not a valid input: {e}",
                    a.name
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// Whether `name` is a valid plugin or action name: non-empty, lower-case ASCII letters, digits, `-` and `_`,
/// starting with a letter.
pub(crate) fn is_valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// One action of a plugin, as `#[action]` declares it. Not constructed by hand.
#[derive(Debug)]
#[doc(hidden)]
pub struct ActionEntry {
    pub name: &'static str,
    pub summary: &'static str,
    pub example: Option<&'static str>,
    pub input_schema: fn() -> String,
    pub output_schema: fn() -> String,
    pub check_input: fn(&str) -> Result<(), Error>,
    pub run: fn(&str, &Context) -> Result<String, Error>,
}

/// The JSON Schema (draft 2020-12) of `T`, as text.
fn schema_of<T: JsonSchema>() -> String {
    schemars::SchemaGenerator::default()
        .into_root_schema_for::<T>()
        .as_value()
        .to_string()
}

fn parse_input<I: DeserializeOwned>(input: &str) -> Result<I, Error> {
    let mut de = serde_json::Deserializer::from_str(input);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            Error::invalid_input(inner.to_string())
        } else {
            Error::invalid_input(format!("at `{path}`: {inner}"))
        }
    })?;
    de.end().map_err(|e| Error::invalid_input(e.to_string()))?;
    Ok(value)
}

/// The glue `#[action]` expands to. Not a stable API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    pub use super::ActionEntry;

    pub fn input_schema<I: JsonSchema, O, E>(_: &impl Fn(I, &Context) -> Result<O, E>) -> String {
        schema_of::<I>()
    }

    pub fn output_schema<I, O: JsonSchema, E>(_: &impl Fn(I, &Context) -> Result<O, E>) -> String {
        schema_of::<O>()
    }

    pub fn check_input<I: DeserializeOwned, O, E>(
        _: &impl Fn(I, &Context) -> Result<O, E>,
        input: &str,
    ) -> Result<(), Error> {
        parse_input::<I>(input).map(drop)
    }

    pub fn run<I: DeserializeOwned, O: Serialize, E: Into<Error>>(
        action: &impl Fn(I, &Context) -> Result<O, E>,
        input: &str,
        ctx: &Context,
    ) -> Result<String, Error> {
        let input = parse_input::<I>(input)?;
        let output = action(input, ctx).map_err(Into::into)?;
        serde_json::to_string(&output)
            .map_err(|e| Error::failed(format!("the action's output is not JSON: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct In {
        a: Inner,
    }

    #[derive(serde::Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Inner {
        b: u8,
    }

    #[test]
    fn bad_input_names_the_path() {
        let e = parse_input::<In>(r#"{"a": {"b": 300}}"#).err().unwrap();
        assert!(
            matches!(&e, Error::InvalidInput(m) if m.starts_with("at `a.b`: invalid value: integer `300`")),
            "{e}"
        );
        let e = parse_input::<In>(r#"{"a": {"b": 1}, "c": 1}"#)
            .err()
            .unwrap();
        assert!(e.message().contains("unknown field `c`"), "{e}");
        let e = parse_input::<In>(r#"{"a": {"b": 1}} x"#).err().unwrap();
        assert!(e.message().contains("trailing characters"), "{e}");
    }

    #[test]
    fn schemas_are_draft_2020_12() {
        let schema: Value = serde_json::from_str(&schema_of::<In>()).unwrap();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(schema["additionalProperties"], false);
    }

    #[test]
    fn names() {
        assert!(is_valid_name("classify-ip") && is_valid_name("a_1"));
        assert!(
            !is_valid_name("")
                && !is_valid_name("Classify")
                && !is_valid_name("1a")
                && !is_valid_name("a.b")
        );
    }
}
