//! Hundreds of evaluations that each hit the memory limit leave this process's memory where it was, within what the
//! evaluator's instance pool keeps resident: what they allocated lived in instances that were dropped. (A test
//! binary of its own: no other test allocates beside it while it measures.)

use qila_expr::{Evaluator, FailureKind, Piece};
use qila_sandbox::{ExpressionLimits, SandboxedEvaluator};

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn memory_limits_leave_the_host_memory_under_100_mib() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let ev = SandboxedEvaluator::new(ExpressionLimits::default(), None).expect("the evaluator");
    let context = r#"{"inputs": {}, "steps": {}}"#;
    // Each makes 100 MB of string if nothing stops it.
    let pieces = [Piece::Value("(['x' * 1000] * 100000) | join".into())];
    let _ = rt.block_on(ev.evaluate(context, &[Piece::Value("1".into())]));
    let before = rss_kib();
    for _ in 0..500 {
        let f = rt.block_on(ev.evaluate(context, &pieces)).unwrap_err();
        assert_eq!(f.kind, FailureKind::MemoryLimit, "{f:?}");
        assert_eq!(f.message, "expression exceeded its memory limit of 16 MiB");
    }
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 100, "the host grew by {grown_mib} MiB");
    eprintln!("500 evaluations stopped at 16 MiB each; the host grew by {grown_mib} MiB");
}
