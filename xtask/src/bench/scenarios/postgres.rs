//! The `postgres-appends` scenario: two service instances share one
//! PostgreSQL log, and the `append` load is spread evenly over both.
//!
//! Each measurement gets a fresh schema of the bench database (the local
//! `test` database unless `BENCH_DATABASE_URL` names another), starts two
//! release processes on it, creates the runs through both, and runs the
//! `append` load with its 32 connections dealt alternately to the two
//! instances. Afterwards the `events` table must hold exactly one row per
//! run creation and per acknowledged append, a cheap check that the rate
//! counts only appends the shared log really kept. The schema is dropped at
//! the end of the measurement, whatever happened.
//!
//! When PostgreSQL does not answer, a full bench skips the scenario with a
//! note, while `--only postgres-appends` fails: asked for by name, a figure
//! that was not measured is an error.

use super::{APPEND_RUNS, Bench, appends_to, create_runs, print_load, remove_folder};
use crate::bench::load::{LoadResult, run_load_across};
use crate::bench::report::{Figure, Target};
use crate::bench::server::Server;
use anyhow::{Context, bail};
use openagents_event_log_postgres::Connector;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// The scenario's name in the report.
const SCENARIO: &str = "postgres-appends";
/// The bench database when `BENCH_DATABASE_URL` is not set.
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Service processes sharing the log.
const INSTANCES: usize = 2;
/// How long the bench waits for PostgreSQL before calling it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Durable appends across both instances at 32 connections.
const SHARED_APPEND_TARGET: Target = Target::AtLeast(3_000.0);

impl Bench<'_> {
    /// `postgres-appends`: the append load over 64 runs, on two instances
    /// that share one PostgreSQL log.
    pub(super) async fn postgres_appends(&mut self) -> anyhow::Result<()> {
        let base = database_url();
        if let Err(error) = execute(&base, "SELECT 1") {
            let why = format!(
                "PostgreSQL does not answer at {}: {error:#}",
                location(&base)
            );
            if self.options.only.is_some() {
                bail!("{why} (start it, or set BENCH_DATABASE_URL)");
            }
            self.report.note(format!("{SCENARIO} skipped: {why}"));
            return Ok(());
        }
        let (mut results, mut rows) = (Vec::new(), Vec::new());
        for _ in 0..self.options.repeats {
            let (result, events) = self.measure_shared(&base).await?;
            results.push(result);
            rows.push(events.to_string());
        }
        self.report.note(format!(
            "{SCENARIO}: the events table held exactly the acknowledged appends plus \
             {APPEND_RUNS} run creations after every measurement ({} rows)",
            rows.join(" / ")
        ));
        self.add_load_figures(
            SCENARIO,
            "appends, 2 instances",
            &results,
            Some(SHARED_APPEND_TARGET),
        );
        match self.report.median_of("append", "appends") {
            Some(embedded) => {
                let ratios = results.iter().map(|r| r.throughput() / embedded).collect();
                self.report
                    .add(Figure::new(SCENARIO, "ratio to append", "ratio", ratios));
            }
            None => self
                .report
                .note(format!("{SCENARIO}: no ratio, `append` did not run")),
        }
        Ok(())
    }

    /// One measurement on a fresh schema: returns the load and the number
    /// of rows the events table holds after it, which it has checked.
    async fn measure_shared(&mut self, base: &str) -> anyhow::Result<(LoadResult, u64)> {
        let schema = Schema::create(base)?;
        let url = schema.url();
        let env = [
            ("RUNTIME_STORAGE_BACKEND", "postgres"),
            ("RUNTIME_DATABASE_URL", url.as_str()),
        ];
        let mut instances = Vec::new();
        for _ in 0..INSTANCES {
            let dir = self.fresh_dir()?;
            instances.push((Server::spawn_with_env(self.binary, &dir, &env)?, dir));
        }
        let loaded = self.load_shared(&mut instances).await;
        let stopped = stop_all(instances).await;
        let result = loaded?;
        stopped?;
        print_load(&result);
        // Checked after both processes exited, so nothing is in flight.
        let events = schema.count_events()?;
        let expected = result.acknowledged + APPEND_RUNS as u64;
        if events != expected {
            bail!(
                "the events table holds {events} rows, expected {expected} \
                 ({} acknowledged appends + {APPEND_RUNS} run creations)",
                result.acknowledged
            );
        }
        eprintln!(
            "bench:   events table: {events} rows = {} acknowledged appends + {APPEND_RUNS} creations",
            result.acknowledged
        );
        Ok((result, events))
    }

    /// Waits for every instance, creates an even share of the runs through
    /// each, and runs the append load across all of them.
    async fn load_shared(&self, instances: &mut [(Server, PathBuf)]) -> anyhow::Result<LoadResult> {
        for (server, _) in instances.iter_mut() {
            server.wait_ready().await?;
        }
        let addrs: Vec<SocketAddr> = instances.iter().map(|(server, _)| server.addr).collect();
        let mut runs = Vec::with_capacity(APPEND_RUNS);
        for addr in &addrs {
            runs.extend(create_runs(*addr, APPEND_RUNS / addrs.len()).await?);
        }
        // Appends pick their run by request number, not by connection, so
        // each instance also appends to runs the other one created.
        run_load_across(&addrs, self.load_shape(), appends_to(&runs)).await
    }
}

/// Stops every instance and removes its folder; the first failure wins.
async fn stop_all(instances: Vec<(Server, PathBuf)>) -> anyhow::Result<()> {
    let mut outcome = Ok(());
    for (server, dir) in instances {
        let stopped = server.stop().await;
        remove_folder(&dir);
        if outcome.is_ok() {
            outcome = stopped;
        }
    }
    outcome
}

/// `BENCH_DATABASE_URL`, or the local `test` database.
fn database_url() -> String {
    std::env::var("BENCH_DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned())
}

/// The database of `url` as `host:port/dbname`, leaving out any password,
/// as the service names it.
fn location(url: &str) -> String {
    match Connector::new(url) {
        Ok(connector) => connector.location().to_owned(),
        Err(_) => "an unparsable BENCH_DATABASE_URL".to_owned(),
    }
}

/// A schema of the bench database of its own, dropped with everything in
/// it when the measurement is over.
struct Schema {
    base: String,
    name: String,
}

impl Schema {
    /// Creates `bench_<uuid>` in the database at `base`.
    fn create(base: &str) -> anyhow::Result<Self> {
        let name = format!("bench_{}", uuid::Uuid::now_v7().simple());
        execute(base, &format!("CREATE SCHEMA {name}"))
            .with_context(|| format!("creating schema {name}"))?;
        Ok(Schema {
            base: base.to_owned(),
            name,
        })
    }

    /// The database URL with this schema first on the search path, which is
    /// where the service creates its tables.
    fn url(&self) -> String {
        let separator = if self.base.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options=-csearch_path%3D{}",
            self.base, self.name
        )
    }

    /// The rows of this schema's `events` table.
    fn count_events(&self) -> anyhow::Result<u64> {
        let url = self.url();
        let count: i64 = off_runtime(|| {
            let row = connect(&url)?.query_one("SELECT count(*) FROM events", &[])?;
            anyhow::Ok(row.get(0))
        })
        .context("counting the events table")?;
        Ok(u64::try_from(count)?)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA {} CASCADE", self.name);
        if let Err(error) = execute(&self.base, &sql) {
            eprintln!("bench: could not drop schema {}: {error:#}", self.name);
        }
    }
}

/// Runs `sql` on a new connection to `url`.
fn execute(url: &str, sql: &str) -> anyhow::Result<()> {
    off_runtime(|| Ok(connect(url)?.batch_execute(sql)?))
}

/// A new connection to `url`, given up after 5 s so that an unreachable
/// host fails the check instead of hanging the bench.
fn connect(url: &str) -> anyhow::Result<postgres::Client> {
    let mut config = postgres::Config::from_str(url).context("parsing the database URL")?;
    config.connect_timeout(CONNECT_TIMEOUT);
    Ok(config.connect(postgres::NoTls)?)
}

/// Runs `work` on a thread of its own and waits for it: the synchronous
/// client drives its connection with a runtime of its own, which may not be
/// started on a thread of the bench's runtime.
fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| match scope.spawn(work).join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}
