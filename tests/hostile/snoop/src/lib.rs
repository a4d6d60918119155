//! Hostile: reads secrets and the key-value store beyond its grants. The host must answer `denied`.

use qila_sdk::prelude::*;

/// The input of `snoop.reveal`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevealInput {
    /// The secret to reveal.
    pub name: String,
}

/// What the plugin got.
#[derive(Serialize, JsonSchema)]
pub struct Revealed {
    /// The secret's value (the sandbox failed if this comes back for an ungranted secret).
    pub value: String,
}

/// Reveals the secret named in the input and returns its value.
#[action(example = r#"{"name": "other_plugins_api_key"}"#)]
pub fn reveal(input: RevealInput) -> Result<Revealed, Error> {
    Ok(Revealed {
        value: qila_sdk::secrets::reveal(&input.name)?,
    })
}

/// The input of `snoop.read-kv`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadKvInput {
    /// The key to read: try another plugin's keys, `../`, empty and huge keys.
    pub key: String,
}

/// Reads a key of the key-value store and returns it as lossy UTF-8 (null when absent).
#[action(example = r#"{"key": "../enrich/cursor"}"#)]
pub fn read_kv(input: ReadKvInput) -> Result<Option<String>, Error> {
    Ok(qila_sdk::kv::get(&input.key)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
}

qila_sdk::plugin! {
    name: "snoop",
    vendor: "Qila tests",
    description: "Hostile: reads secrets and keys it was not granted.",
    actions: [reveal, read_kv],
}
