//! The sync token verifier built from the configuration, and the thread
//! that reloads its JWKS and revoked-`jti` files while the service runs.
//!
//! Both files are read again every [`POLL_INTERVAL`] and put in force when
//! their bytes changed, so a change takes effect within about a quarter of a
//! second, with no restart and no signal. A reload that fails (unreadable
//! file, bad JSON, no usable key) keeps the set in force, logs why once, and
//! counts `outcome="failed"`; the file is tried again at every poll and the
//! next readable version is put in force.

use crate::config::Config;
use crate::metrics::Metrics;
use openagents_khala::auth::{SyncTokenConfig, SyncTokenVerifier};
use openagents_khala::keys::{KeySet, KeySetError};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the files are read.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Metric label of the JWKS file.
const JWKS: &str = "jwks";
/// Metric label of the revoked-`jti` file.
const REVOKED: &str = "revoked_jtis";

/// The verifier of `config`, or `None` when neither an HS256 key nor a JWKS
/// is configured (Khala routes then answer 503). The error names the
/// variable at fault.
pub(crate) fn verifier(config: &Config) -> Result<Option<SyncTokenVerifier>, String> {
    let secrets: Vec<&[u8]> = [
        &config.sync_token_signing_key,
        &config.sync_token_previous_signing_key,
    ]
    .into_iter()
    .flatten()
    .map(|key| key.as_bytes())
    .collect();
    if config.sync_token_signing_key.is_none() && config.sync_token_previous_signing_key.is_some() {
        return Err(
            "RUNTIME_SYNC_TOKEN_SIGNING_KEY_PREVIOUS is set without RUNTIME_SYNC_TOKEN_SIGNING_KEY"
                .to_owned(),
        );
    }
    if secrets.is_empty() && config.sync_token_jwks_path.is_none() {
        return Ok(None);
    }
    let jwks = match &config.sync_token_jwks_path {
        None => None,
        Some(path) => {
            Some(read(path).map_err(|e| invalid("RUNTIME_SYNC_TOKEN_JWKS_PATH", path, &e))?)
        }
    };
    let keys = KeySet::new(&secrets, jwks.as_deref()).map_err(|error| {
        match (&config.sync_token_jwks_path, error) {
            (_, error @ KeySetError::EmptySecret) => {
                format!("invalid RUNTIME_SYNC_TOKEN_SIGNING_KEY: {error}")
            }
            (Some(path), error) => {
                invalid("RUNTIME_SYNC_TOKEN_JWKS_PATH", path, &error.to_string())
            }
            (None, error) => format!("sync token keys: {error}"),
        }
    })?;
    for skipped in keys.skipped() {
        tracing::warn!(reason = %skipped, "a JWKS key is skipped");
    }
    let revoked = revoked_jtis(config, None)?;
    SyncTokenVerifier::new(SyncTokenConfig {
        keys,
        issuer: config.sync_token_issuer.clone(),
        audience: config.sync_token_audience.clone(),
        revoked_jtis: revoked,
    })
    .map(Some)
    .map_err(|e| format!("sync token configuration: {e}"))
}

fn invalid(variable: &str, path: &Path, reason: &str) -> String {
    format!(
        "invalid {variable}={:?}: {reason}",
        path.display().to_string()
    )
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading the file: {e}"))
}

/// `RUNTIME_SYNC_REVOKED_JTIS` together with the revoked-`jti` file: its
/// `bytes` when given, else the file read now.
fn revoked_jtis(config: &Config, bytes: Option<&[u8]>) -> Result<HashSet<String>, String> {
    let mut revoked: HashSet<String> = config.sync_revoked_jtis.iter().cloned().collect();
    if let Some(path) = &config.sync_revoked_jtis_path {
        let owned;
        let bytes = match bytes {
            Some(bytes) => bytes,
            None => {
                owned =
                    read(path).map_err(|e| invalid("RUNTIME_SYNC_REVOKED_JTIS_PATH", path, &e))?;
                &owned
            }
        };
        revoked.extend(
            parse_revoked(bytes)
                .map_err(|e| invalid("RUNTIME_SYNC_REVOKED_JTIS_PATH", path, &e))?,
        );
    }
    Ok(revoked)
}

/// One `jti` a line; blank lines and lines starting with `#` are ignored,
/// surrounding whitespace is trimmed.
fn parse_revoked(bytes: &[u8]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the file is not UTF-8".to_owned())?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

/// The background thread that reloads the files; stopped on drop.
pub(crate) struct Reloader {
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What one watched file looked like at the last poll.
struct Watched {
    path: PathBuf,
    file: &'static str,
    /// The bytes (or read error) seen last; a poll that sees the same does
    /// nothing.
    last: Result<Vec<u8>, String>,
}

impl Reloader {
    /// Starts watching the files of `config` for `verifier`, or returns
    /// `None` when no file is configured.
    pub(crate) fn start(
        config: &Config,
        verifier: Arc<SyncTokenVerifier>,
        metrics: Arc<Metrics>,
    ) -> Option<Self> {
        let mut watched: Vec<Watched> = [
            (&config.sync_token_jwks_path, JWKS),
            (&config.sync_revoked_jtis_path, REVOKED),
        ]
        .into_iter()
        .filter_map(|(path, file)| {
            let path = path.clone()?;
            Some(Watched {
                last: read(&path),
                path,
                file,
            })
        })
        .collect();
        if watched.is_empty() {
            return None;
        }
        metrics.sync_key_set_version(1);
        let config = config.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sync-auth-reloader".into())
            .spawn(move || {
                let mut version = 1;
                while !stopping.load(Ordering::Acquire) {
                    std::thread::park_timeout(POLL_INTERVAL);
                    for watched in &mut watched {
                        let seen = read(&watched.path);
                        if seen == watched.last {
                            continue;
                        }
                        let outcome = seen
                            .as_deref()
                            .map_err(Clone::clone)
                            .and_then(|bytes| apply(&config, &verifier, watched.file, bytes));
                        metrics.sync_auth_reload(watched.file, outcome.is_ok());
                        match outcome {
                            Ok(()) => {
                                if watched.file == JWKS {
                                    version += 1;
                                    metrics.sync_key_set_version(version);
                                }
                                tracing::info!(file = %watched.path.display(), version, "sync auth file reloaded");
                            }
                            Err(reason) => tracing::warn!(
                                file = %watched.path.display(),
                                %reason,
                                "sync auth file not reloaded; the previous set stays in force"
                            ),
                        }
                        watched.last = seen;
                    }
                }
            })
            .expect("spawning the sync auth reloader");
        Some(Reloader {
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }
}

/// Parses `bytes` as `file` and puts it in force.
fn apply(
    config: &Config,
    verifier: &SyncTokenVerifier,
    file: &'static str,
    bytes: &[u8],
) -> Result<(), String> {
    if file == JWKS {
        let keys = verifier
            .keys()
            .with_jwks(bytes)
            .map_err(|e| e.to_string())?;
        for skipped in keys.skipped() {
            tracing::warn!(reason = %skipped, "a JWKS key is skipped");
        }
        verifier.replace_keys(keys);
    } else {
        verifier.replace_revoked_jtis(revoked_jtis(config, Some(bytes))?);
    }
    Ok(())
}

impl Drop for Reloader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.lock().expect("reloader lock").take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_files_are_one_jti_a_line() {
        assert_eq!(
            parse_revoked(b"# revoked\n a \n\nb\r\n#c\n").unwrap(),
            ["a", "b"]
        );
        assert!(parse_revoked(&[0xff]).is_err());
    }

    #[test]
    fn bad_files_refuse_the_start_naming_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_tests(dir.path());
        assert!(verifier(&config).unwrap().is_none());
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, br#"{"keys": []}"#).unwrap();
        config.sync_token_jwks_path = Some(jwks.clone());
        let error = verifier(&config).unwrap_err();
        assert!(
            error.starts_with("invalid RUNTIME_SYNC_TOKEN_JWKS_PATH=")
                && error.contains("no usable key"),
            "{error}"
        );
        config.sync_token_jwks_path = Some(dir.path().join("missing.json"));
        let error = verifier(&config).unwrap_err();
        assert!(error.contains("RUNTIME_SYNC_TOKEN_JWKS_PATH"), "{error}");
        config.sync_token_jwks_path = None;
        config.sync_token_previous_signing_key = Some("old".into());
        let error = verifier(&config).unwrap_err();
        assert!(
            error.contains("RUNTIME_SYNC_TOKEN_SIGNING_KEY_PREVIOUS"),
            "{error}"
        );
        config.sync_token_signing_key = Some("new".into());
        config.sync_revoked_jtis_path = Some(dir.path().join("missing"));
        let error = verifier(&config).unwrap_err();
        assert!(error.contains("RUNTIME_SYNC_REVOKED_JTIS_PATH"), "{error}");
    }
}
