//! `qila runs`: list, show, start, cancel, re-run and watch runs on a running server.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use qila_model::Playbook;
use serde_json::{Map, Value, json};

use crate::client::{Client, ClientArgs, ClientError, segment};
use crate::commands::playbook::print_json;
use crate::commands::run::step_error;
use crate::fmt;
use crate::inputs::InputArgs;

/// How long `qila runs watch` keeps trying to reconnect to a server that went away.
const RECONNECT_FOR: Duration = Duration::from_secs(60);

/// Subcommands of `qila runs`.
#[derive(Debug, clap::Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first.
    List {
        /// Only runs of this playbook.
        #[arg(long)]
        playbook: Option<String>,
        /// Only runs in this state: queued, running, succeeded, failed, cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Only runs older than this run (for paging: the `next` of the previous page).
        #[arg(long, value_name = "RUN")]
        before: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print only the run ids, one per line (`RUN=$(qila runs list --limit 1 -q)`).
        #[arg(long, short)]
        quiet: bool,
        /// Print the server's answer as JSON.
        #[arg(long, conflicts_with = "quiet")]
        json: bool,
    },
    /// Show a run: its status, steps (status, attempts, errors), approvals and outputs.
    Show {
        /// The run's id.
        run: String,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start a run of a published playbook. Prints `run ID started`.
    #[command(disable_version_flag = true)]
    Start {
        /// The playbook's name.
        playbook: String,
        #[command(flatten)]
        inputs: InputArgs,
        /// A published version [default: the latest].
        #[arg(long, value_name = "N")]
        version: Option<i64>,
        /// Follow the run until it ends (as `qila runs watch`); exit 0 when it succeeded, else 1.
        #[arg(long)]
        wait: bool,
        /// Print the started run as JSON (with --wait, the transitions and the ended run, one JSON per line).
        #[arg(long)]
        json: bool,
    },
    /// Cancel a run that has not ended.
    Cancel {
        /// The run's id.
        run: String,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start a new run of a failed or cancelled run: the steps that succeeded keep their outputs, the others run
    /// again. Prints `run NEW_ID started (re-run of RUN)`.
    Rerun {
        /// The run's id.
        run: String,
        /// Print the new run as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Follow a run: one line per transition until it ends; exit 0 when it succeeded, else 1.
    Watch {
        /// The run's id.
        run: String,
        /// Print each transition, then the ended run, as one JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `qila runs` subcommand.
pub async fn runs(client: &ClientArgs, command: RunsCommand) -> anyhow::Result<ExitCode> {
    let client = match Client::new(client) {
        Ok(c) => c,
        Err(e) => return Ok(e.report(client.token.is_some())),
    };
    let outcome = match command {
        RunsCommand::List {
            playbook,
            status,
            before,
            limit,
            quiet,
            json,
        } => {
            let filter = ListFilter {
                playbook,
                status,
                before,
                limit,
            };
            list(&client, filter, quiet, json).await
        }
        RunsCommand::Show { run, json } => show(&client, &run, json).await,
        RunsCommand::Start {
            playbook,
            inputs,
            version,
            wait,
            json,
        } => start(&client, &playbook, &inputs, version, wait, json).await,
        RunsCommand::Cancel { run, json } => cancel(&client, &run, json).await,
        RunsCommand::Rerun { run, json } => rerun(&client, &run, json).await,
        RunsCommand::Watch { run, json } => watch(&client, &run, json).await,
    };
    Ok(outcome.unwrap_or_else(|e| e.report(client.has_token())))
}

fn run_path(id: &str) -> String {
    format!("/api/v1/runs/{}", segment(id))
}

/// Which runs `qila runs list` asks for.
struct ListFilter {
    playbook: Option<String>,
    status: Option<String>,
    before: Option<String>,
    limit: u32,
}

async fn list(
    client: &Client,
    filter: ListFilter,
    quiet: bool,
    json: bool,
) -> Result<ExitCode, ClientError> {
    let mut query = vec![("limit", filter.limit.to_string())];
    if let Some(p) = filter.playbook {
        query.push(("playbook", p));
    }
    if let Some(s) = filter.status {
        query.push(("status", s));
    }
    if let Some(b) = filter.before {
        query.push(("before", b));
    }
    let answer = client.get("/api/v1/runs", &query).await?;
    if json {
        print_json(&answer);
        return Ok(ExitCode::SUCCESS);
    }
    let runs = answer
        .get("runs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if quiet {
        for r in &runs {
            println!("{}", fmt::field(r, "id"));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                fmt::field(r, "id"),
                fmt::field(r, "playbook"),
                fmt::field(r, "version"),
                fmt::field(r, "status"),
                fmt::field(r, "trigger"),
                fmt::field(r, "started_by"),
                fmt::time_ms(fmt::int(r, "created_at")),
                fmt::span_ms(
                    fmt::int(r, "started_at").or(fmt::int(r, "created_at")),
                    fmt::int(r, "finished_at"),
                ),
            ]
        })
        .collect();
    print!(
        "{}",
        fmt::table(
            &[
                "ID", "PLAYBOOK", "VERSION", "STATUS", "TRIGGER", "BY", "CREATED", "TOOK"
            ],
            &rows
        )
    );
    if let Some(next) = answer.get("next").and_then(Value::as_str) {
        eprintln!("more: qila runs list --before {next}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(client: &Client, id: &str, json: bool) -> Result<ExitCode, ClientError> {
    let answer = client.get(&run_path(id), &[]).await?;
    if json {
        print_json(&answer);
    } else {
        print!("{}", render_run(&answer));
    }
    Ok(ExitCode::SUCCESS)
}

/// `qila runs show` as text, from `{run, steps, approvals}`.
fn render_run(answer: &Value) -> String {
    use std::fmt::Write;
    let null = Value::Null;
    let run = answer.get("run").unwrap_or(&null);
    let id = fmt::field(run, "id");
    let mut out = String::new();
    let _ = writeln!(out, "run {id}");
    let _ = writeln!(
        out,
        "  playbook  {} version {}",
        fmt::field(run, "playbook"),
        fmt::field(run, "version")
    );
    let mut status = fmt::field(run, "status");
    if run.get("cancel_requested").and_then(Value::as_bool) == Some(true)
        && !matches!(status.as_str(), "cancelled" | "succeeded" | "failed")
    {
        status.push_str(" (cancel requested)");
    }
    let _ = writeln!(out, "  status    {status}");
    if let Some(error) = run.get("error").and_then(Value::as_str) {
        let _ = writeln!(out, "  error     {error}");
    }
    let _ = writeln!(
        out,
        "  trigger   {} by {}",
        fmt::field(run, "trigger"),
        fmt::field(run, "started_by")
    );
    if let Some(of) = run.get("rerun_of").and_then(Value::as_str) {
        let _ = writeln!(out, "  re-run of {of}");
    }
    if let Some(parent) = run.get("parent_run").and_then(Value::as_str) {
        let _ = writeln!(
            out,
            "  parent    run {parent}, step {}",
            fmt::field(run, "parent_step")
        );
    }
    let _ = writeln!(
        out,
        "  created   {}",
        fmt::time_ms(fmt::int(run, "created_at"))
    );
    if let Some(finished) = fmt::int(run, "finished_at") {
        let _ = writeln!(
            out,
            "  finished  {} (took {})",
            fmt::time_ms(Some(finished)),
            fmt::span_ms(
                fmt::int(run, "started_at").or(fmt::int(run, "created_at")),
                Some(finished)
            )
        );
    }
    if let Some(inputs) = run.get("inputs").filter(|i| !is_empty(i)) {
        let _ = writeln!(out, "  inputs    {inputs}");
    }

    let steps = answer
        .get("steps")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !steps.is_empty() {
        let rows: Vec<Vec<String>> = steps
            .iter()
            .map(|s| {
                let mut id = fmt::field(s, "step_id");
                if let Some(item) = fmt::int(s, "item").filter(|i| *i >= 0) {
                    id = format!("{id}[{item}]");
                }
                vec![
                    id,
                    fmt::field(s, "action"),
                    fmt::field(s, "status"),
                    fmt::field(s, "attempt"),
                    fmt::span_ms(fmt::int(s, "started_at"), fmt::int(s, "finished_at")),
                    step_error(
                        s.get("error_kind").and_then(Value::as_str),
                        s.get("error").and_then(Value::as_str),
                    )
                    .unwrap_or_default(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&fmt::table(
            &["STEP", "ACTION", "STATUS", "ATTEMPT", "TOOK", "ERROR"],
            &rows,
        ));
    }

    let approvals = answer
        .get("approvals")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !approvals.is_empty() {
        out.push('\n');
        for a in &approvals {
            let step = fmt::field(a, "step_id");
            let approvers: Vec<String> = a
                .get("approvers")
                .and_then(Value::as_array)
                .map(|v| {
                    v.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            let _ = writeln!(out, "approval {step}: {}", fmt::field(a, "message"));
            match a.get("decision").and_then(Value::as_str) {
                Some(decision) => {
                    let _ = write!(
                        out,
                        "  {decision} by {} at {}",
                        fmt::field(a, "decided_by"),
                        fmt::time_ms(fmt::int(a, "decided_at"))
                    );
                    if let Some(comment) = a.get("comment").and_then(Value::as_str) {
                        let _ = write!(out, ": {comment}");
                    }
                    out.push('\n');
                }
                None => {
                    let _ = write!(out, "  pending; approvers: {}", approvers.join(", "));
                    if let Some(expires) = fmt::int(a, "expires_at") {
                        let default =
                            if a.get("default_approve").and_then(Value::as_bool) == Some(true) {
                                "approve"
                            } else {
                                "deny"
                            };
                        let _ =
                            write!(out, "; expires {} ({default})", fmt::time_ms(Some(expires)));
                    }
                    let _ = writeln!(
                        out,
                        "\n  decide with: qila approve {id} {step} [--deny] [--comment TEXT]"
                    );
                }
            }
        }
    }

    if let Some(outputs) = run.get("outputs").filter(|o| !is_empty(o)) {
        out.push_str("\noutputs:\n");
        out.push_str(&serde_json::to_string_pretty(outputs).unwrap_or_default());
        out.push('\n');
    }
    out
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(o) => o.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The YAML source of `version` (or the latest) of a playbook in the answer of `GET /api/v1/playbooks/{name}`,
/// whatever its exact shape: a version, `{latest, versions}`, `{versions}`.
fn find_source(answer: &Value, version: Option<i64>) -> Option<String> {
    let matches = |v: &Value| version.is_none_or(|want| fmt::int(v, "version") == Some(want));
    let mut candidates: Vec<&Value> = vec![answer];
    if let Some(l) = answer.get("latest") {
        candidates.push(l);
    }
    if let Some(v) = answer.get("version").filter(|v| v.is_object()) {
        candidates.push(v);
    }
    if let Some(vs) = answer.get("versions").and_then(Value::as_array) {
        candidates.extend(vs.iter());
    }
    candidates
        .into_iter()
        .filter(|v| matches(v))
        .find_map(|v| v.get("source").and_then(Value::as_str).map(String::from))
}

/// The YAML source of `version` (the latest when `None`) of `playbook`, from `GET /api/v1/playbooks/{name}` (its
/// versions) and `GET /api/v1/playbooks/{name}/versions/{version}` (one with its source).
async fn playbook_source(
    client: &Client,
    playbook: &str,
    version: Option<i64>,
) -> Result<Option<String>, ClientError> {
    let base = format!("/api/v1/playbooks/{}", segment(playbook));
    let answer = client.get(&base, &[]).await?;
    if let Some(source) = find_source(&answer, version) {
        return Ok(Some(source));
    }
    let latest = answer
        .get("versions")
        .and_then(Value::as_array)
        .and_then(|vs| vs.iter().filter_map(|v| fmt::int(v, "version")).max());
    let Some(number) = version.or(latest) else {
        return Ok(None);
    };
    let answer = client
        .get(&format!("{base}/versions/{number}"), &[])
        .await?;
    Ok(find_source(&answer, Some(number)))
}

async fn start(
    client: &Client,
    playbook: &str,
    inputs: &InputArgs,
    version: Option<i64>,
    wait: bool,
    json: bool,
) -> Result<ExitCode, ClientError> {
    // Read `--input` values by their declared types when the playbook's source can be had; else guess.
    let parsed = if inputs.inputs.is_empty() {
        None
    } else {
        match playbook_source(client, playbook, version).await {
            Ok(source) => source.and_then(|source| Playbook::parse(&source, playbook).ok()),
            Err(e @ ClientError::Unreachable { .. }) => return Err(e),
            Err(_) => None,
        }
    };
    let provided = match inputs.gather(parsed.as_ref()) {
        Ok(p) => p,
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut body = Map::new();
    body.insert("playbook".into(), json!(playbook));
    if let Some(v) = version {
        body.insert("version".into(), json!(v));
    }
    body.insert("inputs".into(), Value::Object(provided));
    let answer = client.post("/api/v1/runs", &Value::Object(body)).await?;
    let run = answer
        .get("run")
        .filter(|r| r.is_object())
        .unwrap_or(&answer);
    let id = fmt::field(run, "id");
    if json {
        if wait {
            println!("{run}");
        } else {
            print_json(run);
        }
    } else {
        println!("run {id} started");
    }
    if wait {
        return watch(client, &id, json).await;
    }
    Ok(ExitCode::SUCCESS)
}

async fn cancel(client: &Client, id: &str, json: bool) -> Result<ExitCode, ClientError> {
    let answer = client
        .post(&format!("{}/cancel", run_path(id)), &json!({}))
        .await?;
    if json {
        print_json(&answer);
        return Ok(ExitCode::SUCCESS);
    }
    let run = answer
        .get("run")
        .filter(|r| r.is_object())
        .unwrap_or(&answer);
    let status = fmt::field(run, "status");
    if status == "cancelled" {
        println!("run {id} cancelled");
    } else {
        println!("run {id} cancelling (status {status})");
    }
    Ok(ExitCode::SUCCESS)
}

async fn rerun(client: &Client, id: &str, json: bool) -> Result<ExitCode, ClientError> {
    let answer = client
        .post(&format!("{}/rerun", run_path(id)), &json!({}))
        .await?;
    if json {
        print_json(&answer);
        return Ok(ExitCode::SUCCESS);
    }
    let run = answer
        .get("run")
        .filter(|r| r.is_object())
        .unwrap_or(&answer);
    println!("run {} started (re-run of {id})", fmt::field(run, "id"));
    Ok(ExitCode::SUCCESS)
}

/// One transition as `qila runs watch` prints it: `TIME  TARGET  STATUS[  attempt N][  DETAIL]`, where TARGET is
/// the step id (`step[item]` for an item of a `for_each` step) or `run` for the run itself.
fn transition_line(t: &Value) -> String {
    let target = match t.get("step_id").and_then(Value::as_str) {
        Some(step) => match fmt::int(t, "item").filter(|i| *i >= 0) {
            Some(item) => format!("{step}[{item}]"),
            None => step.to_string(),
        },
        None => "run".to_string(),
    };
    let mut line = format!(
        "{}  {target}  {}",
        fmt::int(t, "at_us")
            .map(fmt::clock_us)
            .unwrap_or_else(|| "-".into()),
        fmt::field(t, "status")
    );
    if let Some(attempt) = fmt::int(t, "attempt").filter(|a| *a > 1) {
        line.push_str(&format!("  attempt {attempt}"));
    }
    if let Some(detail) = t.get("detail").and_then(Value::as_str) {
        line.push_str("  ");
        line.push_str(detail);
    }
    line
}

async fn watch(client: &Client, id: &str, json: bool) -> Result<ExitCode, ClientError> {
    let path = format!("{}/events", run_path(id));
    let mut last_seq = 0_i64;
    let mut last_id: Option<String> = None;
    let mut lost_since: Option<Instant> = None;
    'stream: loop {
        let mut stream = match client.events(&path, last_id.as_deref()).await {
            Ok(stream) => {
                if lost_since.take().is_some() {
                    eprintln!("reconnected");
                }
                stream
            }
            Err(e @ ClientError::Unreachable { .. }) if lost_since.is_some() => {
                if lost_since.is_some_and(|t| t.elapsed() > RECONNECT_FOR) {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        loop {
            match stream.next().await {
                Ok(Some(event)) => match event.event.as_str() {
                    "transition" => {
                        let Ok(t) = serde_json::from_str::<Value>(&event.data) else {
                            continue;
                        };
                        let seq = fmt::int(&t, "seq").unwrap_or(0);
                        if seq != 0 && seq <= last_seq {
                            continue; // replayed after a reconnection
                        }
                        last_seq = last_seq.max(seq);
                        last_id = event.id.or_else(|| Some(seq.to_string()));
                        if json {
                            println!("{t}");
                        } else {
                            println!("{}", transition_line(&t));
                        }
                    }
                    "end" => break 'stream,
                    _ => {}
                },
                Ok(None) | Err(ClientError::Unreachable { .. }) => {
                    // The server went away (restarted?) before the run ended: reconnect and resume.
                    eprintln!("connection to {} lost; reconnecting", client.url(""));
                    lost_since = Some(Instant::now());
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue 'stream;
                }
                Err(e) => return Err(e),
            }
        }
    }
    let answer = client.get(&run_path(id), &[]).await?;
    let run = answer
        .get("run")
        .filter(|r| r.is_object())
        .unwrap_or(&answer);
    let status = fmt::field(run, "status");
    if json {
        println!("{run}");
    } else {
        println!("run {id} {status}");
        if let Some(error) = run.get("error").and_then(Value::as_str) {
            println!("  {error}");
        }
    }
    Ok(if status == "succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_read_as_one_line_each() {
        let t = json!({"seq": 4, "run_id": "r", "step_id": "block", "item": -1, "status": "failed", "attempt": 2,
                       "at_us": 3_723_456_789_i64, "detail": "transient: upstream 503"});
        assert_eq!(
            transition_line(&t),
            "01:02:03.456  block  failed  attempt 2  transient: upstream 503"
        );
        let t = json!({"seq": 5, "run_id": "r", "step_id": null, "item": -1, "status": "succeeded", "attempt": 0,
                       "at_us": 0, "detail": null});
        assert_eq!(transition_line(&t), "00:00:00.000  run  succeeded");
        let t = json!({"seq": 6, "run_id": "r", "step_id": "notify", "item": 2, "status": "running", "attempt": 1,
                       "at_us": 0});
        assert_eq!(transition_line(&t), "00:00:00.000  notify[2]  running");
    }

    #[test]
    fn the_source_is_found_in_any_answer_shape() {
        let v = json!({"name": "p", "version": 2, "source": "two"});
        assert_eq!(find_source(&v, None).as_deref(), Some("two"));
        let v = json!({"latest": {"version": 2, "source": "two"}, "versions": [{"version": 2, "source": "two"},
                       {"version": 1, "source": "one"}]});
        assert_eq!(find_source(&v, None).as_deref(), Some("two"));
        assert_eq!(find_source(&v, Some(1)).as_deref(), Some("one"));
        assert_eq!(find_source(&v, Some(3)), None);
    }

    #[test]
    fn a_run_shows_its_steps_approvals_and_outputs() {
        let answer = json!({
            "run": {"id": "r1", "playbook": "approve-block", "version": 1, "status": "running", "inputs": {"ip": "203.0.113.7"},
                    "outputs": null, "error": null, "trigger": "webhook", "started_by": "hook", "cancel_requested": false,
                    "created_at": 0, "started_at": 0, "finished_at": null},
            "steps": [
                {"step_id": "check", "item": -1, "action": "enrich.classify-ip", "status": "succeeded", "attempt": 1,
                 "started_at": 0, "finished_at": 12, "error_kind": null, "error": null},
                {"step_id": "approve", "item": -1, "action": "core.approval", "status": "waiting", "attempt": 1,
                 "started_at": 12, "finished_at": null, "error_kind": null, "error": null}
            ],
            "approvals": [{"run_id": "r1", "step_id": "approve", "item": -1, "message": "Block 203.0.113.7?",
                           "approvers": ["role:analyst"], "default_approve": false, "expires_at": null, "created_at": 0,
                           "decision": null, "decided_by": null, "comment": null, "decided_at": null}]
        });
        let text = render_run(&answer);
        assert!(
            text.starts_with("run r1\n  playbook  approve-block version 1\n  status    running\n"),
            "{text}"
        );
        assert!(text.contains("  trigger   webhook by hook\n"), "{text}");
        assert!(
            text.contains("  inputs    {\"ip\":\"203.0.113.7\"}\n"),
            "{text}"
        );
        assert!(
            text.contains("STEP     ACTION              STATUS     ATTEMPT  TOOK  ERROR\n"),
            "{text}"
        );
        assert!(
            text.contains("check    enrich.classify-ip  succeeded  1        12ms\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "approval approve: Block 203.0.113.7?\n  pending; approvers: role:analyst\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("decide with: qila approve r1 approve"),
            "{text}"
        );
        assert!(!text.contains("outputs:"), "{text}");
    }
}
