//! Why a Khala request was refused: token problems (401) and ACL refusals
//! (403), as one error type the service maps through [`ReasonCode`].

use crate::reason::ReasonCode;

/// A refused Khala request.
///
/// The messages are safe to show to the client: they never say whether a run
/// or worker exists, and never echo the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthDenial {
    /// No `Authorization` header, or a blank one.
    #[error("the Authorization header is missing")]
    MissingAuthorization,
    /// The scheme word is not `Bearer`.
    #[error("the Authorization scheme must be Bearer")]
    InvalidAuthorizationScheme,
    /// The token cannot be accepted; the defect says why.
    #[error("the sync token is invalid: {0}")]
    InvalidToken(TokenDefect),
    /// `exp` has passed.
    #[error("the sync token has expired")]
    TokenExpired,
    /// `nbf` has not been reached.
    #[error("the sync token is not valid yet")]
    TokenNotYetValid,
    /// `jti` is on the revocation list.
    #[error("the sync token has been revoked")]
    TokenRevoked,
    /// The token's `kid` names no key of the JWKS (or it has no `kid`).
    #[error("the sync token's kid names no configured key")]
    UnknownKey,
    /// The token holds none of the scopes the topic accepts.
    #[error("the sync token needs one of the scopes {} for this topic", .0.join(", "))]
    MissingScope(&'static [&'static str]),
    /// The topic's run or worker is not the principal's (or does not exist).
    #[error("the topic belongs to another owner")]
    OwnerMismatch,
}

impl AuthDenial {
    /// The reason code to answer with.
    pub fn reason(&self) -> ReasonCode {
        match self {
            Self::MissingAuthorization => ReasonCode::MissingAuthorization,
            Self::InvalidAuthorizationScheme => ReasonCode::InvalidAuthorizationScheme,
            Self::InvalidToken(_) => ReasonCode::InvalidToken,
            Self::TokenExpired => ReasonCode::TokenExpired,
            Self::TokenNotYetValid => ReasonCode::TokenNotYetValid,
            Self::TokenRevoked => ReasonCode::TokenRevoked,
            Self::UnknownKey => ReasonCode::UnknownKey,
            Self::MissingScope(_) => ReasonCode::MissingScope,
            Self::OwnerMismatch => ReasonCode::OwnerMismatch,
        }
    }

    /// The HTTP status to answer with (401 or 403).
    pub fn status(&self) -> u16 {
        self.reason().status()
    }

    /// The envelope's `error` code (`unauthorized` or `forbidden_topic`).
    pub fn error_code(&self) -> &'static str {
        self.reason().error_code()
    }
}

/// What is wrong with a token answered with `invalid_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenDefect {
    /// Longer than the accepted maximum; not parsed at all.
    #[error("token is too long")]
    TooLong,
    /// Not three base64url JSON segments, or an unknown `alg` such as `none`.
    #[error("token is not a well-formed JWT")]
    Malformed,
    /// An algorithm no configured key verifies.
    #[error("token algorithm is not one of the configured keys' (HS256, EdDSA, ES256, RS256)")]
    UnsupportedAlgorithm,
    /// The `alg` is not the algorithm of the key its `kid` names.
    #[error("token algorithm does not match the type of its key")]
    AlgorithmMismatch,
    /// The HS256 signature does not match the signing key.
    #[error("token signature does not verify")]
    BadSignature,
    /// `iss` is not the configured issuer.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `aud` does not name the configured audience.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// A required claim is absent.
    #[error("token claim `{0}` is missing")]
    MissingClaim(&'static str),
    /// A claim has a type or value the verifier does not accept.
    #[error("token claim `{0}` is malformed")]
    InvalidClaim(&'static str),
    /// The header names critical extensions (`crit`); this verifier knows
    /// none, and RFC 7515 requires refusing them.
    #[error("token header names critical extensions this service does not support")]
    CriticalHeader,
    /// The header or the claims repeat a member name, which two parsers may
    /// read as two different values.
    #[error("token header or claims repeat a member name")]
    DuplicateMember,
    /// The request carries more than one `Authorization` header.
    #[error("the request carries more than one Authorization header")]
    RepeatedHeader,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes() {
        let scope = AuthDenial::MissingScope(&["a", "b"]);
        assert_eq!(
            (scope.status(), scope.error_code()),
            (403, "forbidden_topic")
        );
        assert!(scope.to_string().contains("a, b"));
        let token = AuthDenial::InvalidToken(TokenDefect::MissingClaim("exp"));
        assert_eq!((token.status(), token.error_code()), (401, "unauthorized"));
        assert_eq!(token.reason().as_str(), "invalid_token");
    }
}
