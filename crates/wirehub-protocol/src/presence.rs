//! Presence members as they go over the wire (`join`, `leave`, `presence`, webhooks).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A member of a presence channel: one connection, with the user and optional `info` of its
/// token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Member {
    /// The connection's session id.
    pub client: String,
    /// The token's `sub`, or null for a connection without a token.
    pub user: Option<String>,
    /// The token's optional `info` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_without_info_has_no_info_field_and_keeps_a_null_user() {
        let member = Member {
            client: "7".to_owned(),
            user: None,
            info: None,
        };
        let text = serde_json::to_string(&member).expect("a member serializes");
        assert_eq!(text, r#"{"client":"7","user":null}"#);
        let back: Member = serde_json::from_str(&text).expect("a member parses");
        assert_eq!(back, member);
    }
}
