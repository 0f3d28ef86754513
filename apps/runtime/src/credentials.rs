//! Named write credentials: who may call which internal route.
//!
//! `RUNTIME_CREDENTIALS_PATH` names a JSON file
//!
//! ```json
//! {"credentials": [{"name": "ci", "token_sha256": "<64 hex>", "scopes": ["runs:write", "runs:read"]}]}
//! ```
//!
//! holding, for each credential, the lowercase hex sha256 of its bearer
//! token (never the token), and its scopes among `runs:write`, `runs:read`,
//! `workers:write`, `workers:read` and `admin`. `RUNTIME_INTERNAL_AUTH_TOKEN`,
//! when set, is one more credential, named `internal`, with every scope.
//! Names are unique (a file that repeats one, or names one `internal` beside
//! the token, is refused), and so are token hashes.
//!
//! A presented token is hashed and looked up by its hash, so the service
//! never holds a file's tokens and compares only digests.

use crate::reload::Watch;
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// Name of the credential `RUNTIME_INTERNAL_AUTH_TOKEN` stands for.
pub(crate) const INTERNAL_CREDENTIAL: &str = "internal";

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub(crate) enum Scope {
    /// Create runs and append their events.
    #[serde(rename = "runs:write")]
    RunsWrite,
    /// Read runs, their events, receipts, replays and projections.
    #[serde(rename = "runs:read")]
    RunsRead,
    /// Register workers, heartbeat, change their status.
    #[serde(rename = "workers:write")]
    WorkersWrite,
    /// Read workers and their checkpoints.
    #[serde(rename = "workers:read")]
    WorkersRead,
    /// Operations routes: cutover status, fanout hooks, run erasure.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    /// Every scope.
    const ALL: [Scope; 5] = [
        Scope::RunsWrite,
        Scope::RunsRead,
        Scope::WorkersWrite,
        Scope::WorkersRead,
        Scope::Admin,
    ];

    /// The spelling of the file and of error messages.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scope::RunsWrite => "runs:write",
            Scope::RunsRead => "runs:read",
            Scope::WorkersWrite => "workers:write",
            Scope::WorkersRead => "workers:read",
            Scope::Admin => "admin",
        }
    }
}

/// One credential as the file holds it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialEntry {
    name: String,
    token_sha256: String,
    scopes: BTreeSet<Scope>,
}

/// The credentials file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    credentials: Vec<CredentialEntry>,
}

/// A credential a request authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credential {
    /// Its unique name.
    pub(crate) name: String,
    scopes: BTreeSet<Scope>,
}

impl Credential {
    /// Whether it holds `scope`.
    pub(crate) fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// The name of the credential a request authenticated as, put in the
/// request's extensions by the auth middleware and recorded on what the
/// request appends.
#[derive(Debug, Clone)]
pub(crate) struct WrittenBy(pub(crate) String);

impl WrittenBy {
    /// The name, from a handler's optional extension (`None` when the
    /// internal routes are open).
    pub(crate) fn name(extension: Option<axum::Extension<WrittenBy>>) -> Option<String> {
        extension.map(|axum::Extension(WrittenBy(name))| name)
    }
}

/// Every credential, by the hex sha256 of its token.
#[derive(Debug, Clone, Default)]
pub(crate) struct CredentialSet {
    by_hash: HashMap<String, Credential>,
}

impl CredentialSet {
    /// The set of the file `bytes` (when a file is configured) plus the
    /// internal token (when set); the error says what is wrong.
    pub(crate) fn build(file: Option<&[u8]>, internal_token: Option<&str>) -> Result<Self, String> {
        let mut set = CredentialSet::default();
        if let Some(token) = internal_token {
            set.insert(
                token_hash(token),
                Credential {
                    name: INTERNAL_CREDENTIAL.to_owned(),
                    scopes: Scope::ALL.into_iter().collect(),
                },
            )?;
        }
        if let Some(bytes) = file {
            let file: CredentialsFile = serde_json::from_slice(bytes)
                .map_err(|e| format!("not a credentials file: {e}"))?;
            for entry in file.credentials {
                let hash = &entry.token_sha256;
                if hash.len() != 64
                    || !hash
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    return Err(format!(
                        "credential {:?}: token_sha256 must be 64 lowercase hex digits",
                        entry.name
                    ));
                }
                if entry.name.trim().is_empty() || entry.name.len() > 200 {
                    return Err("a credential name must be 1 to 200 characters".to_owned());
                }
                if entry.scopes.is_empty() {
                    return Err(format!("credential {:?} has no scope", entry.name));
                }
                set.insert(
                    entry.token_sha256,
                    Credential {
                        name: entry.name,
                        scopes: entry.scopes,
                    },
                )?;
            }
        }
        Ok(set)
    }

    fn insert(&mut self, hash: String, credential: Credential) -> Result<(), String> {
        if self.by_hash.values().any(|c| c.name == credential.name) {
            return Err(format!("two credentials are named {:?}", credential.name));
        }
        if self.by_hash.contains_key(&hash) {
            return Err(format!(
                "credential {:?} has the token of another credential",
                credential.name
            ));
        }
        self.by_hash.insert(hash, credential);
        Ok(())
    }

    /// The credential whose token is `token`.
    fn find(&self, token: &str) -> Option<&Credential> {
        self.by_hash.get(&token_hash(token))
    }
}

/// Lowercase hex sha256 of a token.
fn token_hash(token: &str) -> String {
    let digest = openagents_canonical::digest_bytes(token.as_bytes());
    digest
        .strip_prefix(openagents_canonical::DIGEST_PREFIX)
        .unwrap_or(&digest)
        .to_owned()
}

/// The credentials in force, replaced whole on a reload.
#[derive(Debug)]
pub(crate) struct Credentials {
    set: RwLock<Arc<CredentialSet>>,
    internal_token: Option<String>,
    path: Option<PathBuf>,
}

impl Credentials {
    /// The credentials read at start.
    pub(crate) fn new(
        set: CredentialSet,
        path: Option<PathBuf>,
        internal_token: Option<String>,
    ) -> Self {
        Credentials {
            set: RwLock::new(Arc::new(set)),
            internal_token,
            path,
        }
    }

    /// The credential whose token is `token`.
    pub(crate) fn find(&self, token: &str) -> Option<Credential> {
        self.set
            .read()
            .expect("credentials lock")
            .find(token)
            .cloned()
    }

    /// The reloaded file, when one is configured.
    pub(crate) fn watch(self: &Arc<Self>) -> Option<Watch> {
        let path = self.path.clone()?;
        let credentials = Arc::clone(self);
        Some(Watch {
            path,
            file: "credentials",
            apply: Box::new(move |bytes| {
                let set = CredentialSet::build(Some(bytes), credentials.internal_token.as_deref())?;
                *credentials.set.write().expect("credentials lock") = Arc::new(set);
                Ok(())
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(entries: &str) -> String {
        format!(r#"{{"credentials": [{entries}]}}"#)
    }

    #[test]
    fn tokens_are_found_by_their_hash() {
        let hash = token_hash("tok");
        let text = file(&format!(
            r#"{{"name": "ci", "token_sha256": "{hash}", "scopes": ["runs:read"]}}"#
        ));
        let set = CredentialSet::build(Some(text.as_bytes()), Some("root")).unwrap();
        let ci = set.find("tok").unwrap();
        assert_eq!(ci.name, "ci");
        assert!(ci.allows(Scope::RunsRead) && !ci.allows(Scope::RunsWrite));
        let internal = set.find("root").unwrap();
        assert_eq!(internal.name, INTERNAL_CREDENTIAL);
        assert!(Scope::ALL.into_iter().all(|scope| internal.allows(scope)));
        assert!(set.find("other").is_none());
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn bad_files_are_refused() {
        let entry = |name: &str, token: &str, scopes: &str| {
            format!(
                r#"{{"name": "{name}", "token_sha256": "{}", "scopes": [{scopes}]}}"#,
                token_hash(token)
            )
        };
        let twice = file(&[entry("a", "1", r#""admin""#), entry("a", "2", r#""admin""#)].join(","));
        let error = CredentialSet::build(Some(twice.as_bytes()), None).unwrap_err();
        assert!(error.contains("two credentials are named \"a\""), "{error}");
        let internal = file(&entry("internal", "1", r#""admin""#));
        assert!(CredentialSet::build(Some(internal.as_bytes()), Some("root")).is_err());
        let same_token =
            file(&[entry("a", "1", r#""admin""#), entry("b", "1", r#""admin""#)].join(","));
        assert!(CredentialSet::build(Some(same_token.as_bytes()), None).is_err());
        let unknown_scope = file(&entry("a", "1", r#""runs:delete""#));
        assert!(CredentialSet::build(Some(unknown_scope.as_bytes()), None).is_err());
        let no_scope = file(&entry("a", "1", ""));
        assert!(CredentialSet::build(Some(no_scope.as_bytes()), None).is_err());
        let plain = file(r#"{"name": "a", "token_sha256": "tok", "scopes": ["admin"]}"#);
        assert!(CredentialSet::build(Some(plain.as_bytes()), None).is_err());
        assert!(CredentialSet::build(Some(b"{"), None).is_err());
    }
}
