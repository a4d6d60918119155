//! Hostile: returns an enormous output. The host's output-size limit must refuse it.

use std::hint::black_box;

use qila_sdk::prelude::*;

/// The input of `flood.flood`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FloodInput {
    /// How many MiB of output to return; 16 when absent.
    #[serde(default)]
    pub mib: Option<u32>,
}

/// The output of `flood.flood`.
#[derive(Serialize, JsonSchema)]
pub struct FloodOutput {
    /// A very long string.
    pub data: String,
}

/// Returns a JSON string of 16 MiB (or `mib` MiB).
#[action(example = r#"{"mib": 16}"#)]
pub fn flood(input: FloodInput) -> Result<FloodOutput, Error> {
    let len = (input.mib.unwrap_or(16) as usize) << 20;
    Ok(FloodOutput {
        data: black_box("A".repeat(len)),
    })
}

/// Logs 100,000 lines of 1 KiB each: the host must cap what it keeps of a step's log, not fail the step.
#[action(example = "{}")]
pub fn chatter(_input: serde_json::Value) -> Result<serde_json::Value, Error> {
    let line = "B".repeat(1024);
    for i in 0..black_box(100_000) {
        qila_sdk::log::info(format!("{i} {line}"));
    }
    Ok(serde_json::Value::Null)
}

/// Writes 1 MiB to stdout and to stderr, past the host's capture (64 KiB each).
#[action(example = "{}")]
pub fn shout(_input: serde_json::Value) -> Result<serde_json::Value, Error> {
    let line = "C".repeat(1024);
    for _ in 0..black_box(1024) {
        print!("{line}");
        eprint!("{line}");
    }
    Ok(serde_json::Value::Null)
}

qila_sdk::plugin! {
    name: "flood",
    vendor: "Qila tests",
    description: "Hostile: floods its output and logs.",
    actions: [flood, chatter, shout],
}
