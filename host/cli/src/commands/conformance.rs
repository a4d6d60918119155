//! `qila plugin test FILE`: checks a plugin against the contract, as a vendor's CI and ours run it.
//!
//! The checks, in order: the file is a component of the contract that loads in the real sandbox; its manifest
//! follows the rules (names, semantic version, summaries, unique actions); every schema is a valid JSON Schema;
//! (for a package) its imports are covered by its capabilities; every action has an example input that its input
//! schema accepts, answers it under the limits the plugin asks for, with output its output schema accepts; an
//! unknown action is answered with a typed `not-found`. Network egress and secrets are not granted during the
//! test: an action that needs them and answers `denied` or `transient` is skipped, not failed.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use qila_package::{Capabilities, Package, check_imports};
use qila_sandbox::{ErrorKind, InvocationContext, Plugin, Sandbox, SandboxConfig};
use serde::Serialize;
use serde_json::{Value, json};

use crate::commands::package::manifest_of;
use crate::registry::policy_from_grants;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It holds.
    Pass,
    /// It does not: the plugin breaks the contract.
    Fail,
    /// It could not be checked here (the action needs a capability the kit does not grant).
    Skip,
}

/// One check and what it found.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// The outcome.
    pub outcome: Outcome,
    /// Why, when it did not pass.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

struct Report(Vec<Check>);

impl Report {
    fn push(&mut self, name: impl Into<String>, outcome: Outcome, detail: impl Into<String>) {
        self.0.push(Check {
            name: name.into(),
            outcome,
            detail: detail.into(),
        });
    }
}

/// Runs every check on a package (`.qpkg`) or a bare component (`.wasm`). Exit 0 when nothing fails, 1 otherwise.
pub async fn test(file: &Path, json_out: bool) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut report = Report(Vec::new());
    let checks = run(&bytes, &mut report).await;
    if let Err(e) = checks {
        report.push("the kit ran to the end", Outcome::Fail, format!("{e:#}"));
    }
    let failed = report
        .0
        .iter()
        .filter(|c| c.outcome == Outcome::Fail)
        .count();
    let skipped = report
        .0
        .iter()
        .filter(|c| c.outcome == Outcome::Skip)
        .count();
    let passed = report.0.len() - failed - skipped;
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "file": file.display().to_string(), "passed": passed, "failed": failed, "skipped": skipped,
                "checks": report.0,
            }))?
        );
    } else {
        for c in &report.0 {
            let tag = match c.outcome {
                Outcome::Pass => "PASS",
                Outcome::Fail => "FAIL",
                Outcome::Skip => "SKIP",
            };
            if c.detail.is_empty() {
                println!("{tag}  {}", c.name);
            } else {
                println!("{tag}  {}: {}", c.name, c.detail);
            }
        }
        println!("{passed} passed, {failed} failed, {skipped} skipped");
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn run(bytes: &[u8], report: &mut Report) -> anyhow::Result<()> {
    // A package brings its manifest and capabilities; a bare component only its own description.
    let (component, declared): (Vec<u8>, Option<qila_package::Manifest>) =
        if bytes.starts_with(b"QILAPKG") {
            match Package::parse(bytes) {
                Ok(p) => {
                    report.push("package format and component digest", Outcome::Pass, "");
                    (p.component().to_vec(), Some(p.manifest().clone()))
                }
                Err(e) => {
                    report.push(
                        "package format and component digest",
                        Outcome::Fail,
                        e.to_string(),
                    );
                    return Ok(());
                }
            }
        } else {
            (bytes.to_vec(), None)
        };
    let caps = declared
        .as_ref()
        .map(|m| m.capabilities.clone())
        .unwrap_or_default();
    // Everything the plugin asks for except egress and secrets, under the limits it asks for.
    let grants = qila_package::Grants {
        packs: caps.packs.clone(),
        limits: caps.limits,
        ..qila_package::Grants::default()
    };
    let (policy, _) = policy_from_grants(&grants)?;
    let sandbox = Sandbox::new(SandboxConfig::default())?;
    let plugin = match sandbox.load(&component, policy).await {
        Ok(p) => {
            report.push(
                "loads in the sandbox as a qila:plugin component",
                Outcome::Pass,
                "",
            );
            p
        }
        Err(e) => {
            report.push(
                "loads in the sandbox as a qila:plugin component",
                Outcome::Fail,
                e.to_string(),
            );
            return Ok(());
        }
    };
    let described = manifest_of(&plugin, caps.clone());
    let mut checked = described.clone();
    checked.component.sha256 = "0".repeat(64);
    match checked.check() {
        Ok(()) => report.push("manifest is well-formed", Outcome::Pass, ""),
        Err(e) => report.push("manifest is well-formed", Outcome::Fail, e.to_string()),
    }
    if described.description.trim().is_empty() {
        report.push(
            "manifest has a description",
            Outcome::Fail,
            "the description is empty",
        );
    }
    for a in &described.actions {
        if a.summary.trim().is_empty() {
            report.push(
                format!("action `{}` has a summary", a.name),
                Outcome::Fail,
                "empty",
            );
        }
    }
    if let Some(m) = &declared {
        let same = m.name == described.name
            && m.version == described.version
            && m.actions == described.actions;
        if same {
            report.push("package manifest matches the component", Outcome::Pass, "");
        } else {
            report.push(
                "package manifest matches the component",
                Outcome::Fail,
                "the component's name, version or actions differ from the manifest's: pack it again",
            );
        }
        imports(report, &m.capabilities, &plugin);
    }
    for a in &described.actions {
        for (which, schema) in [("input", &a.input_schema), ("output", &a.output_schema)] {
            let name = format!("`{}` {which} schema is a valid JSON Schema", a.name);
            match jsonschema::meta::validate(schema) {
                Ok(()) => report.push(name, Outcome::Pass, ""),
                Err(e) => report.push(name, Outcome::Fail, e.to_string()),
            }
        }
    }
    for a in &described.actions {
        example(
            report,
            &plugin,
            &a.name,
            a.example_input.as_ref(),
            &a.input_schema,
        )
        .await;
    }
    let ctx = InvocationContext::adhoc("conformance");
    let unknown = "qila-conformance-no-such-action";
    let name = "an unknown action is answered `not-found`";
    match plugin.invoke(unknown, &json!({}), &ctx).await {
        Err(e) if e.kind == ErrorKind::NotFound => report.push(name, Outcome::Pass, ""),
        Err(e) => report.push(
            name,
            Outcome::Fail,
            format!("answered `{}`: {}", e.kind.as_str(), e.message),
        ),
        Ok(v) => report.push(name, Outcome::Fail, format!("answered with output {v}")),
    }
    Ok(())
}

fn imports(report: &mut Report, caps: &Capabilities, plugin: &Plugin) {
    let name = "imports are covered by the capabilities";
    match check_imports(caps, plugin.imports()) {
        Ok(()) => report.push(name, Outcome::Pass, ""),
        Err(problems) => {
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            report.push(name, Outcome::Fail, lines.join("; "));
        }
    }
}

async fn example(
    report: &mut Report,
    plugin: &Plugin,
    action: &str,
    example: Option<&Value>,
    input_schema: &Value,
) {
    let name = format!("`{action}` answers its example input");
    let Some(example) = example else {
        report.push(name, Outcome::Fail, "the action has no example input");
        return;
    };
    if let Ok(validator) = jsonschema::validator_for(input_schema)
        && let Err(e) = validator.validate(example)
    {
        report.push(
            name,
            Outcome::Fail,
            format!("the example breaks the input schema: {e}"),
        );
        return;
    }
    let ctx = InvocationContext::adhoc("conformance");
    match plugin.invoke(action, example, &ctx).await {
        Ok(_) => report.push(name, Outcome::Pass, ""),
        Err(e) if matches!(e.kind, ErrorKind::Denied | ErrorKind::Transient) => report.push(
            name,
            Outcome::Skip,
            format!(
                "needs a capability the kit does not grant (`{}`: {})",
                e.kind.as_str(),
                e.message
            ),
        ),
        Err(e) => {
            let what = match e.kind {
                ErrorKind::CpuLimit
                | ErrorKind::MemoryLimit
                | ErrorKind::Timeout
                | ErrorKind::OutputTooLarge => "it broke the limits it asks for",
                ErrorKind::InvalidOutput => "its output breaks its output schema",
                ErrorKind::Trap | ErrorKind::StackOverflow => "it crashed",
                _ => "it failed",
            };
            report.push(
                name,
                Outcome::Fail,
                format!("{what}: `{}`: {}", e.kind.as_str(), e.message),
            );
        }
    }
}
