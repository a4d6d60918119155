//! `qila token`: API tokens, created and listed straight in the data directory's database (no server needed,
//! no lock taken: SQLite serialises the writes of concurrent processes).

use std::process::ExitCode;

use anyhow::Context;
use qila_store::{Role, Store};

use crate::config::Settings;
use crate::fmt;

/// Subcommands of `qila token`.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (only the token, on one line: `QILA_TOKEN=$(qila token create --role analyst)`).
    /// It is shown this once: the database keeps only its hash.
    Create {
        /// What the token may do: admin, engineer, analyst, viewer, or ingest (a log shipper: sends events only).
        #[arg(long, value_parser = ["admin", "engineer", "analyst", "viewer", "ingest"])]
        role: String,
        /// The token's name, shown in the audit log and as the actor of what it does [default: the role].
        #[arg(long)]
        name: Option<String>,
    },
    /// List tokens (never their secrets).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Who `qila token create` records as the creator.
const CREATOR: &str = "cli";

/// Runs a `qila token` subcommand.
pub async fn token(settings: &Settings, command: TokenCommand) -> anyhow::Result<ExitCode> {
    let data_dir = settings.data_dir();
    let store = Store::open_with(&data_dir, settings.store_options())
        .await
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
    let code = match command {
        TokenCommand::Create { role, name } => {
            let role = Role::parse(&role).with_context(|| format!("unknown role `{role}`"))?;
            let name = name.unwrap_or_else(|| role.as_str().to_string());
            let (_, secret) = store
                .create_token(&name, role, CREATOR)
                .await
                .context("cannot create the token")?;
            println!("{secret}");
            ExitCode::SUCCESS
        }
        TokenCommand::List { json } => {
            let tokens = store.tokens().await.context("cannot list tokens")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else {
                let rows: Vec<Vec<String>> = tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.clone(),
                            t.name.clone(),
                            t.role.as_str().to_string(),
                            fmt::time_ms(Some(t.created_at)),
                            t.created_by.clone(),
                            t.revoked_at.map_or_else(String::new, |at| {
                                format!("revoked {}", fmt::time_ms(Some(at)))
                            }),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    fmt::table(&["ID", "NAME", "ROLE", "CREATED", "BY", ""], &rows)
                );
            }
            ExitCode::SUCCESS
        }
    };
    store.close().await;
    Ok(code)
}
