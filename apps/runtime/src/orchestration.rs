//! Run operations as the HTTP routes need them: request validation, the
//! authority write, and the read that builds the response.
//!
//! Validation here is about the shape of a request (lengths, object bodies,
//! key trimming); the rules of the run itself live in the state machine and
//! in the authority's decisions.

use crate::authority::{Authority, AuthorityError};
use crate::core::Core;
use crate::types::{AppendEventBody, CreateRunBody, EraseRunBody, EventView, RunView};
use openagents_artifacts::{
    BuildError, Receipt, ReceiptSigner, RunHeader, build_receipt, write_replay,
};
use openagents_authority::{
    AppendEvent, CreateRun, DecisionError, EraseRun, Erasure, RunHead, RunWrite, Trajectory,
    check_reason, decide_append, decide_create, decide_erase,
};
use openagents_run_state::RunEvent;
use openagents_workers::{Owner, WorkerId};
use serde_json::{Map, Value};
use std::io::Write;
use std::sync::Arc;
use uuid::Uuid;

/// Longest event type and idempotency key accepted, in characters.
pub(crate) const MAX_NAME_CHARS: usize = 200;
/// Largest page of `GET /internal/v1/runs/{id}/events`.
pub(crate) const MAX_EVENTS_PAGE: usize = 1000;
/// Page size when the client gives none.
pub(crate) const DEFAULT_EVENTS_PAGE: usize = 100;

/// Creates a run (or replays its creation for a repeated idempotency key).
pub async fn create_run(
    authority: &Authority,
    body: CreateRunBody,
    written_by: Option<String>,
) -> Result<RunWrite, AuthorityError> {
    if let Some(worker_id) = &body.worker_id {
        worker_id.parse::<WorkerId>().map_err(DecisionError::from)?;
    }
    let owner = Owner::optional_from_request(body.owner_user_id, body.owner_guest_scope.as_deref())
        .map_err(DecisionError::from)?;
    let metadata = object_or_empty("metadata", body.metadata)?;
    let idempotency_key = idempotency_key(body.idempotency_key)?;
    let worker_id = body.worker_id;
    // The id is issued on the writer, so ids follow log order.
    authority
        .execute(move |txn| {
            let request = CreateRun {
                id: Uuid::now_v7(),
                worker_id,
                metadata,
                owner,
                idempotency_key,
                written_by,
            };
            decide_create(txn, request)
        })
        .await
}

/// Appends an event to a run.
pub async fn append_event(
    authority: &Authority,
    run_id: Uuid,
    body: AppendEventBody,
    written_by: Option<String>,
) -> Result<RunWrite, AuthorityError> {
    if body.event_type.trim().is_empty() {
        return Err(AuthorityError::invalid("event_type must not be empty"));
    }
    if body.event_type.chars().count() > MAX_NAME_CHARS {
        return Err(AuthorityError::invalid(format!(
            "event_type is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    let request = AppendEvent {
        event_type: body.event_type,
        payload: object_or_empty("payload", body.payload)?,
        idempotency_key: idempotency_key(body.idempotency_key)?,
        expected_previous_seq: body.expected_previous_seq,
        written_by,
    };
    authority
        .execute(move |txn| decide_append(txn, run_id, request))
        .await
}

/// How many times an erasure of a live run is tried again when the run grew
/// between hashing it and the tombstone's decision.
const ERASE_ATTEMPTS: usize = 3;

/// Erases a run: hashes its events as its receipt does (on a blocking
/// thread, the decision must not read the log on the writer), then appends
/// the tombstone if the run still ends where it was hashed. A live run
/// (with `force`) can grow meanwhile; it is hashed again, a few times, then
/// the conflict is answered.
pub(crate) async fn erase_run(
    core: &Arc<Core>,
    run_id: Uuid,
    body: EraseRunBody,
    written_by: Option<String>,
) -> Result<Erasure, AuthorityError> {
    check_reason(&body.reason)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let head = core.authority.run(run_id)?;
        // Refused before the events are read for nothing.
        if !head.is_sealed() && !body.force {
            return Err(DecisionError::RunNotSealed(run_id).into());
        }
        let reader = Arc::clone(core);
        let receipt =
            tokio::task::spawn_blocking(move || unsigned_receipt(&reader.authority, &head))
                .await
                .map_err(|error| AuthorityError::Artifact(error.to_string()))??;
        let request = EraseRun {
            run_id,
            reason: body.reason.clone(),
            force: body.force,
            written_by: written_by.clone(),
            trajectory: Trajectory {
                last_seq: receipt.last_seq,
                event_count: receipt.event_count,
                trajectory_hash: receipt.trajectory_hash,
                receipt_canonical_json_sha256: receipt.canonical_json_sha256,
            },
        };
        let decided = core
            .authority
            .execute(move |txn| decide_erase(txn, request))
            .await;
        match decided {
            Err(AuthorityError::Decision(DecisionError::SequenceConflict { .. }))
                if attempt < ERASE_ATTEMPTS => {}
            other => return other,
        }
    }
}

/// Writes the body of `GET /internal/v1/runs/{id}`, `{"run": {…, "events":
/// […]}}`, for the run as `head` shows it, reading its events page by page so
/// that memory does not depend on the run's length. The bytes are those of
/// serializing the whole view as one `serde_json::Value`: the view's fields
/// are that value's, and the events are written in the place the `events`
/// key takes among them. Blocking (reads the log).
pub(crate) fn write_run(
    authority: &Authority,
    head: &RunHead,
    out: &mut dyn Write,
) -> Result<(), AuthorityError> {
    let Value::Object(mut fields) =
        serde_json::to_value(RunView::of(head)).expect("a run view serializes")
    else {
        unreachable!("a run view is an object")
    };
    fields.insert(EVENTS_FIELD.into(), Value::Array(Vec::new()));
    out.write_all(br#"{"run":{"#)?;
    for (index, (key, value)) in fields.iter().enumerate() {
        if index > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, key).map_err(std::io::Error::from)?;
        out.write_all(b":")?;
        if key == EVENTS_FIELD {
            write_events(authority, head, out)?;
        } else {
            serde_json::to_writer(&mut *out, value).map_err(std::io::Error::from)?;
        }
    }
    out.write_all(b"}}")?;
    Ok(())
}

/// The key of the event list in a run view.
const EVENTS_FIELD: &str = "events";

/// Writes every event of the run up to `head.latest_seq` as a JSON array.
fn write_events(
    authority: &Authority,
    head: &RunHead,
    out: &mut dyn Write,
) -> Result<(), AuthorityError> {
    out.write_all(b"[")?;
    for (index, event) in view_pages(authority, head.id, head.latest_seq).enumerate() {
        if index > 0 {
            out.write_all(b",")?;
        }
        // Through a `Value`, as a whole view is serialized: object keys come
        // out in the same order.
        let event = serde_json::to_value(event?).expect("an event serializes");
        serde_json::to_writer(&mut *out, &event).map_err(std::io::Error::from)?;
    }
    out.write_all(b"]")?;
    Ok(())
}

/// One page of a run's events.
pub(crate) struct EventsPage {
    /// The events, in seq order, with who wrote them.
    pub(crate) events: Vec<EventView>,
    /// The last returned seq, or `after_seq` when none.
    pub(crate) next_cursor: u64,
    /// The run's last seq.
    pub(crate) head_seq: u64,
}

/// Reads a page of a run's events.
pub(crate) fn events_page(
    authority: &Authority,
    run_id: Uuid,
    after_seq: u64,
    limit: Option<usize>,
) -> Result<EventsPage, AuthorityError> {
    let limit = limit.unwrap_or(DEFAULT_EVENTS_PAGE);
    if !(1..=MAX_EVENTS_PAGE).contains(&limit) {
        return Err(AuthorityError::invalid(format!(
            "limit must be between 1 and {MAX_EVENTS_PAGE}"
        )));
    }
    let head = authority.run(run_id)?;
    let available =
        usize::try_from(head.latest_seq.saturating_sub(after_seq)).unwrap_or(usize::MAX);
    let events = authority.run_events(run_id, after_seq, limit.min(available))?;
    let next_cursor = events.last().map_or(after_seq, |view| view.event.seq);
    Ok(EventsPage {
        events,
        next_cursor,
        head_seq: head.latest_seq,
    })
}

/// Trims a key; an empty key means none.
fn idempotency_key(key: Option<String>) -> Result<Option<String>, AuthorityError> {
    let Some(key) = key else { return Ok(None) };
    let trimmed = key.trim();
    if trimmed.chars().count() > MAX_NAME_CHARS {
        return Err(AuthorityError::invalid(format!(
            "idempotency_key is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    Ok((!trimmed.is_empty()).then(|| trimmed.to_owned()))
}

/// Accepts a JSON object or nothing (an empty object).
fn object_or_empty(field: &str, value: Option<Value>) -> Result<Value, AuthorityError> {
    match value {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(object @ Value::Object(_)) => Ok(object),
        Some(_) => Err(AuthorityError::invalid(format!(
            "{field} must be a JSON object"
        ))),
    }
}

/// Events are read from the file in pages of this many while an artifact is
/// built, so memory stays bounded whatever the run's length.
const ARTIFACT_PAGE: usize = 1024;

/// The run as the artifact builders see it.
fn artifact_header(head: &RunHead) -> RunHeader {
    RunHeader {
        id: head.id.to_string(),
        created_at: head.created_at.to_string(),
        metadata: serde_json::from_str(head.metadata.get()).expect("stored metadata is JSON"),
        status: head.status,
    }
}

/// Every event of a run up to `last_seq`, read page by page, as the
/// artifacts read them (without `written_by`).
fn event_pages(
    authority: &Authority,
    run_id: Uuid,
    last_seq: u64,
) -> impl Iterator<Item = Result<RunEvent, AuthorityError>> + '_ {
    view_pages(authority, run_id, last_seq).map(|view| view.map(|view| view.event))
}

/// Every event of a run up to `last_seq` as the run routes show it, read
/// page by page.
fn view_pages(
    authority: &Authority,
    run_id: Uuid,
    last_seq: u64,
) -> impl Iterator<Item = Result<EventView, AuthorityError>> + '_ {
    let mut after = 0u64;
    let mut page = Vec::new().into_iter();
    std::iter::from_fn(move || {
        if let Some(event) = page.next() {
            return Some(Ok(event));
        }
        if after >= last_seq {
            return None;
        }
        let limit = usize::try_from(last_seq - after)
            .unwrap_or(usize::MAX)
            .min(ARTIFACT_PAGE);
        match authority.run_events(run_id, after, limit) {
            Ok(events) => {
                after = events.last().map_or(last_seq, |view| view.event.seq);
                page = events.into_iter();
                page.next().map(Ok)
            }
            Err(error) => {
                after = last_seq;
                Some(Err(error))
            }
        }
    })
}

fn artifact_error(error: BuildError<AuthorityError>) -> AuthorityError {
    match error {
        BuildError::Events(error) => error,
        other => AuthorityError::Artifact(other.to_string()),
    }
}

/// The receipt of the run as `head` shows it, unsigned. Blocking (reads
/// the file).
fn unsigned_receipt(authority: &Authority, head: &RunHead) -> Result<Receipt, AuthorityError> {
    build_receipt(
        &artifact_header(head),
        event_pages(authority, head.id, head.latest_seq),
    )
    .map_err(artifact_error)
}

/// The run's `openagents.receipt.v1` as JSON bytes, signed by `signer`
/// when there is one. Blocking (reads the file).
pub fn receipt(
    authority: &Authority,
    run_id: Uuid,
    signer: Option<&ReceiptSigner>,
) -> Result<Vec<u8>, AuthorityError> {
    let head = authority.run(run_id)?;
    let receipt = unsigned_receipt(authority, &head)?;
    let receipt = match signer {
        Some(signer) => receipt.signed(signer),
        None => receipt,
    };
    Ok(receipt.to_json_bytes())
}

/// Writes the run's `REPLAY.jsonl` to `out` line by line. Blocking (reads
/// the file).
pub fn replay(
    authority: &Authority,
    run_id: Uuid,
    out: &mut dyn Write,
) -> Result<(), AuthorityError> {
    let head = authority.run(run_id)?;
    write_replay(
        out,
        &artifact_header(&head),
        event_pages(authority, run_id, head.latest_seq),
    )
    .map_err(artifact_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::core::Core;
    use serde_json::json;

    fn append(event_type: &str, payload: Value) -> AppendEventBody {
        AppendEventBody {
            event_type: event_type.into(),
            payload: Some(payload),
            idempotency_key: None,
            expected_previous_seq: None,
        }
    }

    /// Creates a run from `body` and returns its id.
    async fn new_run(authority: &Authority, body: CreateRunBody) -> Uuid {
        create_run(authority, body, None).await.unwrap().run.id
    }

    /// Seals the run as succeeded.
    async fn finish(authority: &Authority, run: Uuid) {
        let finished = append("run.finished", json!({"status": "succeeded"}));
        append_event(authority, run, finished, None).await.unwrap();
    }

    /// The streamed body is byte for byte the one serializing the whole view
    /// as a value gives, across more than one page of events.
    #[tokio::test]
    async fn a_streamed_run_is_the_whole_view_serialized_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (core, _) = Core::open(&Config::for_tests(dir.path())).unwrap();
        let body = CreateRunBody {
            worker_id: Some("w-1".into()),
            metadata: Some(json!({"z": 1, "a": {"y": [1.5, "é"], "b": null}})),
            owner_user_id: Some(7),
            owner_guest_scope: None,
            idempotency_key: None,
        };
        let run = new_run(&core.authority, body).await;
        for n in 0..ARTIFACT_PAGE + 3 {
            let payload =
                json!({"n": n, "text": "line\nbreak \"quoted\"", "f": 0.1, "nested": {"k": n % 3}});
            append_event(
                &core.authority,
                run,
                append("tool.call.completed", payload),
                None,
            )
            .await
            .unwrap();
        }
        finish(&core.authority, run).await;

        let head = core.authority.run(run).unwrap();
        let mut streamed = Vec::new();
        write_run(&core.authority, &head, &mut streamed).unwrap();

        let events = core.authority.run_events(run, 0, usize::MAX).unwrap();
        let mut whole = serde_json::to_value(RunView::of(&head)).unwrap();
        whole["events"] = serde_json::to_value(&events).unwrap();
        let expected = serde_json::to_vec(&json!({"run": whole})).unwrap();
        assert_eq!(
            String::from_utf8(streamed).unwrap(),
            String::from_utf8(expected).unwrap()
        );
        core.shutdown();
    }

    /// Erasure drops the run's projections, and a start (from the snapshot
    /// or from the log) does not build them again.
    #[tokio::test]
    async fn an_erased_run_leaves_no_projection_before_or_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::for_tests(dir.path());
        let (core, _) = Core::open(&config).unwrap();
        let core = Arc::new(core);
        let run = new_run(&core.authority, CreateRunBody::default()).await;
        finish(&core.authority, run).await;
        let topic = openagents_authority::StreamId::Run(run).topic();
        assert!(core.projections.run_summary(&run.to_string()).is_some());
        let erase = EraseRunBody {
            reason: "asked".into(),
            force: false,
        };
        let erasure = erase_run(&core, run, erase, Some("ops".into()))
            .await
            .unwrap();
        assert_eq!(erasure.seq, 3);
        let gone = |core: &Core| {
            assert!(core.projections.run_summary(&run.to_string()).is_none());
            assert!(core.projections.checkpoint(&topic).is_none());
            assert!(matches!(
                core.authority.run(run),
                Err(AuthorityError::Decision(DecisionError::RunErased { .. }))
            ));
        };
        gone(&core);
        core.shutdown();
        drop(core);
        let (core, _) = Core::open(&config).unwrap();
        gone(&core);
        core.shutdown();
        drop(core);
        // Without the snapshot the projections are rebuilt from the log.
        std::fs::remove_file(&config.checkpoint_path).unwrap();
        let (core, _) = Core::open(&config).unwrap();
        gone(&core);
        core.shutdown();
    }
}
