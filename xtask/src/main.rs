//! `cargo xtask <command>`: project automation written in Rust rather than shell.
//!
//! This file only dispatches: each command lives in a module of its own (or,
//! for a one-call command, in a short function here) and returns an
//! `anyhow::Result`; an error is printed once, here, and exits with status 1.

mod bench;
mod chaos;
mod contract;
mod fixtures;
mod fuzz_http;
mod parity;

use anyhow::{Context, bail};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What `cargo xtask` with no or an unknown command prints.
const USAGE: &str = "usage: cargo xtask <command>

commands:
  bench [--quick] [--only NAME]
                          build the release service and measure it over loopback;
                          prints a table and writes target/bench/report.json
  chaos [--cycles N] [--seed S]
                          SIGKILL the release service under write load N times
                          (default 20) and check no acknowledged write was lost;
                          then inject a torn final line and a corrupt middle line
  contract                check that the router and docs/openapi.yaml list the same routes
  fixtures [--check]      rebuild the golden receipt.json and replay.jsonl of every
                          fixtures/runs/*/run.json; --check only reports stale files
  fuzz-http [--examples N] [--seed S]
                          fuzz the release service over loopback with schemathesis
                          against docs/openapi.yaml; fails on any 5xx or mismatch
  parity                  run every fixtures/shadow scenario through the runtime and
                          check the shadow gate decides as the scenario expects
  replay-validate FILE    check FILE against the REPLAY.jsonl v1 rules";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command named by the first argument.
fn run(args: &[String]) -> anyhow::Result<()> {
    let Some((command, rest)) = args.split_first() else {
        bail!("no command given\n\n{USAGE}");
    };
    match command.as_str() {
        "bench" => bench::run(rest),
        "chaos" => chaos::run(rest),
        "contract" => contract::run(rest),
        "fixtures" => fixtures::run(rest),
        "fuzz-http" => fuzz_http::run(rest),
        "parity" => parity::run(rest),
        "replay-validate" => replay_validate(rest),
        _ => bail!("unknown command {command:?}\n\n{USAGE}"),
    }
}

/// `replay-validate FILE`: prints `ok (N lines)` or fails with the first
/// broken rule and its line.
fn replay_validate(args: &[String]) -> anyhow::Result<()> {
    let [path] = args else {
        bail!("usage: cargo xtask replay-validate FILE");
    };
    let file = File::open(path).with_context(|| format!("opening {path}"))?;
    let lines = openagents_artifacts::validate_replay(BufReader::new(file))
        .with_context(|| path.clone())?;
    println!("ok ({lines} lines)");
    Ok(())
}

/// The workspace root: xtask sits one level below it.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}
