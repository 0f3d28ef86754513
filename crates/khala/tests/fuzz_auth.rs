//! Property-based fuzzing of the sync-token path: whatever arrives as the
//! `Authorization` header, [`SyncTokenVerifier::verify_header_bytes`] answers
//! without a panic, and it accepts only what the contract allows.
//!
//! Inputs: arbitrary bytes and strings, `Bearer` followed by arbitrary bytes,
//! tokens around and far beyond the length limit, JWT-shaped tokens whose
//! three segments are random (random bytes, or base64url JSON with a random
//! `alg` and random claims), and tokens correctly signed with the service's
//! key whose every claim has a random type and value.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header, encode};
use openagents_khala::auth::{
    CLOCK_LEEWAY_SECS, MAX_TOKEN_BYTES, SyncTokenConfig, SyncTokenVerifier,
};
use openagents_khala::denial::AuthDenial;
use openagents_khala::keys::KeySet;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::collections::HashSet;

const KEY: &[u8] = b"fuzz-signing-key";
const ISSUER: &str = "https://openagents.com";
const AUDIENCE: &str = "openagents-sync";
const REVOKED_JTI: &str = "revoked";
const NOW: u64 = 1_750_000_000;

/// The claims the verifier reads; the signed-token fuzzing draws each.
const CLAIMS: [&str; 9] = [
    "iss",
    "aud",
    "exp",
    "nbf",
    "jti",
    "oa_user_id",
    "oa_org_id",
    "oa_device_id",
    "oa_sync_scopes",
];

fn verifier() -> SyncTokenVerifier {
    SyncTokenVerifier::new(SyncTokenConfig {
        keys: KeySet::new(&[KEY], None).unwrap(),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        revoked_jtis: HashSet::from([REVOKED_JTI.to_owned()]),
    })
    .expect("a complete configuration")
}

/// Verifies `header` at `now`; the call itself is what must not panic.
fn verify(header: &[u8], now: u64) -> Result<openagents_khala::acl::Principal, AuthDenial> {
    verifier().verify_header_bytes(Some(header), now)
}

/// A JSON value of bounded size and depth, biased towards the shapes claims
/// take (numbers around "now", short strings).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (NOW - 100..NOW + 100).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        Just(Value::from(ISSUER)),
        Just(Value::from(AUDIENCE)),
        Just(Value::from(REVOKED_JTI)),
        Just(Value::from("runtime.run_events")),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A value a well-formed token could carry for the claim `name`.
fn plausible(name: &'static str) -> BoxedStrategy<Value> {
    let near_now = (NOW - 100..NOW + 100).prop_map(Value::from).boxed();
    match name {
        "iss" => Just(json!(ISSUER)).boxed(),
        "aud" => prop_oneof![Just(json!(AUDIENCE)), Just(json!(["other", AUDIENCE]))].boxed(),
        "exp" | "nbf" => near_now,
        "jti" => prop_oneof![Just(json!(REVOKED_JTI)), Just(json!("jti-1"))].boxed(),
        "oa_user_id" => prop_oneof![any::<u64>().prop_map(Value::from), Just(json!("42"))].boxed(),
        "oa_sync_scopes" => Just(json!(["runtime.run_events"])).boxed(),
        _ => "[a-z0-9-]{0,8}".prop_map(Value::from).boxed(),
    }
}

/// A claims object: each claim the verifier reads absent, plausible or
/// random, plus random other claims.
fn claims() -> impl Strategy<Value = Map<String, Value>> {
    let known = CLAIMS.map(|name| {
        prop_oneof![
            1 => Just(None),
            3 => plausible(name).prop_map(Some),
            1 => json_value().prop_map(Some),
        ]
        .prop_map(move |value| (name, value))
    });
    (
        known,
        prop::collection::btree_map("[a-z_]{1,8}", json_value(), 0..3),
    )
        .prop_map(|(known, extra)| {
            let mut claims: Map<String, Value> = extra.into_iter().collect();
            for (name, value) in known {
                if let Some(value) = value {
                    claims.insert(name.to_owned(), value);
                }
            }
            claims
        })
}

fn segment(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("JSON values serialize"))
}

/// The `Bearer` header for `token`.
fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_header_bytes_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..512), now in any::<u64>()) {
        prop_assert!(verify(&bytes, now).is_err());
    }

    #[test]
    fn bearer_with_arbitrary_bytes_is_refused(token in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut header = b"Bearer ".to_vec();
        header.extend_from_slice(&token);
        prop_assert!(verify(&header, NOW).is_err());
    }

    #[test]
    fn arbitrary_header_text_is_refused(header in "(?i:bearer)?[ \\t]{0,3}\\PC{0,300}", now in any::<u64>()) {
        prop_assert!(verify(header.as_bytes(), now).is_err());
    }

    #[test]
    fn tokens_around_the_length_limit_are_refused(
        extra in 0usize..64,
        over in any::<bool>(),
        byte in prop::sample::select(b"abcXYZ012-_.".to_vec()),
    ) {
        let len = if over { MAX_TOKEN_BYTES + 1 + extra } else { MAX_TOKEN_BYTES - extra };
        let token = String::from_utf8(vec![byte; len]).unwrap();
        let denial = verify(&bearer(&token), NOW).unwrap_err();
        prop_assert!(matches!(denial, AuthDenial::InvalidToken(_)), "{denial:?}");
    }

    #[test]
    fn jwt_shaped_random_segments_are_refused(
        segments in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..96), 1..5),
    ) {
        let token: Vec<String> = segments.iter().map(|s| URL_SAFE_NO_PAD.encode(s)).collect();
        prop_assert!(verify(&bearer(&token.join(".")), NOW).is_err());
    }

    #[test]
    fn jwt_shaped_json_with_a_wrong_signature_is_refused(
        alg in prop_oneof![
            Just(json!("HS256")), Just(json!("HS512")), Just(json!("none")),
            Just(json!("RS256")), json_value(),
        ],
        header_extra in prop::collection::btree_map("[a-z]{1,4}", json_value(), 0..3),
        claims in claims(),
        signature in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut header: Map<String, Value> = header_extra.into_iter().collect();
        header.insert("alg".into(), alg);
        let token = format!(
            "{}.{}.{}",
            segment(&Value::Object(header)),
            segment(&Value::Object(claims)),
            URL_SAFE_NO_PAD.encode(signature),
        );
        prop_assert!(verify(&bearer(&token), NOW).is_err());
    }

    #[test]
    fn signed_tokens_with_random_claims_are_accepted_only_when_valid(
        claims in claims(),
        now in prop_oneof![Just(NOW), any::<u64>()],
    ) {
        let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(KEY))
            .expect("claims serialize");
        if verify(&bearer(&token), now).is_ok() {
            prop_assert_eq!(claims.get("iss"), Some(&json!(ISSUER)));
            let aud = &claims["aud"];
            prop_assert!(aud == AUDIENCE || aud.as_array().is_some_and(|a| a.contains(&json!(AUDIENCE))));
            let exp = claims["exp"].as_i64().expect("exp is an integer");
            prop_assert!(i128::from(now) < i128::from(exp) + i128::from(CLOCK_LEEWAY_SECS));
            prop_assert_ne!(claims.get("jti"), Some(&json!(REVOKED_JTI)));
        }
    }
}
