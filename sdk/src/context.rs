//! Where an invocation stands in a playbook run.

use crate::bindings::qila::plugin::types::InvocationContext;

/// Where an invocation stands in a playbook run: passed to every action.
///
/// In a native unit test, make one with [`Context::default`] (run `test-run`, step `test-step`, attempt 1) or
/// [`Context::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    run_id: String,
    step_id: String,
    attempt: u32,
    idempotency_key: String,
}

impl Context {
    /// A context for the given run, step and attempt (1 for the first attempt).
    pub fn new(
        run_id: impl Into<String>,
        step_id: impl Into<String>,
        attempt: u32,
        idempotency_key: impl Into<String>,
    ) -> Self {
        Self {
            run_id: run_id.into(),
            step_id: step_id.into(),
            attempt,
            idempotency_key: idempotency_key.into(),
        }
    }

    /// The run's identifier.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The step's identifier within its playbook.
    pub fn step_id(&self) -> &str {
        &self.step_id
    }

    /// 1 for the first attempt, 2 for the first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The same on every attempt of one step in one run. Pass it to external systems that accept one (an
    /// `Idempotency-Key` header, a client request id) so that a retried step does not act twice.
    pub fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }
}

impl Default for Context {
    fn default() -> Self {
        Self::new("test-run", "test-step", 1, "test-run/test-step")
    }
}

impl From<InvocationContext> for Context {
    fn from(c: InvocationContext) -> Self {
        Self {
            run_id: c.run_id,
            step_id: c.step_id,
            attempt: c.attempt,
            idempotency_key: c.idempotency_key,
        }
    }
}
