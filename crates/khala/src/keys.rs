//! The keys sync tokens are verified with ([`KeySet`]): HS256 secrets (the
//! current one and, during a rotation, the previous one) and a JWKS of
//! asymmetric keys chosen by the token's `kid`: EdDSA (Ed25519), ES256
//! (P-256) and RS256.
//!
//! The set is built from bytes the caller read; the crate does no I/O, so
//! the service decides when a JWKS file is read again.
//!
//! A JWKS key that cannot be used is skipped, and why is reported
//! ([`KeySet::skipped`]): no `kid`, `use` other than `sig`, a key type or
//! curve other than the three above, or an `alg` that contradicts its type.
//! A JWKS with no usable key at all, or with two keys of one `kid`, is
//! refused.

use crate::denial::{AuthDenial, TokenDefect};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Header};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;

/// Every key a token may be verified with.
#[derive(Clone, Default)]
pub struct KeySet {
    /// HS256 secrets, tried in order: current, then previous.
    hs256: Vec<DecodingKey>,
    /// Asymmetric keys by `kid`.
    by_kid: HashMap<String, AsymmetricKey>,
    /// Why JWKS entries were skipped, one line each.
    skipped: Vec<String>,
}

/// One JWKS key and the one algorithm it verifies.
#[derive(Clone)]
struct AsymmetricKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Never prints key material.
impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&String> = self.by_kid.keys().collect();
        kids.sort();
        f.debug_struct("KeySet")
            .field("hs256_secrets", &self.hs256.len())
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

/// Why a key set cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeySetError {
    /// An empty HS256 secret would accept tokens anyone can sign.
    #[error("an HS256 signing key is empty")]
    EmptySecret,
    /// The JWKS is not JSON of the shape `{"keys": [...]}`.
    #[error("not a JWKS (expected {{\"keys\": [...]}}): {0}")]
    NotJwks(String),
    /// Not one key of the JWKS can verify tokens.
    #[error("the JWKS has no usable key ({})", if .0.is_empty() { "it is empty".to_owned() } else { .0.join("; ") })]
    NoUsableKey(Vec<String>),
    /// Two keys share a `kid`, so a token could not say which it means.
    #[error("the JWKS has two keys with kid {0:?}")]
    DuplicateKid(String),
    /// Neither an HS256 secret nor a JWKS was given.
    #[error("no sync token key is configured")]
    NoKeys,
}

impl KeySet {
    /// A set of the HS256 `secrets` (current first) and, when given, the
    /// keys of the JWKS document `jwks`.
    pub fn new(secrets: &[&[u8]], jwks: Option<&[u8]>) -> Result<Self, KeySetError> {
        if secrets.iter().any(|secret| secret.is_empty()) {
            return Err(KeySetError::EmptySecret);
        }
        let mut set = KeySet {
            hs256: secrets
                .iter()
                .map(|secret| DecodingKey::from_secret(secret))
                .collect(),
            ..KeySet::default()
        };
        if let Some(jwks) = jwks {
            set.add_jwks(jwks)?;
        }
        if set.hs256.is_empty() && set.by_kid.is_empty() {
            return Err(KeySetError::NoKeys);
        }
        Ok(set)
    }

    /// The same set with the JWKS keys replaced by those of `jwks` (HS256
    /// secrets kept): what a reload of the JWKS file builds.
    pub fn with_jwks(&self, jwks: &[u8]) -> Result<Self, KeySetError> {
        let mut set = KeySet {
            hs256: self.hs256.clone(),
            ..KeySet::default()
        };
        set.add_jwks(jwks)?;
        Ok(set)
    }

    /// The `kid`s of the JWKS keys, sorted.
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.by_kid.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }

    /// Why JWKS entries were skipped, one line each.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    fn add_jwks(&mut self, bytes: &[u8]) -> Result<(), KeySetError> {
        let document: Value =
            serde_json::from_slice(bytes).map_err(|e| KeySetError::NotJwks(e.to_string()))?;
        let keys = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| KeySetError::NotJwks("no \"keys\" array".to_owned()))?;
        for (index, entry) in keys.iter().enumerate() {
            match usable_key(entry) {
                Ok((kid, key)) => {
                    if self.by_kid.insert(kid.clone(), key).is_some() {
                        return Err(KeySetError::DuplicateKid(kid));
                    }
                }
                Err(why) => self.skipped.push(format!("key {index}: {why}")),
            }
        }
        if self.by_kid.is_empty() {
            return Err(KeySetError::NoUsableKey(std::mem::take(&mut self.skipped)));
        }
        Ok(())
    }

    /// The algorithm and the keys a token with `header` may be verified
    /// with. HS256 tokens try every secret; the asymmetric algorithms name
    /// their key by `kid`, which must exist (`unknown_key`) and be of the
    /// token's algorithm (`invalid_token`).
    pub(crate) fn candidates(
        &self,
        header: &Header,
    ) -> Result<(Algorithm, Vec<&DecodingKey>), AuthDenial> {
        let unsupported = AuthDenial::InvalidToken(TokenDefect::UnsupportedAlgorithm);
        match header.alg {
            Algorithm::HS256 if !self.hs256.is_empty() => {
                Ok((Algorithm::HS256, self.hs256.iter().collect()))
            }
            Algorithm::EdDSA | Algorithm::ES256 | Algorithm::RS256 if !self.by_kid.is_empty() => {
                let key = header
                    .kid
                    .as_ref()
                    .and_then(|kid| self.by_kid.get(kid))
                    .ok_or(AuthDenial::UnknownKey)?;
                if key.algorithm != header.alg {
                    return Err(AuthDenial::InvalidToken(TokenDefect::AlgorithmMismatch));
                }
                Ok((key.algorithm, vec![&key.key]))
            }
            _ => Err(unsupported),
        }
    }
}

/// The `kid` and key of one JWKS entry, or why it cannot be used.
fn usable_key(entry: &Value) -> Result<(String, AsymmetricKey), String> {
    let jwk: Jwk = serde_json::from_value(entry.clone()).map_err(|e| e.to_string())?;
    let kid = jwk
        .common
        .key_id
        .clone()
        .filter(|kid| !kid.is_empty())
        .ok_or("no kid")?;
    if matches!(&jwk.common.public_key_use, Some(usage) if *usage != PublicKeyUse::Signature) {
        return Err(format!("kid {kid:?}: use is not \"sig\""));
    }
    let (algorithm, declared) = match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(params) if params.curve == EllipticCurve::Ed25519 => {
            (Algorithm::EdDSA, KeyAlgorithm::EdDSA)
        }
        AlgorithmParameters::EllipticCurve(params) if params.curve == EllipticCurve::P256 => {
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        AlgorithmParameters::RSA(_) => (Algorithm::RS256, KeyAlgorithm::RS256),
        _ => {
            return Err(format!(
                "kid {kid:?}: only Ed25519 (OKP), P-256 (EC) and RSA keys are supported"
            ));
        }
    };
    if jwk.common.key_algorithm.is_some_and(|alg| alg != declared) {
        return Err(format!("kid {kid:?}: alg does not match the key type"));
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("kid {kid:?}: {e}"))?;
    Ok((kid, AsymmetricKey { algorithm, key }))
}
