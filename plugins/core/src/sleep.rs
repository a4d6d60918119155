//! `core.sleep`: wait a while.

use std::time::Duration;

use qila_sdk::prelude::*;

/// The longest sleep: one hour. The host's wall-clock timeout for the step applies as well.
pub const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// The input of `core.sleep`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SleepInput {
    /// How long to wait: a number of seconds (`1.5`) or a number with a unit, `ms`, `s`, `m` or `h` (`250ms`,
    /// `2s`, `1m`). At most one hour.
    pub duration: DurationSpec,
}

/// A duration, as seconds or as text with a unit.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum DurationSpec {
    /// A number of seconds.
    Seconds(f64),
    /// A number with a unit: `250ms`, `2s`, `1.5m`, `1h`.
    Text(String),
}

impl DurationSpec {
    /// The duration, if it is non-negative, finite and at most [`MAX_SLEEP`].
    pub fn to_duration(&self) -> Result<Duration, String> {
        let seconds = match self {
            Self::Seconds(s) => *s,
            Self::Text(text) => parse_text(text)?,
        };
        if !(seconds.is_finite() && seconds >= 0.0) {
            return Err(format!("`{seconds}` is not a duration"));
        }
        if seconds > MAX_SLEEP.as_secs_f64() {
            return Err(format!(
                "{seconds} s is longer than the maximum of {} s",
                MAX_SLEEP.as_secs()
            ));
        }
        Ok(Duration::from_secs_f64(seconds))
    }
}

/// `250ms`, `2s`, `1.5m`, `1h` (surrounding spaces allowed) as seconds.
fn parse_text(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "ms" => 0.001,
        "s" | "" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use ms, s, m or h"
            ));
        }
    };
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like `250ms` or `2s`"))?;
    Ok(number * scale)
}

/// The output of `core.sleep`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SleepOutput {
    /// How long the action slept, in milliseconds.
    pub slept_ms: u64,
}

/// Waits for a duration (at most one hour), then returns how long it slept.
#[action(example = r#"{"duration": "250ms"}"#)]
pub fn sleep(input: SleepInput) -> Result<SleepOutput, Error> {
    let duration = input
        .duration
        .to_duration()
        .map_err(|e| Error::invalid_input(format!("at `duration`: {e}")))?;
    let start = std::time::Instant::now();
    std::thread::sleep(duration);
    let slept_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(SleepOutput { slept_ms })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::PLUGIN;

    #[test]
    fn parses_durations() {
        let d = |v: serde_json::Value| {
            serde_json::from_value::<DurationSpec>(v)
                .unwrap()
                .to_duration()
        };
        assert_eq!(d(json!("250ms")), Ok(Duration::from_millis(250)));
        assert_eq!(d(json!(" 2s ")), Ok(Duration::from_secs(2)));
        assert_eq!(d(json!("1.5m")), Ok(Duration::from_secs(90)));
        assert_eq!(d(json!("1h")), Ok(Duration::from_secs(3600)));
        assert_eq!(d(json!(0.25)), Ok(Duration::from_millis(250)));
        assert_eq!(d(json!("3")), Ok(Duration::from_secs(3)));
        assert!(
            d(json!("61m"))
                .unwrap_err()
                .contains("longer than the maximum")
        );
        assert!(d(json!(-1)).is_err());
        assert!(d(json!("2 weeks")).unwrap_err().contains("unknown unit"));
        assert!(d(json!("fast")).is_err());
        assert!(d(json!("1e999")).is_err());
    }

    #[test]
    fn sleeps() {
        let out = PLUGIN
            .invoke_json("sleep", json!({"duration": "20ms"}), &Context::default())
            .unwrap();
        assert!(out["slept_ms"].as_u64().unwrap() >= 20);
        let e = PLUGIN
            .invoke_json("sleep", json!({"duration": "2h"}), &Context::default())
            .unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)));
    }
}
