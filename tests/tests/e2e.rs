//! End-to-end tests: one test binary (one link step), one module per area.

mod e2e {
    pub mod cli;
    pub mod detector;
    pub mod documents;
    pub mod edge;
    pub mod egress;
    pub mod evtx;
    pub mod expressions;
    pub mod hostile;
    pub mod packages;
    pub mod python;
    pub mod serve;
    pub mod siem;
    pub mod store;
    pub mod support;
    pub mod vendor;
}
