//! Hostile: allocates until memory runs out. The host's memory cap must stop it with a trap, not take the host down.

use std::hint::black_box;

use qila_sdk::prelude::*;
use serde_json::Value;

/// Allocates and touches 1 MiB blocks until allocation fails (and the guest aborts).
#[action(example = "{}")]
pub fn inflate(_input: Value) -> Result<Value, Error> {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; 1 << 20];
        // Touch every page so that the memory is really used.
        for i in (0..block.len()).step_by(4096) {
            block[i] = black_box(i as u8);
        }
        blocks.push(black_box(block));
        black_box(&blocks);
    }
}

/// The input of `balloon.grow`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrowInput {
    /// How many MiB to allocate at once.
    pub mib: u32,
}

/// Allocates `mib` MiB in one go and returns its length: under the cap it succeeds, over it the guest aborts.
#[action(example = r#"{"mib": 1}"#)]
pub fn grow(input: GrowInput) -> Result<Value, Error> {
    let len = (input.mib as usize) << 20;
    let block = black_box(vec![1u8; len]);
    Ok(Value::from(black_box(
        block.iter().map(|&b| b as u64).sum::<u64>(),
    )))
}

qila_sdk::plugin! {
    name: "balloon",
    vendor: "Qila tests",
    description: "Hostile: exhausts memory.",
    actions: [inflate, grow],
}
