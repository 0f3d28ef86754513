//! `cargo xtask chaos [--cycles N] [--seed S]`: kills the release service
//! with SIGKILL under write load, again and again, and checks after every
//! restart that nothing it acknowledged was lost.
//!
//! The command builds the release binary, starts it on a free `127.0.0.1`
//! port with a fresh temporary data folder, registers one worker per load
//! connection, and runs the cycles. Each cycle creates a few shared runs,
//! lets [`DRIVERS`] connections write (see `driver`), kills the process at a
//! random moment, restarts it on the same folder, waits for `/readyz`,
//! re-sends the idempotent requests the kill interrupted, and verifies the
//! whole ledger of acknowledged writes (see `verify`), including that the
//! log holds exactly the records of the streams the ledger knows. Then the
//! service is stopped with SIGTERM and two faults are injected into copies of
//! its folder (see `faults`).
//!
//! It prints one line per cycle and a summary, and fails on any loss,
//! mismatch or refused restart; on failure the data folder is kept and its
//! path printed. Every wait is bounded: the kill delay, the drain of the
//! connections after the kill, the restart, each request (by the bench's
//! load generator, reused here) and the number of requests per cycle.
//!
//! Submodules: `rng` (seeded choices), `ledger` (acknowledged writes),
//! `driver` (the load), `verify` (the checks) and `faults` (the injected
//! damage).

mod driver;
mod faults;
mod ledger;
mod rng;
mod verify;

use crate::bench::load::{Call, Connection, send_all};
use crate::bench::server::{EVENT_LOG, Server};
use anyhow::{Context, anyhow, bail};
use driver::{CycleLoad, Driver, Outcome};
use faults::FaultOutcome;
use ledger::{Ack, Ledger};
use rng::Rng;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// Usage of `cargo xtask chaos`.
const USAGE: &str = "usage: cargo xtask chaos [--cycles N] [--seed S]

  --cycles N  kill-and-restart cycles (default 20, at most 1000)
  --seed S    seed of every random choice (default: from the clock)";

/// The package whose release binary is tested.
const PACKAGE: &str = "openagents-runtime-service";
/// Cycles without `--cycles`.
const DEFAULT_CYCLES: usize = 20;
/// Most cycles one command runs.
const MAX_CYCLES: usize = 1000;
/// Concurrent load connections, one driver each.
const DRIVERS: usize = 24;
/// Runs created each cycle that every driver appends to.
const SHARED_RUNS_PER_CYCLE: usize = 4;
/// Most requests one driver sends in one cycle.
const MAX_REQUESTS_PER_DRIVER: u64 = 5_000;
/// The kill comes this long after the load starts, drawn uniformly.
const KILL_AFTER: (Duration, Duration) = (Duration::from_millis(50), Duration::from_millis(1500));
/// Longest the drivers may take to notice the kill and stop.
const DRAIN_BOUND: Duration = Duration::from_secs(60);
/// Longest a restart may take to answer `/readyz` 200.
const READY_BOUND: Duration = Duration::from_secs(30);
/// Most problems printed per cycle.
const MAX_PRINTED_PROBLEMS: usize = 20;

/// The command line of `chaos`.
#[derive(Debug)]
struct Options {
    cycles: usize,
    seed: u64,
}

impl Options {
    /// Parses `--cycles N` and `--seed S`.
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut options = Options {
            cycles: DEFAULT_CYCLES,
            seed: Rng::clock_seed(),
        };
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let value = rest
                .next()
                .with_context(|| format!("{arg} needs a value\n\n{USAGE}"));
            match arg.as_str() {
                "--cycles" => options.cycles = value?.parse().context("--cycles")?,
                "--seed" => options.seed = value?.parse().context("--seed")?,
                _ => bail!("unknown argument {arg:?}\n\n{USAGE}"),
            }
        }
        if !(1..=MAX_CYCLES).contains(&options.cycles) {
            bail!("--cycles must be 1..={MAX_CYCLES}");
        }
        Ok(options)
    }
}

/// Runs `cargo xtask chaos ARGS`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let options = Options::parse(args)?;
    let root = crate::workspace_root();
    crate::bench::cargo_build_release(&root, PACKAGE)?;
    let binary = root.join("target/release").join(PACKAGE);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let data = tempfile::Builder::new()
        .prefix("openagents-chaos-")
        .tempdir()
        .context("creating the data folder")?;
    let failures = runtime.block_on(run_chaos(binary, data.path(), &options))?;
    if failures == 0 {
        println!("result: PASS");
        return Ok(());
    }
    let kept = data.keep();
    bail!(
        "chaos found {failures} failures; the data folder is kept at {}",
        kept.display()
    )
}

/// Runs every cycle and the fault injection; returns how many failed.
async fn run_chaos(binary: PathBuf, data: &Path, options: &Options) -> anyhow::Result<usize> {
    println!(
        "chaos: {} cycles, {DRIVERS} connections, kill after {}..{} ms, seed {}, data {}",
        options.cycles,
        KILL_AFTER.0.as_millis(),
        KILL_AFTER.1.as_millis(),
        options.seed,
        data.display()
    );
    let mut chaos = Chaos::start(binary, data, Rng::new(options.seed)).await?;
    let mut reports = Vec::new();
    for number in 1..=options.cycles {
        let report = chaos.cycle(number).await;
        println!("{}", report.line(options.cycles));
        report.print_problems();
        let restarted = report.restart.is_some();
        reports.push(report);
        if !restarted {
            println!("the service did not come back; stopping the cycles");
            break;
        }
    }
    print_summary(&reports, &chaos.ledger);
    let mut failures = reports.iter().filter(|report| !report.passed()).count();
    let faults = chaos.inject_faults().await?;
    println!("faults (each on a copy of the stopped service's data folder):");
    for fault in &faults {
        let result = if fault.passed { "ok" } else { "FAILED" };
        println!("  {}: {result}: {}", fault.name, fault.detail);
    }
    failures += faults.iter().filter(|fault| !fault.passed).count();
    Ok(failures)
}

/// The state carried from cycle to cycle.
struct Chaos {
    binary: PathBuf,
    data: PathBuf,
    rng: Rng,
    ledger: Ledger,
    drivers: Vec<Driver>,
    server: Option<Server>,
}

/// What one cycle did and found.
#[derive(Debug, Default)]
struct CycleReport {
    number: usize,
    acked: u64,
    replays: u64,
    retried: usize,
    killed_after: Duration,
    /// From spawn to `/readyz` 200; `None` when the service did not come back.
    restart: Option<Duration>,
    records: u64,
    log_bytes: u64,
    /// What the verification after the restart found: losses, mismatches.
    findings: Vec<String>,
    /// Answers during the load the contract does not allow, contradicting
    /// acknowledgements, and errors of the cycle itself.
    problems: Vec<String>,
}

impl Chaos {
    /// Starts the service on `data` and registers one worker per driver.
    async fn start(binary: PathBuf, data: &Path, mut rng: Rng) -> anyhow::Result<Chaos> {
        let (server, _) = start_service(&binary, data).await?;
        let mut connection = Connection::open(server.addr).await?;
        let mut ledger = Ledger::default();
        let mut drivers = Vec::with_capacity(DRIVERS);
        for index in 0..DRIVERS {
            let (driver, ack) = Driver::register(index, rng.fork(), &mut connection).await?;
            ledger.record(ack).map_err(|problem| anyhow!(problem))?;
            drivers.push(driver);
        }
        Ok(Chaos {
            binary,
            data: data.to_owned(),
            rng,
            ledger,
            drivers,
            server: Some(server),
        })
    }

    /// One cycle: load, SIGKILL, restart, retry, verify.
    async fn cycle(&mut self, number: usize) -> CycleReport {
        let mut report = CycleReport {
            number,
            ..CycleReport::default()
        };
        if let Err(error) = self.run_cycle(&mut report).await {
            report.problems.push(format!("{error:#}"));
        }
        report
    }

    async fn run_cycle(&mut self, report: &mut CycleReport) -> anyhow::Result<()> {
        let server = self.server.take().context("no service is running")?;
        let shared_runs = self.create_shared_runs(server.addr, report).await?;
        let load = Arc::new(CycleLoad {
            cycle: report.number,
            shared_runs,
            max_requests: MAX_REQUESTS_PER_DRIVER,
        });
        let mut tasks = JoinSet::new();
        for driver in self.drivers.drain(..) {
            tasks.spawn(driver.drive(server.addr, Arc::clone(&load)));
        }
        report.killed_after = self.rng.millis(KILL_AFTER.0, KILL_AFTER.1);
        tokio::time::sleep(report.killed_after).await;
        sigkill(server)?;
        let mut outcomes = self.collect_drivers(tasks).await?;
        let (server, restart) = start_service(&self.binary, &self.data).await?;
        report.restart = Some(restart);
        let addr = server.addr;
        self.server = Some(server);
        for driver in &mut self.drivers {
            let mut outcome = Outcome::default();
            if driver.retry_pending(addr, &mut outcome).await {
                report.retried += 1;
            }
            outcomes.push(outcome);
        }
        self.book(outcomes, report);
        self.check(addr, report).await
    }

    /// Creates the cycle's shared runs and books their creation.
    async fn create_shared_runs(
        &mut self,
        addr: SocketAddr,
        report: &mut CycleReport,
    ) -> anyhow::Result<Vec<String>> {
        let body = json!({"metadata": {"chaos_shared": true, "cycle": report.number}});
        let calls = vec![Call::post("/internal/v1/runs", body.to_string()); SHARED_RUNS_PER_CYCLE];
        let mut runs = Vec::new();
        for answer in send_all(addr, SHARED_RUNS_PER_CYCLE, calls).await? {
            let answer: Value = serde_json::from_slice(&answer)?;
            let id = answer["run"]["id"]
                .as_str()
                .with_context(|| format!("run creation answered {answer}"))?
                .to_owned();
            let event =
                json!({"seq": 1, "event_type": "run.started", "payload": {"source": "runtime"}});
            self.book_ack(
                Ack::Event {
                    run_id: id.clone(),
                    event,
                },
                report,
            );
            runs.push(id);
        }
        Ok(runs)
    }

    /// Waits (bounded) for every driver to stop after the kill and takes
    /// them back, in their original order.
    async fn collect_drivers(
        &mut self,
        mut tasks: JoinSet<(Driver, Outcome)>,
    ) -> anyhow::Result<Vec<Outcome>> {
        let mut outcomes = Vec::new();
        let drained = tokio::time::timeout(DRAIN_BOUND, async {
            while let Some(joined) = tasks.join_next().await {
                let (driver, outcome) = joined.context("a load driver panicked")?;
                self.drivers.push(driver);
                outcomes.push(outcome);
            }
            anyhow::Ok(())
        });
        drained
            .await
            .map_err(|_| anyhow!("the load did not stop within {DRAIN_BOUND:?} of the kill"))??;
        self.drivers.sort_by_key(Driver::index);
        Ok(outcomes)
    }

    /// Adds the drivers' acknowledgements to the ledger and their problems
    /// to the report.
    fn book(&mut self, outcomes: Vec<Outcome>, report: &mut CycleReport) {
        for outcome in outcomes {
            report.replays += outcome.replays;
            report.problems.extend(outcome.problems);
            for ack in outcome.acks {
                self.book_ack(ack, report);
            }
        }
    }

    fn book_ack(&mut self, ack: Ack, report: &mut CycleReport) {
        report.acked += 1;
        if let Err(problem) = self.ledger.record(ack) {
            report.problems.push(problem);
        }
    }

    /// Verifies the ledger against the restarted service and the log's
    /// record count, then lets the drivers learn what the service shows.
    async fn check(&mut self, addr: SocketAddr, report: &mut CycleReport) -> anyhow::Result<()> {
        let verdict = verify::verify(addr, &self.ledger).await?;
        report.findings.extend(verdict.problems);
        let log = std::fs::read(self.data.join(EVENT_LOG)).context("reading the event log")?;
        report.log_bytes = log.len() as u64;
        report.records = log.iter().filter(|byte| **byte == b'\n').count() as u64;
        if report.records != verdict.records {
            report.findings.push(format!(
                "the log holds {} records but the ledger's streams show {}",
                report.records, verdict.records
            ));
        }
        for driver in &mut self.drivers {
            driver.refresh(&verdict.observed);
        }
        Ok(())
    }

    /// Stops the service with SIGTERM and runs both faults on copies of its
    /// data folder.
    async fn inject_faults(&mut self) -> anyhow::Result<Vec<FaultOutcome>> {
        if let Some(server) = self.server.take() {
            server
                .stop()
                .await
                .context("stopping the service with SIGTERM")?;
        }
        let torn = faults::torn_final_line(&self.binary, &self.data, &self.ledger).await?;
        let corrupt = faults::corrupt_middle_line(&self.binary, &self.data).await?;
        Ok(vec![torn, corrupt])
    }
}

impl CycleReport {
    fn passed(&self) -> bool {
        self.problem_count() == 0 && self.restart.is_some()
    }

    fn problem_count(&self) -> usize {
        self.findings.len() + self.problems.len()
    }

    /// The cycle's one line.
    fn line(&self, cycles: usize) -> String {
        let restart = self
            .restart
            .map_or("never".to_owned(), |d| format!("{} ms", d.as_millis()));
        let result = if self.passed() {
            "ok".to_owned()
        } else {
            format!("FAILED ({} problems)", self.problem_count())
        };
        format!(
            "cycle {:>3}/{cycles}: acked {:>5} writes ({} replays, {} retried after restart), \
             killed at {:>4} ms, ready again in {restart}, log {} records / {:.1} MiB: {result}",
            self.number,
            self.acked,
            self.replays,
            self.retried,
            self.killed_after.as_millis(),
            self.records,
            self.log_bytes as f64 / (1024.0 * 1024.0),
        )
    }

    /// Prints the first problems, verification findings first.
    fn print_problems(&self) {
        let all = self.findings.iter().chain(&self.problems);
        for problem in all.take(MAX_PRINTED_PROBLEMS) {
            println!("    {problem}");
        }
        if self.problem_count() > MAX_PRINTED_PROBLEMS {
            println!(
                "    … and {} more",
                self.problem_count() - MAX_PRINTED_PROBLEMS
            );
        }
    }
}

/// Prints the totals of all cycles.
fn print_summary(reports: &[CycleReport], ledger: &Ledger) {
    let passed = reports.iter().filter(|report| report.passed()).count();
    let problems: usize = reports.iter().map(CycleReport::problem_count).sum();
    let mut restarts: Vec<Duration> = reports.iter().filter_map(|report| report.restart).collect();
    restarts.sort();
    let median = restarts
        .get(restarts.len() / 2)
        .copied()
        .unwrap_or_default();
    let max = restarts.last().copied().unwrap_or_default();
    let finished = ledger
        .runs
        .values()
        .filter(|run| run.finished.is_some())
        .count();
    let last = reports.last();
    println!(
        "summary: {passed}/{} cycles ok, {problems} problems; {} acknowledged writes \
         ({} retried after a kill); {} runs ({finished} with an acknowledged finish), {} workers; \
         log {} records; restart to /readyz median {} ms, max {} ms",
        reports.len(),
        ledger.acked,
        reports.iter().map(|report| report.retried).sum::<usize>(),
        ledger.runs.len(),
        ledger.workers.len(),
        last.map_or(0, |report| report.records),
        median.as_millis(),
        max.as_millis(),
    );
}

/// Spawns the service on `data` and waits (bounded) for `/readyz` 200;
/// returns it with the time from spawn to ready.
async fn start_service(binary: &Path, data: &Path) -> anyhow::Result<(Server, Duration)> {
    let mut server = Server::spawn(binary, data)?;
    let ready = tokio::time::timeout(READY_BOUND, server.wait_ready())
        .await
        .map_err(|_| anyhow!("the service was not ready within {READY_BOUND:?}"))??;
    Ok((server, ready))
}

/// Kills the service with SIGKILL (what `Child::kill` sends on Unix) and
/// reaps it.
fn sigkill(mut server: Server) -> anyhow::Result<()> {
    server.child.kill().context("sending SIGKILL")?;
    server.child.wait().context("reaping the killed service")?;
    Ok(())
}
