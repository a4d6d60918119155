//! Hostile: burns CPU forever. The host must stop it (epoch interruption, wall-clock timeout).

use std::hint::black_box;

use qila_sdk::prelude::*;
use serde_json::Value;

/// Loops forever without calling the host.
#[action(example = "{}")]
pub fn spin(_input: Value) -> Result<Value, Error> {
    let mut x: u64 = black_box(1);
    loop {
        x = black_box(
            x.wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407),
        );
    }
}

/// Sleeps forever in short sleeps (through WASI clocks): only the wall-clock timeout stops it.
#[action(example = "{}")]
pub fn nap(_input: Value) -> Result<Value, Error> {
    loop {
        std::thread::sleep(black_box(std::time::Duration::from_millis(10)));
    }
}

qila_sdk::plugin! {
    name: "spin",
    vendor: "Qila tests",
    description: "Hostile: never returns.",
    actions: [spin, nap],
}
