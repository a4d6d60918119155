//! Hostile: recurses without bound. The guest's stack overflows and traps; the host must survive it.

use std::hint::black_box;

use qila_sdk::prelude::*;
use serde_json::Value;

#[inline(never)]
#[allow(unconditional_recursion)]
fn down(depth: u64, frame: [u64; 16]) -> u64 {
    let mut next = black_box(frame);
    next[(depth % 16) as usize] = depth;
    // Not a tail call: the result is used after the recursive call returns.
    black_box(down(black_box(depth + 1), next)).wrapping_add(next[0])
}

/// Recurses until the stack overflows.
#[action(example = "{}")]
pub fn deep(_input: Value) -> Result<Value, Error> {
    Ok(Value::from(down(black_box(0), [0; 16])))
}

qila_sdk::plugin! {
    name: "recurse",
    vendor: "Qila tests",
    description: "Hostile: overflows its stack.",
    actions: [deep],
}
