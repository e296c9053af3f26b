//! The end of the run: every stream through the oracles, then the table and the first
//! violations.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;

use crate::cluster::policy_of;
use crate::oracle::{self, Item, MessageId, Verdict, Violation, ViolationKind};
use crate::record::{ClientKind, FaultCount, Snapshot};
use crate::subscribers::SubscriberSpec;

/// How many violations of each kind are printed in full.
const SHOWN: usize = 20;

/// What the run was, for the header.
#[derive(Debug)]
pub(crate) struct Header {
    /// The seed.
    pub(crate) seed: u64,
    /// The workload's length.
    pub(crate) duration: std::time::Duration,
    /// `None` when every node took the `[[channels]]` tables, else the refusal.
    pub(crate) policies_refused: Option<String>,
    /// Per node: a few counters from its `/metrics` at the end.
    pub(crate) server_counters: Vec<(String, BTreeMap<String, u64>)>,
}

/// The checked outcome: the text to print and whether every promise held.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The table and the violations.
    pub(crate) text: String,
    /// How many violations.
    pub(crate) violations: usize,
}

#[derive(Default)]
struct Totals {
    subscribers: u64,
    verdict: Verdict,
    closes: BTreeMap<String, u64>,
}

fn add(total: &mut Verdict, verdict: &Verdict) {
    total.deliveries += verdict.deliveries;
    total.gaps += verdict.gaps;
    total.lost += verdict.lost;
    total.covered += verdict.covered;
    total.dropped += verdict.dropped;
    total.duplicated += verdict.duplicated;
    total.republished += verdict.republished;
    total.out_of_order += verdict.out_of_order;
    total.offset_errors += verdict.offset_errors;
}

/// Runs the oracles over every stream and formats the result.
pub(crate) fn report(
    header: &Header,
    subscribers: &[SubscriberSpec],
    snapshot: &Snapshot,
) -> Outcome {
    let republished = republished(snapshot);
    let mut text = String::new();
    let mut violations: Vec<(String, String, Violation)> = Vec::new();
    let mut per_kind: BTreeMap<ClientKind, Totals> = BTreeMap::new();
    let mut rows = String::new();
    let empty = oracle::Stream::default();
    for spec in subscribers {
        let totals = per_kind.entry(spec.kind).or_default();
        totals.subscribers += 1;
        if let Some(closes) = snapshot.closes.get(&spec.index) {
            for (code, count) in closes {
                *totals.closes.entry(code.clone()).or_default() += count;
            }
        }
        for channel in &spec.channels {
            let stream = snapshot
                .streams
                .get(&(spec.index, channel.clone()))
                .unwrap_or(&empty);
            let policy = policy_of(channel);
            let acks = snapshot.acks.get(channel).map_or(&[][..], Vec::as_slice);
            let verdict = oracle::check(stream, policy, acks, &republished);
            if verdict.deliveries == 0 {
                violations.push((
                    spec.name.clone(),
                    channel.clone(),
                    Violation {
                        kind: ViolationKind::Subscriber,
                        detail: "no delivery at all".into(),
                    },
                ));
            }
            let _ = writeln!(
                rows,
                "{:<10} {:<8} {:<6} {:<9} {:<10} {:>10} {:>5} {:>7} {:>7} {:>6} {:>5} {:>5} {:>7} {:>6}",
                spec.name,
                spec.node,
                if spec.proxy.is_some() {
                    "proxy"
                } else {
                    "direct"
                },
                channel,
                policy.as_str(),
                verdict.deliveries,
                verdict.gaps,
                verdict.covered,
                verdict.dropped,
                verdict.lost,
                verdict.duplicated,
                verdict.out_of_order,
                verdict.offset_errors,
                verdict.republished,
            );
            add(
                &mut per_kind.entry(spec.kind).or_default().verdict,
                &verdict,
            );
            for violation in verdict.violations {
                violations.push((spec.name.clone(), channel.clone(), violation));
            }
        }
    }
    for (index, problem) in &snapshot.problems {
        let name = subscribers
            .iter()
            .find(|spec| spec.index == *index)
            .map_or_else(|| index.to_string(), |spec| spec.name.clone());
        violations.push((
            name,
            "-".into(),
            Violation {
                kind: ViolationKind::Subscriber,
                detail: problem.clone(),
            },
        ));
    }

    // The header.
    let _ = writeln!(
        text,
        "\n== wirehub audit: seed {}, workload {:?}",
        header.seed, header.duration
    );
    match &header.policies_refused {
        None => text.push_str("channel policies: applied ([[channels]] in --config)\n"),
        Some(why) => {
            let _ = writeln!(
                text,
                "channel policies: NOT applied: serve refused the [[channels]] tables ({why}); \
                 every channel ran with the server-wide default (disconnect)"
            );
        }
    }
    let acked: usize = snapshot
        .acks
        .values()
        .flatten()
        .filter(|ack| ack.id.publisher != oracle::PROBE)
        .count();
    let by_via = |prefix: char| {
        snapshot
            .acks
            .values()
            .flatten()
            .filter(|ack| ack.id.publisher.starts_with(prefix))
            .count()
    };
    let _ = writeln!(
        text,
        "publishes: {acked} acknowledged (http {}, websocket {}), {} given up, {} retried attempts",
        by_via('h'),
        by_via('w'),
        snapshot.unconfirmed,
        snapshot.retries
    );
    let fault = |kind| snapshot.faults.get(&kind).copied().unwrap_or(0);
    let _ = writeln!(
        text,
        "faults: link cuts {}, node kills {}, Redis restarts {}, Redis pauses {}, stalls {}, freezes {}, bursts {}",
        fault(FaultCount::Cut),
        fault(FaultCount::Kill),
        fault(FaultCount::RedisRestart),
        fault(FaultCount::RedisPause),
        fault(FaultCount::Stall),
        fault(FaultCount::Freeze),
        fault(FaultCount::Burst),
    );
    for (node, counters) in &header.server_counters {
        let line: Vec<String> = counters.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            text,
            "server {node} (since its last start): {}",
            line.join(", ")
        );
    }

    // The table per client kind.
    let _ = writeln!(
        text,
        "\n{:<12} {:>4} {:>10} {:>5} {:>7} {:>7} {:>6} {:>10} {:>12} {:>13} {:>11}  closes seen",
        "client",
        "subs",
        "deliveries",
        "gaps",
        "covered",
        "dropped",
        "lost",
        "duplicated",
        "out-of-order",
        "offset-errors",
        "republished"
    );
    let mut total = Totals::default();
    for (kind, totals) in &per_kind {
        let closes: Vec<String> = totals
            .closes
            .iter()
            .map(|(c, n)| format!("{c}×{n}"))
            .collect();
        let v = &totals.verdict;
        let _ = writeln!(
            text,
            "{:<12} {:>4} {:>10} {:>5} {:>7} {:>7} {:>6} {:>10} {:>12} {:>13} {:>11}  {}",
            kind.as_str(),
            totals.subscribers,
            v.deliveries,
            v.gaps,
            v.covered,
            v.dropped,
            v.lost,
            v.duplicated,
            v.out_of_order,
            v.offset_errors,
            v.republished,
            closes.join(" ")
        );
        total.subscribers += totals.subscribers;
        add(&mut total.verdict, v);
    }
    let v = &total.verdict;
    let _ = writeln!(
        text,
        "{:<12} {:>4} {:>10} {:>5} {:>7} {:>7} {:>6} {:>10} {:>12} {:>13} {:>11}",
        "total",
        total.subscribers,
        v.deliveries,
        v.gaps,
        v.covered,
        v.dropped,
        v.lost,
        v.duplicated,
        v.out_of_order,
        v.offset_errors,
        v.republished
    );

    let _ = writeln!(
        text,
        "\n{:<10} {:<8} {:<6} {:<9} {:<10} {:>10} {:>5} {:>7} {:>7} {:>6} {:>5} {:>5} {:>7} {:>6}",
        "subscriber",
        "node",
        "link",
        "channel",
        "on_slow",
        "deliveries",
        "gaps",
        "covered",
        "dropped",
        "lost",
        "dup",
        "order",
        "offsets",
        "repub"
    );
    text.push_str(&rows);

    let mut by_kind: BTreeMap<ViolationKind, usize> = BTreeMap::new();
    for (_, _, violation) in &violations {
        *by_kind.entry(violation.kind).or_default() += 1;
    }
    if violations.is_empty() {
        text.push_str("\nresult: PASS (no violation)\n");
    } else {
        let summary: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            text,
            "\nresult: FAIL, {} violations ({}); the first of each kind:",
            violations.len(),
            summary.join(", "),
        );
        // Losses first: they are the promise that matters most; at most `SHOWN` of a kind.
        violations.sort_by_key(|(_, _, violation)| violation.kind);
        let mut shown: BTreeMap<ViolationKind, usize> = BTreeMap::new();
        for (subscriber, channel, violation) in &violations {
            let count = shown.entry(violation.kind).or_default();
            *count += 1;
            if *count > SHOWN {
                continue;
            }
            let _ = writeln!(
                text,
                "  [{}] {subscriber} on {channel}: {}",
                violation.kind, violation.detail
            );
        }
    }
    Outcome {
        text,
        violations: violations.len(),
    }
}

/// The messages some offset-aware subscriber saw at two different offsets of their channel:
/// the server published them twice (see the oracle's module docs).
fn republished(snapshot: &Snapshot) -> HashSet<MessageId> {
    let mut offsets: HashMap<(&str, &MessageId), HashSet<u64>> = HashMap::new();
    for ((_, channel), stream) in &snapshot.streams {
        for item in &stream.items {
            if let Item::Delivery {
                offset: Some(offset),
                id: Some(id),
            } = item
            {
                offsets
                    .entry((channel.as_str(), id))
                    .or_default()
                    .insert(*offset);
            }
        }
    }
    offsets
        .into_iter()
        .filter(|(_, seen)| seen.len() > 1)
        .map(|((_, id), _)| id.clone())
        .collect()
}
