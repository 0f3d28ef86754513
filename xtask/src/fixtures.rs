//! `cargo xtask fixtures [--check]`: keeps the golden artifacts of every
//! fixture run in step with the builders.
//!
//! For each `fixtures/runs/<name>/run.json` the command builds the receipt and
//! the replay, checks the replay with the validator, and compares both with
//! the `receipt.json` and `replay.jsonl` beside it. Without `--check` it
//! rewrites the files that differ and says which; with `--check` it changes
//! nothing and fails naming the stale files, which is what CI runs.

use crate::workspace_root;
use anyhow::{Context, bail};
use openagents_artifacts::{FixtureRun, validate_replay};
use std::fs;
use std::path::{Path, PathBuf};

/// Where the fixture runs live, relative to the workspace root.
const FIXTURE_RUNS: &str = "fixtures/runs";

/// A golden file as the builders would write it now.
struct Golden {
    /// Path relative to the workspace root, for messages and for writing.
    path: PathBuf,
    /// The bytes the file should hold.
    bytes: Vec<u8>,
}

/// How a golden file on disk compares with the freshly built one.
enum Comparison {
    /// The file holds exactly the built bytes.
    Unchanged,
    /// The file does not exist yet.
    Missing,
    /// The file differs, first at this 1-based line.
    Differs(usize),
}

/// Runs the command with the arguments after `fixtures`.
pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let check = match args {
        [] => false,
        [flag] if flag == "--check" => true,
        _ => bail!("usage: cargo xtask fixtures [--check]"),
    };
    let root = workspace_root();
    let mut changed = Vec::new();
    let mut total = 0;
    for run_dir in fixture_dirs(&root)? {
        for golden in build_goldens(&root, &run_dir)? {
            total += 1;
            let comparison = compare(&root.join(&golden.path), &golden.bytes)?;
            let note = match comparison {
                Comparison::Unchanged => continue,
                Comparison::Missing => "missing".to_owned(),
                Comparison::Differs(line) => format!("first difference at line {line}"),
            };
            if !check {
                fs::write(root.join(&golden.path), &golden.bytes)
                    .with_context(|| format!("writing {}", golden.path.display()))?;
                println!("wrote {} ({note})", golden.path.display());
            }
            changed.push(format!("{} ({note})", golden.path.display()));
        }
    }
    if check && !changed.is_empty() {
        bail!(
            "{} of {total} golden files are stale; run `cargo xtask fixtures`:\n  {}",
            changed.len(),
            changed.join("\n  ")
        );
    }
    if check {
        println!("fixtures: all {total} golden files up to date");
    } else {
        println!(
            "fixtures: {} of {total} golden files rewritten",
            changed.len()
        );
    }
    Ok(())
}

/// The fixture run directories (relative to `root`), sorted by name.
fn fixture_dirs(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let runs = Path::new(FIXTURE_RUNS);
    let entries =
        fs::read_dir(root.join(runs)).with_context(|| format!("listing {FIXTURE_RUNS}"))?;
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {FIXTURE_RUNS}"))?;
        if entry.file_type()?.is_dir() {
            dirs.push(runs.join(entry.file_name()));
        }
    }
    dirs.sort();
    if dirs.is_empty() {
        bail!("no fixture runs under {FIXTURE_RUNS}");
    }
    Ok(dirs)
}

/// Loads `run_dir/run.json` and builds its two golden files.
fn build_goldens(root: &Path, run_dir: &Path) -> anyhow::Result<[Golden; 2]> {
    let run_json = run_dir.join("run.json");
    let bytes = fs::read(root.join(&run_json))
        .with_context(|| format!("reading {}", run_json.display()))?;
    let fixture =
        FixtureRun::from_json(&bytes).with_context(|| format!("loading {}", run_json.display()))?;
    let replay = fixture.replay();
    // A builder bug must not be frozen into a golden file.
    validate_replay(&replay[..])
        .with_context(|| format!("the replay built from {} is invalid", run_json.display()))?;
    Ok([
        Golden {
            path: run_dir.join("receipt.json"),
            bytes: fixture.receipt().to_json_bytes(),
        },
        Golden {
            path: run_dir.join("replay.jsonl"),
            bytes: replay,
        },
    ])
}

/// Compares the file at `path` with `built`.
fn compare(path: &Path, built: &[u8]) -> anyhow::Result<Comparison> {
    let current = match fs::read(path) {
        Ok(current) => current,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Comparison::Missing);
        }
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    if current == built {
        return Ok(Comparison::Unchanged);
    }
    let mut old_lines = current.split_inclusive(|&b| b == b'\n');
    let mut new_lines = built.split_inclusive(|&b| b == b'\n');
    let mut line = 1;
    while old_lines.next() == new_lines.next() {
        line += 1;
    }
    Ok(Comparison::Differs(line))
}
