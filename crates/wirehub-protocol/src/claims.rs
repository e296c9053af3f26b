//! The claims of a wirehub token (a JWT): who the holder is, until when, and which channels
//! it may subscribe and publish to.
//!
//! One type for both sides: the server reads it from a verified token, `wirehub token` (and
//! any issuer written in Rust) writes it. Permissions are lists of channel patterns where a
//! trailing `*` matches any suffix (`chat:*`); a token without a list grants nothing of that
//! kind.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::channel_matches;

/// The claims wirehub reads from a token. Other claims in a token are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "Claims")
)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch (required).
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch (informative; not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Channel patterns the holder may subscribe to.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Channel patterns the holder may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Anything the issuer wants other members of a presence channel to see about the
    /// holder (a display name, an avatar): the `info` of its presence member, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
}

impl Claims {
    /// Claims for `sub` expiring at `exp` (seconds since the Unix epoch), with no permissions.
    pub fn new(sub: impl Into<String>, exp: u64) -> Claims {
        Claims {
            sub: sub.into(),
            exp,
            nbf: None,
            iat: None,
            subscribe: Vec::new(),
            publish: Vec::new(),
            info: None,
        }
    }

    /// Claims for `sub` issued now and valid for `ttl` (at least one second).
    pub fn valid_for(sub: impl Into<String>, ttl: Duration) -> Claims {
        let now = unix_seconds(SystemTime::now());
        let mut claims = Claims::new(sub, now.saturating_add(ttl.as_secs().max(1)));
        claims.iat = Some(now);
        claims
    }

    /// Adds channel patterns the holder may subscribe to.
    pub fn subscribe<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.subscribe.extend(patterns.into_iter().map(Into::into));
        self
    }

    /// Adds channel patterns the holder may publish to.
    pub fn publish<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.publish.extend(patterns.into_iter().map(Into::into));
        self
    }

    /// Sets the `info` shown with the holder's presence members.
    pub fn info(mut self, info: serde_json::Value) -> Self {
        self.info = Some(info);
        self
    }

    /// Whether these claims allow subscribing to `channel`.
    pub fn may_subscribe(&self, channel: &str) -> bool {
        self.subscribe.iter().any(|p| channel_matches(p, channel))
    }

    /// Whether these claims allow publishing to `channel`.
    pub fn may_publish(&self, channel: &str) -> bool {
        self.publish.iter().any(|p| channel_matches(p, channel))
    }

    /// How long until the token expires, from now (zero when it has).
    pub fn expires_in(&self) -> Duration {
        self.expires_in_at(SystemTime::now())
    }

    /// How long until the token expires, seen at `now` (zero when it has).
    pub fn expires_in_at(&self, now: SystemTime) -> Duration {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        Duration::from_secs(self.exp).saturating_sub(now)
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_follow_patterns() {
        let claims = Claims::new("u", u64::MAX)
            .subscribe(["chat:*", "news"])
            .publish(["chat:room1"]);
        assert!(claims.may_subscribe("chat:room1"));
        assert!(claims.may_subscribe("news"));
        assert!(!claims.may_subscribe("newsroom"));
        assert!(claims.may_publish("chat:room1"));
        assert!(!claims.may_publish("chat:room2"));
        assert!(
            !Claims::new("u", 1).may_subscribe("news"),
            "no list, no grant"
        );
    }

    #[test]
    fn reads_what_issuers_write_and_writes_what_it_reads() {
        let claims: Claims = serde_json::from_str(
            r#"{"sub":"ann","exp":100,"nbf":5,"subscribe":["a:*"],"aud":"ignored"}"#,
        )
        .expect("claims");
        assert_eq!(claims.sub, "ann");
        assert_eq!(claims.nbf, Some(5));
        assert!(claims.publish.is_empty(), "absent lists are empty");
        let written = serde_json::to_value(&claims).expect("serializes");
        assert_eq!(
            written,
            serde_json::json!({"sub":"ann","exp":100,"nbf":5,"subscribe":["a:*"],"publish":[]})
        );
        assert!(
            serde_json::from_str::<Claims>(r#"{"sub":"ann"}"#).is_err(),
            "exp is required"
        );
    }

    #[test]
    fn expiry_is_measured_from_the_given_time() {
        let claims = Claims::new("u", 100);
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(claims.expires_in_at(at(40)), Duration::from_secs(60));
        assert_eq!(claims.expires_in_at(at(100)), Duration::ZERO);
        assert_eq!(claims.expires_in_at(at(500)), Duration::ZERO);
        let fresh = Claims::valid_for("u", Duration::ZERO);
        assert_eq!(
            fresh.exp,
            fresh.iat.expect("iat") + 1,
            "at least one second"
        );
    }
}
