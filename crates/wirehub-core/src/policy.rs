//! Options that differ per kind of channel, chosen by the channel's name.
//!
//! The `[[channels]]` tables of the settings file become a [`ChannelRules`]: the first
//! [`ChannelOptions`] whose `pattern` matches a channel's name wins (a trailing `*` matches any
//! suffix), and a channel that matches none uses the server-wide settings.

use std::time::Duration;

use crate::history::HistoryLimits;

/// What happens to a subscription whose connection cannot keep up (its outbox is full).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnSlow {
    /// Close the connection as a slow consumer (4100). The default.
    #[default]
    Disconnect,
    /// Drop that subscription's queued messages and send it a `gap`; the connection and its
    /// other subscriptions are untouched.
    Gap,
    /// Keep only the newest message of that channel for that subscriber; no `gap`, no close.
    Latest,
}

impl OnSlow {
    /// The name used in settings and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            OnSlow::Disconnect => "disconnect",
            OnSlow::Gap => "gap",
            OnSlow::Latest => "latest",
        }
    }
}

impl std::str::FromStr for OnSlow {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "disconnect" => Ok(OnSlow::Disconnect),
            "gap" => Ok(OnSlow::Gap),
            "latest" => Ok(OnSlow::Latest),
            other => Err(format!(
                "unknown on_slow {other:?}: expected \"disconnect\", \"gap\" or \"latest\""
            )),
        }
    }
}

/// The options of the channels whose name matches `pattern`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelOptions {
    /// A channel name, or a prefix followed by `*`.
    pub pattern: String,
    /// What happens when a subscriber cannot keep up.
    pub on_slow: OnSlow,
    /// Messages kept per channel; `None` uses the server-wide setting.
    pub history_size: Option<usize>,
    /// How long messages are kept; `None` uses the server-wide setting, zero keeps them until
    /// newer messages push them out.
    pub history_ttl: Option<Duration>,
    /// Whether the channel has presence: its subscribers are its members, announced with
    /// `join` and `leave`, and listed by a `presence` request.
    pub presence: bool,
}

impl ChannelOptions {
    /// Options for `pattern` that change nothing until set.
    pub fn new(pattern: impl Into<String>) -> Self {
        ChannelOptions {
            pattern: pattern.into(),
            on_slow: OnSlow::Disconnect,
            history_size: None,
            history_ttl: None,
            presence: false,
        }
    }

    /// Sets [`ChannelOptions::presence`].
    pub fn presence(mut self, value: bool) -> Self {
        self.presence = value;
        self
    }

    /// Sets [`ChannelOptions::on_slow`].
    pub fn on_slow(mut self, value: OnSlow) -> Self {
        self.on_slow = value;
        self
    }

    /// Sets [`ChannelOptions::history_size`].
    pub fn history_size(mut self, value: usize) -> Self {
        self.history_size = Some(value);
        self
    }

    /// Sets [`ChannelOptions::history_ttl`].
    pub fn history_ttl(mut self, value: Duration) -> Self {
        self.history_ttl = Some(value);
        self
    }

    /// The history limits of a matching channel: `base` (the server-wide ones) with this
    /// table's size and TTL where it sets them (a zero TTL keeps messages until newer ones
    /// push them out).
    pub fn history_limits(&self, base: HistoryLimits) -> HistoryLimits {
        HistoryLimits {
            size: self.history_size.unwrap_or(base.size),
            ttl: match self.history_ttl {
                None => base.ttl,
                Some(ttl) if ttl.is_zero() => None,
                Some(ttl) => Some(ttl),
            },
            max_total_bytes: base.max_total_bytes,
        }
    }

    /// Whether `channel` matches this table's pattern.
    pub fn matches(&self, channel: &str) -> bool {
        match self.pattern.strip_suffix('*') {
            Some(prefix) => channel.starts_with(prefix),
            None => channel == self.pattern,
        }
    }
}

/// The `[[channels]]` tables in order: the first match wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelRules {
    rules: Vec<ChannelOptions>,
}

impl ChannelRules {
    /// Rules tried in the given order.
    pub fn new(rules: Vec<ChannelOptions>) -> Self {
        ChannelRules { rules }
    }

    /// The options of the first table matching `channel`, if any.
    pub fn get(&self, channel: &str) -> Option<&ChannelOptions> {
        self.rules.iter().find(|rule| rule.matches(channel))
    }

    /// What happens when a subscriber of `channel` cannot keep up.
    pub fn on_slow(&self, channel: &str) -> OnSlow {
        self.get(channel)
            .map_or(OnSlow::Disconnect, |rule| rule.on_slow)
    }

    /// Whether `channel` has presence (its first matching table says `presence = true`).
    pub fn presence(&self, channel: &str) -> bool {
        self.get(channel).is_some_and(|rule| rule.presence)
    }

    /// The history limits of `channel`: those of the first matching table, else `base`.
    pub fn history_limits(&self, channel: &str, base: HistoryLimits) -> HistoryLimits {
        self.get(channel)
            .map_or(base, |rule| rule.history_limits(base))
    }

    /// The tables, in order.
    pub fn iter(&self) -> impl Iterator<Item = &ChannelOptions> {
        self.rules.iter()
    }

    /// Whether there are no tables.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_pattern_wins() {
        let rules = ChannelRules::new(vec![
            ChannelOptions::new("ticker:btc").on_slow(OnSlow::Gap),
            ChannelOptions::new("ticker:*").on_slow(OnSlow::Latest),
            ChannelOptions::new("*").history_size(5),
        ]);
        assert_eq!(rules.on_slow("ticker:btc"), OnSlow::Gap);
        assert_eq!(rules.on_slow("ticker:eth"), OnSlow::Latest);
        assert_eq!(rules.on_slow("chat"), OnSlow::Disconnect);
        assert_eq!(rules.get("chat").and_then(|r| r.history_size), Some(5));
        assert_eq!(ChannelRules::default().get("chat"), None);
    }

    #[test]
    fn presence_is_off_unless_the_matching_table_turns_it_on() {
        let rules = ChannelRules::new(vec![
            ChannelOptions::new("room:lobby"),
            ChannelOptions::new("room:*").presence(true),
        ]);
        assert!(rules.presence("room:1"));
        assert!(!rules.presence("room:lobby"), "the first match wins");
        assert!(!rules.presence("chat"));
    }

    #[test]
    fn history_limits_override_the_server_wide_ones() {
        let base = HistoryLimits {
            size: 100,
            ttl: Some(Duration::from_secs(300)),
            max_total_bytes: 1 << 20,
        };
        let rules = ChannelRules::new(vec![
            ChannelOptions::new("ticker:*").history_size(0),
            ChannelOptions::new("feed:*")
                .history_size(5000)
                .history_ttl(Duration::ZERO),
            ChannelOptions::new("log:*").history_ttl(Duration::from_secs(5)),
        ]);
        let limits = |channel| rules.history_limits(channel, base);
        assert_eq!(limits("ticker:btc").size, 0);
        assert_eq!(limits("ticker:btc").ttl, base.ttl);
        assert_eq!((limits("feed:a").size, limits("feed:a").ttl), (5000, None));
        assert_eq!(
            (limits("log:x").size, limits("log:x").ttl),
            (100, Some(Duration::from_secs(5)))
        );
        assert_eq!(limits("chat"), base);
    }

    #[test]
    fn on_slow_names() {
        for policy in [OnSlow::Disconnect, OnSlow::Gap, OnSlow::Latest] {
            assert_eq!(policy.as_str().parse::<OnSlow>(), Ok(policy));
        }
        assert!("drop".parse::<OnSlow>().is_err());
    }
}
