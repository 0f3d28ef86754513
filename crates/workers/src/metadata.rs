//! The metadata merge rule shared by registration and heartbeats.

use serde_json::{Map, Value};

/// Most keys a worker's metadata may hold after a merge, so that a stream of
/// heartbeats adding new keys cannot grow a worker without bound.
pub const MAX_METADATA_KEYS: usize = 256;

/// Shallow-merges `patch` into `target`: each key of `patch` replaces the
/// key in `target`, and a key whose patch value is `null` is removed.
///
/// Removing on `null` (the top level of JSON Merge Patch, RFC 7396) gives
/// clients a way to delete a key; nested objects are replaced whole, not
/// merged, so a patch never has to restate what it keeps.
pub fn merge_metadata(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            target.insert(key.clone(), value.clone());
        }
    }
}

/// How many keys `target` would hold after [`merge_metadata`] with `patch`,
/// computed without copying either map so a limit can be checked before the
/// merge is decided.
pub fn merged_key_count(target: &Map<String, Value>, patch: &Map<String, Value>) -> usize {
    let (added, removed) = patch.iter().fold((0, 0), |(added, removed), (key, value)| {
        match (target.contains_key(key), value.is_null()) {
            (false, false) => (added + 1, removed),
            (true, true) => (added, removed + 1),
            _ => (added, removed),
        }
    });
    target.len() + added - removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn arb_map() -> impl Strategy<Value = Map<String, Value>> {
        let value = prop_oneof![Just(Value::Null), any::<i8>().prop_map(Value::from)];
        prop::collection::btree_map("[a-e]", value, 0..6).prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        #[test]
        fn the_key_count_predicts_the_merge(mut target in arb_map(), patch in arb_map()) {
            let predicted = merged_key_count(&target, &patch);
            merge_metadata(&mut target, &patch);
            prop_assert_eq!(predicted, target.len());
        }
    }

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn patch_keys_replace_null_deletes_and_nesting_is_not_merged() {
        let mut target = object(json!({"keep": 1, "replace": {"a": 1, "b": 2}, "drop": true}));
        let patch = object(json!({"replace": {"a": 9}, "drop": null, "new": "x", "absent": null}));
        merge_metadata(&mut target, &patch);
        assert_eq!(
            Value::Object(target),
            json!({"keep": 1, "replace": {"a": 9}, "new": "x"})
        );
    }

    #[test]
    fn an_empty_patch_changes_nothing() {
        let mut target = object(json!({"a": [1, 2]}));
        merge_metadata(&mut target, &Map::new());
        assert_eq!(Value::Object(target), json!({"a": [1, 2]}));
    }
}
