//! What a webhook request looks like: the body and headers of one batch
//! ([`WebhookFormat`]), and wirehub's own format ([`WirehubFormat`]).

use std::fmt;

use hmac::{Hmac, Mac};
use http::{HeaderName, HeaderValue};
use sha2::Sha256;
use wirehub_core::LifecycleEvent;
use wirehub_protocol::WebhookBatch;

use super::Envelope;

/// A request's body and the headers that go with it (`Content-Type` is
/// `application/json` unless set here).
#[derive(Debug, Clone, Default)]
pub struct Encoded {
    /// The body, sent as is (and signed as is).
    pub body: Vec<u8>,
    /// Extra headers (signatures, keys).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Turns batches of events into requests; one per delivery.
pub trait WebhookFormat: Send + Sync + fmt::Debug + 'static {
    /// Whether the delivery sends this kind of event at all (others are not queued).
    fn accepts(&self, event: &LifecycleEvent) -> bool {
        let _ = event;
        true
    }

    /// The request for one batch (never empty). Called again for each retry of the batch,
    /// which must carry the same events.
    fn encode(&self, batch: &[Envelope]) -> Encoded;
}

/// wirehub's webhooks: `{"events": [EVENT...]}` with `X-Wirehub-Signature: sha256=HEX`, the
/// HMAC-SHA256 of the raw body keyed with the secret (no header without a secret).
pub struct WirehubFormat {
    secret: Option<String>,
}

impl WirehubFormat {
    /// The format, signing with `secret` when given.
    pub fn new(secret: Option<String>) -> Self {
        WirehubFormat { secret }
    }
}

/// The header with the body's signature.
pub const SIGNATURE_HEADER: &str = "x-wirehub-signature";

impl WebhookFormat for WirehubFormat {
    fn accepts(&self, event: &LifecycleEvent) -> bool {
        !matches!(event, LifecycleEvent::Foreign { .. })
    }

    fn encode(&self, batch: &[Envelope]) -> Encoded {
        let body = WebhookBatch {
            events: batch.iter().filter_map(Envelope::to_wire).collect(),
        };
        // A batch of wire types always serializes.
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut headers = Vec::new();
        if let Some(secret) = &self.secret
            && let Ok(value) =
                HeaderValue::from_str(&format!("sha256={}", signature(secret.as_bytes(), &body)))
        {
            headers.push((HeaderName::from_static(SIGNATURE_HEADER), value));
        }
        Encoded { body, headers }
    }
}

impl fmt::Debug for WirehubFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WirehubFormat")
            .field("signed", &self.secret.is_some())
            .finish()
    }
}

/// The lowercase hex HMAC-SHA256 of `body` keyed with `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
