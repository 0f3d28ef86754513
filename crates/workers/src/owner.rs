//! Who owns a worker (or a run), how an owner is read from a request, and
//! the one owner-match rule.
//!
//! An owner is exactly one of a user id or a guest scope. The type makes the
//! other shapes unrepresentable; the wire form stays the contract's
//! `{user_id, guest_scope}` with the unused field `null`.

use serde::{Deserialize, Serialize};

/// Longest guest scope accepted, in characters, so one field cannot grow
/// every record and index entry without bound.
pub const MAX_GUEST_SCOPE_CHARS: usize = 256;

/// The owner of a worker or run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "OwnerFields", into = "OwnerFields")]
pub enum Owner {
    /// Owned by a signed-in user.
    User(u64),
    /// Owned by a guest scope (trimmed, non-empty).
    GuestScope(String),
}

/// The contract's wire shape of an owner.
#[derive(Serialize, Deserialize)]
struct OwnerFields {
    user_id: Option<u64>,
    guest_scope: Option<String>,
}

/// Why a request's owner fields do not name exactly one owner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OwnerError {
    /// Neither field was given.
    #[error("an owner is required: give exactly one of owner_user_id or owner_guest_scope")]
    Missing,
    /// Both fields were given.
    #[error("owner_user_id and owner_guest_scope are mutually exclusive: give exactly one")]
    Both,
    /// The guest scope is empty or only whitespace.
    #[error("owner_guest_scope must not be empty")]
    EmptyGuestScope,
    /// The guest scope is longer than [`MAX_GUEST_SCOPE_CHARS`].
    #[error(
        "owner_guest_scope has {chars} characters; at most {MAX_GUEST_SCOPE_CHARS} are allowed"
    )]
    GuestScopeTooLong {
        /// Length of the trimmed scope, in characters.
        chars: usize,
    },
}

impl Owner {
    /// Reads the owner a request names; exactly one field must be given.
    ///
    /// The guest scope is trimmed before it is checked and stored, so
    /// `" team "` and `"team"` are the same owner.
    pub fn from_request(
        owner_user_id: Option<u64>,
        owner_guest_scope: Option<&str>,
    ) -> Result<Self, OwnerError> {
        Self::optional_from_request(owner_user_id, owner_guest_scope)?.ok_or(OwnerError::Missing)
    }

    /// Like [`Owner::from_request`], but no owner at all is allowed
    /// (`Ok(None)`), as for runs.
    pub fn optional_from_request(
        owner_user_id: Option<u64>,
        owner_guest_scope: Option<&str>,
    ) -> Result<Option<Self>, OwnerError> {
        match (owner_user_id, owner_guest_scope) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(OwnerError::Both),
            (Some(user_id), None) => Ok(Some(Self::User(user_id))),
            (None, Some(scope)) => guest_scope(scope).map(Some),
        }
    }

    /// The owner-match rule: `caller` owns what `self` owns when the one field
    /// each sets is the same field with the same value.
    ///
    /// A user id never matches a guest scope, even one spelling the same
    /// digits.
    pub fn matches(&self, caller: &Owner) -> bool {
        match (self, caller) {
            (Self::User(owner), Self::User(caller)) => owner == caller,
            (Self::GuestScope(owner), Self::GuestScope(caller)) => owner == caller,
            _ => false,
        }
    }

    /// The user id, when a user owns it.
    pub fn user_id(&self) -> Option<u64> {
        match self {
            Self::User(user_id) => Some(*user_id),
            Self::GuestScope(_) => None,
        }
    }

    /// The guest scope, when a guest scope owns it.
    pub fn guest_scope(&self) -> Option<&str> {
        match self {
            Self::User(_) => None,
            Self::GuestScope(scope) => Some(scope),
        }
    }
}

/// Validates and trims a guest scope.
fn guest_scope(scope: &str) -> Result<Owner, OwnerError> {
    let trimmed = scope.trim();
    let chars = trimmed.chars().count();
    if chars == 0 {
        Err(OwnerError::EmptyGuestScope)
    } else if chars > MAX_GUEST_SCOPE_CHARS {
        Err(OwnerError::GuestScopeTooLong { chars })
    } else {
        Ok(Owner::GuestScope(trimmed.to_owned()))
    }
}

impl TryFrom<OwnerFields> for Owner {
    type Error = OwnerError;

    fn try_from(fields: OwnerFields) -> Result<Self, Self::Error> {
        Self::from_request(fields.user_id, fields.guest_scope.as_deref())
    }
}

impl From<Owner> for OwnerFields {
    fn from(owner: Owner) -> Self {
        match owner {
            Owner::User(user_id) => Self {
                user_id: Some(user_id),
                guest_scope: None,
            },
            Owner::GuestScope(scope) => Self {
                user_id: None,
                guest_scope: Some(scope),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn arb_scope() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[ \t]{1,3}",
            "[ ]{0,2}[a-z0-9:_-]{1,12}[ ]{0,2}",
            "[a-z]{257,260}",
        ]
    }

    fn arb_owner() -> impl Strategy<Value = Owner> {
        prop_oneof![
            (0u64..4).prop_map(Owner::User),
            "[a-c0-3]{1,2}".prop_map(Owner::GuestScope),
        ]
    }

    proptest! {
        #[test]
        fn exactly_one_valid_field_makes_an_owner(
            user_id in proptest::option::of(any::<u64>()),
            scope in proptest::option::of(arb_scope()),
        ) {
            let result = Owner::from_request(user_id, scope.as_deref());
            let trimmed = scope.as_deref().map(str::trim);
            match (user_id, trimmed) {
                (None, None) => prop_assert_eq!(result, Err(OwnerError::Missing)),
                (Some(_), Some(_)) => prop_assert_eq!(result, Err(OwnerError::Both)),
                (Some(id), None) => prop_assert_eq!(result, Ok(Owner::User(id))),
                (None, Some("")) => prop_assert_eq!(result, Err(OwnerError::EmptyGuestScope)),
                (None, Some(t)) if t.chars().count() > MAX_GUEST_SCOPE_CHARS => {
                    prop_assert_eq!(result, Err(OwnerError::GuestScopeTooLong { chars: t.chars().count() }));
                }
                (None, Some(t)) => prop_assert_eq!(result, Ok(Owner::GuestScope(t.to_owned()))),
            }
        }

        #[test]
        fn matching_is_equality_of_the_one_set_field(a in arb_owner(), b in arb_owner()) {
            let same_field_same_value = match (&a, &b) {
                (Owner::User(x), Owner::User(y)) => x == y,
                (Owner::GuestScope(x), Owner::GuestScope(y)) => x == y,
                _ => false,
            };
            prop_assert_eq!(a.matches(&b), same_field_same_value);
            prop_assert_eq!(a.matches(&b), b.matches(&a));
            prop_assert!(a.matches(&a));
        }

        #[test]
        fn the_wire_shape_round_trips(owner in arb_owner()) {
            let json = serde_json::to_value(&owner).unwrap();
            prop_assert_eq!(&json["user_id"], &json!(owner.user_id()));
            prop_assert_eq!(&json["guest_scope"], &json!(owner.guest_scope()));
            prop_assert_eq!(serde_json::from_value::<Owner>(json).unwrap(), owner);
        }
    }

    #[test]
    fn a_user_never_matches_a_guest_scope_with_the_same_digits() {
        assert!(!Owner::User(7).matches(&Owner::GuestScope("7".into())));
    }

    #[test]
    fn runs_may_have_no_owner() {
        assert_eq!(Owner::optional_from_request(None, None), Ok(None));
        assert_eq!(
            Owner::optional_from_request(None, Some(" ")),
            Err(OwnerError::EmptyGuestScope)
        );
    }

    #[test]
    fn invalid_wire_owners_do_not_deserialize() {
        for bad in [
            json!({"user_id": null, "guest_scope": null}),
            json!({"user_id": 1, "guest_scope": "g"}),
            json!({"guest_scope": "  "}),
        ] {
            assert!(serde_json::from_value::<Owner>(bad).is_err());
        }
    }
}
