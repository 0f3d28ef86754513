//! Importing a run recorded elsewhere: kept exactly (ids, times, keys), and
//! refused whole when it breaks the sequence rule or the state machine.

use openagents_authority::{DecisionError, ImportRun, decide_import};
use openagents_run_state::RunEvent;
use openagents_runtime_service::authority::AuthorityError;
use openagents_runtime_service::config::Config;
use openagents_runtime_service::core::Core;
use serde_json::json;

fn event(seq: u64, event_type: &str, payload: serde_json::Value) -> RunEvent {
    RunEvent {
        seq,
        event_type: event_type.into(),
        payload,
        idempotency_key: (seq == 2).then(|| "k".to_owned()),
        recorded_at: format!("2026-01-01T00:00:0{seq}.000000Z"),
    }
}

fn import(events: Vec<RunEvent>) -> ImportRun {
    ImportRun {
        id: uuid::Uuid::now_v7(),
        created_at: "2026-01-01T00:00:00.000000Z".into(),
        metadata: json!({"policy_bundle_id": "p"}),
        owner: None,
        worker_id: None,
        events,
    }
}

#[tokio::test]
async fn an_import_is_kept_exactly_and_a_bad_one_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (core, _) = Core::open(&Config::for_tests(dir.path())).unwrap();
    let good = import(vec![
        event(1, "run.started", json!({"source": "legacy"})),
        event(2, "note", json!({"a": 1})),
        event(3, "run.finished", json!({"status": "succeeded"})),
    ]);
    let id = good.id;
    let head = core
        .authority
        .execute(move |txn| decide_import(txn, good.clone()))
        .await
        .unwrap();
    assert_eq!(
        (head.created_at.as_ref(), head.updated_at.as_str()),
        ("2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:03.000000Z")
    );
    let events = core.authority.run_events(id, 0, 10).unwrap();
    assert_eq!(events[1].event, event(2, "note", json!({"a": 1})));
    assert_eq!(events[1].written_by, None);

    let bad_cases = [
        vec![event(1, "note", json!({}))],
        vec![
            event(1, "run.started", json!({})),
            event(3, "note", json!({})),
        ],
        vec![
            event(1, "run.started", json!({})),
            event(2, "run.started", json!({})),
        ],
        vec![
            event(1, "run.started", json!({})),
            event(2, "run.finished", json!({})),
        ],
    ];
    let records_before = core.authority.log().index().record_count();
    for events in bad_cases {
        let bad = import(events);
        let refused = core
            .authority
            .execute(move |txn| decide_import(txn, bad))
            .await;
        assert!(
            matches!(
                refused,
                Err(AuthorityError::Decision(
                    DecisionError::InvalidRequest(_) | DecisionError::RunState(_)
                ))
            ),
            "{refused:?}"
        );
    }
    let again = import(vec![event(1, "run.started", json!({}))]);
    let again = ImportRun { id, ..again };
    assert!(
        core.authority
            .execute(move |txn| decide_import(txn, again))
            .await
            .is_err()
    );
    assert_eq!(core.authority.log().index().record_count(), records_before);
}
