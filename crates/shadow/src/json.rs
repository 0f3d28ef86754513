//! Reading the few fields the comparison needs out of loosely shaped JSON.
//!
//! The exports are read as `serde_json::Value` rather than as the producing
//! crates' types on purpose: the legacy runtime is not bound by those types,
//! and a harness that refused an export over an extra field or a reordered
//! key would report nothing at all. Only the compared fields are required.

use crate::error::LoadError;
use serde_json::Value;
use std::path::Path;

/// Parses `bytes`, the content of `path`, as one JSON document.
pub(crate) fn parse_json(path: &Path, bytes: &[u8]) -> Result<Value, LoadError> {
    serde_json::from_slice(bytes).map_err(|source| LoadError::Json {
        path: path.to_owned(),
        source,
    })
}

/// The object inside `{envelope: {...}}` when the document has that shape,
/// else the document itself: the service wraps its projector answers, a
/// hand-made or legacy export may not.
pub(crate) fn unwrap_envelope<'a>(value: &'a Value, envelope: &str) -> &'a Value {
    match value.get(envelope) {
        Some(inner @ Value::Object(_)) => inner,
        _ => value,
    }
}

/// The field `field` of `object`, which must be present.
fn require<'a>(path: &Path, object: &'a Value, field: &str) -> Result<&'a Value, LoadError> {
    object.get(field).ok_or_else(|| LoadError::MissingField {
        path: path.to_owned(),
        field: field.to_owned(),
    })
}

/// The string field `field` of `object`.
pub(crate) fn require_str<'a>(
    path: &Path,
    object: &'a Value,
    field: &str,
) -> Result<&'a str, LoadError> {
    require(path, object, field)?
        .as_str()
        .ok_or_else(|| wrong_type(path, field, "a string"))
}

/// The string field `field` of `object`, `None` when absent.
pub(crate) fn optional_str<'a>(
    path: &Path,
    object: &'a Value,
    field: &str,
) -> Result<Option<&'a str>, LoadError> {
    object
        .get(field)
        .map(|value| {
            value
                .as_str()
                .ok_or_else(|| wrong_type(path, field, "a string"))
        })
        .transpose()
}

/// The unsigned integer field `field` of `object`.
pub(crate) fn require_u64(path: &Path, object: &Value, field: &str) -> Result<u64, LoadError> {
    require(path, object, field)?
        .as_u64()
        .ok_or_else(|| wrong_type(path, field, "an unsigned integer"))
}

/// The error for a field of the wrong type.
fn wrong_type(path: &Path, field: &str, expected: &'static str) -> LoadError {
    LoadError::WrongType {
        path: path.to_owned(),
        field: field.to_owned(),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_envelope_is_opened_only_around_an_object() {
        let wrapped = json!({"summary": {"run_id": "r"}});
        assert_eq!(
            unwrap_envelope(&wrapped, "summary"),
            &json!({"run_id": "r"})
        );
        let bare = json!({"run_id": "r", "summary": "text"});
        assert_eq!(unwrap_envelope(&bare, "summary"), &bare);
    }

    #[test]
    fn fields_of_the_wrong_type_are_named() {
        let path = Path::new("summary.json");
        let value = json!({"last_seq": "7", "status": 3});
        let error = require_u64(path, &value, "last_seq").unwrap_err();
        assert_eq!(
            error.to_string(),
            "summary.json: field `last_seq` is not an unsigned integer"
        );
        assert!(matches!(
            require_str(path, &value, "status"),
            Err(LoadError::WrongType { .. })
        ));
        assert!(matches!(
            require_str(path, &value, "run_id"),
            Err(LoadError::MissingField { .. })
        ));
    }
}
