//! `qila hunt`: Sigma detection over JSON Lines, EVTX and log files, without a server.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use qila_detect::{Detector, FindingKind, RuleSet};
use qila_events::ParseError;
use qila_events::files::{Location, read_file};
use serde_json::{Value, json};

/// The exit status of `qila hunt` and `qila ingest` when an input file is cut short or damaged (a truncated EVTX):
/// every record that could be read was processed, and stderr names the file and the byte where it ends or the
/// damage starts. 2 stays "a file could not be read at all".
pub const DAMAGED: u8 = 3;

/// Arguments of `qila hunt`.
#[derive(Debug, Args)]
pub struct HuntArgs {
    /// Sigma rule files or directories, searched recursively for `.yml`/`.yaml` (repeat the option, or separate
    /// them with commas).
    #[arg(long = "rules", short = 'r', required = true, value_delimiter = ',')]
    pub rules: Vec<PathBuf>,
    /// Sigma processing pipelines (pySigma YAML) for field mapping.
    #[arg(long = "pipeline")]
    pub pipelines: Vec<PathBuf>,
    /// Print one JSON object per match (rule_id, rule_title, level, tags, file, line, event, …).
    #[arg(long)]
    pub json: bool,
    /// Print every rule that could not be loaded, with the reason (otherwise only their number).
    #[arg(long)]
    pub show_failed: bool,
    /// Event files: JSON Lines, concatenated JSON objects, EVTX, Zeek TSV logs or text logs.
    #[arg(required = true)]
    pub events: Vec<PathBuf>,
}

/// Runs the hunt: exit 0 when every file was read (matches or not), 2 when a file or the rules could not be read,
/// [`DAMAGED`] when a file is cut short or damaged (its readable records were hunted; stderr names the byte).
pub fn hunt(args: HuntArgs) -> anyhow::Result<ExitCode> {
    let rules = RuleSet::load(&args.rules, &args.pipelines).context("loading the rules")?;
    let report = rules.report().clone();
    eprintln!(
        "{} rules loaded ({} detection, {} correlation) from {} files; {} could not be loaded{}",
        report.loaded.len(),
        rules.detection_rules(),
        rules.correlation_rules(),
        report.files,
        report.failed.len(),
        if report.failed.is_empty() || args.show_failed {
            ""
        } else {
            " (--show-failed lists them)"
        }
    );
    if args.show_failed {
        for failure in &report.failed {
            match &failure.rule {
                Some(rule) => eprintln!("  {}: {rule}: {}", failure.origin, failure.reason),
                None => eprintln!("  {}: {}", failure.origin, failure.reason),
            }
        }
    }
    let mut detector = Detector::new(rules);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let received_us = qila_store::now_us();
    let (mut events, mut matches, mut bad) = (0u64, 0u64, 0u64);
    let (mut unreadable, mut damaged) = (false, 0u64);
    for path in &args.events {
        let file = path.display().to_string();
        let records = match read_file(path, received_us) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{file}: {e}");
                unreadable = true;
                continue;
            }
        };
        let mut file_damaged = false;
        for record in records {
            let number = match record.location {
                Location::Line(n) | Location::Record(n) | Location::Byte(n) => n,
            };
            let event = match record.result {
                Ok(event) => event,
                Err(e) => {
                    if matches!(e, ParseError::Damaged(_)) {
                        file_damaged = true;
                    } else {
                        bad += 1;
                    }
                    eprintln!("{file}: {}: {e}", record.location);
                    continue;
                }
            };
            events += 1;
            let reference = format!("{file}:{number}");
            for finding in detector.detect(&event, &reference) {
                matches += 1;
                let body = serde_json::from_str::<Value>(&event.raw)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| Value::Object(event.fields.clone()));
                if args.json {
                    let mut line = json!({
                        "rule_id": finding.rule_id,
                        "rule_title": finding.rule_title,
                        "level": finding.level,
                        "tags": finding.tags,
                        "file": file,
                        "line": number,
                        "event": body,
                        "group_key": finding.group_key,
                    });
                    if let FindingKind::Correlation {
                        correlation, value, ..
                    } = &finding.kind
                    {
                        line["correlation"] =
                            json!({"type": correlation, "value": value, "events": finding.events});
                    }
                    writeln!(out, "{line}")?;
                } else {
                    writeln!(
                        out,
                        "{:<8} {}  {file}:{number}{}",
                        finding.level,
                        finding.rule_title,
                        if finding.group_key.is_empty() {
                            String::new()
                        } else {
                            format!("  [{}]", finding.group_key)
                        }
                    )?;
                }
            }
        }
        damaged += u64::from(file_damaged);
    }
    out.flush()?;
    eprintln!(
        "{events} events, {matches} matches, {bad} records could not be parsed{}",
        if damaged > 0 {
            format!(
                ", {damaged} {} cut short or damaged",
                if damaged == 1 { "file" } else { "files" }
            )
        } else {
            String::new()
        }
    );
    Ok(if unreadable {
        ExitCode::from(2)
    } else if damaged > 0 {
        ExitCode::from(DAMAGED)
    } else {
        ExitCode::SUCCESS
    })
}
