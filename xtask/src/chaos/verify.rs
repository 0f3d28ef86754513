//! Verification after a restart: the service must show every acknowledged
//! write of the ledger, and its projections must agree with its log.
//!
//! For each run: `GET /internal/v1/runs/{id}` holds seqs 1..n without gaps,
//! every acknowledged event at its seq with the same content, at most one
//! `run.finished`, and the status those events give (terminal when a finish
//! was acknowledged); its run summary and checkpoint show the same last seq,
//! event count, status and last event type. For each worker: `latest_seq` is
//! at least the acknowledged one (equal means the same status), and its
//! checkpoint is at that seq.

use crate::bench::load::{Call, Connection};
use crate::chaos::driver::OWNER_USER_ID;
use crate::chaos::ledger::{Ledger, RunLedger, WorkerLedger, same_fields, terminal_status};
use anyhow::Context;
use hyper::StatusCode;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinSet;

/// Connections the verification reads over.
const VERIFY_CONNECTIONS: usize = 8;

/// Most problems reported for one run or worker (the first ones tell).
const MAX_PROBLEMS_PER_STREAM: usize = 5;

/// A stream's head as the service showed it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    /// The last seq.
    pub(crate) latest_seq: u64,
    /// The status.
    pub(crate) status: String,
}

/// What the service showed of every stream in the ledger.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    /// Runs by id.
    pub(crate) runs: HashMap<String, Seen>,
    /// Workers by id.
    pub(crate) workers: HashMap<String, Seen>,
}

/// The result of one verification.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    /// Every disagreement with the ledger or between log and projections.
    pub(crate) problems: Vec<String>,
    /// What the service showed.
    pub(crate) observed: Observed,
    /// Events of all the ledger's streams (run events and worker lifecycle
    /// events): the log should hold exactly this many records.
    pub(crate) records: u64,
}

/// Reads every stream of `ledger` from the service at `addr` and checks it.
/// A read that does not answer 200 (a run that vanished, say) is a problem;
/// only a transport failure fails the verification itself.
pub(crate) async fn verify(addr: SocketAddr, ledger: &Ledger) -> anyhow::Result<Verdict> {
    let mut calls = Vec::new();
    for id in ledger.runs.keys() {
        calls.push(Call::get(format!("/internal/v1/runs/{id}")));
        calls.push(Call::get(format!(
            "/internal/v1/projectors/run-summary/{id}"
        )));
        calls.push(Call::get(format!(
            "/internal/v1/projectors/checkpoints/{id}"
        )));
    }
    for id in ledger.workers.keys() {
        calls.push(Call::get(format!(
            "/internal/v1/workers/{id}?owner_user_id={OWNER_USER_ID}"
        )));
        calls.push(Call::get(format!("/internal/v1/workers/{id}/checkpoint")));
    }
    let mut verdict = Verdict::default();
    let answers = fetch_all(addr, &calls).await?;
    for ((status, answer), call) in answers.iter().zip(&calls) {
        if *status != StatusCode::OK {
            verdict
                .problems
                .push(format!("GET {} answered {status}: {answer}", call.path));
        }
    }
    let mut answers = answers.into_iter().map(|(_, answer)| answer);
    let mut next = || answers.next().context("an answer is missing");
    for (id, acked) in &ledger.runs {
        let (run, summary, checkpoint) = (next()?, next()?, next()?);
        let (seen, problems) = check_run(id, acked, &run["run"], &summary, &checkpoint);
        verdict.records += seen.latest_seq;
        verdict.observed.runs.insert(id.clone(), seen);
        verdict.problems.extend(problems);
    }
    for (id, acked) in &ledger.workers {
        let (worker, checkpoint) = (next()?, next()?);
        let (seen, problems) = check_worker(id, acked, &worker, &checkpoint);
        verdict.records += seen.latest_seq;
        verdict.observed.workers.insert(id.clone(), seen);
        verdict.problems.extend(problems);
    }
    Ok(verdict)
}

/// Sends every call over [`VERIFY_CONNECTIONS`] connections and returns
/// each answer's status and JSON body (`null` when not JSON) in call order.
/// Unlike the bench's `send_all`, a non-2xx answer is a finding to report,
/// not an error.
async fn fetch_all(addr: SocketAddr, calls: &[Call]) -> anyhow::Result<Vec<(StatusCode, Value)>> {
    let calls: Arc<[Call]> = calls.into();
    let mut tasks = JoinSet::new();
    for lane in 0..VERIFY_CONNECTIONS {
        let calls = Arc::clone(&calls);
        tasks.spawn(async move {
            let mut connection = Connection::open(addr).await?;
            let mut answers = Vec::new();
            for index in (lane..calls.len()).step_by(VERIFY_CONNECTIONS) {
                let (status, body) = connection.send(&calls[index]).await?;
                let answer = serde_json::from_slice(&body).unwrap_or(Value::Null);
                answers.push((index, status, answer));
            }
            anyhow::Ok(answers)
        });
    }
    let mut out = vec![(StatusCode::OK, Value::Null); calls.len()];
    while let Some(joined) = tasks.join_next().await {
        for (index, status, answer) in joined.context("a verification connection panicked")?? {
            out[index] = (status, answer);
        }
    }
    Ok(out)
}

/// Checks one run against its acknowledgements and its projections.
fn check_run(
    id: &str,
    acked: &RunLedger,
    run: &Value,
    summary: &Value,
    checkpoint: &Value,
) -> (Seen, Vec<String>) {
    let empty = Vec::new();
    let events = run["events"].as_array().unwrap_or(&empty);
    let count = events.len() as u64;
    let mut problems = Vec::new();
    check_seqs(events, &mut problems);
    check_acked_events(acked, events, &mut problems);
    let status = run["status"].as_str().unwrap_or_default().to_owned();
    check_status(acked, events, &status, &mut problems);
    let last_type = events
        .last()
        .map_or(Value::Null, |e| e["event_type"].clone());
    let summary = &summary["summary"];
    let checkpoint = &checkpoint["checkpoint"];
    let topic = format!("run:{id}:events");
    let agreements = [
        ("run latest_seq", &run["latest_seq"], Value::from(count)),
        ("summary run_id", &summary["run_id"], Value::from(id)),
        (
            "summary status",
            &summary["status"],
            Value::from(status.as_str()),
        ),
        ("summary last_seq", &summary["last_seq"], Value::from(count)),
        (
            "summary event_count",
            &summary["event_count"],
            Value::from(count),
        ),
        ("checkpoint topic", &checkpoint["topic"], Value::from(topic)),
        (
            "checkpoint last_seq",
            &checkpoint["last_seq"],
            Value::from(count),
        ),
        (
            "checkpoint last_event_type",
            &checkpoint["last_event_type"],
            last_type,
        ),
    ];
    check_agreements(&agreements, &mut problems);
    (
        Seen {
            latest_seq: count,
            status,
        },
        name_stream(&format!("run {id}"), problems),
    )
}

/// Seqs must be 1, 2, 3, … in order.
fn check_seqs(events: &[Value], problems: &mut Vec<String>) {
    let misplaced = events
        .iter()
        .zip(1u64..)
        .find(|(event, seq)| event["seq"].as_u64() != Some(*seq));
    if let Some((event, seq)) = misplaced {
        problems.push(format!(
            "gap or duplicate: event {seq} has seq {}",
            event["seq"]
        ));
    }
}

/// Every acknowledged event must be at its seq with the same content.
fn check_acked_events(acked: &RunLedger, events: &[Value], problems: &mut Vec<String>) {
    for (seq, event) in &acked.events {
        let found = usize::try_from(*seq - 1).ok().and_then(|at| events.get(at));
        match found {
            Some(found) if same_fields(event, found) => {}
            Some(found) => problems.push(format!(
                "acknowledged seq {seq} was {event} but the run shows {found}"
            )),
            None => problems.push(format!(
                "LOST acknowledged seq {seq} ({event}): the run has {} events",
                events.len()
            )),
        }
    }
}

/// The status must follow from the events (one `run.finished` at most), and
/// be the acknowledged terminal status when a finish was acknowledged.
fn check_status(acked: &RunLedger, events: &[Value], status: &str, problems: &mut Vec<String>) {
    let finishes: Vec<String> = events.iter().filter_map(terminal_status).collect();
    if finishes.len() > 1 {
        problems.push(format!(
            "{} run.finished events: {finishes:?}",
            finishes.len()
        ));
    }
    let expected = finishes.first().map_or("running", String::as_str);
    if status != expected {
        problems.push(format!("status {status} but the events say {expected}"));
    }
    if let Some(finished) = acked.finished.as_deref().filter(|f| *f != status) {
        problems.push(format!(
            "run.finished {finished} was acknowledged but the status is {status}"
        ));
    }
}

/// Checks one worker against its newest acknowledgement and its checkpoint.
fn check_worker(
    id: &str,
    acked: &WorkerLedger,
    answer: &Value,
    checkpoint: &Value,
) -> (Seen, Vec<String>) {
    let worker = &answer["worker"]["worker"];
    let latest_seq = worker["latest_seq"].as_u64().unwrap_or(0);
    let status = worker["status"].as_str().unwrap_or_default().to_owned();
    let mut problems = Vec::new();
    if latest_seq < acked.latest_seq {
        problems.push(format!(
            "LOST: latest_seq {latest_seq} is below the acknowledged {}",
            acked.latest_seq
        ));
    }
    if latest_seq == acked.latest_seq && status != acked.status {
        problems.push(format!(
            "status {status} at seq {latest_seq}, acknowledged as {}",
            acked.status
        ));
    }
    let checkpoint = &checkpoint["checkpoint"];
    let topic = format!("worker:{id}:lifecycle");
    let agreements = [
        ("checkpoint topic", &checkpoint["topic"], Value::from(topic)),
        (
            "checkpoint last_seq",
            &checkpoint["last_seq"],
            Value::from(latest_seq),
        ),
    ];
    check_agreements(&agreements, &mut problems);
    (
        Seen { latest_seq, status },
        name_stream(&format!("worker {id}"), problems),
    )
}

/// Each `(what, shown, expected)` must match.
fn check_agreements(agreements: &[(&str, &Value, Value)], problems: &mut Vec<String>) {
    for (what, shown, expected) in agreements {
        if *shown != expected {
            problems.push(format!("{what} is {shown}, expected {expected}"));
        }
    }
}

/// Prefixes each problem with the stream and keeps the first few.
fn name_stream(stream: &str, problems: Vec<String>) -> Vec<String> {
    let total = problems.len();
    let mut named: Vec<String> = problems
        .into_iter()
        .take(MAX_PROBLEMS_PER_STREAM)
        .map(|problem| format!("{stream}: {problem}"))
        .collect();
    if total > MAX_PROBLEMS_PER_STREAM {
        named.push(format!(
            "{stream}: … and {} more",
            total - MAX_PROBLEMS_PER_STREAM
        ));
    }
    named
}
