//! Checks against the action catalog (`with` vs input JSON Schema) and run-time inputs.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::catalog::ActionCatalog;
use crate::diag::{Diagnostic, Diagnostics, Sink};
use crate::expr::{Part, TKind, TNode};
use crate::limits::MAX_SCHEMA_POINTER_BYTES;
use crate::playbook::{Playbook, unescape_pointer};

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

/// What stands at the place of a schema error in a step's `with`.
#[derive(PartialEq)]
enum Slot {
    /// A value known statically (or inside one).
    Known,
    /// At or under a whole-value expression: unknown type; the error is dropped.
    Expr,
    /// Exactly an interpolated string: known to be a string, nothing else.
    Interp,
}

/// The instance to validate: the template with expressions replaced by placeholders (`null` for a whole-value
/// expression, the source text for an interpolated string).
fn placeholder(n: &TNode) -> Value {
    match &n.kind {
        TKind::Const(v) => v.clone(),
        TKind::Expr(_) => Value::Null,
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
            Value::String(s)
        }
        TKind::Array(items) => Value::Array(items.iter().map(placeholder).collect()),
        TKind::Object(entries) => {
            let mut m = Map::new();
            for (k, v) in entries {
                m.insert(k.clone(), placeholder(v));
            }
            Value::Object(m)
        }
    }
}

/// The bytes of the JSON pointers of every value under `v` (whose own pointer is `at` bytes long), or
/// `None` once past `budget`: what reporting an error at each of them would cost.
fn pointer_bytes(v: &Value, at: usize, budget: usize) -> Option<usize> {
    let mut total = at;
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let digits = i.checked_ilog10().unwrap_or(0) as usize + 1;
                total += pointer_bytes(item, at + 1 + digits, budget.checked_sub(total)?)?;
            }
        }
        Value::Object(m) => {
            for (k, item) in m {
                total += pointer_bytes(item, at + 1 + k.len(), budget.checked_sub(total)?)?;
            }
        }
        _ => {}
    }
    (total <= budget).then_some(total)
}

/// Objects of a template with more entries than this get a key index when an error is looked up in them.
const SCAN_ENTRIES: usize = 16;

/// Finds what stands at a JSON pointer of a template, indexing large objects on first use (so looking up
/// every error costs the depth of its pointer, not the width of the objects on the way).
#[derive(Default)]
struct Finder<'t> {
    indexes: HashMap<*const TNode, HashMap<&'t str, &'t TNode>>,
}

impl<'t> Finder<'t> {
    fn slot(&mut self, root: &'t TNode, pointer: &str) -> Slot {
        let mut node = root;
        let mut segments = pointer.split('/').skip(1).peekable();
        loop {
            let last = segments.peek().is_none();
            let child = match &node.kind {
                TKind::Expr(_) => return Slot::Expr,
                TKind::Interp(_) if last => return Slot::Interp,
                TKind::Const(_) | TKind::Interp(_) => return Slot::Known,
                _ if last => return Slot::Known,
                TKind::Array(items) => segments
                    .next()
                    .and_then(|seg| seg.parse::<usize>().ok())
                    .and_then(|i| items.get(i)),
                TKind::Object(entries) => {
                    let key = unescape_pointer(segments.next().unwrap_or_default());
                    if entries.len() <= SCAN_ENTRIES {
                        entries.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
                    } else {
                        self.indexes
                            .entry(std::ptr::from_ref(node))
                            .or_insert_with(|| {
                                entries.iter().map(|(k, v)| (k.as_str(), v)).collect()
                            })
                            .get(key.as_ref())
                            .copied()
                    }
                }
            };
            match child {
                Some(c) => node = c,
                None => return Slot::Known,
            }
        }
    }
}

/// What the catalog gave for one action.
enum Action {
    Valid(Box<jsonschema::Validator>),
    /// Unknown plugin or action: the catalog's message, reported at every step that uses it.
    Unknown(String),
    /// The schema does not compile: reported once.
    Invalid,
}

impl Playbook {
    /// Checks every step against `catalog`: the plugin and action exist, and `with` satisfies the
    /// action's input JSON Schema. Values that contain whole-value expressions are unknown
    /// statically: schema errors at or under them are dropped (as are errors of keywords on a
    /// parent that depend on them, such as `oneOf`, which may then be reported spuriously only if
    /// a static sibling fails). Interpolated strings are known to be strings: only type errors
    /// are kept for them. Errors are reported at the offending value, or at the `with` key (the
    /// step id when there is no `with`) for the object itself, e.g. a missing required property.
    ///
    /// Each action is looked up and its schema compiled once. The work is linear in the playbook: a `with`
    /// that matches is validated once; one that does not is reported on only while the JSON pointers of
    /// the values concerned stay within [`crate::limits::MAX_SCHEMA_POINTER_BYTES`] for the document.
    pub fn check_actions(&self, catalog: &dyn ActionCatalog) -> Vec<Diagnostic> {
        let mut sink = Sink::new(&self.file);
        let mut actions: HashMap<(&str, &str), Action> = HashMap::new();
        let mut pointer_budget = MAX_SCHEMA_POINTER_BYTES;
        for step in &self.steps {
            let key = (step.plugin.as_str(), step.action.as_str());
            let action = actions.entry(key).or_insert_with(|| {
                match catalog.input_schema(&step.plugin, &step.action) {
                    Err(m) => Action::Unknown(m),
                    Ok(schema) => match jsonschema::options()
                        .should_validate_formats(true)
                        .build(&schema)
                    {
                        Ok(v) => Action::Valid(Box::new(v)),
                        Err(e) => {
                            sink.err(
                                step.uses_pos,
                                format!(
                                    "steps.{}.uses: the input schema of `{}.{}` is invalid: {e}",
                                    step.id, step.plugin, step.action
                                ),
                            );
                            Action::Invalid
                        }
                    },
                }
            });
            let validator = match action {
                Action::Valid(v) => v,
                Action::Unknown(m) => {
                    sink.err(step.uses_pos, format!("steps.{}.uses: {m}", step.id));
                    continue;
                }
                Action::Invalid => continue,
            };
            let instance = placeholder(&step.with.root);
            if validator.is_valid(&instance) {
                continue;
            }
            let Some(cost) = pointer_bytes(&instance, 0, pointer_budget) else {
                pointer_budget = 0;
                sink.err(
                    step.with_pos,
                    format!(
                        "steps.{}.with: too large to check against the input schema of `{}.{}` (its values' JSON pointers come to more than {MAX_SCHEMA_POINTER_BYTES} bytes)",
                        step.id, step.plugin, step.action
                    ),
                );
                continue;
            };
            pointer_budget -= cost;
            let mut finder = Finder::default();
            for err in validator.iter_errors(&instance) {
                let ptr = err.instance_path.as_str();
                match finder.slot(&step.with.root, ptr) {
                    Slot::Expr => continue,
                    Slot::Interp
                        if !matches!(
                            err.kind,
                            jsonschema::error::ValidationErrorKind::Type { .. }
                        ) =>
                    {
                        continue;
                    }
                    _ => {}
                }
                // The YAML position at or above the error (the `with` key for the object itself).
                let pos = step.with_spans.find(ptr).unwrap_or(step.with_pos);
                sink.err_with(pos, || {
                    let mut path = format!("steps.{}.with", step.id);
                    for seg in ptr.split('/').filter(|s| !s.is_empty()) {
                        let seg = unescape_pointer(seg);
                        if seg.bytes().all(|b| b.is_ascii_digit()) {
                            path.push_str(&format!("[{seg}]"));
                        } else {
                            path.push('.');
                            path.push_str(&seg);
                        }
                    }
                    format!("{path}: {err}")
                });
            }
        }
        sink.finish().0
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
            let hint = sink.did_you_mean(k, self.inputs.keys().map(String::as_str));
            sink.err_with(self.inputs_pos, || {
                let declared = if self.inputs.is_empty() {
                    "this playbook declares no inputs".to_owned()
                } else {
                    let names: Vec<&str> = self.inputs.keys().map(String::as_str).collect();
                    format!("declared inputs: {}", names.join(", "))
                };
                format!("unknown input `{k}`{hint}; {declared}")
            });
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
        if sink.is_empty() {
            Ok(out)
        } else {
            Err(sink.finish())
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
