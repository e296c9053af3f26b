//! permessage-deflate at the upgrade: the server's settings ([`DeflateSettings`]) and the
//! answer to a client's offer. The codec (negotiation rules, compression, inflation) is in
//! `wirehub-ws`; the compressed frame of a publication is built once in `wirehub-core`.

use http::{HeaderMap, HeaderValue, header};
use wirehub_ws::{Deflate, DeflateConfig};

/// How the server uses permessage-deflate with the clients that offer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateSettings {
    /// Messages shorter than this many bytes (the JSON text) are sent uncompressed: for small
    /// frames compression costs more CPU than it saves bytes.
    pub threshold: usize,
    /// Let clients keep their compression context between messages. Their messages then
    /// compress better, but the server keeps a decompressor (about 40 KiB) for each such
    /// connection from its first compressed message on; when false (the default) the server
    /// asks for `client_no_context_takeover` and keeps nothing per connection.
    pub client_context_takeover: bool,
}

impl DeflateSettings {
    /// The documented defaults: a 256-byte threshold, no client context takeover.
    pub fn new() -> Self {
        DeflateSettings {
            threshold: 256,
            client_context_takeover: false,
        }
    }
}

impl Default for DeflateSettings {
    fn default() -> Self {
        DeflateSettings::new()
    }
}

/// The accepted offer among the request's `Sec-WebSocket-Extensions`, if the server has
/// permessage-deflate on and the client offered it acceptably.
pub(crate) fn negotiate(
    settings: Option<&DeflateSettings>,
    headers: &HeaderMap,
) -> Option<Deflate> {
    let settings = settings?;
    let offers = headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|value| value.to_str().ok());
    wirehub_ws::negotiate(
        offers,
        &DeflateConfig {
            client_context_takeover: settings.client_context_takeover,
        },
    )
}

/// Adds the response's `Sec-WebSocket-Extensions` for an accepted offer.
pub(crate) fn answer(deflate: Option<&Deflate>, headers: &mut HeaderMap) {
    if let Some(value) = deflate.and_then(|d| HeaderValue::from_str(&d.response()).ok()) {
        headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
    }
}
