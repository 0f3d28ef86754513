//! The `retention` scenario: the history log (20,000,000 events over
//! 20,000 runs, 95% of them sealed, written by `generate`; 2,000 runs with
//! `--quick`) with a policy
//! that archives every sealed run, and what retention costs and saves.
//!
//! The generator's records are dated a month back, so
//! `RUNTIME_RETENTION_SEALED_AFTER=1d` names every sealed run. On copies of
//! the generated folder (after the service's first start has indexed it
//! and written its snapshot), the scenario measures:
//!
//! - the offline `archive --dry-run` (what it would move and the hot-log
//!   bytes of those records) and then the offline `archive` pass: its
//!   time and rate, the hot log's segment bytes before and after (the pass
//!   compacts once compaction exists), and the archive folder's bytes
//!   against the hot-log bytes it replaced;
//! - the start after archival (spawn to `/readyz` 200, with the snapshot,
//!   and VmRSS then);
//! - `GET .../receipt` of a few hundred archived runs, one after the other
//!   on one connection (p50 and p99), against the same runs' receipts from
//!   the hot log before, which must be byte for byte the same;
//! - the append load (new runs) on a service whose background retention
//!   pass (and compactor) is at work, against the same load on a service
//!   on the same log without a policy, alternately. The service with the
//!   policy is stopped with SIGSTOP while the other one is measured and
//!   continued with SIGCONT for its next window, so its pass is still at
//!   work in every window (the note says whether it was), and the ratio
//!   is taken per pair.

use super::{
    APPEND_RUNS, Bench, Runs, Workload, kb_to_mb, median_rate, prepare, print_load, remove_folder,
};
use crate::bench::load::{Call, Connection, LoadResult, run_load};
use crate::bench::report::{Figure, Target};
use crate::bench::server::{ARCHIVE, CHECKPOINT, EVENT_LOG, SERVICE_LOG, Server, copy_data_dir};
use anyhow::{Context, bail, ensure};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Archived runs whose receipts are fetched, and in `--quick`.
const RECEIPTS: usize = 300;
const QUICK_RECEIPTS: usize = 50;
/// Longest the first start on the generated log may take.
const FIRST_START_TIMEOUT: Duration = Duration::from_secs(900);
/// Longest the background pass may take to finish after the last window.
const PASS_TIMEOUT: Duration = Duration::from_secs(1800);

/// The policy: every generated sealed run is older than this.
const SEALED_AFTER: &str = "1d";
/// Logs the retention thread's "moved" line, which ends a pass.
const RETENTION_LOG: &str = "warn,openagents_runtime_service::retention=info";
/// What the retention thread logs at the end of a pass that moved.
const PASS_DONE: &str = "retention moved histories to the archive";

const HOT_AFTER_RATIO_TARGET: Target = Target::AtMost(0.10);
const ARCHIVE_RATIO_TARGET: Target = Target::AtMost(0.25);
const APPEND_RATIO_TARGET: Target = Target::AtLeast(0.8);
const RECEIPT_MS_TARGET: Target = Target::AtMost(50.0);
const READY_TARGET: Target = Target::AtMost(0.5);

const SCENARIO: &str = "retention";

impl Bench<'_> {
    /// `retention`: see the module documentation.
    pub(super) async fn retention(&mut self) -> anyhow::Result<()> {
        let receipts = if self.options.quick {
            QUICK_RECEIPTS
        } else {
            RECEIPTS
        };
        let (source, _) = self.history_folder().await?;
        // The first start indexes the log and writes its snapshot; the
        // receipts of the sampled runs are read from the hot log.
        let mut server = Server::spawn(self.binary, &source)?;
        let ready = server.wait_ready_within(FIRST_START_TIMEOUT).await?;
        eprintln!("bench:   first start (full scan, indexing) {ready:.2?}");
        let sampled = async {
            let ids = sealed_runs(server.addr, receipts).await?;
            let hot = fetch_receipts(server.addr, &ids).await?;
            anyhow::Ok((ids, hot))
        }
        .await;
        let stopped = server.stop().await;
        let (ids, hot) = sampled?;
        stopped?;
        self.add_receipt_figures("receipt from the hot log", &hot.millis, None);

        let archived = self.fresh_dir()?;
        copy_data_dir(&source, &archived)?;
        self.offline_archive(&archived).await?;
        self.after_archival(&archived, &ids, &hot.bodies).await?;
        remove_folder(&archived);

        let moving = self.fresh_dir()?;
        copy_data_dir(&source, &moving)?;
        let measured = self.appends_while_moving(&moving, &source).await;
        remove_folder(&moving);
        remove_folder(&source);
        measured
    }

    /// The offline dry run and pass on `dir`, with the sizes before and
    /// after.
    async fn offline_archive(&mut self, dir: &Path) -> anyhow::Result<()> {
        let before = segment_bytes(dir);
        let (dry_seconds, dry) = archive_command(self.binary, dir, true)?;
        let replaced = hot_bytes_named(&dry)?;
        eprintln!("bench:   dry run ({dry_seconds:.1} s): {}", last_line(&dry));
        let (seconds, output) = archive_command(self.binary, dir, false)?;
        eprintln!("bench:   archive ({seconds:.1} s): {}", last_line(&output));
        let moved = moved_records(&output)?;
        let after = segment_bytes(dir);
        let archive = folder_bytes(&dir.join(ARCHIVE))?;
        self.report.note(format!(
            "retention: dry run {dry_seconds:.1} s: {}",
            last_line(&dry)
        ));
        let said: Vec<&str> = output
            .lines()
            .filter(|line| !line.starts_with("progress:"))
            .collect();
        self.report.note(format!(
            "retention: archive pass {seconds:.1} s: {}",
            said.join("; ")
        ));
        let mb = |bytes: u64| vec![bytes as f64 / 1e6];
        let report = &mut self.report;
        report.add(Figure::new(SCENARIO, "hot log before", "MB", mb(before)));
        report.add(Figure::new(
            SCENARIO,
            "hot log after archive (and compaction)",
            "MB",
            mb(after),
        ));
        report.add(
            Figure::new(
                SCENARIO,
                "hot log after / before",
                "ratio",
                vec![after as f64 / before as f64],
            )
            .with_target(HOT_AFTER_RATIO_TARGET),
        );
        report.add(Figure::new(
            SCENARIO,
            "hot-log bytes of the moved records (dry run)",
            "MB",
            mb(replaced),
        ));
        report.add(Figure::new(SCENARIO, "archive folder", "MB", mb(archive)));
        report.add(
            Figure::new(
                SCENARIO,
                "archive / hot-log bytes it replaced",
                "ratio",
                vec![archive as f64 / replaced as f64],
            )
            .with_target(ARCHIVE_RATIO_TARGET),
        );
        report.add(Figure::new(SCENARIO, "dry run", "s", vec![dry_seconds]));
        report.add(Figure::new(SCENARIO, "archive pass", "s", vec![seconds]));
        report.add(Figure::new(
            SCENARIO,
            "archive pass, records moved per second",
            "records/s",
            vec![moved as f64 / seconds],
        ));
        report.add(Figure::new(
            SCENARIO,
            "archive pass, hot-log MB moved per second",
            "MB/s",
            vec![replaced as f64 / 1e6 / seconds],
        ));
        Ok(())
    }

    /// Starts on the archived folder (time to ready and memory, each
    /// start), then fetches the sampled runs' receipts from the archive and
    /// checks them against those of the hot log.
    async fn after_archival(
        &mut self,
        dir: &Path,
        ids: &[String],
        hot: &[hyper::body::Bytes],
    ) -> anyhow::Result<()> {
        let (mut seconds, mut rss) = (Vec::new(), Vec::new());
        for _ in 0..self.options.repeats {
            let mut server = Server::spawn(self.binary, dir)?;
            let ready = server.wait_ready().await?;
            let memory = kb_to_mb(server.memory_kb("VmRSS")?);
            server.stop().await?;
            eprintln!("bench:   after archival, ready after {ready:.3?}, VmRSS {memory:.1} MB");
            seconds.push(ready.as_secs_f64());
            rss.push(memory);
        }
        self.report.add(
            Figure::new(
                SCENARIO,
                "spawn to /readyz 200 after archival, with its snapshot",
                "s",
                seconds,
            )
            .with_target(READY_TARGET),
        );
        self.report.add(Figure::new(
            SCENARIO,
            "VmRSS when ready after archival",
            "MB",
            rss,
        ));
        let mut server = Server::spawn(self.binary, dir)?;
        server.wait_ready().await?;
        let fetched = fetch_receipts(server.addr, ids).await;
        let stopped = server.stop().await;
        let archived = fetched?;
        stopped?;
        let differing = archived
            .bodies
            .iter()
            .zip(hot)
            .filter(|(archived, hot)| archived != hot)
            .count();
        self.report.note(format!(
            "retention: {} receipts of archived runs, {differing} differ from the hot log's",
            ids.len()
        ));
        ensure!(
            differing == 0,
            "{differing} of {} receipts changed when their runs were archived",
            ids.len()
        );
        self.add_receipt_figures(
            "receipt of an archived run",
            &archived.millis,
            Some(RECEIPT_MS_TARGET),
        );
        Ok(())
    }

    /// p50 and p99 of a series of receipt fetches.
    fn add_receipt_figures(&mut self, name: &str, millis: &[f64], target: Option<Target>) {
        for (label, q) in [("p50", 0.50), ("p99", 0.99)] {
            let mut figure = Figure::new(
                SCENARIO,
                &format!("GET {name} ({} runs), {label}", millis.len()),
                "ms",
                vec![quantile(millis, q)],
            );
            figure.target = target;
            self.report.add(figure);
        }
    }

    /// The append load on `moving` with the policy (its pass running)
    /// against `still` without one, alternately.
    async fn appends_while_moving(&mut self, moving: &Path, still: &Path) -> anyhow::Result<()> {
        let env = [
            ("RUNTIME_RETENTION_SEALED_AFTER", SEALED_AFTER),
            ("RUST_LOG", RETENTION_LOG),
        ];
        let mut server = Server::spawn_with_env(self.binary, moving, &env)?;
        server.wait_ready().await?;
        let started = Instant::now();
        let mut paused = Duration::ZERO;
        let (mut with, mut without) = (Vec::new(), Vec::new());
        let mut finished_in = None;
        for window in 1..=self.options.repeats {
            with.push(self.load_existing(&server).await?);
            if finished_in.is_none() && pass_done(moving) {
                finished_in = Some(window);
            }
            signal(&server, "-STOP")?;
            let pause = Instant::now();
            let without_policy = self.load_without_policy(still).await;
            signal(&server, "-CONT")?;
            paused += pause.elapsed();
            without.push(without_policy?);
        }
        // The pass goes on; its end is the retention thread's log line.
        let deadline = Instant::now() + PASS_TIMEOUT;
        while !pass_done(moving) {
            if Instant::now() > deadline {
                bail!("the background pass did not finish within {PASS_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let pass = started.elapsed().saturating_sub(paused);
        let hot_after = segment_bytes(moving);
        let stopping = terminate(server).await;
        keep_service_log(moving);
        match &stopping {
            Ok(took) => self.report.note(format!(
                "retention: the service with the policy exited {:.1} s after SIGTERM",
                took.as_secs_f64()
            )),
            Err(error) => self
                .report
                .note(format!("retention: the service with the policy: {error:#}")),
        }
        let windows = self.options.repeats;
        self.report.note(match finished_in {
            Some(window) => format!(
                "retention: the background pass had finished by the end of window {window} of {windows}; later windows ran without it"
            ),
            None => format!(
                "retention: the background pass ran through all {windows} windows with the policy and finished {:.1} s of running time after the start (the time the service was stopped with SIGSTOP not counted)",
                pass.as_secs_f64()
            ),
        });
        self.report.note(format!(
            "retention: hot log after the background pass: {:.0} MB",
            hot_after as f64 / 1e6
        ));
        self.add_load_figures(SCENARIO, "appends, no policy", &without, None);
        self.add_load_figures(SCENARIO, "appends while retention runs", &with, None);
        let ratios: Vec<f64> = with
            .iter()
            .zip(&without)
            .map(|(with, without)| with.throughput() / without.throughput())
            .collect();
        let of_medians = median_rate(&with) / median_rate(&without);
        self.report.note(format!(
            "retention: appends while retention runs / without, ratio of the medians {of_medians:.2}"
        ));
        self.report.add(
            Figure::new(
                SCENARIO,
                "appends while retention runs / without (pairwise)",
                "ratio",
                ratios,
            )
            .with_target(APPEND_RATIO_TARGET),
        );
        self.report.add(Figure::new(
            SCENARIO,
            "background pass, running time",
            "s",
            vec![pass.as_secs_f64()],
        ));
        stopping.map(|_| ())
    }

    /// One append load (new runs) on the running `server`.
    async fn load_existing(&self, server: &Server) -> anyhow::Result<LoadResult> {
        let make = prepare(server.addr, Workload::Append(Runs::Create(APPEND_RUNS))).await?;
        let result = run_load(server.addr, self.load_shape(), make).await?;
        print_load(&result);
        Ok(result)
    }

    /// One append load (new runs) on a service on `dir` without a policy.
    async fn load_without_policy(&self, dir: &Path) -> anyhow::Result<LoadResult> {
        let mut server = Server::spawn(self.binary, dir)?;
        server.wait_ready().await?;
        let loaded = self.load_existing(&server).await;
        let stopped = server.stop().await;
        let result = loaded?;
        stopped?;
        Ok(result)
    }
}

/// The ids of `count` sealed (succeeded) runs, from the run list.
async fn sealed_runs(addr: std::net::SocketAddr, count: usize) -> anyhow::Result<Vec<String>> {
    let mut connection = Connection::open(addr).await?;
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    while ids.len() < count {
        let limit = (count - ids.len()).min(500);
        let mut path = format!("/internal/v1/runs?status=succeeded&limit={limit}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let body = connection.send_ok(&Call::get(path)).await?;
        let page: Value = serde_json::from_slice(&body).context("parsing the run list")?;
        for run in page["runs"]
            .as_array()
            .context("the run list has no runs")?
        {
            ids.push(run["id"].as_str().context("a run without id")?.to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    ensure!(
        ids.len() == count,
        "the log lists {} succeeded runs, not {count}",
        ids.len()
    );
    Ok(ids)
}

/// The receipts of runs `ids`, fetched one after the other on one
/// connection, and each one's time to its whole body.
struct Receipts {
    bodies: Vec<hyper::body::Bytes>,
    millis: Vec<f64>,
}

async fn fetch_receipts(addr: std::net::SocketAddr, ids: &[String]) -> anyhow::Result<Receipts> {
    let mut connection = Connection::open(addr).await?;
    let mut receipts = Receipts {
        bodies: Vec::new(),
        millis: Vec::new(),
    };
    for id in ids {
        let call = Call::get(format!("/internal/v1/runs/{id}/receipt"));
        let started = Instant::now();
        receipts.bodies.push(connection.send_ok(&call).await?);
        receipts.millis.push(started.elapsed().as_secs_f64() * 1e3);
    }
    eprintln!(
        "bench:   {} receipts: p50 {:.2} ms, p99 {:.2} ms",
        ids.len(),
        quantile(&receipts.millis, 0.50),
        quantile(&receipts.millis, 0.99)
    );
    Ok(receipts)
}

/// Runs `openagents-runtime-service archive [--dry-run]` on the stopped
/// service's folder `dir` with the policy; returns its time and output.
fn archive_command(binary: &Path, dir: &Path, dry_run: bool) -> anyhow::Result<(f64, String)> {
    let mut command = Command::new(binary);
    command
        .arg("archive")
        .args(dry_run.then_some("--dry-run"))
        .env_clear()
        .env("RUNTIME_EVENT_LOG_PATH", dir.join(EVENT_LOG))
        .env("RUNTIME_CHECKPOINT_PATH", dir.join(CHECKPOINT))
        .env("RUNTIME_ARCHIVE_DIR", dir.join(ARCHIVE))
        .env("RUNTIME_RETENTION_SEALED_AFTER", SEALED_AFTER)
        .env("RUST_LOG", "warn");
    let started = Instant::now();
    let output = command
        .output()
        .with_context(|| format!("running {} archive", binary.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "archive{} failed ({}):\n{stdout}{}",
            if dry_run { " --dry-run" } else { "" },
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok((seconds, stdout))
}

fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or("")
}

/// The number just before `unit` in the last line of `output`.
fn number_before(output: &str, unit: &str) -> anyhow::Result<u64> {
    let line = last_line(output);
    let head = line
        .split(unit)
        .next()
        .filter(|_| line.contains(unit))
        .with_context(|| format!("no \"{unit}\" in {line:?}"))?;
    head.rsplit(' ')
        .find(|word| !word.is_empty())
        .and_then(|word| word.parse().ok())
        .with_context(|| format!("no number before \"{unit}\" in {line:?}"))
}

/// "would move … N bytes of the hot log": N.
fn hot_bytes_named(dry_run: &str) -> anyhow::Result<u64> {
    let line = dry_run
        .lines()
        .rfind(|line| line.starts_with("would move "))
        .with_context(|| format!("the dry run did not say what it would move:\n{dry_run}"))?;
    number_before(line, " bytes of the hot log")
}

/// "moved … N records, …": N.
fn moved_records(output: &str) -> anyhow::Result<u64> {
    let line = output
        .lines()
        .rfind(|line| line.starts_with("moved "))
        .with_context(|| format!("the archive command did not say what it moved:\n{output}"))?;
    number_before(line, " records")
}

/// Whether the service on `dir` has logged the end of a retention pass.
fn pass_done(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(SERVICE_LOG)).is_ok_and(|text| text.contains(PASS_DONE))
}

/// Longest the service with the policy may take to exit after SIGTERM
/// (more than the bench's usual limit: its shutdown waits for the
/// retention thread).
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(900);

/// Sends SIGTERM and waits for an exit with status 0; returns how long
/// the exit took.
async fn terminate(mut server: Server) -> anyhow::Result<Duration> {
    signal(&server, "-TERM")?;
    let sent = Instant::now();
    while sent.elapsed() < TERMINATE_TIMEOUT {
        if let Some(status) = server.child.try_wait()? {
            ensure!(status.success(), "exited with {status} after SIGTERM");
            return Ok(sent.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("did not exit within {TERMINATE_TIMEOUT:?} of SIGTERM")
}

/// Copies the service's output on `dir` to `target/bench/retention-service.log`.
fn keep_service_log(dir: &Path) {
    let kept = crate::workspace_root().join("target/bench/retention-service.log");
    if let Err(error) = std::fs::copy(dir.join(SERVICE_LOG), &kept) {
        eprintln!("bench: could not keep {}: {error}", kept.display());
    }
}

/// Sends `kill SIGNAL` to the service.
fn signal(server: &Server, signal: &str) -> anyhow::Result<()> {
    let pid = server.pid().to_string();
    let status = Command::new("kill")
        .args([signal, &pid])
        .status()
        .with_context(|| format!("running kill {signal}"))?;
    ensure!(status.success(), "kill {signal} {pid} failed ({status})");
    Ok(())
}

/// The bytes of the log's segment files in `dir`.
fn segment_bytes(dir: &Path) -> u64 {
    super::log_bytes(dir)
}

/// The bytes of every file under `dir`.
fn folder_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    let mut pending: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(folder) = pending.pop() {
        for entry in
            std::fs::read_dir(&folder).with_context(|| format!("listing {}", folder.display()))?
        {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                total += entry.metadata()?.len();
            }
        }
    }
    Ok(total)
}

/// The `q`-quantile of `values` (nearest rank).
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_dry_run_and_the_pass() {
        let dry = "would move 19 runs, 0 erased runs and the old heartbeats of 0 workers: 19000 records, 6650000 bytes of the hot log, which compaction would reclaim\n";
        assert_eq!(hot_bytes_named(dry).unwrap(), 6_650_000);
        let moved = "progress: 3 runs\nmoved 19 runs, 0 erased runs and the old heartbeats of 0 workers: 19000 records, 6650000 bytes of the hot log\n";
        assert_eq!(moved_records(moved).unwrap(), 19_000);
        assert!(hot_bytes_named("nothing").is_err());
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.5), 50.0);
        assert_eq!(quantile(&values, 0.99), 99.0);
    }
}
