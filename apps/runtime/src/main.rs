//! The `openagents-runtime-service` binary: reads the command line, then the
//! configuration, starts logging, binds the listener and serves until
//! SIGINT or SIGTERM.
//!
//! Two commands run instead of the service:
//!
//! - `reproject` drops the projections, rebuilds them from the event log,
//!   prints what changed and exits (on the embedded log the service must be
//!   stopped: the file is locked while it runs);
//! - `import-log FILE` copies an embedded log file into the PostgreSQL
//!   database of `RUNTIME_DATABASE_URL`, whose log must be empty;
//! - `archive [--dry-run]` runs the retention policy once with the service
//!   stopped, printing progress, then compacts the hot log (`--dry-run`
//!   only says what it would move and reclaim).
//!
//! `--help` and `--version` are answered before the environment is read.
//! Any failure to start is one line on stderr, `error: ...`, and exit code
//! 1 (2 for a bad command line), whatever `RUST_BACKTRACE` says.

use anyhow::Context;
use openagents_runtime_service::config::Config;
use std::ffi::OsString;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

const USAGE: &str = "\
openagents-runtime-service: the authoritative record of long-running agent work.

Usage:
  openagents-runtime-service                  serve HTTP until SIGINT or SIGTERM
  openagents-runtime-service reproject        rebuild the projections from the log (service stopped)
  openagents-runtime-service import-log FILE  copy an embedded log into RUNTIME_DATABASE_URL
  openagents-runtime-service archive [--dry-run]
                                              run the retention policy once (service stopped)
  openagents-runtime-service COMMAND --help   help on one command

Options:
  -h, --help     print this help
  -V, --version  print the version

Configuration is read from the environment (README.md, \"Configuration\", has
the ranges); a bad value refuses to start with one line naming the variable.
  RUNTIME_BIND_ADDR                        listen address (127.0.0.1:4100)
  RUNTIME_SERVICE_NAME                     name on /healthz (runtime)
  RUNTIME_BUILD_SHA                        build id on /healthz (dev)
  RUNTIME_STORAGE_BACKEND                  jsonl or postgres (jsonl)
  RUNTIME_DATABASE_URL                     PostgreSQL URL, required with postgres
  RUNTIME_EVENT_LOG_PATH                   the event log on jsonl (.runtime-data/runtime-events.jsonl)
  RUNTIME_EVENT_LOG_SEGMENT_BYTES          size of a full log segment (134217728)
  RUNTIME_CHECKPOINT_PATH                  index snapshot (index and projections) on jsonl (.runtime-data/projection-state.json)
  RUNTIME_AUTHORITY_WRITE_MODE             rust_active, shadow_only or read_only (rust_active)
  LEGACY_RUNTIME_WRITE_FREEZE              true or false, reported on /healthz (false)
  RUNTIME_MAX_BODY_BYTES                   largest request body (1048576)
  RUNTIME_MAX_BODY_BYTES_IN_FLIGHT         request body bytes held at once (67108864)
  RUNTIME_MAX_CONNECTIONS                  connections served at once (10000)
  RUNTIME_HEADER_READ_TIMEOUT_MS           time to send request headers (10000)
  RUNTIME_BODY_READ_TIMEOUT_MS             longest pause inside a request body (10000)
  RUNTIME_BODY_MIN_BYTES_PER_SEC           slowest average request body rate (1024)
  RUNTIME_WRITE_TIMEOUT_MS                 longest wait for a client to read (30000)
  RUNTIME_WORKER_HEARTBEAT_STALE_AFTER_MS  heartbeat age of a stale worker (120000)
  RUNTIME_FANOUT_DRIVER                    memory on jsonl, postgres_notify on postgres
  RUNTIME_FANOUT_QUEUE_CAPACITY            messages kept per Khala topic (1024)
  RUNTIME_FANOUT_MAX_TOPICS                Khala topics held in memory (10000)
  RUNTIME_FANOUT_WINDOW_MAX_BYTES          message bytes one Khala topic holds (8388608)
  RUNTIME_FANOUT_MAX_TOTAL_BYTES           message bytes all Khala topics hold (268435456)
  RUNTIME_KHALA_MAX_RESPONSE_BYTES         message bytes one Khala poll returns (4194304)
  RUNTIME_KHALA_MAX_WAITERS                long-polls waiting at once (10000)
  RUNTIME_KHALA_MAX_STREAMS                live streams (SSE, WebSocket) open at once (10000)
  RUNTIME_KHALA_MAX_STREAMS_PER_PRINCIPAL  live streams one principal may hold open (16)
  RUNTIME_KHALA_MAX_STREAM_LAG             messages a stream may fall behind (1000)
  RUNTIME_KHALA_ALLOWED_ORIGINS            comma-separated browser origins allowed (none)
  RUNTIME_SYNC_TOKEN_SIGNING_KEY           HS256 key of sync tokens (none: Khala answers 503)
  RUNTIME_SYNC_TOKEN_ISSUER                required iss (https://openagents.com)
  RUNTIME_SYNC_TOKEN_AUDIENCE              required aud (openagents-sync)
  RUNTIME_SYNC_REVOKED_JTIS                comma-separated revoked token ids
  RUNTIME_SYNC_TOKEN_SIGNING_KEY_PREVIOUS  HS256 key before the last rotation, still accepted
  RUNTIME_SYNC_TOKEN_JWKS_PATH             JWKS file of EdDSA, ES256 and RS256 keys (reloaded)
  RUNTIME_SYNC_REVOKED_JTIS_PATH           file of revoked token ids, one a line (reloaded)
  RUNTIME_CHECKPOINT_FLUSH_MS              snapshot write interval, while the log changes (5000)
  RUNTIME_INTERNAL_AUTH_TOKEN              bearer token of /internal/v1/*, every scope (none)
  RUNTIME_CREDENTIALS_PATH                 file of named credentials with scopes (reloaded)
  RUNTIME_RECEIPT_SIGNING_KEY_FILE         secp256k1 key receipts are signed with (none)
  RUNTIME_SHUTDOWN_GRACE_MS                time in-flight requests get at shutdown (10000)
  RUNTIME_PARITY_REPORT_PATH               parity report shown by /internal/v1/cutover/status
  RUNTIME_ARCHIVE_DIR                      archive of histories that left the hot log (archive beside the log)
  RUNTIME_RETENTION_SEALED_AFTER           archive runs sealed longer ago, e.g. 30d (off)
  RUNTIME_RETENTION_HEARTBEATS_AFTER       keep one worker heartbeat older than this, e.g. 1h (off)
  RUNTIME_RETENTION_INTERVAL_MS            time between retention passes (60000)
  RUNTIME_COMPACTION_BYTES_PER_SEC         segment bytes compaction reads per second (33554432)
  RUST_LOG                                 log filter (info)
";

const REPROJECT_USAGE: &str = "\
Usage: openagents-runtime-service reproject

Drops the projections, rebuilds them from the event log, writes the
checkpoint and prints one line per topic that changed. On the embedded log
the service must be stopped (the log is locked while it runs). Reads the same
environment as the service (openagents-runtime-service --help).
";

const IMPORT_LOG_USAGE: &str = "\
Usage: openagents-runtime-service import-log FILE

Copies the embedded event log FILE into the PostgreSQL database of
RUNTIME_DATABASE_URL (RUNTIME_STORAGE_BACKEND=postgres), whose log must be
empty. Reads the same environment as the service
(openagents-runtime-service --help).
";

const ARCHIVE_USAGE: &str = "\
Usage: openagents-runtime-service archive [--dry-run]

Runs the retention policy (RUNTIME_RETENTION_SEALED_AFTER,
RUNTIME_RETENTION_HEARTBEATS_AFTER) once: moves the histories it names, and
those of erased runs, to the archive, printing progress, then compacts the
hot log and writes the snapshot. With --dry-run it moves nothing and says what it would move and how
many bytes of the hot log that would reclaim. On the embedded log the service
must be stopped (the log is locked while it runs). Reads the same environment
as the service (openagents-runtime-service --help).
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Serve,
    Reproject,
    ImportLog(OsString),
    Archive { dry_run: bool },
    Print(&'static str),
}

/// A command line that is not one of the forms of [`USAGE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}; see openagents-runtime-service --help")]
struct UsageError(String);

fn parse(mut args: impl Iterator<Item = OsString>) -> Result<Command, UsageError> {
    let unexpected = |arg: &OsString| UsageError(format!("unexpected argument {arg:?}"));
    let is_help = |arg: &OsString| arg == "-h" || arg == "--help";
    let command = match args.next() {
        None => return Ok(Command::Serve),
        Some(arg) if is_help(&arg) => Command::Print(USAGE),
        Some(arg) if arg == "-V" || arg == "--version" => Command::Print(VERSION),
        Some(arg) if arg == "reproject" => match args.next() {
            None => Command::Reproject,
            Some(arg) if is_help(&arg) => Command::Print(REPROJECT_USAGE),
            Some(arg) => return Err(unexpected(&arg)),
        },
        Some(arg) if arg == "archive" => match args.next() {
            None => Command::Archive { dry_run: false },
            Some(arg) if is_help(&arg) => Command::Print(ARCHIVE_USAGE),
            Some(arg) if arg == "--dry-run" => Command::Archive { dry_run: true },
            Some(arg) => return Err(unexpected(&arg)),
        },
        Some(arg) if arg == "import-log" => match args.next() {
            None => return Err(UsageError("import-log needs a FILE".into())),
            Some(arg) if is_help(&arg) => Command::Print(IMPORT_LOG_USAGE),
            Some(arg) if arg.to_string_lossy().starts_with('-') => {
                return Err(unexpected(&arg));
            }
            Some(file) => Command::ImportLog(file),
        },
        Some(arg) => return Err(UsageError(format!("unknown command {arg:?}"))),
    };
    match args.next() {
        None => Ok(command),
        Some(arg) => Err(unexpected(&arg)),
    }
}

const VERSION: &str = concat!(
    "openagents-runtime-service ",
    env!("CARGO_PKG_VERSION"),
    "\n"
);

fn main() -> ExitCode {
    let command = match parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    if let Command::Print(text) = command {
        print!("{text}");
        return ExitCode::SUCCESS;
    }
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The causes on one line, each once; no backtrace is printed.
            let mut line = String::new();
            for cause in error.chain() {
                let text = cause.to_string().replace(['\n', '\r'], " ");
                if !line.contains(&text) {
                    if !line.is_empty() {
                        line.push_str(": ");
                    }
                    line.push_str(&text);
                }
            }
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    init_logging()?;
    let config = Config::from_env()?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    config.check_paths()?;
    match command {
        Command::Reproject => reproject(&config),
        Command::ImportLog(file) => import_log(&config, file),
        Command::Archive { dry_run } => archive(&config, dry_run),
        Command::Serve => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(serve(config)),
        Command::Print(_) => Ok(()),
    }
}

/// JSON lines on stdout, filtered by `RUST_LOG` (default `info`); a filter
/// that does not parse refuses to start rather than silencing the logs.
fn init_logging() -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => EnvFilter::builder()
            .parse(&value)
            .with_context(|| format!("invalid RUST_LOG={value:?}"))?,
        _ => EnvFilter::new("info"),
    };
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .init();
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if !config.authority_write_mode.writes_enabled() && config.legacy_write_freeze {
        tracing::warn!(
            authority_write_mode = config.authority_write_mode.as_str(),
            "neither runtime can write: this service is frozen and LEGACY_RUNTIME_WRITE_FREEZE=true"
        );
    }
    if let Some(limit) = open_files_limit()
        && config.max_connections as u64 + RESERVED_DESCRIPTORS > limit
    {
        tracing::warn!(
            max_connections = config.max_connections,
            open_files_limit = limit,
            "RUNTIME_MAX_CONNECTIONS is above what the open-files limit allows; past it, accepting pauses until descriptors come back"
        );
    }
    let listener = tokio::net::TcpListener::bind(config.bind_addr)
        .await
        .with_context(|| format!("binding RUNTIME_BIND_ADDR={}", config.bind_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let storage = config.describe_storage();
    openagents_runtime_service::serve(config, listener, shutdown_signal())
        .await
        .with_context(|| format!("opening the storage of {storage}"))?;
    Ok(())
}

/// Descriptors the service needs besides its connections (the log, its
/// database connections, the runtime's own).
const RESERVED_DESCRIPTORS: u64 = 64;

/// The soft limit on open files, from `/proc/self/limits` (Linux); `None`
/// when it cannot be read or is unlimited.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutdown requested");
}

/// Rebuilds the projections from the log and prints what changed.
fn reproject(config: &Config) -> anyhow::Result<()> {
    use openagents_event_log::LogOptions;
    use openagents_runtime_service::projectors::{ProjectionStore, describe_changes};
    use openagents_runtime_service::storage;
    // The store observes the log so that the snapshot it writes carries the
    // rebuilt projections.
    let store = std::sync::Arc::new(ProjectionStore::for_reproject());
    let options = LogOptions {
        observer: Some(store.clone()),
        ..LogOptions::default()
    };
    let (log, report) = storage::open_log(config, options).with_context(|| {
        format!(
            "opening the event log of {} (is the service still running?)",
            config.describe_storage()
        )
    })?;
    let (before, after) = store.reproject(&log).map_err(anyhow::Error::msg)?;
    let changes = describe_changes(&before, &after);
    for change in &changes {
        println!("{change}");
    }
    println!(
        "reprojected {} records of {} streams into {}: {} topics changed",
        report.records,
        report.streams,
        log.snapshot_location().unwrap_or_default(),
        changes.len()
    );
    Ok(())
}

/// Runs the retention policy once over the stopped service's log, then
/// compacts it; with `dry_run`, only reports what the pass would do.
fn archive(config: &Config, dry_run: bool) -> anyhow::Result<()> {
    use openagents_runtime_service::core::Core;
    use openagents_runtime_service::retention::{PassReport, Policy, run_pass};
    let policy = Policy::of(config);
    if policy.is_off() {
        println!(
            "no retention policy is set (RUNTIME_RETENTION_SEALED_AFTER, RUNTIME_RETENTION_HEARTBEATS_AFTER): only erased runs move"
        );
    }
    let (core, _) = Core::open_without_retention(config).with_context(|| {
        format!(
            "opening the event log of {} (is the service still running?)",
            config.describe_storage()
        )
    })?;
    let log = core.authority.log();
    let describe = |report: &PassReport| {
        format!(
            "{} runs, {} erased runs and the old heartbeats of {} workers: {} records, {} bytes of the hot log",
            report.runs, report.erased, report.workers, report.records, report.bytes
        )
    };
    let mut printed = std::time::Instant::now();
    let report = run_pass(
        log,
        policy,
        std::time::SystemTime::now(),
        dry_run,
        &std::sync::atomic::AtomicBool::new(false),
        &mut |report| {
            if printed.elapsed() >= std::time::Duration::from_secs(1) {
                println!("progress: {}", describe(report));
                printed = std::time::Instant::now();
            }
        },
    )?;
    if dry_run {
        println!(
            "would move {}, which compaction would reclaim",
            describe(&report)
        );
    } else {
        println!("moved {}", describe(&report));
        let compacted = log.compact_now().context("compacting the hot log")?;
        println!(
            "compacted {} segments ({} deleted): {} bytes reclaimed, {} dead bytes left",
            compacted.segments_compacted,
            compacted.segments_deleted,
            compacted.bytes_reclaimed,
            compacted.bytes_pending
        );
    }
    core.shutdown();
    Ok(())
}

/// Copies the embedded log `file` into the configured database.
fn import_log(config: &Config, file: OsString) -> anyhow::Result<()> {
    let file = std::path::PathBuf::from(file);
    let copied =
        openagents_runtime_service::storage::import_log(config, &file).with_context(|| {
            format!(
                "importing {} into {}",
                file.display(),
                config.describe_storage()
            )
        })?;
    println!("imported {copied} records from {}", file.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn the_grammar() {
        assert_eq!(parsed(&[]).unwrap(), Command::Serve);
        assert_eq!(
            parsed(&["archive"]).unwrap(),
            Command::Archive { dry_run: false }
        );
        assert_eq!(
            parsed(&["archive", "--dry-run"]).unwrap(),
            Command::Archive { dry_run: true }
        );
        assert_eq!(
            parsed(&["archive", "--help"]).unwrap(),
            Command::Print(ARCHIVE_USAGE)
        );
        assert!(parsed(&["archive", "--dry-run", "x"]).is_err());
        assert!(parsed(&["archive", "--force"]).is_err());
        assert_eq!(parsed(&["-h"]).unwrap(), Command::Print(USAGE));
        assert_eq!(parsed(&["--version"]).unwrap(), Command::Print(VERSION));
        assert_eq!(parsed(&["-V"]).unwrap(), Command::Print(VERSION));
        assert_eq!(parsed(&["reproject"]).unwrap(), Command::Reproject);
        assert_eq!(
            parsed(&["reproject", "--help"]).unwrap(),
            Command::Print(REPROJECT_USAGE)
        );
        assert_eq!(
            parsed(&["import-log", "-h"]).unwrap(),
            Command::Print(IMPORT_LOG_USAGE)
        );
        assert_eq!(
            parsed(&["import-log", "log.jsonl"]).unwrap(),
            Command::ImportLog("log.jsonl".into())
        );
        for bad in [
            &["serve"][..],
            &["--port"],
            &["reproject", "x"],
            &["import-log"],
            &["import-log", "--force"],
            &["import-log", "a", "b"],
            &["-h", "x"],
        ] {
            assert!(parsed(bad).is_err(), "{bad:?}");
        }
    }
}
