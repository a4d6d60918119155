//! A detector that breaks the contract on request: the first event's `"do"` says how. Implements the WIT world
//! directly (not through `qila_sdk::detector!`), so it can return what the SDK would never produce.

use qila_sdk::detector_bindings::qila::plugin::detection::{DetectorInfo, Finding, RuleInfo};
use qila_sdk::detector_bindings::{Error, Guest, Json};

struct Rogue;

fn finding(events: Vec<u32>) -> Finding {
    Finding {
        rule_id: "rogue.hit".into(),
        title: "hit".into(),
        level: "low".into(),
        tags: vec!["attack.t1071.004".into()],
        events,
        group_key: "rogue".into(),
        details: "{}".into(),
    }
}

impl Guest for Rogue {
    fn describe_detector() -> DetectorInfo {
        DetectorInfo {
            name: "rogue".into(),
            version: "0.1.0".into(),
            description: "Breaks the detector contract on request.".into(),
            rules: vec![RuleInfo {
                id: "rogue.hit".into(),
                title: "Events with `hit`".into(),
                level: "low".into(),
                tags: vec![],
            }],
        }
    }

    fn detect(batch: Vec<Json>) -> Result<Vec<Finding>, Error> {
        let first: serde_json::Value = serde_json::from_str(&batch[0]).unwrap_or_default();
        let len = batch.len() as u32;
        match first["do"].as_str().unwrap_or("ok") {
            "oob" => Ok(vec![finding(vec![0, len + 5])]),
            "level" => Ok(vec![Finding {
                level: "severe".into(),
                ..finding(vec![0])
            }]),
            "rule" => Ok(vec![Finding {
                rule_id: "rogue.undeclared".into(),
                ..finding(vec![0])
            }]),
            "flood" => Ok((0..10_001).map(|_| finding(vec![0])).collect()),
            "error" => Err(Error::Failed("the rogue gives up".into())),
            "trap" => panic!("rogue detector panics on purpose"),
            "spin" => {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "balloon" => {
                let mut chunks = Vec::new();
                loop {
                    chunks.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&chunks);
                }
            }
            _ => Ok(batch
                .iter()
                .enumerate()
                .filter(|(_, e)| e.contains("\"hit\":true"))
                .map(|(i, _)| finding(vec![i as u32]))
                .collect()),
        }
    }
}

qila_sdk::detector_bindings::export!(Rogue with_types_in qila_sdk::detector_bindings);
