//! Test support: a service on a temporary data folder (and, when the suite
//! runs on PostgreSQL, a schema of its own), driven through the real router
//! without a socket, and restartable on the same data.

#![allow(dead_code, missing_docs)]

pub mod database;
pub mod process;
pub mod sse;
pub mod tokens;
pub mod ws;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use database::Schema;
use http_body_util::BodyExt;
use openagents_runtime_service::config::{Config, FanoutDriverKind, StorageBackend};
use openagents_runtime_service::core::Core;
use openagents_runtime_service::metrics::Metrics;
use openagents_runtime_service::server::{AppState, router};
use serde_json::Value;
use std::sync::Arc;
use tempfile::TempDir;
use tower::ServiceExt;

pub struct TestService {
    pub dir: Arc<TempDir>,
    pub schema: Option<Arc<Schema>>,
    pub config: Config,
    pub router: Router,
    /// The state behind the router, for tests that submit decisions
    /// directly (`None` while a test holds the service before recovery).
    pub core: Option<Arc<Core>>,
}

impl TestService {
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// A service on the suite's backend, configured by `adjust`.
    pub fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let mut config = Config::for_tests(dir.path());
        let schema = database::suite_on_postgres()
            .then(|| database::fresh_schema("the postgres suite").expect("PostgreSQL answers"));
        if let Some(schema) = &schema {
            on_postgres(&mut config, schema);
        }
        adjust(&mut config);
        Self::open(dir, schema, config)
    }

    /// A service on PostgreSQL in `schema`, whatever the suite's backend,
    /// configured by `adjust`.
    pub fn start_on(schema: Arc<Schema>, adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let mut config = Config::for_tests(dir.path());
        on_postgres(&mut config, &schema);
        adjust(&mut config);
        Self::open(dir, Some(schema), config)
    }

    /// GET with a bearer token.
    pub async fn get_authorized(&self, uri: &str, bearer: &str) -> (StatusCode, Value) {
        let request = Request::get(uri)
            .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
            .body(Body::empty())
            .unwrap();
        let (status, bytes) = self.send(request).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn open(dir: Arc<TempDir>, schema: Option<Arc<Schema>>, config: Config) -> Self {
        let metrics = Arc::new(Metrics::default());
        let state = AppState::new(config.clone(), Arc::clone(&metrics));
        let (core, _) = Core::open_with(&config, metrics).unwrap();
        let core = Arc::new(core);
        state.set_core(Arc::clone(&core));
        TestService {
            dir,
            schema,
            config,
            router: router(state),
            core: Some(core),
        }
    }

    /// Stops this instance and starts a new one on the same data.
    pub fn restart(self) -> Self {
        self.restart_with(|_| {})
    }

    /// Stops this instance, lets `adjust` change the configuration or the
    /// data files while nothing runs, and starts again.
    pub fn restart_with(self, adjust: impl FnOnce(&mut Config)) -> Self {
        let TestService {
            dir,
            schema,
            mut config,
            router,
            core,
        } = self;
        drop(router);
        drop(core);
        adjust(&mut config);
        Self::open(dir, schema, config)
    }

    /// The recovered state behind the router.
    pub fn core(&self) -> &Core {
        self.core.as_deref().expect("the service has recovered")
    }

    pub async fn send(&self, request: Request<Body>) -> (StatusCode, Vec<u8>) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, bytes)
    }

    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        let request = Request::get(uri).body(Body::empty()).unwrap();
        let (status, bytes) = self.send(request).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        let request = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let (status, bytes) = self.send(request).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Creates a run and returns its id.
    pub async fn create_run(&self, body: Value) -> String {
        let (status, body) = self.post("/internal/v1/runs", body).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["run"]["id"].as_str().unwrap().to_owned()
    }

    pub async fn append(&self, run_id: &str, body: Value) -> (StatusCode, Value) {
        self.post(&format!("/internal/v1/runs/{run_id}/events"), body)
            .await
    }
}

/// Points `config` at PostgreSQL in `schema`.
fn on_postgres(config: &mut Config, schema: &Schema) {
    config.storage_backend = StorageBackend::Postgres { url: schema.url() };
    config.fanout_driver = FanoutDriverKind::PostgresNotify;
}

/// True (after printing a note) when the suite runs on PostgreSQL and the
/// calling test is about the embedded log's files.
pub fn skip_unless_jsonl(test: &str) -> bool {
    let skip = database::suite_on_postgres();
    if skip {
        database::note_skip(&format!(
            "{test} on the postgres suite: it is about the embedded log's files"
        ));
    }
    skip
}

/// Asserts the contract's error envelope.
pub fn assert_error(
    status: StatusCode,
    body: &Value,
    want_status: u16,
    error: &str,
    reason: Option<&str>,
) {
    assert_eq!(status.as_u16(), want_status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["details"].is_object(), "{body}");
    match reason {
        Some(reason) => assert_eq!(body["reason_code"], reason, "{body}"),
        None => assert!(body.get("reason_code").is_none(), "{body}"),
    }
}
