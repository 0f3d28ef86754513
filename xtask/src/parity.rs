//! `cargo xtask parity`: every shadow scenario of `fixtures/shadow/` is run
//! through the runtime in-process and compared with its legacy export.
//!
//! For each scenario the events of `rust/events.json` are imported into a
//! fresh runtime (a temporary data folder, the real log, authority and
//! projections), the Rust side is captured as the service would serve it
//! (receipt, replay, run summary, checkpoint), and the shadow harness's
//! comparison runs against `legacy/manifest.json` with the scenario's gate
//! policy. The command fails unless every scenario's gate decision is the one
//! its `scenario.json` expects.

use anyhow::{Context, bail};
use openagents_authority::{ImportRun, StreamId, decide_import};
use openagents_run_state::RunEvent;
use openagents_runtime_service::config::Config;
use openagents_runtime_service::core::Core;
use openagents_runtime_service::orchestration;
use openagents_shadow::{ExportFiles, GatePolicy, check_parity};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The parts of `scenario.json` the command reads.
#[derive(Deserialize)]
struct Scenario {
    policy: Policy,
    expected_gate: String,
}

/// The gate policy as `scenario.json` writes it.
#[derive(Deserialize)]
struct Policy {
    max_warnings: u64,
    block_on_critical: bool,
}

/// The run log format of `rust/events.json`.
#[derive(Deserialize)]
struct RunLog {
    run: RunAttributes,
    events: Vec<RunEvent>,
}

#[derive(Deserialize)]
struct RunAttributes {
    id: uuid::Uuid,
    created_at: String,
    metadata: Value,
}

/// Runs every scenario; fails listing the scenarios whose gate differed.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    if !args.is_empty() {
        bail!("usage: cargo xtask parity");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/shadow");
    let mut scenarios: Vec<PathBuf> = std::fs::read_dir(&root)
        .with_context(|| format!("reading {}", root.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    scenarios.sort();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut failed = Vec::new();
    for scenario in &scenarios {
        let name = scenario
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let (expected, got, reason) = runtime.block_on(check_scenario(scenario))?;
        let verdict = if expected == got { "ok" } else { "MISMATCH" };
        println!("{verdict:8} {name:28} expected {expected:5} got {got:5} ({reason})");
        if expected != got {
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!(
            "gate decisions differ from the expected ones: {}",
            failed.join(", ")
        );
    }
    println!("{} scenarios, every gate as expected", scenarios.len());
    Ok(())
}

/// Returns the expected decision, the decision reached and its reason.
async fn check_scenario(dir: &Path) -> anyhow::Result<(String, String, String)> {
    let scenario: Scenario = read_json(&dir.join("scenario.json"))?;
    let log: RunLog = read_json(&dir.join("rust/events.json"))?;
    let work = tempfile::tempdir()?;
    let rust_manifest = capture_rust_side(&log, work.path()).await?;
    let policy = GatePolicy {
        max_warnings: scenario.policy.max_warnings,
        block_on_critical: scenario.policy.block_on_critical,
    };
    let report = check_parity(&dir.join("legacy/manifest.json"), &rust_manifest, policy)
        .with_context(|| format!("comparing {}", dir.display()))?;
    Ok((
        scenario.expected_gate,
        report.gate.decision.as_str().to_owned(),
        report.gate.reason,
    ))
}

/// Imports the run into a fresh runtime and writes what the service would
/// serve for it into `work/rust`, returning the manifest path.
async fn capture_rust_side(log: &RunLog, work: &Path) -> anyhow::Result<PathBuf> {
    let config = Config::for_tests(&work.join("data"));
    let (core, _) = Core::open(&config)?;
    let run_id = log.run.id;
    let import = ImportRun {
        id: run_id,
        created_at: log.run.created_at.clone(),
        metadata: log.run.metadata.clone(),
        owner: None,
        worker_id: None,
        events: log.events.clone(),
    };
    core.authority
        .execute(move |txn| decide_import(txn, import))
        .await?;
    let id = run_id.to_string();
    let summary = core
        .projections
        .run_summary(&id)
        .context("the imported run has no summary")?;
    let checkpoint = core
        .projections
        .checkpoint(&StreamId::Run(run_id).topic())
        .context("the imported run has no checkpoint")?;
    let files = ExportFiles {
        receipt: orchestration::receipt(&core.authority, run_id, None)?,
        replay: {
            let mut replay = Vec::new();
            orchestration::replay(&core.authority, run_id, &mut replay)?;
            replay
        },
        summary: serde_json::to_vec(&json!({"summary": summary}))?,
        checkpoint: serde_json::to_vec(&json!({"checkpoint": checkpoint}))?,
    };
    core.shutdown();
    Ok(files.write_dir(&work.join("rust"))?)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}
