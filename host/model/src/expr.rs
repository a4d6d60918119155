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
//! Expressions use minijinja's [`UndefinedBehavior::Strict`]: a missing attribute or variable is an
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

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, LazyLock, RwLock};

use minijinja::value::{Enumerator, Object, ValueKind};
use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

use crate::diag::Pos;

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
});

static GLOBALS: LazyLock<HashSet<String>> =
    LazyLock::new(|| ENV.globals().map(|(name, _)| name.to_owned()).collect());

/// Errors from evaluating an expression at run time; the message names the expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// Evaluation failed (undefined attribute under strict semantics, bad filter argument, ...).
    #[error("`${{{{ {expr} }}}}`: {message}")]
    Failed {
        /// The expression source (inside `${{ }}`).
        expr: String,
        /// What went wrong (minijinja's message).
        message: String,
    },
    /// The expression evaluated to an undefined value.
    #[error(
        "`${{{{ {expr} }}}}` is undefined (use `is defined` or `| default(...)` for optional values)"
    )]
    Undefined {
        /// The expression source.
        expr: String,
    },
    /// The result cannot be represented as JSON.
    #[error("`${{{{ {expr} }}}}`: result is not JSON: {message}")]
    NotJson {
        /// The expression source.
        expr: String,
        /// The serialization error.
        message: String,
    },
}

/// Formats a minijinja error as a one-line message.
fn mj_message(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    }
}

/// A compiled expression (the text between `${{` and `}}`). Cheap to evaluate; `Send + Sync`.
pub struct Expression {
    source: String,
    compiled: minijinja::Expression<'static, 'static>,
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
        let src = source.trim().to_owned();
        if src.is_empty() {
            return Err("empty expression".to_owned());
        }
        if closes_nothing(&src) {
            // minijinja's lexer panics on text after such a `}}` (an empty lexer stack): refuse it first.
            return Err("`}}` outside a string closes nothing (an expression cannot contain the end of a `${{ }}`)".to_owned());
        }
        let compiled = ENV
            .compile_expression_owned(src.clone())
            .map_err(|e| mj_message(&e))?;
        Ok(Expression {
            source: src,
            compiled,
        })
    }

    /// The expression's source text (trimmed, without `${{ }}`).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates to a minijinja value, mapping errors.
    fn eval_raw(&self, ctx: &EvalContext) -> Result<minijinja::Value, EvalError> {
        let v = self
            .compiled
            .eval(ctx.root())
            .map_err(|e| EvalError::Failed {
                expr: self.source.clone(),
                message: mj_message(&e),
            })?;
        if v.is_undefined() {
            return Err(EvalError::Undefined {
                expr: self.source.clone(),
            });
        }
        Ok(v)
    }

    /// Evaluates to a JSON value (the whole-value semantics).
    pub fn eval(&self, ctx: &EvalContext) -> Result<Value, EvalError> {
        let v = self.eval_raw(ctx)?;
        serde_json::to_value(&v).map_err(|e| EvalError::NotJson {
            expr: self.source.clone(),
            message: e.to_string(),
        })
    }

    /// Evaluates as a condition with Jinja truthiness (`false`, `none`, `0`, `''`, `[]`, `{}` are
    /// false; everything else is true). An undefined result is an error, not `false`.
    pub fn eval_bool(&self, ctx: &EvalContext) -> Result<bool, EvalError> {
        Ok(self.eval_raw(ctx)?.is_true())
    }

    /// Appends the interpolated text of this expression to `out`.
    fn render_into(&self, ctx: &EvalContext, out: &mut String) -> Result<(), EvalError> {
        use std::fmt::Write;
        let v = self.eval_raw(ctx)?;
        match v.kind() {
            ValueKind::String => out.push_str(v.as_str().unwrap_or_default()),
            ValueKind::None => {}
            ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number => {
                let _ = write!(out, "{v}");
            }
            _ => {
                let s = serde_json::to_string(&v).map_err(|e| EvalError::NotJson {
                    expr: self.source.clone(),
                    message: e.to_string(),
                })?;
                out.push_str(&s);
            }
        }
        Ok(())
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

/// Whether `src` has a `}}` outside string literals that closes no `{` of a mapping literal.
fn closes_nothing(src: &str) -> bool {
    let b = src.as_bytes();
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(_) if c == b'\\' => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                b'\'' | b'"' => quote = Some(c),
                b'{' => depth += 1,
                b'}' if depth > 0 => depth -= 1,
                b'}' if b.get(i + 1) == Some(&b'}') => return true,
                _ => {}
            },
        }
        i += 1;
    }
    false
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

/// An output of a step converted once to the expression engine's value type; cloning is cheap
/// (reference counted), so the engine can keep one per finished step and reuse it for every
/// downstream evaluation.
#[derive(Debug, Clone)]
pub struct SharedValue(minijinja::Value);

impl SharedValue {
    /// Converts a JSON value (one deep conversion).
    pub fn new(value: &Value) -> Self {
        SharedValue(minijinja::Value::from_serialize(value))
    }
}

/// The data an expression sees: `inputs` and `steps.<id>.{output,status}`.
///
/// Built once per run and updated as steps finish: the root value is assembled once, and `steps` is an object
/// over a shared map, so recording a step result costs one map insertion however many steps the run has.
///
/// Cloning is cheap (reference-count bumps); a clone, like a context derived with
/// [`EvalContext::with_local`], shares the step results: a step recorded through any of them is
/// seen by all.
#[derive(Debug, Clone)]
pub struct EvalContext {
    steps: Arc<StepResults>,
    inputs: minijinja::Value,
    /// Extra roots (`item`, `index`, `error`, `event`), in insertion order.
    locals: Vec<(String, minijinja::Value)>,
    root: minijinja::Value,
}

/// `steps` as expressions see it: a map from step id to `{output, status}` that grows as the run goes.
#[derive(Debug, Default)]
struct StepResults(RwLock<BTreeMap<String, minijinja::Value>>);

impl Object for StepResults {
    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        let id = key.as_str()?;
        self.0.read().ok()?.get(id).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let keys: Vec<minijinja::Value> = match self.0.read() {
            Ok(map) => map
                .keys()
                .map(|k| minijinja::Value::from(k.as_str()))
                .collect(),
            Err(_) => Vec::new(),
        };
        Enumerator::Iter(Box::new(keys.into_iter()))
    }
}

impl EvalContext {
    /// A context with the run's resolved inputs and no step results yet.
    pub fn new(inputs: &serde_json::Map<String, Value>) -> Self {
        Self::from_inputs(minijinja::Value::from_serialize(inputs))
    }

    /// A context from inputs already converted with [`SharedValue::new`] (no conversion cost).
    pub fn with_shared_inputs(inputs: &SharedValue) -> Self {
        Self::from_inputs(inputs.0.clone())
    }

    fn from_inputs(inputs: minijinja::Value) -> Self {
        let steps = Arc::new(StepResults::default());
        let root = build_root(&inputs, &steps, &[]);
        EvalContext {
            steps,
            inputs,
            locals: Vec::new(),
            root,
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

    /// [`EvalContext::with_local`] with an already converted value (no conversion cost).
    pub fn with_local_shared(&self, name: &str, value: &SharedValue) -> EvalContext {
        let mut locals = self.locals.clone();
        match locals.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value.0.clone(),
            None => locals.push((name.to_owned(), value.0.clone())),
        }
        let root = build_root(&self.inputs, &self.steps, &locals);
        EvalContext {
            steps: self.steps.clone(),
            inputs: self.inputs.clone(),
            locals,
            root,
        }
    }

    /// Records a step's status (`succeeded`, `failed`, `skipped`) and output (converted here;
    /// prefer [`EvalContext::set_step_shared`] to reuse a conversion across steps).
    pub fn set_step(&mut self, id: &str, status: &str, output: &Value) {
        self.set_step_shared(id, status, &SharedValue::new(output));
    }

    /// Records a step's status and an already converted output (a cheap reference-count bump).
    pub fn set_step_shared(&mut self, id: &str, status: &str, output: &SharedValue) {
        let entry = minijinja::Value::from_iter([
            ("output", output.0.clone()),
            ("status", minijinja::Value::from(status)),
        ]);
        // A poisoned lock means a panic while inserting, which cannot leave the map inconsistent.
        let mut map = self
            .steps
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.insert(id.to_owned(), entry);
    }

    fn root(&self) -> &minijinja::Value {
        &self.root
    }
}

/// The root object: the locals, then `inputs` and `steps` (inserted last, so no local shadows them).
fn build_root(
    inputs: &minijinja::Value,
    steps: &Arc<StepResults>,
    locals: &[(String, minijinja::Value)],
) -> minijinja::Value {
    let mut map: BTreeMap<String, minijinja::Value> = locals.iter().cloned().collect();
    map.insert("inputs".to_owned(), inputs.clone());
    map.insert(
        "steps".to_owned(),
        minijinja::Value::from_dyn_object(steps.clone()),
    );
    minijinja::Value::from_iter(map)
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

    /// Renders the template against `ctx` (see the module docs for typing rules).
    pub fn render(&self, ctx: &EvalContext) -> Result<Value, EvalError> {
        render_node(&self.root, ctx)
    }
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

fn render_node(n: &TNode, ctx: &EvalContext) -> Result<Value, EvalError> {
    Ok(match &n.kind {
        TKind::Const(v) => v.clone(),
        TKind::Expr(e) => e.eval(ctx)?,
        TKind::Interp(parts) => {
            let mut out = String::new();
            for p in parts {
                match p {
                    Part::Lit(s) => out.push_str(s),
                    Part::Expr(e) => e.render_into(ctx, &mut out)?,
                }
            }
            Value::String(out)
        }
        TKind::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| render_node(i, ctx))
                .collect::<Result<_, _>>()?,
        ),
        TKind::Object(entries) => {
            let mut map = serde_json::Map::with_capacity(entries.len());
            for (k, v) in entries {
                map.insert(k.clone(), render_node(v, ctx)?);
            }
            Value::Object(map)
        }
    })
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
        t.render(&ctx())
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
            "`${{ steps.intel.output.nope }}` is undefined (use `is defined` or `| default(...)` for optional values)"
        );
        let e = render(json!("x ${{ steps.intel.output.nope.deeper }}")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("`${{ steps.intel.output.nope.deeper }}`: undefined value"),
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
        let t = |s: &str| Expression::compile(s).unwrap().eval_bool(&c);
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
