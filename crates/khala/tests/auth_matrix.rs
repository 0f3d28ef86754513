//! The Khala auth matrix: every topic kind against every way a request can be
//! refused or allowed, through the public API in the order the service calls
//! it (verify the token, then authorize the topic).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use openagents_khala::acl::{
    Access, CODEX_WORKER_EVENTS_SCOPE, Entity, Owner, OwnerLookup, RUN_EVENTS_SCOPE,
    WORKER_LIFECYCLE_EVENTS_SCOPE, aggregate_message_visible, authorize,
};
use openagents_khala::auth::{SyncTokenConfig, SyncTokenVerifier};
use openagents_khala::keys::KeySet;
use openagents_khala::message::Message;
use openagents_khala::poll::Limit;
use openagents_khala::topic::Topic;
use openagents_khala::window::TopicWindow;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::num::NonZeroUsize;

const KEY: &[u8] = b"matrix-signing-key";
const ISSUER: &str = "https://openagents.com";
const AUDIENCE: &str = "openagents-sync";
const NOW: u64 = 1_750_000_000;
const REVOKED_JTI: &str = "jti-revoked";
const RUN_TOPIC: &str = "run:0192f1c4-7a3b-7c00-8000-00000000abcd:events";
const WORKER_TOPIC: &str = "worker:codexw_matrix:lifecycle";
const AGGREGATE_TOPIC: &str = "runtime.codex_worker_events";

/// A request shape of the matrix.
#[derive(Debug, Clone, Copy)]
enum Case {
    NoHeader,
    WrongScheme,
    Garbage,
    WrongSignature,
    AlgNone,
    Hs512,
    Rs256,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    MissingExp,
    Revoked,
    MissingScope,
    ForeignOwner,
    UnknownEntity,
    RightOwner,
    RightGuestOwner,
    UserTokenAgainstGuestOwner,
}

/// The topic kinds of the matrix; an unowned run is its own row because its
/// ownership rule differs.
#[derive(Debug, Clone, Copy)]
enum Kind {
    OwnedRun,
    UnownedRun,
    Worker,
    Aggregate,
}

/// What the matrix expects: refused with (reason, status, error), or allowed.
#[derive(Debug, PartialEq)]
enum Expect {
    Denied(&'static str, u16, &'static str),
    Allowed(Access),
}

const ALL_CASES: [Case; 19] = [
    Case::NoHeader,
    Case::WrongScheme,
    Case::Garbage,
    Case::WrongSignature,
    Case::AlgNone,
    Case::Hs512,
    Case::Rs256,
    Case::Expired,
    Case::NotYetValid,
    Case::WrongIssuer,
    Case::WrongAudience,
    Case::MissingExp,
    Case::Revoked,
    Case::MissingScope,
    Case::ForeignOwner,
    Case::UnknownEntity,
    Case::RightOwner,
    Case::RightGuestOwner,
    Case::UserTokenAgainstGuestOwner,
];

fn unauthorized(reason: &'static str) -> Expect {
    Expect::Denied(reason, 401, "unauthorized")
}

fn forbidden(reason: &'static str) -> Expect {
    Expect::Denied(reason, 403, "forbidden_topic")
}

/// The expected outcome of one cell.
fn expected(kind: Kind, case: Case) -> Expect {
    let allowed = match kind {
        Kind::Aggregate => Expect::Allowed(Access::OwnedWorkersOnly),
        _ => Expect::Allowed(Access::Full),
    };
    match (case, kind) {
        (Case::NoHeader, _) => unauthorized("missing_authorization"),
        (Case::WrongScheme, _) => unauthorized("invalid_authorization_scheme"),
        (
            Case::Garbage
            | Case::WrongSignature
            | Case::AlgNone
            | Case::Hs512
            | Case::Rs256
            | Case::WrongIssuer
            | Case::WrongAudience
            | Case::MissingExp,
            _,
        ) => unauthorized("invalid_token"),
        (Case::Expired, _) => unauthorized("token_expired"),
        (Case::NotYetValid, _) => unauthorized("token_not_yet_valid"),
        (Case::Revoked, _) => unauthorized("token_revoked"),
        (Case::MissingScope, _) => forbidden("missing_scope"),
        // The aggregate lane has no single owner: foreign workers are
        // filtered per message instead (see `aggregate_lane_filters`).
        (Case::UnknownEntity, Kind::Aggregate) => allowed,
        (Case::UnknownEntity, _) => forbidden("owner_mismatch"),
        // An unowned run is open to every holder of the scope.
        (
            Case::ForeignOwner | Case::UserTokenAgainstGuestOwner,
            Kind::Aggregate | Kind::UnownedRun,
        ) => allowed,
        (Case::ForeignOwner | Case::UserTokenAgainstGuestOwner, _) => forbidden("owner_mismatch"),
        (Case::RightOwner | Case::RightGuestOwner, _) => allowed,
    }
}

fn verifier() -> SyncTokenVerifier {
    SyncTokenVerifier::new(SyncTokenConfig {
        keys: KeySet::new(&[KEY], None).unwrap(),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        revoked_jtis: HashSet::from([REVOKED_JTI.to_owned()]),
    })
    .unwrap()
}

fn topic(kind: Kind) -> Topic {
    let name = match kind {
        Kind::OwnedRun | Kind::UnownedRun => RUN_TOPIC,
        Kind::Worker => WORKER_TOPIC,
        Kind::Aggregate => AGGREGATE_TOPIC,
    };
    name.parse().unwrap()
}

/// Scopes that open `kind`, or, for `Case::MissingScope`, only the scope of
/// the other kinds.
fn scopes(kind: Kind, case: Case) -> Vec<&'static str> {
    let run_kind = matches!(kind, Kind::OwnedRun | Kind::UnownedRun);
    match (case, run_kind) {
        (Case::MissingScope, true) => {
            vec![CODEX_WORKER_EVENTS_SCOPE, WORKER_LIFECYCLE_EVENTS_SCOPE]
        }
        (Case::MissingScope, false) => vec![RUN_EVENTS_SCOPE],
        (_, true) => vec![RUN_EVENTS_SCOPE],
        // Alternate the two accepted worker scopes across kinds.
        (_, false) if matches!(kind, Kind::Worker) => vec![WORKER_LIFECYCLE_EVENTS_SCOPE],
        (_, false) => vec![CODEX_WORKER_EVENTS_SCOPE],
    }
}

/// The claims of the token a case sends.
fn claims(kind: Kind, case: Case) -> Value {
    let mut claims = json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": NOW + 300,
        "nbf": NOW - 10,
        "jti": "jti-ok",
        "oa_user_id": 7,
        "oa_device_id": "device-1",
        "oa_sync_scopes": scopes(kind, case),
    });
    let map = claims.as_object_mut().unwrap();
    match case {
        Case::Expired => _ = map.insert("exp".into(), json!(NOW - 60)),
        Case::NotYetValid => _ = map.insert("nbf".into(), json!(NOW + 60)),
        Case::WrongIssuer => _ = map.insert("iss".into(), json!("https://evil.example")),
        Case::WrongAudience => _ = map.insert("aud".into(), json!("someone-else")),
        Case::MissingExp => _ = map.remove("exp"),
        Case::Revoked => _ = map.insert("jti".into(), json!(REVOKED_JTI)),
        Case::RightGuestOwner => {
            map.remove("oa_user_id");
            map.insert("oa_org_id".into(), json!("org-1"));
        }
        Case::UserTokenAgainstGuestOwner => _ = map.insert("oa_org_id".into(), json!("org-1")),
        _ => {}
    }
    claims
}

fn hs(alg: Algorithm, key: &[u8], claims: &Value) -> String {
    encode(&Header::new(alg), claims, &EncodingKey::from_secret(key)).unwrap()
}

/// A token whose header is written by hand, for algorithms the encoder will
/// not produce with an HMAC key.
fn hand_made(header: Value, claims: &Value, signature: &str) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    format!("{}.{}.{signature}", part(&header), part(claims))
}

/// The `Authorization` header a case sends.
fn header(kind: Kind, case: Case) -> Option<String> {
    let claims = claims(kind, case);
    let token = match case {
        Case::NoHeader => return None,
        Case::WrongScheme => return Some(format!("Basic {}", hs(Algorithm::HS256, KEY, &claims))),
        Case::Garbage => "not-a-token".to_owned(),
        Case::WrongSignature => hs(Algorithm::HS256, b"another-key", &claims),
        Case::AlgNone => hand_made(json!({"alg": "none", "typ": "JWT"}), &claims, ""),
        Case::Hs512 => hs(Algorithm::HS512, KEY, &claims),
        Case::Rs256 => hand_made(json!({"alg": "RS256", "typ": "JWT"}), &claims, "c2ln"),
        _ => hs(Algorithm::HS256, KEY, &claims),
    };
    Some(format!("Bearer {token}"))
}

/// What the service's ownership lookup answers for a case.
fn lookup(kind: Kind, case: Case, entity: Entity<'_>) -> OwnerLookup {
    let owner = match case {
        Case::UnknownEntity => return OwnerLookup::Unknown,
        Case::ForeignOwner => user(8),
        Case::RightGuestOwner | Case::UserTokenAgainstGuestOwner => guest("org-1"),
        _ => user(7),
    };
    match (kind, entity) {
        (Kind::UnownedRun, Entity::Run(_)) => OwnerLookup::RunUnowned,
        (_, Entity::Run(_)) => OwnerLookup::RunOwned(owner),
        (_, Entity::Worker(_)) => OwnerLookup::WorkerOwned(owner),
    }
}

fn user(id: u64) -> Owner {
    Owner {
        user_id: Some(id),
        guest_scope: None,
    }
}

fn guest(scope: &str) -> Owner {
    Owner {
        user_id: None,
        guest_scope: Some(scope.into()),
    }
}

/// Runs one cell the way the service does.
fn outcome(kind: Kind, case: Case) -> Expect {
    let header = header(kind, case);
    let result = verifier()
        .verify(header.as_deref(), NOW)
        .and_then(|principal| {
            authorize(&principal, &topic(kind), |entity| {
                lookup(kind, case, entity)
            })
        });
    match result {
        Ok(access) => Expect::Allowed(access),
        Err(denial) => Expect::Denied(
            denial.reason().as_str(),
            denial.status(),
            denial.error_code(),
        ),
    }
}

#[test]
fn auth_matrix() {
    let mut failures = Vec::new();
    for kind in [
        Kind::OwnedRun,
        Kind::UnownedRun,
        Kind::Worker,
        Kind::Aggregate,
    ] {
        for case in ALL_CASES {
            let (want, got) = (expected(kind, case), outcome(kind, case));
            if want != got {
                failures.push(format!(
                    "{kind:?} × {case:?}: expected {want:?}, got {got:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unknown_entity_is_refused_like_a_foreign_one() {
    for kind in [Kind::OwnedRun, Kind::Worker] {
        let foreign = verifier()
            .verify(header(kind, Case::ForeignOwner).as_deref(), NOW)
            .and_then(|p| authorize(&p, &topic(kind), |e| lookup(kind, Case::ForeignOwner, e)))
            .unwrap_err();
        let unknown = verifier()
            .verify(header(kind, Case::UnknownEntity).as_deref(), NOW)
            .and_then(|p| authorize(&p, &topic(kind), |e| lookup(kind, Case::UnknownEntity, e)))
            .unwrap_err();
        assert_eq!(foreign, unknown, "{kind:?}");
        assert_eq!(foreign.to_string(), unknown.to_string(), "{kind:?}");
    }
}

/// On the aggregate lane a principal sees only its own workers' messages, and
/// the cursor still advances over the others.
#[test]
fn aggregate_lane_filters() {
    let principal = verifier()
        .verify(header(Kind::Aggregate, Case::RightOwner).as_deref(), NOW)
        .unwrap();
    let topic = topic(Kind::Aggregate);
    let message = |sequence, worker_id: &str| Message {
        topic: AGGREGATE_TOPIC.into(),
        sequence,
        kind: "worker.heartbeat".into(),
        payload: json!({"worker_id": worker_id, "status": "running"}),
        published_at: "2025-06-15T00:00:00Z".into(),
    };
    let tail = vec![
        message(1, "mine"),
        message(2, "theirs"),
        message(3, "mine"),
        message(4, "theirs"),
    ];
    let window = TopicWindow::restore(topic, NonZeroUsize::new(8).unwrap(), tail).unwrap();
    let owners = |id: &str| match id {
        "mine" => Some(user(7)),
        "theirs" => Some(user(8)),
        _ => None,
    };

    let mut page = window
        .poll(0, Limit::DEFAULT, usize::MAX)
        .unwrap()
        .into_page()
        .unwrap();
    page.retain(|m| aggregate_message_visible(&principal, m, owners));
    let seqs: Vec<u64> = page.messages().iter().map(|m| m.sequence).collect();
    assert_eq!(seqs, vec![1, 3]);
    assert_eq!(page.plan().next_cursor(), 4);
    assert!(page.plan().replay_complete());

    let mut tail_page = window
        .poll(3, Limit::DEFAULT, usize::MAX)
        .unwrap()
        .into_page()
        .unwrap();
    tail_page.retain(|m| aggregate_message_visible(&principal, m, owners));
    assert!(tail_page.messages().is_empty());
    assert_eq!(tail_page.plan().next_cursor(), 4);
}
