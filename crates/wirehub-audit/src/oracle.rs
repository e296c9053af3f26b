//! The delivery oracles: what one subscriber saw on one channel, checked against every
//! acknowledged publish.
//!
//! The checks are pure functions over a recorded [`Stream`] so that they are unit-tested on
//! hand-made streams (below) and never depend on timing. What a stream must satisfy:
//!
//! - **Offsets** (subscribers that see them: the Rust and TypeScript SDKs): strictly
//!   increasing, and for `disconnect`/`gap` channels contiguous (`prev + 1`), unless a gap
//!   was reported between the two deliveries. A reported gap also allows the offset to go
//!   back (a new epoch).
//! - **No duplicate**: a publisher's `seq` is delivered once. The same `seq` again counts as
//!   *republished*, not duplicated, when a gap was reported in between or another subscriber
//!   saw it at two different offsets: the server published it twice because the idempotency
//!   key was lost with the history (a node or Redis restarted empty), which the contract
//!   allows.
//! - **Order**: a publisher sends `seq + 1` only after `seq` was acknowledged, so its `seq`s
//!   arrive in increasing order unless a gap was reported in between.
//! - **Completeness** (`disconnect` and `gap` channels): every acknowledged publish is in the
//!   stream, unless a gap was reported between the deliveries that surround its place. This
//!   is counted from the payload's `seq`, so a loss is found even when offsets look fine (or
//!   are not visible, as with `wirehub sub`).
//!
//! A stream starts with the subscriber's first delivery: the run publishes its workload only
//! after every subscriber received a probe on each of its channels, so nothing acknowledged
//! before the subscription started is expected.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// The publisher name of the probes sent before the workload; they only mark a stream's start.
pub(crate) const PROBE: &str = "probe";

/// What a channel does with a subscriber that cannot keep up (the contract's `on_slow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// Close 4100; the client reconnects and recovers from history.
    Disconnect,
    /// The subscription gets a `gap` message; the client recovers from history.
    Gap,
    /// Only the newest message is kept for the subscriber: skips are allowed.
    Latest,
}

impl Policy {
    /// The `on_slow` value in the TOML file.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Policy::Disconnect => "disconnect",
            Policy::Gap => "gap",
            Policy::Latest => "latest",
        }
    }
}

/// A publisher's message identity, carried in every payload as `{"p": P, "seq": N, ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct MessageId {
    /// The publisher's name (`PROBE` for probes).
    pub(crate) publisher: String,
    /// Its sequence number, from 1.
    pub(crate) seq: u64,
}

/// One observation of a subscriber on one channel, in the order the subscriber's
/// application saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    /// A delivered message.
    Delivery {
        /// Its offset, when the client shows offsets.
        offset: Option<u64>,
        /// Its identity, `None` for data that is not an audit payload.
        id: Option<MessageId>,
    },
    /// A loss the client reported explicitly (recovery failed, gap, lagged), as text.
    Gap(String),
}

/// Everything one subscriber saw on one channel.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stream {
    /// The observations in order.
    pub(crate) items: Vec<Item>,
}

/// An acknowledged publish on the channel being checked.
#[derive(Debug, Clone)]
pub(crate) struct Ack {
    /// Which message.
    pub(crate) id: MessageId,
    /// The offset the server acknowledged.
    pub(crate) offset: u64,
}

/// The kind of a broken promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ViolationKind {
    /// Acknowledged publishes missing, with no gap reported.
    Lost,
    /// A message delivered twice with no gap reported in between.
    Duplicated,
    /// A publisher's messages out of order with no gap reported in between.
    OutOfOrder,
    /// Offsets not contiguous (or going back) with no gap reported.
    Offsets,
    /// A subscriber that did not run as it should (never started, exited).
    Subscriber,
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ViolationKind::Lost => "lost",
            ViolationKind::Duplicated => "duplicated",
            ViolationKind::OutOfOrder => "out of order",
            ViolationKind::Offsets => "offsets",
            ViolationKind::Subscriber => "subscriber",
        })
    }
}

/// One broken promise, with enough detail to find it in the logs.
#[derive(Debug, Clone)]
pub(crate) struct Violation {
    /// What kind.
    pub(crate) kind: ViolationKind,
    /// Expected versus got.
    pub(crate) detail: String,
}

/// The outcome of checking one stream.
#[derive(Debug, Clone, Default)]
pub(crate) struct Verdict {
    /// Messages delivered (probes and foreign data included).
    pub(crate) deliveries: u64,
    /// Gaps reported by the client.
    pub(crate) gaps: u64,
    /// Acknowledged messages missing without a reported gap.
    pub(crate) lost: u64,
    /// Acknowledged messages missing, covered by a reported gap.
    pub(crate) covered: u64,
    /// Of `covered`: those under a report that the client itself dropped messages (its
    /// queue was full: `Lagged`), rather than a loss the server could not recover.
    pub(crate) dropped: u64,
    /// Messages delivered more than once without a reported gap.
    pub(crate) duplicated: u64,
    /// Messages delivered again after being published twice (see the module docs).
    pub(crate) republished: u64,
    /// Deliveries out of their publisher's order.
    pub(crate) out_of_order: u64,
    /// Offset steps that are neither `+1` nor after a reported gap.
    pub(crate) offset_errors: u64,
    /// The violations, in stream order per kind.
    pub(crate) violations: Vec<Violation>,
}

/// Checks one subscriber's stream of one channel.
///
/// `acks` are the channel's acknowledged publishes (probes may be included: they are not
/// expected); `republished` the messages some subscriber saw at two different offsets.
pub(crate) fn check(
    stream: &Stream,
    policy: Policy,
    acks: &[Ack],
    republished: &HashSet<MessageId>,
) -> Verdict {
    let mut verdict = Verdict::default();
    let gaps: Vec<usize> = stream
        .items
        .iter()
        .enumerate()
        .filter_map(|(index, item)| matches!(item, Item::Gap(_)).then_some(index))
        .collect();
    verdict.gaps = gaps.len() as u64;
    // Whether a gap was reported strictly between positions `after` and `before`
    // (`None`: the start, or the end, of the stream).
    let gaps_between = |after: Option<usize>, before: Option<usize>| {
        let low = after.map_or(0, |a| a + 1);
        let high = before.unwrap_or(usize::MAX);
        &gaps[gaps.partition_point(|&g| g < low)..gaps.partition_point(|&g| g < high)]
    };
    let gap_between =
        |after: Option<usize>, before: Option<usize>| !gaps_between(after, before).is_empty();

    check_offsets(stream, policy, &mut verdict);

    // Per publisher: where each seq was delivered.
    let mut by_publisher: HashMap<&str, BTreeMap<u64, Vec<usize>>> = HashMap::new();
    for (index, item) in stream.items.iter().enumerate() {
        let Item::Delivery { id, .. } = item else {
            continue;
        };
        verdict.deliveries += 1;
        let Some(id) = id else { continue };
        if id.publisher == PROBE {
            continue;
        }
        let seen = by_publisher.entry(id.publisher.as_str()).or_default();
        let last = seen.get(&id.seq).and_then(|at| at.last().copied());
        if let Some(last) = last {
            if gap_between(Some(last), Some(index)) || republished.contains(id) {
                verdict.republished += 1;
            } else {
                verdict.duplicated += 1;
                verdict.violations.push(Violation {
                    kind: ViolationKind::Duplicated,
                    detail: format!(
                        "{}#{} delivered again (items {last} and {index}) with no gap reported",
                        id.publisher, id.seq
                    ),
                });
            }
        } else if let Some((&higher, at)) = seen.range(id.seq + 1..).next()
            && let Some(&higher_at) = at.first()
            && !gap_between(Some(higher_at), Some(index))
            && !republished.contains(id)
        {
            verdict.out_of_order += 1;
            verdict.violations.push(Violation {
                kind: ViolationKind::OutOfOrder,
                detail: format!(
                    "{}#{} delivered (item {index}) after #{higher} (item {higher_at}) with no gap reported",
                    id.publisher, id.seq
                ),
            });
        }
        seen.entry(id.seq).or_default().push(index);
    }

    if policy == Policy::Latest {
        return verdict;
    }
    let empty = BTreeMap::new();
    let mut acks_by_publisher: BTreeMap<&str, Vec<&Ack>> = BTreeMap::new();
    for ack in acks.iter().filter(|ack| ack.id.publisher != PROBE) {
        acks_by_publisher
            .entry(ack.id.publisher.as_str())
            .or_default()
            .push(ack);
    }
    for (publisher, mut acked) in acks_by_publisher {
        acked.sort_by_key(|ack| ack.id.seq);
        let seen = by_publisher.get(publisher).unwrap_or(&empty);
        // A run of consecutive lost acks, reported as one violation.
        let mut run: Option<(&Ack, &Ack, u64)> = None;
        for ack in acked {
            if seen.contains_key(&ack.id.seq) {
                flush_lost(&mut run, &mut verdict, seen);
                continue;
            }
            let before = seen
                .range(..ack.id.seq)
                .next_back()
                .and_then(|(_, at)| at.last().copied());
            let after = seen
                .range(ack.id.seq + 1..)
                .next()
                .and_then(|(_, at)| at.first().copied());
            let (before, after) = match (before, after) {
                (Some(b), Some(a)) if b > a => (Some(a), Some(b)),
                other => other,
            };
            let covering = gaps_between(before, after);
            if !covering.is_empty() {
                verdict.covered += 1;
                if covering
                    .iter()
                    .any(|&g| matches!(&stream.items[g], Item::Gap(what) if is_client_drop(what)))
                {
                    verdict.dropped += 1;
                }
                flush_lost(&mut run, &mut verdict, seen);
                continue;
            }
            verdict.lost += 1;
            run = Some(match run {
                Some((first, _, count)) => (first, ack, count + 1),
                None => (ack, ack, 1),
            });
        }
        flush_lost(&mut run, &mut verdict, seen);
    }
    verdict
}

/// Whether a reported gap says that the client dropped messages itself (a full queue:
/// the Rust SDK's `Lagged`, the TypeScript SDK's `lagged`, `wirehub sub`'s "output too
/// slow ... dropped").
pub(crate) fn is_client_drop(what: &str) -> bool {
    let what = what.to_ascii_lowercase();
    what.contains("lagged") || what.contains("too slow") || what.contains("dropped")
}

/// Turns a run of lost acks into one violation.
fn flush_lost(
    run: &mut Option<(&Ack, &Ack, u64)>,
    verdict: &mut Verdict,
    seen: &BTreeMap<u64, Vec<usize>>,
) {
    let Some((first, last, count)) = run.take() else {
        return;
    };
    let before = seen
        .range(..first.id.seq)
        .next_back()
        .map_or("nothing".to_owned(), |(seq, at)| {
            format!("#{seq} (item {})", at.last().copied().unwrap_or_default())
        });
    let after = seen
        .range(last.id.seq + 1..)
        .next()
        .map_or("nothing".to_owned(), |(seq, at)| {
            format!("#{seq} (item {})", at.first().copied().unwrap_or_default())
        });
    verdict.violations.push(Violation {
        kind: ViolationKind::Lost,
        detail: format!(
            "{} acknowledged message(s) of {} missing: #{}..=#{} (acked offsets {}..={}{}); \
             delivered before: {before}, after: {after}; no gap reported in between",
            count,
            first.id.publisher,
            first.id.seq,
            last.id.seq,
            first.offset,
            last.offset,
            if first.offset > last.offset {
                ", across a new epoch"
            } else {
                ""
            }
        ),
    });
}

/// The offset checks, for clients that show offsets.
fn check_offsets(stream: &Stream, policy: Policy, verdict: &mut Verdict) {
    let mut previous: Option<(usize, u64)> = None;
    let mut gap_since = false;
    for (index, item) in stream.items.iter().enumerate() {
        match item {
            Item::Gap(_) => gap_since = true,
            Item::Delivery { offset: None, .. } => {}
            Item::Delivery {
                offset: Some(offset),
                ..
            } => {
                let offset = *offset;
                if let Some((at, prev)) = previous
                    && !gap_since
                {
                    let broken = if offset <= prev {
                        Some(format!("went back from {prev} (item {at}) to {offset}"))
                    } else if offset != prev + 1 && policy != Policy::Latest {
                        Some(format!(
                            "skipped {}..={} after item {at}",
                            prev + 1,
                            offset - 1
                        ))
                    } else {
                        None
                    };
                    if let Some(broken) = broken {
                        verdict.offset_errors += 1;
                        verdict.violations.push(Violation {
                            kind: ViolationKind::Offsets,
                            detail: format!("offset {broken} (item {index}), no gap reported"),
                        });
                    }
                }
                previous = Some((index, offset));
                gap_since = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(publisher: &str, seq: u64) -> MessageId {
        MessageId {
            publisher: publisher.to_owned(),
            seq,
        }
    }

    /// A stream from a compact notation: `"h1@5"` = h#1 at offset 5, `"h1"` = h#1 with no
    /// offset, `"!"` = a reported gap.
    fn stream(items: &[&str]) -> Stream {
        let items = items
            .iter()
            .map(|item| {
                if *item == "!" {
                    return Item::Gap("test".into());
                }
                let (name, offset) = match item.split_once('@') {
                    Some((name, offset)) => (name, Some(offset.parse().expect("offset"))),
                    None => (*item, None),
                };
                let (publisher, seq) = name.split_at(1);
                let publisher = if publisher == "p" { PROBE } else { publisher };
                Item::Delivery {
                    offset,
                    id: Some(id(publisher, seq.parse().expect("seq"))),
                }
            })
            .collect();
        Stream { items }
    }

    /// Acks of publisher `h`, seq `1..=n`, at offsets `base + seq`.
    fn acks(n: u64, base: u64) -> Vec<Ack> {
        (1..=n)
            .map(|seq| Ack {
                id: id("h", seq),
                offset: base + seq,
            })
            .collect()
    }

    #[track_caller]
    fn check_counts(
        items: &[&str],
        policy: Policy,
        acked: u64,
        expect: (u64, u64, u64, u64, u64),
    ) -> Verdict {
        let verdict = check(&stream(items), policy, &acks(acked, 1), &HashSet::new());
        assert_eq!(
            (
                verdict.lost,
                verdict.covered,
                verdict.duplicated,
                verdict.out_of_order,
                verdict.offset_errors
            ),
            expect,
            "{verdict:#?}"
        );
        verdict
    }

    #[test]
    fn a_complete_stream_passes() {
        let verdict = check_counts(
            &["p1@1", "h1@2", "h2@3", "h3@4"],
            Policy::Disconnect,
            3,
            (0, 0, 0, 0, 0),
        );
        assert!(verdict.violations.is_empty());
        assert_eq!(verdict.deliveries, 4);
    }

    #[test]
    fn a_silent_loss_is_found_from_offsets_and_payloads() {
        let verdict = check_counts(
            &["p1@1", "h1@2", "h4@5"],
            Policy::Disconnect,
            4,
            (2, 0, 0, 0, 1),
        );
        assert!(
            verdict
                .violations
                .iter()
                .any(|v| v.kind == ViolationKind::Lost && v.detail.contains("#2..=#3"))
        );
    }

    #[test]
    fn a_loss_at_the_tail_is_found() {
        check_counts(&["p1@1", "h1@2"], Policy::Gap, 3, (2, 0, 0, 0, 0));
    }

    #[test]
    fn a_loss_without_offsets_is_found_from_payloads() {
        check_counts(&["p1", "h1", "h3"], Policy::Disconnect, 3, (1, 0, 0, 0, 0));
    }

    #[test]
    fn a_reported_gap_covers_the_loss_around_it_only() {
        // #2 and #3 are covered by the gap; #5 is lost silently.
        check_counts(
            &["p1@1", "h1@2", "!", "h4@5", "h6@7"],
            Policy::Gap,
            6,
            (1, 2, 0, 0, 1),
        );
        // A gap at the tail covers the tail.
        check_counts(&["p1@1", "h1@2", "!"], Policy::Gap, 3, (0, 2, 0, 0, 0));
    }

    #[test]
    fn a_new_epoch_after_a_reported_gap_is_fine_and_without_one_is_not() {
        check_counts(
            &["p1@1", "h1@2", "h2@3", "!", "h3@1"],
            Policy::Disconnect,
            3,
            (0, 0, 0, 0, 0),
        );
        check_counts(
            &["p1@1", "h1@2", "h2@3", "h3@1"],
            Policy::Disconnect,
            3,
            (0, 0, 0, 0, 1),
        );
    }

    #[test]
    fn duplicates_and_republications_are_told_apart() {
        check_counts(
            &["p1@1", "h1@2", "h1@2", "h2@3"],
            Policy::Disconnect,
            2,
            (0, 0, 1, 0, 1),
        );
        // Published twice across a reported new epoch: not a duplicate.
        let verdict = check_counts(
            &["p1@1", "h1@2", "!", "h1@1", "h2@2"],
            Policy::Disconnect,
            2,
            (0, 0, 0, 0, 0),
        );
        assert_eq!(verdict.republished, 1);
        // Seen at two offsets by another subscriber: not a duplicate either.
        let republished = HashSet::from([id("h", 1)]);
        let verdict = check(
            &stream(&["p1", "h1", "h1", "h2"]),
            Policy::Disconnect,
            &acks(2, 1),
            &republished,
        );
        assert_eq!((verdict.duplicated, verdict.republished), (0, 1));
    }

    #[test]
    fn order_is_checked_per_publisher() {
        check_counts(
            &["p1", "h1", "h3", "h2"],
            Policy::Disconnect,
            3,
            (0, 0, 0, 1, 0),
        );
    }

    #[test]
    fn latest_channels_allow_skips_but_not_going_back() {
        check_counts(
            &["p1@1", "h1@2", "h5@6", "h9@10"],
            Policy::Latest,
            9,
            (0, 0, 0, 0, 0),
        );
        check_counts(
            &["p1@1", "h1@2", "h5@6", "h4@5"],
            Policy::Latest,
            9,
            (0, 0, 0, 1, 1),
        );
    }

    #[test]
    fn unacknowledged_messages_are_not_expected() {
        // #2 was never acknowledged (its publish failed): missing it is fine, but the offset
        // oracle still sees the hole when offsets are visible.
        let mut acked = acks(3, 1);
        acked.remove(1);
        let verdict = check(
            &stream(&["p1", "h1", "h3"]),
            Policy::Disconnect,
            &acked,
            &HashSet::new(),
        );
        assert_eq!(verdict.lost, 0);
        assert!(verdict.violations.is_empty());
    }
}
