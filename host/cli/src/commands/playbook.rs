//! `qila playbook`: publish playbooks to a running server, list and show them.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Value, json};

use anyhow::Context;

use crate::client::{Client, ClientArgs, ClientError, segment};
use crate::config::Settings;
use crate::fmt;

/// Subcommands of `qila playbook`.
#[derive(Debug, clap::Subcommand)]
pub enum PlaybookCommand {
    /// Publish a playbook file as the next version of its playbook (nothing new when it has not changed).
    Publish {
        /// The playbook file.
        file: PathBuf,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List published playbooks (the latest version of each).
    List {
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a playbook's webhook secret (only the secret, on one line: `SECRET=$(qila playbook hook NAME)`),
    /// read from the data directory's database, so run it where `qila serve` runs. For a playbook declaring
    /// `webhook: { signature: standard-webhooks }` it is printed as `whsec_<base64>`, the form Standard Webhooks
    /// clients take; otherwise it is the HMAC key of `X-Hub-Signature-256`, or goes as is in the
    /// `X-Qila-Hook-Secret` header of `POST /api/v1/hooks/NAME`.
    Hook {
        /// The playbook's name.
        name: String,
    },
    /// Show a published playbook: its versions, triggers and webhook.
    Show {
        /// The playbook's name.
        name: String,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `qila playbook` subcommand.
pub async fn playbook(
    settings: &Settings,
    client: &ClientArgs,
    command: PlaybookCommand,
) -> anyhow::Result<ExitCode> {
    if let PlaybookCommand::Hook { name } = &command {
        return hook(settings, name).await;
    }
    let client = match Client::new(client) {
        Ok(c) => c,
        Err(e) => return Ok(e.report(client.token.is_some())),
    };
    let outcome = match command {
        PlaybookCommand::Publish { file, json } => publish(&client, &file, json).await,
        PlaybookCommand::List { json } => list(&client, json).await,
        PlaybookCommand::Show { name, json } => show(&client, &name, json).await,
        PlaybookCommand::Hook { .. } => unreachable!("handled above"),
    };
    Ok(outcome.unwrap_or_else(|e| e.report(client.has_token())))
}

async fn publish(client: &Client, file: &PathBuf, json: bool) -> Result<ExitCode, ClientError> {
    let name = file.display().to_string();
    let source = match std::fs::read_to_string(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{name}:1:1: cannot read file: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let answer = client
        .post(
            "/api/v1/playbooks",
            &json!({"source": source, "file": name}),
        )
        .await?;
    if json {
        print_json(&answer);
        return Ok(ExitCode::SUCCESS);
    }
    let p = Published::from_answer(&answer);
    println!("{}", p.line());
    if let Some(secret) = &p.hook_secret {
        println!("hook secret: {secret}");
        println!(
            "webhook: POST {}",
            client.url(&format!("/api/v1/hooks/{}", segment(&p.name)))
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What `POST /api/v1/playbooks` answered, as far as the CLI shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Published {
    name: String,
    version: i64,
    digest: String,
    created: bool,
    hook_secret: Option<String>,
}

impl Published {
    /// Reads `{name, version, digest, ..., created, hook?: {path, secret}}` (also with the version's fields under
    /// `version`, or the secret as `hook_secret`).
    fn from_answer(answer: &Value) -> Self {
        let version = match answer.get("version") {
            Some(v @ Value::Object(_)) => v,
            _ => answer,
        };
        Self {
            name: fmt::field(version, "name"),
            version: fmt::int(version, "version").unwrap_or(0),
            digest: fmt::field(version, "digest"),
            created: answer
                .get("created")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            hook_secret: answer
                .get("hook")
                .and_then(|h| h.get("secret"))
                .or_else(|| answer.get("hook_secret"))
                .and_then(Value::as_str)
                .map(String::from),
        }
    }

    fn line(&self) -> String {
        if self.created {
            let short: String = self.digest.chars().take(12).collect();
            format!(
                "published {} version {} (digest {short})",
                self.name, self.version
            )
        } else {
            format!("{} is unchanged at version {}", self.name, self.version)
        }
    }
}

async fn list(client: &Client, json: bool) -> Result<ExitCode, ClientError> {
    let answer = client.get("/api/v1/playbooks", &[]).await?;
    if json {
        print_json(&answer);
        return Ok(ExitCode::SUCCESS);
    }
    let items = match &answer {
        Value::Array(a) => a.clone(),
        other => other
            .get("playbooks")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    };
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|p| {
            let v = p.get("latest").filter(|l| l.is_object()).unwrap_or(p);
            vec![
                fmt::field(v, "name"),
                fmt::field(v, "version"),
                fmt::triggers(v.get("triggers").unwrap_or(&Value::Null)),
                fmt::time_ms(fmt::int(v, "published_at")),
                fmt::field(v, "published_by"),
            ]
        })
        .collect();
    print!(
        "{}",
        fmt::table(&["NAME", "VERSION", "TRIGGERS", "PUBLISHED", "BY"], &rows)
    );
    Ok(ExitCode::SUCCESS)
}

async fn show(client: &Client, name: &str, json: bool) -> Result<ExitCode, ClientError> {
    let answer = client
        .get(&format!("/api/v1/playbooks/{}", segment(name)), &[])
        .await?;
    if json {
        print_json(&answer);
        return Ok(ExitCode::SUCCESS);
    }
    let versions: Vec<Value> = answer
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let latest = answer
        .get("latest")
        .filter(|l| l.is_object())
        .or_else(|| versions.first())
        .unwrap_or(&answer);
    println!("playbook {}", fmt::field(latest, "name"));
    println!(
        "  latest    version {} (digest {}), published {} by {}",
        fmt::field(latest, "version"),
        fmt::field(latest, "digest")
            .chars()
            .take(12)
            .collect::<String>(),
        fmt::time_ms(fmt::int(latest, "published_at")),
        fmt::field(latest, "published_by")
    );
    println!(
        "  triggers  {}",
        fmt::triggers(latest.get("triggers").unwrap_or(&Value::Null))
    );
    // The webhook's secret is for engineers and admins: a viewer's token simply does not show it.
    let hook = client
        .get(&format!("/api/v1/playbooks/{}/hook", segment(name)), &[])
        .await
        .ok();
    let secret = hook
        .as_ref()
        .and_then(|h| h.get("secret"))
        .and_then(Value::as_str);
    if let Some(secret) = secret {
        println!(
            "  webhook   POST {}",
            client.url(&format!("/api/v1/hooks/{}", segment(name)))
        );
        println!("  secret    {secret}");
    }
    if versions.len() > 1 {
        println!();
        let rows: Vec<Vec<String>> = versions
            .iter()
            .map(|v| {
                vec![
                    fmt::field(v, "version"),
                    fmt::field(v, "digest").chars().take(12).collect(),
                    fmt::time_ms(fmt::int(v, "published_at")),
                    fmt::field(v, "published_by"),
                ]
            })
            .collect();
        print!(
            "{}",
            fmt::table(&["VERSION", "DIGEST", "PUBLISHED", "BY"], &rows)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the webhook secret of `name` from the store of the data directory.
async fn hook(settings: &Settings, name: &str) -> anyhow::Result<ExitCode> {
    let data_dir = settings.data_dir();
    let store = qila_store::Store::open_with(&data_dir, settings.store_options())
        .await
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
    let secret = store.hook_secret(name).await?;
    let scheme = store
        .latest_version(name)
        .await?
        .and_then(|v| qila_server::webhook_scheme(&v.triggers["webhook"]["signature"]));
    store.close().await;
    let secret = secret.map(|s| qila_server::secret_for_senders(scheme, &s));
    match secret {
        Some(secret) => {
            println!("{secret}");
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!(
                "error: playbook `{name}` has no webhook in {}: it is not published there (`qila serve` publishes \
                 the bundled playbooks and those of --playbooks; or `qila playbook publish FILE`), or it declares no \
                 `on: webhook`",
                data_dir.display()
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// Prints a JSON answer, pretty.
pub fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_answers_read_as_one_line() {
        let p = Published::from_answer(&json!({
            "version": {"name": "approve-block", "version": 2, "digest": "0123456789abcdef0123"},
            "created": true, "hook": {"path": "/api/v1/hooks/approve-block", "secret": "s3cret"}
        }));
        assert_eq!(
            p.line(),
            "published approve-block version 2 (digest 0123456789ab)"
        );
        assert_eq!(p.hook_secret.as_deref(), Some("s3cret"));
        let p = Published::from_answer(&json!({
            "version": {"name": "hello", "version": 1, "digest": "ff"}, "created": false
        }));
        assert_eq!(p.line(), "hello is unchanged at version 1");
        assert_eq!(p.hook_secret, None);
    }
}
