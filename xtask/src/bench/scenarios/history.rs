//! The `history` scenario: a log of 20,000,000 events over 20,000 runs
//! (95% of them finished), written by the generator, and what its size
//! costs: start with and without the index snapshot, memory when ready,
//! appends on it against the empty log, and append latency while snapshots
//! are written.

use super::{APPEND_RUNS, Bench, Runs, Workload, kb_to_mb, prepare, print_load, remove_folder};
use crate::bench::generate::{self, Generated};
use crate::bench::load::{LoadResult, run_load};
use crate::bench::report::{Figure, PER_SECOND, Target};
use crate::bench::server::{CHECKPOINT, EVENT_LOG, Server};
use anyhow::Context;
use std::path::{Path, PathBuf};

/// Runs of the history log, and records per run (start and finish included).
const RUNS: usize = 20_000;
const EVENTS_PER_RUN: u64 = 1_000;
/// Runs of the `--quick` variant's smaller log.
const QUICK_RUNS: usize = 2_000;

const READY_TARGET: Target = Target::AtMost(1.0);
const RSS_TARGET: Target = Target::AtMost(100.0);
const APPEND_RATIO_TARGET: Target = Target::AtLeast(0.9);
const FULL_SCAN_TARGET: Target = Target::AtLeast(1_500_000.0);
const SNAPSHOT_P99_RATIO_TARGET: Target = Target::AtMost(2.0);

/// Snapshot interval while the "during snapshots" load runs, and one long
/// enough that none is written during the other load.
const SNAPSHOT_OFTEN_MS: &str = "500";
const SNAPSHOT_NEVER_MS: &str = "3600000";

impl Bench<'_> {
    /// `history`: see the module documentation.
    pub(super) async fn history(&mut self) -> anyhow::Result<()> {
        let (dir, generated) = self.history_folder().await?;
        // The first start scans everything, builds the sealed segments'
        // indexes and writes the first snapshot.
        let first = self.start_once(&dir, &[]).await?;
        eprintln!(
            "bench:   first start (full scan, indexing) {:.2} s",
            first.0
        );
        self.history_starts(&dir, generated.events).await?;
        self.history_appends(&dir).await?;
        Ok(())
    }

    /// A fresh folder with the history log (the `--quick` one with
    /// `--quick`), generated and noted in the report.
    pub(super) async fn history_folder(&mut self) -> anyhow::Result<(PathBuf, Generated)> {
        let runs = if self.options.quick { QUICK_RUNS } else { RUNS };
        let dir = self.fresh_dir()?;
        let log = dir.join(EVENT_LOG);
        eprintln!(
            "bench:   generating {} events over {runs} runs",
            runs as u64 * EVENTS_PER_RUN
        );
        // The newest 5% of the runs stay live.
        let generated = tokio::task::spawn_blocking(move || {
            generate::history_log(&log, runs, EVENTS_PER_RUN, runs / 20)
        })
        .await??;
        self.note_generated(&generated);
        Ok((dir, generated))
    }

    fn note_generated(&mut self, generated: &Generated) {
        self.report.note(format!(
            "history: generated {} events over {} runs ({} finished) in {:.1} s: {} segments, {:.0} MB",
            generated.events,
            generated.runs,
            generated.finished,
            generated.elapsed.as_secs_f64(),
            generated.segments,
            generated.bytes as f64 / 1e6
        ));
    }

    /// Starts the service on `dir`, waits until ready, reads its memory and
    /// stops it: (seconds to ready, VmRSS in MB).
    async fn start_once(&self, dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<(f64, f64)> {
        let mut server = Server::spawn_with_env(self.binary, dir, env)?;
        let ready = server.wait_ready().await?;
        let rss = server.memory_kb("VmRSS")?;
        server.stop().await?;
        Ok((ready.as_secs_f64(), kb_to_mb(rss)))
    }

    /// Starts with the snapshot (time and memory), then without it (the
    /// full scan's rate); each full-scan start writes the snapshot again.
    async fn history_starts(&mut self, dir: &Path, events: u64) -> anyhow::Result<()> {
        let (mut seconds, mut rss) = (Vec::new(), Vec::new());
        for _ in 0..self.options.repeats {
            let (ready, memory) = self.start_once(dir, &[]).await?;
            eprintln!("bench:   with its snapshot, ready after {ready:.3} s, VmRSS {memory:.1} MB");
            seconds.push(ready);
            rss.push(memory);
        }
        self.report.add(
            Figure::new(
                "history",
                "spawn to /readyz 200, with its snapshot",
                "s",
                seconds,
            )
            .with_target(READY_TARGET),
        );
        self.report
            .add(Figure::new("history", "VmRSS when ready", "MB", rss).with_target(RSS_TARGET));
        let mut rates = Vec::new();
        for _ in 0..self.options.repeats {
            let snapshot = dir.join(CHECKPOINT);
            std::fs::remove_file(&snapshot)
                .with_context(|| format!("removing {}", snapshot.display()))?;
            let (ready, _) = self.start_once(dir, &[]).await?;
            eprintln!("bench:   without a snapshot, ready after {ready:.2} s");
            rates.push(events as f64 / ready);
        }
        self.report.add(
            Figure::new("history", "full-scan start, no snapshot", PER_SECOND, rates)
                .with_target(FULL_SCAN_TARGET),
        );
        Ok(())
    }

    /// The append load on the history log (new runs) and on an empty log,
    /// alternately so that the machine's drift hits both alike, then with
    /// snapshots written twice a second against none.
    async fn history_appends(&mut self, dir: &Path) -> anyhow::Result<()> {
        let (mut empty, mut quiet, mut snapshotting) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..self.options.repeats {
            let fresh = self.fresh_dir()?;
            empty.push(self.load_on(&fresh, &[]).await?);
            remove_folder(&fresh);
            let env = [("RUNTIME_CHECKPOINT_FLUSH_MS", SNAPSHOT_NEVER_MS)];
            quiet.push(self.load_on(dir, &env).await?);
            let env = [("RUNTIME_CHECKPOINT_FLUSH_MS", SNAPSHOT_OFTEN_MS)];
            snapshotting.push(self.load_on(dir, &env).await?);
        }
        self.add_load_figures("history", "appends on an empty log", &empty, None);
        self.add_load_figures("history", "appends", &quiet, None);
        let ratios = quiet
            .iter()
            .zip(&empty)
            .map(|(history, fresh)| history.throughput() / fresh.throughput())
            .collect();
        self.report.add(
            Figure::new(
                "history",
                "appends, ratio to the empty log",
                "ratio",
                ratios,
            )
            .with_target(APPEND_RATIO_TARGET),
        );
        self.add_load_figures(
            "history",
            "appends while snapshots are written",
            &snapshotting,
            None,
        );
        let ratios = quiet
            .iter()
            .zip(&snapshotting)
            .map(|(without, with)| with.percentile_us(0.99) / without.percentile_us(0.99))
            .collect();
        self.report.add(
            Figure::new(
                "history",
                "append p99 with snapshots / without",
                "ratio",
                ratios,
            )
            .with_target(SNAPSHOT_P99_RATIO_TARGET),
        );
        Ok(())
    }

    /// The append load over new runs on `dir`, which is kept.
    async fn load_on(&self, dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<LoadResult> {
        let mut server = Server::spawn_with_env(self.binary, dir, env)?;
        server.wait_ready().await?;
        let loaded = match prepare(server.addr, Workload::Append(Runs::Create(APPEND_RUNS))).await {
            Ok(make) => run_load(server.addr, self.load_shape(), make).await,
            Err(error) => Err(error),
        };
        let stopped = server.stop().await;
        let result = loaded?;
        stopped?;
        print_load(&result);
        Ok(result)
    }
}
