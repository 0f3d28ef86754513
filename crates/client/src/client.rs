//! [`Client`]: the typed calls on runs and events, each retried on a 503, a
//! lost connection or a timeout under one idempotency key.

use crate::backoff::{Backoff, RetryPolicy};
use crate::error::ClientError;
use crate::http::{Call, Endpoint};
use crate::subscribe::Subscribe;
use crate::types::{AppendEvent, Appended, CreateRun, EventsPage, Run};
use hyper::Method;
use hyper::body::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use uuid::Uuid;

/// The answer of the run routes: `{run}`.
#[derive(serde::Deserialize)]
struct RunBody {
    run: Run,
}

/// A client of one runtime service.
///
/// Cheap to clone; every call opens its own connection.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) endpoint: Endpoint,
    internal_token: Option<String>,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: Duration,
}

impl Client {
    /// A client of the service at `base_url` (`http://host:port`).
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Ok(Client {
            endpoint: Endpoint::parse(base_url)?,
            internal_token: None,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(30),
        })
    }

    /// Sends `token` as the internal credential on the run routes (needed
    /// when the service sets `RUNTIME_INTERNAL_AUTH_TOKEN` or
    /// `RUNTIME_CREDENTIALS_PATH`).
    pub fn with_internal_token(mut self, token: impl Into<String>) -> Self {
        self.internal_token = Some(token.into());
        self
    }

    /// Retries calls under `policy` instead of the default.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Gives up on one attempt after `timeout` (default 30 s).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Creates a run. Without an `idempotency_key`, one is generated, so
    /// retries of this call create one run.
    pub async fn create_run(&self, run: &CreateRun) -> Result<Run, ClientError> {
        let mut run = run.clone();
        run.idempotency_key
            .get_or_insert_with(|| Uuid::now_v7().to_string());
        let body: RunBody = self.write("/internal/v1/runs", &run).await?;
        Ok(body.run)
    }

    /// Appends an event to a run. Without an `idempotency_key`, one is
    /// generated, so retries of this call append one event: a retry of an
    /// append that was written answers `idempotent_replay: true` with it.
    pub async fn append(&self, run_id: Uuid, event: &AppendEvent) -> Result<Appended, ClientError> {
        let mut event = event.clone();
        event
            .idempotency_key
            .get_or_insert_with(|| Uuid::now_v7().to_string());
        self.write(&format!("/internal/v1/runs/{run_id}/events"), &event)
            .await
    }

    /// A run with its events.
    pub async fn get_run(&self, run_id: Uuid) -> Result<Run, ClientError> {
        let body: RunBody = self.read(&format!("/internal/v1/runs/{run_id}")).await?;
        Ok(body.run)
    }

    /// The run's events after `after_seq`, at most `limit` (1..=1000).
    pub async fn events(
        &self,
        run_id: Uuid,
        after_seq: u64,
        limit: u32,
    ) -> Result<EventsPage, ClientError> {
        self.read(&format!(
            "/internal/v1/runs/{run_id}/events?after_seq={after_seq}&limit={limit}"
        ))
        .await
    }

    /// Follows a Khala topic from `cursor`; see [`Subscribe`].
    pub fn subscribe(&self, topic: &str, cursor: u64) -> Subscribe {
        Subscribe::new(self.clone(), topic, cursor)
    }

    async fn write<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        let body =
            Bytes::from(serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?);
        self.call(&Method::POST, path, Some(&body)).await
    }

    async fn read<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(&Method::GET, path, None).await
    }

    /// Sends the same request (same bytes, so the same idempotency key) until
    /// it is answered, or fails in a way a retry cannot fix, or the policy's
    /// attempts are spent.
    async fn call<T: DeserializeOwned>(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Bytes>,
    ) -> Result<T, ClientError> {
        let call = Call {
            method,
            path,
            body,
            bearer: self.internal_token.as_deref(),
            accept: "application/json",
        };
        let mut backoff = Backoff::new(self.retry.initial_delay, self.retry.max_delay);
        let mut attempt = 1;
        loop {
            match self.endpoint.send(call, self.timeout).await {
                Ok(answer) => {
                    return serde_json::from_slice(&answer)
                        .map_err(|e| ClientError::Decode(e.to_string()));
                }
                Err(error) if error.is_retriable() && attempt < self.retry.max_attempts => {
                    attempt += 1;
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
}
