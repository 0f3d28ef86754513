//! Sync token keys and revocations reloaded while the real binary runs,
//! over TCP: JWKS rotation (old and new keys during the overlap, only the
//! new one once the old is removed from the file), HS256 with a current and
//! a previous key, revocation by a file change, a broken file that keeps the
//! previous set, the metrics of it all, and a JWKS (or a credentials file)
//! that refuses the start.

mod support;

#[path = "../../../crates/khala/tests/common/signers.rs"]
mod signers;

use serde_json::{Value, json};
use signers::{Signer, jwks};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::process::Server;
use support::tokens::claims;

const CURRENT: &str = "current-hs256-key";
const PREVIOUS: &str = "previous-hs256-key";

/// Replaces `path` atomically, as an operator's deploy tool would.
fn write_atomically(path: &Path, bytes: &[u8]) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, bytes).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

fn hs256(key: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    server: Server,
    jwks_path: std::path::PathBuf,
    revoked_path: std::path::PathBuf,
    topic: String,
}

fn start(signers: &[&Signer]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("jwks.json");
    let revoked_path = dir.path().join("revoked.txt");
    std::fs::write(&jwks_path, jwks(signers)).unwrap();
    std::fs::write(&revoked_path, b"# revoked sync token ids\n").unwrap();
    let server = Server::start_with(&[
        (
            "RUNTIME_EVENT_LOG_PATH",
            dir.path().join("events.jsonl").display().to_string(),
        ),
        (
            "RUNTIME_CHECKPOINT_PATH",
            dir.path().join("projections.json").display().to_string(),
        ),
        ("RUNTIME_SYNC_TOKEN_SIGNING_KEY", CURRENT.to_owned()),
        (
            "RUNTIME_SYNC_TOKEN_SIGNING_KEY_PREVIOUS",
            PREVIOUS.to_owned(),
        ),
        (
            "RUNTIME_SYNC_TOKEN_JWKS_PATH",
            jwks_path.display().to_string(),
        ),
        (
            "RUNTIME_SYNC_REVOKED_JTIS_PATH",
            revoked_path.display().to_string(),
        ),
    ]);
    let (status, body) = server.call(
        "POST",
        "/internal/v1/runs",
        Some(json!({"owner_user_id": 1})),
    );
    assert_eq!(status, 201, "{body}");
    let topic = format!(
        "/internal/v1/khala/topics/run:{}:events/messages?after_seq=0",
        body["run"]["id"].as_str().unwrap()
    );
    Fixture {
        _dir: dir,
        server,
        jwks_path,
        revoked_path,
        topic,
    }
}

impl Fixture {
    /// The status and reason code of a poll with `token`.
    fn poll(&self, token: &str) -> (u16, Value) {
        let (status, body) = self.server.call_authorized(&self.topic, token);
        (status, body["reason_code"].clone())
    }

    /// Waits (at most 1 s from `since`) until a poll with `token` answers
    /// `want`; panics with what it answered otherwise.
    fn within_a_second(&self, since: Instant, token: &str, want: (u16, Value)) -> Duration {
        loop {
            let found = self.poll(token);
            if found == want {
                return since.elapsed();
            }
            assert!(
                since.elapsed() < Duration::from_secs(1),
                "still {found:?} after 1 s, want {want:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn metric(&self, name: &str) -> String {
        let (_, text) = self.server.raw("/metrics");
        text.lines()
            .filter(|line| line.starts_with(name))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn ok() -> (u16, Value) {
    (200, Value::Null)
}

fn denied(reason: &str) -> (u16, Value) {
    (401, reason.into())
}

#[test]
fn rotation_takes_effect_without_a_restart() {
    let (old, new) = (Signer::ed25519("old"), Signer::es256("new"));
    let rsa = Signer::rs256("rsa");
    let fixture = start(&[&old, &new, &rsa]);
    let user = claims(1, &["runtime.run_events"]);
    let (old_token, new_token) = (old.sign(&user), new.sign(&user));
    for token in [
        &old_token,
        &new_token,
        &rsa.sign(&user),
        &hs256(CURRENT, &user),
        &hs256(PREVIOUS, &user),
    ] {
        assert_eq!(fixture.poll(token), ok());
    }
    assert_eq!(
        fixture.poll(&new.sign_as(jsonwebtoken::Algorithm::ES256, Some("gone"), &user)),
        denied("unknown_key")
    );
    assert_eq!(
        fixture.poll(&new.sign_as(jsonwebtoken::Algorithm::ES256, Some("old"), &user)),
        denied("invalid_token")
    );
    assert!(
        fixture
            .metric("runtime_sync_key_set_version")
            .ends_with(" 1")
    );

    // The old key leaves the file: only the new one works, no restart.
    let removed = Instant::now();
    write_atomically(&fixture.jwks_path, &jwks(&[&new]));
    let took = fixture.within_a_second(removed, &old_token, denied("unknown_key"));
    eprintln!("the rotation took effect after {took:?}");
    assert_eq!(fixture.poll(&new_token), ok());
    assert_eq!(fixture.poll(&hs256(CURRENT, &user)), ok());
    assert!(
        fixture
            .metric("runtime_sync_key_set_version")
            .ends_with(" 2")
    );

    // A file that does not parse keeps the set in force.
    write_atomically(&fixture.jwks_path, b"{\"keys\": [");
    let deadline = Instant::now() + Duration::from_secs(1);
    while !fixture
        .metric("runtime_file_reloads_total")
        .contains("outcome=\"failed\"")
    {
        assert!(
            Instant::now() < deadline,
            "the failed reload was not counted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(fixture.poll(&new_token), ok());
    assert_eq!(fixture.poll(&old_token), denied("unknown_key"));
    let reloads = fixture.metric("runtime_file_reloads_total");
    assert!(
        reloads.contains("file=\"jwks\",outcome=\"ok\"} 1")
            && reloads.contains("file=\"jwks\",outcome=\"failed\"} 1"),
        "{reloads}"
    );

    // The old key comes back: it works again.
    let restored = Instant::now();
    write_atomically(&fixture.jwks_path, &jwks(&[&old, &new]));
    fixture.within_a_second(restored, &old_token, ok());
}

#[test]
fn revocation_takes_effect_without_a_restart() {
    let key = Signer::ed25519("k");
    let fixture = start(&[&key]);
    let mut revocable = claims(1, &["runtime.run_events"]);
    revocable["jti"] = "token-7".into();
    let (token, hs_token) = (key.sign(&revocable), hs256(CURRENT, &revocable));
    assert_eq!(fixture.poll(&token), ok());
    let revoked = Instant::now();
    write_atomically(&fixture.revoked_path, b"# revoked\ntoken-7\n");
    // A SIGHUP reads the file at once (and does not stop the service).
    fixture.server.signal("-HUP");
    let took = fixture.within_a_second(revoked, &token, denied("token_revoked"));
    eprintln!("the revocation took effect after {took:?}");
    assert_eq!(fixture.poll(&hs_token), denied("token_revoked"));
    let mut other = revocable.clone();
    other["jti"] = "token-8".into();
    assert_eq!(fixture.poll(&key.sign(&other)), ok());
    assert!(
        fixture
            .metric("runtime_file_reloads_total")
            .contains("file=\"revoked_jtis\",outcome=\"ok\"} 1")
    );
}

#[test]
fn a_jwks_without_a_usable_key_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(
        &jwks_path,
        br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}"#,
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_openagents-runtime-service"))
        .env("RUNTIME_BIND_ADDR", "127.0.0.1:0")
        .env("RUNTIME_EVENT_LOG_PATH", dir.path().join("events.jsonl"))
        .env(
            "RUNTIME_CHECKPOINT_PATH",
            dir.path().join("projections.json"),
        )
        .env("RUNTIME_SYNC_TOKEN_JWKS_PATH", &jwks_path)
        .env("RUST_LOG", "off")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|line| !line.is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("RUNTIME_SYNC_TOKEN_JWKS_PATH") && lines[0].contains("no usable key"),
        "{stderr}"
    );
}

#[test]
fn a_credentials_file_with_a_repeated_name_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credentials.json");
    let entry = |token: &str| {
        let hash = openagents_canonical::digest_bytes(token.as_bytes());
        json!({"name": "ci", "token_sha256": &hash["sha256:".len()..], "scopes": ["admin"]})
    };
    let credentials = json!({"credentials": [entry("a"), entry("b")]});
    std::fs::write(&file, credentials.to_string()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_openagents-runtime-service"))
        .env("RUNTIME_BIND_ADDR", "127.0.0.1:0")
        .env("RUNTIME_EVENT_LOG_PATH", dir.path().join("events.jsonl"))
        .env(
            "RUNTIME_CHECKPOINT_PATH",
            dir.path().join("projections.json"),
        )
        .env("RUNTIME_CREDENTIALS_PATH", &file)
        .env("RUST_LOG", "off")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|line| !line.is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("RUNTIME_CREDENTIALS_PATH") && lines[0].contains("two credentials"),
        "{stderr}"
    );
}
