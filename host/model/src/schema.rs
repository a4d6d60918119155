//! Checks against the action catalog (`with` vs input JSON Schema) and run-time inputs.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::catalog::{ActionCatalog, did_you_mean};
use crate::diag::{Diagnostic, Diagnostics, Sink};
use crate::expr::{Part, TKind, TNode};
use crate::playbook::Playbook;

/// A value as short JSON text for messages (at most ~60 characters).
pub(crate) fn short_json(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// What stands at one JSON pointer of a step's `with`.
struct Slot {
    kind: SlotKind,
}

#[derive(PartialEq)]
enum SlotKind {
    /// A value known statically.
    Known,
    /// A whole-value expression: unknown type; errors at or under it are dropped.
    Expr,
    /// An interpolated string: known to be a string, nothing else.
    Interp,
}

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Builds the instance to validate (expressions replaced by placeholders) and the pointer map.
fn placeholder(n: &TNode, pointer: &str, slots: &mut HashMap<String, Slot>) -> Value {
    let (kind, value) = match &n.kind {
        TKind::Const(v) => (SlotKind::Known, v.clone()),
        TKind::Expr(_) => (SlotKind::Expr, Value::Null),
        TKind::Interp(parts) => {
            let mut s = String::new();
            for p in parts {
                match p {
                    Part::Lit(l) => s.push_str(l),
                    Part::Expr(e) => {
                        s.push_str("${{ ");
                        s.push_str(e.source());
                        s.push_str(" }}");
                    }
                }
            }
            (SlotKind::Interp, Value::String(s))
        }
        TKind::Array(items) => {
            let v = items
                .iter()
                .enumerate()
                .map(|(i, item)| placeholder(item, &format!("{pointer}/{i}"), slots))
                .collect();
            (SlotKind::Known, Value::Array(v))
        }
        TKind::Object(entries) => {
            let mut m = Map::new();
            for (k, v) in entries {
                let child = placeholder(v, &format!("{pointer}/{}", escape_pointer(k)), slots);
                m.insert(k.clone(), child);
            }
            (SlotKind::Known, Value::Object(m))
        }
    };
    slots.insert(pointer.to_owned(), Slot { kind });
    value
}

impl Playbook {
    /// Checks every step against `catalog`: the plugin and action exist, and `with` satisfies the
    /// action's input JSON Schema. Values that contain whole-value expressions are unknown
    /// statically: schema errors at or under them are dropped (as are errors of keywords on a
    /// parent that depend on them, such as `oneOf`, which may then be reported spuriously only if
    /// a static sibling fails). Interpolated strings are known to be strings: only type errors
    /// are kept for them. Errors are reported at the offending value, or at the `with` key (the
    /// step id when there is no `with`) for the object itself, e.g. a missing required property.
    pub fn check_actions(&self, catalog: &dyn ActionCatalog) -> Vec<Diagnostic> {
        let mut sink = Sink::new(&self.file);
        let mut validators: HashMap<(&str, &str), Option<jsonschema::Validator>> = HashMap::new();
        for step in &self.steps {
            let schema = match catalog.input_schema(&step.plugin, &step.action) {
                Ok(s) => s,
                Err(m) => {
                    sink.err(step.uses_pos, format!("steps.{}.uses: {m}", step.id));
                    continue;
                }
            };
            let key = (step.plugin.as_str(), step.action.as_str());
            let validator = validators.entry(key).or_insert_with(|| {
                match jsonschema::options()
                    .should_validate_formats(true)
                    .build(&schema)
                {
                    Ok(v) => Some(v),
                    Err(e) => {
                        sink.err(
                            step.uses_pos,
                            format!(
                                "steps.{}.uses: the input schema of `{}.{}` is invalid: {e}",
                                step.id, step.plugin, step.action
                            ),
                        );
                        None
                    }
                }
            });
            let Some(validator) = validator else { continue };
            let mut slots = HashMap::new();
            let base = format!("steps.{}.with", step.id);
            let instance = placeholder(&step.with.root, "", &mut slots);
            let unknown: Vec<&String> = slots
                .iter()
                .filter(|(_, s)| s.kind == SlotKind::Expr)
                .map(|(p, _)| p)
                .collect();
            for err in validator.iter_errors(&instance) {
                let ptr = err.instance_path.as_str();
                if unknown
                    .iter()
                    .any(|p| ptr == p.as_str() || ptr.starts_with(&format!("{p}/")))
                {
                    continue;
                }
                // The template node at or above the error tells whether it is interpolated.
                let mut at = ptr;
                let slot = loop {
                    if let Some(s) = slots.get(at) {
                        break Some(s);
                    }
                    match at.rfind('/') {
                        Some(i) => at = &at[..i],
                        None => break None,
                    }
                };
                if slot.is_some_and(|s| s.kind == SlotKind::Interp && at == ptr)
                    && !matches!(
                        err.kind,
                        jsonschema::error::ValidationErrorKind::Type { .. }
                    )
                {
                    continue;
                }
                // The YAML position at or above the error (the `with` key for the object itself).
                let mut at = ptr;
                let pos = loop {
                    if at.is_empty() {
                        break step.with_pos;
                    }
                    if let Some(p) = step.with_spans.get(at) {
                        break *p;
                    }
                    match at.rfind('/') {
                        Some(i) => at = &at[..i],
                        None => break step.with_pos,
                    }
                };
                let mut path = base.clone();
                for seg in ptr.split('/').filter(|s| !s.is_empty()) {
                    let seg = seg.replace("~1", "/").replace("~0", "~");
                    if seg.bytes().all(|b| b.is_ascii_digit()) {
                        path.push_str(&format!("[{seg}]"));
                    } else {
                        path.push('.');
                        path.push_str(&seg);
                    }
                }
                sink.err(pos, format!("{path}: {err}"));
            }
        }
        let mut d = Diagnostics(sink.diags);
        d.sort();
        d.0
    }

    /// Resolves run-time inputs: applies defaults, sets optional inputs without a default to
    /// `null`, and reports unknown names, missing required inputs and values that do not match the
    /// declared type or format. Diagnostics point at the input's declaration (unknown names at the
    /// `inputs` key). `provided` holds JSON values; convert `KEY=VALUE` strings with
    /// [`Playbook::coerce_cli_input`] first.
    pub fn resolve_inputs(
        &self,
        provided: Map<String, Value>,
    ) -> Result<Map<String, Value>, Diagnostics> {
        let mut sink = Sink::new(&self.file);
        let mut provided = provided;
        let mut unknown: Vec<&String> = provided
            .keys()
            .filter(|k| !self.inputs.contains_key(*k))
            .collect();
        unknown.sort();
        for k in unknown {
            let declared = if self.inputs.is_empty() {
                "this playbook declares no inputs".to_owned()
            } else {
                format!(
                    "declared inputs: {}",
                    self.inputs
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            sink.err(
                self.inputs_pos,
                format!(
                    "unknown input `{k}`{}; {declared}",
                    did_you_mean(k, self.inputs.keys().map(String::as_str))
                ),
            );
        }
        let mut out = Map::new();
        for (name, spec) in &self.inputs {
            match provided.remove(name) {
                Some(v) => match spec.check(&v) {
                    Ok(()) => {
                        out.insert(name.clone(), v);
                    }
                    Err(m) => sink.err(spec.pos, format!("input `{name}`: {m}")),
                },
                None => match &spec.default {
                    Some(d) => {
                        out.insert(name.clone(), d.clone());
                    }
                    None if spec.required => sink.err(
                        spec.pos,
                        format!("missing required input `{name}` ({})", spec.describe()),
                    ),
                    None => {
                        out.insert(name.clone(), Value::Null);
                    }
                },
            }
        }
        if sink.diags.is_empty() {
            Ok(out)
        } else {
            let mut d = Diagnostics(sink.diags);
            d.sort();
            Err(d)
        }
    }

    /// Converts a command-line `--input KEY=VALUE` string to JSON by the declared type of `key`
    /// (see [`crate::InputSpec::coerce`]); an undeclared key stays a string (and
    /// [`Playbook::resolve_inputs`] reports it).
    pub fn coerce_cli_input(&self, key: &str, raw: &str) -> Value {
        match self.inputs.get(key) {
            Some(spec) => spec.coerce(raw),
            None => Value::String(raw.to_owned()),
        }
    }
}
