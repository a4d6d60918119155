//! Generated playbooks shared by the validation benchmark and the `validate_docs` example.

use std::fmt::Write;

use qila_model::StaticCatalog;
use serde_json::json;

/// The catalog the generated playbooks are checked against: `t.echo` takes `{ value, n, tags }`.
pub fn catalog() -> StaticCatalog {
    StaticCatalog::new().with(
        "t",
        "echo",
        json!({
            "type": "object",
            "properties": {
                "value": {},
                "n": { "type": "integer" },
                "tags": { "type": "array", "items": { "type": "string" } }
            },
            "additionalProperties": false
        }),
    )
}

fn header(out: &mut String, name: &str) {
    let _ = write!(
        out,
        "name: {name}\nversion: 1\ninputs:\n  ip: {{ type: string, format: ipv4 }}\nsteps:\n"
    );
}

/// `n` independent steps.
pub fn flat(n: usize) -> String {
    let mut s = String::with_capacity(n * 48);
    header(&mut s, "flat");
    for i in 0..n {
        let _ = writeln!(s, "  s{i}: {{ uses: t.echo, with: {{ n: {i} }} }}");
    }
    s
}

/// `n` steps, each needing the one before it; every twentieth reads the output of the one before it and the
/// status of the first (an ancestor `n` steps up).
pub fn chain(n: usize) -> String {
    let mut s = String::with_capacity(n * 48);
    header(&mut s, "chain");
    let _ = writeln!(s, "  s0: {{uses: t.echo}}");
    for i in 1..n {
        let p = i - 1;
        if i % 20 == 0 {
            let _ = writeln!(
                s,
                "  s{i}: {{uses: t.echo, needs: s{p}, with: {{value: \"${{{{steps.s{p}.output}}}} ${{{{steps.s0.status}}}}\"}}}}"
            );
        } else {
            let _ = writeln!(s, "  s{i}: {{uses: t.echo, needs: s{p}}}");
        }
    }
    s
}

/// The largest document `POST /api/v1/playbooks` accepts (just under its 1 MiB body limit): a realistic
/// mix of steps (each needing up to three earlier ones, with expressions over their outputs, an `if`, a
/// `retry`, tags), not a degenerate one.
pub fn largest(limit: usize) -> String {
    let mut s = String::with_capacity(limit);
    header(&mut s, "largest");
    let mut i = 0usize;
    loop {
        let mut step = String::new();
        let _ = writeln!(step, "  step-{i}:");
        let _ = writeln!(step, "    uses: t.echo");
        if i > 0 {
            let needs: Vec<String> = [1, 7, 31]
                .iter()
                .filter(|&&d| d <= i)
                .map(|d| format!("step-{}", i - d))
                .collect();
            let _ = writeln!(step, "    needs: [{}]", needs.join(", "));
            let _ = writeln!(
                step,
                "    if: \"${{{{ steps['step-{}'].status == 'succeeded' }}}}\"",
                i - 1
            );
        }
        let _ = writeln!(step, "    retry: {{ attempts: 3, backoff: exponential }}");
        let _ = writeln!(step, "    with:");
        if i > 0 {
            let _ = writeln!(
                step,
                "      value: \"${{{{ steps['step-{}'].output.value | default(inputs.ip) }}}}\"",
                i - 1
            );
        } else {
            let _ = writeln!(step, "      value: \"${{{{ inputs.ip }}}}\"");
        }
        let _ = writeln!(step, "      n: {i}");
        let _ = writeln!(step, "      tags: [triage, \"host-{i}\"]");
        if s.len() + step.len() > limit {
            break;
        }
        s.push_str(&step);
        i += 1;
    }
    s
}
