//! Sync tokens for the Khala tests, signed with the key the test services
//! are configured with.

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};

/// The HS256 key of `RUNTIME_SYNC_TOKEN_SIGNING_KEY` in the tests.
pub const KEY: &str = "test-signing-key";

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn token(claims: Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(KEY.as_bytes()),
    )
    .unwrap()
}

pub fn claims(user: u64, scopes: &[&str]) -> Value {
    json!({"iss": "https://openagents.com", "aud": "openagents-sync", "exp": now() + 600, "oa_user_id": user, "oa_sync_scopes": scopes})
}

pub fn user_token(user: u64) -> String {
    token(claims(
        user,
        &["runtime.run_events", "runtime.codex_worker_events"],
    ))
}
