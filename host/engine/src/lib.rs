//! Runs Qila playbooks durably.
//!
//! The [`Orchestrator`] publishes playbook versions, starts runs (by API, webhook, schedule or internal event) and
//! drives each run's step DAG. Every transition is committed to the store before it is acted on: a step is claimed
//! with a lease before its plugin runs, and its result is recorded before its dependents start. A run's in-memory
//! state is a cache of its rows, so a restarted process resumes every unfinished run; a run that only waits (on a
//! backoff, a sleep, an approval, a child run or a concurrency slot) is dropped from memory until its wait ends.
//!
//! Steps are executed by a [`StepExecutor`] — in the `qila` binary, a WebAssembly sandbox — so this crate stays
//! free of wasmtime and its tests build in seconds.

// A library reports through `tracing` and its errors, never on the process's stdout or stderr.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod builtin;
mod error;
mod executor;
mod limits;
mod ops;
mod orchestrator;
mod run;
mod state;
mod timers;
mod tlp;

pub use builtin::{BUILTIN_PLUGIN, BuiltinCatalog};
pub use error::{ActionError, EngineError, PublishError, StartError};
pub use executor::{StepCall, StepError, StepExecutor};
pub use orchestrator::{
    Approver, Options, Orchestrator, PluginCatalog, Published, RunChanged, StartRun, Started,
};
