//! `cargo xtask bench`: measures the release service over loopback HTTP.
//!
//! The command builds the release binary, then runs each scenario against a
//! freshly started process on a free `127.0.0.1` port with its own temporary
//! data folder, stops it with SIGTERM, and prints one table (also written to
//! `target/bench/report.json`).
//!
//! The load generator runs in this process, on the same machine as the
//! service, so an unoptimised generator would take CPU from the server and
//! depress every figure. A debug build of xtask (what `cargo xtask` runs)
//! therefore builds the release xtask and hands the whole command to it.
//!
//! Submodules: `load` (the HTTP/1.1 load generator), `server` (starting and
//! stopping the service), `preload` (writing large logs in-process with the
//! service library), `scenarios` (what is measured) and `report` (the table
//! and the JSON file).

mod generate;
pub(crate) mod load;
mod preload;
mod report;
mod scenarios;
pub(crate) mod server;

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Usage of `cargo xtask bench`.
const USAGE: &str = "usage: cargo xtask bench [--quick] [--only NAME[,NAME...]]

  --quick      one short run per scenario instead of three full ones
  --only NAMES run these scenarios (comma-separated): healthz, append,
               append-preloaded, restart, history, runs-10k, heartbeat,
               artifacts, run-read, khala-poll, khala-longpoll, runs-query,
               retention, khala-sse-10k, khala-ws-10k, khala-firehose,
               postgres-appends (needs PostgreSQL: BENCH_DATABASE_URL, default
               the local `test` database; skipped in a full run without it)";

/// How long and how often each scenario is measured.
#[derive(Debug, Clone)]
pub struct Options {
    /// Measurements per scenario (the report shows their median).
    pub repeats: usize,
    /// Load before the measured window, not counted.
    pub warmup: Duration,
    /// The measured window of a load run.
    pub measure: Duration,
    /// Whether this is the `--quick` variant.
    pub quick: bool,
    /// The scenarios to run, when given.
    pub only: Option<Vec<String>>,
}

impl Options {
    /// Parses the command line of `bench`.
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut quick = false;
        let mut only = None;
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            match arg.as_str() {
                "--quick" => quick = true,
                "--only" => {
                    let names = rest.next().context("--only needs a scenario name")?;
                    let names: Vec<String> = names.split(',').map(str::to_owned).collect();
                    if let Some(name) = names
                        .iter()
                        .find(|name| !scenarios::NAMES.contains(&name.as_str()))
                    {
                        bail!("unknown scenario {name:?}\n\n{USAGE}");
                    }
                    only = Some(names);
                }
                _ => bail!("unknown argument {arg:?}\n\n{USAGE}"),
            }
        }
        let (repeats, warmup, measure) = if quick {
            (1, Duration::from_millis(500), Duration::from_secs(2))
        } else {
            (3, Duration::from_secs(2), Duration::from_secs(8))
        };
        Ok(Options {
            repeats,
            warmup,
            measure,
            quick,
            only,
        })
    }

    /// Whether scenario `name` is to run.
    pub fn selected(&self, name: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|chosen| chosen == name))
    }
}

/// Runs `cargo xtask bench ARGS`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let options = Options::parse(args)?;
    let root = crate::workspace_root();
    if cfg!(debug_assertions) {
        return delegate_to_release_xtask(&root, args);
    }
    cargo_build_release(&root, "openagents-runtime-service")?;
    let binary = root.join("target/release/openagents-runtime-service");
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    // One worker thread per core: a single-threaded client could not
    // saturate even `GET /healthz` on this 2-core machine.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = runtime.block_on(scenarios::run_all(&binary, &options, args))?;
    println!("{}", report.table());
    let path = out_dir.join("report.json");
    report.write_json(&path)?;
    println!("report written to {}", path.display());
    report.check_complete()
}

/// `cargo build --release -p PACKAGE`, in the shared target folder.
pub(crate) fn cargo_build_release(root: &Path, package: &str) -> anyhow::Result<()> {
    eprintln!("bench: cargo build --release -p {package}");
    let status = Command::new(cargo())
        .current_dir(root)
        .args(["build", "--release", "--quiet", "-p", package])
        .status()
        .with_context(|| format!("running cargo build for {package}"))?;
    if !status.success() {
        bail!("cargo build --release -p {package} failed ({status})");
    }
    Ok(())
}

/// Builds the release xtask and runs `bench ARGS` with it (which builds the
/// release service), so the load generator is optimised like the service it
/// measures.
fn delegate_to_release_xtask(root: &Path, args: &[String]) -> anyhow::Result<()> {
    cargo_build_release(root, "xtask")?;
    let xtask = root.join("target/release/xtask");
    let status = Command::new(&xtask)
        .current_dir(root)
        .arg("bench")
        .args(args)
        .status()
        .with_context(|| format!("running {}", xtask.display()))?;
    if !status.success() {
        bail!("the release bench failed ({status})");
    }
    Ok(())
}

/// The cargo that runs us, or `cargo` from `PATH`.
fn cargo() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}
