//! Qila's HTTP API under `/api/v1`: publish and list playbooks, start, list, cancel and re-run runs, decide
//! approvals, stream a run's transitions (Server-Sent Events), take webhooks, manage tokens, read the audit log.
//!
//! It translates HTTP to [`Orchestrator`] calls and store reads and holds no state of its own but a short-lived
//! cache of webhook secrets. Every route is in [`openapi::ROUTES`], from which the OpenAPI document is built.
//! Callers authenticate with `Authorization: Bearer TOKEN`; see `docs/api.md`.

// A library reports through `tracing` and its errors, never on the process's stdout or stderr.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod auth;
mod edge;
mod error;
mod extract;
mod hooks;
pub mod openapi;
mod plugins;
mod routes;
mod siem;
mod sse;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request};
use axum::handler::Handler;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::MethodRouter;
use axum::{Extension, Router};
use qila_engine::Orchestrator;

pub use axum::body::Bytes;
pub use edge::{EdgeOptions, serve};
pub use error::ApiError;
pub use hooks::{secret_for_senders, webhook_scheme};
pub use plugins::{AdminFuture, GrantChoice, PluginAdmin};

/// How the server behaves. Every limit has a default (below) and is set in `qila.yaml`'s `server:` section.
#[derive(Clone)]
pub struct ServerOptions {
    /// The largest request body accepted by the JSON routes and publishing (a playbook's YAML); larger bodies
    /// get `413 too_large`. Default 1 MiB.
    pub max_body_bytes: usize,
    /// The largest webhook payload accepted. Default 4 MiB.
    pub max_hook_bytes: usize,
    /// The largest plugin package accepted for install. Default 256 MiB.
    pub max_package_bytes: usize,
    /// Plugin administration (install, grants, secrets); without it those routes answer 503.
    pub plugins: Option<Arc<dyn PluginAdmin>>,
    /// The SIEM pack (events, alerts); without it its routes answer 503.
    pub siem: Option<qila_siem::Siem>,
    /// The largest `POST /api/v1/events` body. Default 32 MiB.
    pub max_events_bytes: usize,
    /// The bytes of webhook bodies held at once before their signature is checked (every signed webhook, as
    /// the signature covers the body); a body that does not fit gets `503` with `Retry-After`. Default 32 MiB.
    pub unverified_body_budget: usize,
    /// How far a Standard Webhooks `webhook-timestamp` may be from the server's clock. Default 5 minutes.
    pub webhook_tolerance: Duration,
    /// How long a GitHub-style delivery id (`X-GitHub-Delivery`) is remembered: the same delivery within it is
    /// refused. Default 24 hours.
    pub delivery_window: Duration,
    /// How long an `Idempotency-Key` of `POST /api/v1/runs` names its first run. Default 24 hours.
    pub idempotency_window: Duration,
    /// The listener's limits and timeouts (used by [`serve`]).
    pub edge: EdgeOptions,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_hook_bytes", &self.max_hook_bytes)
            .field("max_package_bytes", &self.max_package_bytes)
            .field("plugins", &self.plugins.is_some())
            .field("siem", &self.siem.is_some())
            .field("max_events_bytes", &self.max_events_bytes)
            .field("unverified_body_budget", &self.unverified_body_budget)
            .field("webhook_tolerance", &self.webhook_tolerance)
            .field("delivery_window", &self.delivery_window)
            .field("idempotency_window", &self.idempotency_window)
            .field("edge", &self.edge)
            .finish()
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_hook_bytes: 4 * 1024 * 1024,
            max_package_bytes: 256 * 1024 * 1024,
            plugins: None,
            siem: None,
            max_events_bytes: 32 * 1024 * 1024,
            unverified_body_budget: 32 * 1024 * 1024,
            webhook_tolerance: Duration::from_secs(5 * 60),
            delivery_window: Duration::from_secs(24 * 3600),
            idempotency_window: Duration::from_secs(24 * 3600),
            edge: EdgeOptions::default(),
        }
    }
}

/// What every handler sees.
#[derive(Clone)]
pub struct AppState {
    pub(crate) orchestrator: Orchestrator,
    pub(crate) hooks: Arc<hooks::HookCache>,
    pub(crate) plugins: Option<Arc<dyn PluginAdmin>>,
    pub(crate) siem: Option<qila_siem::Siem>,
    /// The budget of unverified webhook bodies.
    pub(crate) budget: extract::Budget,
    /// Standard Webhooks' timestamp tolerance, the delivery-id window, the idempotency window.
    pub(crate) windows: Windows,
}

/// How long webhook deliveries and idempotency keys are remembered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Windows {
    pub tolerance: Duration,
    pub delivery: Duration,
    pub idempotency: Duration,
}

/// The API's router.
pub fn router(orchestrator: Orchestrator, options: ServerOptions) -> Router {
    let state = AppState {
        orchestrator,
        hooks: Arc::new(hooks::HookCache::default()),
        plugins: options.plugins.clone(),
        siem: options.siem.clone(),
        budget: extract::Budget::new(options.unverified_body_budget),
        windows: Windows {
            tolerance: options.webhook_tolerance,
            delivery: options.delivery_window,
            idempotency: options.idempotency_window,
        },
    };
    table(&options)
        .router
        .fallback(routes::no_route)
        .method_not_allowed_fallback(routes::wrong_method)
        .layer(Extension(limit(options.max_body_bytes, "max_body")))
        // Bodies are limited by `extract::read` (which names the limit); axum's own limit is lifted.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn(error::json_errors))
        .layer(middleware::from_fn(trace))
        .with_state(state)
}

/// The routes, and the (method, path) of each as registered, which a test compares with [`openapi::ROUTES`].
struct Table {
    router: Router<AppState>,
    served: Vec<(&'static str, &'static str)>,
}

impl Table {
    fn at(
        mut self,
        method: &'static str,
        path: &'static str,
        route: MethodRouter<AppState>,
    ) -> Self {
        self.router = self.router.route(path, route);
        self.served.push((method, path));
        self
    }

    fn get<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.at("GET", path, axum::routing::get(handler))
    }

    fn post<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.at("POST", path, axum::routing::post(handler))
    }

    fn delete<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.at("DELETE", path, axum::routing::delete(handler))
    }
}

fn table(options: &ServerOptions) -> Table {
    let table = Table {
        router: Router::new(),
        served: Vec::new(),
    };
    table
        .get("/api/v1/health", routes::health)
        .get("/api/v1/health/live", routes::live)
        .get("/api/v1/health/ready", routes::ready)
        .get("/api/v1/openapi.json", routes::openapi)
        .get("/api/v1/playbooks", routes::list_playbooks)
        .post("/api/v1/playbooks", routes::publish)
        .get("/api/v1/playbooks/{name}", routes::playbook_versions)
        .get(
            "/api/v1/playbooks/{name}/versions/{version}",
            routes::playbook_version,
        )
        .get("/api/v1/playbooks/{name}/hook", routes::playbook_hook)
        .get("/api/v1/runs", routes::list_runs)
        .post("/api/v1/runs", routes::start_run)
        .get("/api/v1/runs/{id}", routes::get_run)
        .post("/api/v1/runs/{id}/cancel", routes::cancel_run)
        .post("/api/v1/runs/{id}/rerun", routes::rerun)
        .get("/api/v1/runs/{id}/events", sse::events)
        .post("/api/v1/runs/{id}/steps/{step}/approve", routes::approve)
        .post("/api/v1/runs/{id}/steps/{step}/deny", routes::deny)
        .get("/api/v1/approvals", routes::approvals)
        .at(
            "POST",
            "/api/v1/hooks/{playbook}",
            axum::routing::post(hooks::hook)
                .layer(Extension(limit(options.max_hook_bytes, "max_hook_body"))),
        )
        .get("/api/v1/tokens", routes::list_tokens)
        .post("/api/v1/tokens", routes::create_token)
        .delete("/api/v1/tokens/{id}", routes::revoke_token)
        .get("/api/v1/audit", routes::audit)
        .get("/api/v1/plugins", plugins::list)
        .at(
            "POST",
            "/api/v1/plugins",
            axum::routing::post(plugins::install)
                .layer(Extension(limit(options.max_package_bytes, "max_package"))),
        )
        .post("/api/v1/plugins/{name}/grants", plugins::regrant)
        .get("/api/v1/plugin-keys", plugins::keys)
        .post("/api/v1/plugin-keys", plugins::trust)
        .delete("/api/v1/plugin-keys/{id}", plugins::distrust)
        .get("/api/v1/secrets", plugins::secrets)
        .post("/api/v1/secrets/{name}", plugins::set_secret)
        .delete("/api/v1/secrets/{name}", plugins::delete_secret)
        .at(
            "POST",
            "/api/v1/events",
            axum::routing::post(siem::ingest).layer(Extension(limit(
                options.max_events_bytes,
                "max_events_body",
            ))),
        )
        .get("/api/v1/events", siem::search)
        .get("/api/v1/events/{id}", siem::event)
        .get("/api/v1/alerts", siem::alerts)
        .get("/api/v1/alerts/{id}", siem::alert)
        .post("/api/v1/alerts/{id}/status", siem::set_alert_status)
        .get("/api/v1/dead-letters", siem::dead_letters)
        .get("/api/v1/siem", siem::status)
        .get("/api/v1/rules", siem::rules)
}

/// Logs each request (at debug level: method, path, status, time taken) under the `qila_server` target.
async fn trace(request: Request, next: Next) -> Response {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return next.run(request).await;
    }
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::debug!(
        %method,
        path,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

fn limit(bytes: usize, setting: &'static str) -> extract::BodyLimit {
    extract::BodyLimit { bytes, setting }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_route_served_is_in_the_openapi_table_and_every_entry_is_served() {
        let served: Vec<_> = table(&ServerOptions::default()).served;
        let unique: BTreeSet<_> = served.iter().copied().collect();
        assert_eq!(unique.len(), served.len(), "a route is registered twice");
        let documented: BTreeSet<_> = openapi::ROUTES.iter().map(|r| (r.method, r.path)).collect();
        assert_eq!(
            unique, documented,
            "the router and openapi::ROUTES must list the same endpoints"
        );
    }
}
