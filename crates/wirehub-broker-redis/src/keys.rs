//! Key and pub/sub channel names, and the pub/sub payload format.
//!
//! For channel `news` and the default prefix:
//! - `wirehub:{news}:epoch`: the stream's epoch (a string);
//! - `wirehub:{news}:offset`: its latest offset (`INCR`ed by every publish);
//! - `wirehub:{news}:history`: a list of `OFFSET MILLIS DATA` entries, oldest first;
//! - `wirehub:{news}:keys`: a hash, idempotency key → `EPOCH OFFSET MILLIS` of the message
//!   published with it (kept as long as the history);
//! - `wirehub:{news}:messages`: the pub/sub channel, payload `EPOCH OFFSET DATA`;
//! - `wirehub:node:ID`: one node's private pub/sub channel, for fences (see `fence`).
//!
//! The `{news}` hash tag keeps a channel's keys in one Redis Cluster slot, as a script needs.
//! Channel names cannot contain braces or spaces, so names cannot collide.

/// Names for one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
    node_channel: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str, node: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
            node_channel: format!("{prefix}node:{node}"),
        }
    }

    /// The prefix of every key (the presence keys are made in `presence`).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The stream keys of a channel: epoch, offset, history (the scripts' `KEYS`).
    pub(crate) fn stream(&self, channel: &str) -> [String; 3] {
        let prefix = &self.prefix;
        [
            format!("{prefix}{{{channel}}}:epoch"),
            format!("{prefix}{{{channel}}}:offset"),
            format!("{prefix}{{{channel}}}:history"),
        ]
    }

    /// The hash of a channel's idempotency keys (the publish script's fourth key).
    pub(crate) fn idempotency(&self, channel: &str) -> String {
        format!("{}{{{channel}}}:keys", self.prefix)
    }

    /// The pub/sub channel that carries a channel's publications.
    pub(crate) fn messages(&self, channel: &str) -> String {
        format!("{}{{{channel}}}:messages", self.prefix)
    }

    /// This node's private pub/sub channel.
    pub(crate) fn node_channel(&self) -> &str {
        &self.node_channel
    }

    /// The wirehub channel of a pub/sub channel name made by [`Keys::messages`].
    pub(crate) fn channel_of<'a>(&self, redis_channel: &'a str) -> Option<&'a str> {
        redis_channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('{')?
            .strip_suffix("}:messages")
    }
}

/// Splits a pub/sub payload `EPOCH OFFSET DATA`.
pub(crate) fn parse_payload(payload: &[u8]) -> Option<(&str, u64, &[u8])> {
    let mut parts = payload.splitn(3, |b| *b == b' ');
    let epoch = std::str::from_utf8(parts.next()?).ok()?;
    let offset = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let data = parts.next()?;
    if epoch.is_empty() {
        return None;
    }
    Some((epoch, offset, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_share_a_hash_tag_and_round_trip() {
        let keys = Keys::new("wirehub:", "n1");
        assert_eq!(
            keys.stream("chat:1"),
            [
                "wirehub:{chat:1}:epoch",
                "wirehub:{chat:1}:offset",
                "wirehub:{chat:1}:history"
            ]
        );
        let messages = keys.messages("chat:1");
        assert_eq!(messages, "wirehub:{chat:1}:messages");
        assert_eq!(keys.channel_of(&messages), Some("chat:1"));
        assert_eq!(keys.channel_of("other:{chat:1}:messages"), None);
        assert_eq!(keys.channel_of(keys.node_channel()), None);
        assert_eq!(keys.node_channel(), "wirehub:node:n1");
    }

    #[test]
    fn payloads_keep_spaces_in_the_data() {
        assert_eq!(
            parse_payload(b"e1 42 {\"a\": \"b c\"}"),
            Some(("e1", 42, &b"{\"a\": \"b c\"}"[..]))
        );
        assert_eq!(parse_payload(b"e1 x {}"), None);
        assert_eq!(parse_payload(b"e1 42"), None);
        assert_eq!(parse_payload(b" 42 {}"), None);
    }
}
