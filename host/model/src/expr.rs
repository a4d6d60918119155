//! `${{ expr }}` expressions and templates.
//!
//! # Language
//! An expression is a [minijinja](https://docs.rs/minijinja) expression (Jinja2 syntax): attribute
//! access (`steps.intel.output.score`), subscripts (`steps['geo-ip'].output`), comparisons,
//! `and`/`or`/`not`, `x if cond else y`, literals (`'a'`, `1`, `[1, 2]`, `{'k': 1}`), filters
//! (`| lower`, `| length`, `| default('x')`, `| tojson`, ...) and tests (`is defined`, `is none`).
//! A step id containing `-` must be written with a subscript: `steps['geo-ip']`.
//!
//! # Context
//! Every expression sees `inputs` (the run's resolved inputs) and `steps`, a map from a step id to
//! `{ output, status }` where `status` is `"succeeded"`, `"failed"` or `"skipped"`. There is no `env`.
//! Some places add a root (bound with [`EvalContext::with_local`]): `item` and `index` in the
//! `with` and `concurrency.key` of a `for_each` step, `error` (`{ step, kind, message }`) in a
//! handler step, `event` in an `on.event` trigger's `if`.
//!
//! # Strictness
//! Expressions use minijinja's strict undefined behaviour: a missing attribute or variable is an
//! error as soon as it is used (compared, printed, iterated, returned) rather than a silent empty
//! value, so typos fail loudly. Use `x is defined` or `x | default(...)` for optional fields.
//!
//! # Templates
//! A string that is exactly one `${{ ... }}` (surrounding whitespace allowed) is a *whole-value*
//! expression and keeps the JSON type of its result (number, bool, null, list, object). Any other
//! string containing `${{` is *interpolated*: each expression is rendered as text, where a string is
//! inserted as is, a number or boolean in JSON form (`42`, `1.5`, `true`), `null`/`none` as the
//! empty string, and a list or object as compact JSON. An undefined result is an error in both
//! forms. There is no escape for a literal `${{`; write `${{ '${{' }}`.
//!
//! # Where evaluation happens
//! Expressions are compiled here (to check them when a playbook is validated) but never evaluated in this
//! process by `qila`: [`Template::render`] and [`Expression::eval_bool`] send the expressions, with only the
//! inputs and step results they read, to an [`Evaluator`] — in `qila`, the sandboxed evaluator of
//! `qila-sandbox`, a WebAssembly instance with a memory cap and fuel — and assemble the answer. A failure names the
//! place in the template (`with.v: expression exceeded its memory limit of 16 MiB`).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock, OnceLock, RwLock};

pub use qila_expr::{Evaluator, Failure, FailureKind};
use qila_expr::{Piece, Segment};
use serde_json::Value;

use crate::diag::Pos;

static GLOBALS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    qila_expr::environment()
        .globals()
        .map(|(name, _)| name.to_owned())
        .collect()
});

/// A failed evaluation: where in the template, what kind of failure, and a one-line message.
///
/// Displayed as `<at>: <message>`, e.g. ``with.v: expression exceeded its memory limit of 16 MiB`` or
/// ``if: `${{ steps.a.output.x }}` is undefined (...)``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct EvalError {
    /// The place: the template's root (`with`, `if`, `for_each`, `outputs.<name>`, `concurrency.key`, `on.event.if`)
    /// and the path inside it (`with.body.text`, `with.ips[2]`).
    pub at: String,
    /// What kind of failure.
    pub kind: FailureKind,
    /// What happened.
    pub message: String,
}

/// A compiled expression (the text between `${{` and `}}`). Cheap to clone the source; `Send + Sync`.
pub struct Expression {
    source: String,
    compiled: qila_expr::Compiled,
    reads: OnceLock<Reads>,
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expression({:?})", self.source)
    }
}

/// A reference found in an expression (see [`Expression::references`]'s limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ref {
    /// `steps.<id>` with the attribute after it, if any (`output`, `status`).
    Step { id: String, field: Option<String> },
    /// `inputs.<name>`.
    Input(String),
    /// A root variable that is neither `inputs`, `steps` nor a global function.
    Unknown(String),
}

impl Expression {
    /// Compiles an expression (without the `${{ }}`); the error is minijinja's message.
    pub fn compile(source: &str) -> Result<Expression, String> {
        let compiled = qila_expr::compile(source)?;
        Ok(Expression {
            source: source.trim().to_owned(),
            compiled,
            reads: OnceLock::new(),
        })
    }

    /// The expression's source text (trimmed, without `${{ }}`).
    pub fn source(&self) -> &str {
        &self.source
    }

    fn reads(&self) -> Reads {
        let mut reads = Reads::default();
        reads.add(self);
        reads
    }

    /// Evaluates to a JSON value (the whole-value semantics) with `evaluator`; `at` names the place in errors.
    pub async fn eval(
        &self,
        at: &str,
        ctx: &EvalContext,
        evaluator: &dyn Evaluator,
    ) -> Result<Value, EvalError> {
        let pieces = [Piece::Value(self.source.clone())];
        let mut answer = run(evaluator, ctx, self.reads(), &pieces, |_| at.to_owned()).await?;
        parse_answer(at, answer.pop())
    }

    /// Evaluates as a condition with Jinja truthiness (`false`, `none`, `0`, `''`, `[]`, `{}` are false;
    /// everything else is true). An undefined result is an error, not `false`.
    pub async fn eval_bool(
        &self,
        at: &str,
        ctx: &EvalContext,
        evaluator: &dyn Evaluator,
    ) -> Result<bool, EvalError> {
        let pieces = [Piece::Condition(self.source.clone())];
        let answer = run(evaluator, ctx, self.reads(), &pieces, |_| at.to_owned()).await?;
        match answer.first().map(String::as_str) {
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            other => Err(EvalError {
                at: at.to_owned(),
                kind: FailureKind::Unavailable,
                message: format!("the evaluator answered {other:?} for a condition"),
            }),
        }
    }

    /// References to `steps.<id>`, `inputs.<name>` and unknown root variables.
    ///
    /// Found from minijinja's `undeclared_variables` (attribute chains such as
    /// `steps.a.output.x`) plus a scan of the source for constant subscripts (`steps['a']`,
    /// `inputs["x"]`). A dynamic subscript (`steps[name]`) cannot be checked statically and is
    /// accepted.
    pub(crate) fn references(&self) -> Vec<Ref> {
        let mut out = Vec::new();
        let mut vars: Vec<String> = self
            .compiled
            .undeclared_variables(true)
            .into_iter()
            .collect();
        vars.sort();
        for var in vars {
            let mut parts = var.split('.');
            let root = parts.next().unwrap_or_default();
            let second = parts.next();
            match (root, second) {
                ("steps", Some(id)) => out.push(Ref::Step {
                    id: id.to_owned(),
                    field: parts.next().map(str::to_owned),
                }),
                ("inputs", Some(name)) => out.push(Ref::Input(name.to_owned())),
                ("steps" | "inputs", None) => {}
                (other, _) if GLOBALS.contains(other) => {}
                (other, _) => out.push(Ref::Unknown(other.to_owned())),
            }
        }
        scan_subscripts(&self.source, &mut out);
        out
    }
}

/// The run values an expression or template reads: which inputs and which steps' results.
///
/// A step hands what its `with` (and `for_each`) read to its plugin, so this is what the engine checks against
/// the plugin's TLP limit. It is conservative: `inputs` or `steps` used whole or through a subscript, and
/// `error` (a handler's view of a failed step), count as reading all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataSources {
    /// Inputs read by name.
    pub inputs: std::collections::BTreeSet<String>,
    /// Steps whose results are read, by id.
    pub steps: std::collections::BTreeSet<String>,
    /// Every input may be read.
    pub all_inputs: bool,
    /// Every step's result may be read.
    pub all_steps: bool,
}

impl DataSources {
    /// Adds what `expr` reads.
    pub fn add_expression(&mut self, expr: &Expression) {
        for var in expr.compiled.undeclared_variables(true) {
            let mut parts = var.split('.');
            match (parts.next().unwrap_or_default(), parts.next()) {
                ("steps", Some(id)) => {
                    self.steps.insert(id.to_owned());
                }
                ("inputs", Some(name)) => {
                    self.inputs.insert(name.to_owned());
                }
                ("steps" | "error", None) | ("error", Some(_)) => self.all_steps = true,
                ("inputs", None) => self.all_inputs = true,
                _ => {}
            }
        }
    }

    /// Adds what every expression of `template` reads.
    pub fn add_template(&mut self, template: &Template) {
        fn walk(node: &TNode, out: &mut DataSources) {
            match &node.kind {
                TKind::Const(_) => {}
                TKind::Expr(e) => out.add_expression(e),
                TKind::Interp(parts) => parts.iter().for_each(|p| {
                    if let Part::Expr(e) = p {
                        out.add_expression(e);
                    }
                }),
                TKind::Array(items) => items.iter().for_each(|n| walk(n, out)),
                TKind::Object(fields) => fields.iter().for_each(|(_, n)| walk(n, out)),
            }
        }
        walk(&template.root, self);
    }
}

/// Finds `steps['id']` (optionally followed by `.field` or `['field']`) and `inputs['name']`
/// outside string literals.
fn scan_subscripts(src: &str, out: &mut Vec<Ref>) {
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut prev_sig: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' || c == '"' {
            i = skip_string(&chars, i).1;
            prev_sig = Some(c);
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            let after_dot = prev_sig == Some('.');
            prev_sig = Some('a');
            if after_dot || (ident != "steps" && ident != "inputs") {
                continue;
            }
            if let Some((key, next)) = const_subscript(&chars, i) {
                if ident == "inputs" {
                    out.push(Ref::Input(key));
                } else {
                    let field = attr_after(&chars, next);
                    out.push(Ref::Step { id: key, field });
                }
            }
            continue;
        }
        if !c.is_whitespace() {
            prev_sig = Some(c);
        }
        i += 1;
    }
}

/// Skips a string literal starting at `i` (a quote); returns its content and the index after it.
fn skip_string(chars: &[char], i: usize) -> (String, usize) {
    let quote = chars[i];
    let mut j = i + 1;
    let mut content = String::new();
    while j < chars.len() {
        match chars[j] {
            '\\' => {
                if let Some(&n) = chars.get(j + 1) {
                    content.push(n);
                }
                j += 2;
            }
            c if c == quote => return (content, j + 1),
            c => {
                content.push(c);
                j += 1;
            }
        }
    }
    (content, j)
}

fn skip_ws(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

/// `[ 'key' ]` at `i` (after optional whitespace): the key and the index after `]`.
fn const_subscript(chars: &[char], i: usize) -> Option<(String, usize)> {
    let i = skip_ws(chars, i);
    if chars.get(i) != Some(&'[') {
        return None;
    }
    let i = skip_ws(chars, i + 1);
    if !matches!(chars.get(i), Some('\'' | '"')) {
        return None;
    }
    let (key, j) = skip_string(chars, i);
    let j = skip_ws(chars, j);
    (chars.get(j) == Some(&']')).then_some((key, j + 1))
}

/// `.field` or `['field']` at `i`.
fn attr_after(chars: &[char], i: usize) -> Option<String> {
    let j = skip_ws(chars, i);
    if chars.get(j) == Some(&'.') {
        let k = skip_ws(chars, j + 1);
        let mut end = k;
        while end < chars.len() && (chars[end].is_alphanumeric() || chars[end] == '_') {
            end += 1;
        }
        return (end > k).then(|| chars[k..end].iter().collect());
    }
    const_subscript(chars, i).map(|(k, _)| k)
}

/// What an expression reads of the run, for the context sent to the evaluator: inputs and step results by name,
/// or all of them when `inputs` or `steps` is used whole or through a subscript. (Unlike [`DataSources`], `error`
/// does not count as reading every step: it is a root of its own.)
#[derive(Debug, Clone, Default)]
struct Reads {
    inputs: std::collections::BTreeSet<String>,
    steps: std::collections::BTreeSet<String>,
    all_inputs: bool,
    all_steps: bool,
}

impl Reads {
    fn add(&mut self, expr: &Expression) {
        let reads = expr.reads.get_or_init(|| {
            let mut r = Reads::default();
            for var in expr.compiled.undeclared_variables(true) {
                let mut parts = var.split('.');
                match (parts.next().unwrap_or_default(), parts.next()) {
                    ("steps", Some(id)) => {
                        r.steps.insert(id.to_owned());
                    }
                    ("inputs", Some(name)) => {
                        r.inputs.insert(name.to_owned());
                    }
                    ("steps", None) => r.all_steps = true,
                    ("inputs", None) => r.all_inputs = true,
                    _ => {}
                }
            }
            r
        });
        self.inputs.extend(reads.inputs.iter().cloned());
        self.steps.extend(reads.steps.iter().cloned());
        self.all_inputs |= reads.all_inputs;
        self.all_steps |= reads.all_steps;
    }
}

/// A value serialised to JSON once (a step's output when the step ended, a run's inputs) and shared by every
/// evaluation that reads it: cloning is a reference-count bump, and building an evaluation's context copies text
/// instead of serialising again.
#[derive(Debug, Clone)]
pub struct SharedValue(Arc<str>);

impl SharedValue {
    /// Serialises a JSON value.
    pub fn new(value: &Value) -> Self {
        SharedValue(Arc::from(value.to_string()))
    }

    /// The JSON text.
    pub fn as_json(&self) -> &str {
        &self.0
    }
}

/// The data an expression sees: `inputs`, `steps.<id>.{output,status}` and the extra roots of some places.
///
/// Built once per run and updated as steps finish. Cloning is cheap (reference-count bumps); a clone, like a
/// context derived with [`EvalContext::with_local`], shares the step results: a step recorded through any of them is
/// seen by all.
#[derive(Debug, Clone)]
pub struct EvalContext {
    steps: Arc<RwLock<BTreeMap<String, StepResult>>>,
    inputs: SharedValue,
    /// Extra roots (`item`, `index`, `error`, `event`), in insertion order.
    locals: Vec<(String, SharedValue)>,
}

#[derive(Debug, Clone)]
struct StepResult {
    status: String,
    output: SharedValue,
}

impl EvalContext {
    /// A context with the run's resolved inputs and no step results yet.
    pub fn new(inputs: &serde_json::Map<String, Value>) -> Self {
        Self::with_shared_inputs(&SharedValue(Arc::from(
            serde_json::to_string(inputs).unwrap_or_else(|_| "{}".to_owned()),
        )))
    }

    /// A context from inputs already serialised with [`SharedValue::new`] (a JSON object).
    pub fn with_shared_inputs(inputs: &SharedValue) -> Self {
        EvalContext {
            steps: Arc::default(),
            inputs: inputs.clone(),
            locals: Vec::new(),
        }
    }

    /// A context that sees everything `self` sees plus the root variable `name` bound to `value`
    /// (the engine binds `item` and `index` in a `for_each` step, `error` in a handler, `event` in
    /// a trigger condition). Binding a name again replaces it; `inputs` and `steps` cannot be
    /// replaced. Cheap: the step results are shared, not copied, so steps recorded later through
    /// either context are visible in both.
    pub fn with_local(&self, name: &str, value: &Value) -> EvalContext {
        self.with_local_shared(name, &SharedValue::new(value))
    }

    /// [`EvalContext::with_local`] with an already serialised value.
    pub fn with_local_shared(&self, name: &str, value: &SharedValue) -> EvalContext {
        let mut ctx = self.clone();
        if name == "inputs" || name == "steps" {
            return ctx;
        }
        match ctx.locals.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value.clone(),
            None => ctx.locals.push((name.to_owned(), value.clone())),
        }
        ctx
    }

    /// Records a step's status (`succeeded`, `failed`, `skipped`) and output (serialised here;
    /// prefer [`EvalContext::set_step_shared`] to reuse a serialisation).
    pub fn set_step(&mut self, id: &str, status: &str, output: &Value) {
        self.set_step_shared(id, status, &SharedValue::new(output));
    }

    /// Records a step's status and an already serialised output (a cheap reference-count bump).
    pub fn set_step_shared(&mut self, id: &str, status: &str, output: &SharedValue) {
        // A poisoned lock means a panic while inserting, which cannot leave the map inconsistent.
        let mut map = self.steps.write().unwrap_or_else(|p| p.into_inner());
        map.insert(
            id.to_owned(),
            StepResult {
                status: status.to_owned(),
                output: output.clone(),
            },
        );
    }

    /// The JSON object of root variables an evaluation that reads `reads` needs: the locals, the inputs (or `{}`)
    /// and the step results it names (or all of them).
    fn context_json(&self, reads: &Reads) -> String {
        let steps = self.steps.read().unwrap_or_else(|p| p.into_inner());
        let mut size = 64
            + self
                .locals
                .iter()
                .map(|(n, v)| n.len() + v.0.len() + 4)
                .sum::<usize>();
        if reads.all_inputs || !reads.inputs.is_empty() {
            size += self.inputs.0.len();
        }
        // The steps read, in the map's order: every step, or only those named (looked up, not searched for: a
        // run's context holds every step that ended, an expression names a few).
        let read: Vec<(&String, &StepResult)> = if reads.all_steps {
            steps.iter().collect()
        } else {
            reads
                .steps
                .iter()
                .filter_map(|id| steps.get_key_value(id.as_str()))
                .collect()
        };
        size += read
            .iter()
            .map(|(id, r)| id.len() + r.output.0.len() + 40)
            .sum::<usize>();
        let mut out = String::with_capacity(size);
        out.push('{');
        for (name, value) in &self.locals {
            push_json_string(&mut out, name);
            out.push(':');
            out.push_str(&value.0);
            out.push(',');
        }
        out.push_str("\"inputs\":");
        if reads.all_inputs || !reads.inputs.is_empty() {
            out.push_str(&self.inputs.0);
        } else {
            out.push_str("{}");
        }
        out.push_str(",\"steps\":{");
        let mut first = true;
        for (id, result) in read {
            if !first {
                out.push(',');
            }
            first = false;
            push_json_string(&mut out, id);
            out.push_str(":{\"output\":");
            out.push_str(&result.output.0);
            out.push_str(",\"status\":");
            push_json_string(&mut out, &result.status);
            out.push('}');
        }
        out.push_str("}}");
        out
    }
}

/// Appends `s` as a JSON string.
fn push_json_string(out: &mut String, s: &str) {
    // Writing a `str` as JSON cannot fail.
    let _ = write!(out, "{}", Value::from(s));
}

/// Sends `pieces` with the data `reads` names to `evaluator`; `place` names the place of a piece in errors.
async fn run(
    evaluator: &dyn Evaluator,
    ctx: &EvalContext,
    reads: Reads,
    pieces: &[Piece],
    place: impl Fn(Option<usize>) -> String,
) -> Result<Vec<String>, EvalError> {
    let context = ctx.context_json(&reads);
    let answer = evaluator
        .evaluate(&context, pieces)
        .await
        .map_err(|f| EvalError {
            at: place(f.piece),
            kind: f.kind,
            message: f.message,
        })?;
    if answer.len() != pieces.len() {
        return Err(EvalError {
            at: place(None),
            kind: FailureKind::Unavailable,
            message: format!(
                "the evaluator answered {} values for {} expressions",
                answer.len(),
                pieces.len()
            ),
        });
    }
    Ok(answer)
}

/// Parses one answer of the evaluator (a JSON text).
fn parse_answer(at: &str, text: Option<String>) -> Result<Value, EvalError> {
    let text = text.unwrap_or_default();
    serde_json::from_str(&text).map_err(|e| EvalError {
        at: at.to_owned(),
        kind: FailureKind::Unavailable,
        message: format!("the evaluator's answer is not JSON: {e}"),
    })
}

/// A JSON value tree with compiled expressions at the leaves (a step's `with`, an output).
#[derive(Debug)]
pub struct Template {
    pub(crate) root: TNode,
}

/// A template node with its source position.
#[derive(Debug)]
pub(crate) struct TNode {
    pub pos: Pos,
    pub kind: TKind,
}

#[derive(Debug)]
pub(crate) enum TKind {
    /// A subtree without expressions.
    Const(Value),
    /// A whole-value expression.
    Expr(Expression),
    /// A string with embedded expressions.
    Interp(Vec<Part>),
    Array(Vec<TNode>),
    Object(Vec<(String, TNode)>),
}

#[derive(Debug)]
pub(crate) enum Part {
    Lit(String),
    Expr(Expression),
}

/// How a string splits into literal text and `${{ }}` expression sources.
#[derive(Debug, PartialEq)]
pub(crate) enum Split<'a> {
    /// No `${{`.
    Plain,
    /// Exactly one expression spanning the whole (trimmed) string.
    Whole(&'a str),
    /// Literal and expression pieces (`true` = expression).
    Parts(Vec<(bool, &'a str)>),
}

/// Splits a string into literal and expression pieces. Inside `${{ }}`, string literals and
/// balanced `{ }` are skipped when looking for the closing `}}`.
pub(crate) fn split(s: &str) -> Result<Split<'_>, String> {
    if !s.contains("${{") {
        return Ok(Split::Plain);
    }
    let mut parts = Vec::new();
    let mut rest_start = 0;
    let bytes = s.as_bytes();
    let mut i = 0;
    while let Some(off) = s[i..].find("${{") {
        let open = i + off;
        if open > rest_start {
            parts.push((false, &s[rest_start..open]));
        }
        let body_start = open + 3;
        let mut j = body_start;
        let mut depth = 0usize;
        let mut quote: Option<u8> = None;
        let mut close = None;
        while j < bytes.len() {
            let c = bytes[j];
            if let Some(q) = quote {
                if c == b'\\' {
                    j += 2;
                    continue;
                }
                if c == q {
                    quote = None;
                }
                j += 1;
                continue;
            }
            match c {
                b'\'' | b'"' => quote = Some(c),
                b'{' => depth += 1,
                b'}' if depth > 0 => depth -= 1,
                b'}' if bytes.get(j + 1) == Some(&b'}') => {
                    close = Some(j);
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        let Some(close) = close else {
            return Err("unterminated `${{` (missing `}}`)".to_owned());
        };
        parts.push((true, &s[body_start..close]));
        i = close + 2;
        rest_start = i;
    }
    if rest_start < s.len() {
        parts.push((false, &s[rest_start..]));
    }
    let exprs = parts.iter().filter(|p| p.0).count();
    if exprs == 1 {
        let lits_blank = parts.iter().all(|(e, t)| *e || t.trim().is_empty());
        if lits_blank && let Some((_, src)) = parts.iter().find(|p| p.0) {
            return Ok(Split::Whole(src));
        }
    }
    Ok(Split::Parts(parts))
}

impl Template {
    /// Compiles a JSON value: expressions inside any string are compiled. Errors are messages
    /// naming the failing expression.
    pub fn from_json(value: &Value) -> Result<Template, Vec<String>> {
        let mut errors = Vec::new();
        let root = compile_json(value, &mut errors);
        if errors.is_empty() {
            Ok(Template { root })
        } else {
            Err(errors)
        }
    }

    /// A template that always renders `value`.
    pub fn constant(value: Value) -> Template {
        Template {
            root: TNode {
                pos: Pos::default(),
                kind: TKind::Const(value),
            },
        }
    }

    /// Whether the template contains no expression (renders to a constant).
    pub fn is_static(&self) -> bool {
        matches!(self.root.kind, TKind::Const(_))
    }

    /// Renders the template against `ctx` with `evaluator` (see the module docs for typing rules): every
    /// expression of the template goes to the evaluator in one request, with only the data they read. `at` is the
    /// template's place (`with`, `outputs.kind`); errors name it with the path inside (`with.body.text`).
    pub async fn render(
        &self,
        at: &str,
        ctx: &EvalContext,
        evaluator: &dyn Evaluator,
    ) -> Result<Value, EvalError> {
        if let TKind::Const(v) = &self.root.kind {
            return Ok(v.clone());
        }
        let mut request = Request::default();
        request.collect(&self.root, &mut at.to_owned());
        let place = |piece: Option<usize>| {
            piece
                .and_then(|i| request.paths.get(i).cloned())
                .unwrap_or_else(|| at.to_owned())
        };
        let answers = run(
            evaluator,
            ctx,
            request.reads.clone(),
            &request.pieces,
            place,
        )
        .await?;
        let mut answers = answers.into_iter().zip(&request.paths);
        assemble(&self.root, &mut answers)
    }
}

/// The pieces of a template, their places and what they read, in the order of a depth-first walk.
#[derive(Default)]
struct Request {
    pieces: Vec<Piece>,
    paths: Vec<String>,
    reads: Reads,
}

impl Request {
    fn collect(&mut self, node: &TNode, path: &mut String) {
        match &node.kind {
            TKind::Const(_) => {}
            TKind::Expr(e) => {
                self.reads.add(e);
                self.pieces.push(Piece::Value(e.source.clone()));
                self.paths.push(path.clone());
            }
            TKind::Interp(parts) => {
                let segments = parts
                    .iter()
                    .map(|p| match p {
                        Part::Lit(s) => Segment::Literal(s.clone()),
                        Part::Expr(e) => {
                            self.reads.add(e);
                            Segment::Expression(e.source.clone())
                        }
                    })
                    .collect();
                self.pieces.push(Piece::Text(segments));
                self.paths.push(path.clone());
            }
            TKind::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    let _ = write!(path, "[{i}]");
                    self.collect(item, path);
                    path.truncate(len);
                }
            }
            TKind::Object(entries) => {
                for (key, value) in entries {
                    let len = path.len();
                    push_key(path, key);
                    self.collect(value, path);
                    path.truncate(len);
                }
            }
        }
    }
}

/// Appends `.key`, or `["key"]` for a key that is not a plain name.
fn push_key(path: &mut String, key: &str) {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        path.push('.');
        path.push_str(key);
    } else {
        path.push('[');
        push_json_string(path, key);
        path.push(']');
    }
}

/// Rebuilds the template's value from the evaluator's answers, in the order [`Request::collect`] sent them.
fn assemble<'a>(
    node: &TNode,
    answers: &mut impl Iterator<Item = (String, &'a String)>,
) -> Result<Value, EvalError> {
    Ok(match &node.kind {
        TKind::Const(v) => v.clone(),
        TKind::Expr(_) | TKind::Interp(_) => match answers.next() {
            Some((text, at)) => parse_answer(at, Some(text))?,
            None => parse_answer("", None)?,
        },
        TKind::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| assemble(i, answers))
                .collect::<Result<_, _>>()?,
        ),
        TKind::Object(entries) => {
            let mut map = serde_json::Map::with_capacity(entries.len());
            for (k, v) in entries {
                map.insert(k.clone(), assemble(v, answers)?);
            }
            Value::Object(map)
        }
    })
}

fn compile_json(value: &Value, errors: &mut Vec<String>) -> TNode {
    let pos = Pos::default();
    let kind = match value {
        Value::String(s) => compile_string(s, |m| errors.push(m)),
        Value::Array(items) => {
            let items: Vec<TNode> = items.iter().map(|v| compile_json(v, errors)).collect();
            collapse_array(items)
        }
        Value::Object(map) => {
            let entries: Vec<(String, TNode)> = map
                .iter()
                .map(|(k, v)| (k.clone(), compile_json(v, errors)))
                .collect();
            collapse_object(entries)
        }
        other => TKind::Const(other.clone()),
    };
    TNode { pos, kind }
}

/// Compiles one string; errors go to `err` (and the node becomes a constant string).
pub(crate) fn compile_string(s: &str, mut err: impl FnMut(String)) -> TKind {
    match split(s) {
        Ok(Split::Plain) => TKind::Const(Value::String(s.to_owned())),
        Ok(Split::Whole(src)) => match Expression::compile(src) {
            Ok(e) => TKind::Expr(e),
            Err(m) => {
                err(format!("invalid expression `${{{{{src}}}}}`: {m}"));
                TKind::Const(Value::String(s.to_owned()))
            }
        },
        Ok(Split::Parts(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (is_expr, text) in parts {
                if is_expr {
                    match Expression::compile(text) {
                        Ok(e) => out.push(Part::Expr(e)),
                        Err(m) => err(format!("invalid expression `${{{{{text}}}}}`: {m}")),
                    }
                } else {
                    out.push(Part::Lit(text.to_owned()));
                }
            }
            TKind::Interp(out)
        }
        Err(m) => {
            err(m);
            TKind::Const(Value::String(s.to_owned()))
        }
    }
}

/// An array node, or a constant if no item has an expression.
pub(crate) fn collapse_array(items: Vec<TNode>) -> TKind {
    if items.iter().all(|i| matches!(i.kind, TKind::Const(_))) {
        TKind::Const(Value::Array(
            items
                .into_iter()
                .map(|i| match i.kind {
                    TKind::Const(v) => v,
                    _ => Value::Null, // unreachable: checked above
                })
                .collect(),
        ))
    } else {
        TKind::Array(items)
    }
}

/// An object node, or a constant if no value has an expression.
pub(crate) fn collapse_object(entries: Vec<(String, TNode)>) -> TKind {
    if entries
        .iter()
        .all(|(_, v)| matches!(v.kind, TKind::Const(_)))
    {
        TKind::Const(Value::Object(
            entries
                .into_iter()
                .map(|(k, v)| match v.kind {
                    TKind::Const(v) => (k, v),
                    _ => (k, Value::Null), // unreachable: checked above
                })
                .collect(),
        ))
    } else {
        TKind::Object(entries)
    }
}

/// Evaluation for the crate's own tests: with the unbounded in-process evaluator (the expressions are the tests'
/// own), driven to completion at once.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Drives a future that is ready at once (the unbounded evaluator's).
    pub(crate) fn now<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    impl Template {
        pub(crate) fn render_now(&self, ctx: &EvalContext) -> Result<Value, EvalError> {
            now(self.render("with", ctx, &qila_expr::Unbounded))
        }
    }

    impl Expression {
        pub(crate) fn eval_now(&self, ctx: &EvalContext) -> Result<Value, EvalError> {
            now(self.eval("expr", ctx, &qila_expr::Unbounded))
        }

        pub(crate) fn eval_bool_now(&self, ctx: &EvalContext) -> Result<bool, EvalError> {
            now(self.eval_bool("if", ctx, &qila_expr::Unbounded))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> EvalContext {
        let inputs = json!({"ip": "10.0.0.1", "n": 3});
        let Value::Object(inputs) = inputs else {
            unreachable!()
        };
        let mut c = EvalContext::new(&inputs);
        c.set_step(
            "intel",
            "succeeded",
            &json!({"score": 85, "tags": ["a", "b"], "geo": {"cc": "NL"}, "none": null}),
        );
        c.set_step("geo-ip", "skipped", &Value::Null);
        c
    }

    fn render(v: Value) -> Result<Value, EvalError> {
        let t = match Template::from_json(&v) {
            Ok(t) => t,
            Err(e) => panic!("{e:?}"),
        };
        t.render_now(&ctx())
    }

    #[test]
    fn static_detection() {
        let t = Template::from_json(&json!({"a": [1, "x"], "b": true})).unwrap();
        assert!(t.is_static());
        let t = Template::from_json(&json!({"a": [1, "${{ inputs.n }}"]})).unwrap();
        assert!(!t.is_static());
    }

    #[test]
    fn whole_value_keeps_type() {
        assert_eq!(render(json!("${{ inputs.n }}")).unwrap(), json!(3));
        assert_eq!(
            render(json!("  ${{ steps.intel.output.tags }} ")).unwrap(),
            json!(["a", "b"])
        );
        assert_eq!(
            render(json!("${{ steps.intel.output.geo }}")).unwrap(),
            json!({"cc": "NL"})
        );
        assert_eq!(
            render(json!("${{ steps.intel.output.score >= 70 }}")).unwrap(),
            json!(true)
        );
        assert_eq!(
            render(json!("${{ steps.intel.output.none }}")).unwrap(),
            json!(null)
        );
        assert_eq!(
            render(json!(
                "${{ 'high' if steps.intel.output.score > 80 else 'medium' }}"
            ))
            .unwrap(),
            json!("high")
        );
        assert_eq!(
            render(json!("${{ {'a': {'b': 1}} }}")).unwrap(),
            json!({"a": {"b": 1}})
        );
        assert_eq!(
            render(json!("${{ steps['geo-ip'].status }}")).unwrap(),
            json!("skipped")
        );
        assert_eq!(
            render(json!("${{ steps.intel.output.tags | length }}")).unwrap(),
            json!(2)
        );
        assert_eq!(render(json!("${{ 'AbC' | lower }}")).unwrap(), json!("abc"));
    }

    #[test]
    fn interpolation() {
        assert_eq!(
            render(json!(
                "Block ${{ inputs.ip }}? score=${{ steps.intel.output.score }}"
            ))
            .unwrap(),
            json!("Block 10.0.0.1? score=85")
        );
        assert_eq!(
            render(json!("t=${{ steps.intel.output.tags }} g=${{ steps.intel.output.geo }} n=[${{ steps.intel.output.none }}] b=${{ true }} f=${{ 1.5 }}")).unwrap(),
            json!("t=[\"a\",\"b\"] g={\"cc\":\"NL\"} n=[] b=true f=1.5")
        );
        assert_eq!(render(json!("${{ '}}' }}x")).unwrap(), json!("}}x"));
        assert_eq!(
            render(json!({"nested": ["x-${{ inputs.n }}", 1]})).unwrap(),
            json!({"nested": ["x-3", 1]})
        );
    }

    #[test]
    fn strict_undefined() {
        let e = render(json!("${{ steps.intel.output.nope }}")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "with: `${{ steps.intel.output.nope }}` is undefined (use `is defined` or `| default(...)` for optional values)"
        );
        let e = render(json!("x ${{ steps.intel.output.nope.deeper }}")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("with: `${{ steps.intel.output.nope.deeper }}`: undefined value"),
            "{e}"
        );
        let e = render(json!("x ${{ steps.intel.output.nope }}")).unwrap_err();
        assert!(e.to_string().contains("undefined"), "{e}");
        assert_eq!(
            render(json!("${{ steps.intel.output.nope | default('d') }}")).unwrap(),
            json!("d")
        );
        assert_eq!(
            render(json!("${{ steps.intel.output.nope is defined }}")).unwrap(),
            json!(false)
        );
    }

    #[test]
    fn conditions() {
        let c = ctx();
        let t = |s: &str| Expression::compile(s).unwrap().eval_bool_now(&c);
        assert_eq!(t("steps.intel.output.score >= 70"), Ok(true));
        assert_eq!(t("steps.intel.output.score > 90"), Ok(false));
        assert_eq!(t("steps['geo-ip'].status == 'skipped'"), Ok(true));
        assert_eq!(t("steps.intel.output.tags"), Ok(true));
        assert_eq!(t("steps.intel.output.none"), Ok(false));
        assert!(t("steps.intel.output.missing").is_err());
        assert!(t("steps.intel.output.missing > 3").is_err());
    }

    #[test]
    fn compile_errors() {
        let e = Template::from_json(&json!("${{ 1 + }}")).unwrap_err();
        assert!(
            e[0].starts_with("invalid expression `${{ 1 + }}`: syntax error"),
            "{e:?}"
        );
        let e = Template::from_json(&json!("a ${{ x")).unwrap_err();
        assert_eq!(e[0], "unterminated `${{` (missing `}}`)");
        let e = Template::from_json(&json!("${{ }}")).unwrap_err();
        assert_eq!(e[0], "invalid expression `${{ }}`: empty expression");
    }

    #[test]
    fn references() {
        let e = Expression::compile(
            "steps.a.output.x + steps['b-c'].status | length if inputs.ip and inputs[\"n\"] else range(3) ~ env.HOME ~ 'steps.zz'",
        )
        .unwrap();
        let refs = e.references();
        assert!(refs.contains(&Ref::Step {
            id: "a".into(),
            field: Some("output".into())
        }));
        assert!(refs.contains(&Ref::Step {
            id: "b-c".into(),
            field: Some("status".into())
        }));
        assert!(refs.contains(&Ref::Input("ip".into())));
        assert!(refs.contains(&Ref::Input("n".into())));
        assert!(refs.contains(&Ref::Unknown("env".into())));
        assert!(
            !refs
                .iter()
                .any(|r| matches!(r, Ref::Step { id, .. } if id == "zz"))
        );
        assert!(!refs.contains(&Ref::Unknown("range".into())));
    }

    #[test]
    fn errors_name_the_place_in_the_template() {
        let e = render(json!({"a": [1, {"b c": "x ${{ inputs.nope }}"}], "v": "${{ inputs.n }}"}))
            .unwrap_err();
        assert_eq!(e.at, r#"with.a[1]["b c"]"#);
        assert_eq!(e.kind, FailureKind::Undefined);
        let e = render(json!({"v": "${{ inputs.n }}", "w": "${{ 'a' + 1 }}"})).unwrap_err();
        assert_eq!(e.at, "with.w");
        assert_eq!(e.kind, FailureKind::Failed);
    }

    #[test]
    fn the_evaluator_gets_only_what_the_expressions_read() {
        let mut c = ctx();
        c.set_step("other", "succeeded", &json!({"secret": "s3cr3t"}));
        let item = c.with_local("item", &json!({"k": 1}));
        let reads_of = |src: &str| {
            let mut reads = Reads::default();
            reads.add(&Expression::compile(src).unwrap());
            item.context_json(&reads)
        };
        let text = reads_of("steps.intel.output.score + item.k");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["inputs"], json!({}));
        assert_eq!(v["item"], json!({"k": 1}));
        assert_eq!(v["steps"]["intel"]["status"], json!("succeeded"));
        assert!(v["steps"].get("other").is_none(), "{text}");
        let v: Value = serde_json::from_str(&reads_of("steps[name] ~ inputs.ip")).unwrap();
        assert_eq!(v["steps"]["other"]["output"]["secret"], json!("s3cr3t"));
        assert_eq!(v["inputs"]["ip"], json!("10.0.0.1"));
    }

    #[test]
    fn a_close_that_closes_nothing_is_an_error_not_a_panic() {
        for src in ["a }} b", "a -}} b", "a }}}", "x }} y }}"] {
            let e = Expression::compile(src).unwrap_err();
            assert!(
                e.starts_with("`}}` outside a string closes nothing"),
                "{src}: {e}"
            );
        }
        for src in [
            "{'a': {'b': 1}}['a']",
            "'}}' ~ a",
            "\"}}\" ~ {'k': {'j': 'x'}}",
        ] {
            assert!(Expression::compile(src).is_ok(), "{src}");
        }
    }

    #[test]
    fn send_sync() {
        fn assert<T: Send + Sync>() {}
        assert::<Expression>();
        assert::<Template>();
        assert::<SharedValue>();
    }
}
