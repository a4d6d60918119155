//! Actions the engine itself provides, because they wait rather than compute: `core.approval`, `core.sleep` and
//! `core.playbook`. They share the `core` namespace with the bundled `core` plugin's actions.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use qila_model::{ActionCatalog, parse_duration};
use serde_json::{Value, json};

use crate::orchestrator::PluginCatalog;

/// The plugin name of the built-in actions.
pub const BUILTIN_PLUGIN: &str = "core";

/// The longest `core.sleep`.
pub(crate) const MAX_SLEEP: Duration = Duration::from_secs(30 * 24 * 3600);

/// A built-in action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builtin {
    /// Suspends the run until an approver decides or the approval expires.
    Approval,
    /// A durable timer.
    Sleep,
    /// Starts a run of another playbook.
    Playbook,
}

impl Builtin {
    pub(crate) fn of(plugin: &str, action: &str) -> Option<Self> {
        if plugin != BUILTIN_PLUGIN {
            return None;
        }
        match action {
            "approval" => Some(Self::Approval),
            "sleep" => Some(Self::Sleep),
            "playbook" => Some(Self::Playbook),
            _ => None,
        }
    }

    fn schema(self) -> &'static Value {
        static SCHEMAS: OnceLock<[Value; 3]> = OnceLock::new();
        let schemas = SCHEMAS.get_or_init(|| {
            [
                json!({
                    "type": "object",
                    "required": ["message", "approvers"],
                    "additionalProperties": false,
                    "properties": {
                        "message": {"type": "string", "description": "What the approver is asked."},
                        "approvers": {
                            "type": "array", "minItems": 1,
                            "items": {"type": "string", "pattern": "^(role:(admin|engineer|analyst|viewer)|user:.+)$"},
                            "description": "Who may decide: `role:<role>` or `user:<token name>`."
                        },
                        "expires": {"type": "string", "description": "How long to wait, e.g. `30m`; then `default` applies."},
                        "default": {"enum": ["approve", "deny"], "description": "The decision on expiry (deny)."}
                    }
                }),
                json!({
                    "type": "object",
                    "required": ["duration"],
                    "additionalProperties": false,
                    "properties": {
                        "duration": {"type": "string", "description": "How long, e.g. `90s`, `1h` (at most 30 days)."}
                    }
                }),
                json!({
                    "type": "object",
                    "required": ["playbook"],
                    "additionalProperties": false,
                    "properties": {
                        "playbook": {"type": "string", "description": "The published playbook to run."},
                        "version": {"type": "integer", "minimum": 1, "description": "A version (the latest when absent)."},
                        "inputs": {"type": "object", "description": "The child run's inputs."},
                        "wait": {"type": "boolean", "description": "Wait for the child run to end (true)."}
                    }
                }),
            ]
        });
        match self {
            Self::Approval => &schemas[0],
            Self::Sleep => &schemas[1],
            Self::Playbook => &schemas[2],
        }
    }
}

/// Parses a duration field of a built-in action's input.
pub(crate) fn duration_field(input: &Value, field: &str) -> Result<Option<Duration>, String> {
    match input.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_duration(s)
            .map(Some)
            .map_err(|e| format!("`{field}`: {e}")),
        Some(other) => Err(format!(
            "`{field}` must be a duration such as \"30m\", not {other}"
        )),
    }
}

/// A plugin catalog with the built-in actions layered over it.
pub struct BuiltinCatalog {
    plugins: Arc<dyn PluginCatalog>,
}

impl BuiltinCatalog {
    /// `plugins` plus `core.approval`, `core.sleep` and `core.playbook`.
    pub fn over(plugins: Arc<dyn PluginCatalog>) -> Self {
        Self { plugins }
    }
}

impl ActionCatalog for BuiltinCatalog {
    fn input_schema(&self, plugin: &str, action: &str) -> Result<Value, String> {
        match Builtin::of(plugin, action) {
            Some(builtin) => Ok(builtin.schema().clone()),
            None => self.plugins.input_schema(plugin, action),
        }
    }
}

impl PluginCatalog for BuiltinCatalog {
    fn digest(&self, plugin: &str) -> Option<String> {
        self.plugins.digest(plugin)
    }

    fn max_tlp(&self, plugin: &str) -> qila_model::Tlp {
        self.plugins.max_tlp(plugin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_recognised_only_in_core() {
        assert_eq!(Builtin::of("core", "approval"), Some(Builtin::Approval));
        assert_eq!(Builtin::of("core", "transform"), None);
        assert_eq!(Builtin::of("enrich", "sleep"), None);
    }

    #[test]
    fn duration_fields_parse_or_explain() {
        let input = json!({"duration": "90s", "bad": 3});
        assert_eq!(
            duration_field(&input, "duration").unwrap(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(duration_field(&input, "absent").unwrap(), None);
        assert!(duration_field(&input, "bad").unwrap_err().contains("`bad`"));
    }
}
