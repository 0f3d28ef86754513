//! Worker ids: what a client may choose, what the server issues, and the
//! validated [`WorkerId`] that carries the rule in its type.

use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// Longest worker id accepted, in characters.
pub const MAX_WORKER_ID_CHARS: usize = 200;

/// Prefix of the ids the server issues when a registration names none.
pub const GENERATED_WORKER_ID_PREFIX: &str = "codexw_";

/// Why a worker id is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerIdError {
    /// The id is empty.
    #[error("worker_id must not be empty")]
    Empty,
    /// The id is longer than [`MAX_WORKER_ID_CHARS`].
    #[error("worker_id has {chars} characters; at most {MAX_WORKER_ID_CHARS} are allowed")]
    TooLong {
        /// Length of the id, in characters.
        chars: usize,
    },
    /// The id contains whitespace or a control character.
    #[error("worker_id must not contain whitespace or control characters")]
    Whitespace,
    /// The id contains `/`, which would break the worker routes' paths.
    #[error("worker_id must not contain '/'")]
    Slash,
}

/// Checks a client-chosen worker id: 1 to [`MAX_WORKER_ID_CHARS`]
/// characters, no whitespace, no control characters, no `/`.
///
/// Control characters are refused with whitespace because they would corrupt
/// log lines and topic names just the same.
pub fn validate_worker_id(worker_id: &str) -> Result<(), WorkerIdError> {
    let chars = worker_id.chars().count();
    if chars == 0 {
        return Err(WorkerIdError::Empty);
    }
    if chars > MAX_WORKER_ID_CHARS {
        return Err(WorkerIdError::TooLong { chars });
    }
    if worker_id
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(WorkerIdError::Whitespace);
    }
    if worker_id.contains('/') {
        return Err(WorkerIdError::Slash);
    }
    Ok(())
}

/// A worker id that passed [`validate_worker_id`]: holding one proves the
/// rule was applied, so stream names and topics built from it need no check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(String);

impl WorkerId {
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for WorkerId {
    type Err = WorkerIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        validate_worker_id(s)?;
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Formats the id the server issues: `codexw_<uuid>`, with the uuid in its
/// lowercase hyphenated form. The caller generates the UUIDv7, so this stays
/// free of clocks and randomness.
pub fn generated_worker_id(uuid: Uuid) -> String {
    format!("{GENERATED_WORKER_ID_PREFIX}{}", uuid.hyphenated())
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::{Builder, Version};

    #[test]
    fn generated_ids_are_prefixed_uuids_and_valid() {
        let uuid = Builder::from_unix_timestamp_millis(1_700_000_000_000, &[7; 10]).into_uuid();
        assert_eq!(uuid.get_version(), Some(Version::SortRand));
        let id = generated_worker_id(uuid);
        assert_eq!(id, format!("codexw_{uuid}"));
        assert_eq!(id.len(), "codexw_".len() + 36);
        assert_eq!(validate_worker_id(&id), Ok(()));
    }

    #[test]
    fn length_is_counted_in_characters() {
        assert_eq!(validate_worker_id(&"é".repeat(200)), Ok(()));
        assert_eq!(
            validate_worker_id(&"a".repeat(201)),
            Err(WorkerIdError::TooLong { chars: 201 })
        );
        assert_eq!(validate_worker_id(""), Err(WorkerIdError::Empty));
    }

    #[test]
    fn whitespace_control_and_slash_are_refused() {
        for bad in ["a b", "a\tb", "a\u{a0}b", "a\u{0}b", "line\n"] {
            assert_eq!(
                validate_worker_id(bad),
                Err(WorkerIdError::Whitespace),
                "{bad:?}"
            );
        }
        assert_eq!(validate_worker_id("a/b"), Err(WorkerIdError::Slash));
        assert_eq!(validate_worker_id("worker:1.a_b-c"), Ok(()));
    }
}
