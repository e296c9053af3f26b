//! Presence on the server side: `GET /api/presence`, the housekeeping task that renews this
//! node's leases and removes members whose grace or lease ended, and the lifecycle events of
//! members (`member_join`, `member_leave`), each reported by the one node where the
//! transition happened: the node of the connection for a join or a leave at once, the node
//! whose sweep removed the member for a leave after a grace or a lease.
//!
//! The session's side (a subscription to a presence channel makes its connection a member;
//! the `presence` request) is in `session::presence`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use tracing::debug;
use wirehub_core::{LifecycleEvent, PresencePage};
use wirehub_protocol::{ErrorCode, Member, PresenceQuery, PresenceReply};

use crate::http::api_error;
use crate::state::AppState;

/// `GET /api/presence?channel=C`: the members of a presence channel (behind the API key when
/// one is set).
pub(crate) async fn api_presence(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Result<Query<PresenceQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let params = match crate::http::authorized_query(&state, &headers, params) {
        Ok(params) => params,
        Err(response) => return *response,
    };
    if let Err(response) = crate::http::checked_channel(&params.channel) {
        return *response;
    }
    if !state.hub.presence_enabled(&params.channel) {
        return api_error(
            StatusCode::NOT_FOUND,
            ErrorCode::PresenceDisabled,
            disabled_message(&params.channel),
        );
    }
    match state
        .hub
        .presence(&params.channel, state.config.presence_max_members)
        .await
    {
        Ok(page) => axum::Json(reply(params.channel, page)).into_response(),
        Err(err) => api_error(StatusCode::SERVICE_UNAVAILABLE, err.code(), err.to_string()),
    }
}

/// The reply body for a page of members.
pub(crate) fn reply(channel: String, page: PresencePage) -> PresenceReply {
    PresenceReply {
        channel,
        count: page.count,
        members: page.members,
        truncated: page.truncated,
    }
}

/// Why `presence` is refused on `channel`.
pub(crate) fn disabled_message(channel: &str) -> String {
    format!("{channel:?} has no presence: no [[channels]] table with presence = true matches it")
}

/// Reports a join that this node announced.
pub(crate) fn joined(state: &AppState, channel: &str, member: &Member) {
    state.lifecycle.emit_with(|| LifecycleEvent::MemberJoin {
        channel: Arc::from(channel),
        member: member.clone(),
    });
}

/// Reports a leave that this node announced.
pub(crate) fn left(state: &AppState, channel: &str, member: Member) {
    state.lifecycle.emit_with(|| LifecycleEvent::MemberLeave {
        channel: Arc::from(channel),
        member,
    });
}

/// How often the housekeeping runs: often enough for a grace to end on time.
pub(crate) fn sweep_interval(grace: Duration) -> Duration {
    (grace / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Runs the presence housekeeping until shutdown.
pub(crate) async fn sweep(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(sweep_interval(state.config.presence_grace));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        match state.hub.presence_sweep().await {
            Ok(gone) => {
                for gone in gone {
                    left(&state, &gone.channel, gone.member);
                }
            }
            Err(err) => debug!(error = %err, "presence housekeeping failed; trying again"),
        }
    }
}
