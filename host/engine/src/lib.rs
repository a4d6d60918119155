//! Runs Qila playbooks.
//!
//! The engine walks a playbook's step DAG: a step is dispatched as soon as every step it `needs` has finished,
//! so independent steps run in parallel. Before dispatch it evaluates the step's `if` and renders its `with`
//! against the run's inputs and upstream outputs; the step itself is executed by a [`StepExecutor`] — in the
//! `qila` binary, a WebAssembly sandbox — so this crate stays free of wasmtime and its tests build in seconds.
//! Every transition is sent to the store's [`Recorder`](qila_store::Recorder) as it happens.

mod executor;
mod report;
mod run;

pub use executor::{StepCall, StepError, StepExecutor};
pub use report::{RunReport, StepEvent, StepReport};
pub use run::{Engine, EngineError};
