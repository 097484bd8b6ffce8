//! Preparing a message's variables for rendering.

use serde_json::Value;

/// Returns a copy of `value` without `null` members in any object, at any
/// depth, so that a `null` variable renders exactly like an absent one.
/// `null` elements of arrays stay, so that indexes do not shift.
pub(crate) fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(members) => Value::Object(
            members
                .iter()
                .filter(|(_, member)| !member.is_null())
                .map(|(key, member)| (key.clone(), without_nulls(member)))
                .collect(),
        ),
        Value::Array(elements) => Value::Array(elements.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Returns the JSON type name of `value` for error messages.
pub(crate) fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nulls_removed_from_nested_objects() {
        let value = json!({
            "coupon": null,
            "user": {"name": "Ada", "nickname": null},
            "items": [null, {"sku": "A1", "note": null}],
        });
        assert_eq!(
            without_nulls(&value),
            json!({
                "user": {"name": "Ada"},
                "items": [null, {"sku": "A1"}],
            })
        );
    }
}
