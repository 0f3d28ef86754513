//! `runtime-shadow-harness`: the command line of the shadow parity harness.
//!
//! - The default command compares a legacy export with a Rust export, writes
//!   the parity report and exits 0 when the gate allows cutover, 2 when it
//!   blocks, 1 when an input cannot be read (the message names the file).
//! - `capture` fetches one run's four artifacts from a running service into
//!   an export folder with its manifest.
//!
//! `docs/SHADOW_PARITY.md` is the runbook. The logic lives in the
//! `openagents-shadow` library; this file parses arguments, does the HTTP
//! and the file writes, and maps outcomes to exit codes.

use anyhow::{Context, Result, bail};
use openagents_shadow::{Decision, ExportFiles, GatePolicy, RunExport, check_parity};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Printed by `--help` and after a usage error.
const USAGE: &str = "\
usage:
  runtime-shadow-harness --legacy-manifest A --rust-manifest B --output REPORT.json
                         [--max-warnings N] [--block-on-critical true|false]
                         [--record PATH] [--generated-at TIMESTAMP]
  runtime-shadow-harness capture --base-url URL --run-id ID --out DIR

exit codes: 0 gate allows, 2 gate blocks, 1 error (unreadable input, bad arguments)";

/// Exit code of a blocked gate; 1 is kept for errors so that a script can
/// tell \"parity failed\" from \"the harness could not run\".
const EXIT_BLOCK: u8 = 2;

/// Largest artifact `capture` accepts. A replay grows with its run; this is
/// far above any real run and still bounds memory.
const MAX_ARTIFACT_BYTES: u64 = 512 * 1024 * 1024;

/// How long `capture` waits for the whole of one request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    match run(std::env::args_os().skip(1).collect()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("runtime-shadow-harness: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Dispatches on the first argument.
fn run(args: Vec<OsString>) -> Result<ExitCode> {
    let args = args
        .into_iter()
        .map(|arg| {
            arg.into_string()
                .map_err(|arg| anyhow::anyhow!("argument {arg:?} is not UTF-8"))
        })
        .collect::<Result<Vec<_>>>()?;
    match args.first().map(String::as_str) {
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Some("capture") => capture(&Flags::parse(&args[1..], CAPTURE_FLAGS)?),
        _ => compare(&Flags::parse(&args, COMPARE_FLAGS)?),
    }
}

/// Flags of the compare command.
const COMPARE_FLAGS: &[&str] = &[
    "--legacy-manifest",
    "--rust-manifest",
    "--output",
    "--max-warnings",
    "--block-on-critical",
    "--record",
    "--generated-at",
];

/// Flags of the capture command.
const CAPTURE_FLAGS: &[&str] = &["--base-url", "--run-id", "--out"];

/// `--flag value` pairs of one command line, each flag at most once.
struct Flags(BTreeMap<String, String>);

impl Flags {
    /// Reads `args` as `--flag value` pairs, refusing flags not in `known`.
    fn parse(args: &[String], known: &[&str]) -> Result<Self> {
        let mut values = BTreeMap::new();
        let mut rest = args.iter();
        while let Some(flag) = rest.next() {
            if !known.contains(&flag.as_str()) {
                bail!("unknown argument {flag:?}\n{USAGE}");
            }
            let Some(value) = rest.next() else {
                bail!("{flag} needs a value\n{USAGE}");
            };
            if values.insert(flag.clone(), value.clone()).is_some() {
                bail!("{flag} is given twice");
            }
        }
        Ok(Self(values))
    }

    /// The value of a flag the command cannot do without.
    fn required(&self, flag: &str) -> Result<&str> {
        self.optional(flag)
            .with_context(|| format!("{flag} is required\n{USAGE}"))
    }

    /// The value of a flag, if given.
    fn optional(&self, flag: &str) -> Option<&str> {
        self.0.get(flag).map(String::as_str)
    }
}

/// The compare command: report, record, exit code.
fn compare(flags: &Flags) -> Result<ExitCode> {
    let legacy = PathBuf::from(flags.required("--legacy-manifest")?);
    let rust = PathBuf::from(flags.required("--rust-manifest")?);
    let output = PathBuf::from(flags.required("--output")?);
    let policy = gate_policy(flags)?;
    let mut report = check_parity(&legacy, &rust, policy)?;
    if let Some(generated_at) = flags.optional("--generated-at") {
        report = report.with_generated_at(generated_at.to_owned());
    }
    let bytes = report.to_json_bytes();
    write_atomically(&output, &bytes)?;
    if let Some(record) = flags.optional("--record") {
        write_atomically(Path::new(record), &bytes)?;
    }
    println!(
        "shadow parity {} ({} critical, {} warning, {} fields compared): {} Report: {}",
        report.gate.decision.as_str(),
        report.totals.critical,
        report.totals.warning,
        report.totals.compared_fields,
        report.gate.reason,
        output.display(),
    );
    Ok(match report.gate.decision {
        Decision::Allow => ExitCode::SUCCESS,
        Decision::Block => ExitCode::from(EXIT_BLOCK),
    })
}

/// The gate policy from `--max-warnings` and `--block-on-critical`.
fn gate_policy(flags: &Flags) -> Result<GatePolicy> {
    let defaults = GatePolicy::default();
    let max_warnings = match flags.optional("--max-warnings") {
        Some(text) => text
            .parse()
            .with_context(|| format!("--max-warnings {text:?} is not a whole number"))?,
        None => defaults.max_warnings,
    };
    let block_on_critical = match flags.optional("--block-on-critical") {
        Some("true") => true,
        Some("false") => false,
        Some(other) => bail!("--block-on-critical {other:?} must be true or false"),
        None => defaults.block_on_critical,
    };
    Ok(GatePolicy {
        max_warnings,
        block_on_critical,
    })
}

/// Writes `bytes` to `path` through a temporary file and a rename, so that
/// a reader of the path (the service reads the recorded report) never sees
/// half a report. Creates missing parent folders.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let mut temporary_name = OsString::from(".");
    temporary_name.push(name);
    temporary_name.push(format!(".{}.tmp", std::process::id()));
    let temporary = path.with_file_name(temporary_name);
    std::fs::write(&temporary, bytes)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The capture command: fetch the four artifacts, write the export folder,
/// and load it back so that an unusable capture fails now, not at compare.
fn capture(flags: &Flags) -> Result<ExitCode> {
    let base = flags.required("--base-url")?.trim_end_matches('/');
    let run_id = flags.required("--run-id")?;
    let out = PathBuf::from(flags.required("--out")?);
    // Run ids are UUIDs; anything that could change the URL's shape is a typo.
    if run_id.is_empty()
        || !run_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        bail!("--run-id {run_id:?} is not a run id");
    }
    // Loopback or an internal address: no proxy from the environment.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(HTTP_TIMEOUT))
        .proxy(None)
        .build()
        .into();
    let fetch = |path: String| fetch(&agent, &format!("{base}/internal/v1/{path}"));
    let files = ExportFiles {
        receipt: fetch(format!("runs/{run_id}/receipt"))?,
        replay: fetch(format!("runs/{run_id}/replay"))?,
        summary: fetch(format!("projectors/run-summary/{run_id}"))?,
        checkpoint: fetch(format!("projectors/checkpoints/{run_id}"))?,
    };
    let manifest = files.write_dir(&out)?;
    RunExport::load(&manifest).context("the captured export is not usable")?;
    println!("captured run {run_id} into {}", manifest.display());
    Ok(ExitCode::SUCCESS)
}

/// The body of `GET url`; a non-2xx status is an error naming the URL.
fn fetch(agent: &ureq::Agent, url: &str) -> Result<Vec<u8>> {
    let mut response = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url} failed"))?;
    response
        .body_mut()
        .with_config()
        .limit(MAX_ARTIFACT_BYTES)
        .read_to_vec()
        .with_context(|| format!("GET {url}: reading the body failed"))
}
