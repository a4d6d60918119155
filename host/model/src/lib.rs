//! Qila's playbook model: types, YAML parsing with source positions, validation, `${{ }}`
//! expressions and the step DAG. A pure library: no sandbox, no database.
//!
//! ```
//! use qila_model::{EvalContext, Evaluator, Playbook};
//! # async fn demo(evaluator: &dyn Evaluator) {
//! let pb = Playbook::parse(
//!     "name: demo\nversion: 1\ninputs:\n  ip: { type: string, format: ipv4 }\nsteps:\n  a:\n    uses: intel.lookup\n    with: { value: \"${{ inputs.ip }}\" }\n",
//!     "demo.yaml",
//! ).unwrap();
//! let inputs = pb.resolve_inputs(serde_json::json!({"ip": "10.0.0.1"}).as_object().unwrap().clone()).unwrap();
//! let ctx = EvalContext::new(&inputs);
//! // `qila` passes the sandboxed evaluator of `qila-sandbox` here.
//! let with = pb.steps[0].with.render("with", &ctx, evaluator).await.unwrap();
//! assert_eq!(with, serde_json::json!({"value": "10.0.0.1"}));
//! # }
//! ```
//!
//! See [`expr`] for the expression language and its semantics.

// A library reports through `tracing` and its errors, never on the process's stdout or stderr.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod catalog;
mod diag;
mod durable;
pub mod expr;
mod inputs;
pub mod limits;
mod playbook;
mod reach;
mod schema;
mod tlp;
mod yaml;

#[cfg(test)]
mod durable_tests;
#[cfg(test)]
mod tests;

pub use catalog::{ActionCatalog, StaticCatalog, closest, did_you_mean};
pub use diag::{Diagnostic, Diagnostics, Pos};
pub use durable::{
    Backoff, ERROR_KINDS, EventTrigger, ForEach, OnError, Rate, RetryPolicy, Schedule,
    StepConcurrency, Triggers, WebhookSignature, WebhookTrigger, parse_duration,
};
pub use expr::{
    DataSources, EvalContext, EvalError, Evaluator, Expression, Failure, FailureKind, SharedValue,
    Template,
};
pub use indexmap::IndexMap;
pub use inputs::{Format, InputSpec, InputType};
pub use playbook::{Playbook, Step, source_text};
pub use tlp::{Tlp, TlpError};
