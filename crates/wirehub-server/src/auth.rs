//! Token authentication: a JWT at the upgrade (`Authorization: Bearer` or `?token=`), channel
//! permissions from its claims, and `refresh` before it expires.
//!
//! Claims: `sub` (user id), `exp` (required), optional `nbf`, and `subscribe` / `publish`:
//! lists of channel patterns where a trailing `*` matches any suffix (`chat:*`). A token
//! without a list grants nothing of that kind. HS256 with `--jwt-secret`; RS256/RS384/RS512
//! or ES256/ES384 with `--jwt-public-key`. The claims and their permission rules are
//! [`wirehub_protocol::Claims`]; this module verifies tokens and finds them in requests.

use std::borrow::Cow;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
pub use wirehub_protocol::Claims;

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
        Some(query_decode(value))
    })
}

/// Decodes a query value: `%XX` escapes and `+` for a space (JWTs are base64url and rarely
/// need either). An escape that is not two hex digits is kept as it is.
fn query_decode(text: &str) -> String {
    let spaced: Cow<'_, str> = if text.contains('+') {
        Cow::Owned(text.replace('+', " "))
    } else {
        Cow::Borrowed(text)
    };
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(query_decode("100%"), "100%");
        assert_eq!(query_decode("%zz"), "%zz");
        assert_eq!(query_decode("a+b%2Bc%20d"), "a b+c d");
    }

    #[test]
    fn issue_10_a_signed_hex_escape_is_not_decoded() {
        // `u8::from_str_radix` accepts a leading sign, so `%+1` once decoded to byte 1.
        assert_eq!(query_decode("%+1"), "% 1");
        assert_eq!(query_decode("%-1"), "%-1");
        assert_eq!(query_decode("x%+1y"), "x% 1y");
        assert_eq!(query_decode("%2"), "%2", "a short escape at the end");
        assert_eq!(query_decode("%41%4a"), "AJ");
    }
}
