//! `qila plugin trust|keys|install|grant` and `qila secret`: an administrator's side, over the API.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::client::{Client, ClientArgs, segment};

/// Evaluates a client call; on an error, prints it and returns its exit code from the calling command.
macro_rules! api {
    ($call:expr, $has_token:expr) => {
        match $call {
            Ok(value) => value,
            Err(e) => return Ok(e.report($has_token)),
        }
    };
}
use crate::commands::package::{print_capabilities, read_package};

/// What to grant, from the command line.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GrantArgs {
    /// `all` (everything the plugin asks for) or `none` (computation only); or pick with the flags below.
    #[arg(long, value_parser = ["all", "none"])]
    pub grant: Option<String>,
    /// Grant egress to this host pattern (one the plugin asks for); repeatable.
    #[arg(long = "egress", value_name = "PATTERN")]
    pub egress: Vec<String>,
    /// Grant the host's injection of this secret into the plugin's HTTP requests; repeatable.
    #[arg(long = "secret", value_name = "NAME")]
    pub secrets: Vec<String>,
    /// Grant the plugin reading this secret's value (audited); repeatable.
    #[arg(long = "reveal", value_name = "NAME")]
    pub reveal: Vec<String>,
    /// Grant this host pack; repeatable.
    #[arg(long = "pack", value_name = "PACK")]
    pub packs: Vec<String>,
    /// The highest TLP of data it may receive (at most what it asks for) [default with flags: clear].
    #[arg(long)]
    pub tlp: Option<String>,
}

impl GrantArgs {
    /// The `X-Qila-Grants` header's value, or `None` when nothing was chosen.
    fn header(&self) -> anyhow::Result<Option<String>> {
        let picked = !(self.egress.is_empty()
            && self.secrets.is_empty()
            && self.reveal.is_empty()
            && self.packs.is_empty()
            && self.tlp.is_none());
        match (&self.grant, picked) {
            (Some(_), true) => bail!(
                "--grant all|none cannot be combined with --egress, --secret, --reveal, --pack or --tlp"
            ),
            (Some(g), false) => Ok(Some(g.clone())),
            (None, false) => Ok(None),
            (None, true) => {
                let tlp = match &self.tlp {
                    Some(t) => t.parse::<qila_model::Tlp>()?,
                    None => qila_model::Tlp::Clear,
                };
                Ok(Some(
                    json!({
                        "egress": self.egress, "secrets": self.secrets, "reveal": self.reveal,
                        "packs": self.packs, "tlp": tlp,
                    })
                    .to_string(),
                ))
            }
        }
    }
}

/// `qila plugin trust KEY.pub`.
pub async fn trust(client: &ClientArgs, key: &Path) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(key).with_context(|| format!("cannot read {}", key.display()))?;
    let has_token = client.token.is_some();
    let client = api!(Client::new(client), has_token);
    let row = api!(
        client
            .post_bytes("/api/v1/plugin-keys", text.into_bytes(), "text/plain", &[])
            .await,
        has_token
    );
    println!(
        "trusted key {} ({})",
        row["id"].as_str().unwrap_or("?"),
        row["vendor"].as_str().unwrap_or("?")
    );
    Ok(ExitCode::SUCCESS)
}

/// `qila plugin keys`.
pub async fn keys(client: &ClientArgs, json_out: bool) -> anyhow::Result<ExitCode> {
    let has_token = client.token.is_some();
    let client = api!(Client::new(client), has_token);
    let answer = api!(client.get("/api/v1/plugin-keys", &[]).await, has_token);
    if json_out {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<18} {:<24} ADDED BY", "KEY ID", "VENDOR");
    for k in answer["keys"].as_array().into_iter().flatten() {
        println!(
            "{:<18} {:<24} {}",
            k["id"].as_str().unwrap_or("?"),
            k["vendor"].as_str().unwrap_or("?"),
            k["added_by"].as_str().unwrap_or("?")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `qila plugin install FILE`: shows what the package asks for, then installs it with the grants chosen.
pub async fn install(
    client: &ClientArgs,
    file: &Path,
    grants: &GrantArgs,
) -> anyhow::Result<ExitCode> {
    let package = read_package(file)?;
    let m = package.manifest();
    println!(
        "{} {} by {}: {}",
        m.name, m.version, m.vendor, m.description
    );
    match package.signature() {
        Some(sig) => println!("signed by key {}", sig.key_id),
        None => println!("UNSIGNED (a server installs it only in development mode)"),
    }
    print_capabilities(&m.capabilities);
    let Some(header) = grants.header()? else {
        bail!(
            "choose what to grant: --grant all, --grant none, or pick with --egress, --secret, --reveal, --pack and --tlp"
        );
    };
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let has_token = client.token.is_some();
    let client = api!(Client::new(client), has_token);
    let installed = api!(
        client
            .post_bytes(
                "/api/v1/plugins",
                bytes,
                "application/octet-stream",
                &[("X-Qila-Grants", header)],
            )
            .await,
        has_token
    );
    print_installed("installed", &installed);
    Ok(ExitCode::SUCCESS)
}

/// `qila plugin grant NAME`: replaces an installed plugin's grants.
pub async fn grant(
    client: &ClientArgs,
    name: &str,
    grants: &GrantArgs,
) -> anyhow::Result<ExitCode> {
    let Some(header) = grants.header()? else {
        bail!(
            "choose what to grant: --grant all, --grant none, or pick with --egress, --secret, --reveal, --pack and --tlp"
        );
    };
    let path = format!("/api/v1/plugins/{}/grants", segment(name));
    let has_token = client.token.is_some();
    let client = api!(Client::new(client), has_token);
    let answer = api!(
        client
            .post_bytes(
                &path,
                Vec::new(),
                "application/json",
                &[("X-Qila-Grants", header)]
            )
            .await,
        has_token
    );
    print_installed("granted", &answer);
    Ok(ExitCode::SUCCESS)
}

fn print_installed(verb: &str, p: &Value) {
    println!(
        "{verb} {} {} (digest {}, signer {})",
        p["name"].as_str().unwrap_or("?"),
        p["version"].as_str().unwrap_or("?"),
        p["digest"].as_str().map_or("?", |d| &d[..d.len().min(16)]),
        p["signer"].as_str().unwrap_or("none (development mode)")
    );
    println!("grants: {}", p["grants"]);
}

/// Subcommands of `qila secret`.
#[derive(Debug, clap::Subcommand)]
pub enum SecretCommand {
    /// Set a secret's value, read from standard input (a trailing newline is removed). Sealed at rest.
    Set {
        /// The secret's name.
        name: String,
    },
    /// List the secrets' names (never their values).
    List,
    /// Delete a secret.
    Delete {
        /// The secret's name.
        name: String,
    },
}

/// Runs a `qila secret` subcommand against the server.
pub async fn secret(client: &ClientArgs, command: SecretCommand) -> anyhow::Result<ExitCode> {
    let has_token = client.token.is_some();
    let client = api!(Client::new(client), has_token);
    match command {
        SecretCommand::Set { name } => {
            let mut value = String::new();
            std::io::stdin()
                .take(1 << 20)
                .read_to_string(&mut value)
                .context("cannot read the value from standard input")?;
            let value = value.strip_suffix('\n').unwrap_or(&value);
            let value = value.strip_suffix('\r').unwrap_or(value);
            if value.is_empty() {
                bail!(
                    "the value is empty: pipe it in, e.g. `printf %s \"$TOKEN\" | qila secret set {name}`"
                );
            }
            api!(
                client
                    .post(
                        &format!("/api/v1/secrets/{}", segment(&name)),
                        &json!({ "value": value }),
                    )
                    .await,
                has_token
            );
            println!("secret `{name}` set");
        }
        SecretCommand::List => {
            let answer = api!(client.get("/api/v1/secrets", &[]).await, has_token);
            for s in answer["secrets"].as_array().into_iter().flatten() {
                println!(
                    "{}  (set by {})",
                    s["name"].as_str().unwrap_or("?"),
                    s["updated_by"].as_str().unwrap_or("?")
                );
            }
        }
        SecretCommand::Delete { name } => {
            api!(
                client
                    .delete(&format!("/api/v1/secrets/{}", segment(&name)))
                    .await,
                has_token
            );
            println!("secret `{name}` deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}
