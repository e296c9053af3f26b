//! Tokens for tests: JWTs signed with a shared secret or a fixture's private key, from
//! [`Claims`] or from any JSON (to test what the server does with malformed claims).

pub use jsonwebtoken::Algorithm;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde::Serialize;
pub use wirehub_protocol::Claims;

/// An HS256 token for `claims` (a [`Claims`], or any JSON object).
///
/// # Panics
/// When the claims cannot be encoded.
pub fn hs256_token(secret: &str, claims: &impl Serialize) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode an HS256 token")
}

/// A token signed with a PEM private key: RSA for the `RS*` algorithms, EC otherwise.
///
/// # Panics
/// When the key does not parse or the claims cannot be encoded.
pub fn signed_token(algorithm: Algorithm, private_pem: &[u8], claims: &impl Serialize) -> String {
    let key = match algorithm {
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => {
            EncodingKey::from_rsa_pem(private_pem)
        }
        _ => EncodingKey::from_ec_pem(private_pem),
    }
    .expect("the private key parses");
    encode(&Header::new(algorithm), claims, &key).expect("encode a signed token")
}

/// Seconds since the Unix epoch, now (for `exp` and `nbf` claims written by hand).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}
