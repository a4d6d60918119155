//! `qila approve`: decide a pending approval of a run's `core.approval` step.

use std::process::ExitCode;

use serde_json::{Map, Value, json};

use crate::client::{Client, ClientArgs, segment};
use crate::commands::playbook::print_json;

/// Arguments of `qila approve`.
#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The run's id.
    run: String,
    /// The id of the waiting `core.approval` step.
    step: String,
    /// Deny instead of approving.
    #[arg(long)]
    deny: bool,
    /// A comment recorded with the decision.
    #[arg(long, value_name = "TEXT")]
    comment: Option<String>,
    /// Print the server's answer as JSON.
    #[arg(long)]
    json: bool,
}

/// Approves or denies; prints `approved STEP of run RUN` (or `denied ...`).
pub async fn approve(client: &ClientArgs, args: ApproveArgs) -> anyhow::Result<ExitCode> {
    let client = match Client::new(client) {
        Ok(c) => c,
        Err(e) => return Ok(e.report(client.token.is_some())),
    };
    let verb = if args.deny { "deny" } else { "approve" };
    let path = format!(
        "/api/v1/runs/{}/steps/{}/{verb}",
        segment(&args.run),
        segment(&args.step)
    );
    let mut body = Map::new();
    if let Some(comment) = &args.comment {
        body.insert("comment".into(), json!(comment));
    }
    match client.post(&path, &Value::Object(body)).await {
        Ok(answer) => {
            if args.json {
                print_json(&answer);
            } else {
                let done = if args.deny { "denied" } else { "approved" };
                println!("{done} {} of run {}", args.step, args.run);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(e.report(client.has_token())),
    }
}
