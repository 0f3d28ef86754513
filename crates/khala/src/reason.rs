//! Every reason code the Khala routes answer with, and the one table that
//! maps a code to its HTTP status and envelope `error` code.
//!
//! The HTTP layer never decides a status on its own: it asks the error for its
//! [`ReasonCode`] and reads [`ReasonCode::status`] and
//! [`ReasonCode::error_code`]. Changing a mapping therefore happens here only.

use std::fmt;

/// A machine-readable reason for a refused Khala request.
///
/// The strings returned by [`ReasonCode::as_str`] are wire contract: clients
/// branch on them, so they never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonCode {
    /// No `Authorization` header (or an empty one).
    MissingAuthorization,
    /// The header's scheme word is not `Bearer`.
    InvalidAuthorizationScheme,
    /// The token is malformed, too long, badly signed, of another algorithm,
    /// for another issuer or audience, or lacks a required claim.
    InvalidToken,
    /// The token's `exp` has passed.
    TokenExpired,
    /// The token's `nbf` is still in the future.
    TokenNotYetValid,
    /// The token's `jti` is on the revocation list.
    TokenRevoked,
    /// The token's `kid` names no key of the configured JWKS.
    UnknownKey,
    /// The token lacks every scope the topic accepts.
    MissingScope,
    /// The topic is not one that any token may read.
    ForbiddenTopic,
    /// The topic's run or worker belongs to someone else, or does not exist.
    OwnerMismatch,
    /// No signing key is configured, so no token can be verified.
    SyncAuthNotConfigured,
    /// The service already holds as many long-poll waiters as it allows.
    TooManyWaiters,
    /// The service, or the principal, already holds as many live streams as
    /// it allows.
    TooManyStreams,
    /// The request's `Origin` is not on the allowed list.
    OriginNotAllowed,
    /// The cursor is older than the retained window.
    StaleCursor,
    /// `after_seq` is not a non-negative integer.
    InvalidCursor,
    /// `limit` is not an integer in `1..=500`.
    InvalidLimit,
    /// `wait_ms` is not an integer in `0..=30000`.
    InvalidWaitMs,
}

impl ReasonCode {
    /// The code as it appears in the envelope's `reason_code` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingAuthorization => "missing_authorization",
            Self::InvalidAuthorizationScheme => "invalid_authorization_scheme",
            Self::InvalidToken => "invalid_token",
            Self::TokenExpired => "token_expired",
            Self::TokenNotYetValid => "token_not_yet_valid",
            Self::TokenRevoked => "token_revoked",
            Self::UnknownKey => "unknown_key",
            Self::MissingScope => "missing_scope",
            Self::ForbiddenTopic => "forbidden_topic",
            Self::OwnerMismatch => "owner_mismatch",
            Self::SyncAuthNotConfigured => "sync_auth_not_configured",
            Self::TooManyWaiters => "too_many_waiters",
            Self::TooManyStreams => "too_many_streams",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::StaleCursor => "stale_cursor",
            Self::InvalidCursor => "invalid_cursor",
            Self::InvalidLimit => "invalid_limit",
            Self::InvalidWaitMs => "invalid_wait_ms",
        }
    }

    /// The HTTP status a response with this reason carries.
    pub fn status(self) -> u16 {
        match self.class() {
            Class::BadRequest => 400,
            Class::Unauthorized => 401,
            Class::Forbidden | Class::ForbiddenOrigin => 403,
            Class::Gone => 410,
            Class::Unavailable => 503,
        }
    }

    /// The envelope's `error` field for this reason.
    pub fn error_code(self) -> &'static str {
        match self.class() {
            Class::BadRequest => "invalid_request",
            Class::Unauthorized => "unauthorized",
            Class::Forbidden => "forbidden_topic",
            // Not about a topic: the request came from a page it may not.
            Class::ForbiddenOrigin => "forbidden",
            Class::Gone => "stale_cursor",
            // The contract names no `error` code for these 503s; one generic
            // code keeps `reason_code` the only field clients must branch on.
            Class::Unavailable => "service_unavailable",
        }
    }

    /// Groups the codes by response, so status and `error` code cannot drift
    /// apart from each other.
    fn class(self) -> Class {
        match self {
            Self::InvalidCursor | Self::InvalidLimit | Self::InvalidWaitMs => Class::BadRequest,
            Self::MissingAuthorization
            | Self::InvalidAuthorizationScheme
            | Self::InvalidToken
            | Self::TokenExpired
            | Self::TokenNotYetValid
            | Self::TokenRevoked
            | Self::UnknownKey => Class::Unauthorized,
            Self::MissingScope | Self::ForbiddenTopic | Self::OwnerMismatch => Class::Forbidden,
            Self::StaleCursor => Class::Gone,
            Self::OriginNotAllowed => Class::ForbiddenOrigin,
            Self::SyncAuthNotConfigured | Self::TooManyWaiters | Self::TooManyStreams => {
                Class::Unavailable
            }
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds of response a reason can produce.
enum Class {
    BadRequest,
    Unauthorized,
    Forbidden,
    ForbiddenOrigin,
    Gone,
    Unavailable,
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ReasonCode; 18] = [
        ReasonCode::MissingAuthorization,
        ReasonCode::InvalidAuthorizationScheme,
        ReasonCode::InvalidToken,
        ReasonCode::TokenExpired,
        ReasonCode::TokenNotYetValid,
        ReasonCode::TokenRevoked,
        ReasonCode::UnknownKey,
        ReasonCode::MissingScope,
        ReasonCode::ForbiddenTopic,
        ReasonCode::OwnerMismatch,
        ReasonCode::SyncAuthNotConfigured,
        ReasonCode::TooManyWaiters,
        ReasonCode::TooManyStreams,
        ReasonCode::OriginNotAllowed,
        ReasonCode::StaleCursor,
        ReasonCode::InvalidCursor,
        ReasonCode::InvalidLimit,
        ReasonCode::InvalidWaitMs,
    ];

    #[test]
    fn wire_table() {
        let table: Vec<(&str, u16, &str)> = ALL
            .iter()
            .map(|r| (r.as_str(), r.status(), r.error_code()))
            .collect();
        assert_eq!(
            table,
            vec![
                ("missing_authorization", 401, "unauthorized"),
                ("invalid_authorization_scheme", 401, "unauthorized"),
                ("invalid_token", 401, "unauthorized"),
                ("token_expired", 401, "unauthorized"),
                ("token_not_yet_valid", 401, "unauthorized"),
                ("token_revoked", 401, "unauthorized"),
                ("unknown_key", 401, "unauthorized"),
                ("missing_scope", 403, "forbidden_topic"),
                ("forbidden_topic", 403, "forbidden_topic"),
                ("owner_mismatch", 403, "forbidden_topic"),
                ("sync_auth_not_configured", 503, "service_unavailable"),
                ("too_many_waiters", 503, "service_unavailable"),
                ("too_many_streams", 503, "service_unavailable"),
                ("origin_not_allowed", 403, "forbidden"),
                ("stale_cursor", 410, "stale_cursor"),
                ("invalid_cursor", 400, "invalid_request"),
                ("invalid_limit", 400, "invalid_request"),
                ("invalid_wait_ms", 400, "invalid_request"),
            ]
        );
    }

    #[test]
    fn display_is_the_wire_string() {
        for reason in ALL {
            assert_eq!(reason.to_string(), reason.as_str());
        }
    }
}
