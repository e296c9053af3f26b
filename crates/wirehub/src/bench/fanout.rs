//! `wirehub bench fanout`: N subscribers on one channel and one publisher.
//!
//! With `--rate 0` (the default) the publisher sends as fast as the server accepts, within
//! its window: this measures the server's fan-out throughput (deliveries/s) and, with
//! `--server-pid`, its CPU time per delivery. With a fixed `--rate` it measures latency under
//! a steady load. Every delivery is checked (offset and payload sequence).

use std::time::Duration;

use clap::Args;

use super::pubsub::{self, Plan};
use super::stats::Report;
use super::{Common, Progress};
use crate::duration::parse_duration;

/// Arguments of `wirehub bench fanout`.
#[derive(Args, Debug)]
pub(crate) struct FanoutArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Subscribers on the channel.
    #[arg(long, short = 'n', default_value_t = 1000)]
    subscribers: usize,
    /// Messages to publish.
    #[arg(long, short = 'm', default_value_t = 10_000)]
    messages: u64,
    /// Messages per second; 0: as fast as the server accepts them within the window.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Messages in flight: unacknowledged, or not yet received by every subscriber.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Stop publishing after this long, even if fewer messages were sent.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Extra bytes of payload per message.
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// The channel.
    #[arg(long, default_value = "bench-fanout")]
    channel: String,
    /// How long to wait for the last deliveries once nothing arrives any more.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    drain_timeout: Duration,
}

pub(crate) async fn run(args: &FanoutArgs, progress: &Progress) -> anyhow::Result<Report> {
    let mut report = Report::new("fanout", args.common.label.as_deref(), &args.common.url);
    report.set("rate", args.rate);
    report.set("window", args.window as u64);
    let plan = Plan {
        channels: vec![args.channel.clone()],
        subscribers_per_channel: args.subscribers.max(1),
        publishers: 1,
        messages: args.messages,
        rate: args.rate,
        window: args.window.max(1),
        duration: args.duration,
        payload_bytes: args.payload_bytes,
        drain_timeout: args.drain_timeout,
    };
    pubsub::run(&args.common, &plan, &mut report, progress).await?;
    Ok(report)
}
