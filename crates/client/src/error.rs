//! What can go wrong talking to the service, and which failures a retry may
//! fix.

use crate::types::StaleCursor;
use serde_json::Value;
use std::fmt;

/// Why a call or a subscription failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The base URL is not `http://host:port`.
    #[error("invalid base URL: {0}")]
    InvalidUrl(String),
    /// The service answered with its JSON error envelope.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The connection could not be made, or was lost before the answer.
    #[error("connection failed or lost: {0}")]
    Transport(String),
    /// No answer came within the request timeout.
    #[error("no answer within the request timeout")]
    Timeout,
    /// The answer is not what the contract says.
    #[error("unexpected answer from the service: {0}")]
    Decode(String),
    /// The subscription's cursor is below the topic's retained window and no
    /// re-bootstrap callback gave a new one.
    #[error("cursor {} on {} is older than the retained window", .0.requested_cursor, .0.topic)]
    Stale(StaleCursor),
}

impl ClientError {
    /// Whether sending the same request again may succeed: a 503, a lost or
    /// refused connection, or a timeout. Writes are retried with their
    /// idempotency key, so a retry never appends twice.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Api(error) => error.status == 503,
            ClientError::Transport(_) | ClientError::Timeout => true,
            _ => false,
        }
    }
}

/// The service's error envelope: `{error, message, reason_code?, details}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The envelope's `error` code, e.g. `conflict`.
    pub error: String,
    /// The envelope's human sentence.
    pub message: String,
    /// The envelope's `reason_code`, when it has one.
    pub reason_code: Option<String>,
    /// The envelope's `details` object.
    pub details: Value,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.error)?;
        if let Some(reason) = &self.reason_code {
            write!(f, " ({reason})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// The envelope of a non-2xx answer; a body that is not one is kept as
    /// the message.
    pub(crate) fn from_body(status: u16, body: &[u8]) -> Self {
        let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let text = |field: &str| parsed[field].as_str().map(str::to_owned);
        ApiError {
            status,
            error: text("error").unwrap_or_else(|| "unknown".to_owned()),
            message: text("message")
                .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(256).collect()),
            reason_code: text("reason_code"),
            details: parsed.get("details").cloned().unwrap_or(Value::Null),
        }
    }
}
