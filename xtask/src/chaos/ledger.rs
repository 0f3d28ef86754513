//! The ledger: every write the service acknowledged (answered 2xx), with what
//! the answer said, kept across all cycles so each verification checks the
//! whole history and not only the last cycle.

use serde_json::Value;
use std::collections::BTreeMap;

/// One acknowledged write, as its answer described it.
#[derive(Debug, Clone)]
pub(crate) enum Ack {
    /// A run event. `event` holds the fields the answer showed: the full
    /// event `{seq, event_type, payload, idempotency_key, recorded_at}` for an
    /// append, only `{seq, event_type, payload}` of `run.started` for a
    /// creation (whose answer carries the run, not the event).
    Event {
        /// The run.
        run_id: String,
        /// The event's acknowledged fields.
        event: Value,
    },
    /// A worker write: the worker right after it.
    Worker {
        /// The worker.
        worker_id: String,
        /// Its `latest_seq` in the answer.
        latest_seq: u64,
        /// Its status in the answer.
        status: String,
    },
}

/// What was acknowledged about one run.
#[derive(Debug, Default)]
pub(crate) struct RunLedger {
    /// Acknowledged events by seq.
    pub(crate) events: BTreeMap<u64, Value>,
    /// The terminal status of an acknowledged `run.finished`.
    pub(crate) finished: Option<String>,
}

/// What was acknowledged about one worker: its newest acknowledged state.
#[derive(Debug)]
pub(crate) struct WorkerLedger {
    /// The highest acknowledged `latest_seq`.
    pub(crate) latest_seq: u64,
    /// The status the answer with that seq showed.
    pub(crate) status: String,
}

/// Every acknowledged write so far.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Runs by id.
    pub(crate) runs: BTreeMap<String, RunLedger>,
    /// Workers by id.
    pub(crate) workers: BTreeMap<String, WorkerLedger>,
    /// Acknowledged writes in all.
    pub(crate) acked: u64,
}

impl Ledger {
    /// Adds an acknowledgement. Two acknowledgements that contradict each
    /// other (two contents for one seq, two terminal statuses, two statuses
    /// for one worker seq) are a service bug and come back as an error.
    pub(crate) fn record(&mut self, ack: Ack) -> Result<(), String> {
        self.acked += 1;
        match ack {
            Ack::Event { run_id, event } => self.record_event(run_id, event),
            Ack::Worker {
                worker_id,
                latest_seq,
                status,
            } => self.record_worker(worker_id, latest_seq, status),
        }
    }

    fn record_event(&mut self, run_id: String, event: Value) -> Result<(), String> {
        let seq = event["seq"]
            .as_u64()
            .ok_or_else(|| format!("run {run_id}: acknowledged event without a seq: {event}"))?;
        let run = self.runs.entry(run_id.clone()).or_default();
        if let Some(status) = terminal_status(&event) {
            if let Some(earlier) = run.finished.as_ref().filter(|earlier| **earlier != status) {
                return Err(format!(
                    "run {run_id}: acknowledged as finished both {earlier} and {status}"
                ));
            }
            run.finished = Some(status);
        }
        match run.events.get(&seq) {
            Some(earlier) if !same_fields(earlier, &event) && !same_fields(&event, earlier) => {
                Err(format!(
                    "run {run_id}: seq {seq} acknowledged twice with different content: {earlier} and {event}"
                ))
            }
            Some(earlier) if field_count(earlier) >= field_count(&event) => Ok(()),
            _ => {
                run.events.insert(seq, event);
                Ok(())
            }
        }
    }

    fn record_worker(
        &mut self,
        worker_id: String,
        latest_seq: u64,
        status: String,
    ) -> Result<(), String> {
        let entry = self.workers.entry(worker_id.clone());
        let worker = entry.or_insert(WorkerLedger {
            latest_seq: 0,
            status: String::new(),
        });
        if latest_seq == worker.latest_seq && status != worker.status {
            return Err(format!(
                "worker {worker_id}: latest_seq {latest_seq} acknowledged with status {} and {status}",
                worker.status
            ));
        }
        if latest_seq > worker.latest_seq {
            worker.latest_seq = latest_seq;
            worker.status = status;
        }
        Ok(())
    }
}

/// The terminal status a `run.finished` event carries (`cancelled` spelled
/// `canceled`), or `None` for any other event.
pub(crate) fn terminal_status(event: &Value) -> Option<String> {
    if event["event_type"] != "run.finished" {
        return None;
    }
    let status = event["payload"]["status"].as_str()?;
    Some(
        if status == "cancelled" {
            "canceled"
        } else {
            status
        }
        .to_owned(),
    )
}

/// Whether every field of `acked` has the same value in `observed`.
pub(crate) fn same_fields(acked: &Value, observed: &Value) -> bool {
    acked.as_object().is_some_and(|fields| {
        fields
            .iter()
            .all(|(key, value)| observed.get(key) == Some(value))
    })
}

fn field_count(event: &Value) -> usize {
    event.as_object().map_or(0, serde_json::Map::len)
}
