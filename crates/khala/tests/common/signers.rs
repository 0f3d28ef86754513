//! Keys that sign sync tokens in tests, one per JWKS algorithm, with their
//! public JWKs: Ed25519 and P-256 generated afresh, RSA from the test key
//! in `crates/khala/tests/data` (ring cannot generate RSA keys).

#![allow(dead_code)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use std::path::Path;

/// A private key, its algorithm and `kid`, and its public JWK.
pub struct Signer {
    pub kid: String,
    pub algorithm: Algorithm,
    key: EncodingKey,
    pub jwk: Value,
}

impl Signer {
    pub fn ed25519(kid: &str) -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        Signer {
            kid: kid.to_owned(),
            algorithm: Algorithm::EdDSA,
            key: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig"}),
        }
    }

    pub fn es256(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = pair.public_key().as_ref();
        let (x, y) = (&point[1..33], &point[33..65]);
        Signer {
            kid: kid.to_owned(),
            algorithm: Algorithm::ES256,
            key: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(x),
                        "y": URL_SAFE_NO_PAD.encode(y), "kid": kid, "alg": "ES256"}),
        }
    }

    pub fn rs256(kid: &str) -> Self {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/khala/tests/data");
        let der = std::fs::read(data.join("rsa-test-key.der")).unwrap();
        let mut jwk: Value = serde_json::from_slice(
            &std::fs::read(data.join("rsa-test-key.public.jwk.json")).unwrap(),
        )
        .unwrap();
        jwk["kid"] = kid.into();
        Signer {
            kid: kid.to_owned(),
            algorithm: Algorithm::RS256,
            key: EncodingKey::from_rsa_der(&der),
            jwk,
        }
    }

    /// A token of `claims` signed by this key, naming it by `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(self.algorithm, Some(&self.kid), claims)
    }

    /// A token with the header's `alg` and `kid` chosen by the caller.
    pub fn sign_as(&self, algorithm: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(algorithm);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, &self.key).unwrap()
    }
}

/// The JWKS document of `signers`.
pub fn jwks(signers: &[&Signer]) -> Vec<u8> {
    let keys: Vec<&Value> = signers.iter().map(|signer| &signer.jwk).collect();
    serde_json::to_vec(&json!({ "keys": keys })).unwrap()
}
