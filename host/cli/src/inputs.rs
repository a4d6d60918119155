//! Run inputs from the command line: `--input KEY=VALUE` (repeatable) and `--input-file FILE`.

use std::path::{Path, PathBuf};

use qila_model::{Diagnostic, Diagnostics, Playbook};
use serde_json::{Map, Value};

/// The inputs of a run, as given on the command line.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct InputArgs {
    /// An input as KEY=VALUE; the value is read according to the input's declared type. Repeatable.
    #[arg(long = "input", short = 'i', value_name = "KEY=VALUE")]
    pub inputs: Vec<String>,
    /// A YAML or JSON file with an object of inputs; `--input` values override it.
    #[arg(long, value_name = "FILE")]
    pub input_file: Option<PathBuf>,
}

impl InputArgs {
    /// The inputs as JSON values; malformed ones become diagnostics. With the playbook, each `--input` value is
    /// read by its input's declared type (`n=3` is a number for an `integer` input, a string for a `string` one);
    /// without it, a value that is JSON other than a string (`3`, `true`, `[1]`, `{}`) is read as JSON, and
    /// anything else is a string.
    pub fn gather(&self, playbook: Option<&Playbook>) -> Result<Map<String, Value>, Diagnostics> {
        let mut provided = Map::new();
        if let Some(path) = &self.input_file {
            provided.extend(read_input_file(path)?);
        }
        for pair in &self.inputs {
            let Some((key, raw)) = pair.split_once('=') else {
                return Err(Diagnostics(vec![Diagnostic {
                    file: "--input".into(),
                    line: 1,
                    col: 1,
                    message: format!("`{pair}` is not KEY=VALUE"),
                }]));
            };
            let value = match playbook {
                Some(pb) => pb.coerce_cli_input(key, raw),
                None => guess(raw),
            };
            provided.insert(key.to_string(), value);
        }
        Ok(provided)
    }
}

/// A value without a declared type to read it by.
fn guess(raw: &str) -> Value {
    match serde_json::from_str::<Value>(raw.trim()) {
        Ok(v) if !v.is_string() && !v.is_null() => v,
        _ => Value::String(raw.to_string()),
    }
}

fn read_input_file(path: &Path) -> Result<Map<String, Value>, Diagnostics> {
    let file = path.display().to_string();
    let diag = |line, col, message: String| {
        Diagnostics(vec![Diagnostic {
            file: file.clone(),
            line,
            col,
            message,
        }])
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| diag(1, 1, format!("cannot read input file: {e}")))?;
    let value: Value = serde_yaml::from_str(&text).map_err(|e| {
        let (line, col) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        diag(line, col, format!("invalid input file: {e}"))
    })?;
    match value {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        _ => Err(diag(
            1,
            1,
            "the input file must hold an object of inputs".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(inputs: &[&str]) -> InputArgs {
        InputArgs {
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            input_file: None,
        }
    }

    #[test]
    fn values_are_read_by_declared_type() {
        let pb = Playbook::parse(
            "name: t\nversion: 1\ninputs:\n  n: { type: integer }\n  s: { type: string }\nsteps:\n  a: { uses: core.echo }\n",
            "t.yaml",
        )
        .unwrap();
        let got = args(&["n=3", "s=3"]).gather(Some(&pb)).unwrap();
        assert_eq!(Value::Object(got), json!({"n": 3, "s": "3"}));
    }

    #[test]
    fn without_the_playbook_json_scalars_are_guessed() {
        let got = args(&["n=3", "b=true", "s=hello", "q=\"x\"", "o={\"a\":1}", "e="])
            .gather(None)
            .unwrap();
        assert_eq!(
            Value::Object(got),
            json!({"n": 3, "b": true, "s": "hello", "q": "\"x\"", "o": {"a": 1}, "e": ""})
        );
    }

    #[test]
    fn a_pair_without_equals_is_a_diagnostic() {
        let err = args(&["oops"]).gather(None).unwrap_err();
        assert_eq!(err.to_string(), "--input:1:1: `oops` is not KEY=VALUE");
    }

    #[test]
    fn the_input_file_is_overridden_by_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("in.yaml");
        std::fs::write(&file, "a: 1\nb: two\n").unwrap();
        let mut a = args(&["b=three"]);
        a.input_file = Some(file);
        assert_eq!(
            Value::Object(a.gather(None).unwrap()),
            json!({"a": 1, "b": "three"})
        );
    }
}
