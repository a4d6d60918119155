//! Qila's `notify` plugin: send notifications through the host's outbound HTTP.
//!
//! - `notify.webhook`: POST a JSON body to a URL;
//! - `notify.slack`: post a message to a Slack incoming webhook.
//!
//! The plugin needs the `http` capability with the target hosts granted, and, for `slack.url_secret`, the
//! `secrets` capability with the secret granted for reveal.

use std::collections::BTreeMap;

use qila_sdk::http::{Request, Response};
use qila_sdk::prelude::*;
use serde_json::Value;

/// The most of a response body the actions return, in bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// The input of `notify.webhook`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    /// The `http` or `https` URL to POST to. Its host must be granted to the plugin.
    pub url: String,
    /// The JSON body.
    pub body: Value,
    /// Extra request headers. `content-type: application/json` and `idempotency-key` (the step's idempotency
    /// key, the same on every retry) are sent unless given here.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The name of a granted secret that the host sends as `Authorization: Bearer <value>`.
    #[serde(default)]
    pub bearer_secret: Option<String>,
    /// Give up after this many milliseconds (the host caps it at the step's remaining time).
    #[serde(default)]
    pub timeout_ms: Option<u32>,
}

/// The response to a notification.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Delivery {
    /// The HTTP status (always 2xx: other statuses are errors).
    pub status: u16,
    /// The response body as text, cut to 64 KiB.
    pub body: String,
    /// Whether `body` was cut.
    pub truncated: bool,
}

/// POSTs a JSON body to a URL; fails on a non-2xx status (transient for 408, 429 and 5xx).
#[action(
    example = r#"{"url": "https://hooks.example.com/qila", "body": {"alert": "ssh-bruteforce", "ip": "192.0.2.1"}}"#
)]
pub fn webhook(input: WebhookInput, ctx: &Context) -> Result<Delivery, Error> {
    check_url(&input.url, "url")?;
    let mut request = Request::post(&input.url);
    let has = |name: &str| input.headers.keys().any(|k| k.eq_ignore_ascii_case(name));
    if !has("content-type") {
        request = request.header("content-type", "application/json");
    }
    if !has("idempotency-key") {
        request = request.header("idempotency-key", ctx.idempotency_key());
    }
    for (name, value) in &input.headers {
        request = request.header(name, value);
    }
    if let Some(secret) = &input.bearer_secret {
        request = request.bearer_secret(secret);
    }
    if let Some(ms) = input.timeout_ms {
        request = request.timeout_ms(ms);
    }
    deliver(request.body(serde_json::to_vec(&input.body)?))
}

/// The input of `notify.slack`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlackInput {
    /// The incoming-webhook URL (`https://hooks.slack.com/services/...`). Give this or `url_secret`.
    #[serde(default)]
    pub url: Option<String>,
    /// The name of a granted secret that holds the webhook URL: better, since the URL is itself a credential.
    #[serde(default)]
    pub url_secret: Option<String>,
    /// The message, in Slack's `mrkdwn`.
    pub text: String,
    /// Overrides the webhook's user name, where the workspace allows it.
    #[serde(default)]
    pub username: Option<String>,
    /// Overrides the webhook's icon with an emoji such as `:rotating_light:`, where the workspace allows it.
    #[serde(default)]
    pub icon_emoji: Option<String>,
}

/// The message `notify.slack` posts.
#[derive(Debug, Serialize)]
struct SlackMessage<'a> {
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icon_emoji: Option<&'a str>,
}

/// Posts a message to a Slack incoming webhook.
#[action(
    example = r#"{"url": "https://hooks.slack.com/services/T000/B000/XXXX", "text": ":rotating_light: SSH brute force from `192.0.2.1`"}"#
)]
pub fn slack(input: SlackInput, ctx: &Context) -> Result<Delivery, Error> {
    if input.text.trim().is_empty() {
        return Err(Error::invalid_input("at `text`: the message is empty"));
    }
    let url = match (&input.url, &input.url_secret) {
        (Some(url), None) => url.clone(),
        (None, Some(secret)) => qila_sdk::secrets::reveal(secret)?,
        _ => {
            return Err(Error::invalid_input(
                "give exactly one of `url` and `url_secret`",
            ));
        }
    };
    check_url(
        &url,
        if input.url.is_some() {
            "url"
        } else {
            "url_secret"
        },
    )?;
    let message = SlackMessage {
        text: &input.text,
        username: input.username.as_deref(),
        icon_emoji: input.icon_emoji.as_deref(),
    };
    qila_sdk::log::debug(format!("posting a {}-byte Slack message", input.text.len()));
    let request = Request::post(url)
        .header("idempotency-key", ctx.idempotency_key())
        .json(&message)?;
    deliver(request)
}

fn check_url(url: &str, field: &str) -> Result<(), Error> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if matches!(scheme.as_deref(), Some("http" | "https")) {
        Ok(())
    } else {
        // Do not echo a URL that came from a secret.
        Err(Error::invalid_input(format!(
            "at `{field}`: not an absolute http or https URL"
        )))
    }
}

fn deliver(request: Request) -> Result<Delivery, Error> {
    let response: Response = request.send()?.error_for_status()?;
    let (body, truncated) = truncate(response.text(), MAX_BODY);
    Ok(Delivery {
        status: response.status,
        body,
        truncated,
    })
}

/// `text` cut to at most `max` bytes at a character boundary, and whether it was cut.
fn truncate(mut text: String, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let cut = (0..=max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    text.truncate(cut);
    (text, true)
}

qila_sdk::plugin! {
    name: "notify",
    vendor: "Qila",
    description: "Sends notifications through the host's outbound HTTP: JSON webhooks and Slack messages.",
    actions: [webhook, slack],
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use qila_sdk::testing;
    use serde_json::json;

    use super::*;

    fn ctx() -> Context {
        Context::new("run-1", "notify", 2, "run-1/notify")
    }

    /// Installs an HTTP double that answers `status` and `body`, and returns the requests it saw.
    fn answer(status: u16, body: &'static str) -> Rc<RefCell<Vec<Request>>> {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let log = Rc::clone(&seen);
        testing::mock_http(move |request| {
            log.borrow_mut().push(request.clone());
            Ok(Response::new(status, body))
        });
        seen
    }

    #[test]
    fn webhook_posts_json_with_idempotency_key() {
        let seen = answer(202, "queued");
        let input = json!({
            "url": "https://hooks.example.com/qila",
            "body": {"ip": "192.0.2.1"},
            "headers": {"X-Source": "qila"},
            "bearer_secret": "hook_token",
            "timeout_ms": 1500,
        });
        let out = PLUGIN.invoke_json("webhook", input, &ctx()).unwrap();
        assert_eq!(
            out,
            json!({"status": 202, "body": "queued", "truncated": false})
        );
        let requests = seen.borrow();
        let request = &requests[0];
        assert_eq!(
            (request.method(), request.url()),
            ("POST", "https://hooks.example.com/qila")
        );
        assert_eq!(request.body_bytes(), Some(&br#"{"ip":"192.0.2.1"}"#[..]));
        assert_eq!(
            request.header_value("content-type"),
            Some("application/json")
        );
        assert_eq!(
            request.header_value("idempotency-key"),
            Some("run-1/notify")
        );
        assert_eq!(request.header_value("x-source"), Some("qila"));
        assert_eq!(request.bearer_secret_name(), Some("hook_token"));
        assert_eq!(request.timeout_millis(), Some(1500));
    }

    #[test]
    fn webhook_maps_statuses_to_errors() {
        let input = json!({"url": "https://hooks.example.com/x", "body": null});
        for (status, retryable) in [
            (500, true),
            (503, true),
            (429, true),
            (408, true),
            (400, false),
            (404, false),
        ] {
            answer(status, "nope");
            let e = PLUGIN
                .invoke_json("webhook", input.clone(), &ctx())
                .unwrap_err();
            assert_eq!(e.is_retryable(), retryable, "{status}: {e}");
            assert!(e.message().starts_with(&format!("HTTP {status}")), "{e}");
        }
        testing::mock_http(|_| Err(Error::denied("host hooks.example.com is not granted")));
        let e = PLUGIN.invoke_json("webhook", input, &ctx()).unwrap_err();
        assert_eq!(e, Error::denied("host hooks.example.com is not granted"));
    }

    #[test]
    fn webhook_truncates_long_bodies_and_checks_urls() {
        testing::mock_http(|_| Ok(Response::new(200, "é".repeat(MAX_BODY))));
        let out = PLUGIN
            .invoke_json(
                "webhook",
                json!({"url": "http://h.example/", "body": 1}),
                &ctx(),
            )
            .unwrap();
        assert_eq!(out["truncated"], true);
        assert_eq!(out["body"].as_str().unwrap().len(), MAX_BODY);
        let e = PLUGIN
            .invoke_json(
                "webhook",
                json!({"url": "file:///etc/passwd", "body": 1}),
                &ctx(),
            )
            .unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)));
        let e = PLUGIN.invoke_json(
            "webhook",
            json!({"url": "http://h.example/", "body": 1, "method": "GET"}),
            &ctx(),
        );
        assert!(matches!(e, Err(Error::InvalidInput(m)) if m.contains("unknown field `method`")));
    }

    #[test]
    fn slack_posts_a_message() {
        let seen = answer(200, "ok");
        let input = json!({"url": "https://hooks.slack.com/services/T/B/X", "text": "hi", "icon_emoji": ":wave:"});
        let out = PLUGIN.invoke_json("slack", input, &ctx()).unwrap();
        assert_eq!(out["body"], "ok");
        let body: Value = serde_json::from_slice(seen.borrow()[0].body_bytes().unwrap()).unwrap();
        assert_eq!(body, json!({"text": "hi", "icon_emoji": ":wave:"}));
    }

    #[test]
    fn slack_url_from_a_secret() {
        let seen = answer(200, "ok");
        let input = json!({"url_secret": "slack_hook", "text": "hi"});
        let e = PLUGIN
            .invoke_json("slack", input.clone(), &ctx())
            .unwrap_err();
        assert!(matches!(e, Error::Denied(_)), "{e}");
        testing::grant_secret("slack_hook", "https://hooks.slack.com/services/T/B/SECRET");
        PLUGIN.invoke_json("slack", input, &ctx()).unwrap();
        assert_eq!(
            seen.borrow()[0].url(),
            "https://hooks.slack.com/services/T/B/SECRET"
        );
        for bad in [
            json!({"text": "hi"}),
            json!({"url": "https://a/", "url_secret": "s", "text": "hi"}),
            json!({"url": "https://a/", "text": " "}),
        ] {
            assert!(matches!(
                PLUGIN.invoke_json("slack", bad, &ctx()),
                Err(Error::InvalidInput(_))
            ));
        }
    }

    #[test]
    fn plugin_checks() {
        PLUGIN.check().unwrap();
    }
}
