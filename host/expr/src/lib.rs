//! Qila's `${{ }}` expression language, defined once.
//!
//! An expression is a [minijinja](https://docs.rs/minijinja) (Jinja2) expression evaluated with strict undefined
//! semantics; the language is documented in `qila_model::expr` and `docs/playbooks.md`. This crate holds what the
//! host and the sandboxed evaluator must agree on:
//!
//! - [`compile`], which the host uses to check an expression when a playbook is validated;
//! - [`evaluate`], the evaluation itself, which runs **inside a WebAssembly instance** (the component of
//!   `plugins/expressions`, world `qila:evaluator/evaluator` in `wit/evaluator/`) under a memory cap and fuel, so
//!   that no expression — `[1] * 10**12`, `'x' | indent(10**11)`, `range(10**9) | sum` — can exhaust the host's
//!   memory or CPU;
//! - the request and answer types ([`Piece`], [`Failure`]) and the [`Evaluator`] trait through which the engine
//!   asks for an evaluation without knowing where it runs.
//!
//! The crate is small and has no dependency that does not build for `wasm32-wasip2`.

// A library reports through `tracing` and its errors, never on the process's stdout or stderr.
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;

pub use minijinja;
use minijinja::value::ValueKind;
use minijinja::{Environment, UndefinedBehavior, Value};

/// The environment every expression is compiled and evaluated in: minijinja's built-in filters and tests, strict
/// undefined values, no templates, no loader, no globals beyond minijinja's own (`range`, `dict`, `namespace`).
pub fn environment() -> &'static Environment<'static> {
    static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env
    });
    &ENV
}

/// A compiled expression; `Send + Sync`.
pub type Compiled = minijinja::Expression<'static, 'static>;

/// The most operators (and other tokens that can nest) one expression may have.
///
/// Compiling walks the expression's tree recursively, so its depth must stay far from what a thread's stack holds:
/// `-` repeated 7,600 times exhausts a 2 MiB stack (a Tokio worker's). Counting operators bounds the depth without
/// parsing, and no sensible expression comes near the limit (split one that does into steps).
pub const MAX_OPERATORS: usize = 2000;

/// Compiles an expression (the text between `${{` and `}}`, trimmed). The error is minijinja's message, or says
/// that the expression has more than [`MAX_OPERATORS`] operators.
pub fn compile(source: &str) -> Result<Compiled, String> {
    let source = source.trim();
    if source.is_empty() {
        return Err("empty expression".to_owned());
    }
    if closes_nothing(source) {
        // minijinja's lexer panics on text after such a `}}` (an empty lexer stack): refuse it first.
        return Err(
            "`}}` outside a string closes nothing (an expression cannot contain the end of a `${{ }}`)"
                .to_owned(),
        );
    }
    if operators(source) > MAX_OPERATORS {
        return Err(format!(
            "the expression has more than {MAX_OPERATORS} operators; split it into steps"
        ));
    }
    environment()
        .compile_expression_owned(source.to_owned())
        .map_err(|e| message(&e))
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

/// Counts the tokens of `source` that can nest — operators, brackets, `.`, `|` and the keywords `not`, `and`,
/// `or`, `if`, `else`, `is`, `in` — outside string literals: an upper bound of the depth of its tree.
fn operators(source: &str) -> usize {
    let bytes = source.as_bytes();
    let mut count = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'~' | b'<' | b'>' | b'=' | b'!' | b'|' | b'.'
            | b'[' | b'(' | b'{' => {
                count += 1;
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                if matches!(
                    &source[start..i],
                    "not" | "and" | "or" | "if" | "else" | "is" | "in"
                ) {
                    count += 1;
                }
            }
            _ => i += 1,
        }
    }
    count
}

/// One line for a minijinja error: its kind and detail.
pub fn message(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    }
}

/// One thing to evaluate: a template is sent as the list of its pieces (its constant parts stay with the host).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Piece {
    /// A whole-value expression (`"${{ steps.a.output }}"`): its result as JSON, keeping its type.
    Value(String),
    /// A condition (`if:`): `true` or `false` by Jinja truthiness; undefined is an error, not `false`.
    Condition(String),
    /// A string with embedded expressions: each expression is rendered as text (a string as is, a number or
    /// boolean in JSON form, `none` as nothing, a list or object as compact JSON) between the literal segments.
    Text(Vec<Segment>),
}

/// A part of a [`Piece::Text`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Segment {
    /// Text copied as it is.
    Literal(String),
    /// The source of an expression.
    Expression(String),
}

/// Why an evaluation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FailureKind {
    /// The expression does not compile (validation normally catches this first).
    Invalid,
    /// Evaluation failed: an undefined attribute used under strict semantics, a bad filter argument, ...
    Failed,
    /// The expression evaluated to an undefined value.
    Undefined,
    /// The result cannot be represented as JSON.
    NotJson,
    /// The rendered output is larger than the output limit.
    OutputLimit,
    /// The evaluation tried to use more memory than its limit.
    MemoryLimit,
    /// The evaluation did more work than its limit.
    WorkLimit,
    /// The evaluation ran past its wall-clock limit.
    Timeout,
    /// The evaluator itself failed (it trapped, or could not be started): not the expression's fault.
    Unavailable,
}

/// A failed evaluation: which piece, which expression, what kind of failure and a one-line message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{message}")]
pub struct Failure {
    /// The index of the failing piece in the request, when the failure belongs to one.
    pub piece: Option<usize>,
    /// The source of the failing expression, when known.
    pub expression: Option<String>,
    /// What kind of failure.
    pub kind: FailureKind,
    /// A one-line message (for limits: `expression exceeded its memory limit of 16 MiB`).
    pub message: String,
}

impl Failure {
    /// A failure of the whole request, not of one piece.
    pub fn request(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            piece: None,
            expression: None,
            kind,
            message: message.into(),
        }
    }
}

/// What a request evaluates against: the JSON object of root variables (`inputs`, `steps`, `item`, ...).
///
/// Text, so the host can assemble it from values it serialised once (a step's output when the step ended) and the
/// evaluator can parse it straight into its own values.
pub type ContextJson = str;

/// A future of an evaluation.
pub type EvalFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<String>, Failure>> + Send + 'a>>;

/// Evaluates pieces against a context, wherever that happens: the engine holds one and does not know whether it is
/// the sandboxed evaluator of `qila-sandbox` (the one `qila` uses) or, in tests of trusted expressions,
/// [`Unbounded`].
pub trait Evaluator: Send + Sync {
    /// Evaluates `pieces` against `context` (a JSON object); one JSON text per piece, in order.
    fn evaluate<'a>(&'a self, context: &'a ContextJson, pieces: &'a [Piece]) -> EvalFuture<'a>;
}

/// Parses a context (a JSON object whose members become the root variables).
pub fn parse_context(context: &ContextJson) -> Result<Value, Failure> {
    let root: Value = serde_json::from_str(context).map_err(|e| {
        Failure::request(
            FailureKind::Unavailable,
            format!("the context is not JSON: {e}"),
        )
    })?;
    if root.kind() != ValueKind::Map {
        return Err(Failure::request(
            FailureKind::Unavailable,
            "the context is not a JSON object",
        ));
    }
    Ok(root)
}

/// Evaluates `pieces` against `root` (see [`parse_context`]); the rendered text of all pieces together may not
/// exceed `max_output` bytes; `started(i)` is called before piece `i`. This is the evaluation the sandboxed
/// evaluator runs; it has no bound of its own on memory or work — the instance it runs in has.
pub fn evaluate(
    root: &Value,
    pieces: &[Piece],
    max_output: usize,
    mut started: impl FnMut(usize),
) -> Result<Vec<String>, Failure> {
    let mut out = Vec::with_capacity(pieces.len());
    let mut budget = Budget {
        left: max_output,
        limit: max_output,
    };
    for (i, piece) in pieces.iter().enumerate() {
        started(i);
        let at = |e: Failure| Failure {
            piece: Some(i),
            ..e
        };
        let text = match piece {
            Piece::Value(src) => {
                let v = eval(src, root).map_err(at)?;
                let text = serde_json::to_string(&v).map_err(|e| at(not_json(src, e)))?;
                budget.take(text.len(), src).map_err(at)?;
                text
            }
            Piece::Condition(src) => {
                let v = eval(src, root).map_err(at)?;
                let text = if v.is_true() { "true" } else { "false" }.to_owned();
                budget.take(text.len(), src).map_err(at)?;
                text
            }
            Piece::Text(segments) => {
                let mut s = String::new();
                for segment in segments {
                    match segment {
                        Segment::Literal(lit) => {
                            budget.take(lit.len(), "").map_err(at)?;
                            s.push_str(lit);
                        }
                        Segment::Expression(src) => {
                            let v = eval(src, root).map_err(at)?;
                            let before = s.len();
                            render_into(&v, &mut s).map_err(|e| at(not_json(src, e)))?;
                            budget.take(s.len() - before, src).map_err(at)?;
                        }
                    }
                }
                // The piece's answer is a JSON string: quoting may add a little to what was counted.
                serde_json::to_string(&s).map_err(|e| at(not_json("", e)))?
            }
        };
        out.push(text);
    }
    Ok(out)
}

/// What is left of the output limit.
struct Budget {
    left: usize,
    limit: usize,
}

impl Budget {
    fn take(&mut self, bytes: usize, src: &str) -> Result<(), Failure> {
        match self.left.checked_sub(bytes) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => Err(Failure {
                piece: None,
                expression: (!src.is_empty()).then(|| src.to_owned()),
                kind: FailureKind::OutputLimit,
                message: format!(
                    "expression exceeded its output limit of {}",
                    format_bytes(self.limit as u64)
                ),
            }),
        }
    }
}

fn not_json(src: &str, e: serde_json::Error) -> Failure {
    Failure {
        piece: None,
        expression: (!src.is_empty()).then(|| src.to_owned()),
        kind: FailureKind::NotJson,
        message: format!("`${{{{ {src} }}}}`: result is not JSON: {e}"),
    }
}

/// Compiles and evaluates one expression; an undefined result is an error.
fn eval(src: &str, root: &Value) -> Result<Value, Failure> {
    let fail = |kind, message: String| Failure {
        piece: None,
        expression: Some(src.to_owned()),
        kind,
        message,
    };
    let compiled = compile(src).map_err(|m| {
        fail(
            FailureKind::Invalid,
            format!("invalid expression `${{{{ {src} }}}}`: {m}"),
        )
    })?;
    let v = compiled.eval(root).map_err(|e| {
        fail(
            FailureKind::Failed,
            format!("`${{{{ {} }}}}`: {}", src.trim(), message(&e)),
        )
    })?;
    if v.is_undefined() {
        return Err(fail(
            FailureKind::Undefined,
            format!(
                "`${{{{ {} }}}}` is undefined (use `is defined` or `| default(...)` for optional values)",
                src.trim()
            ),
        ));
    }
    Ok(v)
}

/// Appends the interpolated text of `v`: a string as is, a number or boolean in JSON form, `none` as nothing, a
/// list or object as compact JSON.
fn render_into(v: &Value, out: &mut String) -> Result<(), serde_json::Error> {
    use std::fmt::Write;
    match v.kind() {
        ValueKind::String => out.push_str(v.as_str().unwrap_or_default()),
        ValueKind::None => {}
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            let _ = write!(out, "{v}");
        }
        _ => out.push_str(&serde_json::to_string(v)?),
    }
    Ok(())
}

/// `16 MiB`, `256 KiB`, `1000 bytes`: a byte count as the limits are written in configuration.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{} {unit}", bytes / size);
        }
    }
    format!("{bytes} bytes")
}

/// Evaluation in this process, with no memory or work limit: for tests whose expressions are trusted (the engine's
/// and the model's own). `qila` never uses it; it evaluates in the sandbox.
#[cfg(feature = "unbounded")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Unbounded;

#[cfg(feature = "unbounded")]
impl Evaluator for Unbounded {
    fn evaluate<'a>(&'a self, context: &'a ContextJson, pieces: &'a [Piece]) -> EvalFuture<'a> {
        Box::pin(async move {
            let root = parse_context(context)?;
            evaluate(&root, pieces, usize::MAX, |_| {})
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(context: &str, pieces: &[Piece], max: usize) -> Result<Vec<String>, Failure> {
        evaluate(&parse_context(context).unwrap(), pieces, max, |_| {})
    }

    const CTX: &str = r#"{"inputs": {"ip": "10.0.0.1", "n": 3}, "steps": {"a": {"output": {"score": 85, "tags": ["x", "y"], "none": null}, "status": "succeeded"}}}"#;

    #[test]
    fn values_keep_their_type_and_text_is_rendered() {
        let pieces = [
            Piece::Value("inputs.n".into()),
            Piece::Value("steps.a.output.tags".into()),
            Piece::Condition("steps.a.output.score > 80".into()),
            Piece::Condition("steps.a.output.none".into()),
            Piece::Text(vec![
                Segment::Literal("ip=".into()),
                Segment::Expression("inputs.ip".into()),
                Segment::Literal(" t=".into()),
                Segment::Expression("steps.a.output.tags".into()),
                Segment::Literal(" n=[".into()),
                Segment::Expression("steps.a.output.none".into()),
                Segment::Literal("] f=".into()),
                Segment::Expression("1.5".into()),
            ]),
        ];
        let out = run(CTX, &pieces, 1 << 20).unwrap();
        assert_eq!(
            out,
            [
                "3",
                r#"["x","y"]"#,
                "true",
                "false",
                r#""ip=10.0.0.1 t=[\"x\",\"y\"] n=[] f=1.5""#
            ]
        );
    }

    #[test]
    fn failures_name_the_piece_and_the_expression() {
        let pieces = [
            Piece::Value("inputs.n".into()),
            Piece::Value("steps.a.output.nope".into()),
        ];
        let e = run(CTX, &pieces, 1 << 20).unwrap_err();
        assert_eq!(e.piece, Some(1));
        assert_eq!(e.kind, FailureKind::Undefined);
        assert_eq!(e.expression.as_deref(), Some("steps.a.output.nope"));
        assert!(e.message.contains("is undefined"), "{e}");

        let e = run(CTX, &[Piece::Condition("steps.b.x > 1".into())], 99).unwrap_err();
        assert_eq!(e.kind, FailureKind::Failed);
        let e = run(CTX, &[Piece::Value("1 +".into())], 99).unwrap_err();
        assert_eq!(e.kind, FailureKind::Invalid);
    }

    #[test]
    fn the_output_limit_holds_across_pieces() {
        let pieces = [
            Piece::Value("'a' * 60".into()),
            Piece::Text(vec![Segment::Expression("'b' * 60".into())]),
        ];
        let e = run(CTX, &pieces, 100).unwrap_err();
        assert_eq!(e.kind, FailureKind::OutputLimit);
        assert_eq!(e.piece, Some(1));
        assert_eq!(
            e.message,
            "expression exceeded its output limit of 100 bytes"
        );
        assert!(run(CTX, &pieces, 200).is_ok());
    }

    #[test]
    fn a_close_that_closes_nothing_is_an_error_not_a_panic() {
        for src in [
            "a }} b",
            "a -}} b",
            "a }}}",
            "x }} y }}",
            "steps.key.outpu}}sha256",
        ] {
            let e = compile(src).err().unwrap_or_default();
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
            assert!(compile(src).is_ok(), "{src}");
        }
    }

    #[test]
    fn deep_expressions_are_refused_before_they_are_parsed() {
        // Each of these overflowed a 2 MiB stack when compiled, at a depth of a few thousand.
        for src in [
            format!("{}x", "-".repeat(8000)),
            format!("1{}", " + 1".repeat(8000)),
            format!("{}x", "not ".repeat(8000)),
            format!("x{}", " if x else x".repeat(8000)),
        ] {
            let e = compile(&src).err().unwrap_or_default();
            assert_eq!(
                e,
                "the expression has more than 2000 operators; split it into steps"
            );
        }
        // Operators inside strings do not count, long lists and words do not either.
        assert!(compile(&format!("'{}'", "-+|.".repeat(10000))).is_ok());
        assert!(compile(&format!("[{}1]", "1, ".repeat(10000))).is_ok());
        assert!(compile(&format!("x{}", " or x".repeat(1999))).is_ok());
        // Within the limit, the deepest tree compiles on a Tokio worker's stack.
        let deepest = format!("{}x", "-".repeat(MAX_OPERATORS));
        let on_small_stack = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || compile(&deepest).map(|c| c.undeclared_variables(true).len()))
            .unwrap()
            .join()
            .unwrap();
        assert!(on_small_stack.is_ok());
    }

    #[test]
    fn byte_counts_read_as_configured() {
        assert_eq!(format_bytes(16 << 20), "16 MiB");
        assert_eq!(format_bytes(256 << 10), "256 KiB");
        assert_eq!(format_bytes(1000), "1000 bytes");
    }
}
