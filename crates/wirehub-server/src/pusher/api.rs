//! The Pusher HTTP API, as the official server SDKs call it: `POST /apps/ID/events`,
//! `POST /apps/ID/batch_events`, `GET /apps/ID/channels`, `GET /apps/ID/channels/C`,
//! `GET /apps/ID/channels/C/users` and `POST /apps/ID/users/U/terminate_connections`.
//!
//! Every request is signed (`sign::verify_request`: `auth_key`, `auth_timestamp` within
//! ±600 s, `auth_version` 1.0, `body_md5`, the signature over the sorted parameters); errors
//! are answered as Pusher does, with a status (400, 401, 403, 404, 413) and a text body.

// The handlers' early answers are axum responses, returned once per request.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{Method, StatusCode, header};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use tracing::debug;
use wirehub_protocol::validate_channel;

use super::wire::{self, ChannelKind};
use super::{Pusher, sign};
use crate::metrics::Metrics;
use crate::state::AppState;

/// Largest request body accepted (a batch of ten events of 10 KB fits).
const MAX_BODY: usize = 256 << 10;
/// Channels one event may name at most (Pusher's limit).
const MAX_CHANNELS: usize = 100;
/// Events one batch may hold at most (Pusher's limit).
const MAX_BATCH: usize = 10;
/// Longest event name (Pusher's limit).
const MAX_NAME: usize = 200;

/// The HTTP API's routes.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/apps/{app}/events", post(events))
        .route("/apps/{app}/batch_events", post(batch_events))
        .route("/apps/{app}/channels", get(channels))
        .route("/apps/{app}/channels/{channel}", get(channel))
        .route("/apps/{app}/channels/{channel}/users", get(users))
        .route(
            "/apps/{app}/users/{user}/terminate_connections",
            post(terminate),
        )
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn json_reply(value: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// A signed request, checked: the app, its decoded query parameters and its body.
struct Signed {
    pusher: Arc<Pusher>,
    app: usize,
    params: Vec<(String, String)>,
    body: Bytes,
}

impl Signed {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn check(state: &AppState, app_id: &str, request: Request) -> Result<Signed, Response> {
    let Some(pusher) = state.pusher.clone() else {
        return Err(text(StatusCode::NOT_FOUND, "Pusher protocol not enabled"));
    };
    let Some(app) = pusher.app_by_id(app_id) else {
        return Err(text(
            StatusCode::NOT_FOUND,
            format!("Unknown app {app_id:?}"),
        ));
    };
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let params = parse_query(request.uri().query().unwrap_or(""));
    let Ok(body) = axum::body::to_bytes(request.into_body(), MAX_BODY).await else {
        return Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body larger than {MAX_BODY} bytes"),
        ));
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.as_secs() as i64);
    let config = pusher.app(app);
    if let Err(err) = sign::verify_request(
        &config.key,
        &config.secret,
        method.as_str(),
        &path,
        &params,
        &body,
        now,
    ) {
        debug!(app = app_id, error = %err, "Pusher API request refused");
        let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        return Err(text(status, capitalize(&err.to_string())));
    }
    Ok(Signed {
        pusher,
        app,
        params,
        body,
    })
}

fn capitalize(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The query's `(key, value)` pairs, percent-decoded (the SDKs sign the decoded values).
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(key), decode(value))
        })
        .collect()
}

/// One event of `events` or `batch_events`.
#[derive(Debug, Deserialize)]
struct Event {
    name: String,
    data: Box<RawValue>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    socket_id: Option<String>,
    #[serde(default)]
    info: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Batch {
    batch: Vec<Event>,
}

/// Checks an event; returns its channels.
fn validate_event(pusher: &Pusher, app: usize, event: &Event) -> Result<Vec<String>, Response> {
    let channels = match (&event.channels, &event.channel) {
        (Some(channels), _) => channels.clone(),
        (None, Some(channel)) => vec![channel.clone()],
        (None, None) => {
            return Err(text(StatusCode::BAD_REQUEST, "Missing channels or channel"));
        }
    };
    if channels.is_empty() || channels.len() > MAX_CHANNELS {
        return Err(text(
            StatusCode::BAD_REQUEST,
            format!("An event needs 1 to {MAX_CHANNELS} channels"),
        ));
    }
    if event.name.is_empty() || event.name.len() > MAX_NAME {
        return Err(text(
            StatusCode::BAD_REQUEST,
            format!("Event name must be 1 to {MAX_NAME} characters"),
        ));
    }
    let max = pusher.app(app).max_event_size;
    if event.data.get().len() > max {
        return Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Event data larger than {max} bytes"),
        ));
    }
    for channel in &channels {
        if !wire::valid_channel(channel)
            || validate_channel(&pusher.hub_channel(app, channel)).is_err()
        {
            return Err(text(
                StatusCode::BAD_REQUEST,
                format!("Invalid channel name {channel:?}"),
            ));
        }
    }
    if let Some(socket_id) = &event.socket_id
        && !valid_socket_id(socket_id)
    {
        return Err(text(
            StatusCode::BAD_REQUEST,
            format!("Invalid socket_id {socket_id:?}"),
        ));
    }
    Ok(channels)
}

fn valid_socket_id(socket_id: &str) -> bool {
    socket_id.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    })
}

async fn publish(
    state: &AppState,
    pusher: &Pusher,
    app: usize,
    event: &Event,
    channels: &[String],
) -> Result<(), Response> {
    let stored = wire::stored_event(&event.name, &event.data, event.socket_id.as_deref(), None);
    for channel in channels {
        let hub_channel = pusher.hub_channel(app, channel);
        if let Err(err) = state
            .hub
            .publish(&hub_channel, stored.as_bytes(), None)
            .await
        {
            return Err(text(StatusCode::SERVICE_UNAVAILABLE, err.to_string()));
        }
        Metrics::add(&state.metrics.published_total, 1);
    }
    Ok(())
}

/// What the HTTP API says of a channel: its subscriptions in the cluster (the occupancy
/// counts of the hub channel, v1 subscribers included; at least this node's own Pusher
/// subscriptions, which the counts may not show yet), and the users of a presence channel
/// (from the hub's presence, cluster-wide).
struct Counts {
    subscriptions: u64,
    users: Option<Vec<String>>,
}

async fn counts(
    state: &AppState,
    pusher: &Pusher,
    app: usize,
    channel: &str,
    with_users: bool,
) -> Result<Counts, Response> {
    let hub_channel = pusher.hub_channel(app, channel);
    let unavailable = |err: String| text(StatusCode::SERVICE_UNAVAILABLE, err);
    let counted = state
        .activity
        .occupancy()
        .store()
        .channels(&hub_channel, None, 1)
        .await
        .map_err(|err| unavailable(err.to_string()))?
        .into_iter()
        .find(|count| count.channel == hub_channel)
        .map_or(0, |count| count.subscribers);
    let local = pusher.local_subscriptions(app, channel) as u64;
    let users = if with_users && ChannelKind::of(channel).is_presence() {
        let page = state
            .hub
            .presence(&hub_channel, super::conn::PRESENCE_MAX_MEMBERS)
            .await
            .map_err(|err| unavailable(err.to_string()))?;
        Some(super::presence::users_of(&page.members))
    } else {
        None
    };
    Ok(Counts {
        subscriptions: counted.max(local),
        users,
    })
}

/// The attributes `info` asks for, of one channel.
async fn channel_info(
    state: &AppState,
    pusher: &Pusher,
    app: usize,
    channel: &str,
    info: &str,
) -> Result<(Map<String, Value>, u64), Response> {
    let wants_users = info.split(',').any(|a| a.trim() == "user_count");
    let counts = counts(state, pusher, app, channel, wants_users).await?;
    let mut out = Map::new();
    for attribute in info.split(',').map(str::trim) {
        match attribute {
            "subscription_count" => {
                out.insert("subscription_count".into(), counts.subscriptions.into());
            }
            "user_count" => {
                if let Some(users) = &counts.users {
                    out.insert("user_count".into(), users.len().into());
                }
            }
            _ => {}
        }
    }
    Ok((out, counts.subscriptions))
}

/// Channels listed at most by `GET /apps/ID/channels`.
const MAX_CHANNELS_LISTED: usize = 10_000;

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Response> {
    serde_json::from_slice(body)
        .map_err(|err| text(StatusCode::BAD_REQUEST, format!("Invalid JSON body: {err}")))
}

async fn events(
    State(state): State<Arc<AppState>>,
    Path(app_id): Path<String>,
    request: Request,
) -> Response {
    let signed = match check(&state, &app_id, request).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let event: Event = match parse_json(&signed.body) {
        Ok(event) => event,
        Err(response) => return response,
    };
    let channels = match validate_event(&signed.pusher, signed.app, &event) {
        Ok(channels) => channels,
        Err(response) => return response,
    };
    if let Err(response) = publish(&state, &signed.pusher, signed.app, &event, &channels).await {
        return response;
    }
    match &event.info {
        Some(info) => {
            let mut infos = Map::new();
            for channel in &channels {
                match channel_info(&state, &signed.pusher, signed.app, channel, info).await {
                    Ok((attributes, _)) => {
                        infos.insert(channel.clone(), Value::Object(attributes));
                    }
                    Err(response) => return response,
                }
            }
            json_reply(&json!({ "channels": infos }))
        }
        None => json_reply(&json!({})),
    }
}

async fn batch_events(
    State(state): State<Arc<AppState>>,
    Path(app_id): Path<String>,
    request: Request,
) -> Response {
    let signed = match check(&state, &app_id, request).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let batch: Batch = match parse_json(&signed.body) {
        Ok(batch) => batch,
        Err(response) => return response,
    };
    if batch.batch.len() > MAX_BATCH {
        return text(
            StatusCode::BAD_REQUEST,
            format!("Batch too large: at most {MAX_BATCH} events"),
        );
    }
    let mut checked = Vec::with_capacity(batch.batch.len());
    for event in &batch.batch {
        match validate_event(&signed.pusher, signed.app, event) {
            Ok(channels) => checked.push(channels),
            Err(response) => return response,
        }
    }
    let mut infos = Vec::new();
    let mut any_info = false;
    for (event, channels) in batch.batch.iter().zip(&checked) {
        if let Err(response) = publish(&state, &signed.pusher, signed.app, event, channels).await {
            return response;
        }
        let info = match (&event.info, channels.first()) {
            (Some(info), Some(channel)) => {
                any_info = true;
                match channel_info(&state, &signed.pusher, signed.app, channel, info).await {
                    Ok((attributes, _)) => attributes,
                    Err(response) => return response,
                }
            }
            _ => Map::new(),
        };
        infos.push(Value::Object(info));
    }
    if any_info {
        json_reply(&json!({ "batch": infos }))
    } else {
        json_reply(&json!({}))
    }
}

async fn channels(
    State(state): State<Arc<AppState>>,
    Path(app_id): Path<String>,
    request: Request,
) -> Response {
    let signed = match check(&state, &app_id, request).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let prefix = signed.param("filter_by_prefix").unwrap_or("");
    let info = signed.param("info").unwrap_or("");
    if info.split(',').any(|a| a.trim() == "user_count") && !prefix.starts_with("presence-") {
        return text(
            StatusCode::BAD_REQUEST,
            "user_count may only be requested for presence channels: filter_by_prefix=presence-",
        );
    }
    // The app's occupied channels in the cluster, with this node's own (the counts may not
    // show its latest subscriptions yet).
    let app_prefix = &signed.pusher.app(signed.app).channel_prefix;
    let listed = match state
        .activity
        .occupancy()
        .store()
        .channels(&format!("{app_prefix}{prefix}"), None, MAX_CHANNELS_LISTED)
        .await
    {
        Ok(listed) => listed,
        Err(err) => return text(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    };
    let mut names: Vec<String> = listed
        .into_iter()
        .filter(|count| count.subscribers > 0)
        .filter_map(|count| Some(count.channel.strip_prefix(app_prefix.as_str())?.to_owned()))
        .filter(|name| wire::valid_channel(name))
        .collect();
    names.extend(
        signed
            .pusher
            .channels(signed.app, prefix)
            .into_iter()
            .map(|(name, _)| name),
    );
    names.sort();
    names.dedup();
    let mut out = Map::new();
    for name in names {
        match channel_info(&state, &signed.pusher, signed.app, &name, info).await {
            Ok((attributes, _)) => {
                out.insert(name, Value::Object(attributes));
            }
            Err(response) => return response,
        }
    }
    json_reply(&json!({ "channels": out }))
}

async fn channel(
    State(state): State<Arc<AppState>>,
    Path((app_id, channel)): Path<(String, String)>,
    request: Request,
) -> Response {
    let signed = match check(&state, &app_id, request).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    if !wire::valid_channel(&channel) {
        return text(
            StatusCode::BAD_REQUEST,
            format!("Invalid channel name {channel:?}"),
        );
    }
    let info = signed.param("info").unwrap_or("");
    if info.split(',').any(|a| a.trim() == "user_count") && !ChannelKind::of(&channel).is_presence()
    {
        return text(
            StatusCode::BAD_REQUEST,
            "user_count may only be requested for presence channels",
        );
    }
    let (mut out, subscriptions) =
        match channel_info(&state, &signed.pusher, signed.app, &channel, info).await {
            Ok(found) => found,
            Err(response) => return response,
        };
    out.insert("occupied".into(), Value::from(subscriptions > 0));
    json_reply(&Value::Object(out))
}

async fn users(
    State(state): State<Arc<AppState>>,
    Path((app_id, channel)): Path<(String, String)>,
    request: Request,
) -> Response {
    let signed = match check(&state, &app_id, request).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    if !ChannelKind::of(&channel).is_presence() {
        return text(
            StatusCode::BAD_REQUEST,
            "Users may only be listed for presence channels",
        );
    }
    let users: Vec<Value> =
        match counts(&state, &signed.pusher, signed.app, &channel, true).await {
            Ok(counts) => counts.users.unwrap_or_default(),
            Err(response) => return response,
        }
        .into_iter()
        .map(|id| json!({ "id": id }))
        .collect();
    json_reply(&json!({ "users": users }))
}

async fn terminate(
    State(state): State<Arc<AppState>>,
    Path((app_id, user)): Path<(String, String)>,
    request: Request,
) -> Response {
    let signed = match check(&state, &app_id, request).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let closed = signed.pusher.terminate(signed.app, &user);
    debug!(user, closed, "Pusher user's connections terminated");
    // And on the other nodes, through the control bus, as a disconnect order by user.
    if let Some(control) = &state.control {
        let order = wirehub_protocol::DisconnectRequest {
            user: Some(super::signed_in_user(
                &signed.pusher.app(signed.app).id,
                &user,
            )),
            client: None,
            code: Some(4009),
            reason: Some("connection is unauthorized".to_owned()),
        };
        let payload = serde_json::to_vec(&order).unwrap_or_default();
        if let Err(err) = control.broadcast(payload).await {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("terminated {closed} here; the other nodes were not reached: {err}"),
            );
        }
    }
    json_reply(&json!({}))
}

/// Answers the Pusher WebSocket upgrade `/app/KEY`.
pub(crate) async fn websocket(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    request: Request<Body>,
) -> Response {
    if request.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "a WebSocket upgrade must be a GET",
        );
    }
    crate::upgrade::upgrade_pusher(&state, request, &key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_12_queries_are_decoded_as_signed() {
        assert_eq!(
            parse_query(
                "auth_key=k&info=user_count,subscription_count&filter_by_prefix=presence-&x=a%20b"
            ),
            vec![
                ("auth_key".to_owned(), "k".to_owned()),
                (
                    "info".to_owned(),
                    "user_count,subscription_count".to_owned()
                ),
                ("filter_by_prefix".to_owned(), "presence-".to_owned()),
                ("x".to_owned(), "a b".to_owned()),
            ]
        );
        assert!(valid_socket_id("123.456"));
        assert!(!valid_socket_id("123"));
        assert!(!valid_socket_id("1.a"));
    }
}
