//! The sync token verifier built from the configuration, and the reloads
//! of its JWKS and revoked-`jti` files while the service runs (through
//! [`crate::reload`]): a new JWKS replaces the JWKS keys (HS256 secrets
//! stay), a new revoked-`jti` file replaces the file's part of the
//! revocation list.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::reload::{Watch, read};
use openagents_khala::auth::{SyncTokenConfig, SyncTokenVerifier};
use openagents_khala::keys::{KeySet, KeySetError};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

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

/// The reloaded files of `config` for `verifier`: the JWKS (each reload put
/// in force bumps `runtime_sync_key_set_version`) and the revoked-`jti`
/// file.
pub(crate) fn watches(
    config: &Config,
    verifier: &Arc<SyncTokenVerifier>,
    metrics: &Arc<Metrics>,
) -> Vec<Watch> {
    let mut watches = Vec::new();
    if let Some(path) = &config.sync_token_jwks_path {
        metrics.sync_key_set_version(1);
        let (verifier, metrics) = (Arc::clone(verifier), Arc::clone(metrics));
        let mut version = 1;
        watches.push(Watch {
            path: path.clone(),
            file: "jwks",
            apply: Box::new(move |bytes| {
                let keys = verifier
                    .keys()
                    .with_jwks(bytes)
                    .map_err(|e| e.to_string())?;
                for skipped in keys.skipped() {
                    tracing::warn!(reason = %skipped, "a JWKS key is skipped");
                }
                verifier.replace_keys(keys);
                version += 1;
                metrics.sync_key_set_version(version);
                Ok(())
            }),
        });
    }
    if let Some(path) = &config.sync_revoked_jtis_path {
        let (verifier, config) = (Arc::clone(verifier), config.clone());
        watches.push(Watch {
            path: path.clone(),
            file: "revoked_jtis",
            apply: Box::new(move |bytes| {
                verifier.replace_revoked_jtis(revoked_jtis(&config, Some(bytes))?);
                Ok(())
            }),
        });
    }
    watches
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
