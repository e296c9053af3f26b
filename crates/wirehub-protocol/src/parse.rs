//! Text frame → typed [`ClientMessage`], or a [`ParseError`] with the contract's error code.
//!
//! Parsing is two steps so that each kind of bad input gets its own code: first the frame is
//! read as a JSON object whose known fields are kept as raw JSON (a syntax error is
//! `invalid_json`; valid JSON that is not an object is `invalid_message`), then `type` selects
//! the request (`unknown_type`) and each field is checked for presence and kind
//! (`invalid_message`) and channels against the naming rules (`invalid_channel`). Unknown
//! extra fields are ignored. The `id` is read first so that an error can echo it.
//!
//! Nothing here allocates for `data`: a `publish` borrows its payload from the frame.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::{ClientMessage, ErrorCode, StreamPosition, validate_channel, validate_idempotency_key};

/// Why a text frame could not be turned into a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ParseError {
    /// The request's `id`, when it could be read.
    pub id: Option<u64>,
    /// The stable error code.
    pub code: ErrorCode,
    /// An explanation for people.
    pub message: String,
}

impl ParseError {
    fn new(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        ParseError {
            id,
            code,
            message: message.into(),
        }
    }
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "present")]
    kind: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    channel: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    since: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    token: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    idempotency_key: Option<&'a RawValue>,
}

/// Keeps a field that is present (even when it is `null`) as raw JSON.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// Parses one text frame into a typed request.
///
/// # Errors
/// Returns a [`ParseError`] whose `code` is `invalid_json`, `unknown_type`, `invalid_message`
/// or `invalid_channel`, and whose `id` is the request's id when it could be read.
pub fn parse_client_message(text: &str) -> Result<ClientMessage<'_>, ParseError> {
    let fields: Fields<'_> = serde_json::from_str(text).map_err(|err| {
        if err.is_data() {
            ParseError::new(
                None,
                ErrorCode::InvalidMessage,
                format!("a message must be a JSON object with a \"type\": {err}"),
            )
        } else {
            ParseError::new(None, ErrorCode::InvalidJson, format!("invalid JSON: {err}"))
        }
    })?;
    let id = match fields.id {
        None => None,
        Some(raw) if raw.get() == "null" => None,
        Some(raw) => Some(serde_json::from_str::<u64>(raw.get()).map_err(|_| {
            ParseError::new(
                None,
                ErrorCode::InvalidMessage,
                "field `id` must be a non-negative integer",
            )
        })?),
    };
    let Some(kind) = fields.kind else {
        return Err(ParseError::new(
            id,
            ErrorCode::InvalidMessage,
            "missing field `type`",
        ));
    };
    let kind: Cow<'_, str> = serde_json::from_str(kind.get()).map_err(|_| {
        ParseError::new(
            id,
            ErrorCode::InvalidMessage,
            "field `type` must be a string",
        )
    })?;
    match &*kind {
        "subscribe" => {
            let channel = channel(id, fields.channel)?;
            let since = match fields.since {
                None => None,
                Some(raw) if raw.get() == "null" => None,
                Some(raw) => Some(serde_json::from_str::<StreamPosition>(raw.get()).map_err(
                    |_| {
                        ParseError::new(
                            id,
                            ErrorCode::InvalidMessage,
                            "field `since` must be {\"epoch\": string, \"offset\": non-negative integer}",
                        )
                    },
                )?),
            };
            Ok(ClientMessage::Subscribe { id, channel, since })
        }
        "unsubscribe" => Ok(ClientMessage::Unsubscribe {
            id,
            channel: channel(id, fields.channel)?,
        }),
        "publish" => {
            let channel = channel(id, fields.channel)?;
            let Some(data) = fields.data else {
                return Err(ParseError::new(
                    id,
                    ErrorCode::InvalidMessage,
                    "missing field `data`",
                ));
            };
            let idempotency_key = match fields.idempotency_key {
                None => None,
                Some(raw) if raw.get() == "null" => None,
                Some(raw) => {
                    let key = string_field(id, "idempotency_key", Some(raw))?;
                    validate_idempotency_key(&key)
                        .map_err(|why| ParseError::new(id, ErrorCode::InvalidMessage, why))?;
                    Some(key)
                }
            };
            Ok(ClientMessage::Publish {
                id,
                channel,
                data: Cow::Borrowed(data),
                idempotency_key,
            })
        }
        "ping" => Ok(ClientMessage::Ping { id }),
        "presence" => Ok(ClientMessage::Presence {
            id,
            channel: channel(id, fields.channel)?,
        }),
        "refresh" => {
            let token = string_field(id, "token", fields.token)?;
            Ok(ClientMessage::Refresh { id, token })
        }
        other => Err(ParseError::new(
            id,
            ErrorCode::UnknownType,
            format!(
                "unknown message type {other:?}; expected subscribe, unsubscribe, publish, ping, refresh or presence"
            ),
        )),
    }
}

fn string_field<'a>(
    id: Option<u64>,
    name: &str,
    raw: Option<&'a RawValue>,
) -> Result<Cow<'a, str>, ParseError> {
    let Some(raw) = raw else {
        return Err(ParseError::new(
            id,
            ErrorCode::InvalidMessage,
            format!("missing field `{name}`"),
        ));
    };
    serde_json::from_str::<Cow<'a, str>>(raw.get()).map_err(|_| {
        ParseError::new(
            id,
            ErrorCode::InvalidMessage,
            format!("field `{name}` must be a string"),
        )
    })
}

fn channel<'a>(id: Option<u64>, raw: Option<&'a RawValue>) -> Result<Cow<'a, str>, ParseError> {
    let channel = string_field(id, "channel", raw)?;
    validate_channel(&channel)
        .map_err(|err| ParseError::new(id, ErrorCode::InvalidChannel, err.to_string()))?;
    Ok(channel)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Parses `input` and compares the outcome, rendered compactly, with `expect`.
    #[track_caller]
    fn check(input: &str, expect: &str) {
        let got = match parse_client_message(input) {
            Ok(message) => serde_json::to_string(&message).expect("serializes"),
            Err(err) => format!("error {} id={:?}", err.code, err.id),
        };
        assert_eq!(got, expect, "input: {input}");
    }

    #[test]
    fn valid_requests() {
        check(
            r#"{"type":"subscribe","channel":"chat"}"#,
            r#"{"type":"subscribe","channel":"chat"}"#,
        );
        check(
            r#"{"type":"subscribe","channel":"chat","id":7,"since":{"epoch":"e1","offset":3}}"#,
            r#"{"type":"subscribe","id":7,"channel":"chat","since":{"epoch":"e1","offset":3}}"#,
        );
        check(
            r#"{"type":"subscribe","channel":"chat","since":null}"#,
            r#"{"type":"subscribe","channel":"chat"}"#,
        );
        check(
            r#"{"type":"unsubscribe","channel":"c","id":1}"#,
            r#"{"type":"unsubscribe","id":1,"channel":"c"}"#,
        );
        check(
            r#"{"type":"publish","channel":"c","data":{"a":[1,2]},"id":2}"#,
            r#"{"type":"publish","id":2,"channel":"c","data":{"a":[1,2]}}"#,
        );
        check(
            r#"{"type":"publish","channel":"c","data":null}"#,
            r#"{"type":"publish","channel":"c","data":null}"#,
        );
        check(
            r#"{"type":"publish","channel":"c","data":1,"idempotency_key":"k-1"}"#,
            r#"{"type":"publish","channel":"c","data":1,"idempotency_key":"k-1"}"#,
        );
        check(
            r#"{"type":"publish","channel":"c","data":1,"idempotency_key":null}"#,
            r#"{"type":"publish","channel":"c","data":1}"#,
        );
        check(
            r#"{"type":"publish","channel":"c","data":1,"idempotency_key":"","id":3}"#,
            "error invalid_message id=Some(3)",
        );
        check(
            r#"{"type":"publish","channel":"c","data":1,"idempotency_key":"a b"}"#,
            "error invalid_message id=None",
        );
        check(
            r#"{"type":"publish","channel":"c","data":1,"idempotency_key":7}"#,
            "error invalid_message id=None",
        );
        let long = "k".repeat(65);
        check(
            &format!(r#"{{"type":"publish","channel":"c","data":1,"idempotency_key":"{long}"}}"#),
            "error invalid_message id=None",
        );
        check(r#"{"type":"ping"}"#, r#"{"type":"ping"}"#);
        check(r#"{"type":"ping","id":null}"#, r#"{"type":"ping"}"#);
        check(
            r#"{"type":"ping","id":9,"extra":{"ignored":true}}"#,
            r#"{"type":"ping","id":9}"#,
        );
        check(
            r#"{"type":"refresh","token":"abc"}"#,
            r#"{"type":"refresh","token":"abc"}"#,
        );
        check(
            r#"{"type":"presence","channel":"room:1","id":4}"#,
            r#"{"type":"presence","id":4,"channel":"room:1"}"#,
        );
        check(
            r#"{"type":"subscribe","channel":"ch\u0061t"}"#,
            r#"{"type":"subscribe","channel":"chat"}"#,
        );
    }

    #[test]
    fn invalid_json() {
        check("", "error invalid_json id=None");
        check("{", "error invalid_json id=None");
        check("not json", "error invalid_json id=None");
        check(r#"{"type":"ping",}"#, "error invalid_json id=None");
    }

    #[test]
    fn invalid_message() {
        check("[]", "error invalid_message id=None");
        check("42", "error invalid_message id=None");
        check("null", "error invalid_message id=None");
        check(r#"{"id":3}"#, "error invalid_message id=Some(3)");
        check(r#"{"type":7,"id":3}"#, "error invalid_message id=Some(3)");
        check(
            r#"{"type":"ping","id":-1}"#,
            "error invalid_message id=None",
        );
        check(
            r#"{"type":"ping","id":1.5}"#,
            "error invalid_message id=None",
        );
        check(
            r#"{"type":"ping","id":"1"}"#,
            "error invalid_message id=None",
        );
        check(
            r#"{"type":"subscribe","id":4}"#,
            "error invalid_message id=Some(4)",
        );
        check(
            r#"{"type":"subscribe","channel":5}"#,
            "error invalid_message id=None",
        );
        check(
            r#"{"type":"subscribe","channel":"c","since":{"epoch":"e"}}"#,
            "error invalid_message id=None",
        );
        check(
            r#"{"type":"subscribe","channel":"c","since":{"epoch":1,"offset":2}}"#,
            "error invalid_message id=None",
        );
        check(
            r#"{"type":"publish","channel":"c","id":5}"#,
            "error invalid_message id=Some(5)",
        );
        check(r#"{"type":"refresh"}"#, "error invalid_message id=None");
        check(
            r#"{"type":"presence","id":6}"#,
            "error invalid_message id=Some(6)",
        );
        check(
            r#"{"type":"presence","channel":"room:*"}"#,
            "error invalid_channel id=None",
        );
        check(
            r#"{"type":"ping","type":"ping"}"#,
            "error invalid_message id=None",
        );
    }

    #[test]
    fn unknown_type_and_invalid_channel() {
        check(r#"{"type":"fly","id":2}"#, "error unknown_type id=Some(2)");
        check(r#"{"type":"Subscribe"}"#, "error unknown_type id=None");
        check(
            r#"{"type":"subscribe","channel":"","id":1}"#,
            "error invalid_channel id=Some(1)",
        );
        check(
            r#"{"type":"publish","channel":"a b","data":1}"#,
            "error invalid_channel id=None",
        );
        check(
            r#"{"type":"unsubscribe","channel":"chat:*"}"#,
            "error invalid_channel id=None",
        );
    }

    proptest! {
        #[test]
        fn never_panics(input in ".{0,200}") {
            let _ = parse_client_message(&input);
        }

        #[test]
        fn publish_round_trips(channel in "[a-z0-9:_-]{1,40}", text in ".{0,40}", id in proptest::option::of(any::<u64>())) {
            let data = serde_json::to_string(&text).expect("string");
            let mut request = serde_json::json!({"type": "publish", "channel": channel, "data": serde_json::from_str::<serde_json::Value>(&data).expect("json")});
            if let Some(id) = id { request["id"] = id.into(); }
            let input = request.to_string();
            let parsed = parse_client_message(&input).expect("valid publish");
            match parsed {
                ClientMessage::Publish { id: got_id, channel: got_channel, data: got_data, .. } => {
                    prop_assert_eq!(got_id, id);
                    prop_assert_eq!(&*got_channel, channel.as_str());
                    let got: String = serde_json::from_str(got_data.get()).expect("string data");
                    prop_assert_eq!(got, text);
                }
                other => prop_assert!(false, "parsed as {:?}", other),
            }
        }
    }
}
