//! Checking what the server sends against a JSON Schema (the protocol's, as served at
//! `/schema/protocol.json` or taken from `wirehub_protocol`).

use serde_json::Value;

/// Asserts that `value` matches `schema`, listing every violation when it does not.
///
/// # Panics
/// When the schema does not compile or the value does not match it.
#[track_caller]
pub fn assert_schema(schema: &Value, value: &Value) {
    let validator = jsonschema::validator_for(schema).expect("the schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{value} does not match the schema: {errors:?}"
    );
}

/// Whether `value` matches `schema` (to show that a schema refuses what it should).
///
/// # Panics
/// When the schema does not compile.
pub fn matches_schema(schema: &Value, value: &Value) -> bool {
    jsonschema::validator_for(schema)
        .expect("the schema compiles")
        .is_valid(value)
}
