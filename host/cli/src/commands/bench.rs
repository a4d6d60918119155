//! `qila bench`: measures the engine with the real sandbox and the real SQLite store.
//!
//! Every run goes through the durable orchestrator, as with `qila serve`: each transition is committed before it
//! is acted on.
//!
//! - chain: N steps of `core.echo`, each needing the one before and reading its output;
//! - fan-out: N independent steps of `core.echo`;
//! - sandbox: the same action invoked N times directly (fresh instance per call), to separate the sandbox's cost
//!   from the engine's: engine overhead per step = chain time per step − sandbox time per call;
//! - process: `qila run` of a 50-step playbook as a child process (components already cached): wall time and peak
//!   RSS.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use qila_engine::{Orchestrator, StartRun};
use qila_sandbox::InvocationContext;
use qila_store::{RunRow, RunStatus, TriggerKind};
use serde_json::{Value, json};

use crate::config::Settings;
use crate::runtime::Driver;

/// Arguments of `qila bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Steps per playbook for the chain and fan-out.
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    /// Runs of each playbook; figures are medians over runs.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Runs of the 50-step `qila run` process.
    #[arg(long, default_value_t = 10)]
    process_rounds: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn chain(n: usize) -> String {
    let mut yaml = format!(
        "name: bench-chain-{n}\nversion: 1\nsteps:\n  s0:\n    uses: core.echo\n    with: {{ v: 0 }}\n"
    );
    for i in 1..n {
        yaml.push_str(&format!(
            "  s{i}:\n    needs: [s{p}]\n    uses: core.echo\n    with: {{ v: \"${{{{ steps.s{p}.output.v + 1 }}}}\" }}\n",
            p = i - 1
        ));
    }
    yaml.push_str(&format!(
        "outputs:\n  last: \"${{{{ steps.s{}.output.v }}}}\"\n",
        n - 1
    ));
    yaml
}

fn fan_out(n: usize) -> String {
    let mut yaml = format!("name: bench-fanout-{n}\nversion: 1\nsteps:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  s{i}:\n    uses: core.echo\n    with: {{ i: {i} }}\n"
        ));
    }
    yaml
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        0.0
    } else {
        v[((v.len() - 1) as f64 * p).round() as usize]
    }
}

/// Runs the benchmark and prints its figures.
pub async fn bench(settings: &Settings, args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.steps < 2 || args.rounds == 0 {
        bail!("--steps must be at least 2 and --rounds at least 1");
    }
    let driver = Driver::start(settings).await?;
    let orchestrator = driver.orchestrator.clone();
    let publish = async |yaml: &str, file: &str| -> anyhow::Result<String> {
        let published = orchestrator
            .publish(yaml, file, "bench")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(published.version.name)
    };
    let chain_pb = publish(&chain(args.steps), "bench-chain.yaml").await?;
    let fan_pb = publish(&fan_out(args.steps), "bench-fanout.yaml").await?;

    // Warm up: first instantiations, store pages, allocator.
    for pb in [&chain_pb, &fan_pb] {
        run_once(&orchestrator, pb).await?;
    }

    let n = args.steps as f64;
    let mut chain_per_step = Vec::new();
    let mut fan_rate = Vec::new();
    let mut fan_per_step = Vec::new();
    for _ in 0..args.rounds {
        let t = Instant::now();
        let run = run_once(&orchestrator, &chain_pb).await?;
        let elapsed = t.elapsed().as_secs_f64();
        let last = run.outputs.as_ref().and_then(|o| o.get("last"));
        if run.status != RunStatus::Succeeded || last != Some(&json!(args.steps - 1)) {
            bail!("chain run did not succeed: {:?}", run.error);
        }
        chain_per_step.push(elapsed / n * 1e6);

        let t = Instant::now();
        let run = run_once(&orchestrator, &fan_pb).await?;
        let elapsed = t.elapsed().as_secs_f64();
        if run.status != RunStatus::Succeeded {
            bail!("fan-out run did not succeed: {:?}", run.error);
        }
        fan_rate.push(n / elapsed);
        fan_per_step.push(elapsed / n * 1e6);
    }

    // The sandbox alone: a fresh instance + call + drop of core.echo, sequentially.
    let plugins = driver.runtime.registry.snapshot();
    let echo = &plugins
        .loaded
        .get("core")
        .context("the bundled core plugin is missing")?
        .plugin;
    let ctx = InvocationContext::adhoc("bench");
    let input = json!({"v": 1});
    let mut sandbox_us = Vec::with_capacity(args.steps);
    for _ in 0..args.steps {
        let t = Instant::now();
        echo.invoke("echo", &input, &ctx)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        sandbox_us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let sandbox_median = median(sandbox_us.clone());
    let chain_median = median(chain_per_step.clone());
    let overhead = (chain_median - sandbox_median).max(0.0);

    // The child processes lock the data directory: release it first.
    orchestrator.shutdown(Duration::from_secs(5)).await;
    drop(orchestrator);
    drop(driver);
    let process = process_figures(&settings.data_dir(), args.process_rounds)?;

    let figures = json!({
        "steps": args.steps,
        "rounds": args.rounds,
        "chain_us_per_step_median": round2(chain_median),
        "sandbox_us_per_call_median": round2(sandbox_median),
        "sandbox_us_per_call_p99": round2(percentile(sandbox_us, 0.99)),
        "engine_overhead_us_per_step_median": round2(overhead),
        "fanout_steps_per_second_median": median(fan_rate).round(),
        "fanout_us_per_step_median": round2(median(fan_per_step)),
        "process_50_steps_wall_ms_median": round2(process.0),
        "process_50_steps_peak_rss_mib_max": round2(process.1),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        println!(
            "chain of {} steps:           {chain_median:>9.1} µs/step (median of {} runs)",
            args.steps, args.rounds
        );
        println!(
            "sandbox call (fresh instance): {sandbox_median:>9.1} µs (median of {} calls)",
            args.steps
        );
        println!("engine overhead:               {overhead:>9.1} µs/step");
        println!(
            "fan-out of {} steps:          {:>9.0} steps/s",
            args.steps, figures["fanout_steps_per_second_median"]
        );
        println!(
            "qila run, 50 steps (process):  {:>9.1} ms wall, {:.1} MiB peak RSS",
            process.0, process.1
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts a run of the latest version of `playbook` and waits for its end.
async fn run_once(orchestrator: &Orchestrator, playbook: &str) -> anyhow::Result<RunRow> {
    let run = orchestrator
        .start_run(StartRun {
            playbook: playbook.to_string(),
            version: None,
            inputs: Value::Object(Default::default()),
            trigger: TriggerKind::Manual,
            actor: "bench".into(),
            tlp: Default::default(),
        })
        .await?;
    Ok(orchestrator.wait(&run.id).await?)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Median wall time (ms) and largest peak RSS (MiB) of `qila run` on a 50-step chain, as a child process.
fn process_figures(data_dir: &Path, rounds: usize) -> anyhow::Result<(f64, f64)> {
    let exe = std::env::current_exe().context("cannot find the qila executable")?;
    let file = data_dir.join("bench-chain-50.yaml");
    std::fs::write(&file, chain(50)).with_context(|| format!("cannot write {}", file.display()))?;
    let mut walls = Vec::new();
    let mut peak_kib = 0_i64;
    for round in 0..=rounds {
        let t = Instant::now();
        let output = std::process::Command::new(&exe)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("run")
            .arg(&file)
            .arg("--json")
            .env("QILA_REPORT_PEAK_RSS", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .context("cannot run qila run")?;
        let wall = t.elapsed();
        if !output.status.success() {
            bail!(
                "qila run of the 50-step playbook failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let rss_kib: i64 = stderr
            .lines()
            .find_map(|l| l.strip_prefix("qila: peak-rss-kib "))
            .and_then(|v| v.trim().parse().ok())
            .context("qila run did not report its peak RSS")?;
        if round > 0 {
            // Round 0 warms the component cache and the page cache.
            walls.push(wall.as_secs_f64() * 1e3);
            peak_kib = peak_kib.max(rss_kib);
        }
    }
    Ok((median(walls), peak_kib as f64 / 1024.0))
}
