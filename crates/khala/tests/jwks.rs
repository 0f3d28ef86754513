//! Asymmetric sync tokens and key rotation, through the verifier: EdDSA,
//! ES256 and RS256 keys chosen by `kid`, HS256 with a current and a
//! previous secret, unknown `kid`s, algorithms that do not match their key,
//! JWKS files that cannot be used, and keys and revocations replaced while
//! the verifier is in use.

mod common;

use common::signers::{Signer, jwks};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use openagents_khala::auth::{SyncTokenConfig, SyncTokenVerifier};
use openagents_khala::denial::{AuthDenial, TokenDefect};
use openagents_khala::keys::{KeySet, KeySetError};
use serde_json::{Value, json};
use std::collections::HashSet;

const NOW: u64 = 1_700_000_000;
const CURRENT: &[u8] = b"current-secret";
const PREVIOUS: &[u8] = b"previous-secret";

fn claims(jti: &str) -> Value {
    json!({"iss": "iss", "aud": "aud", "exp": NOW + 60, "oa_user_id": 7,
           "oa_sync_scopes": ["runtime.run_events"], "jti": jti})
}

fn verifier(keys: KeySet) -> SyncTokenVerifier {
    SyncTokenVerifier::new(SyncTokenConfig {
        keys,
        issuer: "iss".into(),
        audience: "aud".into(),
        revoked_jtis: HashSet::new(),
    })
    .unwrap()
}

fn check(verifier: &SyncTokenVerifier, token: &str) -> Result<(), AuthDenial> {
    verifier
        .verify(Some(&format!("Bearer {token}")), NOW)
        .map(|_| ())
}

fn hs256(secret: &[u8]) -> String {
    encode(
        &Header::default(),
        &claims("h"),
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[test]
fn each_jwks_algorithm_verifies_under_its_kid() {
    let signers = [
        Signer::ed25519("ed"),
        Signer::es256("ec"),
        Signer::rs256("rsa"),
    ];
    let keys = KeySet::new(&[], Some(&jwks(&signers.iter().collect::<Vec<_>>()))).unwrap();
    assert_eq!(keys.kids(), ["ec", "ed", "rsa"]);
    let verifier = verifier(keys);
    for signer in &signers {
        check(&verifier, &signer.sign(&claims("a")))
            .unwrap_or_else(|e| panic!("{}: {e}", signer.kid));
    }
    // HS256 has no secret here: refused as an algorithm no key verifies.
    assert_eq!(
        check(&verifier, &hs256(CURRENT)),
        Err(AuthDenial::InvalidToken(TokenDefect::UnsupportedAlgorithm))
    );
}

#[test]
fn an_unknown_or_missing_kid_is_unknown_key() {
    let ed = Signer::ed25519("ed");
    let verifier = verifier(KeySet::new(&[], Some(&jwks(&[&ed]))).unwrap());
    let other = ed.sign_as(Algorithm::EdDSA, Some("gone"), &claims("a"));
    assert_eq!(check(&verifier, &other), Err(AuthDenial::UnknownKey));
    assert_eq!(AuthDenial::UnknownKey.reason().as_str(), "unknown_key");
    assert_eq!(AuthDenial::UnknownKey.status(), 401);
    let none = ed.sign_as(Algorithm::EdDSA, None, &claims("a"));
    assert_eq!(check(&verifier, &none), Err(AuthDenial::UnknownKey));
}

#[test]
fn an_alg_that_does_not_match_its_key_is_invalid_token() {
    let (ed, ec) = (Signer::ed25519("ed"), Signer::es256("ec"));
    let verifier = verifier(KeySet::new(&[], Some(&jwks(&[&ed, &ec]))).unwrap());
    // An ES256 token that names the Ed25519 key.
    let token = ec.sign_as(Algorithm::ES256, Some("ed"), &claims("a"));
    let denial = check(&verifier, &token).unwrap_err();
    assert_eq!(
        denial,
        AuthDenial::InvalidToken(TokenDefect::AlgorithmMismatch)
    );
    assert_eq!(denial.reason().as_str(), "invalid_token");
    // A token signed by another key under a known kid: bad signature.
    let forged = Signer::es256("ec").sign(&claims("a"));
    assert_eq!(
        check(&verifier, &forged),
        Err(AuthDenial::InvalidToken(TokenDefect::BadSignature))
    );
}

#[test]
fn hs256_accepts_the_current_and_the_previous_secret() {
    let verifier = verifier(KeySet::new(&[CURRENT, PREVIOUS], None).unwrap());
    check(&verifier, &hs256(CURRENT)).unwrap();
    check(&verifier, &hs256(PREVIOUS)).unwrap();
    assert_eq!(
        check(&verifier, &hs256(b"other")),
        Err(AuthDenial::InvalidToken(TokenDefect::BadSignature))
    );
    verifier.replace_keys(KeySet::new(&[CURRENT], None).unwrap());
    check(&verifier, &hs256(CURRENT)).unwrap();
    assert_eq!(
        check(&verifier, &hs256(PREVIOUS)),
        Err(AuthDenial::InvalidToken(TokenDefect::BadSignature))
    );
}

#[test]
fn rotation_and_revocation_take_effect_on_replacement() {
    let (old, new) = (Signer::ed25519("old"), Signer::es256("new"));
    let keys = KeySet::new(&[CURRENT], Some(&jwks(&[&old, &new]))).unwrap();
    let verifier = verifier(keys.clone());
    check(&verifier, &old.sign(&claims("a"))).unwrap();
    check(&verifier, &new.sign(&claims("b"))).unwrap();
    verifier.replace_keys(keys.with_jwks(&jwks(&[&new])).unwrap());
    assert_eq!(
        check(&verifier, &old.sign(&claims("a"))),
        Err(AuthDenial::UnknownKey)
    );
    check(&verifier, &new.sign(&claims("b"))).unwrap();
    check(&verifier, &hs256(CURRENT)).unwrap();
    verifier.replace_revoked_jtis(HashSet::from(["b".to_owned()]));
    assert_eq!(
        check(&verifier, &new.sign(&claims("b"))),
        Err(AuthDenial::TokenRevoked)
    );
}

#[test]
fn unusable_jwks_are_refused_and_unusable_keys_skipped() {
    assert!(matches!(
        KeySet::new(&[], Some(b"not json")),
        Err(KeySetError::NotJwks(_))
    ));
    assert!(matches!(
        KeySet::new(&[], Some(br#"{"keys": "no"}"#)),
        Err(KeySetError::NotJwks(_))
    ));
    let ed = Signer::ed25519("ed");
    let mut no_kid = ed.jwk.clone();
    no_kid.as_object_mut().unwrap().remove("kid");
    let mut enc = Signer::es256("enc").jwk;
    enc["use"] = "enc".into();
    let mut lying = Signer::es256("lying").jwk;
    lying["alg"] = "RS256".into();
    let oct = json!({"kty": "oct", "k": "c2VjcmV0", "kid": "oct"});
    let useless =
        serde_json::to_vec(&json!({"keys": [no_kid, enc, lying, oct, {"kty": "?"}]})).unwrap();
    match KeySet::new(&[CURRENT], Some(&useless)) {
        Err(KeySetError::NoUsableKey(reasons)) => assert_eq!(reasons.len(), 5, "{reasons:?}"),
        other => panic!("{other:?}"),
    }
    let error = KeySet::new(&[], Some(br#"{"keys": []}"#)).unwrap_err();
    assert!(error.to_string().contains("no usable key"), "{error}");
    let mixed = serde_json::to_vec(&json!({"keys": [ed.jwk, oct]})).unwrap();
    let keys = KeySet::new(&[], Some(&mixed)).unwrap();
    assert_eq!((keys.kids(), keys.skipped().len()), (vec!["ed"], 1));
    let twice = jwks(&[&ed, &Signer::ed25519("ed")]);
    assert_eq!(
        KeySet::new(&[], Some(&twice)).unwrap_err(),
        KeySetError::DuplicateKid("ed".into())
    );
    assert_eq!(
        KeySet::new(&[b""], None).unwrap_err(),
        KeySetError::EmptySecret
    );
    assert_eq!(KeySet::new(&[], None).unwrap_err(), KeySetError::NoKeys);
}
