//! Request extractors whose rejections are the contract's JSON envelope:
//! malformed JSON, a wrong content type, an oversized body, a bad path
//! segment or query all become [`ApiError`]s here instead of the framework's
//! plain-text answers.
//!
//! A JSON body is also where an integer outside the 64-bit range is
//! refused: `serde_json` would read `18446744073709551616` as the float
//! `1.8446744073709552e19`, and the record would silently hold another
//! number than the client sent (see `docs/DECISIONS.md`).

use crate::error::ApiError;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

/// How much of an offending number a refusal repeats.
const ECHO_CHARS: usize = 40;

/// A JSON body.
pub(crate) struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        // Content type, size and syntax first, exactly as the framework
        // checks them; then the numbers; then the shape.
        let raw = axum::Json::<Box<RawValue>>::from_request(request, state)
            .await
            .map_err(json_rejection)?
            .0;
        if let Some(literal) = integer_beyond_64_bits(raw.get()) {
            let shown: String = literal.chars().take(ECHO_CHARS).collect();
            let clipped = if shown.len() < literal.len() {
                "…"
            } else {
                ""
            };
            return Err(ApiError::invalid_request(format!(
                "the integer {shown}{clipped} is outside the 64-bit range \
                 (-9223372036854775808 to 18446744073709551615) that the service keeps \
                 exactly; send it as a string"
            ))
            .with_reason("integer_out_of_range"));
        }
        axum::Json::<T>::from_bytes(raw.get().as_bytes())
            .map(|axum::Json(value)| Json(value))
            .map_err(json_rejection)
    }
}

/// The first integer literal of `json` (valid JSON text) that fits neither
/// `i64` nor `u64`. Literals with a fraction or an exponent are floats and
/// are not integers here.
fn integer_beyond_64_bits(json: &str) -> Option<&str> {
    let bytes = json.as_bytes();
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'"' => {
                at += 1;
                while let Some(&inner) = bytes.get(at) {
                    at += if inner == b'\\' { 2 } else { 1 };
                    if inner == b'"' {
                        break;
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = at;
                while bytes
                    .get(at)
                    .is_some_and(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                {
                    at += 1;
                }
                let literal = &json[start..at];
                let integer = !literal.contains(['.', 'e', 'E']);
                if integer && literal.parse::<i64>().is_err() && literal.parse::<u64>().is_err() {
                    return Some(literal);
                }
            }
            _ => at += 1,
        }
    }
    None
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::custom(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body is larger than RUNTIME_MAX_BODY_BYTES",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::custom(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "request body must be JSON with content-type application/json",
        ),
        _ => ApiError::invalid_request(rejection.body_text()),
    }
}

/// Path parameters.
pub(crate) struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection: PathRejection| ApiError::invalid_request(rejection.body_text()))
    }
}

/// Query parameters.
pub(crate) struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection: QueryRejection| ApiError::invalid_request(rejection.body_text()))
    }
}

/// Every `Authorization` header's bytes (a request may repeat the header,
/// which the verifier refuses), copied out of the request, so that a
/// handler which waits (a long-poll) does not keep the connection's read
/// buffer alive through a cloned header map.
pub(crate) struct Authorization(pub Vec<Box<[u8]>>);

impl<S: Send + Sync> FromRequestParts<S> for Authorization {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Self, std::convert::Infallible> {
        let values = parts.headers.get_all(axum::http::header::AUTHORIZATION);
        Ok(Authorization(
            values.iter().map(|value| value.as_bytes().into()).collect(),
        ))
    }
}

/// A run id path segment in the one spelling every route accepts
/// (`openagents_authority::parse_run_id`: lowercase, hyphenated, as in
/// stream and topic names); any other text is 400 `invalid_request`.
pub(crate) struct RunId(pub uuid::Uuid);

impl<S: Send + Sync> FromRequestParts<S> for RunId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(text) = Path::<String>::from_request_parts(parts, state).await?;
        openagents_authority::parse_run_id(&text)
            .map(RunId)
            .map_err(|_| {
                ApiError::invalid_request(format!(
                    "run id {:?} is not a lowercase hyphenated UUID",
                    crate::error::clip(&text)
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::integer_beyond_64_bits;

    #[test]
    fn only_integers_beyond_both_64_bit_ranges_are_found() {
        for fits in [
            r#"{"v":18446744073709551615}"#,
            r#"{"v":-9223372036854775808}"#,
            r#"{"v":1.8446744073709552e19,"w":1e400}"#,
            r#"{"v":"18446744073709551616"}"#,
            r#"{"k\"18446744073709551616":0}"#,
            r#"[0,-0,12.50,3E2]"#,
        ] {
            assert_eq!(integer_beyond_64_bits(fits), None, "{fits}");
        }
        assert_eq!(
            integer_beyond_64_bits(r#"{"a":"x","v":[1,18446744073709551616]}"#),
            Some("18446744073709551616")
        );
        assert_eq!(
            integer_beyond_64_bits(r#"{"v":-9223372036854775809}"#),
            Some("-9223372036854775809")
        );
    }
}
