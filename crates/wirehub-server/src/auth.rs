//! Token authentication: a JWT at the upgrade (`Authorization: Bearer` or `?token=`), channel
//! permissions from its claims, and `refresh` before it expires.
//!
//! Claims: `sub` (user id), `exp` (required), optional `nbf`, and `subscribe` / `publish`:
//! lists of channel patterns where a trailing `*` matches any suffix (`chat:*`). A token
//! without a list grants nothing of that kind. HS256 with `--jwt-secret`; RS256/RS384/RS512
//! or ES256/ES384 with `--jwt-public-key`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;
use wirehub_protocol::channel_matches;

/// How tokens are checked.
#[derive(Clone)]
pub enum AuthConfig {
    /// HS256 with a shared secret.
    Secret(String),
    /// RS256/ES256 (and their longer variants) with a PEM public key.
    PublicKeyPem(Vec<u8>),
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        match self {
            AuthConfig::Secret(_) => f.write_str("AuthConfig::Secret(..)"),
            AuthConfig::PublicKeyPem(_) => f.write_str("AuthConfig::PublicKeyPem(..)"),
        }
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token in the request.
    #[error("a token is required (Authorization: Bearer TOKEN, or ?token=TOKEN)")]
    Missing,
    /// The token is malformed, badly signed, expired or not yet valid.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The configured key cannot be used.
    #[error("unusable key: {0}")]
    Key(String),
}

/// The claims wirehub reads from a token.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default)]
    pub nbf: Option<u64>,
    /// Channel patterns the holder may subscribe to.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Channel patterns the holder may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
}

impl Claims {
    /// Whether these claims allow subscribing to `channel`.
    pub fn may_subscribe(&self, channel: &str) -> bool {
        self.subscribe.iter().any(|p| channel_matches(p, channel))
    }

    /// Whether these claims allow publishing to `channel`.
    pub fn may_publish(&self, channel: &str) -> bool {
        self.publish.iter().any(|p| channel_matches(p, channel))
    }

    /// How long until the token expires (zero when it has).
    pub fn expires_in(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Duration::from_secs(self.exp).saturating_sub(now)
    }
}

/// Verifies tokens with one key.
#[derive(Clone)]
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator for a config.
    ///
    /// # Errors
    /// [`AuthError::Key`] when the public key is neither an RSA nor an EC PEM key.
    pub fn new(config: &AuthConfig) -> Result<Self, AuthError> {
        let (key, algorithms) = match config {
            AuthConfig::Secret(secret) => (
                DecodingKey::from_secret(secret.as_bytes()),
                vec![Algorithm::HS256],
            ),
            AuthConfig::PublicKeyPem(pem) => {
                if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
                    (
                        key,
                        vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
                    )
                } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
                    (key, vec![Algorithm::ES256, Algorithm::ES384])
                } else {
                    return Err(AuthError::Key(
                        "expected a PEM RSA or EC public key".to_owned(),
                    ));
                }
            }
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Authenticator { key, validation })
    }

    /// Verifies a token and returns its claims.
    ///
    /// # Errors
    /// [`AuthError::Invalid`] with the reason.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        decode::<Claims>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| AuthError::Invalid(err.to_string()))
    }
}

/// The token of an upgrade request: the `Authorization: Bearer` header, else `?token=`.
pub(crate) fn token_from_request(headers: &http::HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(value) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(value.trim().to_owned());
    }
    query?.split('&').find_map(|pair| {
        let value = pair.strip_prefix("token=")?;
        Some(percent_decode(value))
    })
}

/// Decodes `%XX` escapes and `+` (JWTs are base64url and rarely need it).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        index += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_follow_patterns() {
        let claims = Claims {
            sub: "u".into(),
            exp: u64::MAX,
            nbf: None,
            subscribe: vec!["chat:*".into(), "news".into()],
            publish: vec!["chat:room1".into()],
        };
        assert!(claims.may_subscribe("chat:room1"));
        assert!(claims.may_subscribe("news"));
        assert!(!claims.may_subscribe("newsroom"));
        assert!(claims.may_publish("chat:room1"));
        assert!(!claims.may_publish("chat:room2"));
    }

    #[test]
    fn token_sources() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(
            token_from_request(&headers, Some("a=1&token=abc%2Ed")),
            Some("abc.d".into())
        );
        assert_eq!(token_from_request(&headers, Some("a=1")), None);
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer xyz"),
        );
        assert_eq!(
            token_from_request(&headers, Some("token=abc")),
            Some("xyz".into())
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
