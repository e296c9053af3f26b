//! `wirehub sub URL CHANNEL...`: subscribe and print every delivered message's data.
//!
//! Each delivery's `data` goes to stdout as one compact JSON line, flushed per line, so the
//! output can be piped into `jq` or a script. Everything else (connection state, recovery
//! gaps, errors) goes to stderr. A slow reader loses nothing: while stdout is blocked the
//! client stops queueing and later catches up from the server's history; only messages the
//! history no longer has are reported, as one stderr line at their place in the stream. The command keeps the subscriptions alive with the client
//! SDK: it reconnects with backoff, resubscribes and recovers missed messages until it is
//! interrupted, and exits non-zero when the server tells it to stop (close codes 4000–4099,
//! HTTP 401/403 at the upgrade) or refuses a subscription for good (`forbidden`,
//! `invalid_channel`, …). A refusal for a passing reason (`internal`, e.g. the server's
//! broker is unavailable, or `rate_limited`) is retried with a backoff (100 ms doubling to
//! 5 s, jittered), at the start as after a reconnect, with one stderr line per refusal.

use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use wirehub_client::{
    Backoff, Client, ClientConfig, Event, Jitter, ReconnectReason, StreamPosition, Subscription,
    SubscriptionEvent,
};

use crate::duration::parse_duration;

const BACKOFF_HELP: &str = "\
Reconnecting: after a disconnect the client waits, then reconnects and resubscribes every
channel with the position of the last message it printed, so the server replays what was
missed (when it keeps history; a gap it cannot fill is reported on stderr). The wait before
the k-th consecutive retry (k = 0, 1, 2, ...) is

    random(0, min(MAX, INITIAL x MULTIPLIER^k))

(full jitter, applied after the cap; with --no-jitter the upper bound itself). k goes back to
0 once a connection proved healthy: the server's welcome arrived and every subscription was
confirmed, or the connection stayed up for 10 s. A server that asks to back off (close codes
4100-4199) or a connection lost without a close code starts at k = 1. Close codes 4000-4099
and HTTP 401/403 stop the command with a non-zero exit status.

The server's own waits replace that delay: an upgrade refused as overloaded (HTTP 503 or
429) with Retry-After is retried after Retry-After plus a random part of a second, and a
close whose reason carries a retry window (\"server shutting down; retry=1200-3700\", in
milliseconds, on shutdown or overload) is followed by a reconnect at a uniformly random
point of that window. The stderr line says which wait applies.

A subscription the server refuses for a passing reason (internal, e.g. its Redis is
unavailable, or rate_limited) is asked for again after random(0, min(5s, 100ms x 2^k)), at
the start as after a reconnect, with one stderr line per refusal; any other refusal
(forbidden, invalid_channel, too_many_subscriptions, ...) ends the command non-zero.";

/// Arguments of `wirehub sub`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = BACKOFF_HELP)]
pub(crate) struct SubArgs {
    /// The server's WebSocket URL, e.g. ws://127.0.0.1:8080/ws.
    pub(crate) url: String,

    /// The channels to subscribe to (one or more).
    #[arg(required = true, num_args = 1..)]
    pub(crate) channels: Vec<String>,

    /// A token, sent as `Authorization: Bearer TOKEN` on every connection.
    #[arg(long, env = "WIREHUB_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,

    /// A PEM file of certificate authorities to trust for wss:// besides the bundled Mozilla
    /// roots (a private CA, or the server's self-signed certificate).
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_cert: Option<std::path::PathBuf>,

    /// Upper bound of the first reconnect delay (the formula is in `--help`).
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
    pub(crate) backoff_initial: Duration,

    /// The cap of the reconnect delay's upper bound.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
    pub(crate) backoff_max: Duration,

    /// How much the upper bound grows per consecutive failed attempt (at least 1).
    #[arg(long, value_name = "X", default_value_t = 2.0)]
    pub(crate) backoff_multiplier: f64,

    /// Wait exactly the upper bound instead of a random time below it (not recommended when
    /// many clients share a server: they would all reconnect at the same instant).
    #[arg(long)]
    pub(crate) no_jitter: bool,

    /// Do not offer permessage-deflate (by default it is offered, and messages of 256 bytes
    /// and more arrive compressed when the server accepts).
    #[arg(long)]
    pub(crate) no_compression: bool,

    /// Send an app-level ping when nothing arrived for this long.
    #[arg(long, value_name = "DUR", default_value = "45s", value_parser = parse_duration)]
    pub(crate) idle_timeout: Duration,

    /// Reconnect when nothing arrives this long after that ping.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    pub(crate) pong_timeout: Duration,

    /// Give up on a connection attempt (TCP connect and WebSocket handshake) after this long.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    pub(crate) connect_timeout: Duration,
}

impl SubArgs {
    fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let jitter = if self.no_jitter {
            Jitter::None
        } else {
            Jitter::Full
        };
        let mut config = ClientConfig::new(self.url.clone())
            .backoff(
                Backoff::default()
                    .initial(self.backoff_initial)
                    .max(self.backoff_max)
                    .multiplier(self.backoff_multiplier)
                    .jitter(jitter),
            )
            .idle_timeout(self.idle_timeout)
            .pong_timeout(self.pong_timeout)
            .connect_timeout(self.connect_timeout)
            .compression(!self.no_compression)
            // Subscribing waits for a connection as long as it takes: the command runs until
            // it is interrupted or told to stop.
            .request_timeout(Duration::from_secs(100 * 365 * 24 * 3600));
        if let Some(token) = &self.token {
            config = config.token(token.clone());
        }
        crate::publish::trust_ca_file(config, self.ca_cert.as_deref())
    }
}

/// Runs `wirehub sub` until interrupted (exit 0) or stopped by the server (an error).
///
/// # Errors
/// An invalid URL or channel, a stop close code or HTTP 401/403, a refused subscription, or
/// a failure to write to stdout other than a closed pipe.
pub(crate) async fn run(args: SubArgs) -> anyhow::Result<()> {
    let config = args.client_config()?;
    let retry = config.resubscribe_backoff;
    let client = Client::connect(config).context("cannot start the client")?;
    let events = tokio::spawn(report_events(client.events()));

    let outcome = tokio::select! {
        outcome = subscribe_and_print(&client, &args.channels, retry) => outcome,
        interrupted = tokio::signal::ctrl_c() => {
            interrupted.context("cannot listen for Ctrl-C")?;
            Ok(())
        }
    };
    client.close().await;
    let _ = events.await;
    outcome
}

async fn subscribe_and_print(
    client: &Client,
    channels: &[String],
    retry: Backoff,
) -> anyhow::Result<()> {
    let subscribing = channels
        .iter()
        .map(|channel| subscribe_retrying(client, channel, retry));
    let subscriptions: Vec<Subscription> = futures_util::future::try_join_all(subscribing).await?;
    // Each item keeps its channel, to name it in a gap report.
    let mut deliveries =
        futures_util::stream::select_all(subscriptions.into_iter().map(|subscription| {
            let channel = subscription.channel().to_owned();
            subscription.map(move |item| (channel.clone(), item))
        }));
    // Written asynchronously: while the reader is slow, this loop waits and the client's
    // queues fill, then catch up from history; the connection itself is still read.
    let mut stdout = tokio::io::stdout();
    let mut line = String::new();
    while let Some((channel, item)) = deliveries.next().await {
        match item {
            SubscriptionEvent::Message(message) => {
                line.clear();
                push_compact_json(&mut line, message.json());
                line.push('\n');
                let written = async {
                    stdout.write_all(line.as_bytes()).await?;
                    stdout.flush().await
                };
                match written.await {
                    Ok(()) => {}
                    // The reader went away (e.g. `| head`): that is a normal end.
                    Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
                        return Ok(());
                    }
                    Err(error) => return Err(error).context("cannot write to stdout"),
                }
            }
            SubscriptionEvent::RecoveryFailed { since, position } => {
                // At its place in the stream: every line before it was printed, the ones
                // between are gone from the server's history, the next line follows it.
                eprintln!("{}", gap_report(&channel, &since, &position));
            }
            SubscriptionEvent::Ended(error) => return Err(error).context("subscription ended"),
            _ => {}
        }
    }
    match client.stop_error() {
        Some(error) => Err(error).context("stopped"),
        None => Ok(()),
    }
}

/// Subscribes to `channel`, asking again after a refusal for a passing reason (the server's
/// broker is unavailable, or rate limiting) with the client's resubscribe backoff, and
/// printing one stderr line per refusal. A final refusal is the error.
async fn subscribe_retrying(
    client: &Client,
    channel: &str,
    backoff: Backoff,
) -> anyhow::Result<Subscription> {
    let mut refusals = 0;
    loop {
        match client.subscribe(channel).await {
            Ok(subscription) => return Ok(subscription),
            Err(error) if error.is_transient() => {
                let delay = backoff.random_delay(refusals);
                refusals += 1;
                eprintln!(
                    "wirehub sub: subscribing to {channel:?} refused for now: {error}; \
                     retrying in {delay:.1?}"
                );
                tokio::time::sleep(delay).await;
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot subscribe to {channel:?}"));
            }
        }
    }
}

/// The stderr line for messages that could not be recovered.
fn gap_report(channel: &str, since: &StreamPosition, position: &StreamPosition) -> String {
    if since.epoch == position.epoch {
        format!(
            "wirehub sub: messages {}..{} on {channel:?} were lost while disconnected or \
             behind: no longer in the server's history (continuing after {})",
            since.offset + 1,
            position.offset,
            position.offset
        )
    } else {
        format!(
            "wirehub sub: messages on {channel:?} after {}/{} were lost while disconnected or \
             behind: the stream restarted (epoch {}, continuing after {})",
            since.epoch, since.offset, position.epoch, position.offset
        )
    }
}

/// Where a reconnect delay comes from, for the stderr line: nothing for the backoff.
fn wait_source(reason: ReconnectReason) -> String {
    match reason {
        ReconnectReason::RetryAfter(wait) => format!(" (the server's Retry-After: {wait:?})"),
        ReconnectReason::RetryHint { min, max } => {
            format!(" (the server's retry window: {min:.1?} to {max:.1?})")
        }
        _ => String::new(),
    }
}

/// Prints connection state changes to stderr until the client stops.
async fn report_events(mut events: wirehub_client::Events) {
    while let Some(event) = events.next().await {
        match event {
            Event::Connecting { attempt } if attempt > 1 => {
                eprintln!("wirehub sub: connecting (attempt {attempt})");
            }
            Event::Connecting { .. } => {}
            Event::ConnectFailed { error } => eprintln!("wirehub sub: {error}"),
            Event::Connected { session, .. } => {
                eprintln!("wirehub sub: connected (session {session})")
            }
            Event::Disconnected { code, reason } => match code {
                Some(code) => eprintln!("wirehub sub: disconnected: {code} {reason}"),
                None => eprintln!("wirehub sub: disconnected: {reason}"),
            },
            Event::Reconnecting { delay, reason, .. } => {
                eprintln!(
                    "wirehub sub: reconnecting in {delay:.1?}{}",
                    wait_source(reason)
                );
            }
            // Printed with the subscription's stream, at its place (`gap_report`).
            Event::RecoveryFailed { .. } => {}
            Event::SubscribeRetrying {
                channel,
                error,
                delay,
            } => {
                eprintln!(
                    "wirehub sub: resubscribing to {channel:?} refused for now: {error}; \
                     retrying in {delay:.1?}"
                );
            }
            Event::SubscriptionEnded { channel, error } => {
                eprintln!("wirehub sub: subscription to {channel:?} ended: {error}");
            }
            Event::Stopped { error: Some(error) } => eprintln!("wirehub sub: stopped: {error}"),
            Event::Stopped { error: None } => {}
            Event::Lagged { missed } => {
                eprintln!("wirehub sub: {missed} state changes not shown");
            }
            _ => {}
        }
    }
}

/// Appends `json` without insignificant whitespace (the server relays a publisher's JSON
/// verbatim, which may be pretty-printed). Strings, numbers and key order are kept exactly.
pub(crate) fn push_compact_json(out: &mut String, json: &str) {
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, expect: &str) {
        let mut out = String::new();
        push_compact_json(&mut out, input);
        assert_eq!(out, expect);
    }

    #[test]
    fn compacts_json_outside_strings() {
        check(
            "{\n  \"a\" : [1, 2],\n  \"b\": \"x y\"\n}",
            r#"{"a":[1,2],"b":"x y"}"#,
        );
        check(r#""quote \" and \\ stay""#, r#""quote \" and \\ stay""#);
        check(r#"["\\", " a "]"#, r#"["\\"," a "]"#);
        check("12345678901234567890.5", "12345678901234567890.5");
        check(r#"{"z":1,"a":2}"#, r#"{"z":1,"a":2}"#);
    }
}
