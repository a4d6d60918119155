//! Playbook types and their parsing and structural validation from YAML.
//!
//! Every YAML mapping is read through [`Fields`], which rejects keys not in the mapping's allowed
//! list; adding a key (e.g. `retry`, `timeout`, `on_error`, `for_each`, `on`) means adding it to
//! the `*_KEYS` constant and reading it in the matching `parse_*` function.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use indexmap::IndexMap;
use serde_json::Value;

use crate::catalog::did_you_mean;
use crate::diag::{Diagnostic, Diagnostics, Pos, Sink};
use crate::durable::{self, ForEach, OnError, RawOnError, RetryPolicy, StepConcurrency, Triggers};
use crate::expr::{
    Expression, Ref, Split, TKind, TNode, Template, collapse_array, collapse_object,
    compile_string, split,
};
use crate::inputs::{Format, InputSpec, InputType};
use crate::reach::Upstream;
use crate::yaml::{self, Entry, Kind, Node};

const TOP_KEYS: &[&str] = &[
    "name",
    "version",
    "description",
    "on",
    "concurrency",
    "inputs",
    "steps",
    "on_failure",
    "outputs",
];
const STEP_KEYS: &[&str] = &[
    "uses",
    "needs",
    "if",
    "with",
    "description",
    "for_each",
    "retry",
    "timeout",
    "on_error",
    "concurrency",
];
const INPUT_KEYS: &[&str] = &[
    "type",
    "format",
    "description",
    "default",
    "required",
    "tlp",
];
const ID_RULE: &str = "lowercase letters, digits, `-` and `_`, starting with a letter or digit";
const INPUT_RULE: &str = "lowercase letters, digits and `_`, not starting with a digit";

/// A parsed, validated playbook. Immutable; share it as `Arc<Playbook>`.
#[derive(Debug)]
pub struct Playbook {
    /// Playbook name (`[a-z0-9][a-z0-9-_]*`).
    pub name: String,
    /// Positive version number.
    pub version: u32,
    /// Optional description.
    pub description: Option<String>,
    /// Declared inputs, in file order.
    pub inputs: IndexMap<String, InputSpec>,
    /// Steps, in file order; [`Step::needs`] and the DAG methods use indexes into this list.
    pub steps: Vec<Step>,
    /// Outputs, in file order, rendered after the run against all steps.
    pub outputs: Vec<(String, Template)>,
    /// `on_failure:`: the index of the handler step that runs once when the run fails (with
    /// `error` = the first failed step's id, kind and message).
    pub on_failure: Option<usize>,
    /// `concurrency:`: at most this many runs of this playbook at once; excess runs queue.
    pub concurrency: Option<u32>,
    /// `on:`: how runs start.
    pub triggers: Triggers,
    /// The file name given to [`Playbook::parse`] (used in diagnostics).
    pub file: String,
    /// Position of the `inputs` key (or 1:1), for run-time input diagnostics.
    pub(crate) inputs_pos: Pos,
    order: Vec<usize>,
    dependents: Vec<Vec<usize>>,
    index: HashMap<String, usize>,
    handlers: Vec<bool>,
}

/// One step: a plugin action call.
#[derive(Debug)]
pub struct Step {
    /// Step id, unique in the playbook.
    pub id: String,
    /// Plugin (pack) name: the part of `uses` before the `.`.
    pub plugin: String,
    /// Action name: the part of `uses` after the `.`.
    pub action: String,
    /// Indexes (into [`Playbook::steps`]) of the steps this one needs, in the order written.
    pub needs: Vec<usize>,
    /// `if:` condition; when it evaluates false the step is `skipped`.
    pub condition: Option<Expression>,
    /// The action's input (`with:`), `{}` when absent.
    pub with: Template,
    /// Optional description.
    pub description: Option<String>,
    /// Position of the step's id in the playbook.
    pub pos: Pos,
    /// Position of the `uses` value.
    pub uses_pos: Pos,
    /// Position of the `with` key, or of the step id when there is no `with`.
    pub with_pos: Pos,
    /// Position of every value under `with` (for schema errors).
    pub(crate) with_spans: Spans,
    /// `retry:`; `None`: one attempt.
    pub retry: Option<RetryPolicy>,
    /// `timeout:`, per attempt.
    pub timeout: Option<std::time::Duration>,
    /// `on_error:` (default [`OnError::Fail`]).
    pub on_error: OnError,
    /// `for_each:`: run once per item (`item`, `index` in `with` and `concurrency.key`).
    pub for_each: Option<ForEach>,
    /// `concurrency:`: limits shared by all work with the same key.
    pub concurrency: Option<StepConcurrency>,
    /// What `with` and `for_each` read, found on first use.
    sources: std::sync::OnceLock<crate::expr::DataSources>,
}

impl Step {
    /// The run values this step hands to its plugin: what its `with` and `for_each` read (found once).
    pub fn data_sources(&self) -> &crate::expr::DataSources {
        self.sources.get_or_init(|| {
            let mut sources = crate::expr::DataSources::default();
            sources.add_template(&self.with);
            if let Some(each) = &self.for_each {
                sources.add_template(&each.items);
            }
            sources
        })
    }
}

impl Playbook {
    /// Parses and structurally validates a playbook: YAML syntax, keys, types, names and ids,
    /// `uses` shape, the DAG (missing `needs`, cycles), expressions (compile, reference upstream
    /// steps and declared inputs). Everything that does not need the catalog. All problems are
    /// collected, sorted by position.
    ///
    /// Work and memory are linear in the document's size, within the limits of [`crate::limits`].
    pub fn parse(source: &str, file: &str) -> Result<Playbook, Diagnostics> {
        let mut sink = Sink::new(file);
        let root = match yaml::parse(source) {
            Ok(root) => root,
            Err(errors) => {
                return Err(Diagnostics(
                    errors
                        .into_iter()
                        .map(|e| Diagnostic::new(file, e.pos, e.message))
                        .collect(),
                ));
            }
        };
        let pb = parse_playbook(&root, &mut sink);
        match pb {
            Some(pb) if sink.is_empty() => Ok(pb),
            _ => Err(sink.finish()),
        }
    }

    /// Parses, validates structurally, then checks every step against `catalog` (unknown plugins
    /// and actions, `with` against the action's input schema).
    pub fn load(
        source: &str,
        file: &str,
        catalog: &dyn ActionCatalog,
    ) -> Result<Playbook, Diagnostics> {
        let pb = Playbook::parse(source, file)?;
        let diags = pb.check_actions(catalog);
        if diags.is_empty() {
            Ok(pb)
        } else {
            Err(Diagnostics(diags))
        }
    }

    /// Steps in a topological order (indexes); among ready steps, file order wins.
    pub fn topological_order(&self) -> &[usize] {
        &self.order
    }

    /// Indexes of the steps that directly need step `i` (reverse edges), ascending. Empty for an
    /// index out of range.
    pub fn dependents(&self, i: usize) -> &[usize] {
        self.dependents.get(i).map_or(&[], Vec::as_slice)
    }

    /// The index of the step with id `id`.
    pub fn step_index(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The step with id `id`.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.step_index(id).and_then(|i| self.steps.get(i))
    }

    /// Whether step `i` is a handler: named by some step's `on_error` or by `on_failure`. A
    /// handler does not run in the normal flow (it is still in [`Playbook::topological_order`]
    /// and [`Playbook::dependents`]; no step needs it); it runs when a step naming it fails, or
    /// when the run fails for `on_failure`. False for an index out of range.
    pub fn is_handler(&self, i: usize) -> bool {
        self.handlers.get(i).copied().unwrap_or(false)
    }
}

use crate::catalog::ActionCatalog;

/// `bytes` as the source text of a playbook from `file`, or a diagnostic: at the first byte past
/// [`crate::limits::MAX_SOURCE_BYTES`], or at the first sequence that is not UTF-8, naming its line, column and
/// byte offset (`file:3:7: not UTF-8 text: an invalid UTF-8 sequence (0xFF)
/// at byte 40; a playbook must be UTF-8`).
pub fn source_text<'b>(bytes: &'b [u8], file: &str) -> Result<&'b str, Diagnostics> {
    yaml::decode(bytes).map_err(|e| Diagnostics(vec![Diagnostic::new(file, e.pos, e.message)]))
}

/// Reads a mapping's fields, reporting unknown keys.
pub(crate) struct Fields<'n> {
    entries: &'n [Entry],
}

impl<'n> Fields<'n> {
    /// `path` prefixes messages (`steps.a`); empty at the top level.
    pub(crate) fn new(
        entries: &'n [Entry],
        allowed: &[&str],
        path: &str,
        sink: &mut Sink<'_>,
    ) -> Self {
        for e in entries {
            if !allowed.contains(&e.key.as_str()) {
                sink.err_with(e.key_pos, || {
                    format!(
                        "{}unknown key `{}`{}; allowed keys: {}",
                        prefix(path),
                        e.key,
                        did_you_mean(&e.key, allowed.iter().copied()),
                        allowed.join(", ")
                    )
                });
            }
        }
        Fields { entries }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&'n Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// A required field; reports it missing at `owner`.
    pub(crate) fn required(
        &self,
        key: &str,
        path: &str,
        owner: Pos,
        sink: &mut Sink<'_>,
    ) -> Option<&'n Entry> {
        let e = self.get(key);
        if e.is_none() {
            sink.err(
                owner,
                format!("{}missing required key `{key}`", prefix(path)),
            );
        }
        e
    }
}

fn prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn type_error(sink: &mut Sink<'_>, node: &Node, path: &str, expected: &str) {
    sink.err(
        node.pos,
        format!("{path}: expected {expected}, found {}", node.type_name()),
    );
}

pub(crate) fn as_str<'n>(node: &'n Node, path: &str, sink: &mut Sink<'_>) -> Option<&'n str> {
    match &node.kind {
        Kind::Str(s) => Some(s),
        _ => {
            type_error(sink, node, path, "a string");
            None
        }
    }
}

fn as_map<'n>(node: &'n Node, path: &str, sink: &mut Sink<'_>) -> Option<&'n [Entry]> {
    match &node.kind {
        Kind::Map(e) => Some(e),
        _ => {
            type_error(sink, node, path, "a mapping");
            None
        }
    }
}

/// `[a-z0-9][a-z0-9-_]*`
pub(crate) fn is_id(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// `[a-z_][a-z0-9_]*` (usable as `inputs.<name>` in expressions).
fn is_input_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A step as read, before `needs` names are resolved.
struct RawStep<'n> {
    step: Step,
    needs: Vec<(String, Pos, String)>, // name, position, path
    on_error: RawOnError,
    node: &'n Node,
}

fn parse_playbook(root: &Node, sink: &mut Sink<'_>) -> Option<Playbook> {
    let Kind::Map(top) = &root.kind else {
        sink.err(
            root.pos,
            format!("a playbook must be a mapping, found {}", root.type_name()),
        );
        return None;
    };
    let owner = top.first().map_or(root.pos, |e| e.key_pos);
    let fields = Fields::new(top, TOP_KEYS, "", sink);

    let name = fields.required("name", "", owner, sink).and_then(|e| {
        let s = as_str(&e.value, "name", sink)?;
        if is_id(s) {
            Some(s.to_owned())
        } else {
            sink.err(
                e.value.pos,
                format!("name: invalid playbook name `{s}`: use {ID_RULE}"),
            );
            None
        }
    });
    let version = fields
        .required("version", "", owner, sink)
        .and_then(|e| match e.value.kind {
            Kind::Int(i) if i > 0 && i <= i64::from(u32::MAX) => u32::try_from(i).ok(),
            _ => {
                type_error(sink, &e.value, "version", "a positive integer");
                None
            }
        });
    let description = optional_string(&fields, "description", "", sink);

    let (inputs, inputs_pos) = match fields.get("inputs") {
        Some(e) => (parse_inputs(&e.value, sink), e.key_pos),
        None => (IndexMap::new(), owner),
    };
    let concurrency = fields
        .get("concurrency")
        .and_then(|e| durable::parse_playbook_concurrency(&e.value, sink));
    let triggers = match fields.get("on") {
        Some(e) => durable::parse_triggers(&e.value, &inputs, sink),
        None => Triggers::default(),
    };

    let mut raw_steps = Vec::new();
    if let Some(e) = fields.required("steps", "", owner, sink)
        && let Some(entries) = as_map(&e.value, "steps", sink)
    {
        if entries.is_empty() {
            sink.err(e.value.pos, "steps: a playbook needs at least one step");
        }
        for entry in entries {
            if let Some(s) = parse_step(entry, sink) {
                raw_steps.push(s);
            }
        }
    }

    let mut outputs = Vec::new();
    if let Some(e) = fields.get("outputs")
        && let Some(entries) = as_map(&e.value, "outputs", sink)
    {
        for entry in entries {
            if !is_id(&entry.key) {
                sink.err(
                    entry.key_pos,
                    format!(
                        "outputs: invalid output name `{}`: use {ID_RULE}",
                        entry.key
                    ),
                );
            }
            let t = template(&entry.value, &format!("outputs.{}", entry.key), sink);
            outputs.push((entry.key.clone(), t, entry.value.pos));
        }
    }

    // Resolve `needs`.
    let index: HashMap<String, usize> = raw_steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.step.id.clone(), i))
        .collect();
    let ids: Vec<String> = raw_steps.iter().map(|s| s.step.id.clone()).collect();
    let mut need_pos: Vec<Vec<Pos>> = Vec::with_capacity(raw_steps.len());
    // `listed[j] == i + 1`: step `i` already lists `j` (a set per step, without clearing one).
    let mut listed = vec![0usize; raw_steps.len()];
    for (i, rs) in raw_steps.iter_mut().enumerate() {
        let mut positions = Vec::new();
        for (name, pos, path) in &rs.needs {
            match index.get(name) {
                Some(&j) if listed[j] == i + 1 => {
                    sink.err(*pos, format!("{path}: `{name}` is listed twice"));
                }
                Some(&j) => {
                    listed[j] = i + 1;
                    rs.step.needs.push(j);
                    positions.push(*pos);
                }
                None => {
                    let hint = sink.did_you_mean(name, ids.iter().map(String::as_str));
                    sink.err_with(*pos, || format!("{path}: unknown step `{name}`{hint}"));
                }
            }
        }
        need_pos.push(positions);
    }
    let needs: Vec<Vec<usize>> = raw_steps.iter().map(|s| s.step.needs.clone()).collect();
    let sccs = tarjan(&needs);
    let acyclic = report_cycles(&needs, &sccs, &need_pos, &ids, sink);

    // Handlers: `on_error: <id>` and `on_failure: <id>`.
    let on_failure = fields.get("on_failure").and_then(|e| {
        let id = as_str(&e.value, "on_failure", sink)?;
        let j = resolve_handler(id, e.value.pos, "on_failure", &index, &ids, sink)?;
        Some((j, e.value.pos))
    });
    let mut handlers = vec![false; raw_steps.len()];
    // Who names each handler first: (step index or None for on_failure).
    let mut named_by: Vec<Option<Option<usize>>> = vec![None; raw_steps.len()];
    if let Some((j, _)) = on_failure {
        handlers[j] = true;
        named_by[j] = Some(None);
    }
    for (i, rs) in raw_steps.iter_mut().enumerate() {
        let path = format!("steps.{}.on_error", rs.step.id);
        let resolved = match &rs.on_error {
            RawOnError::Fail => OnError::Fail,
            RawOnError::Continue => OnError::Continue,
            RawOnError::Step(name, pos) => {
                match resolve_handler(name, *pos, &path, &index, &ids, sink) {
                    Some(j) if j == i => {
                        sink.err(
                            *pos,
                            format!("{path}: a step cannot be its own handler; name another step, or use `fail` or `continue`"),
                        );
                        OnError::Fail
                    }
                    Some(j) => {
                        handlers[j] = true;
                        named_by[j].get_or_insert(Some(i));
                        OnError::Handler(j)
                    }
                    None => OnError::Fail,
                }
            }
        };
        rs.step.on_error = resolved;
    }
    let namer = |j: usize| match named_by[j] {
        Some(Some(i)) => format!("the `on_error` of step `{}`", ids[i]),
        _ => "`on_failure`".to_owned(),
    };
    for (i, rs) in raw_steps.iter().enumerate() {
        if handlers[i]
            && let (OnError::Handler(_), RawOnError::Step(name, pos)) =
                (rs.step.on_error, &rs.on_error)
        {
            sink.err(
                *pos,
                format!(
                    "steps.{}.on_error: `{}` is a handler (named by {}), so it cannot hand its own failure to handler `{name}`; use `fail` or `continue`",
                    rs.step.id,
                    rs.step.id,
                    namer(i)
                ),
            );
        }
        for (k, &j) in rs.step.needs.iter().enumerate() {
            let pos = need_pos[i].get(k).copied().unwrap_or(rs.step.pos);
            if handlers[j] && !handlers[i] {
                sink.err(
                    pos,
                    format!(
                        "steps.{}.needs: `{}` is a handler (named by {}), which runs only on failure; a step cannot need a handler",
                        rs.step.id,
                        ids[j],
                        namer(j)
                    ),
                );
            } else if raw_steps[j].step.on_error == OnError::Handler(i) {
                sink.err(
                    pos,
                    format!(
                        "steps.{}.needs: `{}` hands its failures to `{}`, so `{}` cannot need it (the failure is in `error`)",
                        rs.step.id, ids[j], rs.step.id, rs.step.id
                    ),
                );
            }
        }
    }

    // Expression references: first every question "is `steps.x` upstream of the step that reads it?",
    // answered together (linear for the usual shapes, see `reach`), then the checks.
    let ids = Ids::new(&ids, &index);
    let mut asked = Vec::new();
    for (i, rs) in raw_steps.iter().enumerate() {
        let mut ask = |e: &Expression| {
            for r in e.references() {
                if let Ref::Step { id, .. } = r
                    && let Some(&j) = index.get(&id)
                {
                    asked.push((i, j));
                }
            }
        };
        if let Some(c) = &rs.step.condition {
            ask(c);
        }
        step_expressions(&rs.step, &mut |e, _, _, _| ask(e));
    }
    let upstream = Upstream::new(&needs, &sccs, &asked);
    drop(asked);
    for (i, rs) in raw_steps.iter().enumerate() {
        let id = &rs.step.id;
        let base: &[&str] = if handlers[i] { &["error"] } else { &[] };
        let mut per_item: Vec<&str> = base.to_vec();
        if rs.step.for_each.is_some() {
            per_item.extend(["item", "index"]);
        }
        let scope = RefScope {
            ids: &ids,
            step: Some((i, &upstream)),
            inputs: &inputs,
            locals: base,
            item_in_if: false,
        };
        if let Some(c) = &rs.step.condition {
            let scope = RefScope {
                item_in_if: rs.step.for_each.is_some(),
                ..scope
            };
            let path = YPath::Step(id, "if");
            check_refs(c, cond_pos(rs.node), &path, &scope, sink);
        }
        step_expressions(&rs.step, &mut |e, pos, path, per_step_item| {
            let locals = if per_step_item { &per_item } else { base };
            check_refs(e, pos, path, &RefScope { locals, ..scope }, sink);
        });
    }
    for (name, t, _) in &outputs {
        let scope = RefScope {
            ids: &ids,
            step: None,
            inputs: &inputs,
            locals: &[],
            item_in_if: false,
        };
        for_each_expr_path(
            &t.root,
            &YPath::Field("outputs", name),
            &mut |e, pos, path| check_refs(e, pos, path, &scope, sink),
        );
    }

    let (order, dependents) = if acyclic {
        dag(&needs)
    } else {
        (Vec::new(), Vec::new())
    };

    Some(Playbook {
        name: name?,
        version: version?,
        description,
        inputs,
        steps: raw_steps.into_iter().map(|r| r.step).collect(),
        outputs: outputs.into_iter().map(|(n, t, _)| (n, t)).collect(),
        on_failure: on_failure.map(|(j, _)| j),
        concurrency,
        triggers,
        file: sink.file.to_owned(),
        inputs_pos,
        order,
        dependents,
        index,
        handlers,
    })
}

/// Resolves a handler step name (`on_error`, `on_failure`).
fn resolve_handler(
    name: &str,
    pos: Pos,
    path: &str,
    index: &HashMap<String, usize>,
    ids: &[String],
    sink: &mut Sink<'_>,
) -> Option<usize> {
    let j = index.get(name).copied();
    if j.is_none() {
        let keywords = if path == "on_failure" {
            ""
        } else {
            "`fail`, `continue` or "
        };
        let hint = sink.did_you_mean(
            name,
            ids.iter().map(String::as_str).chain(["fail", "continue"]),
        );
        sink.err_with(pos, || {
            format!(
                "{path}: unknown step `{name}`{hint}; expected {keywords}the id of a handler step"
            )
        });
    }
    j
}

fn cond_pos(step_node: &Node) -> Pos {
    match &step_node.kind {
        Kind::Map(entries) => entries
            .iter()
            .find(|e| e.key == "if")
            .map_or(step_node.pos, |e| e.value.pos),
        _ => step_node.pos,
    }
}

fn optional_string(
    fields: &Fields<'_>,
    key: &str,
    path: &str,
    sink: &mut Sink<'_>,
) -> Option<String> {
    let e = fields.get(key)?;
    as_str(&e.value, &join(path, key), sink).map(str::to_owned)
}

fn parse_inputs(node: &Node, sink: &mut Sink<'_>) -> IndexMap<String, InputSpec> {
    let mut out = IndexMap::new();
    let Some(entries) = as_map(node, "inputs", sink) else {
        return out;
    };
    for e in entries {
        let path = format!("inputs.{}", e.key);
        if !is_input_name(&e.key) {
            sink.err(
                e.key_pos,
                format!("inputs: invalid input name `{}`: use {INPUT_RULE}", e.key),
            );
        }
        let Some(map) = as_map(&e.value, &path, sink) else {
            continue;
        };
        let fields = Fields::new(map, INPUT_KEYS, &path, sink);
        let ty = fields
            .required("type", &path, e.key_pos, sink)
            .and_then(|t| {
                let s = as_str(&t.value, &format!("{path}.type"), sink)?;
                let ty = InputType::from_name(s);
                if ty.is_none() {
                    let names: Vec<&str> = InputType::ALL.iter().map(|t| t.name()).collect();
                    sink.err(
                        t.value.pos,
                        format!(
                            "{path}.type: unknown type `{s}`{}; expected one of: {}",
                            did_you_mean(s, names.iter().copied()),
                            names.join(", ")
                        ),
                    );
                }
                ty
            });
        let format = fields.get("format").and_then(|f| {
            let s = as_str(&f.value, &format!("{path}.format"), sink)?;
            let fmt = Format::from_name(s);
            if fmt.is_none() {
                let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
                sink.err(
                    f.value.pos,
                    format!(
                        "{path}.format: unknown format `{s}`{}; expected one of: {}",
                        did_you_mean(s, names.iter().copied()),
                        names.join(", ")
                    ),
                );
            } else if ty.is_some_and(|t| t != InputType::String) {
                sink.err(
                    f.value.pos,
                    format!("{path}.format: `format` applies only to string inputs"),
                );
            }
            fmt
        });
        let description = optional_string(&fields, "description", &path, sink);
        let default = fields
            .get("default")
            .map(|d| (d.value.to_json(), d.value.pos));
        let required = match fields.get("required") {
            Some(r) => match r.value.kind {
                Kind::Bool(true) if default.is_some() => {
                    sink.err(
                        r.value.pos,
                        format!("{path}.required: an input with a `default` cannot be required"),
                    );
                    false
                }
                Kind::Bool(b) => b,
                _ => {
                    type_error(sink, &r.value, &format!("{path}.required"), "a boolean");
                    false
                }
            },
            None => default.is_none(),
        };
        let tlp = fields.get("tlp").and_then(|t| {
            let s = as_str(&t.value, &format!("{path}.tlp"), sink)?;
            match s.parse::<crate::Tlp>() {
                Ok(level) => Some(level),
                Err(e) => {
                    sink.err(t.value.pos, format!("{path}.tlp: {e}"));
                    None
                }
            }
        });
        let Some(ty) = ty else { continue };
        let spec = InputSpec {
            ty,
            format,
            tlp,
            description,
            default: default.as_ref().map(|(v, _)| v.clone()),
            required,
            pos: e.key_pos,
        };
        if let Some((v, pos)) = &default
            && let Err(m) = spec.check(v)
        {
            sink.err(*pos, format!("{path}.default: {m}"));
        }
        out.insert(e.key.clone(), spec);
    }
    out
}

fn parse_step<'n>(entry: &'n Entry, sink: &mut Sink<'_>) -> Option<RawStep<'n>> {
    let id = &entry.key;
    let path = format!("steps.{id}");
    if !is_id(id) {
        sink.err(
            entry.key_pos,
            format!("steps: invalid step id `{id}`: use {ID_RULE}"),
        );
    }
    let map = as_map(&entry.value, &path, sink)?;
    let fields = Fields::new(map, STEP_KEYS, &path, sink);

    let mut uses_pos = entry.key_pos;
    let uses =
        fields
            .required("uses", &path, entry.key_pos, sink)
            .and_then(|u| {
                uses_pos = u.value.pos;
                let s = as_str(&u.value, &format!("{path}.uses"), sink)?;
                match s.split_once('.') {
                    Some((p, a)) if is_id(p) && is_id(a) => Some((p.to_owned(), a.to_owned())),
                    _ => {
                        sink.err(
                    u.value.pos,
                    format!("{path}.uses: expected `plugin.action` (each {ID_RULE}), found `{s}`"),
                );
                        None
                    }
                }
            });

    let mut needs = Vec::new();
    if let Some(n) = fields.get("needs") {
        let npath = format!("{path}.needs");
        match &n.value.kind {
            Kind::Str(s) => needs.push((s.to_string(), n.value.pos, npath)),
            Kind::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let ipath = format!("{npath}[{i}]");
                    if let Some(s) = as_str(item, &ipath, sink) {
                        needs.push((s.to_owned(), item.pos, ipath));
                    }
                }
            }
            _ => type_error(sink, &n.value, &npath, "a step id or a list of step ids"),
        }
    }

    let condition = fields
        .get("if")
        .and_then(|c| parse_condition(&c.value, &format!("{path}.if"), sink));

    let mut with_spans = Spans::default();
    let (with, with_pos) = match fields.get("with") {
        Some(w) => {
            with_spans = Spans::of(&w.value);
            let wpath = format!("{path}.with");
            if !matches!(w.value.kind, Kind::Map(_)) {
                type_error(sink, &w.value, &wpath, "a mapping");
            }
            (template(&w.value, &wpath, sink), w.key_pos)
        }
        None => (
            Template::constant(Value::Object(Default::default())),
            entry.key_pos,
        ),
    };
    let description = optional_string(&fields, "description", &path, sink);
    let retry = fields
        .get("retry")
        .and_then(|e| durable::parse_retry(&e.value, &format!("{path}.retry"), sink));
    let timeout = fields
        .get("timeout")
        .and_then(|e| durable::parse_timeout(&e.value, &format!("{path}.timeout"), sink));
    let on_error = fields
        .get("on_error")
        .and_then(|e| durable::parse_on_error(&e.value, &format!("{path}.on_error"), sink))
        .unwrap_or(RawOnError::Fail);
    let for_each = fields
        .get("for_each")
        .and_then(|e| durable::parse_for_each(&e.value, &format!("{path}.for_each"), sink));
    let concurrency = fields
        .get("concurrency")
        .and_then(|e| durable::parse_concurrency(&e.value, &format!("{path}.concurrency"), sink));
    let (plugin, action) = uses?;
    Some(RawStep {
        step: Step {
            id: id.clone(),
            plugin,
            action,
            needs: Vec::new(),
            condition,
            with,
            description,
            pos: entry.key_pos,
            uses_pos,
            with_pos,
            with_spans,
            retry,
            timeout,
            on_error: OnError::Fail,
            for_each,
            concurrency,
            sources: std::sync::OnceLock::new(),
        },
        needs,
        on_error,
        node: &entry.value,
    })
}

/// Compiles an `if:` condition: a boolean, a bare expression or one `${{ }}`.
pub(crate) fn parse_condition(node: &Node, cpath: &str, sink: &mut Sink<'_>) -> Option<Expression> {
    let src: String = match &node.kind {
        Kind::Bool(b) => b.to_string(),
        Kind::Str(s) => match split(s) {
            Ok(Split::Plain) => s.to_string(),
            Ok(Split::Whole(src)) => src.to_owned(),
            Ok(Split::Parts(_)) => {
                sink.err(
                    node.pos,
                    format!(
                        "{cpath}: a condition must be one expression, `${{{{ ... }}}}` or bare"
                    ),
                );
                return None;
            }
            Err(m) => {
                sink.err(node.pos, format!("{cpath}: {m}"));
                return None;
            }
        },
        _ => {
            type_error(sink, node, cpath, "an expression string or a boolean");
            return None;
        }
    };
    if !sink.admit_expressions(1, node.pos) {
        return None;
    }
    match Expression::compile(&src) {
        Ok(e) => Some(e),
        Err(m) => {
            sink.err(
                node.pos,
                format!("{cpath}: invalid expression `{src}`: {m}"),
            );
            None
        }
    }
}

/// The positions of a step's `with`: one per value, found by JSON pointer (for schema errors).
#[derive(Debug, Default)]
pub(crate) struct Spans {
    pos: Pos,
    children: SpanChildren,
}

#[derive(Debug, Default)]
enum SpanChildren {
    #[default]
    Leaf,
    Seq(Vec<Spans>),
    /// Sorted by key (keys are unique), for a binary search.
    Map(Vec<(String, Spans)>),
}

impl Spans {
    fn of(node: &Node) -> Spans {
        let children = match &node.kind {
            Kind::Seq(items) => SpanChildren::Seq(items.iter().map(Spans::of).collect()),
            Kind::Map(entries) => {
                let mut m: Vec<(String, Spans)> = entries
                    .iter()
                    .map(|e| (e.key.clone(), Spans::of(&e.value)))
                    .collect();
                m.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                SpanChildren::Map(m)
            }
            _ => SpanChildren::Leaf,
        };
        Spans {
            pos: node.pos,
            children,
        }
    }

    /// The position of the value at JSON pointer `pointer` (`/a/0`), or of its closest ancestor below the
    /// root; `None` for the root itself or a pointer whose first step is not there.
    pub(crate) fn find(&self, pointer: &str) -> Option<Pos> {
        let mut at = self;
        let mut found = None;
        for seg in pointer.split('/').skip(1) {
            let next = match &at.children {
                SpanChildren::Leaf => None,
                SpanChildren::Seq(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
                SpanChildren::Map(entries) => {
                    let key = unescape_pointer(seg);
                    entries
                        .binary_search_by(|(k, _)| k.as_str().cmp(&key))
                        .ok()
                        .map(|i| &entries[i].1)
                }
            };
            match next {
                Some(n) => {
                    at = n;
                    found = Some(n.pos);
                }
                None => break,
            }
        }
        found
    }
}

/// A JSON pointer segment as a key (`~1` is `/`, `~0` is `~`).
pub(crate) fn unescape_pointer(seg: &str) -> std::borrow::Cow<'_, str> {
    if seg.contains('~') {
        std::borrow::Cow::Owned(seg.replace("~1", "/").replace("~0", "~"))
    } else {
        std::borrow::Cow::Borrowed(seg)
    }
}

/// A YAML path for messages (`steps.a.with.list[0]`), made into text only when a message is reported: making
/// it for every value would cost the length of its keys times their number.
#[derive(Clone, Copy)]
pub(crate) enum YPath<'a> {
    /// A path given as text.
    Text(&'a str),
    /// `parent.field` at the top: `outputs.name`.
    Field(&'a str, &'a str),
    /// `steps.<id>.<field>`.
    Step(&'a str, &'a str),
    /// `<parent>.<key>`.
    Key(&'a YPath<'a>, &'a str),
    /// `<parent>[<index>]`.
    Index(&'a YPath<'a>, usize),
}

impl std::fmt::Display for YPath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            YPath::Text(t) => f.write_str(t),
            YPath::Field(a, b) => write!(f, "{a}.{b}"),
            YPath::Step(id, field) => write!(f, "steps.{id}.{field}"),
            YPath::Key(parent, key) => write!(f, "{parent}.{key}"),
            YPath::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// Compiles a YAML node into a template, reporting expression errors at the scalar.
pub(crate) fn template(node: &Node, path: &str, sink: &mut Sink<'_>) -> Template {
    Template {
        root: tnode(node, &YPath::Text(path), sink),
    }
}

fn tnode(node: &Node, path: &YPath<'_>, sink: &mut Sink<'_>) -> TNode {
    let kind = match &node.kind {
        Kind::Str(s) => {
            let count = match split(s) {
                Ok(Split::Whole(_)) => 1,
                Ok(Split::Parts(parts)) => parts.iter().filter(|(is_expr, _)| *is_expr).count(),
                Ok(Split::Plain) | Err(_) => 0,
            };
            if sink.admit_expressions(count, node.pos) {
                compile_string(s, |m| sink.err_with(node.pos, || format!("{path}: {m}")))
            } else {
                TKind::Const(Value::String(s.to_string()))
            }
        }
        Kind::Seq(items) => collapse_array(
            items
                .iter()
                .enumerate()
                .map(|(i, n)| tnode(n, &YPath::Index(path, i), sink))
                .collect(),
        ),
        Kind::Map(entries) => collapse_object(
            entries
                .iter()
                .map(|e| {
                    (
                        e.key.clone(),
                        tnode(&e.value, &YPath::Key(path, &e.key), sink),
                    )
                })
                .collect(),
        ),
        _ => TKind::Const(node.to_json()),
    };
    TNode {
        pos: node.pos,
        kind,
    }
}

/// Calls `f(expression, position, path)` for every expression under `n`.
pub(crate) fn for_each_expr_path(
    n: &TNode,
    path: &YPath<'_>,
    f: &mut dyn FnMut(&Expression, Pos, &YPath<'_>),
) {
    match &n.kind {
        TKind::Const(_) => {}
        TKind::Expr(e) => f(e, n.pos, path),
        TKind::Interp(parts) => {
            for p in parts {
                if let crate::expr::Part::Expr(e) = p {
                    f(e, n.pos, path);
                }
            }
        }
        TKind::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                for_each_expr_path(item, &YPath::Index(path, i), f);
            }
        }
        TKind::Object(entries) => {
            for (k, v) in entries {
                for_each_expr_path(v, &YPath::Key(path, k), f);
            }
        }
    }
}

/// Calls `f(expression, position, path, per_item)` for every expression of a step's `for_each`, `with` and
/// `concurrency.key` (not its `if`); `per_item`: where a `for_each` step binds `item` and `index`.
fn step_expressions(step: &Step, f: &mut dyn FnMut(&Expression, Pos, &YPath<'_>, bool)) {
    let id = step.id.as_str();
    if let Some(each) = &step.for_each {
        for_each_expr_path(
            &each.items.root,
            &YPath::Step(id, "for_each"),
            &mut |e, pos, path| f(e, pos, path, false),
        );
    }
    for_each_expr_path(
        &step.with.root,
        &YPath::Step(id, "with"),
        &mut |e, pos, path| f(e, pos, path, true),
    );
    if let Some(key) = step.concurrency.as_ref().and_then(|c| c.key.as_ref()) {
        for_each_expr_path(
            &key.root,
            &YPath::Step(id, "concurrency.key"),
            &mut |e, pos, path| f(e, pos, path, true),
        );
    }
}

/// Step ids, for lookups and suggestions.
struct Ids<'a> {
    ids: &'a [String],
    index: &'a HashMap<String, usize>,
    /// Sorted, to find an id that starts with a prefix.
    sorted: Vec<&'a str>,
}

impl<'a> Ids<'a> {
    fn new(ids: &'a [String], index: &'a HashMap<String, usize>) -> Self {
        let mut sorted: Vec<&str> = ids.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        Ids { ids, index, sorted }
    }

    /// The first id (in sorted order) that starts with `prefix`.
    fn starting_with(&self, prefix: &str) -> Option<&'a str> {
        let i = self.sorted.partition_point(|s| *s < prefix);
        self.sorted
            .get(i)
            .copied()
            .filter(|s| s.starts_with(prefix))
    }
}

/// What an expression may reference.
#[derive(Clone, Copy)]
struct RefScope<'a> {
    /// All step ids.
    ids: &'a Ids<'a>,
    /// `(index, reachability)` for a step's expressions, `None` for outputs.
    step: Option<(usize, &'a Upstream)>,
    /// Declared inputs.
    inputs: &'a IndexMap<String, InputSpec>,
    /// Extra roots valid here (`item`, `index`, `error`).
    locals: &'a [&'a str],
    /// The `if` of a `for_each` step: `item` and `index` get a dedicated message.
    item_in_if: bool,
}

/// Checks an expression's references against `scope`.
fn check_refs(
    e: &Expression,
    pos: Pos,
    path: &dyn std::fmt::Display,
    scope: &RefScope<'_>,
    sink: &mut Sink<'_>,
) {
    let RefScope {
        ids,
        step,
        inputs,
        locals,
        ..
    } = *scope;
    let refs = e.references();
    let mut hyphen_hint = false;
    let mut reported = HashSet::new();
    for r in &refs {
        match r {
            Ref::Step { id, field } => match ids.index.get(id.as_str()) {
                None => {
                    let dashed = ids.starting_with(&format!("{id}-"));
                    hyphen_hint |= dashed.is_some();
                    if reported.insert(format!("s:{id}")) {
                        let hint = match dashed {
                            Some(full) => {
                                format!(" (a step id with `-` must be written `steps['{full}']`)")
                            }
                            None => sink
                                .did_you_mean(id, ids.ids.iter().map(String::as_str))
                                .replacen("(did you mean `", "(did you mean `steps.", 1),
                        };
                        sink.err_with(pos, || format!("{path}: unknown step `steps.{id}`{hint}"));
                    }
                }
                Some(&j) => {
                    if let Some((i, upstream)) = step
                        && !upstream.is_upstream(i, j)
                        && reported.insert(format!("u:{id}"))
                    {
                        let msg = if i == j {
                            format!("{path}: step `{id}` cannot reference its own `steps.{id}`")
                        } else {
                            format!(
                                "{path}: `steps.{id}` is not upstream of step `{}` (add `{id}` to its `needs`)",
                                ids.ids[i]
                            )
                        };
                        sink.err(pos, msg);
                    }
                    if let Some(f) = field
                        && f != "output"
                        && f != "status"
                        && reported.insert(format!("f:{id}.{f}"))
                    {
                        sink.err(
                            pos,
                            format!(
                                "{path}: `steps.{id}.{f}`: a step has only `output` and `status`"
                            ),
                        );
                    }
                }
            },
            Ref::Input(name) => {
                if !inputs.contains_key(name) && reported.insert(format!("i:{name}")) {
                    sink.err_with(pos, || {
                        let declared = if inputs.is_empty() {
                            "no inputs are declared".to_owned()
                        } else {
                            let names: Vec<&str> = inputs.keys().map(String::as_str).collect();
                            format!("declared: {}", names.join(", "))
                        };
                        format!("{path}: undeclared input `inputs.{name}` ({declared})")
                    });
                }
            }
            Ref::Unknown(_) => {}
        }
    }
    if !hyphen_hint {
        for r in &refs {
            if let Ref::Unknown(v) = r {
                if locals.contains(&v.as_str()) {
                    continue;
                }
                if scope.item_in_if && (v == "item" || v == "index") {
                    sink.err(
                        pos,
                        format!("{path}: `{v}` is not available in `if`, which is evaluated once for the whole step before its items; filter the list in `for_each` instead"),
                    );
                    continue;
                }
                let can_use = if locals.is_empty() {
                    "expressions can use `inputs` and `steps`".to_owned()
                } else {
                    let all: Vec<String> = ["inputs", "steps"]
                        .iter()
                        .chain(locals)
                        .map(|n| format!("`{n}`"))
                        .collect();
                    format!("expressions here can use {}", all.join(", "))
                };
                let hint = match v.as_str() {
                    "item" | "index" => {
                        "; `item` and `index` exist only in the `with` and `concurrency.key` of a `for_each` step"
                    }
                    "error" => {
                        "; `error` exists only in a handler step (named by `on_error` or `on_failure`)"
                    }
                    "event" => "; `event` exists only in the `if` of an `on.event` trigger",
                    _ => "",
                };
                sink.err(
                    pos,
                    format!("{path}: unknown variable `{v}` ({can_use}{hint})"),
                );
            }
        }
    }
}

/// Reports one cycle per strongly connected component (self-loops included), named in `needs`
/// direction (`a -> b` = `a` needs `b`), starting at the earliest step in file order, at the
/// `needs` entry that starts the cycle. Returns whether the graph is acyclic.
fn report_cycles(
    needs: &[Vec<usize>],
    sccs: &[Vec<usize>],
    need_pos: &[Vec<Pos>],
    ids: &[String],
    sink: &mut Sink<'_>,
) -> bool {
    let mut acyclic = true;
    for comp in sccs {
        let is_cycle = comp.len() > 1 || comp.first().is_some_and(|&v| needs[v].contains(&v));
        if !is_cycle {
            continue;
        }
        acyclic = false;
        let members: HashSet<usize> = comp.iter().copied().collect();
        let Some(&start) = comp.iter().min() else {
            continue;
        };
        // BFS from start back to start within the component.
        let mut prev: HashMap<usize, usize> = HashMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut found = None;
        'bfs: while let Some(v) = queue.pop_front() {
            for &w in &needs[v] {
                if !members.contains(&w) {
                    continue;
                }
                if w == start {
                    found = Some(v);
                    break 'bfs;
                }
                if let std::collections::hash_map::Entry::Vacant(slot) = prev.entry(w) {
                    slot.insert(v);
                    queue.push_back(w);
                }
            }
        }
        let Some(last) = found else { continue };
        let mut path = vec![last];
        let mut cur = last;
        while cur != start {
            let Some(&p) = prev.get(&cur) else { break };
            path.push(p);
            cur = p;
        }
        path.reverse(); // start .. last
        let names: Vec<&str> = path
            .iter()
            .chain(std::iter::once(&start))
            .map(|&v| ids[v].as_str())
            .collect();
        let next = path.get(1).copied().unwrap_or(start);
        let k = needs[start].iter().position(|&w| w == next).unwrap_or(0);
        let pos = need_pos[start].get(k).copied().unwrap_or_default();
        sink.err(
            pos,
            format!(
                "steps.{}.needs: cycle in needs: {}",
                ids[start],
                names.join(" -> ")
            ),
        );
    }
    acyclic
}

/// Tarjan's strongly connected components (iterative), each listed after every component it reaches.
pub(crate) fn tarjan(g: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = g.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut out = Vec::new();
    let mut next = 0;
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut call: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut ei)) = call.last_mut() {
            if let Some(&w) = g[v].get(*ei) {
                *ei += 1;
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    call.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                call.pop();
                if let Some(&(parent, _)) = call.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut comp = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        comp.push(w);
                        if w == v {
                            break;
                        }
                    }
                    out.push(comp);
                }
            }
        }
    }
    out
}

/// Topological order (Kahn, smallest index first among ready steps) and reverse edges.
fn dag(needs: &[Vec<usize>]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let n = needs.len();
    let mut dependents = vec![Vec::new(); n];
    let mut indegree = vec![0usize; n];
    for (i, ns) in needs.iter().enumerate() {
        indegree[i] = ns.len();
        for &j in ns {
            dependents[j].push(i);
        }
    }
    for d in &mut dependents {
        d.sort_unstable();
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &d in &dependents[i] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.push(Reverse(d));
            }
        }
    }
    (order, dependents)
}
