//! A load generator for `qila serve`, for the figures in docs/benchmarks.md (not a test).
//!
//! ```text
//! qila-load webhook   URL TOKEN RATE SECONDS   open-loop webhooks at RATE/s; webhook-to-first-step latency
//! qila-load approvals URL TOKEN COUNT PID      COUNT runs waiting for approval; the server's RSS before and after
//! qila-load start     URL TOKEN COUNT [NAP]    COUNT runs of a 4-step chain with a durable sleep of NAP (300ms)
//! qila-load wait      URL TOKEN COUNT          waits until COUNT runs of that chain have succeeded; prints the time
//! ```
//!
//! Open loop: request i is sent at t0 + i/RATE whatever happened to the others, so a slow server shows up as
//! latency instead of as fewer requests (no coordinated omission). Latency is measured from the moment the
//! request is sent to the first step's `running` transition in the server's history (both wall clocks of this
//! machine, in microseconds).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut req = self
            .http
            .request(
                method.parse().map_err(|e| format!("{e}"))?,
                format!("{}{path}", self.base),
            )
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let value: Value = resp.json().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(value)
        } else {
            Err(format!("{status}: {value}"))
        }
    }

    async fn publish(&self, source: &str) -> Result<Value, String> {
        self.call(
            "POST",
            "/api/v1/playbooks",
            Some(json!({"source": source, "file": "bench.yaml"})),
        )
        .await
    }
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn rss(pid: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

const HOOKED: &str = "name: bench-hook\nversion: 1\non:\n  webhook: {}\ninputs:\n  n: { type: integer }\nsteps:\n  first:\n    uses: core.echo\n    with: { n: \"${{ inputs.n }}\" }\n";
const GATE: &str = "name: bench-gate\nversion: 1\ninputs:\n  n: { type: integer }\nsteps:\n  approve:\n    uses: core.approval\n    with: { message: \"run ${{ inputs.n }}?\", approvers: [\"role:analyst\"] }\n";
const CHAIN: &str = "name: bench-chain\nversion: 1\ninputs:\n  n: { type: integer }\n  nap: { type: string, default: 300ms }\nsteps:\n  a: { uses: core.echo, with: { n: \"${{ inputs.n }}\" } }\n  nap: { needs: [a], uses: core.sleep, with: { duration: \"${{ inputs.nap }}\" } }\n  b: { needs: [nap], uses: enrich.classify-ip, with: { ip: 192.0.2.1 } }\n  c: { needs: [b], uses: core.echo, with: { n: \"${{ steps.a.output.n }}\" } }\n";

async fn start_many(
    client: &Arc<Client>,
    playbook: &str,
    count: usize,
    parallel: usize,
    extra: Value,
) -> Vec<String> {
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut tasks = Vec::with_capacity(count);
    for n in 0..count {
        let (client, sem, playbook) = (client.clone(), sem.clone(), playbook.to_owned());
        let mut inputs = extra.clone();
        inputs["n"] = json!(n);
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await.ok()?;
            let run = client
                .call(
                    "POST",
                    "/api/v1/runs",
                    Some(json!({"playbook": playbook, "inputs": inputs})),
                )
                .await
                .ok()?;
            run["id"].as_str().map(str::to_owned)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        if let Ok(Some(id)) = t.await {
            ids.push(id);
        }
    }
    ids
}

async fn count(client: &Client, playbook: &str, status: &str) -> usize {
    let mut total = 0;
    let mut before = String::new();
    loop {
        let path = format!("/api/v1/runs?playbook={playbook}&status={status}&limit=1000{before}");
        let Ok(page) = client.call("GET", &path, None).await else {
            return total;
        };
        total += page["runs"].as_array().map_or(0, Vec::len);
        match page["next"].as_str() {
            Some(next) => before = format!("&before={next}"),
            None => return total,
        }
    }
}

async fn webhook(client: Arc<Client>, rate: u64, seconds: u64) -> Result<(), String> {
    let published = client.publish(HOOKED).await?;
    let secret = match published["hook"]["secret"].as_str() {
        Some(s) => s.to_owned(),
        None => client
            .call("GET", "/api/v1/playbooks/bench-hook/hook", None)
            .await?["secret"]
            .as_str()
            .ok_or("no hook secret")?
            .to_owned(),
    };
    let total = rate * seconds;
    let t0 = Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let (client, secret) = (client.clone(), secret.clone());
        let at = t0 + Duration::from_nanos(i * 1_000_000_000 / rate);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let sent = now_us();
            let resp = client
                .http
                .post(format!("{}/api/v1/hooks/bench-hook", client.base))
                .header("x-qila-hook-secret", secret)
                .json(&json!({"n": i}))
                .send()
                .await
                .ok()?;
            if resp.status().as_u16() != 202 {
                return None;
            }
            let body: Value = resp.json().await.ok()?;
            Some((body["run_id"].as_str()?.to_owned(), sent))
        }));
    }
    let mut accepted = Vec::new();
    for t in tasks {
        if let Ok(Some(x)) = t.await {
            accepted.push(x);
        }
    }
    let elapsed = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The first step's `running` transition of each run, from its event stream (which ends with the run).
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut lookups = Vec::new();
    for (id, sent) in accepted.iter().cloned() {
        let (client, sem) = (client.clone(), sem.clone());
        lookups.push(tokio::spawn(async move {
            let _p = sem.acquire().await.ok()?;
            let text = client
                .http
                .get(format!("{}/api/v1/runs/{id}/events", client.base))
                .bearer_auth(&client.token)
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let first = text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .find(|t| t["step_id"].is_string() && t["status"] == "running")?;
            Some(first["at_us"].as_i64()? - sent)
        }));
    }
    let mut latencies = Vec::new();
    for l in lookups {
        if let Ok(Some(x)) = l.await {
            latencies.push(x);
        }
    }
    latencies.sort_unstable();
    println!(
        "{}",
        json!({
            "rate_per_s": rate, "seconds": seconds, "sent": total, "accepted": accepted.len(),
            "runs_with_first_step": latencies.len(), "lost": total as usize - latencies.len(),
            "achieved_rate_per_s": (accepted.len() as f64 / elapsed.as_secs_f64()).round(),
            "latency_ms": { "p50": percentile(&latencies, 0.50), "p90": percentile(&latencies, 0.90),
                            "p99": percentile(&latencies, 0.99), "max": percentile(&latencies, 1.0) }
        })
    );
    Ok(())
}

async fn approvals(client: Arc<Client>, count: usize, pid: &str) -> Result<(), String> {
    println!("{}", json!({"idle_before": rss(pid)}));
    client.publish(GATE).await?;
    let started = Instant::now();
    let ids = start_many(&client, "bench-gate", count, 32, json!({})).await;
    loop {
        let pending = client
            .call("GET", "/api/v1/approvals?limit=10000", None)
            .await?;
        let n = pending["approvals"].as_array().map_or(0, Vec::len);
        if n >= ids.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "{}",
        json!({"runs_started": ids.len(), "pending_approvals": ids.len(), "seconds": started.elapsed().as_secs_f64(), "rss": rss(pid)})
    );
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: qila-load webhook|approvals|start|wait URL TOKEN N [SECONDS|PID]";
    if args.len() < 5 {
        eprintln!("{usage}");
        return std::process::ExitCode::from(2);
    }
    let client = Arc::new(Client {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .expect("http client"),
        base: args[2].clone(),
        token: args[3].clone(),
    });
    let n: usize = args[4].parse().unwrap_or(0);
    let result = match args[1].as_str() {
        "webhook" => {
            webhook(
                client,
                n as u64,
                args.get(5).and_then(|s| s.parse().ok()).unwrap_or(10),
            )
            .await
        }
        "approvals" => approvals(client, n, args.get(5).map_or("0", String::as_str)).await,
        "start" => {
            async {
                client.publish(CHAIN).await?;
                let nap = args.get(5).cloned().unwrap_or_else(|| "300ms".into());
                let ids = start_many(&client, "bench-chain", n, 32, json!({"nap": nap})).await;
                println!("{}", json!({"started": ids.len()}));
                Ok(())
            }
            .await
        }
        "wait" => {
            async {
                let t = Instant::now();
                while count(&client, "bench-chain", "succeeded").await < n {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                println!(
                    "{}",
                    json!({"succeeded": n, "seconds": t.elapsed().as_secs_f64()})
                );
                Ok(())
            }
            .await
        }
        _ => Err(usage.to_owned()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
