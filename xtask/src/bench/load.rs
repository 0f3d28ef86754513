//! The load generator: keep-alive HTTP/1.1 connections over loopback, each
//! sending requests back to back, recording every request's latency.
//!
//! HTTP is hyper's client connection; this module only decides what to send
//! and when to stop. Every loop ends on a deadline and on a request count,
//! every request has a timeout, and any non-2xx answer or transport error
//! stops the load and fails it with the request and the answer.

use anyhow::{Context, anyhow, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{SendRequest, handshake};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Longest a single request may take before the load fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Most requests one connection sends in one load run (a backstop to the
/// deadline: at 100,000 requests/s per connection, 100 s of load).
const MAX_REQUESTS_PER_CONNECTION: u64 = 10_000_000;

/// One request to send.
#[derive(Debug, Clone)]
pub struct Call {
    /// The method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// A JSON body, when there is one.
    pub body: Option<Bytes>,
    /// The `Authorization` header, when the route needs one.
    pub authorization: Option<HeaderValue>,
}

impl Call {
    /// A `GET` of `path`.
    pub fn get(path: impl Into<String>) -> Self {
        Call {
            method: Method::GET,
            path: path.into(),
            body: None,
            authorization: None,
        }
    }

    /// A `POST` of the JSON `body` to `path`.
    pub fn post(path: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Call {
            method: Method::POST,
            path: path.into(),
            body: Some(body.into()),
            authorization: None,
        }
    }

    /// The same call with an `Authorization: Bearer <token>` header.
    pub fn with_bearer(mut self, token: &str) -> anyhow::Result<Self> {
        self.authorization = Some(HeaderValue::from_str(&format!("Bearer {token}"))?);
        Ok(self)
    }
}

/// One keep-alive HTTP/1.1 connection to the service.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
}

impl Connection {
    /// Opens a connection to a loopback address.
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        if !addr.ip().is_loopback() {
            bail!("the bench only talks to loopback addresses, not {addr}");
        }
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Connection {
            sender,
            host: HeaderValue::from_str(&addr.to_string())?,
        })
    }

    /// Sends `call` and reads the whole answer.
    pub async fn send(&mut self, call: &Call) -> anyhow::Result<(StatusCode, Bytes)> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(call))
            .await
            .map_err(|_| {
                anyhow!(
                    "{} {}: no answer within {REQUEST_TIMEOUT:?}",
                    call.method,
                    call.path
                )
            })?
            .with_context(|| format!("{} {}", call.method, call.path))
    }

    /// Sends `call` and fails on any answer that is not 2xx.
    pub async fn send_ok(&mut self, call: &Call) -> anyhow::Result<Bytes> {
        let (status, body) = self.send(call).await?;
        if !status.is_success() {
            bail!(
                "{} {} answered {status}: {}",
                call.method,
                call.path,
                String::from_utf8_lossy(&body[..body.len().min(400)])
            );
        }
        Ok(body)
    }

    async fn exchange(&mut self, call: &Call) -> anyhow::Result<(StatusCode, Bytes)> {
        self.sender.ready().await?;
        let mut request = Request::builder()
            .method(call.method.clone())
            .uri(call.path.as_str())
            .header(HOST, self.host.clone());
        if call.body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        if let Some(authorization) = &call.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let request = request.body(Full::new(call.body.clone().unwrap_or_default()))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// How a load run is shaped.
#[derive(Debug, Clone, Copy)]
pub struct LoadShape {
    /// Concurrent connections, each sending back to back.
    pub connections: usize,
    /// Load before the measured window.
    pub warmup: Duration,
    /// The measured window.
    pub measure: Duration,
}

/// Builds the `n`-th request of a load run (`n` counts over all connections).
pub type MakeCall = Arc<dyn Fn(u64) -> Call + Send + Sync>;

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Requests started inside the measured window.
    pub requests: u64,
    /// From the window's start to the last measured answer.
    pub elapsed: Duration,
    /// Latencies of the measured requests, in microseconds, sorted.
    latencies_us: Vec<u32>,
    /// Requests answered 2xx over the whole run, warm-up included: what the
    /// service must have kept, for a scenario that checks its state after.
    pub acknowledged: u64,
}

impl LoadResult {
    /// Measured requests per second.
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q`-quantile latency (0 < q <= 1), in microseconds.
    pub fn percentile_us(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let rank = (q * self.latencies_us.len() as f64).ceil() as usize;
        f64::from(self.latencies_us[rank.clamp(1, self.latencies_us.len()) - 1])
    }
}

/// What every connection task of a load run shares.
struct Shared {
    make: MakeCall,
    next: AtomicU64,
    failed: AtomicBool,
    window_start: Instant,
    deadline: Instant,
}

/// What one connection measured.
struct ConnectionResult {
    latencies_us: Vec<u32>,
    last_answer: Instant,
    acknowledged: u64,
}

/// Runs `make`'s requests at `shape.connections` connections until the
/// warm-up and the measured window have passed.
pub async fn run_load(
    addr: SocketAddr,
    shape: LoadShape,
    make: MakeCall,
) -> anyhow::Result<LoadResult> {
    run_load_across(&[addr], shape, make).await
}

/// Like [`run_load`], with the connections dealt round-robin over `addrs`
/// (service instances that share one log), so each gets an even share of
/// the load; `n` still counts over all of them.
pub async fn run_load_across(
    addrs: &[SocketAddr],
    shape: LoadShape,
    make: MakeCall,
) -> anyhow::Result<LoadResult> {
    if addrs.is_empty() {
        bail!("a load needs at least one address");
    }
    let mut connections = Vec::with_capacity(shape.connections);
    for index in 0..shape.connections {
        connections.push(Connection::open(addrs[index % addrs.len()]).await?);
    }
    let window_start = Instant::now() + shape.warmup;
    let shared = Arc::new(Shared {
        make,
        next: AtomicU64::new(0),
        failed: AtomicBool::new(false),
        window_start,
        deadline: window_start + shape.measure,
    });
    let mut tasks = JoinSet::new();
    for connection in connections {
        tasks.spawn(drive_connection(connection, Arc::clone(&shared)));
    }
    let mut latencies_us = Vec::new();
    let mut last_answer = window_start;
    let mut acknowledged = 0;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.context("a load connection panicked")??;
        latencies_us.extend_from_slice(&result.latencies_us);
        last_answer = last_answer.max(result.last_answer);
        acknowledged += result.acknowledged;
    }
    latencies_us.sort_unstable();
    Ok(LoadResult {
        requests: latencies_us.len() as u64,
        elapsed: last_answer - window_start,
        latencies_us,
        acknowledged,
    })
}

/// One connection's loop: send, time, check, until the deadline, the count
/// limit, or another connection's failure.
async fn drive_connection(
    mut connection: Connection,
    shared: Arc<Shared>,
) -> anyhow::Result<ConnectionResult> {
    let mut latencies_us = Vec::new();
    let mut last_answer = shared.window_start;
    let mut acknowledged = 0;
    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        let started = Instant::now();
        if started >= shared.deadline || shared.failed.load(Ordering::Relaxed) {
            break;
        }
        let call = (shared.make)(shared.next.fetch_add(1, Ordering::Relaxed));
        if let Err(error) = connection.send_ok(&call).await {
            shared.failed.store(true, Ordering::Relaxed);
            return Err(error);
        }
        let answered = Instant::now();
        acknowledged += 1;
        if started >= shared.window_start {
            let micros = (answered - started).as_micros();
            latencies_us.push(u32::try_from(micros).unwrap_or(u32::MAX));
            last_answer = answered;
        }
    }
    Ok(ConnectionResult {
        latencies_us,
        last_answer,
        acknowledged,
    })
}

/// Sends each of `calls` once, over `connections` connections, and returns
/// the answers' bodies in the order of `calls`. For setting up a scenario.
pub async fn send_all(
    addr: SocketAddr,
    connections: usize,
    calls: Vec<Call>,
) -> anyhow::Result<Vec<Bytes>> {
    let total = calls.len();
    let calls = Arc::new(calls);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..connections.clamp(1, total.max(1)) {
        let connection = Connection::open(addr).await?;
        tasks.spawn(send_share(
            connection,
            Arc::clone(&calls),
            Arc::clone(&next),
        ));
    }
    let mut answers = vec![Bytes::new(); total];
    while let Some(joined) = tasks.join_next().await {
        for (index, body) in joined.context("a setup connection panicked")?? {
            answers[index] = body;
        }
    }
    Ok(answers)
}

/// One connection's share of `send_all`: takes the next unsent call until
/// none is left (each turn takes a fresh index, so at most `calls.len()`
/// turns in all).
async fn send_share(
    mut connection: Connection,
    calls: Arc<Vec<Call>>,
    next: Arc<AtomicUsize>,
) -> anyhow::Result<Vec<(usize, Bytes)>> {
    let mut answers = Vec::new();
    loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        let Some(call) = calls.get(index) else {
            return Ok(answers);
        };
        answers.push((index, connection.send_ok(call).await?));
    }
}
