//! The Khala scenarios: poll latency while appends run at full speed, and
//! thousands of long-polls on distinct topics woken by one append each.

use super::{APPEND_RUNS, Bench, CONNECTIONS, Runs, Workload, create_runs, prepare};
use crate::bench::load::{Call, Connection, run_load};
use crate::bench::report::{Figure, Target};
use crate::bench::server::Server;
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::task::JoinSet;

/// The sync-token key the bench configures and signs with.
const SIGNING_KEY: &str = "bench-signing-key";
/// Long-polls of the `khala-longpoll` scenario, one per run topic.
const LONG_POLLS: usize = 5_000;
/// How long each long-poll may wait; the appends come long before.
const LONG_POLL_WAIT_MS: u64 = 20_000;
/// Messages per follow-up poll of `khala-poll`.
const POLL_LIMIT: u32 = 100;

const POLL_P99_TARGET_US: Target = Target::AtMost(5_000.0);
const LONG_POLL_RSS_TARGET_MB: Target = Target::AtMost(100.0);
const LONG_POLL_TIMEOUTS_TARGET: Target = Target::AtMost(0.0);

/// Environment that turns Khala on.
pub(super) fn khala_env() -> [(&'static str, &'static str); 1] {
    [("RUNTIME_SYNC_TOKEN_SIGNING_KEY", SIGNING_KEY)]
}

/// A token for user 1 with the run-events scope, valid for an hour.
pub(super) fn token() -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = json!({
        "iss": "https://openagents.com",
        "aud": "openagents-sync",
        "exp": now + 3600,
        "oa_user_id": 1,
        "oa_sync_scopes": ["runtime.run_events"],
    });
    let key = jsonwebtoken::EncodingKey::from_secret(SIGNING_KEY.as_bytes());
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &key,
    )?)
}

fn messages_path(run: &str, after_seq: u64, wait_ms: u64) -> String {
    format!(
        "/internal/v1/khala/topics/run:{run}:events/messages?after_seq={after_seq}&limit={POLL_LIMIT}&wait_ms={wait_ms}"
    )
}

impl Bench<'_> {
    /// `khala-poll`: one client follows a run topic with back-to-back polls
    /// while 32 connections append to 64 runs (that run among them).
    pub(super) async fn khala_poll(&mut self) -> anyhow::Result<()> {
        let token = token()?;
        let (mut appends, mut p50, mut p99, mut polls) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..self.options.repeats {
            let dir = self.fresh_dir()?;
            let mut server = Server::spawn_with_env(self.binary, &dir, &khala_env())?;
            server.wait_ready().await?;
            let measured = self.poll_under_load(server.addr, &token).await;
            let stopped = server.stop().await;
            super::remove_folder(&dir);
            let (rate, latencies) = measured?;
            stopped?;
            eprintln!(
                "bench:   {rate:.0} appends/s; {} polls, p50 {} us, p99 {} us",
                latencies.len(),
                percentile(&latencies, 0.50),
                percentile(&latencies, 0.99)
            );
            appends.push(rate);
            p50.push(percentile(&latencies, 0.50));
            p99.push(percentile(&latencies, 0.99));
            polls.push(latencies.len() as f64);
        }
        let scenario = "khala-poll";
        self.report.add(Figure::new(
            scenario,
            "appends while polling",
            crate::bench::report::PER_SECOND,
            appends,
        ));
        self.report
            .add(Figure::new(scenario, "polls answered", "count", polls));
        self.report
            .add(Figure::new(scenario, "poll p50 latency", "us", p50));
        self.report.add(
            Figure::new(scenario, "poll p99 latency", "us", p99).with_target(POLL_P99_TARGET_US),
        );
        Ok(())
    }

    /// Runs the append load and a follower together; returns the append rate
    /// and the follower's poll latencies (µs, sorted).
    async fn poll_under_load(
        &self,
        addr: SocketAddr,
        token: &str,
    ) -> anyhow::Result<(f64, Vec<f64>)> {
        let runs = create_runs(addr, APPEND_RUNS).await?;
        let followed = runs[0].clone();
        let make = prepare(addr, Workload::Append(Runs::Existing(runs))).await?;
        let shape = self.load_shape();
        let window = (
            Instant::now() + shape.warmup,
            Instant::now() + shape.warmup + shape.measure,
        );
        let (load, follow) = tokio::join!(
            run_load(addr, shape, make),
            follow(addr, &followed, token, window)
        );
        Ok((load?.throughput(), follow?))
    }

    /// `khala-longpoll`: 5,000 long-polls wait on 5,000 run topics; then one
    /// append each. Every poll must wake with its message; reports the
    /// wake-up latency after each append's acknowledgement and the
    /// service's extra resident memory while they wait.
    pub(super) async fn khala_longpoll(&mut self) -> anyhow::Result<()> {
        let dir = self.fresh_dir()?;
        let mut server = Server::spawn_with_env(self.binary, &dir, &khala_env())?;
        server.wait_ready().await?;
        let measured = long_polls(&server, &token()?).await;
        let stopped = server.stop().await;
        super::remove_folder(&dir);
        let outcome = measured?;
        stopped?;
        let scenario = "khala-longpoll";
        self.report.note(format!(
            "khala-longpoll: {} long-polls, {} woke with their message, {} timed out",
            LONG_POLLS, outcome.woke, outcome.timed_out
        ));
        self.report.add(
            Figure::new(
                scenario,
                "long-polls timed out",
                "count",
                vec![outcome.timed_out as f64],
            )
            .with_target(LONG_POLL_TIMEOUTS_TARGET),
        );
        self.report.add(Figure::new(
            scenario,
            "wake-up p50 after append ack",
            "us",
            vec![percentile(&outcome.wake_us, 0.50)],
        ));
        self.report.add(Figure::new(
            scenario,
            "wake-up p99 after append ack",
            "us",
            vec![percentile(&outcome.wake_us, 0.99)],
        ));
        self.report.add(Figure::new(
            scenario,
            "wake-up max after append ack",
            "us",
            vec![percentile(&outcome.wake_us, 1.0)],
        ));
        self.report.add(
            Figure::new(
                scenario,
                "extra VmRSS while waiting",
                "MB",
                vec![outcome.extra_rss_mb],
            )
            .with_target(LONG_POLL_RSS_TARGET_MB),
        );
        Ok(())
    }
}

/// Follows `run`'s topic from 0 with back-to-back polls until the window
/// ends; returns the latencies (µs, sorted) of the polls inside the window.
async fn follow(
    addr: SocketAddr,
    run: &str,
    token: &str,
    (start, end): (Instant, Instant),
) -> anyhow::Result<Vec<f64>> {
    let mut connection = Connection::open(addr).await?;
    let mut cursor = 0u64;
    let mut latencies = Vec::new();
    while Instant::now() < end {
        let call = Call::get(messages_path(run, cursor, 0)).with_bearer(token)?;
        let started = Instant::now();
        let body = connection.send_ok(&call).await?;
        if started >= start {
            latencies.push(started.elapsed().as_secs_f64() * 1e6);
        }
        let page: Value = serde_json::from_slice(&body).context("poll answer")?;
        cursor = page["next_cursor"]
            .as_u64()
            .context("poll answer without next_cursor")?;
    }
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

/// What the long-poll scenario saw.
struct LongPollOutcome {
    woke: usize,
    timed_out: usize,
    wake_us: Vec<f64>,
    extra_rss_mb: f64,
}

async fn long_polls(server: &Server, token: &str) -> anyhow::Result<LongPollOutcome> {
    let addr = server.addr;
    let runs = Arc::new(create_runs(addr, LONG_POLLS).await?);
    let rss_before = server.memory_kb("VmRSS")?;
    let mut waiting = JoinSet::new();
    for (index, run) in runs.iter().enumerate() {
        let mut connection = Connection::open(addr).await?;
        let call = Call::get(messages_path(run, 1, LONG_POLL_WAIT_MS)).with_bearer(token)?;
        waiting.spawn(async move {
            let body = connection.send_ok(&call).await?;
            let page: Value = serde_json::from_slice(&body)?;
            let woke = page["messages"]
                .as_array()
                .is_some_and(|messages| !messages.is_empty());
            anyhow::Ok((index, Instant::now(), woke))
        });
    }
    wait_for_gauge(addr, "runtime_khala_waiters", LONG_POLLS).await?;
    let rss_waiting = server.memory_kb("VmRSS")?;
    let acked = append_one_each(addr, Arc::clone(&runs)).await?;
    let (mut woke, mut timed_out, mut wake_us) = (0, 0, Vec::new());
    while let Some(joined) = waiting.join_next().await {
        let (index, answered, got_message) = joined??;
        if got_message {
            woke += 1;
            let ack = acked[index].get().copied().context("a run got no append")?;
            wake_us.push(answered.saturating_duration_since(ack).as_secs_f64() * 1e6);
        } else {
            timed_out += 1;
        }
    }
    wake_us.sort_by(f64::total_cmp);
    let extra_rss_mb = rss_waiting.saturating_sub(rss_before) as f64 / 1024.0;
    Ok(LongPollOutcome {
        woke,
        timed_out,
        wake_us,
        extra_rss_mb,
    })
}

/// Waits until the service's gauge `name` reports `count` (waiting
/// long-polls, open streams).
pub(super) async fn wait_for_gauge(
    addr: SocketAddr,
    name: &str,
    count: usize,
) -> anyhow::Result<()> {
    let mut connection = Connection::open(addr).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let wanted = format!("{name} {count}\n");
    while Instant::now() < deadline {
        let metrics = connection.send_ok(&Call::get("/metrics")).await?;
        if String::from_utf8_lossy(&metrics).contains(&wanted) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the service never reported {name} {count}")
}

/// Appends one event to every run from 32 connections; returns when each
/// append was acknowledged.
pub(super) async fn append_one_each(
    addr: SocketAddr,
    runs: Arc<Vec<String>>,
) -> anyhow::Result<Arc<Vec<OnceLock<Instant>>>> {
    let acked: Arc<Vec<OnceLock<Instant>>> =
        Arc::new((0..runs.len()).map(|_| OnceLock::new()).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..CONNECTIONS {
        let mut connection = Connection::open(addr).await?;
        let (runs, acked, next) = (Arc::clone(&runs), Arc::clone(&acked), Arc::clone(&next));
        tasks.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(run) = runs.get(index) else {
                    return anyhow::Ok(());
                };
                let call = Call::post(
                    format!("/internal/v1/runs/{run}/events"),
                    r#"{"event_type":"bench.wake"}"#,
                );
                connection.send_ok(&call).await?;
                let _ = acked[index].set(Instant::now());
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok(acked)
}

/// The `q` quantile of sorted values (0 when empty).
pub(super) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
