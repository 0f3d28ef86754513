//! The load of a chaos cycle: one driver per connection, each sending writes
//! back to back until the service is killed under it.
//!
//! A driver owns one worker (heartbeats and status changes) and one run at a
//! time (appends with an idempotency key and `expected_previous_seq`, then a
//! `run.finished`, then a new run), and shares the cycle's shared runs with
//! every other driver (plain appends, and now and then a racing
//! `run.finished`). Every 2xx answer becomes an [`Ack`]; an answer the
//! contract does not allow becomes a problem.
//!
//! The one request in flight when the process dies has an unknown outcome.
//! When it carried an idempotency key the driver keeps it and sends the same
//! bytes again after the restart: the contract says it then either replays
//! the original event or appends it once.

use crate::bench::load::{Call, Connection};
use crate::chaos::ledger::{Ack, terminal_status};
use crate::chaos::rng::Rng;
use crate::chaos::verify::Observed;
use hyper::StatusCode;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

/// The user that owns every chaos worker.
pub(crate) const OWNER_USER_ID: u64 = 7001;

/// One `run.finished` on a shared run in this many shared-run requests.
const SHARED_FINISH_ODDS: u64 = 300;

/// Appends a driver makes to its own run before finishing it (a range).
const OWN_RUN_APPENDS: (u64, u64) = (5, 40);

/// What every driver of one cycle shares.
#[derive(Debug)]
pub(crate) struct CycleLoad {
    /// The cycle's number, written into payloads and keys.
    pub(crate) cycle: usize,
    /// Runs that every driver appends to concurrently.
    pub(crate) shared_runs: Vec<String>,
    /// Most requests one driver sends in one cycle.
    pub(crate) max_requests: u64,
}

/// What a driver's requests produced.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The acknowledged writes.
    pub(crate) acks: Vec<Ack>,
    /// Acknowledgements that were idempotent replays.
    pub(crate) replays: u64,
    /// Answers the contract does not allow.
    pub(crate) problems: Vec<String>,
}

/// The run a driver appends to alone.
#[derive(Debug)]
struct OwnRun {
    id: String,
    latest_seq: u64,
    appends_left: u64,
}

/// One request a driver can make.
#[derive(Debug, Clone)]
enum Op {
    CreateRun,
    AppendOwn,
    FinishOwn,
    AppendShared(String),
    FinishShared(String),
    Heartbeat,
    Status(&'static str),
}

impl Op {
    /// Whether the request carries an idempotency key, so that sending it
    /// again is safe whatever became of the first attempt.
    fn is_idempotent(&self) -> bool {
        matches!(self, Op::CreateRun | Op::AppendOwn | Op::FinishOwn)
    }
}

/// A load driver: its worker, its run, and the request it lost to a kill.
#[derive(Debug)]
pub(crate) struct Driver {
    index: usize,
    rng: Rng,
    worker_id: String,
    worker_status: String,
    own_run: Option<OwnRun>,
    next_key: u64,
    pending: Option<(Op, Call)>,
    sealed: HashSet<String>,
}

impl Driver {
    /// Registers the driver's worker and returns the driver with the
    /// registration's acknowledgement.
    pub(crate) async fn register(
        index: usize,
        rng: Rng,
        connection: &mut Connection,
    ) -> anyhow::Result<(Driver, Ack)> {
        let body = json!({
            "owner_user_id": OWNER_USER_ID,
            "adapter": "chaos",
            "metadata": {"chaos_driver": index},
        });
        let call = Call::post("/internal/v1/workers", body.to_string());
        let answer: Value = serde_json::from_slice(&connection.send_ok(&call).await?)?;
        let (worker_id, latest_seq, status) = worker_state(&answer)
            .ok_or_else(|| anyhow::anyhow!("worker registration answered {answer}"))?;
        let driver = Driver {
            index,
            rng,
            worker_id: worker_id.clone(),
            worker_status: status.clone(),
            own_run: None,
            next_key: 0,
            pending: None,
            sealed: HashSet::new(),
        };
        let ack = Ack::Worker {
            worker_id,
            latest_seq,
            status,
        };
        Ok((driver, ack))
    }

    /// The driver's position, for a stable order of drivers.
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// Sends requests until the connection dies or the cycle's request
    /// budget is spent, and hands itself back with what it saw.
    pub(crate) async fn drive(mut self, addr: SocketAddr, load: Arc<CycleLoad>) -> (Self, Outcome) {
        let mut outcome = Outcome::default();
        self.sealed.clear();
        let Ok(mut connection) = Connection::open(addr).await else {
            return (self, outcome);
        };
        for _ in 0..load.max_requests {
            let op = self.choose(&load.shared_runs);
            let call = self.call_for(&op, load.cycle);
            match connection.send(&call).await {
                Ok((status, body)) => {
                    if !self.settle(&op, &call, status, &body, false, &mut outcome) {
                        break;
                    }
                }
                Err(_) => {
                    if op.is_idempotent() {
                        self.pending = Some((op, call));
                    }
                    break;
                }
            }
        }
        (self, outcome)
    }

    /// Sends the idempotent request lost to the kill again, if there is
    /// one; returns whether there was.
    pub(crate) async fn retry_pending(&mut self, addr: SocketAddr, outcome: &mut Outcome) -> bool {
        let Some((op, call)) = self.pending.take() else {
            return false;
        };
        let sent = match Connection::open(addr).await {
            Ok(mut connection) => connection.send(&call).await,
            Err(error) => Err(error),
        };
        match sent {
            Ok((status, body)) => {
                self.settle(&op, &call, status, &body, true, outcome);
            }
            Err(error) => outcome.problems.push(format!(
                "driver {}: retrying {} {} after the restart failed: {error:#}",
                self.index, call.method, call.path
            )),
        }
        true
    }

    /// Takes the worker's status and the own run's head from what the
    /// service showed after the restart (a write lost to the kill may or may
    /// not have landed).
    pub(crate) fn refresh(&mut self, observed: &Observed) {
        if let Some(worker) = observed.workers.get(&self.worker_id) {
            self.worker_status.clone_from(&worker.status);
        }
        let Some(own) = self.own_run.as_mut() else {
            return;
        };
        match observed.runs.get(&own.id) {
            Some(run) if run.status == "running" => own.latest_seq = run.latest_seq,
            _ => self.own_run = None,
        }
    }

    /// Picks the next request: a fifth worker writes, a third shared-run
    /// appends, the rest on the driver's own run.
    fn choose(&mut self, shared_runs: &[String]) -> Op {
        let roll = self.rng.range(0, 100);
        if roll < 20 {
            return if self.rng.one_in(4) {
                Op::Status(next_worker_status(&self.worker_status))
            } else {
                Op::Heartbeat
            };
        }
        if roll < 55 {
            let open: Vec<&String> = shared_runs
                .iter()
                .filter(|run| !self.sealed.contains(*run))
                .collect();
            if !open.is_empty() {
                let run = open[self.rng.index(open.len())].clone();
                return if self.rng.one_in(SHARED_FINISH_ODDS) {
                    Op::FinishShared(run)
                } else {
                    Op::AppendShared(run)
                };
            }
        }
        match &self.own_run {
            None => Op::CreateRun,
            Some(own) if own.appends_left == 0 => Op::FinishOwn,
            Some(_) => Op::AppendOwn,
        }
    }

    /// The request for `op`.
    fn call_for(&mut self, op: &Op, cycle: usize) -> Call {
        self.next_key += 1;
        let key = format!("chaos-c{cycle}-d{}-{}", self.index, self.next_key);
        let step = json!({"driver": self.index, "cycle": cycle, "n": self.next_key});
        match op {
            Op::CreateRun => Call::post(
                "/internal/v1/runs",
                json!({"worker_id": self.worker_id, "metadata": step, "idempotency_key": key})
                    .to_string(),
            ),
            Op::AppendOwn | Op::FinishOwn => {
                let (event_type, payload) = match op {
                    Op::FinishOwn => ("run.finished", json!({"status": self.terminal_status()})),
                    _ => ("chaos.step", step),
                };
                let own = self.own_run.as_ref().expect("own-run ops need a run");
                let body = json!({
                    "event_type": event_type,
                    "payload": payload,
                    "idempotency_key": key,
                    "expected_previous_seq": own.latest_seq,
                });
                Call::post(events_path(&own.id), body.to_string())
            }
            Op::AppendShared(run) => Call::post(
                events_path(run),
                json!({"event_type": "chaos.shared", "payload": step}).to_string(),
            ),
            Op::FinishShared(run) => Call::post(
                events_path(run),
                json!({"event_type": "run.finished", "payload": {"status": self.terminal_status()}})
                    .to_string(),
            ),
            Op::Heartbeat => Call::post(
                format!("/internal/v1/workers/{}/heartbeat", self.worker_id),
                json!({"owner_user_id": OWNER_USER_ID, "metadata_patch": {"beat": self.next_key}})
                    .to_string(),
            ),
            Op::Status(status) => Call::post(
                format!("/internal/v1/workers/{}/status", self.worker_id),
                json!({"owner_user_id": OWNER_USER_ID, "status": status, "reason": "chaos"})
                    .to_string(),
            ),
        }
    }

    /// A terminal status: mostly `succeeded`, sometimes `failed` or `canceled`.
    fn terminal_status(&mut self) -> &'static str {
        match self.rng.range(0, 10) {
            0..6 => "succeeded",
            6..9 => "failed",
            _ => "canceled",
        }
    }

    /// Books one answer: an acknowledgement, a tolerated refusal, or a
    /// problem naming the request and the answer. Returns false for a
    /// problem: the driver's view of its streams is then not to be trusted,
    /// so it stops for the cycle.
    fn settle(
        &mut self,
        op: &Op,
        call: &Call,
        status: StatusCode,
        body: &[u8],
        retried: bool,
        outcome: &mut Outcome,
    ) -> bool {
        let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let settled = match op {
            Op::CreateRun => self.settle_create(status, &answer, retried),
            Op::AppendOwn | Op::FinishOwn => self.settle_own(op, status, &answer, retried),
            Op::AppendShared(run) | Op::FinishShared(run) => {
                self.settle_shared(op, run, status, &answer)
            }
            Op::Heartbeat | Op::Status(_) => self.settle_worker(status, &answer),
        };
        match settled {
            Ok(Some(ack)) => {
                if answer["idempotent_replay"] == true {
                    outcome.replays += 1;
                }
                outcome.acks.push(ack);
                true
            }
            Ok(None) => true,
            Err(why) => {
                outcome.problems.push(format!(
                    "driver {}: {} {} answered {status} ({why}): {}",
                    self.index,
                    call.method,
                    call.path,
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                ));
                false
            }
        }
    }

    /// A run creation: 201, or 200 for a retried creation that had landed.
    fn settle_create(
        &mut self,
        status: StatusCode,
        answer: &Value,
        retried: bool,
    ) -> Result<Option<Ack>, String> {
        let expected = status == StatusCode::CREATED || (retried && status == StatusCode::OK);
        let run = &answer["run"];
        let (Some(id), Some(latest_seq), true) =
            (run["id"].as_str(), run["latest_seq"].as_u64(), expected)
        else {
            return Err("expected a created run".into());
        };
        self.own_run = Some(OwnRun {
            id: id.to_owned(),
            latest_seq,
            appends_left: self.rng.range(OWN_RUN_APPENDS.0, OWN_RUN_APPENDS.1),
        });
        let event =
            json!({"seq": 1, "event_type": "run.started", "payload": {"source": "runtime"}});
        Ok(Some(Ack::Event {
            run_id: id.to_owned(),
            event,
        }))
    }

    /// An append or finish on the driver's own run: always 200, and a replay
    /// only when it is the retry of a request lost to a kill.
    fn settle_own(
        &mut self,
        op: &Op,
        status: StatusCode,
        answer: &Value,
        retried: bool,
    ) -> Result<Option<Ack>, String> {
        let own = self.own_run.as_mut().expect("own-run ops need a run");
        let latest_seq = answer["run"]["latest_seq"].as_u64();
        let (StatusCode::OK, Some(latest_seq)) = (status, latest_seq) else {
            return Err("expected the appended event".into());
        };
        if answer["idempotent_replay"] == true && !retried {
            return Err("a fresh idempotency key was answered as a replay".into());
        }
        let run_id = own.id.clone();
        own.latest_seq = latest_seq;
        own.appends_left = own.appends_left.saturating_sub(1);
        if matches!(op, Op::FinishOwn) {
            self.own_run = None;
        }
        Ok(Some(Ack::Event {
            run_id,
            event: answer["event"].clone(),
        }))
    }

    /// An append or finish on a shared run. Once another driver finished
    /// the run, 409 `run_terminal` (append) and 400 `invalid_transition`
    /// (finish with another status) are the contract's answers.
    fn settle_shared(
        &mut self,
        op: &Op,
        run: &str,
        status: StatusCode,
        answer: &Value,
    ) -> Result<Option<Ack>, String> {
        let reason = answer["reason_code"].as_str();
        match (status, reason) {
            (StatusCode::OK, _) => {
                let event = answer["event"].clone();
                if terminal_status(&event).is_some() {
                    self.sealed.insert(run.to_owned());
                }
                Ok(Some(Ack::Event {
                    run_id: run.to_owned(),
                    event,
                }))
            }
            (StatusCode::CONFLICT, Some("run_terminal")) => {
                self.sealed.insert(run.to_owned());
                Ok(None)
            }
            (StatusCode::BAD_REQUEST, Some("invalid_transition"))
                if matches!(op, Op::FinishShared(_)) =>
            {
                self.sealed.insert(run.to_owned());
                Ok(None)
            }
            _ => Err("not an answer the contract allows here".into()),
        }
    }

    /// A heartbeat or status change: always 200.
    fn settle_worker(&mut self, status: StatusCode, answer: &Value) -> Result<Option<Ack>, String> {
        let state = worker_state(answer).filter(|_| status == StatusCode::OK);
        let Some((worker_id, latest_seq, status)) = state else {
            return Err("expected the worker".into());
        };
        self.worker_status.clone_from(&status);
        Ok(Some(Ack::Worker {
            worker_id,
            latest_seq,
            status,
        }))
    }
}

/// The id, `latest_seq` and status in a worker answer `{worker: {worker,
/// liveness}}`.
fn worker_state(answer: &Value) -> Option<(String, u64, String)> {
    let worker = &answer["worker"]["worker"];
    Some((
        worker["worker_id"].as_str()?.to_owned(),
        worker["latest_seq"].as_u64()?,
        worker["status"].as_str()?.to_owned(),
    ))
}

/// A status the contract allows after `status` (and, as a change to the
/// same status is always allowed, also after that one).
fn next_worker_status(status: &str) -> &'static str {
    match status {
        "running" => "stopping",
        "stopping" => "stopped",
        _ => "running",
    }
}

/// The append route of a run.
fn events_path(run_id: &str) -> String {
    format!("/internal/v1/runs/{run_id}/events")
}
