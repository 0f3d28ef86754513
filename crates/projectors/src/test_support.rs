//! Event builders shared by this crate's tests.

use openagents_run_state::RunEvent;
use openagents_workers::{Heartbeat, LifecycleEvent, WorkerEvent};
use serde_json::{Value, json};

/// The `recorded_at` the builders stamp on event `seq`.
pub(crate) fn at(seq: u64) -> String {
    format!("2025-01-01T00:{:02}:{:02}Z", seq / 60, seq % 60)
}

/// A run event of the given type and payload at `seq`.
pub(crate) fn run_event(seq: u64, event_type: &str, payload: Value) -> RunEvent {
    RunEvent {
        seq,
        event_type: event_type.into(),
        payload,
        idempotency_key: None,
        recorded_at: at(seq),
    }
}

/// A plausible run stream of `len` events: started, tool calls, finished.
pub(crate) fn run_stream(len: u64) -> Vec<RunEvent> {
    (1..=len)
        .map(|seq| match seq {
            1 => run_event(1, "run.started", json!({"source": "runtime"})),
            _ if seq == len => run_event(seq, "run.finished", json!({"status": "succeeded"})),
            _ => run_event(seq, "tool.call.completed", json!({"tool": "shell"})),
        })
        .collect()
}

/// A heartbeat lifecycle event at `seq`.
pub(crate) fn heartbeat(seq: u64) -> LifecycleEvent {
    LifecycleEvent {
        seq,
        recorded_at: at(seq),
        event: WorkerEvent::Heartbeat(Heartbeat::default()),
    }
}
