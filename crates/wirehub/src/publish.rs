//! `wirehub pub URL CHANNEL DATA`: publish one message and wait for the server's ack.
//!
//! `DATA` is JSON; an argument that is not valid JSON (a bare word like `hello`) is sent as
//! a JSON string. The command makes exactly one connection attempt, bounded by `--timeout`
//! together with the acknowledgement: there is no reconnect loop. It prints the offset the
//! server assigned and exits 0 once the server acknowledged the message; any failure
//! (connection refused, HTTP 401/403, an `error` reply, a timeout, the connection lost
//! before the ack) exits non-zero with a message on stderr.

use std::time::Duration;

use anyhow::Context;
use serde_json::value::RawValue;
use wirehub_client::{Client, ClientConfig, Error};

use crate::duration::parse_duration;

/// Arguments of `wirehub pub`.
#[derive(clap::Args, Debug)]
pub(crate) struct PubArgs {
    /// The server's WebSocket URL, e.g. ws://127.0.0.1:8080/ws.
    pub(crate) url: String,

    /// The channel to publish to.
    pub(crate) channel: String,

    /// The message: any JSON value (`{"text":"hi"}`, `42`, `"quoted"`); text that is not
    /// valid JSON, like a bare word, is sent as a JSON string.
    pub(crate) data: String,

    /// A token, sent as `Authorization: Bearer TOKEN`.
    #[arg(long, env = "WIREHUB_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,

    /// A PEM file of certificate authorities to trust for wss:// besides the bundled Mozilla
    /// roots (a private CA, or the server's self-signed certificate).
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_cert: Option<std::path::PathBuf>,

    /// Publish at most once with this key (1 to 64 visible ASCII characters): running the
    /// command again with the same key, e.g. from a script that retries, prints the first
    /// message's offset instead of publishing again, while that message is in the channel's
    /// history.
    #[arg(long, value_name = "KEY")]
    pub(crate) idempotency_key: Option<String>,

    /// Do not offer permessage-deflate (by default it is offered, and a message of 256 bytes
    /// or more is sent compressed when the server accepts).
    #[arg(long)]
    pub(crate) no_compression: bool,

    /// How long connecting plus waiting for the acknowledgement may take in total.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
}

/// Adds the certificates of `--ca-cert FILE`, if given, to the client's trusted roots.
///
/// # Errors
/// When the file cannot be read or holds no valid PEM certificate.
pub(crate) fn trust_ca_file(
    config: ClientConfig,
    file: Option<&std::path::Path>,
) -> anyhow::Result<ClientConfig> {
    let Some(file) = file else {
        return Ok(config);
    };
    let pem =
        std::fs::read(file).with_context(|| format!("cannot read --ca-cert {}", file.display()))?;
    config
        .add_root_certificates_pem(&pem)
        .with_context(|| format!("--ca-cert {}", file.display()))
}

/// Turns the `DATA` argument into the JSON to publish.
pub(crate) fn data_to_json(data: &str) -> anyhow::Result<Box<RawValue>> {
    match serde_json::from_str::<Box<RawValue>>(data) {
        Ok(json) => Ok(json),
        Err(_) => serde_json::value::to_raw_value(data).context("cannot encode DATA as a string"),
    }
}

/// Publishes one message and prints its offset.
///
/// # Errors
/// Anything that keeps the server from acknowledging the message in time.
pub(crate) async fn run(args: PubArgs) -> anyhow::Result<()> {
    let data = data_to_json(&args.data)?;
    let mut config = ClientConfig::new(args.url.clone())
        .max_reconnects(Some(0))
        .connect_timeout(args.timeout)
        .request_timeout(args.timeout)
        .compression(!args.no_compression);
    if let Some(token) = &args.token {
        config = config.token(token.clone());
    }
    let config = trust_ca_file(config, args.ca_cert.as_deref())?;
    let client = Client::connect(config).context("cannot start the client")?;
    let result = match &args.idempotency_key {
        Some(key) => {
            client
                .publish_raw_with_key(args.channel.as_str(), data, key.as_str())
                .await
        }
        None => client.publish_raw(args.channel.as_str(), data).await,
    };
    client.close().await;
    match result {
        Ok(offset) => {
            println!("{offset}");
            Ok(())
        }
        Err(error) => Err(explain(error, &args)),
    }
}

/// Says what went wrong in words that point at the fix.
fn explain(error: Error, args: &PubArgs) -> anyhow::Error {
    let url = &args.url;
    let channel = &args.channel;
    match &error {
        Error::Connect { .. } => {
            anyhow::Error::new(error).context(format!("cannot connect to {url}"))
        }
        Error::Timeout => anyhow::anyhow!(
            "no acknowledgement from {url} within {:?} (connecting included)",
            args.timeout
        ),
        Error::Server { .. } => anyhow::Error::new(error)
            .context(format!("the server refused the publish to {channel:?}")),
        Error::Disconnected if args.idempotency_key.is_some() => {
            anyhow::Error::new(error).context(format!(
                "the connection to {url} was lost; run the command again with the same \
                 --idempotency-key: the message is published at most once"
            ))
        }
        Error::Disconnected => anyhow::Error::new(error).context(format!(
            "the connection to {url} was lost; the message may or may not have been published \
             (publish with --idempotency-key to be able to retry safely)"
        )),
        _ => anyhow::Error::new(error).context(format!("cannot publish to {channel:?} at {url}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_json_or_a_string() {
        let json = |s: &str| data_to_json(s).expect("encodes").get().to_owned();
        assert_eq!(json(r#"{"text":"hi"}"#), r#"{"text":"hi"}"#);
        assert_eq!(json("42"), "42");
        assert_eq!(json("true"), "true");
        assert_eq!(json(r#""quoted""#), r#""quoted""#);
        assert_eq!(json("hello"), r#""hello""#);
        assert_eq!(json("hello world"), r#""hello world""#);
        assert_eq!(json("{broken"), r#""{broken""#);
        assert_eq!(json(""), r#""""#);
    }
}
