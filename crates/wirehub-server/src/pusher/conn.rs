//! The Pusher side of a session (`/app/KEY`, protocol 7): `pusher:connection_established`,
//! `pusher:ping`, subscribe and unsubscribe with channel authorization, presence members,
//! cache channels, client events and user sign-in. The session's loop, outbox, heartbeat
//! and close handling are the v1 session's; only the text frames and the welcome differ.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tracing::{debug, info};
use wirehub_core::{Departure, Outbox, OutboxLimits, SessionRef};
use wirehub_protocol::{CloseCode, StreamPosition, validate_channel};

use super::wire::{
    self, ChannelKind, ClientEvent, RecoverData, RecoveryFailure, SigninData, SubscribeData,
};
use super::{Pusher, sign};
use crate::metrics::Metrics;
use crate::rate::{PublishLimiter, Verdict};
use crate::session::{Closer, Session};

/// What the upgrade learned about a Pusher connection.
#[derive(Debug)]
pub(crate) struct Start {
    /// The node's Pusher state.
    pub(crate) pusher: Arc<Pusher>,
    /// The app whose key the path named, or `None` (refused with 4001).
    pub(crate) app: Option<usize>,
    /// The `protocol` query parameter, when given.
    pub(crate) protocol: Option<u32>,
    /// The connection's socket id.
    pub(crate) socket_id: Arc<str>,
}

/// A Pusher connection's own state.
#[derive(Debug)]
pub(crate) struct Conn {
    pusher: Arc<Pusher>,
    app: Option<usize>,
    protocol: Option<u32>,
    socket_id: Arc<str>,
    /// Pusher channel name → its kind and, for presence, the member's user id.
    channels: HashMap<String, (ChannelKind, Option<String>)>,
    /// Presence channel (Pusher name) → the member's `client` in the hub's presence (this
    /// socket's id, or an earlier connection's of the same user taken over in its grace).
    members: HashMap<String, String>,
    /// The signed-in user's id.
    user: Option<String>,
    client_events: PublishLimiter,
    /// `wirehub:recover` requests: as many per second as the connection may hold
    /// subscriptions (a reconnect recovers each of them at once), so that asking again and
    /// again cannot make the server read its history without end.
    recoveries: PublishLimiter,
}

/// The oldest and newest protocol versions served (pusher-js 8 speaks 7).
const PROTOCOLS: std::ops::RangeInclusive<u32> = 5..=7;

impl Session {
    /// Makes this session a Pusher connection: its outbox gets publications as Pusher
    /// events.
    pub(crate) fn start_pusher(&mut self, start: Start) {
        let config = &self.state.config;
        let limits = OutboxLimits {
            max_frames: config.max_queued_frames,
            max_bytes: config.max_queued_bytes,
        };
        self.outbox = Arc::new(
            Outbox::new(limits).with_dialect(start.pusher.dialect.clone(), start.socket_id.clone()),
        );
        let rate = start
            .app
            .map_or(0, |app| start.pusher.app(app).client_event_rate);
        let recoveries = u32::try_from(config.max_subscriptions.max(1)).unwrap_or(u32::MAX);
        let now = std::time::Instant::now();
        self.pusher = Some(Box::new(Conn {
            pusher: start.pusher,
            app: start.app,
            protocol: start.protocol,
            socket_id: start.socket_id,
            channels: HashMap::new(),
            members: HashMap::new(),
            user: None,
            client_events: PublishLimiter::new(rate, now),
            recoveries: PublishLimiter::new(recoveries, now),
        }));
    }

    /// The first frames: `pusher:connection_established`, or the refusal of an unknown key
    /// or protocol version (`pusher:error`, then the close with the same code).
    pub(crate) fn pusher_welcome(&mut self) {
        let Some(conn) = self.pusher.as_deref() else {
            return;
        };
        let refusal = match (conn.app, conn.protocol) {
            (None, _) => Some((4001, "App key not in this server's apps")),
            (_, Some(version)) if !PROTOCOLS.contains(&version) => {
                Some((4007, "Unsupported protocol version"))
            }
            _ => None,
        };
        if let Some((code, message)) = refusal {
            info!(code, message, "Pusher connection refused");
            self.queue(wire::error(Some(code), message));
            self.close_as = Some((code, message));
            self.start_close(CloseCode::Forbidden, Closer::Server);
            return;
        }
        let frame = wire::connection_established(
            &conn.socket_id,
            conn.pusher.config.activity_timeout.as_secs(),
        );
        self.queue(frame);
    }

    /// Handles one Pusher event from the client.
    pub(crate) async fn on_pusher_text(&mut self, text: &[u8]) {
        Metrics::add(&self.metrics().messages_in_total, 1);
        let event: ClientEvent = match serde_json::from_slice(text) {
            Ok(event) => event,
            Err(err) => {
                return self.queue(wire::error(None, &format!("invalid event JSON: {err}")));
            }
        };
        match event.event.as_str() {
            "pusher:ping" => self.queue(wire::event_frame("pusher:pong", None, &json!({}))),
            "pusher:pong" => {}
            "pusher:subscribe" => match parse_data::<SubscribeData>(event.data.as_deref()) {
                Some(data) => self.pusher_subscribe(data).await,
                None => self.queue(wire::error(None, "pusher:subscribe needs data.channel")),
            },
            "pusher:unsubscribe" => {
                if let Some(channel) = event
                    .data
                    .as_deref()
                    .and_then(|d| serde_json::from_str::<Value>(d.get()).ok())
                    .and_then(|d| d.get("channel")?.as_str().map(str::to_owned))
                {
                    self.pusher_unsubscribe(&channel).await;
                }
            }
            "pusher:signin" => match parse_data::<SigninData>(event.data.as_deref()) {
                Some(data) => self.pusher_signin(&data),
                None => self.queue(wire::error(None, "pusher:signin needs auth and user_data")),
            },
            "wirehub:recover" => match parse_data::<RecoverData>(event.data.as_deref()) {
                Some(data) => self.pusher_recover(data).await,
                None => {
                    let channel = event.channel.as_deref().unwrap_or_default();
                    let failure = wire::RecoveryFailure::InvalidPosition;
                    self.queue(wire::recovery_failed(channel, failure, None));
                }
            },
            name if name.starts_with("client-") => {
                let data = event.data.unwrap_or_else(null_value);
                self.pusher_client_event(name, event.channel.as_deref(), &data)
                    .await;
            }
            other => debug!(event = other, "unknown Pusher event ignored"),
        }
    }

    fn conn(&self) -> Option<(&Conn, usize)> {
        let conn = self.pusher.as_deref()?;
        Some((conn, conn.app?))
    }

    async fn pusher_subscribe(&mut self, data: SubscribeData) {
        let Some((conn, app_index)) = self.conn() else {
            return;
        };
        let channel = data.channel;
        if conn.channels.contains_key(&channel) {
            return;
        }
        let kind = ChannelKind::of(&channel);
        let pusher = conn.pusher.clone();
        let app = pusher.app(app_index);
        let hub_channel = pusher.hub_channel(app_index, &channel);
        if !wire::valid_channel(&channel) || validate_channel(&hub_channel).is_err() {
            return self.queue(wire::error(
                Some(4009),
                &format!("Invalid channel name {channel:?}"),
            ));
        }
        let max = self.state.config.max_subscriptions;
        if self.subscriptions.len() >= max {
            return self.queue(wire::subscription_error(
                &channel,
                "LimitReached",
                &format!("a connection may hold {max} subscriptions"),
                400,
            ));
        }
        let channel_data = if kind.is_presence() {
            data.channel_data.as_deref()
        } else {
            None
        };
        if kind.needs_auth() {
            let message = sign::channel_message(&conn.socket_id, &channel, channel_data);
            let auth = data.auth.as_deref().unwrap_or("");
            if !sign::verify_auth(&app.key, &app.secret, auth, &message) {
                info!(%channel, "Pusher subscription refused: invalid signature");
                return self.queue(wire::subscription_error(
                    &channel,
                    "AuthError",
                    "Invalid signature",
                    401,
                ));
            }
        }
        if kind == ChannelKind::User {
            let wanted = channel.strip_prefix("#server-to-user-");
            if conn.user.is_none() || conn.user.as_deref() != wanted {
                return self.queue(wire::subscription_error(
                    &channel,
                    "AuthError",
                    "sign in as this user first (pusher:signin)",
                    403,
                ));
            }
        }
        let member = if kind.is_presence() {
            match channel_data.and_then(presence_member) {
                Some(member) => Some(member),
                None => {
                    return self.queue(wire::subscription_error(
                        &channel,
                        "AuthError",
                        "presence channels need channel_data with a user_id",
                        400,
                    ));
                }
            }
        } else {
            None
        };
        // A cache channel replays its last event: recover from the offset before the top.
        let since = if kind.is_cache() {
            match self
                .state
                .hub
                .history(&hub_channel, wirehub_core::HistoryQuery::default())
                .await
            {
                Ok(page) if page.top > 0 => Some(StreamPosition {
                    epoch: page.epoch.to_string(),
                    offset: page.top - 1,
                }),
                _ => None,
            }
        } else {
            None
        };
        let user_id = member.as_ref().map(|(id, _)| id.clone());
        let rosters = &pusher.dialect.rosters;
        let mut joined = None;
        if let Some((id, info)) = member {
            rosters.open(&hub_channel);
            match self
                .pusher_presence_join(&pusher, app_index, &channel, &hub_channel, id, info)
                .await
            {
                Some(client) => joined = Some(client),
                None => {
                    rosters.close(&hub_channel);
                    return self.queue(wire::subscription_error(
                        &channel,
                        "ServerError",
                        "presence is not available",
                        503,
                    ));
                }
            }
        }
        pusher.join(app_index, &channel, self.id);
        let presence_of = joined.is_some().then(|| pusher.clone());
        let session = SessionRef {
            id: self.id,
            outbox: self.outbox.clone(),
        };
        let cache = kind.is_cache();
        let reply_channel = channel.clone();
        let result = self
            .state
            .hub
            .subscribe_with(&session, &hub_channel, since, |start| {
                // The users as this node knows them when the subscription goes live: the
                // read, and every join and leave announced since.
                let succeeded = match &presence_of {
                    Some(pusher) => pusher.dialect.rosters.presence(&hub_channel).to_json(),
                    None => json!({}),
                };
                // The position this subscription's deliveries start after (before the
                // replayed last event of a cache channel): where a recovery would start.
                let mut frames = vec![wire::subscription_succeeded(
                    &reply_channel,
                    &succeeded,
                    start.epoch,
                    start.offset.saturating_sub(start.replaying as u64),
                )];
                if cache && start.replaying == 0 {
                    frames.push(wire::event_frame(
                        "pusher:cache_miss",
                        Some(&reply_channel),
                        &json!({}),
                    ));
                }
                frames
            })
            .await;
        match result {
            Ok(subscribed) => {
                Metrics::add(&self.metrics().replayed_total, subscribed.replayed as u64);
                self.state.activity.subscribed(&self.client, &hub_channel);
                self.subscriptions.insert(hub_channel);
                if let Some(conn) = self.pusher.as_deref_mut() {
                    if let Some(client) = joined {
                        conn.members.insert(channel.clone(), client);
                    }
                    conn.channels.insert(channel, (kind, user_id));
                }
            }
            Err(err) => {
                pusher.leave(app_index, &channel, self.id);
                if let Some(client) = joined {
                    self.pusher_presence_leave(
                        &pusher,
                        app_index,
                        &channel,
                        &client,
                        Departure::Now,
                    )
                    .await;
                }
                self.queue(wire::subscription_error(
                    &channel,
                    "ServerError",
                    &err.to_string(),
                    503,
                ));
            }
        }
    }

    /// `wirehub:recover` (sent by the recovery connector after a resubscription): queues
    /// the channel's messages after the client's last position that its earlier connections
    /// were not excluded from, then `wirehub:recovered`; or `wirehub:recovery_failed` with
    /// the reason. Authorized by the subscription: its channel authorization was checked
    /// when this connection subscribed. Rate limited (`rate_limited`; far past the rate, the
    /// connection is closed as for client events).
    async fn pusher_recover(&mut self, data: RecoverData) {
        let channel = data.channel;
        let verdict = match self.pusher.as_deref_mut() {
            Some(conn) => conn.recoveries.check(std::time::Instant::now()),
            None => return,
        };
        if verdict != Verdict::Allowed {
            self.queue(wire::recovery_failed(
                &channel,
                RecoveryFailure::RateLimited,
                None,
            ));
            if verdict == Verdict::Abuse {
                info!(%channel, "Pusher connection closed: wirehub:recover far past its rate");
                self.start_close(CloseCode::PolicyViolation, Closer::Server);
            }
            return;
        }
        let Some((conn, app_index)) = self.conn() else {
            return;
        };
        if !conn.channels.contains_key(&channel) {
            let failure = RecoveryFailure::NotSubscribed;
            return self.queue(wire::recovery_failed(&channel, failure, None));
        }
        let hub_channel = conn.pusher.hub_channel(app_index, &channel);
        // This connection is excluded by the outbox's own tag; these are the earlier ones.
        let excluded: Vec<Arc<str>> = data
            .socket_ids
            .into_iter()
            .take(MAX_EARLIER_SOCKETS)
            .map(Arc::from)
            .collect();
        let session = SessionRef {
            id: self.id,
            outbox: self.outbox.clone(),
        };
        let since = StreamPosition {
            epoch: data.epoch.clone(),
            offset: data.offset,
        };
        let hub = &self.state.hub;
        let frame = match hub.replay(&session, &hub_channel, since, &excluded).await {
            Ok(replay) if replay.complete => {
                Metrics::add(&self.metrics().replayed_total, replay.replayed as u64);
                debug!(%channel, replayed = replay.replayed, "Pusher recovery");
                let complete = replay.offset >= replay.top;
                wire::recovered(
                    &channel,
                    &replay.epoch,
                    replay.offset,
                    replay.replayed,
                    complete,
                )
            }
            Ok(replay) => {
                let failure = if *replay.epoch != *data.epoch {
                    RecoveryFailure::EpochChanged
                } else if data.offset > replay.top {
                    RecoveryFailure::InvalidPosition
                } else {
                    RecoveryFailure::OutOfHistory
                };
                info!(%channel, reason = failure.code(), "Pusher recovery failed");
                let now = Some((&*replay.epoch, replay.top));
                wire::recovery_failed(&channel, failure, now)
            }
            Err(wirehub_core::HubError::NotSubscribed) => {
                wire::recovery_failed(&channel, RecoveryFailure::NotSubscribed, None)
            }
            Err(err) => {
                info!(%channel, error = %err, "Pusher recovery failed");
                wire::recovery_failed(&channel, RecoveryFailure::Unavailable, None)
            }
        };
        self.queue(frame);
    }

    async fn pusher_unsubscribe(&mut self, channel: &str) {
        let Some(conn) = self.pusher.as_deref_mut() else {
            return;
        };
        let Some(app) = conn.app else {
            return;
        };
        if conn.channels.remove(channel).is_none() {
            return;
        }
        let member = conn.members.remove(channel);
        let pusher = conn.pusher.clone();
        pusher.leave(app, channel, self.id);
        let hub_channel = pusher.hub_channel(app, channel);
        self.subscriptions.remove(&hub_channel);
        if let Err(err) = self.state.hub.unsubscribe(&hub_channel, self.id).await {
            debug!(%channel, error = %err, "releasing a Pusher subscription failed");
        }
        self.state.activity.unsubscribed(&self.client, &hub_channel);
        if let Some(client) = member {
            self.pusher_presence_leave(&pusher, app, channel, &client, Departure::Now)
                .await;
        }
    }

    fn pusher_signin(&mut self, data: &SigninData) {
        let Some((conn, app_index)) = self.conn() else {
            return;
        };
        let app = conn.pusher.app(app_index);
        let message = sign::user_message(&conn.socket_id, &data.user_data);
        let user = serde_json::from_str::<Value>(&data.user_data)
            .ok()
            .and_then(|user| user.get("id")?.as_str().map(str::to_owned))
            .filter(|id| !id.is_empty());
        let valid = sign::verify_auth(&app.key, &app.secret, &data.auth, &message);
        let (Some(user), true) = (user, valid) else {
            info!("Pusher sign-in refused: invalid signature or user_data without an id");
            self.queue(wire::error(Some(4009), "Invalid signature or user_data"));
            self.close_as = Some((4009, "connection is unauthorized"));
            return self.start_close(CloseCode::Unauthorized, Closer::Server);
        };
        let pusher = conn.pusher.clone();
        if let Some(previous) = conn.user.clone() {
            pusher.sign_out(app_index, &previous, self.id);
        }
        pusher.sign_in(app_index, &user, self.id, &self.outbox);
        // Known to every node's disconnect orders by this name (terminate_connections).
        let known_as = super::signed_in_user(&pusher.app(app_index).id, &user);
        self.state
            .activity
            .set_user(&self.client, Arc::from(known_as));
        if let Some(conn) = self.pusher.as_deref_mut() {
            conn.user = Some(user);
        }
        self.queue(wire::event_frame(
            "pusher:signin_success",
            None,
            &json!({ "user_data": data.user_data }),
        ));
    }

    async fn pusher_client_event(&mut self, name: &str, channel: Option<&str>, data: &RawValue) {
        let Some((conn, app_index)) = self.conn() else {
            return;
        };
        let Some(channel) = channel else {
            return self.queue(wire::error(None, "a client event needs a channel"));
        };
        let Some((kind, user_id)) = conn.channels.get(channel).cloned() else {
            return self.queue(wire::error(
                None,
                &format!("Client event rejected - not subscribed to {channel}"),
            ));
        };
        if !kind.allows_client_events() {
            return self.queue(wire::error(
                None,
                "Client event rejected - only supported on private and presence channels",
            ));
        }
        let pusher = conn.pusher.clone();
        let socket_id = conn.socket_id.clone();
        let app = pusher.app(app_index);
        if data.get().len() > app.max_event_size {
            return self.queue(wire::error(
                None,
                &format!(
                    "Client event rejected - data larger than {} bytes",
                    app.max_event_size
                ),
            ));
        }
        let verdict = match self.pusher.as_deref_mut() {
            Some(conn) => conn.client_events.check(std::time::Instant::now()),
            None => return,
        };
        match verdict {
            Verdict::Allowed => {}
            Verdict::Refused => {
                return self.queue(wire::error(
                    Some(4301),
                    "Client event rejected due to rate limit",
                ));
            }
            Verdict::Abuse => {
                self.queue(wire::error(
                    Some(4301),
                    "Client event rejected due to rate limit",
                ));
                return self.start_close(CloseCode::PolicyViolation, Closer::Server);
            }
        }
        let hub_channel = pusher.hub_channel(app_index, channel);
        let stored = wire::stored_event(name, data, Some(&socket_id), user_id.as_deref());
        match self
            .state
            .hub
            .publish(&hub_channel, stored.as_bytes(), None)
            .await
        {
            Ok(_) => {
                Metrics::add(&self.metrics().published_total, 1);
                let mut webhook = json!({
                    "name": "client_event",
                    "channel": channel,
                    "event": name,
                    "data": data_as_string(data),
                    "socket_id": &*socket_id,
                });
                if let Some(user_id) = user_id {
                    webhook["user_id"] = Value::from(user_id);
                }
                pusher.webhooks.emit(app_index, webhook);
            }
            Err(err) => self.queue(wire::error(None, &format!("Client event not sent: {err}"))),
        }
    }

    /// Releases what the Pusher side holds (presence members, the signed-in user); the
    /// hub subscriptions are released with the session's. A member leaves at once when the
    /// connection was closed by the client or refused for good, after the grace otherwise.
    pub(crate) async fn pusher_finish(&mut self, departure: Departure) {
        let Some(conn) = self.pusher.as_deref_mut() else {
            return;
        };
        let Some(app) = conn.app else {
            return;
        };
        let pusher = conn.pusher.clone();
        let members = std::mem::take(&mut conn.members);
        for channel in std::mem::take(&mut conn.channels).into_keys() {
            pusher.leave(app, &channel, self.id);
        }
        if let Some(user) = conn.user.take() {
            pusher.sign_out(app, &user, self.id);
        }
        for (channel, client) in members {
            self.pusher_presence_leave(&pusher, app, &channel, &client, departure)
                .await;
        }
    }

    /// Joins the hub's presence of `hub_channel` as user `id`, reads the members into the
    /// node's roster and sends `member_added` as a webhook when this is the user's first
    /// connection. Returns the member's `client`, `None` when the broker failed.
    async fn pusher_presence_join(
        &mut self,
        pusher: &Pusher,
        app: usize,
        channel: &str,
        hub_channel: &str,
        id: String,
        info: Value,
    ) -> Option<String> {
        let member = wirehub_protocol::Member {
            client: self.name.clone(),
            user: Some(id.clone()),
            info: Some(info),
        };
        let hub = &self.state.hub;
        let joined = match hub.presence_join(hub_channel, member).await {
            Ok(joined) => joined,
            Err(err) => {
                tracing::warn!(%channel, error = %err, "joining the presence failed");
                return None;
            }
        };
        let client = joined.member.client;
        match hub.presence(hub_channel, PRESENCE_MAX_MEMBERS).await {
            Ok(page) => {
                pusher.dialect.rosters.seed(hub_channel, &page.members);
                let others = page
                    .members
                    .iter()
                    .any(|m| m.user.as_deref() == Some(id.as_str()) && m.client != client);
                if joined.announced && !others {
                    pusher.member_webhook(app, channel, true, &id);
                }
            }
            Err(err) => tracing::warn!(%channel, error = %err, "reading the presence failed"),
        }
        Some(client)
    }

    /// The member `client` leaves the hub's presence of `channel` (a Pusher name); when it
    /// left at once and was its user's last connection, `member_removed` as a webhook.
    async fn pusher_presence_leave(
        &mut self,
        pusher: &Pusher,
        app: usize,
        channel: &str,
        client: &str,
        departure: Departure,
    ) {
        let hub_channel = pusher.hub_channel(app, channel);
        let hub = &self.state.hub;
        let left = hub.presence_leave(&hub_channel, client, departure).await;
        pusher.dialect.rosters.close(&hub_channel);
        let member = match left {
            Ok(Some(member)) => member,
            Ok(None) => return,
            Err(err) => {
                return tracing::warn!(%channel, error = %err, "leaving the presence failed");
            }
        };
        let Some(user_id) = member.user else {
            return;
        };
        match hub.presence(&hub_channel, PRESENCE_MAX_MEMBERS).await {
            Ok(page)
                if !page
                    .members
                    .iter()
                    .any(|m| m.user.as_ref() == Some(&user_id)) =>
            {
                pusher.member_webhook(app, channel, false, &user_id);
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(%channel, error = %err, "reading the presence failed"),
        }
    }
}

/// Earlier socket ids of one client that a `wirehub:recover` may name (the connector sends
/// its last few).
const MAX_EARLIER_SOCKETS: usize = 16;

/// Members read at most from a presence channel: Pusher limits a presence channel to 100
/// users, so a read of this many lists every connection of every user in practice.
pub(crate) const PRESENCE_MAX_MEMBERS: usize = 10_000;

/// Turns the v1 frames the hub queues itself (a `gap`) into Pusher events and drops the
/// others; Pusher events, which start with `{"event"`, pass untouched.
pub(crate) fn rewrite_v1_frames(frames: &mut VecDeque<Bytes>) {
    if !frames.iter().any(is_v1) {
        return;
    }
    let taken = std::mem::take(frames);
    for frame in taken {
        if !is_v1(&frame) {
            frames.push_back(frame);
        } else if let Some(rewritten) = wire::rewrite_v1(json_of(&frame)) {
            frames.push_back(rewritten);
        }
    }
}

fn json_of(frame: &Bytes) -> &[u8] {
    // A text frame from the server: 2 header bytes, 4 from 126 bytes on, 10 from 64 KiB.
    let start = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    };
    frame.get(start..).unwrap_or_default()
}

fn is_v1(frame: &Bytes) -> bool {
    frame.first() == Some(&0x81) && json_of(frame).starts_with(b"{\"type\"")
}

fn parse_data<T: serde::de::DeserializeOwned>(data: Option<&RawValue>) -> Option<T> {
    let data = data?.get();
    // pusher-js sends an object; some clients send the object as a JSON string.
    serde_json::from_str::<T>(data).ok().or_else(|| {
        let inner: String = serde_json::from_str(data).ok()?;
        serde_json::from_str(&inner).ok()
    })
}

fn null_value() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!("null is JSON"))
}

/// The data of a client event as Pusher's webhooks carry it: a string.
fn data_as_string(data: &RawValue) -> String {
    serde_json::from_str::<String>(data.get()).unwrap_or_else(|_| data.get().to_owned())
}

/// A presence member from signed `channel_data`: its `user_id` (a string or a number, as
/// a string) and `user_info`.
fn presence_member(channel_data: &str) -> Option<(String, Value)> {
    let data: Value = serde_json::from_str(channel_data).ok()?;
    let id = match data.get("user_id")? {
        Value::String(id) if !id.is_empty() => id.clone(),
        Value::Number(id) => id.to_string(),
        _ => return None,
    };
    Some((id, data.get("user_info").cloned().unwrap_or(Value::Null)))
}
