//! The backend's view of connections: `GET /api/channels` (channels with subscribers, with
//! their counts: cluster-wide with the Redis broker) and `POST /api/disconnect` (close a
//! user's or a client's connections on every node). Both need the API key when one is set.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use tracing::{info, warn};
use wirehub_protocol::{
    ChannelInfo, ChannelsQuery, ChannelsReply, DisconnectReply, DisconnectRequest, ErrorCode,
};

use crate::activity::{Activity, Target};
use crate::http::{api_error, authorized};
use crate::state::AppState;

/// Largest body of `POST /api/disconnect`.
const MAX_BODY: usize = 4096;

/// `GET /api/channels[?prefix=P][&after=C][&limit=N]`.
pub(crate) async fn channels(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Result<Query<ChannelsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let params = match crate::http::authorized_query(&state, &headers, params) {
        Ok(params) => params,
        Err(response) => return *response,
    };
    let limit = params.page_size();
    let store = state.activity.occupancy().store();
    let prefix = params.prefix.as_deref().unwrap_or("");
    // One more than the page, to know whether another page follows.
    match store
        .channels(prefix, params.after.as_deref(), limit + 1)
        .await
    {
        Ok(mut page) => {
            let next = if page.len() > limit {
                page.truncate(limit);
                page.last().map(|last| last.channel.clone())
            } else {
                None
            };
            axum::Json(ChannelsReply {
                channels: page
                    .into_iter()
                    .map(|count| ChannelInfo {
                        channel: count.channel,
                        subscribers: count.subscribers,
                    })
                    .collect(),
                next,
                cluster_wide: store.cluster_wide(),
            })
            .into_response()
        }
        Err(err) => api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal,
            err.to_string(),
        ),
    }
}

/// `POST /api/disconnect` with `{"user": U}` or `{"client": SESSION}`, optional `code` and
/// `reason`: closes those connections here and sends the order to the other nodes.
pub(crate) async fn disconnect(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(response) = authorized(&state, &headers) {
        return *response;
    }
    let body: Bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => {
            return api_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::TooLarge,
                format!("the body is larger than {MAX_BODY} bytes"),
            );
        }
    };
    let request: DisconnectRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) if err.is_data() => {
            return api_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidMessage,
                format!("expected {{\"user\": string}} or {{\"client\": string}}: {err}"),
            );
        }
        Err(err) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidJson,
                err.to_string(),
            );
        }
    };
    if let Err(why) = request.validate() {
        return api_error(StatusCode::BAD_REQUEST, ErrorCode::InvalidMessage, why);
    }
    let disconnected = act(&state.activity, &request);
    if let Some(control) = &state.control {
        // The request was validated: it serializes.
        let payload = serde_json::to_vec(&request).unwrap_or_default();
        if let Err(err) = control.broadcast(payload).await {
            warn!(error = %err, "disconnect order not sent to the other nodes");
            return api_error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Internal,
                format!("closed {disconnected} here; the other nodes were not reached: {err}"),
            );
        }
    }
    axum::Json(DisconnectReply { disconnected }).into_response()
}

/// Carries out a disconnect order on this node's connections.
fn act(activity: &Activity, request: &DisconnectRequest) -> u64 {
    let Ok((code, reason)) = request.validate() else {
        return 0;
    };
    let target = match (&request.user, &request.client) {
        (Some(user), _) => Target::User(user),
        (None, Some(client)) => Target::Client(client),
        (None, None) => return 0,
    };
    let closed = activity.disconnect(&target, code, reason);
    if closed > 0 {
        info!(?target, code, closed, "connections closed by order");
    }
    closed
}

/// An order from another node (the control bus).
pub(crate) fn on_control(activity: &Activity, payload: &[u8]) {
    match serde_json::from_slice::<DisconnectRequest>(payload) {
        Ok(request) => {
            act(activity, &request);
        }
        Err(err) => warn!(error = %err, "unreadable order on the control channel"),
    }
}
