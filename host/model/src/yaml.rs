//! A YAML document as a tree of nodes that remember their source position.
//!
//! Built from `yaml-rust2`'s event parser. Plain scalars are resolved with the YAML 1.2 core schema
//! (`null`/`~`/empty, `true`/`false`, integers, floats, else strings); quoted and block scalars are
//! always strings. Tags are ignored.
//!
//! Aliases are expanded by sharing: strings, lists and mappings are reference counted, so an alias costs
//! nothing to make. What it stands for is counted against [`MAX_EXPANDED_BYTES`], [`MAX_ALIAS_NODES`] and
//! [`MAX_NODES`], as later stages (JSON values, templates) make real copies; expansion stops at the alias
//! that crosses a limit. The source is checked first: at most [`MAX_SOURCE_BYTES`], and no NUL (which the
//! scanner would take for the end of the input).

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use serde_json::Value;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::diag::Pos;
use crate::limits::{
    MAX_ALIAS_NODES, MAX_DEPTH, MAX_DIAGNOSTICS, MAX_EXPANDED_BYTES, MAX_NODES, MAX_SOURCE_BYTES,
};

/// A YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

/// The value of a node. Strings and collections are shared (an alias is a second reference).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Seq(Rc<[Node]>),
    /// Entries in source order: key, key position, value.
    Map(Rc<[Entry]>),
}

/// One mapping entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

impl Node {
    /// A short description of the node's type for "wrong type" messages.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    /// The node as JSON (non-finite floats become null).
    pub fn to_json(&self) -> Value {
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Int(i) => Value::from(*i),
            Kind::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Kind::Str(s) => Value::String(s.to_string()),
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }
}

/// A YAML error: position and message.
#[derive(Debug, Clone)]
pub(crate) struct YamlError {
    pub pos: Pos,
    pub message: String,
}

/// The position of byte `offset` of `source` (1-based line and column in characters), counting line
/// breaks as the scanner does (`\n`, `\r\n`, a lone `\r`).
pub(crate) fn pos_at(source: &[u8], offset: usize) -> Pos {
    let before = &source[..offset.min(source.len())];
    let mut line = 1;
    let mut line_start = 0;
    let mut i = 0;
    while i < before.len() {
        match before[i] {
            b'\n' => {
                line += 1;
                line_start = i + 1;
            }
            b'\r' if before.get(i + 1) != Some(&b'\n') => {
                line += 1;
                line_start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    // Characters, not bytes: count the bytes that start a UTF-8 sequence.
    let col = before[line_start..]
        .iter()
        .filter(|&&b| (b & 0xC0) != 0x80)
        .count();
    Pos::new(line, col + 1)
}

/// An error at the first byte past [`MAX_SOURCE_BYTES`], if `source` is longer.
fn check_size(source: &[u8]) -> Result<(), Vec<YamlError>> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(vec![YamlError {
            pos: pos_at(source, MAX_SOURCE_BYTES),
            message: format!("document too large (more than {MAX_SOURCE_BYTES} bytes)"),
        }]);
    }
    Ok(())
}

/// `bytes` as UTF-8 text, or an error: at the first byte past [`MAX_SOURCE_BYTES`], or at the first invalid
/// sequence (its line, column and byte offset).
pub(crate) fn decode(bytes: &[u8]) -> Result<&str, YamlError> {
    if let Err(mut e) = check_size(bytes) {
        return Err(e.remove(0));
    }
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let bad: Vec<String> = bytes[at..]
            .iter()
            .take(e.error_len().unwrap_or(bytes.len() - at).clamp(1, 4))
            .map(|b| format!("0x{b:02X}"))
            .collect();
        let what = if e.error_len().is_none() {
            "a truncated UTF-8 sequence"
        } else {
            "an invalid UTF-8 sequence"
        };
        YamlError {
            pos: pos_at(bytes, at),
            message: format!(
                "not UTF-8 text: {what} ({}) at byte {at}; a playbook must be UTF-8",
                bad.join(" ")
            ),
        }
    })
}

/// Parses the first document of `source`. An empty document is a `Null` node at 1:1.
/// Duplicate keys and non-scalar keys are reported as errors (up to [`MAX_DIAGNOSTICS`] of them).
pub(crate) fn parse(source: &str) -> Result<Node, Vec<YamlError>> {
    check_size(source.as_bytes())?;
    if let Some(at) = source.bytes().position(|b| b == 0) {
        return Err(vec![YamlError {
            pos: pos_at(source.as_bytes(), at),
            message: "a NUL character is not allowed in YAML (inside a double-quoted string, write `\\0`)"
                .to_owned(),
        }]);
    }
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(source);
    if let Err(e) = parser.load(&mut builder, false) {
        let m = e.marker();
        return Err(vec![YamlError {
            pos: pos_of(*m),
            message: format!("YAML syntax error: {}", e.info()),
        }]);
    }
    if let Some(limit) = builder.exceeded {
        return Err(vec![limit]);
    }
    if !builder.errors.is_empty() {
        let mut errors = builder.errors;
        if builder.dropped > 0 {
            let pos = builder.first_dropped;
            errors.push(YamlError {
                pos,
                message: format!(
                    "{} more problems not shown (only the first {MAX_DIAGNOSTICS} are reported)",
                    builder.dropped
                ),
            });
        }
        return Err(errors);
    }
    Ok(builder.root.unwrap_or(Node {
        pos: Pos::new(1, 1),
        kind: Kind::Null,
    }))
}

/// What a node stands for once its aliases are expanded.
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    nodes: usize,
    bytes: usize,
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        start: Size,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        start: Size,
        entries: Vec<Entry>,
        /// The keys so far, once the mapping has more than a few (small ones are scanned).
        keys: HashSet<String>,
        pending_key: Option<(String, Pos)>,
        /// The key was not a scalar: skip its value.
        skip_value: bool,
    },
    /// A complex (non-scalar) mapping key being skipped.
    Skip { depth: usize },
}

/// Mappings up to this size are checked for duplicate keys by a scan; larger ones by a set.
const SCAN_KEYS: usize = 16;

struct Anchor {
    node: Node,
    size: Size,
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    anchors: HashMap<usize, Anchor>,
    errors: Vec<YamlError>,
    dropped: usize,
    first_dropped: Pos,
    /// Everything read so far, aliases expanded.
    total: Size,
    /// Nodes that aliases stood for so far.
    alias_nodes: usize,
    /// A size limit was crossed: the only error reported, and nothing more is read.
    exceeded: Option<YamlError>,
    done: bool,
}

fn pos_of(m: Marker) -> Pos {
    // yaml-rust2 markers: 1-based line, 0-based column.
    Pos::new(m.line().max(1), m.col() + 1)
}

impl Builder {
    fn error(&mut self, pos: Pos, message: String) {
        if self.errors.len() < MAX_DIAGNOSTICS {
            self.errors.push(YamlError { pos, message });
        } else {
            if self.dropped == 0 {
                self.first_dropped = pos;
            }
            self.dropped += 1;
        }
    }

    /// Counts `size` more of the document at `pos`; false (and reading stops) when a limit is crossed.
    fn charge(&mut self, pos: Pos, size: Size, alias: bool) -> bool {
        if alias {
            self.alias_nodes = self.alias_nodes.saturating_add(size.nodes);
        }
        self.total.nodes = self.total.nodes.saturating_add(size.nodes);
        self.total.bytes = self.total.bytes.saturating_add(size.bytes);
        let after = if self.alias_nodes > 0 {
            " after expanding aliases"
        } else {
            ""
        };
        let message = if self.total.bytes > MAX_EXPANDED_BYTES {
            format!("document too large (more than {MAX_EXPANDED_BYTES} bytes{after})")
        } else if self.alias_nodes > MAX_ALIAS_NODES {
            format!("document too large (its aliases stand for more than {MAX_ALIAS_NODES} nodes)")
        } else if self.total.nodes > MAX_NODES {
            format!("document too large (more than {MAX_NODES} nodes{after})")
        } else {
            return true;
        };
        self.exceeded = Some(YamlError { pos, message });
        self.done = true;
        false
    }

    /// Adds a finished node to the innermost container (or makes it the root).
    fn push_node(&mut self, node: Node, anchor: usize, size: Size) {
        if anchor != 0 {
            // Cheap: strings and collections are shared.
            self.anchors.insert(
                anchor,
                Anchor {
                    node: node.clone(),
                    size,
                },
            );
        }
        let mut key_error = None;
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                keys,
                pending_key,
                skip_value,
                ..
            }) => {
                if *skip_value {
                    *skip_value = false;
                } else if let Some((key, key_pos)) = pending_key.take() {
                    let duplicate = if entries.len() < SCAN_KEYS {
                        entries.iter().any(|e| e.key == key)
                    } else {
                        if keys.is_empty() {
                            keys.extend(entries.iter().map(|e| e.key.clone()));
                        }
                        !keys.insert(key.clone())
                    };
                    if duplicate {
                        key_error = Some((key_pos, format!("duplicate key `{key}`")));
                    } else {
                        entries.push(Entry {
                            key,
                            key_pos,
                            value: node,
                        });
                    }
                } else {
                    match scalar_key(&node) {
                        Some(key) => *pending_key = Some((key, node.pos)),
                        None => {
                            // Unreachable in practice: complex keys are caught at their start event.
                            *skip_value = true;
                            key_error = Some((node.pos, "mapping keys must be scalars".to_owned()));
                        }
                    }
                }
            }
            Some(Frame::Skip { .. }) => {}
        }
        if let Some((pos, msg)) = key_error {
            self.error(pos, msg);
        }
    }

    /// Whether the next node would be a mapping key (so a collection there is a complex key).
    fn expecting_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame::Map {
                pending_key: None,
                skip_value: false,
                ..
            })
        )
    }

    fn start_collection(&mut self, frame: Frame, pos: Pos) {
        if let Some(Frame::Skip { depth }) = self.stack.last_mut() {
            *depth += 1;
            return;
        }
        if self.expecting_key() {
            self.error(pos, "mapping keys must be scalars".to_owned());
            if let Some(Frame::Map { skip_value, .. }) = self.stack.last_mut() {
                *skip_value = true;
            }
            self.stack.push(Frame::Skip { depth: 1 });
            return;
        }
        if self.stack.len() >= MAX_DEPTH {
            self.error(pos, format!("nesting deeper than {MAX_DEPTH} levels"));
            self.stack.push(Frame::Skip { depth: 1 });
            return;
        }
        self.stack.push(frame);
    }

    /// What was read since `start`, aliases expanded.
    fn since(&self, start: Size) -> Size {
        Size {
            nodes: self.total.nodes - start.nodes,
            bytes: self.total.bytes - start.bytes,
        }
    }

    fn end_collection(&mut self) {
        match self.stack.pop() {
            Some(Frame::Skip { depth }) if depth > 1 => {
                self.stack.push(Frame::Skip { depth: depth - 1 });
            }
            Some(Frame::Skip { .. }) | None => {}
            Some(Frame::Seq {
                pos,
                anchor,
                start,
                items,
            }) => {
                let size = self.since(start);
                let kind = Kind::Seq(items.into());
                self.push_node(Node { pos, kind }, anchor, size);
            }
            Some(Frame::Map {
                pos,
                anchor,
                start,
                entries,
                ..
            }) => {
                let size = self.since(start);
                let kind = Kind::Map(entries.into());
                self.push_node(Node { pos, kind }, anchor, size);
            }
        }
    }
}

fn scalar_key(node: &Node) -> Option<String> {
    match &node.kind {
        Kind::Str(s) => Some(s.to_string()),
        Kind::Int(i) => Some(i.to_string()),
        Kind::Bool(b) => Some(b.to_string()),
        Kind::Float(f) => Some(f.to_string()),
        Kind::Null => Some("null".to_owned()),
        _ => None,
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.done {
            return;
        }
        let pos = pos_of(mark);
        match ev {
            Event::Scalar(value, style, anchor, _tag) => {
                let size = Size {
                    nodes: 1,
                    bytes: 1 + value.len(),
                };
                if !self.charge(pos, size, false)
                    || matches!(self.stack.last(), Some(Frame::Skip { .. }))
                {
                    return;
                }
                let kind = if style == TScalarStyle::Plain {
                    resolve_plain(value)
                } else {
                    Kind::Str(value.into())
                };
                self.push_node(Node { pos, kind }, anchor, size);
            }
            Event::Alias(id) => {
                let Some((mut node, size)) =
                    self.anchors.get(&id).map(|a| (a.node.clone(), a.size))
                else {
                    self.error(pos, "unknown alias".to_owned());
                    return;
                };
                if !self.charge(pos, size, true)
                    || matches!(self.stack.last(), Some(Frame::Skip { .. }))
                {
                    return;
                }
                if self.expecting_key() && scalar_key(&node).is_none() {
                    self.error(pos, "mapping keys must be scalars".to_owned());
                    if let Some(Frame::Map { skip_value, .. }) = self.stack.last_mut() {
                        *skip_value = true;
                    }
                    return;
                }
                node.pos = pos;
                self.push_node(node, 0, size);
            }
            Event::SequenceStart(anchor, _) => {
                let start = self.total;
                if self.charge(pos, Size { nodes: 1, bytes: 1 }, false) {
                    let frame = Frame::Seq {
                        pos,
                        anchor,
                        start,
                        items: Vec::new(),
                    };
                    self.start_collection(frame, pos);
                }
            }
            Event::MappingStart(anchor, _) => {
                let start = self.total;
                if self.charge(pos, Size { nodes: 1, bytes: 1 }, false) {
                    let frame = Frame::Map {
                        pos,
                        anchor,
                        start,
                        entries: Vec::new(),
                        keys: HashSet::new(),
                        pending_key: None,
                        skip_value: false,
                    };
                    self.start_collection(frame, pos);
                }
            }
            Event::SequenceEnd | Event::MappingEnd => self.end_collection(),
            Event::DocumentEnd => {
                if self.stack.is_empty() && self.root.is_some() {
                    self.done = true;
                }
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart => {}
        }
    }
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(s: String) -> Kind {
    match s.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Kind::Null,
        "true" | "True" | "TRUE" => return Kind::Bool(true),
        "false" | "False" | "FALSE" => return Kind::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Kind::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Kind::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Kind::Float(f64::NAN),
        _ => {}
    }
    let b = s.as_bytes();
    let digits = |t: &[u8]| !t.is_empty() && t.iter().all(u8::is_ascii_digit);
    let unsigned = b
        .strip_prefix(b"-")
        .or_else(|| b.strip_prefix(b"+"))
        .unwrap_or(b);
    if digits(unsigned) {
        if let Ok(i) = s.parse::<i64>() {
            return Kind::Int(i);
        }
        if let Ok(f) = s.parse::<f64>() {
            return Kind::Float(f);
        }
    }
    if let Some(hex) = s.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Kind::Int(i);
    }
    if let Some(oct) = s.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Kind::Int(i);
    }
    if is_core_float(unsigned)
        && let Ok(f) = s.parse::<f64>()
    {
        return Kind::Float(f);
    }
    Kind::Str(s.into())
}

/// `( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?` (sign already stripped).
fn is_core_float(b: &[u8]) -> bool {
    let mut i = 0;
    let int_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        i += frac_digits;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp == 0 {
            return false;
        }
        i += exp;
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Node {
        match parse(s) {
            Ok(n) => n,
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn scalars_resolve() {
        let n = p("a: 1\nb: 1.5\nc: true\nd: ~\ne: '1'\nf: 30m\ng: 1e3\nh: -7\n");
        let j = n.to_json();
        assert_eq!(
            j,
            serde_json::json!({"a":1,"b":1.5,"c":true,"d":null,"e":"1","f":"30m","g":1000.0,"h":-7})
        );
    }

    #[test]
    fn positions() {
        let n = p("name: x\nsteps:\n  a:\n    uses: p.a\n");
        let Kind::Map(top) = &n.kind else {
            panic!("map")
        };
        assert_eq!(top[0].key_pos, Pos::new(1, 1));
        assert_eq!(top[0].value.pos, Pos::new(1, 7));
        assert_eq!(top[1].key_pos, Pos::new(2, 1));
        let Kind::Map(steps) = &top[1].value.kind else {
            panic!("map")
        };
        assert_eq!(steps[0].key_pos, Pos::new(3, 3));
        let Kind::Map(a) = &steps[0].value.kind else {
            panic!("map")
        };
        assert_eq!(a[0].value.pos, Pos::new(4, 11));
    }

    #[test]
    fn duplicate_and_syntax() {
        let e = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(e[0].pos, Pos::new(2, 1));
        assert_eq!(e[0].message, "duplicate key `a`");
        let e = parse("a: [1, 2\n").unwrap_err();
        assert!(
            e[0].message.starts_with("YAML syntax error"),
            "{}",
            e[0].message
        );
        let e = parse("? [a]\n: 1\n").unwrap_err();
        assert_eq!(e[0].message, "mapping keys must be scalars");
    }

    #[test]
    fn aliases_expand_and_are_bounded() {
        let n = p("a: &x {k: 1}\nb: *x\n");
        assert_eq!(n.to_json(), serde_json::json!({"a":{"k":1},"b":{"k":1}}));
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            s.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let e = parse(&s).unwrap_err();
        assert!(e[0].message.starts_with("document too large"));
    }

    /// The reproduction of issue 11: a 100 KB string anchored and aliased in five nested levels of ten
    /// (10 GB expanded).
    fn string_bomb() -> String {
        let mut s = format!(
            "name: bomb\nversion: 1\nx0: &a0 \"{}\"\n",
            "a".repeat(100_000)
        );
        for level in 1..=5 {
            let prev = level - 1;
            let items = vec![format!("*a{prev}"); 10].join(", ");
            s.push_str(&format!("x{level}: &a{level} [{items}]\n"));
        }
        s.push_str("steps: { s: { uses: t.echo, with: { v: *a5 } } }\n");
        s
    }

    fn too_large(source: &str) -> YamlError {
        match parse(source) {
            Ok(_) => panic!("accepted"),
            Err(mut e) => {
                assert_eq!(e.len(), 1, "{e:?}");
                e.remove(0)
            }
        }
    }

    #[test]
    fn a_string_aliased_in_nested_levels_stops_at_the_byte_budget() {
        let e = too_large(&string_bomb());
        assert_eq!(
            e.message,
            format!(
                "document too large (more than {MAX_EXPANDED_BYTES} bytes after expanding aliases)"
            )
        );
        // Level 1 stands for 1 MB, level 2 for 10 MB; the alias that crosses 16 MiB is in level 3, line 6.
        assert_eq!(e.pos.line, 6, "{e:?}");
    }

    #[test]
    fn many_small_aliases_stop_at_the_alias_node_budget() {
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let items = vec![format!("*a{}", i - 1); 10].join(", ");
            s.push_str(&format!("a{i}: &a{i} [{items}]\n"));
        }
        let e = too_large(&s);
        assert_eq!(
            e.message,
            format!("document too large (its aliases stand for more than {MAX_ALIAS_NODES} nodes)")
        );
    }

    #[test]
    fn aliases_of_mappings_and_sequences_are_counted() {
        let big = format!("\"{}\"", "m".repeat(1_000_000));
        // A mapping holding a sequence holding the string, aliased 20 times: 20 MB.
        let mut s = format!("m: &m {{ k: [{big}] }}\nl:\n");
        for _ in 0..20 {
            s.push_str("  - *m\n");
        }
        let e = too_large(&s);
        assert!(
            e.message.ends_with("bytes after expanding aliases)"),
            "{e:?}"
        );
        assert_eq!(e.pos.line, 2 + 16, "{e:?}");
    }

    #[test]
    fn aliases_as_keys_are_counted() {
        let mut s = format!("k: &k \"{}\"\nm:\n", "k".repeat(1_000_000));
        for i in 0..20 {
            s.push_str(&format!("  ? *k\n  : {i}\n"));
        }
        let e = too_large(&s);
        assert!(
            e.message.ends_with("bytes after expanding aliases)"),
            "{e:?}"
        );
    }

    #[test]
    fn nested_anchors_share_instead_of_copying() {
        // Sixty anchors, one inside the other, around aliases of a 100 KB string: each anchor is a second
        // reference to the same list, not a copy of everything inside it.
        let mut s = format!("s: &s \"{}\"\nl: ", "s".repeat(100_000));
        for i in 0..60 {
            s.push_str(&format!("&l{i} ["));
        }
        s.push_str(&vec!["*s"; 100].join(", "));
        s.push_str(&"]".repeat(60));
        s.push('\n');
        let n = p(&s);
        let Kind::Map(top) = &n.kind else {
            panic!("map")
        };
        assert_eq!(top.len(), 2);
    }

    #[test]
    fn a_document_without_aliases_is_within_the_byte_budget() {
        // Escapes that grow (`\L` is three bytes) and implicit nulls (`{a, b}`) still stand for less than
        // twice the source.
        let s = format!(
            "a: \"{}\"\nb: {{{}}}\n",
            "\\L".repeat(1000),
            (0..1000)
                .map(|i| format!("k{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut b = Builder::default();
        let mut parser = Parser::new_from_str(&s);
        assert!(parser.load(&mut b, false).is_ok());
        assert!(b.exceeded.is_none());
        assert!(
            b.total.bytes < 2 * s.len(),
            "{} for {}",
            b.total.bytes,
            s.len()
        );
    }

    #[test]
    fn a_large_source_is_refused_before_parsing() {
        let s = format!("a: \"{}\"\n", "x".repeat(MAX_SOURCE_BYTES));
        let e = too_large(&s);
        assert_eq!(
            e.message,
            format!("document too large (more than {MAX_SOURCE_BYTES} bytes)")
        );
        assert_eq!(e.pos, Pos::new(1, MAX_SOURCE_BYTES + 1));
    }

    #[test]
    fn a_nul_is_an_error_at_its_place() {
        let e = too_large("a: 1\n\0b: 2\n");
        assert_eq!(e.pos, Pos::new(2, 1));
        assert!(
            e.message.starts_with("a NUL character is not allowed"),
            "{e:?}"
        );
        let e = too_large("a: 1\nb: \"x\0y\"\n");
        assert_eq!(e.pos, Pos::new(2, 6));
        // The escape is fine.
        assert_eq!(
            p("a: \"x\\0y\"").to_json(),
            serde_json::json!({"a": "x\u{0}y"})
        );
    }

    #[test]
    fn not_utf8_is_an_error_at_the_first_bad_byte() {
        let e = decode(b"a: 1\nb: \xc3\xa9\xff\n").unwrap_err();
        assert_eq!(e.pos, Pos::new(2, 5));
        assert_eq!(
            e.message,
            "not UTF-8 text: an invalid UTF-8 sequence (0xFF) at byte 10; a playbook must be UTF-8"
        );
        let e = decode(b"a: \xe2\x82").unwrap_err();
        assert_eq!(e.pos, Pos::new(1, 4));
        assert!(
            e.message
                .contains("a truncated UTF-8 sequence (0xE2 0x82) at byte 3"),
            "{e:?}"
        );
        assert_eq!(pos_at(b"a\r\nb\rc", 5), Pos::new(3, 1));
    }

    #[test]
    fn duplicate_keys_in_large_mappings() {
        let mut s: String = (0..100).map(|i| format!("k{i}: {i}\n")).collect();
        s.push_str("k42: again\nk7: again\n");
        let e = parse(&s).unwrap_err();
        let found: Vec<_> = e.iter().map(|e| (e.pos.line, e.message.as_str())).collect();
        assert_eq!(
            found,
            [(101, "duplicate key `k42`"), (102, "duplicate key `k7`")]
        );
    }

    #[test]
    fn errors_past_the_cap_are_counted() {
        let s: String = (0..150).map(|_| "k: 1\n").collect();
        let e = parse(&s).unwrap_err();
        assert_eq!(e.len(), MAX_DIAGNOSTICS + 1);
        assert_eq!(
            e[MAX_DIAGNOSTICS].message,
            format!("49 more problems not shown (only the first {MAX_DIAGNOSTICS} are reported)")
        );
        assert_eq!(e[MAX_DIAGNOSTICS].pos, Pos::new(102, 1));
    }

    #[test]
    fn deep_nesting_is_an_error() {
        let s = "[".repeat(200) + &"]".repeat(200);
        let e = parse(&s).unwrap_err();
        assert!(
            e[0].message.starts_with("nesting deeper"),
            "{}",
            e[0].message
        );
    }
}
