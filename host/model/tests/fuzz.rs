//! Property tests of the playbook loader (YAML with positions) and validation: documents mutated from the
//! bundled playbooks and the test playbooks in `tests/fixtures/playbooks`, documents generated from the
//! playbook vocabulary, alias bombs of random shape, and raw bytes. Each must load or fail without a panic,
//! within a bounded time, and every diagnostic must point at a real place in its document.
//!
//! The default run takes a few seconds; `PROPTEST_CASES=5000 cargo test -p qila-model --test fuzz` runs longer.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use qila_model::limits::{MAX_ALIAS_NODES, MAX_EXPANDED_BYTES};
use qila_model::{Diagnostics, Playbook, StaticCatalog, source_text};
use serde_json::json;

const SEEDS: &[&str] = &[
    include_str!("../../../playbooks/alert-triage.yaml"),
    include_str!("../../../playbooks/approve-block.yaml"),
    include_str!("../../../playbooks/block-check.yaml"),
    include_str!("../../../playbooks/defang-report.yaml"),
    include_str!("../../../playbooks/hello.yaml"),
    include_str!("../../../playbooks/ioc-triage.yaml"),
    include_str!("../../../playbooks/ip-triage.yaml"),
    include_str!("../../../tests/fixtures/playbooks/durable.yaml"),
    include_str!("../../../tests/fixtures/playbooks/anchors.yaml"),
];

/// Far above what any case takes (milliseconds), far below "unbounded"; debug builds are slow.
const BOUND: Duration = Duration::from_secs(5);

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

fn catalog() -> StaticCatalog {
    let schema = json!({
        "type": "object",
        "properties": { "ip": { "type": "string" }, "n": { "type": "integer" } },
        "additionalProperties": { "type": ["string", "array", "object", "integer", "boolean", "null"] }
    });
    let mut c = StaticCatalog::new();
    for (plugin, action) in [
        ("enrich", "classify-ip"),
        ("notify", "send"),
        ("p", "a"),
        ("core", "log"),
        ("dns", "resolve"),
        ("net", "scan"),
        ("cases", "note"),
    ] {
        c.add(plugin, action, schema.clone());
    }
    c
}

/// Asserts that every diagnostic names `file` and a line and column inside `source` (a column may be one past
/// the end of its line, a line one past the last, where the problem is the end of the input).
fn assert_positioned(source: &str, d: &Diagnostics) {
    assert!(!d.is_empty(), "an error without a diagnostic");
    // Line breaks as YAML counts them: `\n`, `\r\n` and a lone `\r`.
    let lines: Vec<&str> = source
        .split('\n')
        .flat_map(|l| {
            let l = l.strip_suffix('\r').unwrap_or(l);
            l.split('\r')
        })
        .collect();
    for diag in d.iter() {
        assert_eq!(diag.file, "fuzz.yaml");
        assert!(!diag.message.is_empty());
        assert!(
            diag.line >= 1 && diag.line <= lines.len() + 1,
            "line out of the document: {diag} ({} lines)",
            lines.len()
        );
        let width = lines.get(diag.line - 1).map_or(0, |l| l.chars().count());
        assert!(
            diag.col >= 1 && diag.col <= width + 2,
            "column out of its line: {diag} (line of {width} characters)"
        );
    }
}

/// Loads `source` (parse, then check against the catalog), asserting the properties.
fn check(source: &str) {
    let started = Instant::now();
    let result = Playbook::load(source, "fuzz.yaml", &catalog());
    let took = started.elapsed();
    assert!(took < BOUND, "took {took:?}");
    if let Err(d) = result {
        assert_positioned(source, &d);
    }
}

/// Raw bytes: decoded first (the path of `qila validate` and of publishing).
fn check_bytes(bytes: &[u8]) {
    match source_text(bytes, "fuzz.yaml") {
        Ok(text) => check(text),
        Err(d) => {
            let valid = String::from_utf8_lossy(bytes);
            assert_eq!(d.len(), 1);
            assert!(d.iter().all(|x| x.message.starts_with("not UTF-8 text")));
            assert_positioned(&valid, &d);
        }
    }
}

/// Bits of YAML and playbook syntax that mutations insert.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(":".to_owned()),
        Just(": ".to_owned()),
        Just("- ".to_owned()),
        Just("\n".to_owned()),
        Just("\r\n".to_owned()),
        Just("\r".to_owned()),
        Just("  ".to_owned()),
        Just("\t".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just(",".to_owned()),
        Just("\"".to_owned()),
        Just("'".to_owned()),
        Just("#".to_owned()),
        Just("? ".to_owned()),
        Just("|".to_owned()),
        Just(">-".to_owned()),
        Just("!!str ".to_owned()),
        Just("%YAML 1.2\n".to_owned()),
        Just("---\n".to_owned()),
        Just("...\n".to_owned()),
        Just("&a ".to_owned()),
        Just("*a".to_owned()),
        Just("&b [*a, *a, *a] ".to_owned()),
        Just("${{ ".to_owned()),
        Just(" }}".to_owned()),
        Just("${{ steps.lookup.output }}".to_owned()),
        Just("${{ inputs.ip | lower }}".to_owned()),
        Just("needs: [".to_owned()),
        Just("uses: ".to_owned()),
        Just("with: ".to_owned()),
        Just("on_error: ".to_owned()),
        Just("\u{0}".to_owned()),
        Just("é".to_owned()),
        Just("\u{feff}".to_owned()),
        Just("\\L".to_owned()),
        "[a-z0-9_.-]{1,12}",
    ]
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, String),
    Delete(usize, usize),
    /// Copies a range of lines to after another line.
    CopyLines(usize, usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), token()).prop_map(|(at, t)| Edit::Insert(at, t)),
        2 => (any::<usize>(), 1usize..40).prop_map(|(at, n)| Edit::Delete(at, n)),
        1 => (any::<usize>(), 1usize..8, any::<usize>()).prop_map(|(a, n, b)| Edit::CopyLines(a, n, b)),
    ]
}

/// The nearest character boundary at or before `at % (len + 1)`.
fn boundary(s: &str, at: usize) -> usize {
    let mut i = at % (s.len() + 1);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(mut s: String, edits: &[Edit]) -> String {
    for e in edits {
        match e {
            Edit::Insert(at, t) => {
                let i = boundary(&s, *at);
                s.insert_str(i, t);
            }
            Edit::Delete(at, n) => {
                let i = boundary(&s, *at);
                let j = boundary(&s, i + n);
                if j > i {
                    s.replace_range(i..j, "");
                }
            }
            Edit::CopyLines(a, n, b) => {
                let lines: Vec<&str> = s.split_inclusive('\n').collect();
                if lines.is_empty() {
                    continue;
                }
                let from = a % lines.len();
                let to = (from + n).min(lines.len());
                let block: String = lines[from..to].concat();
                let at = b % lines.len();
                let mut out: String = lines[..=at].concat();
                out.push_str(&block);
                out.push_str(&lines[at + 1..].concat());
                s = out;
            }
        }
    }
    s
}

/// A document generated from the playbook vocabulary: nested mappings and lists with playbook keys, step
/// ids, expressions, anchors and aliases.
fn generated() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("name"),
        Just("version"),
        Just("steps"),
        Just("uses"),
        Just("needs"),
        Just("with"),
        Just("if"),
        Just("for_each"),
        Just("retry"),
        Just("on_error"),
        Just("on"),
        Just("inputs"),
        Just("outputs"),
        Just("type"),
        Just("a"),
        Just("b"),
        Just("c-d"),
    ];
    let scalar = prop_oneof![
        Just("p.a".to_owned()),
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("1".to_owned()),
        Just("-7".to_owned()),
        Just("true".to_owned()),
        Just("null".to_owned()),
        Just("string".to_owned()),
        Just("\"${{ steps.a.output }}\"".to_owned()),
        Just("\"${{ steps['c-d'].status }} and ${{ inputs.x }}\"".to_owned()),
        Just("\"${{ item }}\"".to_owned()),
        Just("\"${{ (\"".to_owned()),
        Just("*x".to_owned()),
        Just("&x [1, 2, *x]".to_owned()),
        "[a-z]{0,6}",
    ];
    let leaf = scalar.boxed();
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec((key.clone(), inner.clone()), 0..6).prop_map(|entries| {
                let body: Vec<String> = entries.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", body.join(", "))
            }),
            prop::collection::vec(inner, 0..6).prop_map(|items| format!("[{}]", items.join(", "))),
        ]
    })
    .prop_map(|body| format!("name: gen\nversion: 1\nsteps: {body}\n"))
}

proptest! {
    #![proptest_config(cases(48))]

    #[test]
    fn mutated_playbooks_load_or_fail_with_positions(
        seed in 0..SEEDS.len(),
        edits in prop::collection::vec(edit(), 1..8),
    ) {
        check(&apply(SEEDS[seed].to_owned(), &edits));
    }

    #[test]
    fn generated_documents_load_or_fail_with_positions(doc in generated()) {
        check(&doc);
    }

    #[test]
    fn raw_bytes_load_or_fail_with_positions(
        seed in 0..SEEDS.len(),
        cut in any::<usize>(),
        noise in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = SEEDS[seed].as_bytes().to_vec();
        let at = cut % (bytes.len() + 1);
        bytes.splice(at..at, noise);
        check_bytes(&bytes);
    }
}

proptest! {
    #![proptest_config(cases(16))]

    /// Aliases nested `levels` deep, `width` to a level, over a string of `len` bytes, placed under a
    /// step's `with` (where every later stage copies them): each either loads (small enough) or stops at a
    /// budget, within the time bound.
    #[test]
    fn alias_bombs_stop_at_a_budget(
        levels in 1usize..7,
        width in 1usize..12,
        len in prop_oneof![Just(1usize), 1usize..100, 1000usize..200_000],
        as_map in any::<bool>(),
    ) {
        let mut s = format!("name: bomb\nversion: 1\nx0: &a0 \"{}\"\n", "b".repeat(len));
        for level in 1..=levels {
            let prev = level - 1;
            let body = if as_map {
                let entries: Vec<String> = (0..width).map(|i| format!("k{i}: *a{prev}")).collect();
                format!("{{{}}}", entries.join(", "))
            } else {
                format!("[{}]", vec![format!("*a{prev}"); width].join(", "))
            };
            s.push_str(&format!("x{level}: &a{level} {body}\n"));
        }
        s.push_str(&format!("steps: {{ s: {{ uses: p.a, with: {{ v: *a{levels} }} }} }}\n"));
        let started = Instant::now();
        let result = Playbook::load(&s, "fuzz.yaml", &catalog());
        prop_assert!(started.elapsed() < BOUND);
        // What the document stands for: the string `width^levels` times, and as many nodes.
        let copies = (width as f64).powi(levels as i32);
        let huge = copies * (len as f64 + 1.0) > MAX_EXPANDED_BYTES as f64
            || copies > MAX_ALIAS_NODES as f64 * 2.0;
        match result {
            Ok(_) => prop_assert!(!huge, "a document standing for {copies} copies loaded"),
            Err(d) => {
                assert_positioned(&s, &d);
                let too_large = d.iter().any(|x| x.message.starts_with("document too large"));
                // The playbook has unknown top-level keys, so a small one fails too, but not for its size.
                prop_assert!(too_large || !huge, "{d}");
            }
        }
    }
}
