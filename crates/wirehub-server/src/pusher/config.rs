//! The Pusher apps a server serves: their credentials and limits, typed.

use std::time::Duration;

/// One Pusher app: what the official server SDKs and clients know it by, and its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PusherApp {
    /// The app id (in the HTTP API's paths, `/apps/ID/...`).
    pub id: String,
    /// The public key (in the WebSocket path, `/app/KEY`, and in every signature).
    pub key: String,
    /// The secret that signs channel authorizations, user sign-ins, API requests and
    /// webhooks.
    pub secret: String,
    /// Prepended to the app's channel names on the server's shared channels: empty (the
    /// default) makes the app's channels the server's channels of the same name, which v1
    /// clients see too; `NAME:` keeps the app's channels apart from other apps'.
    pub channel_prefix: String,
    /// Client events (`client-*`) one connection may send per second (0: no limit).
    pub client_event_rate: u32,
    /// Largest event data accepted by the HTTP API, in bytes (Pusher's limit is 10 KB).
    pub max_event_size: usize,
    /// Where the app's webhooks (in Pusher's format) are POSTed, when set.
    pub webhook_url: Option<String>,
}

impl PusherApp {
    /// An app with these credentials and the documented defaults.
    pub fn new(id: impl Into<String>, key: impl Into<String>, secret: impl Into<String>) -> Self {
        PusherApp {
            id: id.into(),
            key: key.into(),
            secret: secret.into(),
            channel_prefix: String::new(),
            client_event_rate: 10,
            max_event_size: 10_240,
            webhook_url: None,
        }
    }

    /// Sets [`PusherApp::channel_prefix`].
    #[must_use]
    pub fn channel_prefix(mut self, value: impl Into<String>) -> Self {
        self.channel_prefix = value.into();
        self
    }

    /// Sets [`PusherApp::client_event_rate`].
    #[must_use]
    pub fn client_event_rate(mut self, value: u32) -> Self {
        self.client_event_rate = value;
        self
    }

    /// Sets [`PusherApp::max_event_size`].
    #[must_use]
    pub fn max_event_size(mut self, value: usize) -> Self {
        self.max_event_size = value;
        self
    }

    /// Sets [`PusherApp::webhook_url`].
    #[must_use]
    pub fn webhook_url(mut self, value: Option<String>) -> Self {
        self.webhook_url = value;
        self
    }
}

/// The Pusher protocol's settings: no app, the default, serves no Pusher route.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PusherConfig {
    /// The apps.
    pub apps: Vec<PusherApp>,
    /// The `activity_timeout` told to clients in `pusher:connection_established`: a client
    /// that received nothing for this long sends `pusher:ping`.
    pub activity_timeout: Duration,
}

impl PusherConfig {
    /// No app; activity timeout 120 s (Pusher's).
    pub fn new() -> Self {
        PusherConfig {
            apps: Vec::new(),
            activity_timeout: Duration::from_secs(120),
        }
    }

    /// Sets [`PusherConfig::apps`].
    #[must_use]
    pub fn apps(mut self, value: Vec<PusherApp>) -> Self {
        self.apps = value;
        self
    }

    /// Sets [`PusherConfig::activity_timeout`].
    #[must_use]
    pub fn activity_timeout(mut self, value: Duration) -> Self {
        self.activity_timeout = value;
        self
    }

    /// Checks the apps: ids, keys and prefixes distinct, prefixes of the form `NAME:`, at
    /// most one app with the empty prefix.
    ///
    /// # Errors
    /// The first rule broken, for people.
    pub fn validate(&self) -> Result<(), String> {
        let mut unprefixed = 0;
        for (index, app) in self.apps.iter().enumerate() {
            if app.id.is_empty() || app.key.is_empty() || app.secret.is_empty() {
                return Err(format!(
                    "Pusher app {index}: id, key and secret must not be empty"
                ));
            }
            if !app
                .key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "Pusher app {:?}: the key may hold letters, digits, - and _ only",
                    app.id
                ));
            }
            let prefix = &app.channel_prefix;
            if prefix.is_empty() {
                unprefixed += 1;
            } else {
                let name = prefix.strip_suffix(':').unwrap_or("");
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(format!(
                        "Pusher app {:?}: channel_prefix must look like \"NAME:\" (letters, digits, - and _, then one colon)",
                        app.id
                    ));
                }
            }
            for other in &self.apps[..index] {
                if other.id == app.id || other.key == app.key {
                    return Err(format!(
                        "two Pusher apps share the id or key of {:?}",
                        app.id
                    ));
                }
                if !prefix.is_empty() && other.channel_prefix == *prefix {
                    return Err(format!(
                        "two Pusher apps share the channel_prefix {prefix:?}"
                    ));
                }
            }
        }
        if unprefixed > 1 {
            return Err(
                "several Pusher apps have no channel_prefix: their channels would mix; give each but one a prefix like \"shop:\"".to_owned(),
            );
        }
        Ok(())
    }
}

impl Default for PusherConfig {
    fn default() -> Self {
        PusherConfig::new()
    }
}
