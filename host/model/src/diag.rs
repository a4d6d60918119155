//! Diagnostics: errors with a file, a 1-based line and column, and a message.

use std::fmt;

use crate::limits::{MAX_DIAGNOSTICS, MAX_EXPRESSIONS};

/// A position in a source file (1-based line and column, in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
}

impl Pos {
    /// A position at `line`, `col` (both 1-based).
    pub const fn new(line: usize, col: usize) -> Self {
        Pos { line, col }
    }
}

/// One problem found in a playbook (or in the inputs given to it), displayed as `file:line:col: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file name the playbook was loaded from (as given to [`crate::Playbook::parse`]).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong, usually prefixed with the YAML path (`steps.classify.with.ip: ...`).
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic at `pos` in `file`.
    pub fn new(file: &str, pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_owned(),
            line: pos.line,
            col: pos.col,
            message: message.into(),
        }
    }

    /// The position of this diagnostic.
    pub fn pos(&self) -> Pos {
        Pos::new(self.line, self.col)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

impl std::error::Error for Diagnostic {}

/// Several diagnostics, displayed one per line, in source order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Sorts by position (stable, so diagnostics at one position keep the order they were found in).
    pub fn sort(&mut self) {
        self.0.sort_by_key(|d| (d.line, d.col));
    }

    /// Whether there is no diagnostic.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of diagnostics.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Iterates over the diagnostics.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl From<Vec<Diagnostic>> for Diagnostics {
    fn from(v: Vec<Diagnostic>) -> Self {
        Diagnostics(v)
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Collects diagnostics for one file: the first [`MAX_DIAGNOSTICS`] of them, and a count of the rest.
#[derive(Debug)]
pub(crate) struct Sink<'a> {
    pub file: &'a str,
    diags: Vec<Diagnostic>,
    dropped: usize,
    first_dropped: Pos,
    /// Candidates [`Sink::did_you_mean`] may still compare.
    suggest_budget: usize,
    /// Expressions compiled so far.
    expressions: usize,
}

/// How many candidates the suggestions of one document may compare in all (each comparison is an edit
/// distance of two short names): enough for every suggestion of a large playbook, and a bound on the work
/// of one with many errors and many steps.
const SUGGEST_BUDGET: usize = 2_000_000;

impl<'a> Sink<'a> {
    pub fn new(file: &'a str) -> Self {
        Sink {
            file,
            diags: Vec::new(),
            dropped: 0,
            first_dropped: Pos::default(),
            suggest_budget: SUGGEST_BUDGET,
            expressions: 0,
        }
    }

    /// Counts `n` more expressions to compile at `pos`; false (reported once, at the first one over) past
    /// [`MAX_EXPRESSIONS`], when they must not be compiled.
    pub fn admit_expressions(&mut self, n: usize, pos: Pos) -> bool {
        let before = self.expressions;
        self.expressions = self.expressions.saturating_add(n);
        if self.expressions <= MAX_EXPRESSIONS {
            return true;
        }
        if before <= MAX_EXPRESSIONS {
            self.err(
                pos,
                format!("too many expressions (more than {MAX_EXPRESSIONS} in one playbook)"),
            );
        }
        false
    }

    /// [`crate::did_you_mean`] within the document's budget of comparisons (after it, and once no further
    /// diagnostic is kept, no suggestion).
    pub fn did_you_mean<'c>(
        &mut self,
        name: &str,
        candidates: impl IntoIterator<Item = &'c str>,
    ) -> String {
        if self.full() || self.suggest_budget == 0 {
            return String::new();
        }
        let mut used = 0;
        let suggestion = crate::catalog::did_you_mean(
            name,
            candidates
                .into_iter()
                .take(self.suggest_budget)
                .inspect(|_| used += 1),
        );
        self.suggest_budget -= used;
        suggestion
    }

    pub fn err(&mut self, pos: Pos, message: impl Into<String>) {
        if self.full() {
            self.drop_one(pos);
        } else {
            self.diags.push(Diagnostic::new(self.file, pos, message));
        }
    }

    /// Like [`Sink::err`], for a message that is costly to build (a suggestion among every step id, a list
    /// of every input): built only if it will be reported.
    pub fn err_with(&mut self, pos: Pos, message: impl FnOnce() -> String) {
        if self.full() {
            self.drop_one(pos);
        } else {
            self.diags.push(Diagnostic::new(self.file, pos, message()));
        }
    }

    /// Whether no further diagnostic will be kept.
    pub fn full(&self) -> bool {
        self.diags.len() >= MAX_DIAGNOSTICS
    }

    /// Whether nothing was reported.
    pub fn is_empty(&self) -> bool {
        self.diags.is_empty()
    }

    fn drop_one(&mut self, pos: Pos) {
        if self.dropped == 0 {
            self.first_dropped = pos;
        }
        self.dropped += 1;
    }

    /// The diagnostics sorted by position, then a count of those not kept (at the first of them).
    pub fn finish(self) -> Diagnostics {
        let mut d = Diagnostics(self.diags);
        d.sort();
        if self.dropped > 0 {
            d.0.push(Diagnostic::new(
                self.file,
                self.first_dropped,
                format!(
                    "{} more problems not shown (only the first {MAX_DIAGNOSTICS} are reported)",
                    self.dropped
                ),
            ));
        }
        d
    }
}
