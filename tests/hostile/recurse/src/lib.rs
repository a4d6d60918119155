//! Hostile: recurses without bound. The host must stop it with a typed error and survive it.
//!
//! Two ways to run out of stack: `climb` recurses with frames that live only on the WebAssembly stack (the engine's
//! stack, guarded by wasmtime: `stack-overflow`); `deep` passes arrays by value, so its frames live on the Rust
//! guest's own stack in linear memory, which runs off its bottom first (an out-of-bounds `trap`).

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

/// Recurses with 128-byte frames on the guest's stack in linear memory until it runs out.
#[action(example = "{}")]
pub fn deep(_input: Value) -> Result<Value, Error> {
    Ok(Value::from(down(black_box(0), [0; 16])))
}

/// Only scalars, no address taken: every frame is a WebAssembly frame and nothing goes to the shadow stack in
/// linear memory. The result is mixed after the call returns (not associative), so it cannot become a loop.
#[inline(never)]
fn up(n: u64) -> u64 {
    if n == 0 {
        return 1;
    }
    up(n - 1).rotate_left(7) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Recurses (practically) forever on the WebAssembly stack, which the host bounds.
#[action(example = "{}")]
pub fn climb(_input: Value) -> Result<Value, Error> {
    Ok(Value::from(up(black_box(u64::MAX))))
}

qila_sdk::plugin! {
    name: "recurse",
    vendor: "Qila tests",
    description: "Hostile: overflows its stack.",
    actions: [deep, climb],
}
