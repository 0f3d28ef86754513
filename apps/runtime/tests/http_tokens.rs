//! Token and identifier edge cases of issue 19 through the real router: two
//! `Authorization` headers, one `Bearer` rule on Khala and on the internal
//! routes, the token checked before the query, tokens with `crit` or
//! repeated claims, and the one spelling of a run id on every route.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use support::tokens::{KEY, claims, token, user_token};
use support::{TestService, assert_error};

fn khala() -> TestService {
    TestService::start_with(|config| config.sync_token_signing_key = Some(KEY.into()))
}

async fn get(service: &TestService, uri: &str, authorization: &[&str]) -> (StatusCode, Value) {
    let mut request = Request::get(uri);
    for value in authorization {
        request = request.header(header::AUTHORIZATION, *value);
    }
    let (status, bytes) = service.send(request.body(Body::empty()).unwrap()).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A token signed with the tests' key whose header and claims are exactly
/// the given JSON texts.
fn raw_token(header: &str, claims: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let message = format!("{}.{}", b64.encode(header), b64.encode(claims));
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(KEY.as_bytes()),
        jsonwebtoken::Algorithm::HS256,
    )
    .unwrap();
    format!("{message}.{signature}")
}

#[tokio::test]
async fn khala_refuses_two_authorization_headers() {
    let service = khala();
    let run = service.create_run(json!({})).await;
    let uri = format!("/internal/v1/khala/topics/run:{run}:events/messages");
    let good = format!("Bearer {}", user_token(1));
    let (status, body) = get(&service, &uri, &[&good]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = get(&service, &uri, &[&good, &good]).await;
    assert_error(status, &body, 401, "unauthorized", Some("invalid_token"));
}

#[tokio::test]
async fn khala_checks_the_token_before_the_query() {
    let service = khala();
    let run = service.create_run(json!({})).await;
    let uri = format!("/internal/v1/khala/topics/run:{run}:events/messages?limit=1&limit=2");
    let (status, body) = get(&service, &uri, &[]).await;
    assert_error(
        status,
        &body,
        401,
        "unauthorized",
        Some("missing_authorization"),
    );
    // With a token, the repeated parameter is the problem.
    let (status, body) = get(&service, &uri, &[&format!("Bearer {}", user_token(1))]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn khala_refuses_critical_headers_and_repeated_claims() {
    let service = khala();
    let run = service.create_run(json!({"owner_user_id": 1})).await;
    let uri = format!("/internal/v1/khala/topics/run:{run}:events/messages");
    let exp = support::tokens::now() + 600;
    let base = format!(
        r#""iss":"https://openagents.com","aud":"openagents-sync","exp":{exp},"oa_sync_scopes":["runtime.run_events"]"#
    );
    let fine = raw_token(
        r#"{"alg":"HS256"}"#,
        &format!(r#"{{{base},"oa_user_id":1}}"#),
    );
    let (status, body) = get(&service, &uri, &[&format!("Bearer {fine}")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let crit = raw_token(
        r#"{"alg":"HS256","crit":["x"],"x":1}"#,
        &format!(r#"{{{base},"oa_user_id":1}}"#),
    );
    let twice = raw_token(
        r#"{"alg":"HS256"}"#,
        &format!(r#"{{{base},"oa_user_id":2,"oa_user_id":1}}"#),
    );
    for bad in [crit, twice] {
        let (status, body) = get(&service, &uri, &[&format!("Bearer {bad}")]).await;
        assert_error(status, &body, 401, "unauthorized", Some("invalid_token"));
    }
}

#[tokio::test]
async fn the_bearer_rule_is_the_same_on_khala_and_the_internal_routes() {
    let service = TestService::start_with(|config| {
        config.sync_token_signing_key = Some(KEY.into());
        config.internal_auth_token = Some("s3cret".into());
    });
    let (status, body) = get(
        &service,
        "/internal/v1/khala/fanout/hooks",
        &["Bearer\ts3cret"],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a tab separates on internal routes: {body}"
    );
    let (status, body) = get(
        &service,
        "/internal/v1/khala/fanout/hooks",
        &["bearer   s3cret "],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for refused in [&["Bearers3cret"][..], &["Bearer s3cret", "Bearer s3cret"]] {
        let (status, body) = get(&service, "/internal/v1/khala/fanout/hooks", refused).await;
        assert_error(
            status,
            &body,
            401,
            "unauthorized",
            Some("invalid_internal_token"),
        );
    }
    let run = {
        let request = Request::post("/internal/v1/runs")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, "Bearer s3cret")
            .body(Body::from("{}"))
            .unwrap();
        let (status, bytes) = service.send(request).await;
        assert_eq!(status, StatusCode::CREATED);
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        body["run"]["id"].as_str().unwrap().to_owned()
    };
    let uri = format!("/internal/v1/khala/topics/run:{run}:events/messages");
    let sync = token(claims(1, &["runtime.run_events"]));
    let (status, body) = get(&service, &uri, &[&format!("Bearer\t{sync}")]).await;
    assert_eq!(status, StatusCode::OK, "a tab separates on Khala: {body}");
}

#[tokio::test]
async fn a_run_id_has_one_spelling_on_every_route() {
    let service = khala();
    let run = service.create_run(json!({})).await;
    let simple = run.replace('-', "");
    let spellings = [
        run.to_uppercase(),
        simple.clone(),
        format!("%7B{run}%7D"),
        format!("urn:uuid:{run}"),
    ];
    for spelling in &spellings {
        for route in [
            format!("/internal/v1/runs/{spelling}"),
            format!("/internal/v1/runs/{spelling}/events"),
            format!("/internal/v1/runs/{spelling}/receipt"),
            format!("/internal/v1/projectors/run-summary/{spelling}"),
        ] {
            let (status, body) = get(&service, &route, &[]).await;
            assert_error(status, &body, 400, "invalid_request", None);
        }
        let topic = format!("/internal/v1/khala/topics/run:{spelling}:events/messages");
        let (status, body) = get(&service, &topic, &[&format!("Bearer {}", user_token(1))]).await;
        assert_error(
            status,
            &body,
            403,
            "forbidden_topic",
            Some("forbidden_topic"),
        );
    }
    let (status, body) = get(&service, &format!("/internal/v1/runs/{run}"), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
