//! `wirehub token`: prints an HS256 token for development (the server verifies it with the
//! same `--jwt-secret`). Production tokens come from your own auth service.

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use jsonwebtoken::{EncodingKey, Header, encode};
use wirehub_protocol::Claims;

use crate::duration::parse_duration;

/// Flags of `wirehub token`.
#[derive(Args, Debug)]
pub(crate) struct TokenArgs {
    /// The HS256 secret (the server's --jwt-secret).
    #[arg(long, env = "WIREHUB_JWT_SECRET")]
    secret: String,
    /// The user id (`sub` claim).
    #[arg(long)]
    sub: String,
    /// A channel pattern the token may subscribe to (`chat:*` matches any suffix); repeatable.
    #[arg(long = "subscribe", value_name = "PATTERN")]
    subscribe: Vec<String>,
    /// A channel pattern the token may publish to; repeatable.
    #[arg(long = "publish", value_name = "PATTERN")]
    publish: Vec<String>,
    /// How long the token is valid.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
}

/// Builds the token.
///
/// # Errors
/// When a pattern is invalid or the token cannot be encoded.
pub(crate) fn token(args: &TokenArgs) -> anyhow::Result<String> {
    for pattern in args.subscribe.iter().chain(&args.publish) {
        wirehub_protocol::validate_pattern(pattern)
            .with_context(|| format!("invalid channel pattern {pattern:?}"))?;
    }
    let claims = Claims::valid_for(&args.sub, args.ttl)
        .subscribe(&args.subscribe)
        .publish(&args.publish);
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(args.secret.as_bytes()),
    )
    .context("cannot encode the token")
}
