//! `wirehub bench rooms`: C channels ("rooms") × K subscribers each, chat-like.
//!
//! Each room receives messages at a modest rate from one of P publisher connections; what
//! matters here is latency and correctness with many small channels (many shards of the
//! channel registry, small fan-outs), not peak throughput.

use std::time::Duration;

use clap::Args;

use super::pubsub::{self, Plan};
use super::stats::Report;
use super::{Common, Progress};
use crate::duration::parse_duration;

/// Arguments of `wirehub bench rooms`.
#[derive(Args, Debug)]
pub(crate) struct RoomsArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Rooms (channels).
    #[arg(long, short = 'c', default_value_t = 100)]
    rooms: usize,
    /// Subscribers per room.
    #[arg(long, short = 'k', default_value_t = 10)]
    members: usize,
    /// Messages per second in each room.
    #[arg(long, default_value_t = 2.0)]
    rate_per_room: f64,
    /// Publisher connections (rooms are shared out among them).
    #[arg(long, default_value_t = 10)]
    publishers: usize,
    /// How long to publish.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Extra bytes of payload per message (a chat line).
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// Messages in flight per publisher.
    #[arg(long, default_value_t = 64)]
    window: usize,
}

pub(crate) async fn run(args: &RoomsArgs, progress: &Progress) -> anyhow::Result<Report> {
    let mut report = Report::new("rooms", args.common.label.as_deref(), &args.common.url);
    let rooms = args.rooms.max(1);
    let rate = args.rate_per_room.max(0.001) * rooms as f64;
    report.set("rate", rate);
    let plan = Plan {
        channels: (0..rooms)
            .map(|room| format!("bench-room-{room}"))
            .collect(),
        subscribers_per_channel: args.members.max(1),
        publishers: args.publishers.clamp(1, rooms),
        messages: (rate * args.duration.as_secs_f64()).ceil() as u64,
        rate,
        window: args.window.max(1),
        duration: args.duration,
        payload_bytes: args.payload_bytes,
        drain_timeout: Duration::from_secs(5),
    };
    pubsub::run(&args.common, &plan, &mut report, progress).await?;
    Ok(report)
}
