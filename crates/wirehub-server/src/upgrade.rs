//! The WebSocket handshake (RFC 6455 §4.2) on top of hyper's HTTP/1.1 upgrade.
//!
//! The handler checks the request, answers `101 Switching Protocols`, and spawns the session
//! on the upgraded connection. The upgraded I/O is taken back as the plain `TcpStream`
//! (hyper hands over any bytes it had already read), so the session can drive the socket
//! with readiness calls and keep no buffers while idle.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn};

use crate::auth::{AuthError, token_from_request};
use crate::config::AllowedOrigins;
use crate::metrics::Metrics;
use crate::session::{self, Mode};
use crate::state::AppState;
use crate::transport::Transport;

/// The peer address of the TCP connection a request came on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub(crate) SocketAddr);

/// Answers a WebSocket upgrade request and starts a session in `mode`.
pub(crate) fn upgrade(state: &Arc<AppState>, request: Request, mode: Mode) -> Response {
    upgrade_with(state, request, mode, None)
}

/// Answers a Pusher upgrade (`/app/KEY`): an unknown key is still upgraded, then told
/// (`pusher:error` 4001) and closed, as Pusher clients expect. Neither the origin rule nor
/// tokens apply: a Pusher app's channels are guarded by their signed authorizations.
pub(crate) fn upgrade_pusher(state: &Arc<AppState>, request: Request, key: &str) -> Response {
    let Some(pusher) = state.pusher.clone() else {
        return (StatusCode::NOT_FOUND, "Pusher protocol not enabled").into_response();
    };
    let protocol = request.uri().query().and_then(|query| {
        query
            .split('&')
            .find_map(|part| part.strip_prefix("protocol="))
            .and_then(|v| v.parse().ok())
    });
    let start = crate::pusher::conn::Start {
        app: pusher.app_by_key(key),
        protocol,
        socket_id: pusher.next_socket_id().into(),
        pusher,
    };
    upgrade_with(state, request, Mode::Pusher, Some(start))
}

fn upgrade_with(
    state: &Arc<AppState>,
    mut request: Request,
    mode: Mode,
    pusher: Option<crate::pusher::conn::Start>,
) -> Response {
    let peer = request
        .extensions()
        .get::<PeerAddr>()
        .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |p| p.0);
    if let Err(refusal) = check_handshake(request.method(), request.headers()) {
        Metrics::add(&state.metrics.upgrades_refused_total, 1);
        debug!(%peer, reason = refusal.1, "upgrade refused");
        return refusal.into_response();
    }
    if mode == Mode::PubSub
        && let Err(refusal) = check_origin(&state.config.allowed_origins, request.headers())
    {
        Metrics::add(&state.metrics.upgrades_refused_total, 1);
        debug!(%peer, reason = refusal.1, "upgrade refused");
        return refusal.into_response();
    }
    let authenticator = state
        .authenticator
        .as_ref()
        .filter(|_| mode == Mode::PubSub);
    let claims = match authenticator {
        None => None,
        Some(authenticator) => {
            let token = token_from_request(request.headers(), request.uri().query());
            let verified = token
                .ok_or(AuthError::Missing)
                .and_then(|token| authenticator.verify(&token));
            match verified {
                Ok(claims) => Some(claims),
                Err(err) => {
                    Metrics::add(&state.metrics.upgrades_refused_total, 1);
                    info!(%peer, error = %err, "upgrade refused: authentication failed");
                    return (StatusCode::UNAUTHORIZED, err.to_string()).into_response();
                }
            }
        }
    };
    // Admission control (per-address cap, --max-connections, connection rate). The slot is
    // taken atomically with its check and travels with the connection: dropped on any early
    // return below, when the upgrade fails, or when the session ends.
    let slot = match crate::admission::admit(state, request.headers(), peer) {
        Ok(slot) => slot,
        Err(refusal) => return crate::admission::refuse(state, &mut request, peer, refusal),
    };
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return (StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key").into_response();
    };
    let accept = wirehub_ws::accept_key(key.as_bytes());
    let deflate = crate::deflate::negotiate(state.config.deflate.as_ref(), request.headers());
    let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            "this connection cannot be upgraded",
        )
            .into_response();
    };
    let task_state = state.clone();
    state.tracker.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                warn!(%peer, error = %err, "upgrade failed");
                return;
            }
        };
        let (transport, leftover) = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => (Transport::Plain(parts.io.into_inner()), parts.read_buf),
            Err(upgraded) => match upgraded.downcast::<TokioIo<TlsStream<TcpStream>>>() {
                Ok(parts) => {
                    let (tcp, conn) = parts.io.into_inner().into_inner();
                    (Transport::tls(tcp, conn), parts.read_buf)
                }
                Err(_) => {
                    warn!(%peer, "upgraded connection is neither TCP nor TLS over TCP");
                    return;
                }
            },
        };
        Metrics::add(&task_state.metrics.connections_total, 1);
        let shutdown = task_state.shutdown.clone();
        session::run(
            transport, leftover, peer, task_state, mode, claims, shutdown, slot, deflate, pusher,
        )
        .await;
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    crate::deflate::answer(deflate.as_ref(), headers);
    response
}

type Refusal = (StatusCode, &'static str);

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

fn check_handshake(method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
    if method != Method::GET {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            "a WebSocket upgrade must be a GET",
        ));
    }
    if !header_has_token(headers, header::UPGRADE, "websocket") {
        return Err((
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint speaks WebSocket: send Upgrade: websocket",
        ));
    }
    if !header_has_token(headers, header::CONNECTION, "upgrade") {
        return Err((StatusCode::BAD_REQUEST, "missing Connection: Upgrade"));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err((
            StatusCode::UPGRADE_REQUIRED,
            "unsupported Sec-WebSocket-Version; use 13",
        ));
    }
    match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if !key.is_empty() => Ok(()),
        _ => Err((StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key")),
    }
}

fn check_origin(allowed: &AllowedOrigins, headers: &HeaderMap) -> Result<(), Refusal> {
    // Requests without Origin come from non-browser clients and are allowed.
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return Ok(());
    };
    let origin = origin.trim_end_matches('/');
    let ok = match allowed {
        AllowedOrigins::Any => true,
        AllowedOrigins::List(list) => list
            .iter()
            .any(|entry| entry.trim_end_matches('/').eq_ignore_ascii_case(origin)),
        AllowedOrigins::SameHost => {
            let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .is_some_and(|host| host.eq_ignore_ascii_case(origin_host))
        }
    };
    if ok {
        Ok(())
    } else {
        Err((StatusCode::FORBIDDEN, "origin not allowed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn origin_rules() {
        let same = AllowedOrigins::SameHost;
        assert!(check_origin(&same, &headers(&[("host", "a.com:8080")])).is_ok());
        assert!(
            check_origin(
                &same,
                &headers(&[("host", "a.com:8080"), ("origin", "https://a.com:8080")])
            )
            .is_ok()
        );
        assert!(
            check_origin(
                &same,
                &headers(&[("host", "a.com:8080"), ("origin", "https://evil.com")])
            )
            .is_err()
        );
        let list = AllowedOrigins::List(vec!["https://app.example".into()]);
        assert!(
            check_origin(
                &list,
                &headers(&[("host", "x"), ("origin", "https://app.example")])
            )
            .is_ok()
        );
        assert!(
            check_origin(
                &list,
                &headers(&[("host", "x"), ("origin", "https://other")])
            )
            .is_err()
        );
        assert!(
            check_origin(
                &AllowedOrigins::Any,
                &headers(&[("host", "x"), ("origin", "https://o")])
            )
            .is_ok()
        );
    }
}
