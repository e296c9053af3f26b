//! Measurements shared by the scenarios: the latency histogram, per-subscriber delivery
//! checks (missing, duplicated, out of order), the server's memory and CPU from `/proc`, and
//! the report (a human summary on stderr, one JSON line on stdout).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

/// Nanoseconds since the first call in this process: the clock of payload timestamps.
pub(crate) fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Latencies in microseconds, from 1 µs to 10 minutes at 3 significant digits.
#[derive(Debug, Clone)]
pub(crate) struct Latency {
    histogram: Histogram<u64>,
}

impl Latency {
    pub(crate) fn new() -> Self {
        let histogram = Histogram::new_with_bounds(1, 600_000_000, 3)
            .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!("3 digits")));
        Latency { histogram }
    }

    /// Records one latency given in nanoseconds.
    pub(crate) fn record_ns(&mut self, ns: u64) {
        self.histogram.saturating_record((ns / 1000).max(1));
    }

    /// `{"p50": …, "p90": …, "p99": …, "p999": …, "max": …, "mean": …}` in microseconds.
    pub(crate) fn to_json(&self) -> Value {
        if self.histogram.is_empty() {
            return Value::Null;
        }
        let h = &self.histogram;
        json!({
            "p50": h.value_at_quantile(0.50),
            "p90": h.value_at_quantile(0.90),
            "p99": h.value_at_quantile(0.99),
            "p999": h.value_at_quantile(0.999),
            "max": h.max(),
            "mean": (h.mean() * 10.0).round() / 10.0,
            "count": h.len(),
        })
    }

    pub(crate) fn summary(&self) -> String {
        if self.histogram.is_empty() {
            return "no samples".into();
        }
        let h = &self.histogram;
        format!(
            "p50 {} · p90 {} · p99 {} · p99.9 {} · max {}",
            micros(h.value_at_quantile(0.50)),
            micros(h.value_at_quantile(0.90)),
            micros(h.value_at_quantile(0.99)),
            micros(h.value_at_quantile(0.999)),
            micros(h.max()),
        )
    }
}

fn micros(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else if us >= 1000 {
        format!("{:.2} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

/// Delivery checks of one subscriber on one channel, from the offsets it receives.
///
/// Offsets of a channel are consecutive, so a jump forward leaves a gap; a gap filled later
/// was delivered out of order; an offset seen before (not a gap) is a duplicate. What is still
/// missing at the end is the remaining gaps plus everything after the last offset seen up to
/// the channel's last acknowledged offset.
#[derive(Debug, Clone)]
pub(crate) struct Track {
    /// The last offset in sequence (starts at `subscribed.offset`).
    last: u64,
    gaps: BTreeSet<u64>,
    /// Gaps too large to list, counted as missing for good.
    lost: u64,
    pub(crate) received: u64,
    pub(crate) duplicates: u64,
    pub(crate) reordered: u64,
    /// `offset − sequence` of the first message; later messages must keep it.
    skew: Option<i128>,
    pub(crate) seq_mismatch: u64,
}

/// Totals of [`Track`]s.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Integrity {
    pub(crate) received: u64,
    pub(crate) missing: u64,
    pub(crate) duplicates: u64,
    pub(crate) reordered: u64,
    pub(crate) seq_mismatch: u64,
}

impl Integrity {
    pub(crate) fn clean(&self) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.reordered == 0 && self.seq_mismatch == 0
    }
}

impl Track {
    pub(crate) fn new(start: u64) -> Self {
        Track {
            last: start,
            gaps: BTreeSet::new(),
            lost: 0,
            received: 0,
            duplicates: 0,
            reordered: 0,
            skew: None,
            seq_mismatch: 0,
        }
    }

    /// Records a delivery with its channel offset and the publisher's sequence number.
    #[inline]
    pub(crate) fn see(&mut self, offset: u64, seq: Option<u64>) {
        self.received += 1;
        if let Some(seq) = seq {
            let skew = i128::from(offset) - i128::from(seq);
            match self.skew {
                None => self.skew = Some(skew),
                Some(expected) if expected != skew => self.seq_mismatch += 1,
                Some(_) => {}
            }
        }
        if offset == self.last + 1 {
            self.last = offset;
        } else if offset > self.last {
            let gap = offset - self.last - 1;
            if gap > 100_000 {
                self.lost += gap;
            } else {
                self.gaps.extend(self.last + 1..offset);
            }
            self.last = offset;
        } else if self.gaps.remove(&offset) {
            self.reordered += 1;
        } else {
            self.duplicates += 1;
        }
    }

    /// The totals, given the channel's last acknowledged offset.
    pub(crate) fn finish(&self, top: u64, totals: &mut Integrity) {
        totals.received += self.received;
        totals.missing += self.gaps.len() as u64 + self.lost + top.saturating_sub(self.last);
        totals.duplicates += self.duplicates;
        totals.reordered += self.reordered;
        totals.seq_mismatch += self.seq_mismatch;
    }
}

/// Memory and CPU time of a process, from `/proc`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcSample {
    /// Resident set size in KiB.
    pub(crate) rss_kib: u64,
    /// User + system CPU time.
    pub(crate) cpu: Duration,
    pub(crate) at: Instant,
}

impl ProcSample {
    /// Reads `/proc/PID/status` (VmRSS) and `/proc/PID/stat` (utime + stime). `pid` `None` is
    /// this process.
    pub(crate) fn read(pid: Option<u32>) -> anyhow::Result<ProcSample> {
        let dir = match pid {
            Some(pid) => format!("/proc/{pid}"),
            None => "/proc/self".to_owned(),
        };
        let status = std::fs::read_to_string(format!("{dir}/status"))
            .with_context(|| format!("cannot read {dir}/status (is the server running?)"))?;
        let rss_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .context("no VmRSS in /proc status")?;
        let stat = std::fs::read_to_string(format!("{dir}/stat"))
            .with_context(|| format!("cannot read {dir}/stat"))?;
        // Fields after the command name (which may contain spaces) start at field 3 (state);
        // utime and stime are fields 14 and 15.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |index: usize| -> u64 {
            fields
                .get(index)
                .and_then(|value| value.parse().ok())
                .unwrap_or(0)
        };
        // USER_HZ is 100 on every Linux architecture's user ABI.
        let cpu_ticks = ticks(11) + ticks(12);
        Ok(ProcSample {
            rss_kib,
            cpu: Duration::from_millis(cpu_ticks * 10),
            at: Instant::now(),
        })
    }
}

/// The soft limit on open files of a process (`Max open files` in `/proc/PID/limits`).
pub(crate) fn open_files_limit(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/limits"),
        None => "/proc/self/limits".to_owned(),
    };
    let limits = std::fs::read_to_string(path).ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Server measurements between two samples.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerUsage {
    pub(crate) before: ProcSample,
    pub(crate) after: ProcSample,
}

impl ServerUsage {
    pub(crate) fn cpu(&self) -> Duration {
        self.after.cpu.saturating_sub(self.before.cpu)
    }

    /// CPU time as a share of one core over the wall time between the samples.
    pub(crate) fn cpu_share(&self) -> f64 {
        let wall = self.after.at.duration_since(self.before.at).as_secs_f64();
        if wall > 0.0 {
            self.cpu().as_secs_f64() / wall
        } else {
            0.0
        }
    }
}

/// A scenario's results: figures by name, printed as a summary and as one JSON line.
#[derive(Debug)]
pub(crate) struct Report {
    scenario: &'static str,
    fields: Map<String, Value>,
    lines: Vec<String>,
    problems: Vec<String>,
}

impl Report {
    pub(crate) fn new(scenario: &'static str, label: Option<&str>, url: &str) -> Self {
        let mut fields = Map::new();
        fields.insert("scenario".into(), json!(scenario));
        if let Some(label) = label {
            fields.insert("label".into(), json!(label));
        }
        fields.insert("url".into(), json!(url));
        Report {
            scenario,
            fields,
            lines: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// Adds a figure to the JSON line.
    pub(crate) fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.fields.insert(key.to_owned(), value.into());
    }

    /// Adds a line to the human summary.
    pub(crate) fn line(&mut self, text: impl Into<String>) {
        self.lines.push(text.into());
    }

    /// Records something that makes the run fail (exit status 1), e.g. a missing delivery.
    pub(crate) fn problem(&mut self, text: impl Into<String>) {
        self.problems.push(text.into());
    }

    /// Adds the latency figures (`latency_us`) and a summary line.
    pub(crate) fn latency(&mut self, what: &str, latency: &Latency) {
        self.set("latency_us", latency.to_json());
        self.line(format!("{what}: {}", latency.summary()));
    }

    /// Adds delivery-check figures and summary, flagging any fault as a problem.
    pub(crate) fn integrity(&mut self, integrity: &Integrity) {
        self.set("missing", integrity.missing);
        self.set("duplicated", integrity.duplicates);
        self.set("out_of_order", integrity.reordered);
        self.set("seq_mismatch", integrity.seq_mismatch);
        self.line(format!(
            "delivery check: {} missing · {} duplicated · {} out of order · {} payload/offset mismatches",
            integrity.missing, integrity.duplicates, integrity.reordered, integrity.seq_mismatch
        ));
        if !integrity.clean() {
            self.problem("some deliveries were missing, duplicated, out of order or mismatched");
        }
    }

    /// Adds the server's CPU figures, and per-delivery CPU when `deliveries` is given.
    pub(crate) fn server_cpu(&mut self, usage: &ServerUsage, deliveries: Option<u64>) {
        let cpu = usage.cpu();
        self.set("server_cpu_s", round3(cpu.as_secs_f64()));
        self.set("server_cpu_share", round3(usage.cpu_share()));
        let mut text = format!(
            "server CPU: {:.2} s ({:.0} % of one core)",
            cpu.as_secs_f64(),
            usage.cpu_share() * 100.0
        );
        if let Some(deliveries) = deliveries.filter(|d| *d > 0) {
            let per = cpu.as_secs_f64() * 1e6 / deliveries as f64;
            self.set("server_cpu_us_per_delivery", round3(per));
            let _ = write!(text, " · {per:.3} µs per delivery");
        }
        self.line(text);
        self.set("server_rss_kib", usage.after.rss_kib);
    }

    /// Adds this process's own CPU share over `wall` (to tell a saturated generator).
    pub(crate) fn generator_cpu(&mut self, before: &ProcSample, wall: Duration) {
        if let Ok(after) = ProcSample::read(None) {
            let cpu = after.cpu.saturating_sub(before.cpu).as_secs_f64();
            let share = if wall.is_zero() {
                0.0
            } else {
                cpu / wall.as_secs_f64()
            };
            self.set("generator_cpu_share", round3(share));
            self.set("generator_rss_kib", after.rss_kib);
            self.line(format!(
                "load generator: {:.0} % of one core{}",
                share * 100.0,
                if share > 0.9 {
                    " (saturated: the figures above are a lower bound of the server's capacity)"
                } else {
                    ""
                }
            ));
        }
    }

    /// Prints the summary on stderr and the JSON line on stdout; true when the run is clean.
    pub(crate) fn print(mut self) -> bool {
        let ok = self.problems.is_empty();
        self.set("ok", ok);
        if !ok {
            self.set("problems", json!(self.problems));
        }
        eprintln!("\nwirehub bench {}", self.scenario);
        for line in &self.lines {
            eprintln!("  {line}");
        }
        for problem in &self.problems {
            eprintln!("  PROBLEM: {problem}");
        }
        println!("{}", Value::Object(self.fields));
        ok
    }
}

/// A float rounded to 3 decimals (for the JSON line).
pub(crate) fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_counts_faults() {
        let mut track = Track::new(0);
        for offset in [1, 2, 4, 3, 3, 5, 8] {
            track.see(offset, Some(offset));
        }
        let mut totals = Integrity::default();
        track.finish(9, &mut totals);
        assert_eq!(totals.received, 7);
        assert_eq!(totals.reordered, 1, "3 after 4");
        assert_eq!(totals.duplicates, 1, "3 again");
        assert_eq!(totals.missing, 3, "6, 7 and 9");
        assert_eq!(totals.seq_mismatch, 0);
    }

    #[test]
    fn track_detects_payload_mismatch() {
        let mut track = Track::new(10);
        track.see(11, Some(1));
        track.see(12, Some(3));
        let mut totals = Integrity::default();
        track.finish(12, &mut totals);
        assert_eq!(totals.seq_mismatch, 1);
        assert!(!totals.clean());
    }

    #[test]
    fn reads_own_proc() {
        let sample = ProcSample::read(None).expect("proc");
        assert!(sample.rss_kib > 0);
        assert!(open_files_limit(None).is_some());
    }
}
