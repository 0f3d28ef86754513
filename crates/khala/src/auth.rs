//! Sync-token verification: from an `Authorization` header and the current
//! time to a [`Principal`], or the [`AuthDenial`] that refuses it.
//!
//! `jsonwebtoken` checks the signature (HS256 with the current or previous
//! secret, or EdDSA, ES256 or RS256 with the JWKS key the `kid` names; see
//! [`crate::keys`]) and nothing else; every claim,
//! the time claims included, is checked here against the `now` the caller
//! passes in, so verification never reads a clock and tests are exact.

use crate::acl::Principal;
use crate::denial::{AuthDenial, TokenDefect};
use crate::keys::KeySet;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, RwLock};

/// Longest accepted token, in bytes; a longer one is refused unparsed.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew tolerated on `exp` and `nbf`, in seconds. Small enough not to
/// stretch a short-lived token noticeably, large enough that a token minted
/// with `nbf = now` on an issuer whose clock runs slightly ahead still works.
pub const CLOCK_LEEWAY_SECS: u64 = 5;

/// What the verifier needs to know; the keys and the revoked `jti`s may be
/// replaced later ([`SyncTokenVerifier::replace_keys`],
/// [`SyncTokenVerifier::replace_revoked_jtis`]).
#[derive(Clone)]
pub struct SyncTokenConfig {
    /// The HS256 secrets and JWKS keys tokens may be signed with.
    pub keys: KeySet,
    /// The accepted `iss` (`RUNTIME_SYNC_TOKEN_ISSUER`).
    pub issuer: String,
    /// The audience `aud` must name (`RUNTIME_SYNC_TOKEN_AUDIENCE`).
    pub audience: String,
    /// `jti`s refused although validly signed (`RUNTIME_SYNC_REVOKED_JTIS`).
    pub revoked_jtis: HashSet<String>,
}

/// Never prints key material.
impl fmt::Debug for SyncTokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncTokenConfig")
            .field("keys", &self.keys)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("revoked_jtis", &self.revoked_jtis)
            .finish()
    }
}

/// A configuration that cannot verify anything; the service refuses to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncAuthConfigError {
    /// Every token would fail the issuer check.
    #[error("the sync token issuer is empty")]
    EmptyIssuer,
    /// Every token would fail the audience check.
    #[error("the sync token audience is empty")]
    EmptyAudience,
}

/// Verifies sync tokens against one configuration.
pub struct SyncTokenVerifier {
    /// Replaced whole on a reload; a verification holds the set it started
    /// with.
    keys: RwLock<Arc<KeySet>>,
    issuer: String,
    audience: String,
    revoked_jtis: RwLock<Arc<HashSet<String>>>,
}

/// Never prints the key.
impl fmt::Debug for SyncTokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncTokenVerifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("keys", &*self.keys())
            .finish_non_exhaustive()
    }
}

impl SyncTokenVerifier {
    /// A verifier for `config`; refuses one that could never verify safely.
    pub fn new(config: SyncTokenConfig) -> Result<Self, SyncAuthConfigError> {
        if config.issuer.is_empty() {
            return Err(SyncAuthConfigError::EmptyIssuer);
        }
        if config.audience.is_empty() {
            return Err(SyncAuthConfigError::EmptyAudience);
        }
        Ok(Self {
            keys: RwLock::new(Arc::new(config.keys)),
            issuer: config.issuer,
            audience: config.audience,
            revoked_jtis: RwLock::new(Arc::new(config.revoked_jtis)),
        })
    }

    /// The keys in force.
    pub fn keys(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().expect("key set lock"))
    }

    /// Puts `keys` in force for every verification that starts from now on.
    pub fn replace_keys(&self, keys: KeySet) {
        *self.keys.write().expect("key set lock") = Arc::new(keys);
    }

    /// Replaces the revoked `jti`s for every verification from now on.
    pub fn replace_revoked_jtis(&self, jtis: HashSet<String>) {
        *self.revoked_jtis.write().expect("revoked jti lock") = Arc::new(jtis);
    }

    /// Verifies the `Authorization` header value at `now_unix_secs`.
    pub fn verify(
        &self,
        authorization: Option<&str>,
        now_unix_secs: u64,
    ) -> Result<Principal, AuthDenial> {
        self.verify_header_bytes(authorization.map(str::as_bytes), now_unix_secs)
    }

    /// Verifies every `Authorization` header value a request carries: none
    /// is `missing_authorization`, more than one is `invalid_token` (two
    /// headers could name two principals).
    pub fn verify_header_values<'a>(
        &self,
        values: impl IntoIterator<Item = &'a [u8]>,
        now_unix_secs: u64,
    ) -> Result<Principal, AuthDenial> {
        let mut values = values.into_iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(AuthDenial::InvalidToken(TokenDefect::RepeatedHeader));
        }
        self.verify_header_bytes(first, now_unix_secs)
    }

    /// Like [`SyncTokenVerifier::verify`], for a raw header value that may not
    /// be UTF-8 (HTTP allows any bytes there).
    pub fn verify_header_bytes(
        &self,
        authorization: Option<&[u8]>,
        now_unix_secs: u64,
    ) -> Result<Principal, AuthDenial> {
        let token = bearer_token(authorization)?;
        let claims = self.verified_claims(token)?;
        check_segments(token).map_err(AuthDenial::InvalidToken)?;
        let claims = Claims::parse(&claims).map_err(AuthDenial::InvalidToken)?;
        self.check(&claims, now_unix_secs)?;
        Ok(claims.principal)
    }

    /// The claims of `token` once its signature verifies under one of the
    /// keys its header selects.
    fn verified_claims(&self, token: &str) -> Result<Map<String, Value>, AuthDenial> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|err| AuthDenial::InvalidToken(signature_defect(err.kind())))?;
        let keys = self.keys();
        let (algorithm, candidates) = keys.candidates(&header)?;
        let validation = signature_only(algorithm);
        let mut defect = TokenDefect::BadSignature;
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(err) if *err.kind() == ErrorKind::InvalidSignature => {}
                Err(err) => defect = signature_defect(err.kind()),
            }
        }
        Err(AuthDenial::InvalidToken(defect))
    }

    /// The claim checks, in order: who the token is for (`iss`, `aud`), when
    /// it is valid (`exp`, `nbf`), then revocation. A token meant for another
    /// service is `invalid_token` whatever its times say.
    fn check(&self, claims: &Claims, now: u64) -> Result<(), AuthDenial> {
        let invalid = AuthDenial::InvalidToken;
        match &claims.iss {
            None => return Err(invalid(TokenDefect::MissingClaim("iss"))),
            Some(iss) if *iss != self.issuer => return Err(invalid(TokenDefect::WrongIssuer)),
            Some(_) => {}
        }
        if !claims.aud.contains(&self.audience) {
            return Err(invalid(TokenDefect::WrongAudience));
        }
        // i128 holds every i64 claim plus any u64 `now` without overflow.
        let now = i128::from(now);
        let leeway = i128::from(CLOCK_LEEWAY_SECS);
        if now >= i128::from(claims.exp) + leeway {
            return Err(AuthDenial::TokenExpired);
        }
        if claims.nbf.is_some_and(|nbf| now + leeway < i128::from(nbf)) {
            return Err(AuthDenial::TokenNotYetValid);
        }
        let revoked = Arc::clone(&self.revoked_jtis.read().expect("revoked jti lock"));
        if claims.jti.as_ref().is_some_and(|jti| revoked.contains(jti)) {
            return Err(AuthDenial::TokenRevoked);
        }
        Ok(())
    }
}

/// A `jsonwebtoken` validation that checks the signature under `algorithm`
/// only: its own claim checks read the system clock, so they are all
/// switched off and done in [`SyncTokenVerifier::check`] instead.
fn signature_only(algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation
}

/// Maps a `jsonwebtoken` failure to what the client is told.
fn signature_defect(kind: &ErrorKind) -> TokenDefect {
    match kind {
        ErrorKind::InvalidAlgorithm => TokenDefect::UnsupportedAlgorithm,
        ErrorKind::InvalidSignature => TokenDefect::BadSignature,
        // Unknown `alg` values such as `none` fail header parsing, so they
        // land here with every other malformed token.
        _ => TokenDefect::Malformed,
    }
}

/// The credentials of a `Bearer` header value, the one rule for every route
/// that takes a bearer token (Khala's sync tokens and the service's internal
/// token): the scheme word is case-insensitive and separated from the
/// credentials by ASCII whitespace (spaces or tabs); surrounding whitespace
/// is ignored. The credentials may be empty; the caller decides what that
/// means.
pub fn bearer_credentials(header: Option<&[u8]>) -> Result<&[u8], AuthDenial> {
    let header = header
        .map(<[u8]>::trim_ascii)
        .filter(|h| !h.is_empty())
        .ok_or(AuthDenial::MissingAuthorization)?;
    let scheme_end = header
        .iter()
        .position(u8::is_ascii_whitespace)
        .unwrap_or(header.len());
    let (scheme, rest) = header.split_at(scheme_end);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(AuthDenial::InvalidAuthorizationScheme);
    }
    Ok(rest.trim_ascii())
}

/// The sync token of a `Bearer` header ([`bearer_credentials`]), at most
/// [`MAX_TOKEN_BYTES`] long and UTF-8.
fn bearer_token(header: Option<&[u8]>) -> Result<&str, AuthDenial> {
    let token = bearer_credentials(header)?;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthDenial::InvalidToken(TokenDefect::TooLong));
    }
    if token.is_empty() {
        return Err(AuthDenial::InvalidToken(TokenDefect::Malformed));
    }
    std::str::from_utf8(token).map_err(|_| AuthDenial::InvalidToken(TokenDefect::Malformed))
}

/// What `jsonwebtoken` does not check in a signature-verified token: a
/// `crit` header member (RFC 7515 §4.1.11: an extension this verifier does
/// not understand must be refused, and it understands none), and member
/// names repeated in the header or the claims (`serde_json` keeps the last
/// one silently, where another parser may keep the first).
fn check_segments(token: &str) -> Result<(), TokenDefect> {
    use base64::Engine;
    let mut segments = token.split('.');
    for index in 0..2 {
        let segment = segments.next().ok_or(TokenDefect::Malformed)?;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(segment)
            .map_err(|_| TokenDefect::Malformed)?;
        let members = serde_json::from_slice::<UniqueMembers>(&json).map_err(|error| {
            if error.to_string().starts_with(DUPLICATE_MEMBER) {
                TokenDefect::DuplicateMember
            } else {
                TokenDefect::Malformed
            }
        })?;
        if index == 0 && members.0.iter().any(|name| name == "crit") {
            return Err(TokenDefect::CriticalHeader);
        }
    }
    Ok(())
}

/// Start of the error [`UniqueMembers`] raises on a repeated member name.
const DUPLICATE_MEMBER: &str = "duplicate member";

/// A JSON object whose member names, at every depth, are each used once;
/// holds the top-level names.
struct UniqueMembers(Vec<String>);

impl<'de> serde::Deserialize<'de> for UniqueMembers {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match deserializer.deserialize_any(UniqueVisitor)? {
            Some(names) => Ok(UniqueMembers(names)),
            None => Err(serde::de::Error::custom("expected a JSON object")),
        }
    }
}

/// Visits any JSON value; objects answer their member names, after
/// checking every member value the same way.
struct UniqueVisitor;

/// Any JSON value, checked by [`UniqueVisitor`].
struct UniqueValue;

impl<'de> serde::Deserialize<'de> for UniqueValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(UniqueVisitor)
            .map(|_| UniqueValue)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Option<Vec<String>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<UniqueValue>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut names = Vec::new();
        let mut seen = HashSet::new();
        while let Some(name) = map.next_key::<String>()? {
            map.next_value::<UniqueValue>()?;
            if !seen.insert(name.clone()) {
                return Err(serde::de::Error::custom(DUPLICATE_MEMBER));
            }
            names.push(name);
        }
        Ok(Some(names))
    }
}

/// The claims of a signature-verified token, typed.
#[derive(Debug)]
struct Claims {
    iss: Option<String>,
    /// `aud` as a list, whether it came as a string or an array.
    aud: Vec<String>,
    exp: i64,
    nbf: Option<i64>,
    jti: Option<String>,
    principal: Principal,
}

impl Claims {
    /// Types every claim the verifier reads; a wrong type is `invalid_token`
    /// rather than silently ignored.
    fn parse(claims: &Map<String, Value>) -> Result<Self, TokenDefect> {
        Ok(Self {
            iss: optional_string(claims, "iss")?,
            aud: audience(claims)?,
            exp: optional_integer(claims, "exp")?.ok_or(TokenDefect::MissingClaim("exp"))?,
            nbf: optional_integer(claims, "nbf")?,
            jti: optional_string(claims, "jti")?,
            principal: Principal {
                user_id: user_id(claims)?,
                org_id: non_empty(optional_string(claims, "oa_org_id")?),
                device_id: non_empty(optional_string(claims, "oa_device_id")?),
                scopes: scopes(claims)?,
            },
        })
    }
}

/// A claim that is absent or `null` reads as `None`.
fn present<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    claims.get(name).filter(|v| !v.is_null())
}

fn optional_string(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, TokenDefect> {
    present(claims, name)
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or(TokenDefect::InvalidClaim(name))
        })
        .transpose()
}

/// NumericDate claims: integers only, so no float rounding decides validity.
fn optional_integer(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, TokenDefect> {
    present(claims, name)
        .map(|v| v.as_i64().ok_or(TokenDefect::InvalidClaim(name)))
        .transpose()
}

/// An empty org or device id identifies nobody.
fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|s| !s.is_empty())
}

/// `aud` as a string or an array of strings; required.
fn audience(claims: &Map<String, Value>) -> Result<Vec<String>, TokenDefect> {
    match present(claims, "aud") {
        None => Err(TokenDefect::MissingClaim("aud")),
        Some(Value::String(aud)) => Ok(vec![aud.clone()]),
        Some(Value::Array(items)) => string_list(items, "aud"),
        Some(_) => Err(TokenDefect::InvalidClaim("aud")),
    }
}

/// `oa_sync_scopes` as an array of strings; absent means no scope.
fn scopes(claims: &Map<String, Value>) -> Result<Vec<String>, TokenDefect> {
    match present(claims, "oa_sync_scopes") {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => string_list(items, "oa_sync_scopes"),
        Some(_) => Err(TokenDefect::InvalidClaim("oa_sync_scopes")),
    }
}

fn string_list(items: &[Value], name: &'static str) -> Result<Vec<String>, TokenDefect> {
    items
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or(TokenDefect::InvalidClaim(name))
        })
        .collect()
}

/// `oa_user_id` as a JSON integer, or as a string of decimal digits without a
/// sign or leading zeros (issuers that encode ids as strings), within `u64`.
fn user_id(claims: &Map<String, Value>) -> Result<Option<u64>, TokenDefect> {
    const NAME: &str = "oa_user_id";
    let parsed = match present(claims, NAME) {
        None => return Ok(None),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) if is_canonical_decimal(s) => s.parse().ok(),
        Some(_) => None,
    };
    parsed.map(Some).ok_or(TokenDefect::InvalidClaim(NAME))
}

fn is_canonical_decimal(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use proptest::prelude::*;
    use serde_json::json;

    const KEY: &[u8] = b"test-signing-key";
    const NOW: u64 = 1_700_000_000;

    fn verifier() -> SyncTokenVerifier {
        SyncTokenVerifier::new(SyncTokenConfig {
            keys: KeySet::new(&[KEY], None).unwrap(),
            issuer: "https://openagents.com".into(),
            audience: "openagents-sync".into(),
            revoked_jtis: HashSet::new(),
        })
        .unwrap()
    }

    fn sign(claims: &Value) -> String {
        encode(&Header::default(), claims, &EncodingKey::from_secret(KEY)).unwrap()
    }

    fn base_claims() -> Value {
        json!({
            "iss": "https://openagents.com",
            "aud": "openagents-sync",
            "exp": NOW + 60,
        })
    }

    fn with(extra: Value) -> Value {
        let mut claims = base_claims();
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        claims
    }

    fn verify(claims: &Value, now: u64) -> Result<Principal, AuthDenial> {
        verifier().verify(Some(&format!("Bearer {}", sign(claims))), now)
    }

    /// A token signed with `KEY` whose header and claims segments are the
    /// given JSON texts, byte for byte.
    fn sign_raw(header: &str, claims: &str) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let message = format!("{}.{}", b64.encode(header), b64.encode(claims));
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(KEY),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{message}.{signature}")
    }

    fn verify_raw(header: &str, claims: &str) -> Result<Principal, AuthDenial> {
        verifier().verify(Some(&format!("Bearer {}", sign_raw(header, claims))), NOW)
    }

    #[test]
    fn raw_tokens_verify_like_encoded_ones() {
        let claims = r#"{"iss":"https://openagents.com","aud":"openagents-sync","exp":1700000060,"oa_user_id":1}"#;
        let principal = verify_raw(r#"{"alg":"HS256","typ":"JWT"}"#, claims).unwrap();
        assert_eq!(principal.user_id, Some(1));
    }

    #[test]
    fn a_critical_header_is_refused() {
        let claims = r#"{"iss":"https://openagents.com","aud":"openagents-sync","exp":1700000060}"#;
        for header in [
            r#"{"alg":"HS256","crit":["exp"],"exp":1}"#,
            r#"{"alg":"HS256","crit":[]}"#,
        ] {
            assert_eq!(
                verify_raw(header, claims).unwrap_err(),
                AuthDenial::InvalidToken(TokenDefect::CriticalHeader),
                "{header}"
            );
        }
    }

    #[test]
    fn repeated_member_names_are_refused() {
        let twice = r#"{"iss":"https://openagents.com","aud":"openagents-sync","exp":1700000060,"oa_user_id":2,"oa_user_id":1}"#;
        let nested = r#"{"iss":"https://openagents.com","aud":"openagents-sync","exp":1700000060,"x":[{"a":1,"a":2}]}"#;
        for claims in [twice, nested] {
            assert_eq!(
                verify_raw(r#"{"alg":"HS256"}"#, claims).unwrap_err(),
                AuthDenial::InvalidToken(TokenDefect::DuplicateMember),
                "{claims}"
            );
        }
        // A repeated header member: `jsonwebtoken`'s own header parser
        // already refuses a repeated `alg`; any other name is caught here.
        let claims = r#"{"iss":"https://openagents.com","aud":"openagents-sync","exp":1700000060}"#;
        assert_eq!(
            verify_raw(r#"{"alg":"HS256","alg":"HS256"}"#, claims).unwrap_err(),
            AuthDenial::InvalidToken(TokenDefect::Malformed)
        );
        assert_eq!(
            verify_raw(r#"{"alg":"HS256","x":1,"x":2}"#, claims).unwrap_err(),
            AuthDenial::InvalidToken(TokenDefect::DuplicateMember)
        );
    }

    #[test]
    fn two_authorization_headers_are_refused() {
        let header = format!("Bearer {}", sign(&base_claims()));
        let v = verifier();
        assert!(v.verify_header_values([header.as_bytes()], NOW).is_ok());
        assert_eq!(
            v.verify_header_values([header.as_bytes(), header.as_bytes()], NOW)
                .unwrap_err(),
            AuthDenial::InvalidToken(TokenDefect::RepeatedHeader)
        );
        assert_eq!(
            v.verify_header_values(std::iter::empty(), NOW).unwrap_err(),
            AuthDenial::MissingAuthorization
        );
    }

    #[test]
    fn the_bearer_separator_is_any_ascii_whitespace() {
        assert_eq!(bearer_credentials(Some(b"Bearer\tabc")).unwrap(), b"abc");
        assert_eq!(bearer_credentials(Some(b"bearer  abc ")).unwrap(), b"abc");
        assert_eq!(bearer_credentials(Some(b"Bearer")).unwrap(), b"");
        assert_eq!(
            bearer_credentials(Some(b"Bearerabc")).unwrap_err(),
            AuthDenial::InvalidAuthorizationScheme
        );
        assert_eq!(
            bearer_credentials(Some(b" ")).unwrap_err(),
            AuthDenial::MissingAuthorization
        );
    }

    #[test]
    fn config_refuses_empty_values() {
        let config = SyncTokenConfig {
            keys: KeySet::new(&[KEY], None).unwrap(),
            issuer: "i".into(),
            audience: "a".into(),
            revoked_jtis: HashSet::new(),
        };
        assert!(!format!("{config:?}").contains("test-signing-key"));
        let no_issuer = SyncTokenConfig {
            issuer: String::new(),
            ..config.clone()
        };
        assert_eq!(
            SyncTokenVerifier::new(no_issuer).unwrap_err(),
            SyncAuthConfigError::EmptyIssuer
        );
        let no_audience = SyncTokenConfig {
            audience: String::new(),
            ..config
        };
        assert_eq!(
            SyncTokenVerifier::new(no_audience).unwrap_err(),
            SyncAuthConfigError::EmptyAudience
        );
    }

    #[test]
    fn scheme_parsing() {
        let token = sign(&base_claims());
        let v = verifier();
        for header in [
            format!("Bearer {token}"),
            format!("bearer {token}"),
            format!("BEARER \t {token}  "),
        ] {
            assert!(v.verify(Some(&header), NOW).is_ok(), "{header:?}");
        }
        assert_eq!(v.verify(None, NOW), Err(AuthDenial::MissingAuthorization));
        assert_eq!(
            v.verify(Some("  "), NOW),
            Err(AuthDenial::MissingAuthorization)
        );
        assert_eq!(
            v.verify(Some(&format!("Token {token}")), NOW),
            Err(AuthDenial::InvalidAuthorizationScheme)
        );
        assert_eq!(
            v.verify(Some(&format!("Bearer{token}")), NOW),
            Err(AuthDenial::InvalidAuthorizationScheme)
        );
        assert_eq!(
            v.verify(Some("Bearer"), NOW),
            Err(AuthDenial::InvalidToken(TokenDefect::Malformed))
        );
        assert_eq!(
            v.verify_header_bytes(Some(b"Bearer \xff\xfe"), NOW),
            Err(AuthDenial::InvalidToken(TokenDefect::Malformed))
        );
    }

    #[test]
    fn too_long_is_refused_unparsed() {
        let header = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(
            verifier().verify(Some(&header), NOW),
            Err(AuthDenial::InvalidToken(TokenDefect::TooLong))
        );
    }

    #[test]
    fn time_claims_use_the_given_clock_with_leeway() {
        let claims = with(json!({ "exp": NOW, "nbf": NOW }));
        let leeway = CLOCK_LEEWAY_SECS;
        assert!(verify(&claims, NOW + leeway - 1).is_ok());
        assert_eq!(verify(&claims, NOW + leeway), Err(AuthDenial::TokenExpired));
        assert!(verify(&claims, NOW - leeway).is_ok());
        assert_eq!(
            verify(&claims, NOW - leeway - 1),
            Err(AuthDenial::TokenNotYetValid)
        );
    }

    #[test]
    fn claim_types() {
        let cases = [
            (json!({ "exp": "soon" }), TokenDefect::InvalidClaim("exp")),
            (json!({ "exp": 1.5e9 }), TokenDefect::InvalidClaim("exp")),
            (json!({ "nbf": "now" }), TokenDefect::InvalidClaim("nbf")),
            (json!({ "iss": 1 }), TokenDefect::InvalidClaim("iss")),
            (json!({ "iss": null }), TokenDefect::MissingClaim("iss")),
            (json!({ "aud": null }), TokenDefect::MissingClaim("aud")),
            (json!({ "aud": [1] }), TokenDefect::InvalidClaim("aud")),
            (json!({ "aud": ["x", "y"] }), TokenDefect::WrongAudience),
            (json!({ "jti": 5 }), TokenDefect::InvalidClaim("jti")),
            (
                json!({ "oa_user_id": -1 }),
                TokenDefect::InvalidClaim("oa_user_id"),
            ),
            (
                json!({ "oa_user_id": "07" }),
                TokenDefect::InvalidClaim("oa_user_id"),
            ),
            (
                json!({ "oa_user_id": "+7" }),
                TokenDefect::InvalidClaim("oa_user_id"),
            ),
            (
                json!({ "oa_user_id": 7.5 }),
                TokenDefect::InvalidClaim("oa_user_id"),
            ),
            (
                json!({ "oa_org_id": 3 }),
                TokenDefect::InvalidClaim("oa_org_id"),
            ),
            (
                json!({ "oa_sync_scopes": "runtime.run_events" }),
                TokenDefect::InvalidClaim("oa_sync_scopes"),
            ),
            (
                json!({ "oa_sync_scopes": [1] }),
                TokenDefect::InvalidClaim("oa_sync_scopes"),
            ),
        ];
        for (extra, defect) in cases {
            assert_eq!(
                verify(&with(extra.clone()), NOW),
                Err(AuthDenial::InvalidToken(defect)),
                "{extra}"
            );
        }
    }

    #[test]
    fn principal_claims() {
        let claims = with(json!({
            "aud": ["other", "openagents-sync"],
            "oa_user_id": "42",
            "oa_org_id": "",
            "oa_device_id": "device-1",
            "oa_sync_scopes": ["runtime.run_events"],
        }));
        assert_eq!(
            verify(&claims, NOW),
            Ok(Principal {
                user_id: Some(42),
                org_id: None,
                device_id: Some("device-1".into()),
                scopes: vec!["runtime.run_events".into()],
            })
        );
        let numeric = with(json!({ "oa_user_id": 0, "oa_sync_scopes": null }));
        let principal = verify(&numeric, NOW).unwrap();
        assert_eq!((principal.user_id, principal.scopes.len()), (Some(0), 0));
    }

    proptest! {
        #[test]
        fn arbitrary_header_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert!(verifier().verify_header_bytes(Some(&bytes), NOW).is_err());
        }

        #[test]
        fn arbitrary_header_strings_never_panic(header in "\\PC{0,200}", now in any::<u64>()) {
            prop_assert!(verifier().verify(Some(&header), now).is_err());
        }

        #[test]
        fn jwt_shaped_garbage_never_panics(
            segments in proptest::collection::vec("[A-Za-z0-9_=+/-]{0,60}", 0..5),
        ) {
            let header = format!("Bearer {}", segments.join("."));
            prop_assert!(verifier().verify(Some(&header), NOW).is_err());
        }

        #[test]
        fn any_time_claims_never_panic(exp in any::<i64>(), nbf in any::<i64>(), now in any::<u64>()) {
            let claims = with(json!({ "exp": exp, "nbf": nbf }));
            let _ = verify(&claims, now);
        }
    }
}
