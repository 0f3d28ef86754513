//! The run and worker queries: their filters, their opaque cursors and the
//! selection of one page from the log's in-memory index.
//!
//! A query never reads the log: it walks the folded stream states of the
//! index (`Stream::Run(RunHead)`, `Stream::Worker`), keeps the best
//! `limit + 1` matches in a bounded heap under the index's read lock, copies
//! them out and lets the lock go before anything is serialized. The work of
//! a request is one pass over the index's streams and `O(limit)` memory.
//!
//! Order and cursors (see `docs/DECISIONS.md`):
//! - runs come newest first, by run id descending. Run ids are UUIDv7 issued
//!   on the log's one writer thread in log order, so a later run always has a
//!   greater id. The cursor is the id of a page's last run and the next page
//!   holds ids strictly below it: runs created while a client pages have
//!   greater ids and never shift, repeat or hide the runs still to come.
//! - workers come by worker id ascending, the cursor being the last id; a
//!   worker's id never changes, so the same argument holds.

use crate::types::RunView;
use crate::workers::WorkerView;
use openagents_authority::{RunHead, Stream, unix_ms, worker_liveness};
use openagents_run_state::RunStatus;
use openagents_workers::{HeartbeatState, Owner, WorkerState, WorkerStatus};
use serde::de::DeserializeOwned;
use serde::de::IntoDeserializer;
use serde::de::value::StrDeserializer;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::SystemTime;
use uuid::Uuid;

/// Rows of a page when the request names no `limit`.
pub(crate) const DEFAULT_LIMIT: usize = 100;
/// Most rows of one page.
pub(crate) const MAX_LIMIT: usize = 500;
/// Prefix of a run cursor: names the order it belongs to, so a worker cursor
/// (or a cursor of a later order) is refused instead of misread.
const RUN_CURSOR: &str = "r1.";
/// Prefix of a worker cursor.
const WORKER_CURSOR: &str = "w1.";

/// A query parameter that cannot be used, named.
#[derive(Debug, thiserror::Error)]
#[error("query parameter {param}: {reason}")]
pub(crate) struct QueryError {
    /// The parameter, as the client spelled it (clipped).
    pub(crate) param: String,
    /// Why it was refused.
    pub(crate) reason: String,
}

impl QueryError {
    fn new(param: &str, reason: impl Into<String>) -> Self {
        QueryError {
            param: crate::error::clip(param),
            reason: reason.into(),
        }
    }
}

/// The `status` filter of the run list: a run status, or `erased`, the
/// only filter that lists erased runs (they are not runs to work with any
/// more, but an operator may need to find their tombstones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusFilter {
    Run(RunStatus),
    Erased,
}

impl StatusFilter {
    /// The filter's spelling in a query: a status's wire name, or `erased`.
    fn parse(text: &str) -> Result<Self, String> {
        if text == "erased" {
            return Ok(StatusFilter::Erased);
        }
        by_wire_name(text).map(StatusFilter::Run)
    }

    fn matches(self, head: &RunHead) -> bool {
        match (self, head.erasure()) {
            (StatusFilter::Erased, erasure) => erasure.is_some(),
            (StatusFilter::Run(status), None) => head.status == status,
            (StatusFilter::Run(_), Some(_)) => false,
        }
    }
}

/// The filters of `GET /internal/v1/runs`.
#[derive(Debug, Default)]
pub(crate) struct RunQuery {
    status: Option<StatusFilter>,
    owner: Option<Owner>,
    worker_id: Option<String>,
    created_after: Option<SystemTime>,
    created_before: Option<SystemTime>,
    updated_after: Option<SystemTime>,
    before_id: Option<Uuid>,
    limit: usize,
}

/// The filters of `GET /internal/v1/workers`.
#[derive(Debug, Default)]
pub(crate) struct WorkerQuery {
    owner: Option<Owner>,
    status: Option<WorkerStatus>,
    heartbeat_state: Option<HeartbeatState>,
    after_id: Option<String>,
    limit: usize,
}

/// One page of a query.
pub(crate) struct Page<T> {
    /// The rows, in the query's order.
    pub(crate) rows: Vec<T>,
    /// The cursor of the next page; `None` when this page is the last.
    pub(crate) next_cursor: Option<String>,
}

/// The query string's pairs, each name at most once.
struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Refuses a name outside `known` and a name given twice.
    fn checked(pairs: Vec<(String, String)>, known: &[&str]) -> Result<Self, QueryError> {
        for (at, (name, _)) in pairs.iter().enumerate() {
            if !known.contains(&name.as_str()) {
                return Err(QueryError::new(
                    name,
                    format!("unknown; the parameters are {}", known.join(", ")),
                ));
            }
            if pairs[..at].iter().any(|(earlier, _)| earlier == name) {
                return Err(QueryError::new(name, "given more than once"));
            }
        }
        Ok(Params { pairs })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(given, _)| given == name)
            .map(|(_, value)| value.as_str())
    }

    /// The parameter read with `parse`, when given.
    fn parsed<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, QueryError> {
        self.get(name)
            .map(|value| parse(value).map_err(|reason| QueryError::new(name, reason)))
            .transpose()
    }

    /// `limit`: 1..=[`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
    fn limit(&self) -> Result<usize, QueryError> {
        let limit = self.parsed("limit", |text| {
            text.parse::<usize>()
                .ok()
                .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                .ok_or_else(|| format!("must be an integer from 1 to {MAX_LIMIT}"))
        })?;
        Ok(limit.unwrap_or(DEFAULT_LIMIT))
    }

    /// The owner `owner_user_id` or `owner_guest_scope` names, by the
    /// owner rule of the write routes (a guest scope is trimmed; the two
    /// fields exclude each other).
    fn owner(&self) -> Result<Option<Owner>, QueryError> {
        let user_id = self.parsed("owner_user_id", |text| {
            text.parse::<u64>()
                .map_err(|_| "must be an unsigned 64-bit integer".to_owned())
        })?;
        let guest_scope = self.get("owner_guest_scope");
        Owner::optional_from_request(user_id, guest_scope).map_err(|error| {
            let param = if user_id.is_some() && guest_scope.is_none() {
                "owner_user_id"
            } else {
                "owner_guest_scope"
            };
            QueryError::new(param, error.to_string())
        })
    }

    /// An RFC 3339 time.
    fn time(&self, name: &str) -> Result<Option<SystemTime>, QueryError> {
        self.parsed(name, |text| {
            humantime::parse_rfc3339(text)
                .map_err(|_| "must be an RFC 3339 UTC time such as 2026-01-31T12:00:00Z".into())
        })
    }

    /// The cursor of an order whose ids start with `prefix`, as hex text.
    fn cursor(&self, prefix: &str) -> Result<Option<Vec<u8>>, QueryError> {
        self.parsed("cursor", |text| {
            text.strip_prefix(prefix)
                .filter(|hex| !hex.is_empty())
                .and_then(|hex| hex::decode(hex).ok())
                .ok_or_else(|| "is not a cursor this route returned".to_owned())
        })
    }
}

/// A value of an enum by its wire (serde) name, so the filter accepts
/// exactly the spellings responses show.
fn by_wire_name<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let deserializer: StrDeserializer<'_, serde::de::value::Error> = text.into_deserializer();
    T::deserialize(deserializer).map_err(|_| format!("{:?} is not a known value", clip(text)))
}

fn clip(text: &str) -> String {
    crate::error::clip(text)
}

impl RunQuery {
    /// Names accepted by [`RunQuery::parse`].
    const PARAMS: [&'static str; 9] = [
        "status",
        "owner_user_id",
        "owner_guest_scope",
        "worker_id",
        "created_after",
        "created_before",
        "updated_after",
        "cursor",
        "limit",
    ];

    /// Reads the query string's pairs.
    pub(crate) fn parse(pairs: Vec<(String, String)>) -> Result<Self, QueryError> {
        let params = Params::checked(pairs, &Self::PARAMS)?;
        let before_id = params
            .cursor(RUN_CURSOR)?
            .map(|bytes| Uuid::from_slice(&bytes))
            .transpose()
            .map_err(|_| QueryError::new("cursor", "is not a cursor this route returned"))?;
        Ok(RunQuery {
            status: params.parsed("status", StatusFilter::parse)?,
            owner: params.owner()?,
            worker_id: params.get("worker_id").map(str::to_owned),
            created_after: params.time("created_after")?,
            created_before: params.time("created_before")?,
            updated_after: params.time("updated_after")?,
            before_id,
            limit: params.limit()?,
        })
    }

    /// Whether `head` passes every filter, the cheap comparisons first and
    /// the time parses only for runs that pass them.
    fn matches(&self, head: &RunHead) -> bool {
        self.before_id.is_none_or(|before| head.id < before)
            && self
                .status
                .map_or(head.erasure().is_none(), |status| status.matches(head))
            && self
                .worker_id
                .as_deref()
                .is_none_or(|worker| head.worker_id.as_deref() == Some(worker))
            && self
                .owner
                .as_ref()
                .is_none_or(|owner| head.owner.as_ref() == Some(owner))
            && self
                .created_after
                .is_none_or(|after| time_of(&head.created_at).is_some_and(|at| at > after))
            && self
                .created_before
                .is_none_or(|before| time_of(&head.created_at).is_some_and(|at| at < before))
            && self
                .updated_after
                .is_none_or(|after| time_of(&head.updated_at).is_some_and(|at| at > after))
    }

    /// The page of `streams` (the index's) this query asks for.
    pub(crate) fn page<'a>(&self, streams: impl Iterator<Item = &'a Stream>) -> Page<RunHead> {
        let runs = streams
            .filter_map(Stream::as_run)
            .filter(|head| self.matches(head));
        // Newest first is the greatest ids: keep the `limit + 1` greatest.
        let mut rows: Vec<RunHead> = best(runs, self.limit + 1, |head| head.id)
            .into_iter()
            .cloned()
            .collect();
        rows.sort_unstable_by_key(|head| Reverse(head.id));
        let next_cursor = cut(&mut rows, self.limit)
            .then(|| {
                rows.last()
                    .map(|head| cursor(RUN_CURSOR, head.id.as_bytes()))
            })
            .flatten();
        Page { rows, next_cursor }
    }
}

impl WorkerQuery {
    /// Names accepted by [`WorkerQuery::parse`].
    const PARAMS: [&'static str; 6] = [
        "owner_user_id",
        "owner_guest_scope",
        "status",
        "heartbeat_state",
        "cursor",
        "limit",
    ];

    /// Reads the query string's pairs.
    pub(crate) fn parse(pairs: Vec<(String, String)>) -> Result<Self, QueryError> {
        let params = Params::checked(pairs, &Self::PARAMS)?;
        let after_id = params
            .cursor(WORKER_CURSOR)?
            .map(String::from_utf8)
            .transpose()
            .map_err(|_| QueryError::new("cursor", "is not a cursor this route returned"))?;
        Ok(WorkerQuery {
            owner: params.owner()?,
            status: params.parsed("status", by_wire_name)?,
            heartbeat_state: params.parsed("heartbeat_state", by_wire_name)?,
            after_id,
            limit: params.limit()?,
        })
    }

    /// The page of `streams` (the index's) this query asks for, with each
    /// worker's liveness at `now` under the stale limit `stale_after_ms`:
    /// the rule of the worker routes, applied once per worker.
    pub(crate) fn page<'a>(
        &self,
        streams: impl Iterator<Item = &'a Stream>,
        now: SystemTime,
        stale_after_ms: u64,
    ) -> Page<WorkerView> {
        let now_ms = unix_ms(now);
        let workers = streams.filter_map(Stream::as_worker).filter(|worker| {
            self.matches(worker)
                && self.heartbeat_state.is_none_or(|state| {
                    worker_liveness(worker, now_ms, stale_after_ms).heartbeat_state == state
                })
        });
        // Ascending ids are the smallest: keep the `limit + 1` smallest.
        let mut rows: Vec<WorkerState> = best(workers, self.limit + 1, |worker| {
            Reverse(worker.worker_id())
        })
        .into_iter()
        .cloned()
        .collect();
        rows.sort_unstable_by(|a, b| a.worker_id().cmp(b.worker_id()));
        let next_cursor = cut(&mut rows, self.limit)
            .then(|| {
                rows.last()
                    .map(|worker| cursor(WORKER_CURSOR, worker.worker_id().as_bytes()))
            })
            .flatten();
        let rows = rows
            .into_iter()
            .map(|worker| WorkerView::at(worker, now_ms, stale_after_ms))
            .collect();
        Page { rows, next_cursor }
    }

    /// The filters that need no clock.
    fn matches(&self, worker: &WorkerState) -> bool {
        self.after_id
            .as_deref()
            .is_none_or(|after| worker.worker_id() > after)
            && self.status.is_none_or(|status| worker.status() == status)
            && self
                .owner
                .as_ref()
                .is_none_or(|owner| worker.owner() == owner)
    }
}

/// The views of a run page, as the route answers.
pub(crate) fn run_views(rows: &[RunHead]) -> Vec<RunView<'_>> {
    rows.iter().map(RunView::of).collect()
}

/// The at most `keep` items of `items` with the greatest `key`, in no
/// particular order: a heap of `keep` entries, so memory is bounded by the
/// page, not by the index.
fn best<'a, T, K: Ord>(
    items: impl Iterator<Item = &'a T>,
    keep: usize,
    key: impl Fn(&'a T) -> K,
) -> Vec<&'a T> {
    let mut heap: BinaryHeap<Reverse<Keyed<K, &'a T>>> = BinaryHeap::with_capacity(keep + 1);
    for item in items {
        heap.push(Reverse(Keyed(key(item), item)));
        if heap.len() > keep {
            heap.pop();
        }
    }
    heap.into_iter()
        .map(|Reverse(Keyed(_, item))| item)
        .collect()
}

/// An item ordered by its key alone.
struct Keyed<K, T>(K, T);

impl<K: Ord, T> PartialEq for Keyed<K, T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl<K: Ord, T> Eq for Keyed<K, T> {}
impl<K: Ord, T> PartialOrd for Keyed<K, T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Ord, T> Ord for Keyed<K, T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

/// Truncates `rows` to `limit`; whether there was more (a next page).
fn cut<T>(rows: &mut Vec<T>, limit: usize) -> bool {
    let more = rows.len() > limit;
    rows.truncate(limit);
    more
}

fn cursor(prefix: &str, bytes: &[u8]) -> String {
    format!("{prefix}{}", hex::encode(bytes))
}

/// A stored time; `None` for text that is not RFC 3339 (an imported run's
/// own spelling), which then matches no time filter.
fn time_of(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn refused_param(result: Result<RunQuery, QueryError>) -> String {
        result.expect_err("refused").param
    }

    #[test]
    fn every_bad_value_names_its_parameter() {
        for (name, value) in [
            ("status", "runnin"),
            ("owner_user_id", "-1"),
            ("owner_guest_scope", " "),
            ("created_after", "yesterday"),
            ("created_before", "2026-13-01T00:00:00Z"),
            ("updated_after", "1700000000"),
            ("cursor", "w1.61"),
            ("cursor", "r1.zz"),
            ("limit", "0"),
            ("limit", "501"),
            ("colour", "red"),
        ] {
            let param = refused_param(RunQuery::parse(pairs(&[(name, value)])));
            assert_eq!(param, name, "{name}={value}");
        }
        let twice = RunQuery::parse(pairs(&[("limit", "1"), ("limit", "2")]));
        assert_eq!(refused_param(twice), "limit");
    }

    #[test]
    fn cursors_round_trip_and_are_refused_across_routes() {
        let id = Uuid::now_v7();
        let text = cursor(RUN_CURSOR, id.as_bytes());
        let query = RunQuery::parse(pairs(&[("cursor", &text)])).expect("accepted");
        assert_eq!(query.before_id, Some(id));
        let worker = cursor(WORKER_CURSOR, b"w-1");
        let query = WorkerQuery::parse(pairs(&[("cursor", &worker)])).expect("accepted");
        assert_eq!(query.after_id.as_deref(), Some("w-1"));
        let crossed = WorkerQuery::parse(pairs(&[("cursor", &text)])).expect_err("refused");
        assert_eq!(crossed.param, "cursor");
    }

    #[test]
    fn best_keeps_the_greatest_keys_only() {
        let items: Vec<u32> = (0..1000).map(|n| (n * 7919) % 1000).collect();
        let mut kept: Vec<u32> = best(items.iter(), 5, |n| *n).into_iter().copied().collect();
        kept.sort_unstable();
        assert_eq!(kept, [995, 996, 997, 998, 999]);
    }
}
