//! TLP-aware data flow: the label a step's input carries, from the sources it reads.
//!
//! A value carries the TLP of its source:
//! - an input: the caller's mark on it (or on every input, `*`), the playbook's `tlp:` on its declaration, and any
//!   `tlp` member inside the value itself (an observable `{"value": ..., "tlp": "amber"}`), whichever is highest;
//! - a step's output: the label of what the step received, raised by any `tlp` member inside the output.
//!
//! Before a step's plugin runs, the engine compares the label of what the step reads ([`qila_model::Step::data_sources`])
//! with the plugin's limit, and refuses the step when the label is higher.

use std::collections::HashMap;

use qila_model::{Playbook, Tlp};
use serde_json::Value;

/// A TLP level with the source it comes from, for the refusal's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Label {
    pub level: Tlp,
    /// Where the level comes from: `inputs.ip (TLP:RED, marked by the caller)`.
    pub origin: String,
    /// The step whose output last carried it, if it came through steps.
    pub via: Option<String>,
}

impl Label {
    /// The source as a message names it: `inputs.ip (...), via steps.enrich`.
    pub fn source(&self) -> String {
        match &self.via {
            Some(step) => format!("{}, via steps.{step}", self.origin),
            None => self.origin.clone(),
        }
    }
}

impl Label {
    fn max(a: Option<Label>, b: Option<Label>) -> Option<Label> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.level > a.level { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// What a label is computed from: a run's playbook, marks, inputs and its steps' outputs.
pub(crate) struct Flow<'a, F: Fn(usize) -> Option<&'a Value>> {
    pub playbook: &'a Playbook,
    pub marks: Option<&'a Value>,
    pub inputs: &'a Value,
    pub output: F,
    /// Labels already known (of steps that ended), consulted before computing.
    pub known: Option<&'a HashMap<usize, Option<Label>>>,
}

impl<'a, F: Fn(usize) -> Option<&'a Value>> Flow<'a, F> {
    /// The label of input `name`.
    fn input(&self, name: &str) -> Option<Label> {
        let mark = |key: &str| {
            self.marks
                .and_then(|m| m.get(key))
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<Tlp>().ok())
        };
        let mut best = None;
        for (level, how) in [
            (mark(name), "marked by the caller"),
            (mark("*"), "marked by the caller for every input"),
            (
                self.playbook.inputs.get(name).and_then(|s| s.tlp),
                "declared by the playbook",
            ),
            (
                self.inputs.get(name).and_then(Tlp::found_in),
                "labelled in the value",
            ),
        ] {
            if let Some(level) = level {
                best = Label::max(
                    best,
                    Some(Label {
                        level,
                        origin: format!("inputs.{name} ({level}, {how})"),
                        via: None,
                    }),
                );
            }
        }
        best
    }

    /// The label of what step `i` hands to its plugin. `memo` keeps the labels of steps already computed.
    pub fn step_input(&self, i: usize, memo: &mut HashMap<usize, Option<Label>>) -> Option<Label> {
        if let Some(found) = memo.get(&i).or_else(|| self.known.and_then(|k| k.get(&i))) {
            return found.clone();
        }
        // Guards against a cycle through `all_steps` (a handler reading `error`): a step in progress counts as
        // unlabelled while it is being computed.
        memo.insert(i, None);
        let pb = self.playbook;
        let sources = pb.steps[i].data_sources();
        let mut best = None;
        let names: Vec<&String> = if sources.all_inputs {
            pb.inputs.keys().collect()
        } else {
            sources.inputs.iter().collect()
        };
        for name in names {
            best = Label::max(best, self.input(name));
        }
        if sources.all_inputs
            && let Some(obj) = self.inputs.as_object()
        {
            for name in obj.keys().filter(|k| !pb.inputs.contains_key(*k)) {
                best = Label::max(best, self.input(name));
            }
        }
        let steps: Vec<usize> = pb
            .steps
            .iter()
            .enumerate()
            .filter(|(j, s)| *j != i && (sources.all_steps || sources.steps.contains(&s.id)))
            .map(|(j, _)| j)
            .collect();
        for j in steps {
            best = Label::max(best, self.step_output(j, memo));
        }
        memo.insert(i, best.clone());
        best
    }

    /// The label of step `j`'s output.
    fn step_output(&self, j: usize, memo: &mut HashMap<usize, Option<Label>>) -> Option<Label> {
        let id = &self.playbook.steps[j].id;
        let received = self.step_input(j, memo).map(|l| Label {
            via: Some(id.clone()),
            ..l
        });
        let carried = (self.output)(j).and_then(Tlp::found_in).map(|level| Label {
            level,
            origin: format!("steps.{id}.output ({level}, labelled in the value)"),
            via: None,
        });
        Label::max(received, carried)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn playbook() -> Playbook {
        Playbook::parse(
            r#"
name: flow
version: 1
inputs:
  ip: { type: string, tlp: green }
  note: { type: string, required: false }
steps:
  lookup:
    uses: intel.lookup
    with: { value: "${{ inputs.ip }}" }
  report:
    needs: [lookup]
    uses: notify.send
    with: { text: "${{ steps.lookup.output.summary }}" }
  quiet:
    uses: notify.send
    with: { text: "static" }
"#,
            "flow.yaml",
        )
        .unwrap()
    }

    #[test]
    fn labels_follow_the_data_and_name_their_source() {
        let pb = playbook();
        let inputs = json!({"ip": "192.0.2.1"});
        let outputs = [json!({"summary": "x"}), json!(null), json!(null)];
        let flow = Flow {
            playbook: &pb,
            marks: None,
            inputs: &inputs,
            output: |j| outputs.get(j),
            known: None,
        };
        let mut memo = HashMap::new();
        let l = flow.step_input(0, &mut memo).unwrap();
        assert_eq!(l.level, Tlp::Green);
        assert!(
            l.source().contains("declared by the playbook"),
            "{}",
            l.source()
        );
        assert_eq!(flow.step_input(2, &mut memo), None);

        let marks = json!({"ip": "red"});
        let flow = Flow {
            playbook: &pb,
            marks: Some(&marks),
            inputs: &inputs,
            output: |j| outputs.get(j),
            known: None,
        };
        let l = flow.step_input(1, &mut HashMap::new()).unwrap();
        assert_eq!(l.level, Tlp::Red);
        assert_eq!(
            l.source(),
            "inputs.ip (TLP:RED, marked by the caller), via steps.lookup"
        );
    }

    #[test]
    fn a_label_inside_an_output_raises_its_readers() {
        let pb = playbook();
        let inputs = json!({"ip": "192.0.2.1"});
        let outputs = [json!({"summary": "x", "tlp": "amber+strict"})];
        let flow = Flow {
            playbook: &pb,
            marks: None,
            inputs: &inputs,
            output: |j| outputs.get(j),
            known: None,
        };
        let l = flow.step_input(1, &mut HashMap::new()).unwrap();
        assert_eq!(l.level, Tlp::AmberStrict);
        assert!(
            l.source().starts_with("steps.lookup.output"),
            "{}",
            l.source()
        );
    }
}
