//! The Pusher protocol (protocol 7) on the server's shared channels: unmodified pusher-js,
//! Laravel Echo and the Pusher server SDKs work against wirehub.
//!
//! - `config`: [`PusherApp`], [`PusherConfig`], the typed settings.
//! - `sign`: every HMAC-SHA256 signature of the protocol and the API request check.
//! - `wire`: Pusher frames, the client's events, and `PusherDialect`, which turns the hub's
//!   publications into Pusher events once per node, each with its stream position.
//! - `conn`: the Pusher side of a session (`/app/KEY`): subscribe with channel
//!   authorization, presence, cache channels, client events, sign-in, and `wirehub:recover`,
//!   the replay that the recovery connector (`clients/pusher-recovery`) asks for after a
//!   reconnect.
//! - `api`: the HTTP API (`/apps/ID/...`) the server SDKs call, each request's signature
//!   checked.
//! - `presence`: presence channels on the hub's presence (cluster-wide members), the node's
//!   rosters of users that turn the hub's join/leave into `member_added` / `member_removed`.
//! - `webhooks`: the app's webhooks in Pusher's format.
//! - this file: [`Pusher`], what every Pusher connection of the node shares: the apps, the
//!   node's Pusher subscriptions per channel, signed-in users.
//!
//! A Pusher connection is a session like any other (same hub, broker, limits, outbox and
//! metrics); only its dialect differs: its outbox names `PusherDialect`, so publications
//! reach it as Pusher events, and its text frames are Pusher events, handled in `conn`.
//! What a Pusher connection is subscribed to is the app's prefix plus the Pusher channel
//! name on the shared hub, so a v1 client and a Pusher client of the same channel see each
//! other's messages (`wire` says how), on every node of a Redis cluster.

pub(crate) mod api;
mod config;
pub(crate) mod conn;
mod presence;
pub(crate) mod sign;
mod webhooks;
pub(crate) mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Value, json};
use wirehub_core::{Lifecycle, LifecycleEvent, LifecycleSink, Outbox};
use wirehub_protocol::CloseCode;

pub(crate) use api::routes;
pub use config::{PusherApp, PusherConfig};
pub(crate) use webhooks::Webhooks;

/// The Pusher close code and reason for the server's reason to close a connection, so that
/// pusher-js does what wirehub means: 4000–4099 stop, 4100–4199 back off, 4200–4299
/// reconnect at once.
pub(crate) fn close_code(code: CloseCode) -> (u16, &'static str) {
    match code {
        CloseCode::Normal => (1000, "normal"),
        // Shutdown: reconnect (to another node) now; the closes are spread over the drain.
        CloseCode::GoingAway | CloseCode::Reconnect => (4200, "server shutting down: reconnect"),
        CloseCode::SlowConsumer => (4100, "over capacity: slow consumer"),
        CloseCode::PolicyViolation => (4100, "over capacity: limits broken"),
        CloseCode::HeartbeatTimeout => (4201, "pong reply not received"),
        CloseCode::Unauthorized | CloseCode::Forbidden => (4009, "connection is unauthorized"),
        other => (other.code(), other.reason()),
    }
}

/// A channel's local Pusher subscribers (their session ids).
#[derive(Debug, Default)]
struct LocalChannel {
    subscribers: Vec<u64>,
}

/// A session signed in as a user, and its outbox (to close it).
type SignedIn = (u64, Arc<Outbox>);

#[derive(Debug, Default)]
struct Registry {
    /// (app, Pusher channel) → its local subscribers.
    channels: HashMap<(usize, String), LocalChannel>,
    /// (app, user id) → the sessions signed in as that user, with their outboxes.
    users: HashMap<(usize, String), Vec<SignedIn>>,
}

/// A presence channel's members, as `subscription_succeeded` carries them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Presence {
    pub(crate) ids: Vec<String>,
    pub(crate) hash: serde_json::Map<String, Value>,
}

impl Presence {
    pub(crate) fn to_json(&self) -> Value {
        json!({ "presence": { "ids": self.ids, "hash": self.hash, "count": self.ids.len() } })
    }
}

/// What every Pusher connection and API request of a node shares.
#[derive(Debug)]
pub(crate) struct Pusher {
    pub(crate) config: PusherConfig,
    pub(crate) dialect: Arc<wire::PusherDialect>,
    pub(crate) webhooks: Arc<Webhooks>,
    registry: Mutex<Registry>,
    node: u32,
    sockets: AtomicU64,
}

impl Pusher {
    pub(crate) fn new(config: PusherConfig) -> Self {
        let webhooks = Arc::new(Webhooks::new(&config.apps));
        Pusher {
            config,
            dialect: Arc::new(wire::PusherDialect::default()),
            webhooks,
            registry: Mutex::new(Registry::default()),
            node: rand::random::<u32>() % 1_000_000_000,
            sockets: AtomicU64::new(0),
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn app(&self, index: usize) -> &PusherApp {
        &self.config.apps[index]
    }

    pub(crate) fn app_by_key(&self, key: &str) -> Option<usize> {
        self.config.apps.iter().position(|app| app.key == key)
    }

    pub(crate) fn app_by_id(&self, id: &str) -> Option<usize> {
        self.config.apps.iter().position(|app| app.id == id)
    }

    /// A new socket id, `NODE.N`: unique in the cluster with high probability (the node
    /// part is random), as the server SDKs and `socket_id` exclusion need.
    pub(crate) fn next_socket_id(&self) -> String {
        let n = self.sockets.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}.{n}", self.node)
    }

    /// The shared hub channel of an app's Pusher channel.
    pub(crate) fn hub_channel(&self, app: usize, channel: &str) -> String {
        format!("{}{channel}", self.app(app).channel_prefix)
    }

    /// Adds a local subscriber. (`channel_occupied` / `channel_vacated` come from the
    /// occupancy, once per transition in the cluster: see [`PusherLifecycle`].)
    pub(crate) fn join(&self, app: usize, channel: &str, session: u64) {
        self.registry()
            .channels
            .entry((app, channel.to_owned()))
            .or_default()
            .subscribers
            .push(session);
    }

    /// Removes a local subscriber.
    pub(crate) fn leave(&self, app: usize, channel: &str, session: u64) {
        let mut registry = self.registry();
        let key = (app, channel.to_owned());
        let Some(entry) = registry.channels.get_mut(&key) else {
            return;
        };
        let Some(index) = entry.subscribers.iter().position(|s| *s == session) else {
            return;
        };
        entry.subscribers.swap_remove(index);
        if entry.subscribers.is_empty() {
            registry.channels.remove(&key);
        }
    }

    /// The app and Pusher name of a hub channel: the app whose prefix it starts with, else
    /// the app without a prefix, if any.
    fn app_of<'a>(&self, hub_channel: &'a str) -> Option<(usize, &'a str)> {
        let apps = &self.config.apps;
        apps.iter()
            .enumerate()
            .filter(|(_, app)| !app.channel_prefix.is_empty())
            .find_map(|(index, app)| Some((index, hub_channel.strip_prefix(&app.channel_prefix)?)))
            .or_else(|| {
                let index = apps.iter().position(|app| app.channel_prefix.is_empty())?;
                Some((index, hub_channel))
            })
            .filter(|(_, name)| wire::valid_channel(name))
    }

    /// A presence member's user-level transition (`member_added` / `member_removed`), seen
    /// by the node of the connection that caused it, as a webhook.
    pub(crate) fn member_webhook(&self, app: usize, channel: &str, added: bool, user_id: &str) {
        let name = if added {
            "member_added"
        } else {
            "member_removed"
        };
        self.webhooks.emit(
            app,
            json!({ "name": name, "channel": channel, "user_id": user_id }),
        );
    }

    /// Local Pusher subscriptions of a channel.
    pub(crate) fn local_subscriptions(&self, app: usize, channel: &str) -> usize {
        self.registry()
            .channels
            .get(&(app, channel.to_owned()))
            .map_or(0, |entry| entry.subscribers.len())
    }

    /// The app's occupied channels whose name starts with `prefix`, with their counts.
    pub(crate) fn channels(&self, app: usize, prefix: &str) -> Vec<(String, usize)> {
        let registry = self.registry();
        let mut out: Vec<_> = registry
            .channels
            .iter()
            .filter(|((a, name), _)| *a == app && name.starts_with(prefix))
            .map(|((_, name), entry)| (name.clone(), entry.subscribers.len()))
            .collect();
        out.sort();
        out
    }

    pub(crate) fn sign_in(&self, app: usize, user: &str, session: u64, outbox: &Arc<Outbox>) {
        self.registry()
            .users
            .entry((app, user.to_owned()))
            .or_default()
            .push((session, outbox.clone()));
    }

    pub(crate) fn sign_out(&self, app: usize, user: &str, session: u64) {
        let mut registry = self.registry();
        let key = (app, user.to_owned());
        if let Some(sessions) = registry.users.get_mut(&key) {
            sessions.retain(|(id, _)| *id != session);
            if sessions.is_empty() {
                registry.users.remove(&key);
            }
        }
    }

    /// Closes every connection of this node signed in as `user` (4009); returns how many.
    pub(crate) fn terminate(&self, app: usize, user: &str) -> usize {
        let sessions = self
            .registry()
            .users
            .get(&(app, user.to_owned()))
            .cloned()
            .unwrap_or_default();
        for (_, outbox) in &sessions {
            outbox.close(CloseCode::Forbidden);
        }
        sessions.len()
    }
}

/// The user a signed-in Pusher connection is known as to the server's disconnect orders
/// (`POST /api/disconnect`, the control bus): `pusher:APP_ID:USER_ID`.
pub(crate) fn signed_in_user(app_id: &str, user: &str) -> String {
    format!("pusher:{app_id}:{user}")
}

/// The lifecycle sink in front of the server's own: `channel_occupied` / `channel_vacated`,
/// which the occupancy emits once per transition in the cluster (the first subscriber
/// anywhere, the last one gone, vacated debounced), become the Pusher apps' webhooks.
#[derive(Debug)]
pub(crate) struct PusherLifecycle {
    pusher: Arc<Pusher>,
    next: Lifecycle,
}

impl PusherLifecycle {
    /// Pusher webhooks from the events, which then go on to `next`.
    pub(crate) fn new(pusher: Arc<Pusher>, next: Lifecycle) -> Self {
        PusherLifecycle { pusher, next }
    }
}

impl LifecycleSink for PusherLifecycle {
    fn emit(&self, event: LifecycleEvent) {
        let transition = match &event {
            LifecycleEvent::ChannelOccupied { channel } => Some(("channel_occupied", channel)),
            LifecycleEvent::ChannelVacated { channel } => Some(("channel_vacated", channel)),
            _ => None,
        };
        if let Some((name, channel)) = transition
            && let Some((app, pusher_name)) = self.pusher.app_of(channel)
        {
            self.pusher
                .webhooks
                .emit(app, json!({ "name": name, "channel": pusher_name }));
        }
        self.next.emit(event);
    }
}
