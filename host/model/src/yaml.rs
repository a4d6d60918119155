//! A YAML document as a tree of nodes that remember their source position.
//!
//! Built from `yaml-rust2`'s event parser. Plain scalars are resolved with the YAML 1.2 core schema
//! (`null`/`~`/empty, `true`/`false`, integers, floats, else strings); quoted and block scalars are
//! always strings. Tags are ignored. Aliases are expanded (bounded, against "billion laughs").

use std::collections::HashMap;

use serde_json::Value;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::diag::Pos;

/// Deepest nesting accepted (keeps every recursive walk over a node tree far from the stack limit).
pub(crate) const MAX_DEPTH: usize = 64;
/// Most nodes a document may expand to (aliases included).
const MAX_NODES: usize = 1_000_000;

/// A YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

/// The value of a node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in source order: key, key position, value.
    Map(Vec<Entry>),
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
            Kind::Str(s) => Value::String(s.clone()),
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

/// Parses the first document of `source`. An empty document is a `Null` node at 1:1.
/// Duplicate keys and non-scalar keys are reported as errors (all of them).
pub(crate) fn parse(source: &str) -> Result<Node, Vec<YamlError>> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(source);
    if let Err(e) = parser.load(&mut builder, false) {
        let m = e.marker();
        return Err(vec![YamlError {
            pos: Pos::new(m.line().max(1), m.col() + 1),
            message: format!("YAML syntax error: {}", e.info()),
        }]);
    }
    if !builder.errors.is_empty() {
        return Err(builder.errors);
    }
    Ok(builder.root.unwrap_or(Node {
        pos: Pos::new(1, 1),
        kind: Kind::Null,
    }))
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<Entry>,
        pending_key: Option<(String, Pos)>,
        /// The key was not a scalar: skip its value.
        skip_value: bool,
    },
    /// A complex (non-scalar) mapping key being skipped.
    Skip { depth: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    anchors: HashMap<usize, Node>,
    errors: Vec<YamlError>,
    nodes: usize,
    done: bool,
}

fn pos_of(m: Marker) -> Pos {
    // yaml-rust2 markers: 1-based line, 0-based column.
    Pos::new(m.line().max(1), m.col() + 1)
}

fn node_count(n: &Node) -> usize {
    match &n.kind {
        Kind::Seq(items) => 1 + items.iter().map(node_count).sum::<usize>(),
        Kind::Map(entries) => 1 + entries.iter().map(|e| node_count(&e.value)).sum::<usize>(),
        _ => 1,
    }
}

impl Builder {
    fn error(&mut self, pos: Pos, message: String) {
        self.errors.push(YamlError { pos, message });
    }

    /// Adds a finished node to the innermost container (or makes it the root).
    fn push_node(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
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
                pending_key,
                skip_value,
                ..
            }) => {
                if *skip_value {
                    *skip_value = false;
                } else if let Some((key, key_pos)) = pending_key.take() {
                    if entries.iter().any(|e| e.key == key) {
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

    fn end_collection(&mut self) {
        match self.stack.pop() {
            Some(Frame::Skip { depth }) if depth > 1 => {
                self.stack.push(Frame::Skip { depth: depth - 1 });
            }
            Some(Frame::Skip { .. }) | None => {}
            Some(Frame::Seq { pos, anchor, items }) => {
                self.push_node(
                    Node {
                        pos,
                        kind: Kind::Seq(items),
                    },
                    anchor,
                );
            }
            Some(Frame::Map {
                pos,
                anchor,
                entries,
                ..
            }) => {
                self.push_node(
                    Node {
                        pos,
                        kind: Kind::Map(entries),
                    },
                    anchor,
                );
            }
        }
    }
}

fn scalar_key(node: &Node) -> Option<String> {
    match &node.kind {
        Kind::Str(s) => Some(s.clone()),
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
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            self.error(
                pos,
                format!("document too large (more than {MAX_NODES} nodes)"),
            );
            self.done = true;
            return;
        }
        match ev {
            Event::Scalar(value, style, anchor, _tag) => {
                if matches!(self.stack.last(), Some(Frame::Skip { .. })) {
                    return;
                }
                let kind = if style == TScalarStyle::Plain {
                    resolve_plain(value)
                } else {
                    Kind::Str(value)
                };
                self.push_node(Node { pos, kind }, anchor);
            }
            Event::Alias(id) => {
                if matches!(self.stack.last(), Some(Frame::Skip { .. })) {
                    return;
                }
                match self.anchors.get(&id).cloned() {
                    Some(mut node) => {
                        self.nodes += node_count(&node);
                        if self.nodes > MAX_NODES {
                            self.error(pos, format!("document too large (more than {MAX_NODES} nodes after expanding aliases)"));
                            self.done = true;
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
                        self.push_node(node, 0);
                    }
                    None => self.error(pos, "unknown alias".to_owned()),
                }
            }
            Event::SequenceStart(anchor, _) => self.start_collection(
                Frame::Seq {
                    pos,
                    anchor,
                    items: Vec::new(),
                },
                pos,
            ),
            Event::MappingStart(anchor, _) => self.start_collection(
                Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    pending_key: None,
                    skip_value: false,
                },
                pos,
            ),
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
    Kind::Str(s)
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
