//! Times one validation of a generated playbook and prints its peak memory, for the figures in
//! `docs/benchmarks.md` (criterion's `cargo bench -p qila-model --bench validate` gives the timings):
//!
//! ```sh
//! cargo run --release -p qila-model --example validate_docs -- chain 100000
//! ```
//!
//! Kinds: `flat N`, `chain N`, `largest BYTES`, `file PATH`.

#[path = "../benches/docs/mod.rs"]
mod docs;

use std::time::Instant;

use qila_model::Playbook;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    let number = |i: usize| arg(i).parse::<usize>().unwrap_or(100_000);
    let source = match arg(0) {
        "flat" => docs::flat(number(1)),
        "chain" => docs::chain(number(1)),
        "largest" => docs::largest(number(1)),
        "file" => match std::fs::read_to_string(arg(1)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{}: {e}", arg(1));
                std::process::exit(2);
            }
        },
        _ => {
            eprintln!("usage: validate_docs flat N | chain N | largest BYTES | file PATH");
            std::process::exit(2);
        }
    };
    let before = peak_rss_kib();
    let started = Instant::now();
    let result = Playbook::load(&source, "generated.yaml", &docs::catalog());
    let took = started.elapsed();
    match &result {
        Ok(pb) => println!(
            "ok: {} steps, {} bytes, {:.3} s, peak RSS {} MiB (before {} MiB)",
            pb.steps.len(),
            source.len(),
            took.as_secs_f64(),
            peak_rss_kib() / 1024,
            before / 1024
        ),
        Err(d) => {
            let first = d.iter().next().map(ToString::to_string).unwrap_or_default();
            println!(
                "invalid: {} diagnostics (first: {}), {} bytes, {:.3} s, peak RSS {} MiB (before {} MiB)",
                d.len(),
                first.chars().take(200).collect::<String>(),
                source.len(),
                took.as_secs_f64(),
                peak_rss_kib() / 1024,
                before / 1024
            )
        }
    }
}
