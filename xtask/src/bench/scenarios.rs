//! The scenarios of `cargo xtask bench` and what each one reports.
//!
//! Every measurement starts the release service on a data folder of its own
//! (fresh, or a copy of a preloaded one, so each run starts from the same
//! bytes), sets up what the load needs over HTTP, runs the load, and stops
//! the service with SIGTERM. Scenarios run in the order of [`NAMES`]; the
//! large preloaded log is written once and shared by `append-preloaded` and
//! `restart`. A scenario that fails is recorded as a failure and the bench
//! goes on with the next one. `postgres-appends` runs two processes on a
//! PostgreSQL schema instead of a data folder (see its module).

use crate::bench::Options;
use crate::bench::load::{Call, Connection, LoadResult, LoadShape, MakeCall, run_load, send_all};
use crate::bench::preload::{self, Preloaded, append_body};
use crate::bench::report::{Figure, PER_SECOND, Report, Target, format_value};
use crate::bench::server::{CHECKPOINT, EVENT_LOG, Server, copy_data_dir};
use anyhow::{Context, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tempfile::TempDir;

mod history;
mod khala;
mod khala_streams;
mod postgres;
mod queries;
mod retention;

/// Every scenario, in the order they run.
pub const NAMES: [&str; 17] = [
    "healthz",
    "append",
    "append-preloaded",
    "restart",
    "history",
    "runs-10k",
    "heartbeat",
    "artifacts",
    "run-read",
    "khala-poll",
    "khala-longpoll",
    "runs-query",
    "retention",
    "khala-sse-10k",
    "khala-ws-10k",
    "khala-firehose",
    "postgres-appends",
];

/// Connections of every load run.
const CONNECTIONS: usize = 32;
/// Runs the `append` load is spread over.
const APPEND_RUNS: usize = 64;
/// Runs of the preloaded log.
const PRELOAD_RUNS: usize = 1_000;
/// Events of the preloaded log.
const PRELOAD_EVENTS: u64 = 1_000_000;
/// Runs of the small side of `runs-10k`.
const FEW_RUNS: usize = 10;
/// Runs of the large side of `runs-10k`.
const MANY_RUNS: usize = 10_000;
/// Workers of the `heartbeat` scenario.
const WORKERS: usize = 10_000;
/// Events of the one run of the `artifacts` scenario.
const ARTIFACT_EVENTS: u64 = 100_000;
/// Events of the one run `run-read` reads whole.
const LARGE_RUN_EVENTS: u64 = 1_000_000;
/// How much serving that run may raise the server's peak memory.
const LARGE_RUN_HWM_MB_TARGET: Target = Target::AtMost(32.0);

/// Targets of the issues, checked against the medians.
const APPEND_TARGET: Target = Target::AtLeast(20_000.0);
const PRELOADED_RATIO_TARGET: Target = Target::AtLeast(0.85);
const RESTART_SECONDS_TARGET: Target = Target::AtMost(1.5);
const RESTART_RSS_MB_TARGET: Target = Target::AtMost(200.0);
/// Records a start without a checkpoint gets through per second: the scan
/// of the log and the rebuild of every projection from it.
const FULL_SCAN_TARGET: Target = Target::AtLeast(1_500_000.0);
const RUNS_10K_RATIO_TARGET: Target = Target::AtLeast(0.90);
const HEARTBEAT_TARGET: Target = Target::AtLeast(15_000.0);

/// What a load run sends.
enum Workload {
    /// `GET /healthz`.
    Healthz,
    /// Appends round-robin over runs.
    Append(Runs),
    /// Heartbeats round-robin over this many newly registered workers.
    Heartbeat(usize),
}

/// The runs an append load writes to.
enum Runs {
    /// This many runs created over HTTP first.
    Create(usize),
    /// Runs already in the log.
    Existing(Vec<String>),
}

/// The state of one bench: where data folders go, what was preloaded, and
/// the report being filled.
struct Bench<'a> {
    binary: &'a Path,
    options: &'a Options,
    work: TempDir,
    folders: usize,
    preloaded: Option<(PathBuf, Preloaded)>,
    report: Report,
}

/// Runs the selected scenarios and returns the finished report.
pub async fn run_all(binary: &Path, options: &Options, args: &[String]) -> anyhow::Result<Report> {
    let mut bench = Bench {
        binary,
        options,
        work: tempfile::Builder::new()
            .prefix("openagents-bench-")
            .tempdir()
            .context("creating the bench's temporary folder")?,
        folders: 0,
        preloaded: None,
        report: empty_report(options, args),
    };
    bench
        .report
        .note(format!("load average at start: {}", load_average()));
    for name in NAMES.into_iter().filter(|name| options.selected(name)) {
        eprintln!("bench: scenario {name}");
        if let Err(error) = bench.scenario(name).await {
            eprintln!("bench: scenario {name} FAILED: {error:#}");
            bench.report.failures.push(format!("{name}: {error:#}"));
        }
    }
    bench
        .report
        .note(format!("load average at end: {}", load_average()));
    bench.report.finish();
    Ok(bench.report)
}

/// A report with the bench's settings and no figures yet.
fn empty_report(options: &Options, args: &[String]) -> Report {
    let mut command = String::from("cargo xtask bench");
    for arg in args {
        command.push(' ');
        command.push_str(arg);
    }
    Report {
        command,
        quick: options.quick,
        repeats: options.repeats,
        warmup_seconds: options.warmup.as_secs_f64(),
        measure_seconds: options.measure.as_secs_f64(),
        connections: CONNECTIONS,
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs()),
        figures: Vec::new(),
        notes: Vec::new(),
        failures: Vec::new(),
    }
}

impl Bench<'_> {
    /// Runs the scenario `name`.
    async fn scenario(&mut self, name: &str) -> anyhow::Result<()> {
        match name {
            "healthz" => self.healthz().await,
            "append" => self.append().await,
            "append-preloaded" => self.append_preloaded().await,
            "restart" => self.restart().await,
            "history" => self.history().await,
            "runs-10k" => self.runs_10k().await,
            "heartbeat" => self.heartbeat().await,
            "artifacts" => self.artifacts().await,
            "run-read" => self.run_read().await,
            "khala-poll" => self.khala_poll().await,
            "khala-longpoll" => self.khala_longpoll().await,
            "runs-query" => self.runs_query().await,
            "retention" => self.retention().await,
            "khala-sse-10k" => self.khala_subscribers(openagents_client::Lane::Sse).await,
            "khala-ws-10k" => {
                self.khala_subscribers(openagents_client::Lane::WebSocket)
                    .await
            }
            "khala-firehose" => self.khala_firehose().await,
            "postgres-appends" => self.postgres_appends().await,
            _ => bail!("unknown scenario {name}"),
        }
    }

    /// `healthz`: the rate of the cheapest request, the machine's ceiling.
    async fn healthz(&mut self) -> anyhow::Result<()> {
        let results = self.repeat_fresh(|| Workload::Healthz).await?;
        self.add_load_figures("healthz", "GET /healthz", &results, None);
        Ok(())
    }

    /// `append`: durable appends over 64 runs on an empty log.
    async fn append(&mut self) -> anyhow::Result<()> {
        let results = self
            .repeat_fresh(|| Workload::Append(Runs::Create(APPEND_RUNS)))
            .await?;
        self.add_load_figures("append", "appends", &results, Some(APPEND_TARGET));
        Ok(())
    }

    /// `append-preloaded`: the append load on a 1,000,000-event log, spread
    /// over 64 of its runs (each already 1,000 events long).
    async fn append_preloaded(&mut self) -> anyhow::Result<()> {
        let runs: Vec<String> = self
            .preloaded_log()
            .await?
            .run_ids
            .iter()
            .take(APPEND_RUNS)
            .map(ToString::to_string)
            .collect();
        let mut results = Vec::new();
        for _ in 0..self.options.repeats {
            let dir = self.preloaded_copy()?;
            results.push(
                self.measure(dir, Workload::Append(Runs::Existing(runs.clone())))
                    .await?,
            );
        }
        self.add_load_figures("append-preloaded", "appends", &results, None);
        match self.report.median_of("append", "appends") {
            Some(empty_log) => {
                let ratios = results.iter().map(|r| r.throughput() / empty_log).collect();
                self.report.add(
                    Figure::new("append-preloaded", "ratio to append", "ratio", ratios)
                        .with_target(PRELOADED_RATIO_TARGET),
                );
            }
            None => self
                .report
                .note("append-preloaded: no ratio, `append` did not run"),
        }
        Ok(())
    }

    /// `restart`: spawn to first `/readyz` 200, and VmRSS right after, on
    /// the 1,000,000-event log.
    async fn restart(&mut self) -> anyhow::Result<()> {
        self.preloaded_log().await?;
        let (mut seconds, mut rss_mb) = (Vec::new(), Vec::new());
        for _ in 0..self.options.repeats {
            let dir = self.preloaded_copy()?;
            let mut server = Server::spawn(self.binary, &dir)?;
            let ready = server.wait_ready().await?;
            let rss = server.memory_kb("VmRSS")?;
            server.stop().await?;
            remove_folder(&dir);
            eprintln!("bench:   ready after {ready:?}, VmRSS {} kB", rss);
            seconds.push(ready.as_secs_f64());
            rss_mb.push(kb_to_mb(rss));
        }
        self.report.add(
            Figure::new("restart", "spawn to /readyz 200", "s", seconds)
                .with_target(RESTART_SECONDS_TARGET),
        );
        self.report.add(
            Figure::new("restart", "VmRSS when ready", "MB", rss_mb)
                .with_target(RESTART_RSS_MB_TARGET),
        );
        let mut rates = Vec::new();
        for _ in 0..self.options.repeats {
            let dir = self.preloaded_copy()?;
            std::fs::remove_file(dir.join(CHECKPOINT)).context("removing the checkpoint")?;
            let mut server = Server::spawn(self.binary, &dir)?;
            let ready = server.wait_ready().await?;
            server.stop().await?;
            remove_folder(&dir);
            eprintln!("bench:   without a checkpoint, ready after {ready:?}");
            rates.push(PRELOAD_EVENTS as f64 / ready.as_secs_f64());
        }
        self.report.add(
            Figure::new(
                "restart",
                "full-scan start, no checkpoint",
                PER_SECOND,
                rates,
            )
            .with_target(FULL_SCAN_TARGET),
        );
        Ok(())
    }

    /// `runs-10k`: the append load with 10 runs and with 10,000 runs
    /// created first, measured alternately so drift hits both alike.
    async fn runs_10k(&mut self) -> anyhow::Result<()> {
        let (mut few, mut many) = (Vec::new(), Vec::new());
        for _ in 0..self.options.repeats {
            let dir = self.fresh_dir()?;
            few.push(
                self.measure(dir, Workload::Append(Runs::Create(FEW_RUNS)))
                    .await?,
            );
            let dir = self.fresh_dir()?;
            many.push(
                self.measure(dir, Workload::Append(Runs::Create(MANY_RUNS)))
                    .await?,
            );
        }
        self.add_load_figures("runs-10k", "appends, 10 runs", &few, None);
        self.add_load_figures("runs-10k", "appends, 10,000 runs", &many, None);
        let pairwise = few
            .iter()
            .zip(&many)
            .map(|(few, many)| many.throughput() / few.throughput())
            .collect();
        let mut ratio = Figure::new("runs-10k", "ratio 10,000 / 10 runs", "ratio", pairwise)
            .with_target(RUNS_10K_RATIO_TARGET);
        ratio.median = median_rate(&many) / median_rate(&few);
        self.report.add(ratio);
        Ok(())
    }

    /// `heartbeat`: heartbeats spread over 10,000 registered workers.
    async fn heartbeat(&mut self) -> anyhow::Result<()> {
        let results = self.repeat_fresh(|| Workload::Heartbeat(WORKERS)).await?;
        self.add_load_figures("heartbeat", "heartbeats", &results, Some(HEARTBEAT_TARGET));
        Ok(())
    }

    /// `artifacts`: receipt and replay of one 100,000-event run, and the
    /// growth of the server's peak memory while building them.
    async fn artifacts(&mut self) -> anyhow::Result<()> {
        let OneRun {
            dir,
            path,
            server,
            hwm_before,
            mut connection,
        } = self.serve_one_run(ARTIFACT_EVENTS).await?;
        let receipt = timed_gets(
            &mut connection,
            &format!("{path}/receipt"),
            self.options.repeats,
        )
        .await?;
        let hwm_receipt = server.memory_kb("VmHWM")?;
        let replay = timed_gets(
            &mut connection,
            &format!("{path}/replay"),
            self.options.repeats,
        )
        .await?;
        let hwm_after = server.memory_kb("VmHWM")?;
        drop(connection);
        server.stop().await?;
        remove_folder(&dir);
        let lines = check_replay(&replay.body, ARTIFACT_EVENTS)?;
        self.report.note(format!(
            "artifacts: receipt {} bytes, replay {} bytes ({lines} lines, valid)",
            receipt.body.len(),
            replay.body.len()
        ));
        let scenario = "artifacts";
        self.report.add(Figure::new(
            scenario,
            "GET receipt (100k events)",
            "ms",
            receipt.millis,
        ));
        self.report.add(Figure::new(
            scenario,
            "GET replay (100k events)",
            "ms",
            replay.millis,
        ));
        let mb = |kb| vec![kb_to_mb(kb)];
        self.report.add(Figure::new(
            scenario,
            "VmHWM when ready",
            "MB",
            mb(hwm_before),
        ));
        self.report.add(Figure::new(
            scenario,
            "VmHWM after receipts",
            "MB",
            mb(hwm_receipt),
        ));
        self.report.add(Figure::new(
            scenario,
            "VmHWM after replays",
            "MB",
            mb(hwm_after),
        ));
        let growth = hwm_after.saturating_sub(hwm_before);
        self.report
            .add(Figure::new(scenario, "VmHWM increase", "MB", mb(growth)));
        Ok(())
    }

    /// `run-read`: `GET /internal/v1/runs/{id}` of one run of a million
    /// events, and how much serving it raises the server's peak memory.
    async fn run_read(&mut self) -> anyhow::Result<()> {
        let OneRun {
            dir,
            path,
            server,
            hwm_before,
            mut connection,
        } = self.serve_one_run(LARGE_RUN_EVENTS).await?;
        let read = timed_gets(&mut connection, &path, self.options.repeats).await?;
        let hwm_after = server.memory_kb("VmHWM")?;
        drop(connection);
        server.stop().await?;
        remove_folder(&dir);
        let events = count_run_events(&read.body)?;
        // The preloaded count includes each run's `run.started`.
        anyhow::ensure!(
            events == LARGE_RUN_EVENTS,
            "the run came back with {events} events, not {LARGE_RUN_EVENTS}"
        );
        self.report.note(format!(
            "run-read: {} bytes, {events} events",
            read.body.len()
        ));
        let scenario = "run-read";
        self.report.add(Figure::new(
            scenario,
            "GET run (1M events)",
            "ms",
            read.millis,
        ));
        let growth = kb_to_mb(hwm_after.saturating_sub(hwm_before));
        self.report.add(
            Figure::new(scenario, "VmHWM increase", "MB", vec![growth])
                .with_target(LARGE_RUN_HWM_MB_TARGET),
        );
        Ok(())
    }

    /// A server on a fresh folder preloaded with one run of `events` events,
    /// ready, with its peak memory so far and a connection to it.
    async fn serve_one_run(&mut self, events: u64) -> anyhow::Result<OneRun> {
        let dir = self.fresh_dir()?;
        let preloaded = preload::preload(&dir, 1, events).await?;
        self.note_preload(&dir, &preloaded);
        let path = format!("/internal/v1/runs/{}", preloaded.run_ids[0]);
        let mut server = Server::spawn(self.binary, &dir)?;
        server.wait_ready().await?;
        let hwm_before = server.memory_kb("VmHWM")?;
        let connection = Connection::open(server.addr).await?;
        Ok(OneRun {
            dir,
            path,
            server,
            hwm_before,
            connection,
        })
    }

    /// Measures `workload` `repeats` times, each on a fresh, empty folder.
    async fn repeat_fresh(
        &mut self,
        workload: impl Fn() -> Workload,
    ) -> anyhow::Result<Vec<LoadResult>> {
        let mut results = Vec::new();
        for _ in 0..self.options.repeats {
            let dir = self.fresh_dir()?;
            results.push(self.measure(dir, workload()).await?);
        }
        Ok(results)
    }

    /// Starts the service on `dir`, sets up and runs one load, stops the
    /// service and removes `dir`.
    async fn measure(&mut self, dir: PathBuf, workload: Workload) -> anyhow::Result<LoadResult> {
        let mut server = Server::spawn(self.binary, &dir)?;
        server.wait_ready().await?;
        let loaded = match prepare(server.addr, workload).await {
            Ok(make) => run_load(server.addr, self.load_shape(), make).await,
            Err(error) => Err(error),
        };
        let stopped = server.stop().await;
        remove_folder(&dir);
        let result = loaded?;
        stopped?;
        print_load(&result);
        Ok(result)
    }

    /// The shape of every load run: 32 connections, the options' windows.
    fn load_shape(&self) -> LoadShape {
        LoadShape {
            connections: CONNECTIONS,
            warmup: self.options.warmup,
            measure: self.options.measure,
        }
    }

    /// Adds the rate, p50 and p99 figures of a series of load runs.
    fn add_load_figures(
        &mut self,
        scenario: &str,
        name: &str,
        results: &[LoadResult],
        target: Option<Target>,
    ) {
        let rates = results.iter().map(LoadResult::throughput).collect();
        let mut rate = Figure::new(scenario, name, PER_SECOND, rates);
        rate.target = target;
        self.report.add(rate);
        for (label, q) in [("p50", 0.50), ("p99", 0.99)] {
            let values = results.iter().map(|r| r.percentile_us(q)).collect();
            self.report.add(Figure::new(
                scenario,
                &format!("{name} {label} latency"),
                "us",
                values,
            ));
        }
    }

    /// A new, empty data folder.
    fn fresh_dir(&mut self) -> anyhow::Result<PathBuf> {
        self.folders += 1;
        let dir = self.work.path().join(format!("data-{}", self.folders));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// The 1,000,000-event log, written on first use.
    async fn preloaded_log(&mut self) -> anyhow::Result<&Preloaded> {
        if self.preloaded.is_none() {
            let dir = self.fresh_dir()?;
            eprintln!("bench:   preloading {PRELOAD_EVENTS} events over {PRELOAD_RUNS} runs");
            let preloaded = preload::preload(&dir, PRELOAD_RUNS, PRELOAD_EVENTS).await?;
            self.note_preload(&dir, &preloaded);
            self.preloaded = Some((dir, preloaded));
        }
        Ok(&self.preloaded.as_ref().expect("preloaded above").1)
    }

    /// A fresh copy of the preloaded folder (which must exist).
    fn preloaded_copy(&mut self) -> anyhow::Result<PathBuf> {
        let source = self
            .preloaded
            .as_ref()
            .context("no preloaded log")?
            .0
            .clone();
        let dir = self.fresh_dir()?;
        copy_data_dir(&source, &dir)?;
        Ok(dir)
    }

    /// Records how a preload went.
    fn note_preload(&mut self, dir: &Path, preloaded: &Preloaded) {
        let bytes = log_bytes(dir);
        let seconds = preloaded.elapsed.as_secs_f64();
        self.report.note(format!(
            "preloaded {} events over {} runs in-process in {seconds:.1} s ({}); log {:.0} MB",
            preloaded.events,
            preloaded.run_ids.len(),
            format_value(preloaded.events as f64 / seconds, PER_SECOND),
            bytes as f64 / 1e6
        ));
    }
}

/// Sets up what `workload` needs on the running service and returns the
/// request maker of its load.
async fn prepare(addr: std::net::SocketAddr, workload: Workload) -> anyhow::Result<MakeCall> {
    match workload {
        Workload::Healthz => Ok(Arc::new(|_| Call::get("/healthz"))),
        Workload::Append(runs) => {
            let ids = match runs {
                Runs::Create(count) => create_runs(addr, count).await?,
                Runs::Existing(ids) => ids,
            };
            Ok(appends_to(&ids))
        }
        Workload::Heartbeat(workers) => {
            register_workers(addr, workers).await?;
            let paths: Arc<[String]> = (0..workers)
                .map(|index| format!("/internal/v1/workers/bench-w-{index}/heartbeat"))
                .collect();
            Ok(Arc::new(move |n| {
                let body = format!(r#"{{"owner_user_id":1,"metadata_patch":{{"n":{n}}}}}"#);
                Call::post(paths[(n % paths.len() as u64) as usize].clone(), body)
            }))
        }
    }
}

/// The request maker of an append load: bench payloads round-robin over
/// the runs `ids`.
fn appends_to(ids: &[String]) -> MakeCall {
    let paths: Arc<[String]> = ids
        .iter()
        .map(|id| format!("/internal/v1/runs/{id}/events"))
        .collect();
    Arc::new(move |n| {
        Call::post(
            paths[(n % paths.len() as u64) as usize].clone(),
            append_body(n),
        )
    })
}

/// Prints one load run's rate and latencies as it finishes.
fn print_load(result: &LoadResult) {
    eprintln!(
        "bench:   {:.0} req/s, p50 {:.0} us, p99 {:.0} us ({} requests)",
        result.throughput(),
        result.percentile_us(0.50),
        result.percentile_us(0.99),
        result.requests
    );
}

/// Creates `count` runs over HTTP and returns their ids.
async fn create_runs(addr: std::net::SocketAddr, count: usize) -> anyhow::Result<Vec<String>> {
    let calls = (0..count)
        .map(|_| Call::post("/internal/v1/runs", "{}"))
        .collect();
    let bodies = send_all(addr, CONNECTIONS, calls).await?;
    bodies
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

/// Registers workers `bench-w-0` .. `bench-w-{count-1}`, owned by user 1.
async fn register_workers(addr: std::net::SocketAddr, count: usize) -> anyhow::Result<()> {
    let calls = (0..count)
        .map(|index| {
            let body = format!(r#"{{"worker_id":"bench-w-{index}","owner_user_id":1}}"#);
            Call::post("/internal/v1/workers", body)
        })
        .collect();
    send_all(addr, CONNECTIONS, calls).await?;
    Ok(())
}

/// A server holding one preloaded run (see `Bench::serve_one_run`).
struct OneRun {
    dir: PathBuf,
    /// `/internal/v1/runs/{id}` of the run.
    path: String,
    server: Server,
    /// `VmHWM` once ready, in kB.
    hwm_before: u64,
    connection: Connection,
}

/// Timings of repeated `GET`s of one artifact.
struct Timed {
    millis: Vec<f64>,
    body: hyper::body::Bytes,
}

/// `GET path` `times` times on `connection`, timing each until its whole
/// body has arrived.
async fn timed_gets(
    connection: &mut Connection,
    path: &str,
    times: usize,
) -> anyhow::Result<Timed> {
    let call = Call::get(path);
    let mut timed = Timed {
        millis: Vec::new(),
        body: hyper::body::Bytes::new(),
    };
    for _ in 0..times {
        let started = Instant::now();
        timed.body = connection.send_ok(&call).await?;
        timed.millis.push(started.elapsed().as_secs_f64() * 1e3);
    }
    eprintln!("bench:   GET {path}: {:?} ms", timed.millis);
    Ok(timed)
}

/// The number of events in a `GET /internal/v1/runs/{id}` body, counted
/// without holding them.
fn count_run_events(body: &[u8]) -> anyhow::Result<u64> {
    #[derive(serde::Deserialize)]
    struct Body {
        run: Run,
    }
    #[derive(serde::Deserialize)]
    struct Run {
        events: Vec<serde::de::IgnoredAny>,
    }
    let body: Body = serde_json::from_slice(body).context("parsing the run")?;
    Ok(body.run.events.len() as u64)
}

/// Validates a replay and checks it has a line per event plus its two
/// header lines; returns its line count.
fn check_replay(replay: &[u8], events: u64) -> anyhow::Result<u64> {
    let lines = openagents_artifacts::validate_replay(replay).context("validating the replay")?;
    if lines != events + 2 {
        bail!("the replay has {lines} lines, expected {}", events + 2);
    }
    Ok(lines)
}

/// The median rate of a series of load runs.
fn median_rate(results: &[LoadResult]) -> f64 {
    let rates: Vec<f64> = results.iter().map(LoadResult::throughput).collect();
    crate::bench::report::median(&rates)
}

/// Kilobytes to megabytes (10^6 bytes).
fn kb_to_mb(kb: u64) -> f64 {
    kb as f64 * 1024.0 / 1e6
}

/// The 1, 5 and 15-minute load averages, to show how busy the machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The bytes of every segment of the log in data folder `dir` (not their
/// indexes or the snapshot).
fn log_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name == EVENT_LOG
                || name
                    .strip_prefix(&format!("{EVENT_LOG}."))
                    .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|entry| entry.metadata().ok())
        .map(|meta| meta.len())
        .sum()
}

/// Removes a data folder; a failure only leaves disk space behind.
fn remove_folder(dir: &Path) {
    if let Err(error) = std::fs::remove_dir_all(dir) {
        eprintln!("bench: could not remove {}: {error}", dir.display());
    }
}
