//! The Khala live-stream scenarios, driven through `openagents-client`:
//! 10,000 subscribers on distinct run topics woken by one append each (SSE
//! and WebSocket), and one firehose subscriber following the full append
//! load.

use super::khala::{append_one_each, khala_env, percentile, token, wait_for_gauge};
use super::{APPEND_RUNS, Bench, CONNECTIONS, Runs, Workload, create_runs, prepare};
use crate::bench::load::{Call, run_load, send_all};
use crate::bench::report::{Figure, PER_SECOND, Target};
use crate::bench::server::Server;
use anyhow::{Context, bail};
use openagents_client::{Client, Lane};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::task::JoinSet;

/// Subscribers of the `khala-sse-10k` and `khala-ws-10k` scenarios.
const SUBSCRIBERS: usize = 10_000;
/// How long a subscriber waits for its message before it counts as lost.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the firehose follower may take to reach the head after the load.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

const DELIVERY_P99_TARGET_MS: Target = Target::AtMost(50.0);
const SUBSCRIBERS_RSS_TARGET_MB: Target = Target::AtMost(150.0);
const UNDELIVERED_TARGET: Target = Target::AtMost(0.0);
const FIREHOSE_LAG_TARGET_MS: Target = Target::AtMost(1_000.0);
const FIREHOSE_RATIO_TARGET: Target = Target::AtLeast(0.9);

/// Limits the 10,000 streams need: one stream and one connection each, all
/// under one principal, plus the append connections.
fn stream_env() -> Vec<(&'static str, &'static str)> {
    let mut env = khala_env().to_vec();
    env.extend([
        ("RUNTIME_KHALA_MAX_STREAMS", "10000"),
        ("RUNTIME_KHALA_MAX_STREAMS_PER_PRINCIPAL", "10000"),
        ("RUNTIME_MAX_CONNECTIONS", "10200"),
    ]);
    env
}

/// What one 10,000-subscriber run saw.
struct Delivery {
    /// Milliseconds from each append's acknowledgement to its delivery,
    /// sorted.
    after_ack_ms: Vec<f64>,
    undelivered: usize,
    extra_rss_mb: f64,
}

impl Bench<'_> {
    /// `khala-sse-10k` / `khala-ws-10k`: 10,000 subscribers on 10,000 run
    /// topics over `lane`, then one append each.
    pub(super) async fn khala_subscribers(&mut self, lane: Lane) -> anyhow::Result<()> {
        let scenario = match lane {
            Lane::Sse => "khala-sse-10k",
            Lane::WebSocket => "khala-ws-10k",
        };
        let (mut p50, mut p99, mut max, mut lost, mut rss) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..self.options.repeats {
            let dir = self.fresh_dir()?;
            let mut server = Server::spawn_with_env(self.binary, &dir, &stream_env())?;
            server.wait_ready().await?;
            let measured = subscribers(&server, lane).await;
            let stopped = server.stop().await;
            super::remove_folder(&dir);
            let delivery = measured?;
            stopped?;
            eprintln!(
                "bench:   p99 {:.1} ms after ack, {} undelivered, extra VmRSS {:.1} MB",
                percentile(&delivery.after_ack_ms, 0.99),
                delivery.undelivered,
                delivery.extra_rss_mb
            );
            p50.push(percentile(&delivery.after_ack_ms, 0.50));
            p99.push(percentile(&delivery.after_ack_ms, 0.99));
            max.push(percentile(&delivery.after_ack_ms, 1.0));
            lost.push(delivery.undelivered as f64);
            rss.push(delivery.extra_rss_mb);
        }
        let report = &mut self.report;
        report.add(Figure::new(
            scenario,
            "delivery p50 after append ack",
            "ms",
            p50,
        ));
        let p99 = Figure::new(scenario, "delivery p99 after append ack", "ms", p99);
        let rss = Figure::new(scenario, "extra VmRSS, 10,000 open", "MB", rss);
        // The issue sets targets for SSE and asks for WebSocket to be reported.
        let (p99, rss) = match lane {
            Lane::Sse => (
                p99.with_target(DELIVERY_P99_TARGET_MS),
                rss.with_target(SUBSCRIBERS_RSS_TARGET_MB),
            ),
            Lane::WebSocket => (p99, rss),
        };
        report.add(p99);
        report.add(Figure::new(
            scenario,
            "delivery max after append ack",
            "ms",
            max,
        ));
        report.add(rss);
        report.add(
            Figure::new(scenario, "subscribers undelivered", "count", lost)
                .with_target(UNDELIVERED_TARGET),
        );
        Ok(())
    }

    /// `khala-firehose`: the append load on 64 runs of one user, alone and
    /// then with one subscriber following that user's run firehose from 0,
    /// alternately; reports the follower's lag and the throughput ratio.
    pub(super) async fn khala_firehose(&mut self) -> anyhow::Result<()> {
        let (mut alone, mut followed, mut ratios, mut lag_p99, mut lag_max) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..self.options.repeats {
            let (without, _) = self.firehose_load(false).await?;
            let (with, lags) = {
                let (rate, lags) = self.firehose_load(true).await?;
                (rate, lags.context("the follower reported nothing")?)
            };
            eprintln!(
                "bench:   {without:.0} appends/s alone, {with:.0} followed; lag p99 {:.1} ms, max {:.1} ms",
                percentile(&lags, 0.99),
                percentile(&lags, 1.0)
            );
            alone.push(without);
            followed.push(with);
            ratios.push(with / without);
            lag_p99.push(percentile(&lags, 0.99));
            lag_max.push(percentile(&lags, 1.0));
        }
        let scenario = "khala-firehose";
        let report = &mut self.report;
        report.add(Figure::new(
            scenario,
            "appends, no subscriber",
            PER_SECOND,
            alone,
        ));
        report.add(Figure::new(
            scenario,
            "appends, firehose followed",
            PER_SECOND,
            followed,
        ));
        report.add(
            Figure::new(scenario, "ratio followed / alone", "ratio", ratios)
                .with_target(FIREHOSE_RATIO_TARGET),
        );
        report.add(Figure::new(scenario, "follower lag p99", "ms", lag_p99));
        report.add(
            Figure::new(scenario, "follower lag max", "ms", lag_max)
                .with_target(FIREHOSE_LAG_TARGET_MS),
        );
        Ok(())
    }

    /// One append load over 64 runs of user 1 on a fresh log; with `follow`,
    /// a subscriber follows `runs:user:1:events` from 0 meanwhile and must
    /// reach the head after it. Returns the append rate and, when followed,
    /// the lag (ms, sorted) of every message delivered in the measured window.
    async fn firehose_load(&mut self, follow: bool) -> anyhow::Result<(f64, Option<Vec<f64>>)> {
        let dir = self.fresh_dir()?;
        let mut server = Server::spawn_with_env(self.binary, &dir, &khala_env())?;
        server.wait_ready().await?;
        let measured = self.firehose_measure(server.addr, follow).await;
        let stopped = server.stop().await;
        super::remove_folder(&dir);
        let measured = measured?;
        stopped?;
        Ok(measured)
    }

    async fn firehose_measure(
        &self,
        addr: SocketAddr,
        follow: bool,
    ) -> anyhow::Result<(f64, Option<Vec<f64>>)> {
        let runs = owned_runs(addr, APPEND_RUNS).await?;
        let make = prepare(addr, Workload::Append(Runs::Existing(runs))).await?;
        let shape = self.load_shape();
        let window = Instant::now() + shape.warmup..Instant::now() + shape.warmup + shape.measure;
        if !follow {
            return Ok((run_load(addr, shape, make).await?.throughput(), None));
        }
        let follower = Follower::start(addr, window)?;
        let load = run_load(addr, shape, make).await?;
        let head = firehose_head(addr).await?;
        let lags = follower.caught_up(head).await?;
        Ok((load.throughput(), Some(lags)))
    }
}

/// Opens `SUBSCRIBERS` subscriptions, one per new run, waits until all are
/// open, appends once to each, and waits for every delivery.
async fn subscribers(server: &Server, lane: Lane) -> anyhow::Result<Delivery> {
    let addr = server.addr;
    let runs = Arc::new(create_runs(addr, SUBSCRIBERS).await?);
    let token = token()?;
    let client = Client::new(&format!("http://{addr}"))?;
    let rss_before = server.memory_kb("VmRSS")?;
    let mut waiting = JoinSet::new();
    for (index, run) in runs.iter().enumerate() {
        let mut subscription = client
            .subscribe(&format!("run:{run}:events"), 1)
            .lane(lane)
            .sync_token(token.clone())
            .start();
        waiting.spawn(async move {
            let delivered = tokio::time::timeout(DELIVERY_TIMEOUT, subscription.next()).await;
            match delivered {
                Ok(Ok(message)) if message.sequence == 2 => {
                    anyhow::Ok((index, Some(Instant::now())))
                }
                Ok(Ok(message)) => bail!("run {index} delivered sequence {}", message.sequence),
                Ok(Err(error)) => Err(error.into()),
                Err(_) => Ok((index, None)),
            }
        });
    }
    wait_for_gauge(addr, "runtime_khala_streams", SUBSCRIBERS).await?;
    let rss_open = server.memory_kb("VmRSS")?;
    let acked = append_one_each(addr, Arc::clone(&runs)).await?;
    let (mut after_ack_ms, mut undelivered) = (Vec::new(), 0);
    while let Some(joined) = waiting.join_next().await {
        let (index, delivered) = joined??;
        match delivered {
            Some(at) => {
                let ack = acked[index].get().copied().context("a run got no append")?;
                after_ack_ms.push(at.saturating_duration_since(ack).as_secs_f64() * 1e3);
            }
            None => undelivered += 1,
        }
    }
    after_ack_ms.sort_by(f64::total_cmp);
    Ok(Delivery {
        after_ack_ms,
        undelivered,
        extra_rss_mb: rss_open.saturating_sub(rss_before) as f64 / 1024.0,
    })
}

/// Creates `count` runs owned by user 1 (whose firehose the bench follows).
async fn owned_runs(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<String>> {
    let calls = (0..count)
        .map(|_| Call::post("/internal/v1/runs", r#"{"owner_user_id":1}"#))
        .collect();
    send_all(addr, CONNECTIONS, calls)
        .await?
        .iter()
        .map(|body| {
            let answer: Value = serde_json::from_slice(body).context("run creation answer")?;
            answer["run"]["id"]
                .as_str()
                .map(str::to_owned)
                .context("run creation answer without run.id")
        })
        .collect()
}

/// The head of user 1's run firehose, from one poll past it (a cursor past
/// the head is answered as caught up, with the head).
async fn firehose_head(addr: SocketAddr) -> anyhow::Result<u64> {
    let call = Call::get(
        "/internal/v1/khala/topics/runs:user:1:events/messages?after_seq=1000000000000&limit=1",
    )
    .with_bearer(&token()?)?;
    let mut connection = crate::bench::load::Connection::open(addr).await?;
    let page: Value = serde_json::from_slice(&connection.send_ok(&call).await?)?;
    page["head_cursor"]
        .as_u64()
        .context("poll answer without head_cursor")
}

/// The firehose subscriber: follows user 1's run firehose from 0, checks
/// the sequence has no gap, and records each message's lag (its arrival
/// minus its `published_at`) inside the measured window.
struct Follower {
    cursor: Arc<AtomicU64>,
    lags: Arc<Mutex<Vec<f64>>>,
    /// Ends only on an error (a gap, a failed subscription).
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Follower {
    fn start(addr: SocketAddr, window: std::ops::Range<Instant>) -> anyhow::Result<Self> {
        let client = Client::new(&format!("http://{addr}"))?;
        let mut subscription = client
            .subscribe("runs:user:1:events", 0)
            .sync_token(token()?)
            .limit(500)
            .start();
        let cursor = Arc::new(AtomicU64::new(0));
        let lags: Arc<Mutex<Vec<f64>>> = Arc::default();
        let (seen, lagged) = (Arc::clone(&cursor), Arc::clone(&lags));
        let task = tokio::spawn(async move {
            loop {
                let message = subscription.next().await?;
                let previous = seen.swap(message.sequence, Ordering::AcqRel);
                if message.sequence != previous + 1 {
                    bail!("firehose gap: {previous} then {}", message.sequence);
                }
                let published = humantime::parse_rfc3339(&message.published_at)
                    .context("published_at is not RFC 3339")?;
                if window.contains(&Instant::now()) {
                    let lag = SystemTime::now()
                        .duration_since(published)
                        .unwrap_or_default();
                    lagged
                        .lock()
                        .expect("lags lock")
                        .push(lag.as_secs_f64() * 1e3);
                }
            }
        });
        Ok(Follower { cursor, lags, task })
    }

    /// Waits until the follower has delivered `head`, then stops it and
    /// returns its lags (ms, sorted).
    async fn caught_up(self, head: u64) -> anyhow::Result<Vec<f64>> {
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        while self.cursor.load(Ordering::Acquire) < head {
            if self.task.is_finished() {
                self.task.await??;
                bail!("the follower stopped");
            }
            if Instant::now() > deadline {
                bail!("the follower did not reach the head {head} within {CATCH_UP_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.task.abort();
        let mut lags = std::mem::take(&mut *self.lags.lock().expect("lags lock"));
        lags.sort_by(f64::total_cmp);
        Ok(lags)
    }
}
