//! The one place where failures become the contract's JSON error envelope:
//! `{"error", "message", "reason_code"?, "details"}` with its status code.
//!
//! Domain crates return typed errors; handlers return [`ApiError`]; the
//! `From` impls below are the whole mapping.

use crate::authority::AuthorityError;
use crate::khala::KhalaError;
use crate::queries::QueryError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use openagents_authority::DecisionError;
use openagents_event_log::{LogFailure, ReadError};
use serde_json::{Value, json};

/// Characters of client input that a message or a log line may repeat.
const ECHO_CHARS: usize = 64;
/// Characters of an error message; longer ones (a framework's sentence that
/// quotes the input) are cut.
const MESSAGE_CHARS: usize = 256;

/// `input` as messages and logs may repeat it: at most 64 characters, and
/// when cut, the prefix followed by `…(N bytes)` naming the whole length.
/// The one helper every echo of client input goes through.
pub(crate) fn clip(input: &str) -> String {
    clip_to(input, ECHO_CHARS)
}

fn clip_to(input: &str, chars: usize) -> String {
    match input.char_indices().nth(chars) {
        None => input.to_owned(),
        Some((cut, _)) => format!("{}…({} bytes)", &input[..cut], input.len()),
    }
}

/// A failed request as the client will see it.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    error: &'static str,
    message: String,
    reason_code: Option<&'static str>,
    details: Value,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            message: clip_to(&message.into(), MESSAGE_CHARS),
            reason_code: None,
            details: json!({}),
        }
    }

    /// Adds the contract's `reason_code`.
    pub(crate) fn with_reason(mut self, reason_code: &'static str) -> Self {
        self.reason_code = Some(reason_code);
        self
    }

    /// Adds structured `details`.
    pub(crate) fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// 400: malformed input.
    pub(crate) fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 404: no such run, worker, checkpoint, report or route.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: the request conflicts with what the log already holds.
    pub(crate) fn conflict(reason_code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message).with_reason(reason_code)
    }

    /// 410 `reason_code: run_erased`: the run was erased; `details` is what
    /// the caller may see of its tombstone.
    pub(crate) fn run_erased(message: impl Into<String>, details: Value) -> Self {
        Self::new(StatusCode::GONE, "gone", message)
            .with_reason("run_erased")
            .with_details(details)
    }

    /// 405: the route exists, the method does not.
    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route",
        )
    }

    /// 503: state is still being recovered.
    pub(crate) fn not_ready() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the service is recovering its state; retry shortly",
        )
    }

    /// 503 `reason_code: storage_unavailable`: the shared database cannot be
    /// reached; nothing was written, and the request may be retried.
    pub(crate) fn storage_unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            .with_reason("storage_unavailable")
    }

    /// 408: the client stopped sending its request body, or sent it slower
    /// than the service accepts.
    pub(crate) fn body_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body did not arrive in time (RUNTIME_BODY_READ_TIMEOUT_MS, RUNTIME_BODY_MIN_BYTES_PER_SEC)",
        )
    }

    /// 503 `reason_code: body_budget_exhausted`: request bodies in flight
    /// already hold `RUNTIME_MAX_BODY_BYTES_IN_FLIGHT`; retry shortly.
    pub(crate) fn body_budget_exhausted() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "too many request bodies are in flight; retry shortly",
        )
        .with_reason("body_budget_exhausted")
    }

    /// 501 `reason_code: unsupported_transfer_coding`: a transfer coding
    /// other than `chunked` (RFC 9112 §6.1).
    pub(crate) fn unsupported_transfer_coding() -> Self {
        Self::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            "the only transfer coding accepted is chunked",
        )
        .with_reason("unsupported_transfer_coding")
    }

    /// What answers a request that hyper could not parse, before routing:
    /// 414 (request target too long), 431 (header section too large) or
    /// 400 (anything else malformed, such as a NUL byte in a header).
    pub(crate) fn unparsable(status: StatusCode) -> Self {
        match status {
            StatusCode::URI_TOO_LONG => Self::new(
                status,
                "uri_too_long",
                "the request target is longer than the service accepts",
            ),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => Self::new(
                status,
                "headers_too_large",
                "the request header section is larger than the service accepts",
            ),
            _ => Self::invalid_request("the request is not well-formed HTTP/1.1")
                .with_reason("malformed_http"),
        }
    }

    /// The envelope as JSON bytes, for answers written below the router.
    pub(crate) fn to_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.body()).unwrap_or_default()
    }

    fn body(&self) -> Value {
        let mut body =
            json!({"error": self.error, "message": self.message, "details": self.details});
        if let Some(reason) = self.reason_code {
            body["reason_code"] = json!(reason);
        }
        body
    }

    /// 500: a bug or an I/O failure; the message names it.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// An error with a status and code of its own, for the contract's less
    /// common envelopes (Khala denials, frozen writes).
    pub(crate) fn custom(
        status: StatusCode,
        error: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self::new(status, error, message)
    }

    /// The reason code, for logs and metrics.
    pub(crate) fn reason_code(&self) -> Option<&'static str> {
        self.reason_code
    }

    /// The status code, for logs and metrics.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

impl From<AuthorityError> for ApiError {
    fn from(error: AuthorityError) -> Self {
        let message = error.to_string();
        match error {
            AuthorityError::Decision(decision) => decision_error(decision, message),
            AuthorityError::WriteFrozen(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "write_path_frozen",
                message,
            ),
            AuthorityError::Log(failure) => failure.into(),
            AuthorityError::Read(failure) => failure.into(),
            AuthorityError::Artifact(_) | AuthorityError::Respond(_) => ApiError::internal(message),
        }
    }
}

/// The envelope of each rule a decision applies.
fn decision_error(error: DecisionError, message: String) -> ApiError {
    use DecisionError::*;
    match error {
        RunNotFound(_) | WorkerNotFound(_) => ApiError::not_found(message),
        RunErased { run, erasure } => {
            ApiError::run_erased(message, crate::types::tombstone_view(run, &erasure))
        }
        RunNotSealed(_) => ApiError::conflict("run_not_sealed", message),
        ReservedEventType(_) => {
            ApiError::invalid_request(message).with_reason("reserved_event_type")
        }
        RunState(rule) => {
            let reason = rule.reason_code();
            if reason == "run_terminal" {
                ApiError::conflict(reason, message)
            } else {
                ApiError::invalid_request(message).with_reason(reason)
            }
        }
        IdempotencyKeyReused => ApiError::conflict("idempotency_key_reused", message),
        SequenceConflict { expected, actual } => ApiError::conflict("sequence_conflict", message)
            .with_details(
                json!({"expected_previous_seq": expected, "actual_previous_seq": actual}),
            ),
        InvalidRequest(_) | Owner(_) => ApiError::invalid_request(message),
        WorkerTransition(rule) => {
            ApiError::invalid_request(message).with_reason(rule.reason_code())
        }
        OwnerMismatch => ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
        Read(failure) => failure.into(),
        // A decision that breaks a rule the log checks itself is a bug.
        Append(_) => ApiError::internal(message),
    }
}

impl From<LogFailure> for ApiError {
    fn from(failure: LogFailure) -> Self {
        match failure {
            LogFailure::Poisoned(_) => ApiError::internal(failure.to_string()),
            LogFailure::Overloaded | LogFailure::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                failure.to_string(),
            ),
            LogFailure::Unavailable(_) => ApiError::storage_unavailable(failure.to_string()),
            LogFailure::OutcomeUnknown(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                // The advice first: long messages are clipped at their end.
                format!("retry with the same idempotency key: {failure}"),
            )
            .with_reason("commit_outcome_unknown"),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Unavailable(_) => ApiError::storage_unavailable(error.to_string()),
            ReadError::Io(_) | ReadError::Damaged { .. } => ApiError::internal(error.to_string()),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        let details = json!({"parameter": error.param});
        ApiError::invalid_request(error.to_string())
            .with_reason("invalid_query_parameter")
            .with_details(details)
    }
}

impl From<KhalaError> for ApiError {
    fn from(error: KhalaError) -> Self {
        let message = error.to_string();
        let coded = |reason: openagents_khala::reason::ReasonCode| {
            let status =
                StatusCode::from_u16(reason.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            ApiError::new(status, reason.error_code(), message.clone()).with_reason(reason.as_str())
        };
        match error {
            KhalaError::NotConfigured => {
                coded(openagents_khala::reason::ReasonCode::SyncAuthNotConfigured)
            }
            KhalaError::TooManyWaiters => {
                coded(openagents_khala::reason::ReasonCode::TooManyWaiters)
            }
            KhalaError::TooManyStreams => {
                coded(openagents_khala::reason::ReasonCode::TooManyStreams)
            }
            KhalaError::Denied(denial) => coded(denial.reason()),
            KhalaError::Topic(error) => coded(error.reason()),
            KhalaError::Params(error) => coded(error.reason()),
            KhalaError::Stale(stale) => {
                let details = serde_json::to_value(&stale).unwrap_or_default();
                ApiError::new(StatusCode::GONE, "stale_cursor", message).with_details(details)
            }
            // A sync token's holder sees that the run is gone and when,
            // not the tombstone's internal fields (credential, reason).
            KhalaError::RunErased { run, erased_at } => {
                ApiError::run_erased(message, json!({"run_id": run, "erased_at": erased_at}))
            }
            KhalaError::Read(error) => error.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_input_and_cuts_long_input_on_a_character() {
        assert_eq!(clip("abc"), "abc");
        let long = "é".repeat(30_000);
        let clipped = clip(&long);
        assert!(clipped.starts_with(&"é".repeat(64)), "{clipped}");
        assert!(clipped.ends_with("…(60000 bytes)"), "{clipped}");
        assert!(clipped.len() < 200);
    }

    #[test]
    fn messages_are_clipped() {
        let error = ApiError::invalid_request("x".repeat(900_000));
        assert!(error.message.len() < 400, "{}", error.message.len());
    }
}
