//! Key and pub/sub channel names, and the pub/sub payload format.
//!
//! For channel `news` and the default prefix:
//! - `wirehub:{news}:epoch`: the stream's epoch (a string);
//! - `wirehub:{news}:offset`: its latest offset (`INCR`ed by every publish);
//! - `wirehub:{news}:history`: a list of `OFFSET MILLIS DATA` entries, oldest first;
//! - `wirehub:{news}:keys`: a hash, idempotency key → `EPOCH OFFSET MILLIS` of the message
//!   published with it (kept as long as the history);
//! - `wirehub:{news}:messages`: the pub/sub channel, payload `EPOCH OFFSET DATA`;
//! - `wirehub:node:ID`: one node's private pub/sub channel, for fences and canaries (one
//!   server or Sentinel);
//! - on a Redis Cluster (sharded pub/sub: a node subscribes on each shard separately) a fence
//!   travels on the channel's own `messages` channel, payload `! NODE TOKEN` (so it follows
//!   every publication before it through the same shard), and the canary of each shard on
//!   `wirehub:{TAG}:canary:ID`, `TAG` chosen to hash into a slot of that shard.
//!
//! The `{news}` hash tag keeps a channel's keys in one Redis Cluster slot, as a script needs.
//! Channel names cannot contain braces or spaces, so names cannot collide.

/// Names for one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
    node: String,
    node_channel: String,
    canary_suffix: String,
}

/// A fence payload on a channel's `messages` channel starts with this (an epoch never does).
pub(crate) const FENCE_MARK: &[u8] = b"! ";

impl Keys {
    pub(crate) fn new(prefix: &str, node: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
            node: node.to_owned(),
            node_channel: format!("{prefix}node:{node}"),
            canary_suffix: format!("}}:canary:{node}"),
        }
    }

    /// The prefix of every key (the presence keys are made in `presence`).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The payload of a fence published on a channel's `messages` channel (cluster).
    pub(crate) fn fence_payload(&self, token: u64) -> String {
        format!("! {} {token}", self.node)
    }

    /// The token of a fence payload, when the fence is this node's.
    pub(crate) fn own_fence(&self, payload: &[u8]) -> Option<u64> {
        let rest = payload.strip_prefix(FENCE_MARK)?;
        let rest = rest
            .strip_prefix(self.node.as_bytes())?
            .strip_prefix(b" ")?;
        std::str::from_utf8(rest).ok()?.parse().ok()
    }

    /// This node's canary channel in hash slot `slot` (cluster).
    pub(crate) fn canary_channel(&self, slot: u16) -> String {
        format!(
            "{}{{{}{}",
            self.prefix,
            tag_for_slot(slot),
            self.canary_suffix
        )
    }

    /// Whether `redis_channel` is one of this node's cluster canary channels.
    pub(crate) fn is_canary_channel(&self, redis_channel: &str) -> bool {
        redis_channel.starts_with(self.prefix.as_str())
            && redis_channel.ends_with(self.canary_suffix.as_str())
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

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag (the part between
/// the first `{` and the next `}`, when not empty) or of the whole key, modulo 16384.
pub(crate) fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|b| *b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|b| *b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % 16384
}

/// A short hash tag whose slot is `slot`.
pub(crate) fn tag_for_slot(slot: u16) -> String {
    let slot = slot % 16384;
    (0u32..)
        .map(|n| format!("c{n}"))
        .find(|tag| self::slot(tag.as_bytes()) == slot)
        .unwrap_or_default()
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in data {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Splits a pub/sub payload `EPOCH OFFSET DATA`.
pub(crate) fn parse_payload(payload: &[u8]) -> Option<(&str, u64, &[u8])> {
    let mut parts = payload.splitn(3, |b| *b == b' ');
    let epoch = std::str::from_utf8(parts.next()?).ok()?;
    let offset = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let data = parts.next()?;
    if epoch.is_empty() || epoch.as_bytes() == &FENCE_MARK[..1] {
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
    fn slots_are_those_of_redis_cluster() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"123456789"), 12739);
        assert_eq!(slot(b"a{foo}b"), 12182);
        assert_eq!(slot(b"{}foo"), slot(b"{}foo"));
        for wanted in [0, 1, 5000, 16383] {
            let keys = Keys::new("wirehub:", "n1");
            let channel = keys.canary_channel(wanted);
            assert_eq!(slot(channel.as_bytes()), wanted, "{channel}");
            assert!(keys.is_canary_channel(&channel));
            assert_eq!(keys.channel_of(&channel), None);
        }
        let keys = Keys::new("wirehub:", "n1");
        assert_eq!(keys.own_fence(keys.fence_payload(7).as_bytes()), Some(7));
        assert_eq!(
            Keys::new("wirehub:", "n2").own_fence(keys.fence_payload(7).as_bytes()),
            None
        );
        assert_eq!(parse_payload(keys.fence_payload(7).as_bytes()), None);
        assert_eq!(parse_payload(b"! 0123 7"), None);
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
