//! Receipt signatures `openagents.receipt_signature.v1`: BIP-340 Schnorr
//! over secp256k1, signed without auxiliary randomness.
//!
//! What is signed is the receipt's 32-byte `canonical_json_sha256` digest
//! itself, as the BIP-340 message (it is not hashed again). BIP-340's
//! auxiliary random data is 32 zero bytes, so a key signs a given digest
//! with one signature only: the same run and key always give the same
//! receipt bytes. Keys are Nostr-compatible: the public key is the 32-byte
//! x-only key, in hex.
//!
//! Signing uses `k256`'s `SigningKey::sign_prehash_with_aux_rand(digest,
//! &[0; 32])` and verification `VerifyingKey::verify_raw(digest, sig)`; the
//! tests check the first BIP-340 test vector, which uses the same zero
//! auxiliary data.

use k256::schnorr::{Signature, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Value of the signature's `schema` field.
pub const SIGNATURE_SCHEMA: &str = "openagents.receipt_signature.v1";

/// Value of the signature's `scheme` field.
pub const SIGNATURE_SCHEME: &str = "secp256k1_schnorr_no_aux_rand";

/// The auxiliary data of every signature: none, i.e. 32 zero bytes.
const NO_AUX_RAND: [u8; 32] = [0; 32];

/// A receipt's `signature` object, fields in wire order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptSignature {
    /// Always [`SIGNATURE_SCHEMA`].
    pub schema: String,
    /// Always [`SIGNATURE_SCHEME`].
    pub scheme: String,
    /// The signer's x-only public key, 64 lowercase hex digits.
    pub signer_pubkey: String,
    /// The signed digest: the receipt's `canonical_json_sha256`.
    pub signed_sha256: String,
    /// The 64-byte BIP-340 signature, 128 lowercase hex digits.
    pub signature_hex: String,
}

/// Why a signing key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not 64 hex digits.
    #[error("expected 64 hex digits (a 32-byte secret key), found {length} characters")]
    NotHex {
        /// Characters found after trimming whitespace.
        length: usize,
    },
    /// 32 bytes, but not a secret key of secp256k1 (zero or not below the
    /// group order).
    #[error("the 32 bytes are not a valid secp256k1 secret key")]
    OutOfRange,
}

/// Why a signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// `schema` is not [`SIGNATURE_SCHEMA`].
    #[error("signature.schema is {0:?}, expected {SIGNATURE_SCHEMA:?}")]
    Schema(String),
    /// `scheme` is not [`SIGNATURE_SCHEME`].
    #[error("signature.scheme is {0:?}, expected {SIGNATURE_SCHEME:?}")]
    Scheme(String),
    /// `signed_sha256` is not the digest the receipt's fields hash to.
    #[error("signature.signed_sha256 is not the receipt's canonical_json_sha256")]
    SignedDigest,
    /// `signer_pubkey` is not an x-only secp256k1 public key.
    #[error("signature.signer_pubkey is not a 32-byte x-only secp256k1 public key")]
    PublicKey,
    /// `signature_hex` is not 64 bytes in hex.
    #[error("signature.signature_hex is not a 64-byte signature in hex")]
    Encoding,
    /// The signature does not verify under the public key.
    #[error("signature.signature_hex does not verify under signature.signer_pubkey")]
    Invalid,
}

/// The key receipts are signed with. Its `Debug` shows the public key only.
#[derive(Clone)]
pub struct ReceiptSigner {
    key: SigningKey,
}

impl ReceiptSigner {
    /// Reads a secret key written as 64 hex digits; surrounding whitespace
    /// (a trailing newline) is ignored.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| KeyError::NotHex {
            length: text.chars().count(),
        })?;
        let key = SigningKey::from_bytes(&bytes).map_err(|_| KeyError::OutOfRange)?;
        Ok(Self { key })
    }

    /// The x-only public key, 64 lowercase hex digits.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    /// Signs `digest` (BIP-340, zero auxiliary data).
    pub(crate) fn sign(&self, digest: &[u8; 32]) -> ReceiptSignature {
        let signature = self
            .key
            .sign_prehash_with_aux_rand(digest, &NO_AUX_RAND)
            .expect("BIP-340 signing fails only with negligible probability");
        ReceiptSignature {
            schema: SIGNATURE_SCHEMA.to_owned(),
            scheme: SIGNATURE_SCHEME.to_owned(),
            signer_pubkey: self.public_key_hex(),
            signed_sha256: hex::encode(digest),
            signature_hex: hex::encode(signature.to_bytes()),
        }
    }
}

impl fmt::Debug for ReceiptSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiptSigner")
            .field("public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

impl ReceiptSignature {
    /// Checks that this signature is the scheme's, signs exactly `digest`,
    /// and verifies under its own `signer_pubkey`. Whether that key is one
    /// the reader trusts is the reader's question.
    pub fn verify(&self, digest: &[u8; 32]) -> Result<(), SignatureError> {
        if self.schema != SIGNATURE_SCHEMA {
            return Err(SignatureError::Schema(self.schema.clone()));
        }
        if self.scheme != SIGNATURE_SCHEME {
            return Err(SignatureError::Scheme(self.scheme.clone()));
        }
        if self.signed_sha256 != hex::encode(digest) {
            return Err(SignatureError::SignedDigest);
        }
        let key = decode_lower_hex::<32>(&self.signer_pubkey)
            .and_then(|bytes| VerifyingKey::from_bytes(&bytes).ok())
            .ok_or(SignatureError::PublicKey)?;
        let signature = decode_lower_hex::<64>(&self.signature_hex)
            .and_then(|bytes| Signature::try_from(&bytes[..]).ok())
            .ok_or(SignatureError::Encoding)?;
        key.verify_raw(digest, &signature)
            .map_err(|_| SignatureError::Invalid)
    }
}

/// `N` bytes from exactly `2 * N` lowercase hex digits: the only spelling
/// the signer writes, so that a signature has one spelling too.
fn decode_lower_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.bytes().any(|byte| byte.is_ascii_uppercase()) {
        return None;
    }
    let mut bytes = [0u8; N];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex<const N: usize>(text: &str) -> [u8; N] {
        let mut bytes = [0u8; N];
        hex::decode_to_slice(text, &mut bytes).unwrap();
        bytes
    }

    /// BIP-340 test vector 0: secret key 3, aux_rand 0, message 0.
    #[test]
    fn signs_bip340_test_vector_zero() {
        let signer = ReceiptSigner::from_hex(&format!("{:064x}\n", 3)).unwrap();
        assert_eq!(
            signer.public_key_hex(),
            "f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9"
        );
        let signature = signer.sign(&[0; 32]);
        assert_eq!(
            signature.signature_hex,
            "e907831f80848d1069a5371b402410364bdf1c5f8307b0084c55f1ce2dca8215\
             25f66a4a85ea8b71e482a74f382d2ce5ebeee8fdb2172f477df4900d310536c0"
        );
        signature.verify(&[0; 32]).unwrap();
    }

    #[test]
    fn signing_is_deterministic_and_binds_the_digest() {
        let signer = ReceiptSigner::from_hex(&"11".repeat(32)).unwrap();
        let digest = unhex::<32>(&"ab".repeat(32));
        assert_eq!(signer.sign(&digest), signer.sign(&digest));
        let signature = signer.sign(&digest);
        let mut other = digest;
        other[31] ^= 1;
        assert_eq!(signature.verify(&other), Err(SignatureError::SignedDigest));
        let mut forged = signature.clone();
        forged.signed_sha256 = hex::encode(other);
        assert_eq!(forged.verify(&other), Err(SignatureError::Invalid));
        let mut upper = signature.clone();
        upper.signature_hex = upper.signature_hex.to_uppercase();
        assert_eq!(upper.verify(&digest), Err(SignatureError::Encoding));
    }

    #[test]
    fn bad_keys_are_refused() {
        assert_eq!(
            ReceiptSigner::from_hex("abc").unwrap_err(),
            KeyError::NotHex { length: 3 }
        );
        assert_eq!(
            ReceiptSigner::from_hex(&"00".repeat(32)).unwrap_err(),
            KeyError::OutOfRange
        );
        assert_eq!(
            ReceiptSigner::from_hex(&"ff".repeat(32)).unwrap_err(),
            KeyError::OutOfRange
        );
        let signer = ReceiptSigner::from_hex(&"11".repeat(32)).unwrap();
        assert!(!format!("{signer:?}").contains(&"11".repeat(32)));
    }
}
