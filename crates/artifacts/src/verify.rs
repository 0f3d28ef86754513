//! The offline receipt check behind `openagents-receipt verify`: everything
//! a receipt claims that can be recomputed without asking the service.
//!
//! Order of the checks (the first failure is the one reported):
//!
//! 1. the receipt is a JSON object whose `schema` is `openagents.receipt.v1`;
//! 2. `canonical_json_sha256` is the digest of the receipt's other fields
//!    ([`canonical_receipt_digest`]);
//! 3. the `signature`, when present, signs exactly that digest and verifies
//!    under its `signer_pubkey`; with an expected public key the signature
//!    must be present and be that key's;
//! 4. with the run's events, every field built from them: `event_count`,
//!    `first_seq`, `last_seq`, `trajectory_hash`, and every `tool_calls` and
//!    `verification` entry, field by field; with the run view
//!    (`GET /internal/v1/runs/{id}`) also `session_id`, `created_at` and
//!    `policy_bundle_id`;
//! 5. with a replay instead, the replay must pass the replay validator, and
//!    the same fields are checked except `trajectory_hash`: a replay does
//!    not hold the events' idempotency keys, which the trajectory hash
//!    covers. `session_id`, `created_at` and `policy_bundle_id` come from its
//!    SessionStart line.
//!
//! Input that cannot be read as its format at all (not JSON, not the shape
//! of a receipt, an event list or a replay line) is [`VerifyError::Unreadable`];
//! a readable input that disagrees is [`VerifyError::Mismatch`], naming the
//! first field that does.

use crate::header::RunHeader;
use crate::receipt::{RECEIPT_SCHEMA, Receipt, build_receipt, canonical_receipt_digest};
use crate::replay::ReplayLine;
use crate::signature::ReceiptSignature;
use crate::validate::{ReplayRule, ValidationError, validate_replay};
use openagents_run_state::{RunEvent, RunStatus};
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;

/// What the receipt is checked against besides itself.
#[derive(Debug, Clone, Copy)]
pub enum Evidence<'a> {
    /// The run's events as JSON: an array of events, an events page
    /// (`{"events": [...], ...}`, which must then hold every event), or the
    /// run view `{"run": {"id", "created_at", "metadata", "events", ...}}`.
    Events(&'a [u8]),
    /// The run's `REPLAY.jsonl`.
    Replay(&'a [u8]),
}

/// What a successful check covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The public key that signed the receipt, `None` for an unsigned one.
    pub signer: Option<String>,
    /// Names of the receipt fields recomputed from the evidence.
    pub recomputed: Vec<&'static str>,
}

/// Why a receipt was not verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// An input is not of its format at all.
    #[error("unreadable {input}: {reason}")]
    Unreadable {
        /// `receipt`, `events` or `replay`.
        input: &'static str,
        /// What could not be read.
        reason: String,
    },
    /// The first field whose value is not the one recomputed.
    #[error("mismatch in {field}: {detail}")]
    Mismatch {
        /// The field, e.g. `canonical_json_sha256` or `tool_calls[1].params_hash`.
        field: String,
        /// What differs.
        detail: String,
    },
}

fn mismatch(field: impl Into<String>, detail: impl Into<String>) -> VerifyError {
    VerifyError::Mismatch {
        field: field.into(),
        detail: detail.into(),
    }
}

fn unreadable(input: &'static str, reason: impl ToString) -> VerifyError {
    VerifyError::Unreadable {
        input,
        reason: reason.to_string(),
    }
}

/// Checks `receipt` (its bytes) on its own, then against `evidence`; with
/// `pubkey` (32 bytes of an x-only key) the receipt must be signed by it.
pub fn verify_receipt(
    receipt: &[u8],
    evidence: Option<Evidence<'_>>,
    pubkey: Option<&[u8; 32]>,
) -> Result<Verified, VerifyError> {
    let value: Value = serde_json::from_slice(receipt).map_err(|e| unreadable("receipt", e))?;
    let Value::Object(object) = &value else {
        return Err(unreadable("receipt", "not a JSON object"));
    };
    if object.get("schema") != Some(&json!(RECEIPT_SCHEMA)) {
        return Err(mismatch("schema", format!("expected {RECEIPT_SCHEMA:?}")));
    }
    let digest = canonical_receipt_digest(object);
    let digest_hex = hex::encode(digest);
    match object.get("canonical_json_sha256") {
        Some(Value::String(claimed)) if *claimed == digest_hex => {}
        Some(claimed) => {
            return Err(mismatch(
                "canonical_json_sha256",
                format!("receipt says {claimed}, its fields hash to {digest_hex:?}"),
            ));
        }
        None => return Err(mismatch("canonical_json_sha256", "absent")),
    }
    let signer = match object.get("signature") {
        None => None,
        Some(signature) => {
            let signature = ReceiptSignature::deserialize(signature)
                .map_err(|e| mismatch("signature", e.to_string()))?;
            signature
                .verify(&digest)
                .map_err(|e| mismatch("signature", e.to_string()))?;
            Some(signature.signer_pubkey)
        }
    };
    if let Some(expected) = pubkey {
        let expected = hex::encode(expected);
        match &signer {
            None => return Err(mismatch("signature", "absent, but a public key was given")),
            Some(found) if *found != expected => {
                return Err(mismatch(
                    "signature.signer_pubkey",
                    format!("signed by {found}, expected {expected}"),
                ));
            }
            Some(_) => {}
        }
    }
    let recomputed = match evidence {
        None => Vec::new(),
        Some(evidence) => {
            let claimed = Receipt::deserialize(&value).map_err(|e| unreadable("receipt", e))?;
            compare(&claimed, evidence)?
        }
    };
    Ok(Verified { signer, recomputed })
}

/// Rebuilds the receipt from `evidence` and compares it with `claimed`.
fn compare(claimed: &Receipt, evidence: Evidence<'_>) -> Result<Vec<&'static str>, VerifyError> {
    let (header, events, trajectory) = match evidence {
        Evidence::Events(bytes) => {
            let (header, events) = read_events(bytes)?;
            (header, events, true)
        }
        Evidence::Replay(bytes) => {
            let (header, events) = read_replay(bytes)?;
            (Some(header), events, false)
        }
    };
    let header = header.unwrap_or_else(|| header_from(claimed));
    let built = build_receipt(&header, events.into_iter().map(Ok::<_, Infallible>))
        .map_err(|e| mismatch("events", e.to_string()))?;
    let mut fields: Vec<(&'static str, Value, Value)> = vec![
        (
            "session_id",
            json!(claimed.session_id),
            json!(built.session_id),
        ),
        (
            "created_at",
            json!(claimed.created_at),
            json!(built.created_at),
        ),
        (
            "policy_bundle_id",
            json!(claimed.policy_bundle_id),
            json!(built.policy_bundle_id),
        ),
        (
            "event_count",
            json!(claimed.event_count),
            json!(built.event_count),
        ),
        (
            "first_seq",
            json!(claimed.first_seq),
            json!(built.first_seq),
        ),
        ("last_seq", json!(claimed.last_seq), json!(built.last_seq)),
    ];
    if trajectory {
        fields.push((
            "trajectory_hash",
            json!(claimed.trajectory_hash),
            json!(built.trajectory_hash),
        ));
    }
    let mut recomputed = Vec::with_capacity(fields.len() + 2);
    for (name, claimed, built) in fields {
        if claimed != built {
            return Err(mismatch(
                name,
                format!("receipt says {claimed}, the events give {built}"),
            ));
        }
        recomputed.push(name);
    }
    compare_entries("tool_calls", &claimed.tool_calls, &built.tool_calls)?;
    compare_entries("verification", &claimed.verification, &built.verification)?;
    recomputed.extend(["tool_calls", "verification"]);
    Ok(recomputed)
}

/// Compares two entry lists, length first, then entry by entry and field by
/// field in wire order.
fn compare_entries<T: serde::Serialize>(
    name: &str,
    claimed: &[T],
    built: &[T],
) -> Result<(), VerifyError> {
    if claimed.len() != built.len() {
        return Err(mismatch(
            name,
            format!(
                "receipt lists {} entries, the events give {}",
                claimed.len(),
                built.len()
            ),
        ));
    }
    for (index, (claimed, built)) in claimed.iter().zip(built).enumerate() {
        let claimed = serde_json::to_value(claimed).expect("entries are JSON");
        let built = serde_json::to_value(built).expect("entries are JSON");
        for (field, built) in built.as_object().into_iter().flatten() {
            let claimed = &claimed[field];
            if claimed != built {
                return Err(mismatch(
                    format!("{name}[{index}].{field}"),
                    format!("receipt says {claimed}, the events give {built}"),
                ));
            }
        }
    }
    Ok(())
}

/// A header that reproduces the receipt's own run fields, for evidence that
/// does not carry them (an event list or page).
fn header_from(receipt: &Receipt) -> RunHeader {
    RunHeader {
        id: receipt.session_id.clone(),
        created_at: receipt.created_at.clone(),
        metadata: json!({"policy_bundle_id": receipt.policy_bundle_id}),
        status: RunStatus::Running,
    }
}

/// One event of the evidence: exactly the hashed fields, each required, plus
/// the one unhashed field the service shows beside them (`written_by`). Unknown fields are
/// refused, so that a changed field name cannot pass for an absent field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EvidenceEvent {
    seq: u64,
    event_type: String,
    payload: Value,
    /// `null` or a string; required (a `Value` field has no default).
    idempotency_key: Value,
    recorded_at: String,
    /// Who appended the event, as the service shows it beside the hashed
    /// fields; read so that it is allowed, never hashed nor checked.
    #[serde(default, rename = "written_by")]
    _written_by: Option<String>,
}

impl EvidenceEvent {
    fn into_event(self) -> Result<RunEvent, VerifyError> {
        let idempotency_key = match self.idempotency_key {
            Value::Null => None,
            Value::String(key) => Some(key),
            other => {
                return Err(unreadable(
                    "events",
                    format!("idempotency_key {other} is neither null nor a string"),
                ));
            }
        };
        Ok(RunEvent {
            seq: self.seq,
            event_type: self.event_type,
            payload: self.payload,
            idempotency_key,
            recorded_at: self.recorded_at,
        })
    }
}

/// The run view's fields the receipt is built from.
#[derive(Deserialize)]
struct RunViewIn {
    id: String,
    created_at: String,
    metadata: Value,
    events: Vec<EvidenceEvent>,
}

/// The three accepted shapes of the events evidence.
#[derive(Deserialize)]
#[serde(untagged)]
enum EventsIn {
    List(Vec<EvidenceEvent>),
    Run { run: RunViewIn },
    Page { events: Vec<EvidenceEvent> },
}

/// Reads the events evidence; the run view also yields a header.
fn read_events(bytes: &[u8]) -> Result<(Option<RunHeader>, Vec<RunEvent>), VerifyError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| unreadable("events", e))?;
    let parsed = EventsIn::deserialize(value).map_err(|_| {
        unreadable(
            "events",
            "expected an array of events, {\"events\": [...]} or {\"run\": {...}}, \
             each event with exactly seq, event_type, payload, idempotency_key, recorded_at",
        )
    })?;
    let (header, events) = match parsed {
        EventsIn::List(events) | EventsIn::Page { events } => (None, events),
        EventsIn::Run { run } => (
            Some(RunHeader {
                id: run.id,
                created_at: run.created_at,
                metadata: run.metadata,
                status: RunStatus::Running,
            }),
            run.events,
        ),
    };
    let events = events
        .into_iter()
        .map(EvidenceEvent::into_event)
        .collect::<Result<_, _>>()?;
    Ok((header, events))
}

/// Reads a replay that passes the validator into a header and its events
/// (without idempotency keys, which a replay does not hold).
fn read_replay(bytes: &[u8]) -> Result<(RunHeader, Vec<RunEvent>), VerifyError> {
    validate_replay(bytes).map_err(|error| match &error {
        ValidationError::Rule {
            rule: ReplayRule::InvalidJson(_) | ReplayRule::InvalidRecord(_) | ReplayRule::MissingNewline,
            ..
        }
        | ValidationError::Read { .. } => unreadable("replay", error),
        ValidationError::Rule { .. } => mismatch("replay", error.to_string()),
    })?;
    let mut header = None;
    let mut events = Vec::new();
    for line in bytes.split(|byte| *byte == b'\n').filter(|l| !l.is_empty()) {
        let line: ReplayLine<'_> =
            serde_json::from_slice(line).map_err(|e| unreadable("replay", e))?;
        match line {
            ReplayLine::SessionStart {
                ts,
                session_id,
                policy_bundle_id,
            } => {
                header = Some(RunHeader {
                    id: session_id.into_owned(),
                    created_at: ts.into_owned(),
                    metadata: json!({"policy_bundle_id": policy_bundle_id}),
                    status: RunStatus::Running,
                });
            }
            ReplayLine::RuntimeEvent {
                ts,
                seq,
                runtime_event_type,
                payload,
                ..
            } => events.push(RunEvent {
                seq,
                event_type: runtime_event_type.into_owned(),
                payload: payload.into_owned(),
                idempotency_key: None,
                recorded_at: ts.into_owned(),
            }),
            ReplayLine::ReplayHeader { .. } | ReplayLine::SessionEnd { .. } => {}
        }
    }
    let header = header.expect("a validated replay has a SessionStart");
    Ok((header, events))
}
