//! Encoding server messages to JSON text.
//!
//! [`encode_message`] is on the fan-out hot path: it writes a `message` delivery straight into a
//! byte buffer without building a [`ServerMessage`], so the published `data` is copied once
//! and no intermediate value is allocated. Its output is the same JSON that serde would
//! produce for [`ServerMessage::Message`] (tested below).

use crate::ServerMessage;

/// Appends the JSON of a `message` delivery to `out`.
///
/// `data` must be valid JSON text (it comes from a parsed `publish` or the broker, which only
/// carries validated JSON); it is copied verbatim.
pub fn encode_message(out: &mut Vec<u8>, channel: &str, offset: u64, data: &[u8]) {
    out.reserve(48 + channel.len() + data.len());
    out.extend_from_slice(b"{\"type\":\"message\",\"channel\":");
    push_json_string(out, channel);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data);
    out.extend_from_slice(b",\"offset\":");
    out.extend_from_slice(itoa::Buffer::new().format(offset).as_bytes());
    out.push(b'}');
}

/// Serializes any server message to JSON text.
pub fn encode_server_message(message: &ServerMessage) -> String {
    // Serializing these plain types cannot fail: every map key is a string.
    serde_json::to_string(message).unwrap_or_else(|_| String::from("{}"))
}

pub(crate) fn push_json_string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_serde() {
        for (channel, data) in [
            ("chat", r#"{"text":"hi"}"#),
            ("a\"b\\c\n", "[1,2,3]"),
            ("x", "\"str\""),
        ] {
            let mut out = Vec::new();
            encode_message(&mut out, channel, 42, data.as_bytes());
            let ours: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
            let theirs = serde_json::to_value(ServerMessage::Message {
                channel: channel.to_owned(),
                data: serde_json::value::RawValue::from_string(data.to_owned()).expect("raw"),
                offset: 42,
            })
            .expect("serializes");
            assert_eq!(ours, theirs);
        }
    }
}
