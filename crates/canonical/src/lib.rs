//! Canonical JSON and the `sha256:<hex>` digests built on it.
//!
//! Every hash the runtime publishes (idempotency content hashes, receipt
//! trajectory hashes, tool-call hashes, projection hashes) is a digest of the
//! canonical form defined here, so anyone holding the same JSON values can
//! recompute it:
//!
//! - object keys sorted by byte order at every depth,
//! - no insignificant whitespace,
//! - strings and numbers encoded exactly as `serde_json` encodes them.
//!
//! The key order is produced explicitly rather than relying on
//! `serde_json::Map` being a `BTreeMap`: a dependency that turns on
//! `serde_json/preserve_order` anywhere in a build would otherwise change every
//! hash silently.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::{self, Write};

/// Prefix of every digest string, naming the algorithm.
pub const DIGEST_PREFIX: &str = "sha256:";

/// Returns the canonical JSON text of `value`.
pub fn to_canonical_string(value: &Value) -> String {
    let mut out = Vec::with_capacity(128);
    write_canonical(&mut out, value).expect("writing to a Vec cannot fail");
    String::from_utf8(out).expect("serde_json only writes UTF-8")
}

/// Writes the canonical JSON text of `value` to `out`.
pub fn write_canonical<W: Write + ?Sized>(out: &mut W, value: &Value) -> io::Result<()> {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.write_all(b"{")?;
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.write_all(b",")?;
                }
                serde_json::to_writer(&mut *out, key)?;
                out.write_all(b":")?;
                write_canonical(out, item)?;
            }
            out.write_all(b"}")
        }
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.write_all(b",")?;
                }
                write_canonical(out, item)?;
            }
            out.write_all(b"]")
        }
        scalar => serde_json::to_writer(out, scalar).map_err(io::Error::from),
    }
}

/// Returns `sha256:<hex>` of the canonical JSON of `value`.
pub fn digest(value: &Value) -> String {
    let mut hasher = DigestWriter::default();
    write_canonical(&mut hasher, value).expect("hashing cannot fail");
    hasher.finish()
}

/// Returns `sha256:<hex>` of raw bytes.
pub fn digest_bytes(bytes: &[u8]) -> String {
    format_digest(&Sha256::digest(bytes))
}

/// Formats a finished sha256 as `sha256:<hex>`.
fn format_digest(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(DIGEST_PREFIX.len() + 64);
    text.push_str(DIGEST_PREFIX);
    text.push_str(&hex::encode(bytes));
    text
}

/// A `Write` sink that hashes what is written to it, so large canonical
/// documents can be digested while they are streamed, without a buffer.
#[derive(Default)]
pub struct DigestWriter {
    hasher: Sha256,
}

impl DigestWriter {
    /// Consumes the writer and returns `sha256:<hex>` of everything written.
    pub fn finish(self) -> String {
        format_digest(&self.hasher.finalize())
    }
}

impl Write for DigestWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_by_bytes_at_every_depth() {
        let value = json!({"b": 1, "a": {"z": [ {"y": 1, "x": 2} ], "B": null}, "é": "ü"});
        assert_eq!(
            to_canonical_string(&value),
            r#"{"a":{"B":null,"z":[{"x":2,"y":1}]},"b":1,"é":"ü"}"#
        );
    }

    #[test]
    fn digest_has_prefix_and_matches_known_value() {
        // sha256 of the two bytes `{}`.
        assert_eq!(
            digest(&json!({})),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-zé\"\\\\ ]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-zA-Z_é]{0,6}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn canonical_text_reparses_to_the_same_value(value in arb_json()) {
            let text = to_canonical_string(&value);
            let back: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back, value);
        }

        #[test]
        fn pretty_printing_the_input_does_not_change_the_digest(value in arb_json()) {
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            let reparsed: Value = serde_json::from_str(&pretty).unwrap();
            prop_assert_eq!(digest(&reparsed), digest(&value));
        }
    }
}
