//! What the API tests share: the real orchestrator on a real store, with an executor that echoes its input
//! (fails for `t.fail`, sleeps for `t.slow`), served over real HTTP on loopback.

use std::sync::Arc;
use std::time::Duration;

use qila_engine::{Options, Orchestrator, PluginCatalog, StepCall, StepError, StepExecutor};
use qila_model::{ActionCatalog, StaticCatalog};
use qila_store::{Role, Store};
use serde_json::Value;

struct Echo;

impl StepExecutor for Echo {
    async fn execute(&self, call: StepCall) -> Result<Value, StepError> {
        match call.action.as_str() {
            "fail" => Err(StepError::new("failed", "asked to fail")),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(call.input)
            }
            _ => Ok(call.input),
        }
    }
}

struct Catalog(StaticCatalog);

impl ActionCatalog for Catalog {
    fn input_schema(&self, plugin: &str, action: &str) -> Result<Value, String> {
        self.0.input_schema(plugin, action)
    }
}

impl PluginCatalog for Catalog {
    fn digest(&self, _plugin: &str) -> Option<String> {
        Some("0123456789abcdef".into())
    }
}

/// Serves the API of `store` (actions of `catalog`, with `options`) on a free port of loopback: its base URL and
/// an admin token.
pub async fn serve(
    store: &Store,
    catalog: StaticCatalog,
    options: qila_server::ServerOptions,
) -> (String, String) {
    let orchestrator = Orchestrator::start(
        store.clone(),
        Arc::new(Echo),
        Arc::new(
            qila_sandbox::SandboxedEvaluator::new(Default::default(), None)
                .expect("the expression evaluator"),
        ),
        Arc::new(Catalog(catalog)),
        Options::default(),
    )
    .await
    .unwrap();
    let (_, admin) = store
        .create_token("root", Role::Admin, "test")
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let edge = options.edge.clone();
    tokio::spawn(qila_server::serve(
        listener,
        qila_server::router(orchestrator, options),
        edge,
        std::future::pending(),
    ));
    (base, admin)
}
