//! What publishing the largest document `POST /api/v1/playbooks` accepts costs the server, for the figures in
//! docs/benchmarks.md (not a test):
//!
//! ```text
//! qila-publish-cpu URL TOKEN PID COUNT
//! ```
//!
//! For each kind of document just under the 1 MiB body limit (`realistic`: steps with needs, expressions, an
//! `if` and a `retry`; `flat`: as many small steps as fit; `chain`: a `needs:` chain; `expressions`: the most
//! expressions a playbook may hold; `aliases`: aliases expanded to just under the byte budget), publishes
//! COUNT distinct documents one after the other and prints the server's CPU time per publish (user + system,
//! from `/proc/PID/stat`), the wall time per publish and the server's peak RSS.

use std::fmt::Write;
use std::time::Instant;

/// The server's body limit for publishing (`ServerOptions::max_body_bytes`).
const LIMIT: usize = 1024 * 1024;

fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces): utime is the 14th field
    // of the line, stime the 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

fn peak_rss(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Appends `step(i)` while the document stays within the limit.
fn fill(head: &str, step: impl Fn(usize) -> String) -> String {
    let mut s = head.to_owned();
    for i in 0.. {
        let next = step(i);
        if s.len() + next.len() > LIMIT {
            break;
        }
        s.push_str(&next);
    }
    s
}

fn document(kind: &str, n: usize) -> String {
    let head = format!(
        "name: publish-{kind}-{n}\nversion: 1\ninputs:\n  ip: {{ type: string, default: 192.0.2.1 }}\nsteps:\n"
    );
    match kind {
        "realistic" => fill(&head, |i| {
            let mut s = format!("  step-{i}:\n    uses: core.echo\n");
            if i > 0 {
                let needs: Vec<String> = [1, 7, 31]
                    .iter()
                    .filter(|&&d| d <= i)
                    .map(|d| format!("step-{}", i - d))
                    .collect();
                let _ = writeln!(s, "    needs: [{}]", needs.join(", "));
                let _ = writeln!(
                    s,
                    "    if: \"${{{{ steps['step-{}'].status == 'succeeded' }}}}\"",
                    i - 1
                );
            }
            s.push_str("    retry: { attempts: 3, backoff: exponential }\n    with:\n");
            let _ = writeln!(
                s,
                "      value: \"${{{{ inputs.ip }}}} #{i}\"\n      n: {i}"
            );
            s
        }),
        "flat" => fill(&head, |i| format!("  s{i}: {{uses: core.echo}}\n")),
        "chain" => fill(&head, |i| match i {
            0 => "  s0: {uses: core.echo}\n".to_owned(),
            _ => format!("  s{i}: {{uses: core.echo, needs: s{}}}\n", i - 1),
        }),
        "expressions" => {
            let mut s = head;
            s.push_str("  s:\n    uses: core.echo\n    with:\n      v:\n");
            for i in 0..14_900 {
                let _ = writeln!(s, "        - \"${{{{ inputs.ip ~ '{i}' }}}}\"");
            }
            s
        }
        "aliases" => {
            // A 100 KB string, ten aliases of it in a list, that list aliased fifteen times: 15 MB.
            let mut s = format!(
                "name: publish-{kind}-{n}\nversion: 1\nsteps:\n  s:\n    uses: core.echo\n    with:\n      a: &a \"{}\"\n      b: &b [{}]\n      c: [",
                "x".repeat(100_000),
                ["*a"; 10].join(", ")
            );
            s.push_str(&["*b"; 14].join(", "));
            s.push_str("]\n");
            s
        }
        _ => String::new(),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: qila-publish-cpu URL TOKEN PID COUNT");
        return std::process::ExitCode::from(2);
    }
    let (base, token, pid) = (&args[1], &args[2], &args[3]);
    let count: usize = args[4].parse().unwrap_or(5).max(1);
    let tick_ms = 1000.0 / 100.0; // USER_HZ is 100 on Linux.
    let http = reqwest::Client::new();
    for kind in ["realistic", "flat", "chain", "expressions", "aliases"] {
        let docs: Vec<String> = (0..count).map(|n| document(kind, n)).collect();
        let before = cpu_ticks(pid);
        let started = Instant::now();
        let mut statuses = Vec::new();
        for doc in &docs {
            let resp = http
                .post(format!("{base}/api/v1/playbooks?file={kind}.yaml"))
                .bearer_auth(token)
                .header("content-type", "application/yaml")
                .body(doc.clone())
                .send()
                .await;
            match resp {
                Ok(r) => {
                    let status = r.status().as_u16();
                    if status >= 300 {
                        let text = r.text().await.unwrap_or_default();
                        eprintln!(
                            "{kind}: {status} {}",
                            text.chars().take(300).collect::<String>()
                        );
                    }
                    statuses.push(status);
                }
                Err(e) => {
                    eprintln!("{kind}: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            }
        }
        let wall = started.elapsed().as_secs_f64() * 1000.0 / count as f64;
        let cpu = (cpu_ticks(pid) - before) as f64 * tick_ms / count as f64;
        println!(
            "{kind:<12} {:>8} bytes  status {:?}  server CPU {cpu:>7.1} ms/publish  wall {wall:>7.1} ms/publish  peak RSS {}",
            docs[0].len(),
            statuses.first().copied().unwrap_or(0),
            peak_rss(pid)
        );
    }
    std::process::ExitCode::SUCCESS
}
