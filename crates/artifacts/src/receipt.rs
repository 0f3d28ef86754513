//! The receipt `openagents.receipt.v1`: what a run did, committed to by one
//! hash over its whole event list.
//!
//! Decisions the contract leaves open (also written in `docs/ARTIFACTS.md`):
//!
//! - A run with no events has `event_count: 0`, `first_seq: 0`,
//!   `last_seq: 0` (seqs start at 1, so 0 never names a real event) and the
//!   `trajectory_hash` of the empty list `[]`.
//! - A `tool.call.completed` or `verification.completed` payload is copied
//!   field by field as it is, whatever its JSON type: `tool`, `latency_ms`,
//!   `side_effects`, `command`, `exit_code`, `cwd` and `duration_ms` are the
//!   payload's values, or `null` when the payload lacks them (or is not an
//!   object). The receipt reports what the log holds; it does not coerce.
//! - `params_hash` / `output_hash` are the digest of `payload.params` /
//!   `payload.output` when the field is present, even when its value is
//!   `null`, and `null` when it is absent, so a receipt tells "no params
//!   recorded" apart from "params recorded as null".
//!
//! - `canonical_json_sha256` is the lowercase hex sha256 (64 digits, no
//!   `sha256:` prefix) of the canonical JSON of the receipt object without
//!   its `canonical_json_sha256` and `signature` fields
//!   ([`canonical_receipt_digest`]). A signature signs exactly these 32
//!   bytes ([`crate::ReceiptSignature`]).
//!
//! Bytes: [`Receipt::to_json_bytes`] serializes the fields in the contract's
//! order with no whitespace, so the same events (and the same signing key)
//! always give the same bytes.

use crate::error::BuildError;
use crate::events::{TOOL_CALL_COMPLETED, VERIFICATION_COMPLETED, ordered};
use crate::header::RunHeader;
use crate::signature::{ReceiptSignature, ReceiptSigner};
use openagents_canonical::{DigestWriter, digest, write_canonical};
use openagents_run_state::RunEvent;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::io::Write;

/// Value of the receipt's `schema` field.
pub const RECEIPT_SCHEMA: &str = "openagents.receipt.v1";

/// A run's receipt, fields in wire order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// Always [`RECEIPT_SCHEMA`].
    pub schema: String,
    /// The run id.
    pub session_id: String,
    /// `sha256:<hex>` of the canonical JSON of the run's event list.
    pub trajectory_hash: String,
    /// The policy bundle the run declared in its metadata, or `runtime.default`.
    pub policy_bundle_id: String,
    /// When the run was created.
    pub created_at: String,
    /// How many events the run has.
    pub event_count: u64,
    /// Seq of the first event, 0 when there is none.
    pub first_seq: u64,
    /// Seq of the last event, 0 when there is none.
    pub last_seq: u64,
    /// One entry per `tool.call.completed` event, in seq order.
    pub tool_calls: Vec<ToolCall>,
    /// One entry per `verification.completed` event, in seq order.
    pub verification: Vec<Verification>,
    /// Hex sha256 of the canonical JSON of every field above
    /// ([`canonical_receipt_digest`]).
    pub canonical_json_sha256: String,
    /// The service's signature over `canonical_json_sha256`; absent when the
    /// service has no signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<ReceiptSignature>,
}

/// Names of the receipt fields that `canonical_json_sha256` does not cover:
/// itself and the signature over it.
pub const UNHASHED_RECEIPT_FIELDS: [&str; 2] = ["canonical_json_sha256", "signature"];

/// A `tool.call.completed` event as the receipt lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// `payload.tool` as recorded, `null` when absent.
    pub tool: Value,
    /// Digest of `payload.params`, `None` (`null`) when absent.
    pub params_hash: Option<String>,
    /// Digest of `payload.output`, `None` (`null`) when absent.
    pub output_hash: Option<String>,
    /// `payload.latency_ms` as recorded, `null` when absent.
    pub latency_ms: Value,
    /// `payload.side_effects` as recorded, `null` when absent.
    pub side_effects: Value,
}

/// A `verification.completed` event as the receipt lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// `payload.command` as recorded, `null` when absent.
    pub command: Value,
    /// `payload.exit_code` as recorded, `null` when absent.
    pub exit_code: Value,
    /// `payload.cwd` as recorded, `null` when absent.
    pub cwd: Value,
    /// `payload.duration_ms` as recorded, `null` when absent.
    pub duration_ms: Value,
}

impl Receipt {
    /// The receipt as served: compact JSON, fields in wire order.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a receipt holds only strings, numbers and JSON values")
    }

    /// The receipt signed by `signer`: the same fields plus a `signature`
    /// over `canonical_json_sha256`.
    pub fn signed(mut self, signer: &ReceiptSigner) -> Self {
        self.signature = Some(signer.sign(&self.digest()));
        self
    }

    /// The 32 bytes `canonical_json_sha256` spells, recomputed from the
    /// fields.
    fn digest(&self) -> [u8; 32] {
        let value = serde_json::to_value(self).expect("a receipt is a JSON object");
        let Value::Object(object) = value else {
            unreachable!("a receipt serializes as an object")
        };
        canonical_receipt_digest(&object)
    }
}

/// The sha256 of the canonical JSON of a receipt object without its
/// [`UNHASHED_RECEIPT_FIELDS`]. Every other field is covered, including
/// fields this version does not know, so a verifier built from this
/// function checks a newer receipt's extra fields too.
pub fn canonical_receipt_digest(receipt: &Map<String, Value>) -> [u8; 32] {
    let covered: Map<String, Value> = receipt
        .iter()
        .filter(|(name, _)| !UNHASHED_RECEIPT_FIELDS.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let mut hasher = HashWriter(Sha256::new());
    write_canonical(&mut hasher, &Value::Object(covered)).expect("hashing cannot fail");
    hasher.0.finalize().into()
}

/// Feeds written bytes to a sha256.
struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Builds the receipt of `run` from its events, read once in seq order.
///
/// Only the tool-call and verification entries are kept; every other event is
/// hashed and dropped, so `events` may stream a run of any length.
pub fn build_receipt<I, E>(run: &RunHeader, events: I) -> Result<Receipt, BuildError<E>>
where
    I: IntoIterator<Item = Result<RunEvent, E>>,
{
    let mut trajectory = Trajectory::default();
    let mut tool_calls = Vec::new();
    let mut verification = Vec::new();
    for event in ordered(events) {
        let event = event?;
        match event.event_type.as_str() {
            TOOL_CALL_COMPLETED => tool_calls.push(ToolCall::from_payload(&event.payload)),
            VERIFICATION_COMPLETED => verification.push(Verification::from_payload(&event.payload)),
            _ => {}
        }
        trajectory.push(event);
    }
    let mut receipt = Receipt {
        schema: RECEIPT_SCHEMA.to_owned(),
        session_id: run.id.clone(),
        policy_bundle_id: run.policy_bundle_id().to_owned(),
        created_at: run.created_at.clone(),
        event_count: trajectory.count,
        first_seq: trajectory.first_seq.unwrap_or(0),
        last_seq: trajectory.last_seq.unwrap_or(0),
        trajectory_hash: trajectory.finish(),
        tool_calls,
        verification,
        canonical_json_sha256: String::new(),
        signature: None,
    };
    receipt.canonical_json_sha256 = hex::encode(receipt.digest());
    Ok(receipt)
}

impl ToolCall {
    /// Reads the entry from a `tool.call.completed` payload.
    fn from_payload(payload: &Value) -> Self {
        Self {
            tool: field(payload, "tool"),
            params_hash: payload.get("params").map(digest),
            output_hash: payload.get("output").map(digest),
            latency_ms: field(payload, "latency_ms"),
            side_effects: field(payload, "side_effects"),
        }
    }
}

impl Verification {
    /// Reads the entry from a `verification.completed` payload.
    fn from_payload(payload: &Value) -> Self {
        Self {
            command: field(payload, "command"),
            exit_code: field(payload, "exit_code"),
            cwd: field(payload, "cwd"),
            duration_ms: field(payload, "duration_ms"),
        }
    }
}

/// `payload[name]` as recorded, `null` when absent.
fn field(payload: &Value, name: &str) -> Value {
    payload.get(name).cloned().unwrap_or(Value::Null)
}

/// The streaming trajectory hash: the canonical JSON array of the events is
/// written straight into the digest, one event at a time, so the array itself
/// never exists in memory.
struct Trajectory {
    /// The digest of `[` and every event written so far.
    digest: DigestWriter,
    /// How many events were written.
    count: u64,
    /// Seq of the first event written.
    first_seq: Option<u64>,
    /// Seq of the last event written.
    last_seq: Option<u64>,
}

impl Default for Trajectory {
    fn default() -> Self {
        let mut digest = DigestWriter::default();
        digest.write_all(b"[").expect("hashing cannot fail");
        Self {
            digest,
            count: 0,
            first_seq: None,
            last_seq: None,
        }
    }
}

impl Trajectory {
    /// Appends one event to the hashed array.
    fn push(&mut self, event: RunEvent) {
        if self.count > 0 {
            self.digest.write_all(b",").expect("hashing cannot fail");
        }
        self.first_seq.get_or_insert(event.seq);
        self.last_seq = Some(event.seq);
        self.count += 1;
        write_canonical(&mut self.digest, &wire_value(event)).expect("hashing cannot fail");
    }

    /// Closes the array and returns its `sha256:<hex>`.
    fn finish(mut self) -> String {
        self.digest.write_all(b"]").expect("hashing cannot fail");
        self.digest.finish()
    }
}

/// The event as `GET /internal/v1/runs/{id}` shows it, with exactly the five
/// fields the contract hashes. Built by moving the event's fields, so the
/// payload is not copied.
fn wire_value(event: RunEvent) -> Value {
    let mut object = Map::new();
    object.insert("seq".to_owned(), event.seq.into());
    object.insert("event_type".to_owned(), event.event_type.into());
    object.insert("payload".to_owned(), event.payload);
    object.insert(
        "idempotency_key".to_owned(),
        event.idempotency_key.map_or(Value::Null, Value::String),
    );
    object.insert("recorded_at".to_owned(), event.recorded_at.into());
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openagents_run_state::RunStatus;
    use serde_json::json;
    use std::convert::Infallible;

    fn run(metadata: Value) -> RunHeader {
        RunHeader {
            id: "019b8a1c-0000-7000-8000-000000000001".to_owned(),
            created_at: "2026-01-02T03:04:05.000000Z".to_owned(),
            metadata,
            status: RunStatus::Running,
        }
    }

    fn event(seq: u64, event_type: &str, payload: Value) -> RunEvent {
        RunEvent {
            seq,
            event_type: event_type.to_owned(),
            payload,
            idempotency_key: seq.is_multiple_of(2).then(|| format!("key-{seq}")),
            recorded_at: format!("2026-01-02T03:04:{seq:02}.000000Z"),
        }
    }

    fn build(events: &[RunEvent]) -> Receipt {
        build_receipt(
            &run(json!({})),
            events.iter().cloned().map(Ok::<_, Infallible>),
        )
        .unwrap()
    }

    #[test]
    fn trajectory_hash_is_the_digest_of_the_event_list_as_the_api_shows_it() {
        let events = vec![
            event(1, "run.started", json!({"source": "runtime"})),
            event(2, "note", json!({"z": [1, {"b": 2, "a": 1}], "a": "é"})),
        ];
        // `RunEvent`'s serde shape is the API shape; the receipt must hash it.
        let as_api_shows_it = serde_json::to_value(&events).unwrap();
        assert_eq!(build(&events).trajectory_hash, digest(&as_api_shows_it));
    }

    #[test]
    fn counts_and_seqs_describe_the_stream() {
        let events = [
            event(1, "run.started", json!({})),
            event(2, "a", json!({})),
            event(3, "b", json!({})),
        ];
        let receipt = build(&events);
        assert_eq!(
            (receipt.event_count, receipt.first_seq, receipt.last_seq),
            (3, 1, 3)
        );
    }

    #[test]
    fn a_run_without_events_has_zero_seqs_and_the_hash_of_the_empty_list() {
        let receipt = build(&[]);
        assert_eq!(
            (receipt.event_count, receipt.first_seq, receipt.last_seq),
            (0, 0, 0)
        );
        assert_eq!(receipt.trajectory_hash, digest(&json!([])));
        assert!(receipt.tool_calls.is_empty() && receipt.verification.is_empty());
    }

    #[test]
    fn complete_tool_and_verification_payloads_fill_every_field() {
        let events = [
            event(
                1,
                TOOL_CALL_COMPLETED,
                json!({"tool": "fs.read", "params": {"path": "a"}, "output": "x",
                "latency_ms": 12, "side_effects": ["read"]}),
            ),
            event(
                2,
                VERIFICATION_COMPLETED,
                json!({"command": "cargo test", "exit_code": 0, "cwd": "/w",
                "duration_ms": 900}),
            ),
        ];
        let receipt = build(&events);
        assert_eq!(
            receipt.tool_calls,
            [ToolCall {
                tool: json!("fs.read"),
                params_hash: Some(digest(&json!({"path": "a"}))),
                output_hash: Some(digest(&json!("x"))),
                latency_ms: json!(12),
                side_effects: json!(["read"]),
            }]
        );
        assert_eq!(
            receipt.verification,
            [Verification {
                command: json!("cargo test"),
                exit_code: json!(0),
                cwd: json!("/w"),
                duration_ms: json!(900),
            }]
        );
    }

    #[test]
    fn missing_fields_are_null_and_a_present_null_is_hashed() {
        let events = [
            event(1, TOOL_CALL_COMPLETED, json!({"params": null})),
            event(2, TOOL_CALL_COMPLETED, json!("not an object")),
            event(3, VERIFICATION_COMPLETED, json!({"exit_code": "1"})),
        ];
        let receipt = build(&events);
        assert_eq!(
            receipt.tool_calls[0].params_hash,
            Some(digest(&Value::Null))
        );
        assert_eq!(receipt.tool_calls[0].output_hash, None);
        assert_eq!(receipt.tool_calls[1].tool, Value::Null);
        assert_eq!(receipt.verification[0].exit_code, json!("1"));
        assert_eq!(receipt.verification[0].command, Value::Null);
    }

    #[test]
    fn fields_serialize_in_contract_order() {
        let order = [
            "schema",
            "session_id",
            "trajectory_hash",
            "policy_bundle_id",
            "created_at",
            "event_count",
            "first_seq",
            "last_seq",
            "tool_calls",
            "verification",
            "canonical_json_sha256",
            "signature",
        ];
        let signer = ReceiptSigner::from_hex(&"11".repeat(32)).unwrap();
        let text = String::from_utf8(build(&[]).signed(&signer).to_json_bytes()).unwrap();
        let positions: Vec<usize> = order
            .iter()
            .map(|k| text.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(positions.is_sorted(), "{text}");
    }

    #[test]
    fn canonical_json_sha256_covers_every_other_field() {
        let events = [
            event(1, "run.started", json!({})),
            event(2, TOOL_CALL_COMPLETED, json!({"tool": "t", "params": 1})),
        ];
        let receipt = build(&events);
        let mut value = serde_json::to_value(&receipt).unwrap();
        value
            .as_object_mut()
            .unwrap()
            .remove("canonical_json_sha256");
        let canonical = openagents_canonical::to_canonical_string(&value);
        assert_eq!(
            receipt.canonical_json_sha256,
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let mut other = receipt.clone();
        other.created_at.push('Z');
        assert_ne!(other.digest(), receipt.digest());
    }

    #[test]
    fn signing_adds_a_deterministic_signature_and_changes_nothing_else() {
        let events = [event(1, "run.started", json!({}))];
        let signer = ReceiptSigner::from_hex(&"11".repeat(32)).unwrap();
        let unsigned = build(&events);
        let signed = build(&events).signed(&signer);
        assert_eq!(
            signed.to_json_bytes(),
            build(&events).signed(&signer).to_json_bytes()
        );
        let signature = signed.signature.clone().unwrap();
        assert_eq!(signature.signed_sha256, unsigned.canonical_json_sha256);
        assert_eq!(signature.signer_pubkey, signer.public_key_hex());
        signature.verify(&unsigned.digest()).unwrap();
        assert_eq!(
            Receipt {
                signature: None,
                ..signed
            },
            unsigned
        );
        let text = String::from_utf8(unsigned.to_json_bytes()).unwrap();
        assert!(!text.contains("signature"), "{text}");
    }

    #[test]
    fn an_out_of_order_seq_is_refused() {
        let events = [event(2, "a", json!({})), event(2, "b", json!({}))];
        let result = build_receipt(&run(json!({})), events.into_iter().map(Ok::<_, Infallible>));
        assert!(matches!(
            result,
            Err(BuildError::SeqNotIncreasing {
                previous: 2,
                seq: 2
            })
        ));
    }

    #[test]
    fn a_source_error_stops_the_build_without_reading_further() {
        let source = [
            Ok(event(1, "a", json!({}))),
            Err("disk"),
            Ok(event(2, "b", json!({}))),
        ]
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            assert!(index < 2, "the builder read past the error");
            item
        });
        assert!(matches!(
            build_receipt(&run(json!({})), source),
            Err(BuildError::Events("disk"))
        ));
    }
}
