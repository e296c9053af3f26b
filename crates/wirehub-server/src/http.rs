//! The HTTP side of the one port: health, metrics, the publish and history API, the protocol
//! schema, the page and the dashboard (`assets`), the stats (`stats`), and the WebSocket routes.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use http::{HeaderMap, StatusCode, header};
use subtle::ConstantTimeEq as _;
use wirehub_protocol::{
    ApiError, ErrorCode, HistoryQuery, PublishReply, PublishRequest, StreamPosition,
    encode_history_reply, validate_channel, validate_idempotency_key,
};

use crate::metrics::Metrics;
use crate::session::Mode;
use crate::state::AppState;
use crate::upgrade::upgrade;

/// Builds the router for one server's state (every route on one port).
pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .route("/", get(crate::assets::index))
        .route("/dashboard", get(crate::assets::dashboard))
        .route("/assets/{name}", get(crate::assets::file))
        .route("/api/stats", get(crate::stats::stats))
        .route("/healthz", get(healthz))
        .route("/readyz", get(crate::ready::readyz))
        .route("/metrics", get(metrics))
        .route("/schema/protocol.json", get(schema))
        .route("/api/publish", post(publish))
        .route("/api/history", get(history))
        .route("/api/channels", get(crate::http_admin::channels))
        .route("/api/disconnect", post(crate::http_admin::disconnect))
        .route("/api/presence", get(crate::presence::api_presence))
        .route("/ws", any(ws));
    if let Some(path) = state.config.echo_path.as_deref() {
        router = router.route(path, any(echo));
    }
    if state.pusher.is_some() {
        router = router
            .route("/app/{key}", any(crate::pusher::api::websocket))
            .merge(crate::pusher::routes());
    }
    router.with_state(state)
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    if state.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let mut page = state.metrics.render(&state.hub, &state.webhooks);
            crate::admission::render_metrics(&mut page, &state.admission);
            page
        },
    )
        .into_response()
}

async fn schema() -> Response {
    axum::Json(wirehub_protocol::protocol_schema()).into_response()
}

async fn ws(State(state): State<Arc<AppState>>, request: Request) -> Response {
    upgrade(&state, request, Mode::PubSub)
}

async fn echo(State(state): State<Arc<AppState>>, request: Request) -> Response {
    upgrade(&state, request, Mode::Echo)
}

/// An HTTP API error: `{"error": {"code": …, "message": …}}` ([`ApiError`]).
pub(crate) fn api_error(
    status: StatusCode,
    code: ErrorCode,
    message: impl Into<String>,
) -> Response {
    (status, axum::Json(ApiError::new(code, message))).into_response()
}

/// The API key check and the query of a `GET /api/...` request: the query, or the answer
/// to send instead (401, or 400 `invalid_message` naming what is wrong with the query).
pub(crate) fn authorized_query<T>(
    state: &AppState,
    headers: &HeaderMap,
    params: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, Box<Response>> {
    authorized(state, headers)?;
    params.map(|Query(params)| params).map_err(|err| {
        Box::new(api_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidMessage,
            err.body_text(),
        ))
    })
}

/// A query's `channel`, checked: nothing, or the 400 `invalid_channel` answer.
pub(crate) fn checked_channel(channel: &str) -> Result<(), Box<Response>> {
    validate_channel(channel).map_err(|err| {
        Box::new(api_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidChannel,
            err.to_string(),
        ))
    })
}

pub(crate) fn authorized(state: &AppState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(key) = state.config.api_key.as_deref() else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Compared in constant time (for keys of the same length), so that the answer's timing
    // does not tell how much of a guess was right.
    if given.is_some_and(|given| bool::from(given.as_bytes().ct_eq(key.as_bytes()))) {
        Ok(())
    } else {
        Err(Box::new(api_error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "this API needs Authorization: Bearer <api key>",
        )))
    }
}

async fn publish(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    if let Err(response) = authorized(&state, &headers) {
        return *response;
    }
    let limit = state.config.max_message_size;
    let body: Bytes = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(_) => {
            return api_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::TooLarge,
                format!("the body is larger than {limit} bytes"),
            );
        }
    };
    let request: PublishRequest<'_> = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) if err.is_data() => {
            return api_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidMessage,
                format!("expected {{\"channel\": string, \"data\": any}}: {err}"),
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
    if let Err(err) = validate_channel(&request.channel) {
        return api_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidChannel,
            err.to_string(),
        );
    }
    if let Some(key) = &request.idempotency_key
        && let Err(why) = validate_idempotency_key(key)
    {
        return api_error(StatusCode::BAD_REQUEST, ErrorCode::InvalidMessage, why);
    }
    match state
        .hub
        .publish(
            &request.channel,
            request.data.get().as_bytes(),
            request.idempotency_key.as_deref(),
        )
        .await
    {
        Ok(published) => {
            if published.duplicate {
                Metrics::add(&state.metrics.publish_duplicates_total, 1);
            } else {
                Metrics::add(&state.metrics.published_total, 1);
            }
            axum::Json(PublishReply {
                offset: published.offset,
                duplicate: published.duplicate,
            })
            .into_response()
        }
        Err(err) => api_error(StatusCode::SERVICE_UNAVAILABLE, err.code(), err.to_string()),
    }
}

/// `GET /api/history?channel=C[&since=N][&epoch=E][&limit=M]`: the channel's position and the
/// kept messages after offset `since` (default 0: everything kept), oldest first.
async fn history(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let params = match authorized_query(&state, &headers, params) {
        Ok(params) => params,
        Err(response) => return *response,
    };
    if let Err(response) = checked_channel(&params.channel) {
        return *response;
    }
    // Without an epoch the offset is taken in the current epoch.
    let limit = params.page_size();
    let epoch = match params.epoch {
        Some(epoch) => epoch,
        None => match state
            .hub
            .history(&params.channel, wirehub_core::HistoryQuery::default())
            .await
        {
            Ok(page) => page.epoch.to_string(),
            Err(err) => {
                return api_error(StatusCode::SERVICE_UNAVAILABLE, err.code(), err.to_string());
            }
        },
    };
    let query = wirehub_core::HistoryQuery {
        since: Some(StreamPosition {
            epoch,
            offset: params.since.unwrap_or(0),
        }),
        limit: Some(limit),
    };
    let page = match state.hub.history(&params.channel, query).await {
        Ok(page) => page,
        Err(err) => return api_error(StatusCode::SERVICE_UNAVAILABLE, err.code(), err.to_string()),
    };
    // The kept messages are already encoded deliveries: copied, not parsed again.
    let body = encode_history_reply(
        &params.channel,
        &page.epoch,
        page.top,
        page.complete,
        page.publications.iter().map(|p| p.json()),
    );
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
