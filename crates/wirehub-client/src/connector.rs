//! Connecting: from a [`ClientConfig`] to an open WebSocket, and what a failed attempt means.
//!
//! Everything here happens before the server's first frame: checking the URL and the token
//! header, building the rustls settings for `wss://`, the upgrade request, the handshake under
//! the connect timeout, and sorting a refusal into "retry" or "stop" (HTTP 401/403, a bad URL
//! or token). The connection task ([`crate::connection`]) calls [`connect`] once per attempt.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Request, header};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::{ClientConfig, Error, Result};

/// An open WebSocket to the server.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Checks what can be checked before the first attempt (the URL, the token header, the
/// TLS roots) and returns the TLS settings a `wss://` URL needs.
pub(crate) fn validate(config: &ClientConfig) -> Result<Option<Connector>> {
    build_request(config)?;
    let secure = config
        .url
        .get(..6)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("wss://"));
    if secure {
        tls_settings(&config.root_certificates).map(Some)
    } else {
        Ok(None)
    }
}

/// A rustls client configuration trusting the bundled Mozilla roots and `extra` (DER).
fn tls_settings(extra: &[Vec<u8>]) -> Result<Connector> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for der in extra {
        roots
            .add(CertificateDer::from(der.clone()))
            .map_err(|error| Error::Tls {
                reason: format!("cannot use a root certificate: {error}"),
            })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let settings = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| Error::Tls {
            reason: error.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(settings)))
}

/// Checks that a token can be sent in the `Authorization` header.
pub(crate) fn check_token(token: &str) -> Result<()> {
    bearer(token).map(drop)
}

fn bearer(token: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| Error::InvalidToken)
}

fn build_request(config: &ClientConfig) -> Result<Request<()>> {
    let invalid = |reason: String| Error::InvalidUrl {
        url: config.url.clone(),
        reason,
    };
    let scheme = config.url.split_once("://").map(|(scheme, _)| scheme);
    if !matches!(scheme, Some(scheme) if scheme.eq_ignore_ascii_case("ws") || scheme.eq_ignore_ascii_case("wss"))
    {
        return Err(invalid("the scheme must be ws:// or wss://".into()));
    }
    let mut request = config
        .url
        .as_str()
        .into_client_request()
        .map_err(|err| invalid(err.to_string()))?;
    if let Some(token) = &config.token {
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, bearer(token)?);
    }
    Ok(request)
}

/// One connection attempt: TCP connect, TLS for `wss://`, and the WebSocket handshake, all
/// within [`ClientConfig::connect_timeout`].
///
/// # Errors
/// [`Error::Unauthorized`] for HTTP 401/403, [`Error::InvalidUrl`], [`Error::InvalidToken`],
/// or [`Error::Connect`] for anything worth retrying.
pub(crate) async fn connect(config: &ClientConfig, tls: Option<Connector>) -> Result<Socket> {
    let request = build_request(config)?;
    let connect_timeout = config.connect_timeout;
    let handshake = tokio_tungstenite::connect_async_tls_with_config(request, None, true, tls);
    match timeout(connect_timeout, handshake).await {
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(error)) => Err(classify_connect_error(error, &config.url)),
        Err(_) => Err(Error::connect(format!(
            "no WebSocket handshake within {connect_timeout:?}"
        ))),
    }
}

fn classify_connect_error(error: tungstenite::Error, url: &str) -> Error {
    match error {
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            if status == 401 || status == 403 {
                Error::Unauthorized { status }
            } else if status == 503 || status == 429 {
                Error::Overloaded {
                    status,
                    retry_after: retry_after(response.headers()),
                }
            } else {
                Error::connect(format!(
                    "the server answered the upgrade with HTTP {status}"
                ))
            }
        }
        tungstenite::Error::Url(error) => Error::InvalidUrl {
            url: url.to_owned(),
            reason: error.to_string(),
        },
        other => Error::connect(other.to_string()),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by wirehub and is ignored),
/// capped at [`wirehub_protocol::MAX_HINT`].
fn retry_after(headers: &tokio_tungstenite::tungstenite::http::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(wirehub_protocol::MAX_HINT))
}

/// Whether a failed attempt must stop the client instead of being retried.
pub(crate) fn is_fatal_connect_error(error: &Error) -> bool {
    matches!(
        error,
        Error::Unauthorized { .. } | Error::InvalidUrl { .. } | Error::InvalidToken
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_token() {
        let config = ClientConfig::new("ws://127.0.0.1:1/ws").token("abc");
        let request = build_request(&config).expect("valid");
        assert_eq!(
            request
                .headers()
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
            Some(&b"Bearer abc"[..])
        );
        assert!(matches!(
            build_request(&ClientConfig::new("http://x/ws")),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            build_request(&ClientConfig::new("not a url")),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            build_request(&ClientConfig::new("ws://x/ws").token("a\nb")),
            Err(Error::InvalidToken)
        ));
    }

    #[test]
    fn overload_refusals_carry_retry_after() {
        let refusal = |status: u16, retry_after: Option<&str>| {
            let mut response = tungstenite::http::Response::builder().status(status);
            if let Some(value) = retry_after {
                response = response.header(header::RETRY_AFTER, value);
            }
            let response = response.body(None).expect("valid response");
            classify_connect_error(tungstenite::Error::Http(Box::new(response)), "ws://x/ws")
        };
        assert!(matches!(
            refusal(503, Some("7")),
            Error::Overloaded { status: 503, retry_after: Some(wait) } if wait == Duration::from_secs(7)
        ));
        assert!(matches!(
            refusal(429, Some(" 2 ")),
            Error::Overloaded { status: 429, retry_after: Some(wait) } if wait == Duration::from_secs(2)
        ));
        assert!(matches!(
            refusal(503, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Error::Overloaded {
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(
            refusal(503, Some("99999999")),
            Error::Overloaded { retry_after: Some(wait), .. } if wait == wirehub_protocol::MAX_HINT
        ));
        assert!(matches!(refusal(500, Some("3")), Error::Connect { .. }));
    }
}
