//! Connecting: from a [`ClientConfig`] to an open WebSocket, and what a failed attempt means.
//!
//! Everything here happens before the server's first frame: checking the URL and the token
//! header, building the rustls settings for `wss://`, the upgrade request, the handshake under
//! the connect timeout, and sorting a refusal into "retry" or "stop" (HTTP 401/403, a bad URL
//! or token). The connection task ([`crate::connection`]) calls [`connect`] once per attempt.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::time::timeout;

use crate::socket::{self, Options, Target, Upgrade};
use crate::{ClientConfig, Error, Result};

pub(crate) use crate::socket::Socket;

/// The rustls settings of a `wss://` client.
pub(crate) type Tls = Arc<rustls::ClientConfig>;

/// Checks what can be checked before the first attempt (the URL, the token header, the
/// TLS roots) and returns the TLS settings a `wss://` URL needs.
pub(crate) fn validate(config: &ClientConfig) -> Result<Option<Tls>> {
    let target = target(config)?;
    if let Some(token) = &config.token {
        check_token(token)?;
    }
    if target.secure {
        tls_settings(&config.root_certificates).map(Some)
    } else {
        Ok(None)
    }
}

/// A rustls client configuration trusting the bundled Mozilla roots and `extra` (DER).
fn tls_settings(extra: &[Vec<u8>]) -> Result<Tls> {
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
    Ok(Arc::new(settings))
}

/// Checks that a token can be sent in the `Authorization` header.
pub(crate) fn check_token(token: &str) -> Result<()> {
    bearer(token).map(drop)
}

/// The `Authorization` header value for `token`: printable ASCII only (no line breaks that
/// would end the header).
fn bearer(token: &str) -> Result<String> {
    let value = format!("Bearer {token}");
    if value
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        Ok(value)
    } else {
        Err(Error::InvalidToken)
    }
}

fn target(config: &ClientConfig) -> Result<Target> {
    Target::parse(&config.url).map_err(|reason| Error::InvalidUrl {
        url: config.url.clone(),
        reason,
    })
}

/// One connection attempt: TCP connect, TLS for `wss://`, and the WebSocket handshake, all
/// within [`ClientConfig::connect_timeout`].
///
/// # Errors
/// [`Error::Unauthorized`] for HTTP 401/403, [`Error::Overloaded`] for 429/503,
/// [`Error::InvalidUrl`], [`Error::InvalidToken`], or [`Error::Connect`] for anything else
/// worth retrying.
pub(crate) async fn connect(config: &ClientConfig, tls: Option<Tls>) -> Result<Socket> {
    let target = target(config)?;
    let authorization = config.token.as_deref().map(bearer).transpose()?;
    let options = Options {
        authorization: authorization.as_deref(),
        compression: config.compression,
        max_message_size: config.max_message_size,
        tls,
    };
    let connect_timeout = config.connect_timeout;
    match timeout(connect_timeout, socket::open(&target, &options)).await {
        Ok(Ok(Upgrade::Open(socket))) => Ok(socket),
        Ok(Ok(Upgrade::Refused { status, headers })) => Err(refusal(status, &headers)),
        Ok(Err(error)) => Err(Error::connect(error.to_string())),
        Err(_) => Err(Error::connect(format!(
            "no WebSocket handshake within {connect_timeout:?}"
        ))),
    }
}

/// What an upgrade answered with another status than 101 means.
fn refusal(status: u16, headers: &[(String, String)]) -> Error {
    if status == 401 || status == 403 {
        Error::Unauthorized { status }
    } else if status == 503 || status == 429 {
        Error::Overloaded {
            status,
            retry_after: retry_after(headers),
        }
    } else {
        Error::connect(format!(
            "the server answered the upgrade with HTTP {status}"
        ))
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by wirehub and is ignored),
/// capped at [`wirehub_protocol::MAX_HINT`].
fn retry_after(headers: &[(String, String)]) -> Option<Duration> {
    let seconds: u64 = headers
        .iter()
        .find(|(name, _)| name == "retry-after")?
        .1
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
    fn urls_and_tokens_are_checked_before_connecting() {
        assert_eq!(
            bearer("abc").expect("valid"),
            "Bearer abc",
            "the token goes in the Authorization header"
        );
        assert!(validate(&ClientConfig::new("ws://127.0.0.1:1/ws").token("abc")).is_ok());
        for url in ["http://x/ws", "not a url"] {
            assert!(matches!(
                validate(&ClientConfig::new(url)),
                Err(Error::InvalidUrl { .. })
            ));
        }
        assert!(matches!(
            validate(&ClientConfig::new("ws://x/ws").token("a\nb")),
            Err(Error::InvalidToken)
        ));
        assert!(matches!(
            validate(&ClientConfig::new("wss://x/ws")),
            Ok(Some(_))
        ));
    }

    #[test]
    fn overload_refusals_carry_retry_after() {
        let refusal = |status: u16, retry_after: Option<&str>| {
            let headers: Vec<(String, String)> = retry_after
                .map(|value| ("retry-after".to_owned(), value.to_owned()))
                .into_iter()
                .collect();
            refusal(status, &headers)
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
        assert!(matches!(
            refusal(401, None),
            Error::Unauthorized { status: 401 }
        ));
    }
}
