//! `cargo xtask fuzz-http [--examples N] [--seed S]`: property-based HTTP
//! fuzzing of the real service against `docs/openapi.yaml`.
//!
//! Builds the release binary, starts it on a free `127.0.0.1` port with a
//! fresh data folder and a throwaway sync-token signing key, and runs
//! schemathesis (installed from PyPI when missing) with every phase and a
//! bounded number of examples per operation. The checks are: no 5xx answer,
//! and every status, content type and body matches the document. Khala polls
//! carry a valid sync token holding every scope, so they get past the token
//! check; their `wait_ms` is pinned to 0 so no request sits out a long-poll.
//! The service is stopped with SIGTERM afterwards; a service that died, logged
//! a panic or did not exit cleanly fails the run like a schemathesis finding.

use crate::bench::server::Server;
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// Examples per operation and phase unless `--examples` says otherwise:
/// enough to reach every documented status, small enough for a few minutes
/// on two cores.
const DEFAULT_EXAMPLES: u32 = 100;
/// The schemathesis the command line below is written for.
const SCHEMATHESIS_REQUIREMENT: &str = "schemathesis>=4,<5";
/// What every response is checked for.
const CHECKS: &str = "not_a_server_error,status_code_conformance,\
                      content_type_conformance,response_schema_conformance";
/// Sync-token issuer the service is started with.
const TOKEN_ISSUER: &str = "https://openagents.com";
/// Sync-token audience the service is started with.
const TOKEN_AUDIENCE: &str = "openagents-sync";
/// Every scope a Khala topic accepts.
const TOKEN_SCOPES: [&str; 3] = [
    "runtime.run_events",
    "runtime.codex_worker_events",
    "runtime.worker_lifecycle_events",
];
/// A small topic window, so fuzzed cursors also meet the 410 answer.
const FANOUT_QUEUE_CAPACITY: &str = "8";
/// A small body limit, so some generated bodies meet the 413 answer.
const MAX_BODY_BYTES: &str = "2048";
/// Per-request timeout given to schemathesis, in seconds.
const REQUEST_TIMEOUT_SECS: &str = "10";
/// Schemathesis settings the command line cannot express.
const SCHEMATHESIS_CONFIG: &str = r#"# Written by `cargo xtask fuzz-http`.
[[operations]]
include-operation-id = "pollTopic"
parameters = { "query.wait_ms" = 0 }
"#;

/// What the command line asks for.
#[derive(Debug, PartialEq)]
struct Options {
    examples: u32,
    seed: Option<u64>,
}

impl Options {
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut options = Options {
            examples: DEFAULT_EXAMPLES,
            seed: None,
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--examples" => options.examples = number(flag, value()?)?,
                "--seed" => options.seed = Some(number(flag, value()?)?),
                _ => bail!("usage: cargo xtask fuzz-http [--examples N] [--seed S]"),
            }
        }
        if options.examples == 0 {
            bail!("--examples must be at least 1");
        }
        Ok(options)
    }
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> anyhow::Result<T> {
    value
        .parse()
        .map_err(|_| anyhow::anyhow!("{flag} {value:?} is not a number"))
}

/// `cargo xtask fuzz-http`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let options = Options::parse(args)?;
    let root = crate::workspace_root();
    let binary = build_service(&root)?;
    ensure_schemathesis()?;
    let data = tempfile::tempdir().context("creating the data folder")?;
    let signing_key = format!("fuzz-{}", uuid::Uuid::now_v7().simple());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let env = [
        ("RUNTIME_SYNC_TOKEN_SIGNING_KEY", signing_key.as_str()),
        ("RUNTIME_SYNC_TOKEN_ISSUER", TOKEN_ISSUER),
        ("RUNTIME_SYNC_TOKEN_AUDIENCE", TOKEN_AUDIENCE),
        ("RUNTIME_FANOUT_QUEUE_CAPACITY", FANOUT_QUEUE_CAPACITY),
        ("RUNTIME_MAX_BODY_BYTES", MAX_BODY_BYTES),
    ];
    let mut service = Server::spawn_with_env(&binary, data.path(), &env)?;
    runtime.block_on(service.wait_ready())?;
    println!("service started on {}", service.addr);
    let token = sync_token(&signing_key)?;
    let config = data.path().join("schemathesis.toml");
    std::fs::write(&config, SCHEMATHESIS_CONFIG).context("writing schemathesis.toml")?;
    let report_dir = root.join("target").join("fuzz-http");
    let spec = root.join("docs").join("openapi.yaml");
    let run = Schemathesis {
        spec: &spec,
        config: &config,
        work_dir: data.path(),
        report_dir: &report_dir,
    };
    let fuzzed = run.run(service.addr, &token, &options);
    let stopped = runtime.block_on(service.stop());
    fuzzed?;
    stopped?;
    println!(
        "fuzz-http ok: no 5xx, every response matched docs/openapi.yaml \
         ({} examples per operation and phase; report in {})",
        options.examples,
        report_dir.display()
    );
    Ok(())
}

/// Builds the release service binary and returns its path.
fn build_service(root: &Path) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release", "-p", "openagents-runtime-service"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release failed ({status})");
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target.join("release").join("openagents-runtime-service"))
}

/// Makes sure `python3 -m schemathesis.cli` runs a 4.x schemathesis,
/// installing it from PyPI when it does not.
fn ensure_schemathesis() -> anyhow::Result<()> {
    if let Some(version) = schemathesis_version() {
        if version.starts_with('4') {
            println!("using schemathesis {version}");
            return Ok(());
        }
        println!("schemathesis {version} is installed; installing {SCHEMATHESIS_REQUIREMENT}");
    }
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", SCHEMATHESIS_REQUIREMENT])
        .status()
        .context("running python3 -m pip (is python3 with pip installed?)")?;
    if !status.success() {
        bail!("pip install {SCHEMATHESIS_REQUIREMENT} failed ({status})");
    }
    let version =
        schemathesis_version().context("schemathesis does not run after installing it")?;
    println!("installed schemathesis {version}");
    Ok(())
}

/// The installed schemathesis version, when it runs.
fn schemathesis_version() -> Option<String> {
    let output = Command::new("python3")
        .args(["-m", "schemathesis.cli", "--version"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // "python -m schemathesis.cli, version 4.32.5"
    let version = text.trim().rsplit(' ').next()?.to_owned();
    (output.status.success() && !version.is_empty()).then_some(version)
}

/// An HS256 sync token the service accepts for the next hours, holding every
/// Khala scope.
fn sync_token(signing_key: &str) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER,
        "aud": TOKEN_AUDIENCE,
        "iat": now,
        "exp": now + 6 * 3600,
        "jti": format!("fuzz-{now}"),
        "oa_user_id": 7,
        "oa_sync_scopes": TOKEN_SCOPES,
    });
    let key = jsonwebtoken::EncodingKey::from_secret(signing_key.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)
        .context("signing the sync token")
}

/// Where a schemathesis run reads and writes.
struct Schemathesis<'a> {
    /// The OpenAPI document.
    spec: &'a Path,
    /// The generated `schemathesis.toml`.
    config: &'a Path,
    /// Its working folder, where it keeps its cache (a temporary one, so no
    /// run replays another's findings and the work tree stays clean).
    work_dir: &'a Path,
    /// Where the JUnit report goes.
    report_dir: &'a Path,
}

impl Schemathesis<'_> {
    /// Runs schemathesis against the service at `addr`; fails on any finding.
    fn run(&self, addr: SocketAddr, token: &str, options: &Options) -> anyhow::Result<()> {
        let mut command = Command::new("python3");
        command
            .current_dir(self.work_dir)
            .args(["-m", "schemathesis.cli", "--no-color", "--config-file"])
            .arg(self.config)
            .arg("run")
            .arg(self.spec)
            .arg("--url")
            .arg(format!("http://{addr}"))
            .args(["--checks", CHECKS])
            .args(["--max-examples", &options.examples.to_string()])
            // One worker: schemathesis 4 has raced in its own generator with two.
            .args(["--workers", "1"])
            .args(["--request-timeout", REQUEST_TIMEOUT_SECS])
            .args(["--generation-database", "none"])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(["--report", "junit", "--report-dir"])
            .arg(self.report_dir);
        if let Some(seed) = options.seed {
            command.args(["--seed", &seed.to_string()]);
        }
        let status = command.status().context("running schemathesis")?;
        if !status.success() {
            bail!("schemathesis reported findings ({status}); see above");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_default_and_parse() {
        assert_eq!(
            Options::parse(&[]).unwrap(),
            Options {
                examples: DEFAULT_EXAMPLES,
                seed: None
            }
        );
        assert_eq!(
            Options::parse(&args(&["--examples", "5", "--seed", "42"])).unwrap(),
            Options {
                examples: 5,
                seed: Some(42)
            }
        );
        for bad in [
            &["--examples"][..],
            &["--examples", "x"],
            &["--examples", "0"],
            &["--fast"],
        ] {
            assert!(Options::parse(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_sync_token_is_an_hs256_jwt_with_every_scope() {
        let token = sync_token("key").unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_audience(&[TOKEN_AUDIENCE]);
        validation.set_issuer(&[TOKEN_ISSUER]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"key"),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(claims["oa_sync_scopes"], serde_json::json!(TOKEN_SCOPES));
    }
}
