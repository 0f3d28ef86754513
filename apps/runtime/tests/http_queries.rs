//! The list routes over TCP against the real binary: every filter of
//! `GET /internal/v1/runs` and `GET /internal/v1/workers`, paging while
//! other clients create runs and append events (no run seen twice or
//! skipped), limits, bad values and the internal token.

mod support;

use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use support::process::Server;

fn create(server: &Server, body: Value) -> String {
    let (status, answer) = server.call("POST", "/internal/v1/runs", Some(body));
    assert_eq!(status, 201, "{answer}");
    answer["run"]["id"].as_str().unwrap().to_owned()
}

fn append(server: &Server, run: &str, event_type: &str, payload: Value) {
    let path = format!("/internal/v1/runs/{run}/events");
    let body = json!({"event_type": event_type, "payload": payload});
    let (status, answer) = server.call("POST", &path, Some(body));
    assert_eq!(status, 200, "{answer}");
}

fn get(server: &Server, path: &str) -> Value {
    let (status, answer) = server.call("GET", path, None);
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

/// The ids of the one page `query` returns (which must be the last).
fn run_ids(server: &Server, query: &str) -> Vec<String> {
    let page = get(server, &format!("/internal/v1/runs?{query}"));
    assert_eq!(page["next_cursor"], Value::Null, "{query}: one page");
    ids(&page["runs"], "id")
}

fn ids(rows: &Value, field: &str) -> Vec<String> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|row| row[field].as_str().unwrap().to_owned())
        .collect()
}

fn now_rfc3339() -> String {
    // A moment strictly between the records written before and after it.
    std::thread::sleep(Duration::from_millis(5));
    let now = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    std::thread::sleep(Duration::from_millis(5));
    now
}

#[test]
fn every_run_filter_selects_exactly_its_runs() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let (status, _) = server.call(
        "POST",
        "/internal/v1/workers",
        Some(json!({"worker_id": "w-1", "owner_guest_scope": "team"})),
    );
    assert_eq!(status, 201);
    let a = create(&server, json!({"owner_user_id": 7}));
    let b = create(&server, json!({"owner_user_id": 8}));
    let middle = now_rfc3339();
    // c inherits the worker's owner.
    let c = create(&server, json!({"worker_id": "w-1"}));
    let d = create(&server, json!({"owner_guest_scope": " team "}));
    let (a, b, c, d) = (a.as_str(), b.as_str(), c.as_str(), d.as_str());
    append(&server, b, "run.finished", json!({"status": "succeeded"}));
    append(&server, c, "run.cancel_requested", json!({}));
    append(&server, d, "run.finished", json!({"status": "failed"}));
    let late = now_rfc3339();
    append(&server, a, "note", json!({}));

    assert_eq!(run_ids(&server, ""), [d, c, b, a], "newest first");
    assert_eq!(run_ids(&server, "status=running"), [a]);
    assert_eq!(run_ids(&server, "status=succeeded"), [b]);
    assert_eq!(run_ids(&server, "status=canceling"), [c]);
    assert_eq!(run_ids(&server, "status=failed"), [d]);
    assert!(run_ids(&server, "status=created").is_empty());
    assert_eq!(run_ids(&server, "owner_user_id=7"), [a]);
    assert_eq!(run_ids(&server, "owner_guest_scope=team"), [d, c]);
    assert_eq!(run_ids(&server, "owner_guest_scope=%20team"), [d, c]);
    assert_eq!(run_ids(&server, "worker_id=w-1"), [c]);
    assert!(run_ids(&server, "worker_id=w-2").is_empty());
    assert_eq!(run_ids(&server, &format!("created_after={middle}")), [d, c]);
    assert_eq!(
        run_ids(&server, &format!("created_before={middle}")),
        [b, a]
    );
    assert_eq!(
        run_ids(&server, &format!("updated_after={middle}")),
        [d, c, b, a]
    );
    assert_eq!(run_ids(&server, &format!("updated_after={late}")), [a]);
    // Filters combine.
    assert_eq!(
        run_ids(
            &server,
            &format!("owner_guest_scope=team&status=failed&created_after={middle}")
        ),
        [d]
    );
    let page = get(&server, "/internal/v1/runs?status=running");
    let run = &page["runs"][0];
    assert_eq!(run["owner"], json!({"user_id": 7, "guest_scope": null}));
    assert_eq!(run["latest_seq"], 2);
}

#[test]
fn pages_are_stable_while_runs_are_created_and_appended_to() {
    let data = tempfile::tempdir().unwrap();
    let server = Arc::new(Server::start(data.path()));
    let before: Vec<String> = (0..120).map(|_| create(&server, json!({}))).collect();

    // The default page is 100 runs.
    let first = get(&server, "/internal/v1/runs");
    assert_eq!(first["runs"].as_array().unwrap().len(), 100);
    assert!(first["next_cursor"].is_string());

    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (server, writing, before) = (Arc::clone(&server), Arc::clone(&writing), before.clone());
        std::thread::spawn(move || {
            let mut created = 0;
            while writing.load(Ordering::Relaxed) {
                create(&server, json!({}));
                append(&server, &before[created % before.len()], "note", json!({}));
                created += 1;
            }
            created
        })
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = cursor.map_or_else(String::new, |c| format!("&cursor={c}"));
        let page = get(&server, &format!("/internal/v1/runs?limit=7{query}"));
        seen.extend(ids(&page["runs"], "id"));
        std::thread::sleep(Duration::from_millis(10));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    writing.store(false, Ordering::Relaxed);
    let created_meanwhile = writer.join().unwrap();
    assert!(created_meanwhile > 0, "the pages were read during writes");

    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a run was seen twice");
    let mut sorted = seen.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(sorted, seen, "pages continue newest first");
    for run in &before {
        assert!(unique.contains(run), "run {run} was skipped");
    }
}

#[test]
fn limits_are_checked_and_kept() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    for _ in 0..3 {
        create(&server, json!({}));
    }
    let page = get(&server, "/internal/v1/runs?limit=2");
    assert_eq!(page["runs"].as_array().unwrap().len(), 2);
    let next = page["next_cursor"].as_str().unwrap();
    let rest = get(&server, &format!("/internal/v1/runs?limit=2&cursor={next}"));
    assert_eq!(rest["runs"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_cursor"], Value::Null, "no empty last page");
    assert_eq!(
        get(&server, "/internal/v1/runs?limit=500")["runs"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        get(&server, "/internal/v1/workers?limit=500")["workers"],
        json!([])
    );
}

#[test]
fn bad_values_are_400_naming_the_parameter_and_change_nothing() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let run = create(&server, json!({}));
    let refused = |route: &str, query: &str, param: &str| {
        let (status, answer) = server.call("GET", &format!("{route}?{query}"), None);
        assert_eq!(status, 400, "{query}: {answer}");
        assert_eq!(answer["error"], "invalid_request", "{query}");
        assert_eq!(answer["reason_code"], "invalid_query_parameter", "{query}");
        assert_eq!(answer["details"]["parameter"], param, "{query}");
        assert!(
            answer["message"].as_str().unwrap().contains(param),
            "{answer}"
        );
    };
    const RUNS: &str = "/internal/v1/runs";
    const WORKERS: &str = "/internal/v1/workers";
    for (route, query, param) in [
        (RUNS, "status=RUNNING", "status"),
        (RUNS, "status=", "status"),
        (RUNS, "owner_user_id=x", "owner_user_id"),
        (RUNS, "owner_user_id=18446744073709551616", "owner_user_id"),
        (RUNS, "owner_guest_scope=%20", "owner_guest_scope"),
        (
            RUNS,
            "owner_user_id=1&owner_guest_scope=g",
            "owner_guest_scope",
        ),
        (RUNS, "created_after=yesterday", "created_after"),
        (
            RUNS,
            "created_before=2026-02-30T00:00:00Z",
            "created_before",
        ),
        (RUNS, "updated_after=1700000000", "updated_after"),
        (RUNS, "cursor=abc", "cursor"),
        (RUNS, "cursor=r1.", "cursor"),
        (RUNS, "cursor=r1.00", "cursor"),
        (RUNS, "limit=0", "limit"),
        (RUNS, "limit=501", "limit"),
        (RUNS, "limit=-1", "limit"),
        (RUNS, "limit=ten", "limit"),
        (RUNS, "limit=1&limit=2", "limit"),
        (RUNS, "sort=asc", "sort"),
        (WORKERS, "heartbeat_state=old", "heartbeat_state"),
        (WORKERS, "status=created", "status"),
        (WORKERS, "owner_user_id=-3", "owner_user_id"),
        (
            WORKERS,
            "cursor=r1.0123456789abcdef0123456789abcdef",
            "cursor",
        ),
        (WORKERS, "worker_id=w", "worker_id"),
        (WORKERS, "limit=1000", "limit"),
    ] {
        refused(route, query, param);
    }
    // The run is untouched and still listed.
    assert_eq!(run_ids(&server, ""), [run.as_str()]);
    assert_eq!(
        get(&server, &format!("/internal/v1/runs/{run}"))["run"]["latest_seq"],
        1
    );
}

#[test]
fn worker_filters_use_the_liveness_rule_of_the_worker_routes() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(
        data.path(),
        &[("RUNTIME_WORKER_HEARTBEAT_STALE_AFTER_MS", "1000")],
    );
    let register = |body: Value| {
        let (status, answer) = server.call("POST", "/internal/v1/workers", Some(body));
        assert_eq!(status, 201, "{answer}");
    };
    register(json!({"worker_id": "w-quiet", "owner_user_id": 1}));
    register(json!({"worker_id": "w-gone", "owner_user_id": 2}));
    let (status, answer) = server.call(
        "POST",
        "/internal/v1/workers/w-gone/status",
        Some(json!({"owner_user_id": 2, "status": "stopped"})),
    );
    assert_eq!(status, 200, "{answer}");
    std::thread::sleep(Duration::from_millis(1300));
    register(json!({"worker_id": "w-busy", "owner_guest_scope": "team"}));

    let workers = |query: &str| {
        let page = get(&server, &format!("/internal/v1/workers?{query}"));
        page["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["worker"]["worker_id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(workers(""), ["w-busy", "w-gone", "w-quiet"], "by id");
    assert_eq!(workers("heartbeat_state=stale"), ["w-quiet"]);
    assert_eq!(workers("heartbeat_state=fresh"), ["w-busy"]);
    assert_eq!(workers("heartbeat_state=stopped"), ["w-gone"]);
    assert!(workers("heartbeat_state=missing").is_empty());
    assert_eq!(workers("status=stopped"), ["w-gone"]);
    assert_eq!(workers("status=running"), ["w-busy", "w-quiet"]);
    assert_eq!(workers("owner_user_id=1"), ["w-quiet"]);
    assert_eq!(workers("owner_guest_scope=team"), ["w-busy"]);
    assert_eq!(
        workers("owner_user_id=1&heartbeat_state=fresh"),
        [] as [&str; 0]
    );

    // Each row is the worker route's view, liveness included.
    let page = get(&server, "/internal/v1/workers?owner_user_id=1");
    let row = &page["workers"][0];
    let alone = get(&server, "/internal/v1/workers/w-quiet?owner_user_id=1");
    // The age moves on between the two requests; everything else is equal.
    assert_eq!(row["worker"], alone["worker"]["worker"], "same worker");
    assert_eq!(
        row["liveness"]["heartbeat_state"],
        alone["worker"]["liveness"]["heartbeat_state"]
    );
    assert_eq!(row["liveness"]["heartbeat_stale_after_ms"], 1000);

    // Paging by id.
    let first = get(&server, "/internal/v1/workers?limit=2");
    assert_eq!(ids_of_workers(&first), ["w-busy", "w-gone"]);
    let next = first["next_cursor"].as_str().unwrap();
    register(json!({"worker_id": "w-a", "owner_user_id": 3}));
    let rest = get(
        &server,
        &format!("/internal/v1/workers?limit=2&cursor={next}"),
    );
    assert_eq!(ids_of_workers(&rest), ["w-quiet"]);
    assert_eq!(rest["next_cursor"], Value::Null);
}

fn ids_of_workers(page: &Value) -> Vec<String> {
    page["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["worker"]["worker_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_list_routes_need_the_internal_token_when_one_is_set() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[("RUNTIME_INTERNAL_AUTH_TOKEN", "sesame")]);
    for route in ["/internal/v1/runs", "/internal/v1/workers"] {
        let (status, answer) = server.call("GET", route, None);
        assert_eq!(status, 401, "{answer}");
        assert_eq!(answer["reason_code"], "invalid_internal_token");
        let (status, answer) = server.call_authorized(route, "sesame");
        assert_eq!(status, 200, "{answer}");
    }
}

#[test]
fn the_console_is_served_with_its_policy() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[("RUNTIME_INTERNAL_AUTH_TOKEN", "sesame")]);
    let (status, page) = server.raw("/console");
    assert_eq!(status, 200);
    assert!(page.contains("/console/assets/app.js"), "{page}");
    let (status, script) = server.raw("/console/assets/app.js");
    assert_eq!(status, 200);
    assert!(script.contains("import"), "{script}");
    let (status, missing) = server.call("GET", "/console/assets/nope.js", None);
    assert_eq!(status, 404);
    assert_eq!(missing["error"], "not_found");
}
