//! Property tests of the sandboxed expression evaluator: generated and mutated expressions — seeded from the bundled
//! playbooks' own, and built from the operators and filters that allocate or loop — never panic the host, end within
//! a bounded time, keep the host's memory bounded, and fail (when they fail) with a kind and a message.
//!
//! `PROPTEST_CASES=5000 cargo test -p qila-sandbox --test expressions` runs a longer search (default: 64 cases per
//! property).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use qila_expr::{Evaluator, FailureKind, Piece, Segment};
use qila_sandbox::{ExpressionLimits, SandboxedEvaluator};

/// The expressions of the bundled playbooks (`playbooks/*.yaml`).
fn seeds() -> &'static [String] {
    static SEEDS: OnceLock<Vec<String>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../playbooks");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).expect("playbooks/") {
            let path = entry.expect("an entry").path();
            if path.extension().is_none_or(|x| x != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a playbook");
            let mut rest = text.as_str();
            while let Some(open) = rest.find("${{") {
                let Some(close) = rest[open..].find("}}") else {
                    break;
                };
                out.push(rest[open + 3..open + close].trim().to_owned());
                rest = &rest[open + close + 2..];
            }
        }
        assert!(out.len() > 20, "too few seed expressions: {out:?}");
        out
    })
}

const CONTEXT: &str = r#"{"inputs": {"ip": "203.0.113.7", "n": 3, "alert": {"level": "high", "group_key": "source.ip=203.0.113.7", "event_ids": [1, 2, 3], "rule_title": "t"}, "iocs": "1.2.3.4 evil.example", "target": "10.0.0.0/8", "reason": "r", "min_confidence": 50, "advisory_id": "A-1"}, "steps": {"classify": {"output": {"address": "203.0.113.7", "is_global": true, "network": {"size": 1}}, "status": "succeeded"}, "scope": {"output": {"is_global": true, "too_large": false, "addresses": 1, "cidr": "203.0.113.7/32"}, "status": "succeeded"}}, "event": {"level": "high"}}"#;

fn evaluator() -> Arc<SandboxedEvaluator> {
    static EV: OnceLock<Arc<SandboxedEvaluator>> = OnceLock::new();
    EV.get_or_init(|| {
        Arc::new(SandboxedEvaluator::new(ExpressionLimits::default(), None).expect("the evaluator"))
    })
    .clone()
}

/// Evaluates `pieces` and checks what any answer must be.
fn check(rt: &tokio::runtime::Runtime, pieces: &[Piece]) -> Result<(), TestCaseError> {
    let ev = evaluator();
    let started = Instant::now();
    let answer = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), ev.evaluate(CONTEXT, pieces)).await
    });
    let took = started.elapsed();
    let answer = answer.map_err(|_| TestCaseError::fail(format!("{pieces:?} ran for 30 s")))?;
    match answer {
        Ok(texts) => {
            prop_assert_eq!(texts.len(), pieces.len());
            for t in &texts {
                prop_assert!(
                    serde_json::from_str::<serde_json::Value>(t).is_ok(),
                    "{}",
                    t
                );
            }
        }
        Err(f) => {
            prop_assert!(!f.message.is_empty());
            // A failure names its piece when it belongs to one, and is never the evaluator breaking.
            prop_assert!(f.piece.is_none_or(|p| p < pieces.len()), "{:?}", f);
            prop_assert!(f.kind != FailureKind::Unavailable, "{pieces:?}: {f:?}");
        }
    }
    // The work limit is about a tenth of a second of CPU; a loaded machine may take several times that.
    prop_assert!(took < Duration::from_secs(10), "{pieces:?} took {took:?}");
    Ok(())
}

/// Expressions built from what allocates, loops or nests, with numbers from small to absurd.
fn hostile() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        (0u64..10).prop_map(|n| n.to_string()),
        (0u64..100_000).prop_map(|n| n.to_string()),
        Just("1000000000".to_owned()),
        Just("100000000000".to_owned()),
        Just("-1".to_owned()),
        Just("4294967296".to_owned()),
    ];
    let atom = prop_oneof![
        Just("inputs.ip".to_owned()),
        Just("inputs.alert".to_owned()),
        Just("steps.classify.output".to_owned()),
        Just("steps".to_owned()),
        Just("'a\\nb'".to_owned()),
        Just("[1, 'x', none]".to_owned()),
        Just("{'k': [1, 2]}".to_owned()),
        number.clone().prop_map(|n| format!("range({n})")),
        number.clone().prop_map(|n| format!("([1] * {n})")),
        number.clone().prop_map(|n| format!("('xy' * {n})")),
        number.clone(),
    ];
    let filter = prop_oneof![
        Just("list".to_owned()),
        Just("sum".to_owned()),
        Just("join".to_owned()),
        Just("tojson".to_owned()),
        Just("length".to_owned()),
        Just("unique".to_owned()),
        Just("reverse".to_owned()),
        Just("sort".to_owned()),
        Just("upper".to_owned()),
        Just("items".to_owned()),
        Just("batch(3)".to_owned()),
        number.clone().prop_map(|n| format!("indent({n})")),
        number.clone().prop_map(|n| format!("tojson(indent={n})")),
        number.clone().prop_map(|n| format!("center({n})")),
        number.clone().prop_map(|n| format!("truncate({n})")),
        Just("replace('x', 'yyyyyyyy')".to_owned()),
        Just("map('string')".to_owned()),
        Just("default('d')".to_owned()),
    ];
    let leaf = (atom, prop::collection::vec(filter, 0..4))
        .prop_map(|(a, fs)| fs.iter().fold(a, |acc, f| format!("({acc}) | {f}")));
    leaf.prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) ~ ({b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) + ({b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) * ({b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("[{a}, {b}]")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) if ({b}) else none")),
            inner.clone().prop_map(|a| format!("({a})[0]")),
            inner.prop_map(|a| format!("not ({a})")),
        ]
    })
}

/// A seed expression with a few bytes replaced, inserted or removed.
fn mutated() -> impl Strategy<Value = String> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..6);
    (any::<prop::sample::Index>(), edits).prop_map(|(which, edits)| {
        let seeds = seeds();
        let mut bytes = seeds[which.index(seeds.len())].clone().into_bytes();
        for (at, byte, op) in edits {
            let byte = b" '\"()[]{}|.~*+-%<>=!,:x0\\"[byte as usize % 25];
            let i = if bytes.is_empty() {
                0
            } else {
                at.index(bytes.len())
            };
            match op {
                0 if !bytes.is_empty() => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ if !bytes.is_empty() => {
                    bytes.remove(i);
                }
                _ => {}
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// 64 cases per property, or `PROPTEST_CASES`.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn hostile_expressions_end_in_an_answer_or_a_named_limit(src in hostile()) {
        let rt = runtime();
        check(&rt, &[Piece::Value(src.clone())])?;
        check(&rt, &[Piece::Condition(src.clone())])?;
        check(&rt, &[Piece::Text(vec![Segment::Literal("x=".into()), Segment::Expression(src)])])?;
    }

    #[test]
    fn mutated_seeds_never_break_the_evaluator(src in mutated(), again in mutated()) {
        let rt = runtime();
        check(&rt, &[Piece::Value(src), Piece::Condition(again)])?;
    }

    #[test]
    fn arbitrary_text_never_breaks_the_evaluator(src in ".{0,200}") {
        let rt = runtime();
        check(&rt, &[Piece::Value(src)])?;
    }
}
