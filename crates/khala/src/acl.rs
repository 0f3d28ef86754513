//! The topic ACL: which scopes each topic kind needs, the owner-match rule
//! ([`Principal::owns`]), the firehose rule (only the named user's token) and
//! the per-message filter of the aggregate lane.
//!
//! Ownership facts come from the caller through a lookup; this module never
//! learns whether an entity exists beyond what the lookup says, and answers an
//! unknown entity exactly like a foreign one.

use crate::denial::AuthDenial;
use crate::message::Message;
use crate::topic::{Topic, TopicKind, WorkerId};
use uuid::Uuid;

/// Scope that lets a token read run topics.
pub const RUN_EVENTS_SCOPE: &str = "runtime.run_events";
/// Scope that lets a token read worker topics and the aggregate lane.
pub const CODEX_WORKER_EVENTS_SCOPE: &str = "runtime.codex_worker_events";
/// Alternative scope for worker topics and the aggregate lane.
pub const WORKER_LIFECYCLE_EVENTS_SCOPE: &str = "runtime.worker_lifecycle_events";

const RUN_SCOPES: &[&str] = &[RUN_EVENTS_SCOPE];
const WORKER_SCOPES: &[&str] = &[CODEX_WORKER_EVENTS_SCOPE, WORKER_LIFECYCLE_EVENTS_SCOPE];

/// Who is asking, as established by a verified sync token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Principal {
    /// `oa_user_id`: the signed-in user, when there is one.
    pub user_id: Option<u64>,
    /// `oa_org_id`: the guest scope a user-less token acts for.
    pub org_id: Option<String>,
    /// `oa_device_id`: the device the token was issued to (not used for ACL).
    pub device_id: Option<String>,
    /// `oa_sync_scopes`: what the token may read.
    pub scopes: Vec<String>,
}

impl Principal {
    /// The owner-match rule, the one place it is decided: by user id when the
    /// principal has one, otherwise by `org_id == guest_scope`.
    ///
    /// A principal with a user id never matches by guest scope, and absent
    /// values never match each other.
    pub fn owns(&self, owner: &Owner) -> bool {
        match (self.user_id, &self.org_id) {
            (Some(user_id), _) => owner.user_id == Some(user_id),
            (None, Some(org_id)) => owner.guest_scope.as_ref() == Some(org_id),
            (None, None) => false,
        }
    }

    /// Whether the token holds at least one of `accepted`.
    fn has_any_scope(&self, accepted: &[&str]) -> bool {
        self.scopes.iter().any(|s| accepted.contains(&s.as_str()))
    }
}

/// The owner of a run or worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The owning user, when a user owns it.
    pub user_id: Option<u64>,
    /// The owning guest scope, when a guest scope owns it.
    pub guest_scope: Option<String>,
}

/// The entity whose owner [`authorize`] needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity<'a> {
    /// The run of a `run:{id}:events` topic.
    Run(Uuid),
    /// The worker of a `worker:{id}:lifecycle` topic.
    Worker(&'a WorkerId),
}

/// What the caller knows about an [`Entity`]'s owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerLookup {
    /// A run with an owner.
    RunOwned(Owner),
    /// A run created without an owner: any principal with the scope may read.
    RunUnowned,
    /// A worker (workers always have an owner).
    WorkerOwned(Owner),
    /// No such run or worker.
    Unknown,
}

/// What an authorized principal may read of the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every message of the topic.
    Full,
    /// Only messages of workers the principal owns; filter each with
    /// [`aggregate_message_visible`].
    OwnedWorkersOnly,
}

/// The scopes that open a topic kind (any one of them suffices).
pub fn required_scopes(kind: TopicKind) -> &'static [&'static str] {
    match kind {
        TopicKind::Run | TopicKind::UserRuns => RUN_SCOPES,
        TopicKind::Worker | TopicKind::Aggregate | TopicKind::UserWorkers => WORKER_SCOPES,
    }
}

/// Decides whether `principal` may poll `topic`.
///
/// Scope is checked first, so `lookup` runs only for principals that could
/// read the topic kind at all. A lookup answer of the wrong kind (a worker
/// for a run topic) fails closed as `owner_mismatch`.
pub fn authorize(
    principal: &Principal,
    topic: &Topic,
    lookup: impl FnOnce(Entity<'_>) -> OwnerLookup,
) -> Result<Access, AuthDenial> {
    let scopes = required_scopes(topic.kind());
    if !principal.has_any_scope(scopes) {
        return Err(AuthDenial::MissingScope(scopes));
    }
    let allowed = match topic {
        Topic::CodexWorkerEvents => return Ok(Access::OwnedWorkersOnly),
        // A firehose carries only what its user owns, so it is the user's
        // alone: a guest-scope token, or another user's, never reads it.
        Topic::UserRuns(user) | Topic::UserWorkers(user) => principal.user_id == Some(*user),
        Topic::RunEvents(run_id) => match lookup(Entity::Run(*run_id)) {
            OwnerLookup::RunUnowned => true,
            OwnerLookup::RunOwned(owner) => principal.owns(&owner),
            OwnerLookup::WorkerOwned(_) | OwnerLookup::Unknown => false,
        },
        Topic::WorkerLifecycle(worker_id) => match lookup(Entity::Worker(worker_id)) {
            OwnerLookup::WorkerOwned(owner) => principal.owns(&owner),
            OwnerLookup::RunOwned(_) | OwnerLookup::RunUnowned | OwnerLookup::Unknown => false,
        },
    };
    if allowed {
        Ok(Access::Full)
    } else {
        Err(AuthDenial::OwnerMismatch)
    }
}

/// Whether an aggregate-lane message may be shown to `principal`: its
/// `payload.worker_id` names a worker the principal owns. A message without a
/// worker id, or of an unknown worker (`worker_owner` returns `None`), is
/// hidden.
pub fn aggregate_message_visible(
    principal: &Principal,
    message: &Message,
    worker_owner: impl FnOnce(&str) -> Option<Owner>,
) -> bool {
    message
        .payload
        .get("worker_id")
        .and_then(|id| id.as_str())
        .and_then(worker_owner)
        .is_some_and(|owner| principal.owns(&owner))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    fn principal(user_id: Option<u64>, org_id: Option<&str>) -> Principal {
        Principal {
            user_id,
            org_id: org_id.map(Into::into),
            device_id: None,
            scopes: vec![RUN_EVENTS_SCOPE.into(), CODEX_WORKER_EVENTS_SCOPE.into()],
        }
    }

    #[test]
    fn owner_match_rule() {
        let cases = [
            (principal(Some(7), None), user(7), true),
            (principal(Some(7), None), user(8), false),
            (principal(Some(7), Some("org")), guest("org"), false),
            (principal(None, Some("org")), guest("org"), true),
            (principal(None, Some("org")), guest("other"), false),
            (principal(None, Some("org")), user(7), false),
            (
                principal(None, None),
                Owner {
                    user_id: None,
                    guest_scope: None,
                },
                false,
            ),
        ];
        for (who, owner, expected) in cases {
            assert_eq!(who.owns(&owner), expected, "{who:?} {owner:?}");
        }
    }

    #[test]
    fn wrong_kind_lookup_fails_closed() {
        let run: Topic = "run:0192f1c4-7a3b-7c00-8000-00000000abcd:events"
            .parse()
            .unwrap();
        let denied = authorize(&principal(Some(7), None), &run, |_| {
            OwnerLookup::WorkerOwned(user(7))
        });
        assert_eq!(denied, Err(AuthDenial::OwnerMismatch));
    }

    #[test]
    fn a_firehose_is_its_users_alone() {
        let never = |_: Entity<'_>| -> OwnerLookup { panic!("a firehose needs no lookup") };
        for topic in [Topic::UserRuns(7), Topic::UserWorkers(7)] {
            assert_eq!(
                authorize(&principal(Some(7), None), &topic, never),
                Ok(Access::Full)
            );
            for other in [principal(Some(8), None), principal(None, Some("7"))] {
                assert_eq!(
                    authorize(&other, &topic, never),
                    Err(AuthDenial::OwnerMismatch)
                );
            }
        }
        let runs_only = Principal {
            scopes: vec![RUN_EVENTS_SCOPE.into()],
            ..principal(Some(7), None)
        };
        assert_eq!(
            authorize(&runs_only, &Topic::UserWorkers(7), never),
            Err(AuthDenial::MissingScope(WORKER_SCOPES))
        );
    }

    #[test]
    fn aggregate_filter() {
        let who = principal(Some(7), None);
        let message = |payload| Message {
            topic: "runtime.codex_worker_events".into(),
            sequence: 1,
            kind: "worker.started".into(),
            payload,
            published_at: "2025-01-01T00:00:00Z".into(),
        };
        let owners = |id: &str| match id {
            "mine" => Some(user(7)),
            "theirs" => Some(user(8)),
            _ => None,
        };
        assert!(aggregate_message_visible(
            &who,
            &message(json!({"worker_id": "mine"})),
            owners
        ));
        assert!(!aggregate_message_visible(
            &who,
            &message(json!({"worker_id": "theirs"})),
            owners
        ));
        assert!(!aggregate_message_visible(
            &who,
            &message(json!({"worker_id": "gone"})),
            owners
        ));
        assert!(!aggregate_message_visible(
            &who,
            &message(json!({"worker_id": 1})),
            owners
        ));
        assert!(!aggregate_message_visible(
            &who,
            &message(json!({})),
            owners
        ));
    }
}
