//! Named credentials and their scopes across every internal route: a
//! credential without the route's scope is 403 `missing_scope`, a missing or
//! unknown token is 401, `RUNTIME_INTERNAL_AUTH_TOKEN` holds every scope,
//! and a change of the credentials file takes effect without a restart.

mod support;

use axum::body::Body;
use axum::http::{Method, Request, header};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use support::{TestService, assert_error};

const SCOPES: [&str; 5] = [
    "runs:write",
    "runs:read",
    "workers:write",
    "workers:read",
    "admin",
];

fn sha256_hex(token: &str) -> String {
    openagents_canonical::digest_bytes(token.as_bytes())["sha256:".len()..].to_owned()
}

/// One credential per scope, named and keyed after it (`tok-runs:read`).
fn credentials_file(extra: &[(&str, &str, &[&str])]) -> Vec<u8> {
    let mut entries: Vec<Value> = SCOPES
        .iter()
        .map(|scope| {
            json!({"name": format!("only-{scope}"), "token_sha256": sha256_hex(&format!("tok-{scope}")), "scopes": [scope]})
        })
        .collect();
    for (name, token, scopes) in extra {
        entries.push(json!({"name": name, "token_sha256": sha256_hex(token), "scopes": scopes}));
    }
    serde_json::to_vec(&json!({ "credentials": entries })).unwrap()
}

fn service(path: &Path) -> TestService {
    let path = path.to_owned();
    TestService::start_with(move |config| {
        config.credentials_path = Some(path);
        config.internal_auth_token = Some("root-token".into());
    })
}

/// Every internal route but Khala's topics, with a concrete path, a body
/// for writes, and the scope it requires.
fn routes(run: &str) -> Vec<(Method, String, Option<Value>, &'static str)> {
    let r = |method: Method, path: String, body: Option<Value>, scope| (method, path, body, scope);
    vec![
        r(
            Method::GET,
            "/internal/v1/cutover/status".into(),
            None,
            "admin",
        ),
        r(
            Method::POST,
            "/internal/v1/runs".into(),
            Some(json!({})),
            "runs:write",
        ),
        r(
            Method::GET,
            format!("/internal/v1/runs/{run}"),
            None,
            "runs:read",
        ),
        r(
            Method::GET,
            format!("/internal/v1/runs/{run}/receipt"),
            None,
            "runs:read",
        ),
        r(
            Method::GET,
            format!("/internal/v1/runs/{run}/replay"),
            None,
            "runs:read",
        ),
        r(
            Method::POST,
            format!("/internal/v1/runs/{run}/events"),
            Some(json!({"event_type": "note"})),
            "runs:write",
        ),
        r(
            Method::GET,
            format!("/internal/v1/runs/{run}/events"),
            None,
            "runs:read",
        ),
        r(
            Method::GET,
            "/internal/v1/receipts/signing-key".into(),
            None,
            "runs:read",
        ),
        r(
            Method::GET,
            format!("/internal/v1/projectors/checkpoints/{run}"),
            None,
            "runs:read",
        ),
        r(
            Method::GET,
            format!("/internal/v1/projectors/run-summary/{run}"),
            None,
            "runs:read",
        ),
        r(
            Method::GET,
            "/internal/v1/projectors/drift".into(),
            None,
            "runs:read",
        ),
        r(
            Method::POST,
            "/internal/v1/workers".into(),
            Some(json!({"worker_id": "w-1", "owner_user_id": 1})),
            "workers:write",
        ),
        r(
            Method::GET,
            "/internal/v1/workers/w-1".into(),
            None,
            "workers:read",
        ),
        r(
            Method::POST,
            "/internal/v1/workers/w-1/heartbeat".into(),
            Some(json!({"owner_user_id": 1})),
            "workers:write",
        ),
        r(
            Method::POST,
            "/internal/v1/workers/w-1/status".into(),
            Some(json!({"owner_user_id": 1, "status": "running"})),
            "workers:write",
        ),
        r(
            Method::GET,
            "/internal/v1/workers/w-1/checkpoint".into(),
            None,
            "workers:read",
        ),
        r(
            Method::GET,
            "/internal/v1/khala/fanout/hooks".into(),
            None,
            "admin",
        ),
    ]
}

async fn call(
    service: &TestService,
    method: &Method,
    path: &str,
    body: &Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = body
        .as_ref()
        .map_or(Body::empty(), |b| Body::from(b.to_string()));
    let (status, bytes) = service.send(request.body(body).unwrap()).await;
    (
        status.as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn every_internal_route_requires_its_scope() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credentials.json");
    std::fs::write(&file, credentials_file(&[])).unwrap();
    let service = service(&file);
    let (status, body) = call(
        &service,
        &Method::POST,
        "/internal/v1/runs",
        &Some(json!({})),
        Some("tok-runs:write"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let run = body["run"]["id"].as_str().unwrap().to_owned();
    let routes = routes(&run);
    assert_eq!(
        routes.len(),
        17,
        "every internal route but the Khala topics"
    );
    for (method, path, body, needed) in &routes {
        for token in [None, Some("unknown-token")] {
            let (status, answer) = call(&service, method, path, body, token).await;
            assert_error(
                status.try_into().unwrap(),
                &answer,
                401,
                "unauthorized",
                Some("invalid_internal_token"),
            );
        }
        for scope in SCOPES {
            let token = format!("tok-{scope}");
            let (status, answer) = call(&service, method, path, body, Some(&token)).await;
            if scope == *needed {
                assert!(
                    status != 401 && status != 403,
                    "{method} {path} with {scope}: {status} {answer}"
                );
            } else {
                assert_error(
                    status.try_into().unwrap(),
                    &answer,
                    403,
                    "forbidden",
                    Some("missing_scope"),
                );
            }
        }
        let (status, answer) = call(&service, method, path, body, Some("root-token")).await;
        assert!(
            status != 401 && status != 403,
            "{method} {path} with the internal token: {status} {answer}"
        );
    }
    // Khala topics keep their own sync tokens.
    let (status, answer) = call(
        &service,
        &Method::GET,
        &format!("/internal/v1/khala/topics/run:{run}:events/messages"),
        &None,
        None,
    )
    .await;
    assert_eq!(
        answer["reason_code"], "sync_auth_not_configured",
        "{status}"
    );
}

#[tokio::test]
async fn a_changed_credentials_file_takes_effect_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credentials.json");
    std::fs::write(
        &file,
        credentials_file(&[("ci", "ci-token", &["runs:read"])]),
    )
    .unwrap();
    let service = service(&file);
    // Authorized reads of the signing key answer 404: no key is configured.
    let read = |token: &'static str| {
        let service = &service;
        async move {
            call(
                service,
                &Method::GET,
                "/internal/v1/receipts/signing-key",
                &None,
                Some(token),
            )
            .await
            .0
        }
    };
    assert_eq!(read("ci-token").await, 404);
    assert_eq!(read("new-token").await, 401);

    // A broken file keeps the credentials in force.
    std::fs::write(&file, b"{\"credentials\": [").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(read("ci-token").await, 404);

    let temporary = dir.path().join("credentials.tmp");
    std::fs::write(
        &temporary,
        credentials_file(&[("ci-2", "new-token", &["runs:read"])]),
    )
    .unwrap();
    std::fs::rename(&temporary, &file).unwrap();
    let changed = Instant::now();
    while read("new-token").await != 404 {
        assert!(
            changed.elapsed() < Duration::from_secs(1),
            "the new credential is not in force"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(read("ci-token").await, 401);
    assert_eq!(read("root-token").await, 404);
}

/// The `written_by` of every event of `run`, as the run view and the events
/// page show it (they must agree).
async fn writers(service: &TestService, run: &str) -> Vec<Value> {
    let (status, view) = call(
        service,
        &Method::GET,
        &format!("/internal/v1/runs/{run}"),
        &None,
        Some("root-token"),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    let (_, page) = call(
        service,
        &Method::GET,
        &format!("/internal/v1/runs/{run}/events"),
        &None,
        Some("root-token"),
    )
    .await;
    let of = |events: &Value| -> Vec<Value> {
        events
            .as_array()
            .unwrap()
            .iter()
            .map(|event| event["written_by"].clone())
            .collect()
    };
    assert_eq!(of(&view["run"]["events"]), of(&page["events"]));
    of(&view["run"]["events"])
}

/// A run created by `only-runs:write`, one event appended by it and one by
/// the internal token.
async fn write_as_two_credentials(service: &TestService) -> String {
    let (status, body) = call(
        service,
        &Method::POST,
        "/internal/v1/runs",
        &Some(json!({})),
        Some("tok-runs:write"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let run = body["run"]["id"].as_str().unwrap().to_owned();
    let uri = format!("/internal/v1/runs/{run}/events");
    let note = Some(json!({"event_type": "note"}));
    for token in ["tok-runs:write", "root-token"] {
        assert_eq!(
            call(service, &Method::POST, &uri, &note, Some(token))
                .await
                .0,
            200
        );
    }
    run
}

#[tokio::test]
async fn written_by_survives_a_restart_and_stays_out_of_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credentials.json");
    std::fs::write(&file, credentials_file(&[])).unwrap();
    let service = service(&file);
    let run = write_as_two_credentials(&service).await;
    let want = vec![
        json!("only-runs:write"),
        json!("only-runs:write"),
        json!("internal"),
    ];
    assert_eq!(writers(&service, &run).await, want);
    let receipt_uri = format!("/internal/v1/runs/{run}/receipt");
    let (_, receipt) = call(
        &service,
        &Method::GET,
        &receipt_uri,
        &None,
        Some("root-token"),
    )
    .await;
    assert!(!receipt.to_string().contains("written_by"));

    let service = service.restart();
    assert_eq!(writers(&service, &run).await, want);
    let (_, again) = call(
        &service,
        &Method::GET,
        &receipt_uri,
        &None,
        Some("root-token"),
    )
    .await;
    assert_eq!(again, receipt);
}

#[tokio::test]
async fn written_by_survives_an_import_into_postgres() {
    let Some(schema) = support::database::fresh_schema("written_by_survives_an_import") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credentials.json");
    std::fs::write(&file, credentials_file(&[])).unwrap();
    let credentials = file.clone();
    let embedded = TestService::start_with(move |config| {
        config.storage_backend = openagents_runtime_service::config::StorageBackend::Jsonl;
        config.fanout_driver = openagents_runtime_service::config::FanoutDriverKind::Memory;
        config.credentials_path = Some(credentials);
        config.internal_auth_token = Some("root-token".into());
    });
    let run = write_as_two_credentials(&embedded).await;
    let want = writers(&embedded, &run).await;
    let log_file = embedded.config.event_log_path.clone();
    let keep = std::sync::Arc::clone(&embedded.dir);
    drop(embedded);

    let mut target = openagents_runtime_service::config::Config::for_tests(keep.path());
    target.storage_backend =
        openagents_runtime_service::config::StorageBackend::Postgres { url: schema.url() };
    openagents_runtime_service::storage::import_log(&target, &log_file).unwrap();
    let moved = TestService::start_on(schema, move |config| {
        config.credentials_path = Some(file);
        config.internal_auth_token = Some("root-token".into());
    });
    assert_eq!(writers(&moved, &run).await, want);
}
