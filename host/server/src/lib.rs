//! Qila's HTTP API under `/api/v1`: publish and list playbooks, start, list, cancel and re-run runs, decide
//! approvals, stream a run's transitions (Server-Sent Events), take webhooks, manage tokens, read the audit log.
//!
//! It translates HTTP to [`Orchestrator`] calls and store reads and holds no state of its own but a short-lived
//! cache of webhook secrets. Every route is in [`openapi::ROUTES`], from which the OpenAPI document is built.
//! Callers authenticate with `Authorization: Bearer TOKEN`; see `docs/api.md`.

mod auth;
mod error;
mod hooks;
pub mod openapi;
mod routes;
mod sse;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use qila_engine::Orchestrator;

pub use error::ApiError;

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The largest request body accepted (playbooks, inputs, webhook payloads).
    pub max_body_bytes: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
        }
    }
}

/// What every handler sees.
#[derive(Clone)]
pub struct AppState {
    pub(crate) orchestrator: Orchestrator,
    pub(crate) hooks: Arc<hooks::HookCache>,
}

/// The API's router.
pub fn router(orchestrator: Orchestrator, options: ServerOptions) -> Router {
    let state = AppState {
        orchestrator,
        hooks: Arc::new(hooks::HookCache::default()),
    };
    Router::new()
        .route("/api/v1/health", get(routes::health))
        .route("/api/v1/openapi.json", get(routes::openapi))
        .route(
            "/api/v1/playbooks",
            get(routes::list_playbooks).post(routes::publish),
        )
        .route("/api/v1/playbooks/{name}", get(routes::playbook_versions))
        .route(
            "/api/v1/playbooks/{name}/versions/{version}",
            get(routes::playbook_version),
        )
        .route("/api/v1/playbooks/{name}/hook", get(routes::playbook_hook))
        .route(
            "/api/v1/runs",
            get(routes::list_runs).post(routes::start_run),
        )
        .route("/api/v1/runs/{id}", get(routes::get_run))
        .route("/api/v1/runs/{id}/cancel", post(routes::cancel_run))
        .route("/api/v1/runs/{id}/rerun", post(routes::rerun))
        .route("/api/v1/runs/{id}/events", get(sse::events))
        .route(
            "/api/v1/runs/{id}/steps/{step}/approve",
            post(routes::approve),
        )
        .route("/api/v1/runs/{id}/steps/{step}/deny", post(routes::deny))
        .route("/api/v1/approvals", get(routes::approvals))
        .route("/api/v1/hooks/{playbook}", post(hooks::hook))
        .route(
            "/api/v1/tokens",
            get(routes::list_tokens).post(routes::create_token),
        )
        .route("/api/v1/tokens/{id}", delete(routes::revoke_token))
        .route("/api/v1/audit", get(routes::audit))
        .fallback(routes::no_route)
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes, then lets open requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
