//! The signatures of the Pusher protocol, all HMAC-SHA256 with the app's secret, hex:
//! channel authorizations (`socket_id:channel[:channel_data]`), user sign-in
//! (`socket_id::user::user_data`), HTTP API requests (`METHOD\nPATH\nsorted query`, with the
//! body's MD5 among the parameters) and webhooks (the body). Every comparison of a given
//! signature is constant-time (`hmac`'s `verify_slice`).

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far an API request's `auth_timestamp` may be from the server's clock, in seconds.
pub(crate) const TIMESTAMP_WINDOW: i64 = 600;

/// The hex HMAC-SHA256 of `message` keyed with `secret`.
pub(crate) fn sign(secret: &str, message: &[u8]) -> String {
    hex(&mac(secret, message).finalize().into_bytes())
}

fn mac(secret: &str, message: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(message);
    mac
}

/// Whether `signature` (hex) is the HMAC-SHA256 of `message`, compared in constant time.
pub(crate) fn verify(secret: &str, message: &[u8], signature: &str) -> bool {
    let Some(given) = unhex(signature) else {
        return false;
    };
    mac(secret, message).verify_slice(&given).is_ok()
}

/// Checks an `auth` field (`KEY:SIGNATURE`) against `message`.
pub(crate) fn verify_auth(key: &str, secret: &str, auth: &str, message: &str) -> bool {
    match auth.split_once(':') {
        Some((given_key, signature)) => {
            given_key == key && verify(secret, message.as_bytes(), signature)
        }
        None => false,
    }
}

/// The string a channel authorization signs.
pub(crate) fn channel_message(
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    }
}

/// The string a user sign-in signs.
pub(crate) fn user_message(socket_id: &str, user_data: &str) -> String {
    format!("{socket_id}::user::{user_data}")
}

/// The hex MD5 of a request body.
pub(crate) fn body_md5(body: &[u8]) -> String {
    hex(&Md5::digest(body))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 15)]));
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// Why an HTTP API request's signature was refused, with Pusher's status for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ApiAuthError {
    /// A parameter is missing (401).
    #[error("missing parameter {0}")]
    Missing(&'static str),
    /// `auth_key` names no app key (401).
    #[error("unknown auth_key")]
    UnknownKey,
    /// `auth_version` is not 1.0 (400).
    #[error("auth_version must be 1.0")]
    Version,
    /// `auth_timestamp` is too far from the server's clock (401).
    #[error("timestamp expired: given {given}, current {now}, the window is {TIMESTAMP_WINDOW} s")]
    Timestamp {
        /// The request's timestamp.
        given: i64,
        /// The server's clock.
        now: i64,
    },
    /// `body_md5` does not match the body (401).
    #[error("body_md5 does not match the body")]
    BodyMd5,
    /// The signature does not match (401).
    #[error("invalid signature: expected HMAC SHA256 hex digest of {0:?}")]
    Signature(String),
}

impl ApiAuthError {
    /// The HTTP status Pusher answers with.
    pub(crate) fn status(&self) -> u16 {
        match self {
            ApiAuthError::Version => 400,
            _ => 401,
        }
    }
}

/// Checks a signed API request: `params` are the query's decoded `(key, value)` pairs,
/// `path` the request path, `now` the server's clock in Unix seconds.
///
/// # Errors
/// The first check that fails, in Pusher's order: parameters, key, version, timestamp,
/// body MD5, signature.
pub(crate) fn verify_request(
    key: &str,
    secret: &str,
    method: &str,
    path: &str,
    params: &[(String, String)],
    body: &[u8],
    now: i64,
) -> Result<(), ApiAuthError> {
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let given_key = get("auth_key").ok_or(ApiAuthError::Missing("auth_key"))?;
    let timestamp = get("auth_timestamp").ok_or(ApiAuthError::Missing("auth_timestamp"))?;
    let version = get("auth_version").ok_or(ApiAuthError::Missing("auth_version"))?;
    let signature = get("auth_signature").ok_or(ApiAuthError::Missing("auth_signature"))?;
    if given_key != key {
        return Err(ApiAuthError::UnknownKey);
    }
    if version != "1.0" {
        return Err(ApiAuthError::Version);
    }
    let given: i64 = timestamp
        .parse()
        .map_err(|_| ApiAuthError::Timestamp { given: 0, now })?;
    if (given - now).abs() > TIMESTAMP_WINDOW {
        return Err(ApiAuthError::Timestamp { given, now });
    }
    if !body.is_empty() {
        let md5 = get("body_md5").ok_or(ApiAuthError::Missing("body_md5"))?;
        if !md5.eq_ignore_ascii_case(&body_md5(body)) {
            return Err(ApiAuthError::BodyMd5);
        }
    }
    let message = string_to_sign(method, path, params);
    if verify(secret, message.as_bytes(), signature) {
        Ok(())
    } else {
        Err(ApiAuthError::Signature(message))
    }
}

/// `METHOD\nPATH\nk1=v1&k2=v2...`: every parameter but `auth_signature`, keys lowercased and
/// sorted, values as decoded.
pub(crate) fn string_to_sign(method: &str, path: &str, params: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, &str)> = params
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("auth_signature"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    pairs.sort();
    let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{}\n{path}\n{}",
        method.to_ascii_uppercase(),
        query.join("&")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pusher's documented example (pusher.com/docs/channels/library_auth_reference/auth-signatures):
    // key 278d425bdf160c739803, secret 7ad3773142a6692b25b8, socket 1234.1234.
    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";

    #[test]
    fn issue_12_private_channel_signature_matches_pushers_example() {
        let message = channel_message("1234.1234", "private-foobar", None);
        assert_eq!(
            sign(SECRET, message.as_bytes()),
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        let auth = format!("{KEY}:{}", sign(SECRET, message.as_bytes()));
        assert!(verify_auth(KEY, SECRET, &auth, &message));
        assert!(!verify_auth("other", SECRET, &auth, &message));
        assert!(!verify_auth(KEY, SECRET, &auth, "1234.1234:private-other"));
        assert!(!verify_auth(KEY, SECRET, "no-colon", &message));
        assert!(!verify_auth(KEY, SECRET, &format!("{KEY}:zz"), &message));
    }

    #[test]
    fn issue_12_presence_channel_signature_matches_the_official_sdk() {
        // The value the `pusher` npm package's authorizeChannel gives for the same input.
        let data = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
        let message = channel_message("1234.1234", "presence-foobar", Some(data));
        assert_eq!(
            sign(SECRET, message.as_bytes()),
            "31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"
        );
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn issue_12_api_request_signature_matches_pushers_example() {
        // The HTTP API reference's worked example: app 3, key/secret as above.
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        assert_eq!(body_md5(body), "ec365a775a4cd0599faeb73354201b6f");
        let mut query = params(&[
            ("auth_key", KEY),
            ("auth_timestamp", "1353088179"),
            ("auth_version", "1.0"),
            ("body_md5", "ec365a775a4cd0599faeb73354201b6f"),
        ]);
        let message = string_to_sign("POST", "/apps/3/events", &query);
        assert_eq!(
            message,
            "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
        );
        let signature = sign(SECRET, message.as_bytes());
        assert_eq!(
            signature,
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
        query.push(("auth_signature".to_owned(), signature));
        let now = 1_353_088_179;
        let check = |query: &[(String, String)], body: &[u8], now: i64| {
            verify_request(KEY, SECRET, "POST", "/apps/3/events", query, body, now)
        };
        assert_eq!(check(&query, body, now), Ok(()));
        assert_eq!(check(&query, body, now + 600), Ok(()));
        assert!(matches!(
            check(&query, body, now + 601),
            Err(ApiAuthError::Timestamp { .. })
        ));
        assert_eq!(check(&query, b"{}", now), Err(ApiAuthError::BodyMd5));
        let mut tampered = query.clone();
        tampered.push(("extra".to_owned(), "1".to_owned()));
        assert!(matches!(
            check(&tampered, body, now),
            Err(ApiAuthError::Signature(_))
        ));
        let no_key: Vec<_> = query
            .iter()
            .filter(|(k, _)| k != "auth_key")
            .cloned()
            .collect();
        assert_eq!(
            check(&no_key, body, now),
            Err(ApiAuthError::Missing("auth_key"))
        );
        let mut version = query.clone();
        version[2].1 = "2.0".to_owned();
        assert_eq!(check(&version, body, now), Err(ApiAuthError::Version));
        assert_eq!(ApiAuthError::Version.status(), 400);
    }

    #[test]
    fn issue_12_user_signin_and_webhook_signatures() {
        let user_data = r#"{"id":"12345"}"#;
        let message = user_message("1234.1234", user_data);
        assert_eq!(message, r#"1234.1234::user::{"id":"12345"}"#);
        let auth = format!("{KEY}:{}", sign(SECRET, message.as_bytes()));
        // As the `pusher` npm package's authenticateUser signs it.
        assert_eq!(
            auth,
            "278d425bdf160c739803:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
        );
        assert!(verify_auth(KEY, SECRET, &auth, &message));
        assert!(verify(
            SECRET,
            b"body",
            &sign(SECRET, b"body").to_uppercase()
        ));
        assert!(!verify(SECRET, b"body", "abc"));
    }
}
