//! Redis' own traffic counters, read with `INFO stats` and `INFO commandstats` over a plain
//! RESP connection: the bytes Redis received and sent (`total_net_input_bytes`,
//! `total_net_output_bytes`) and the calls of each command (commands that scripts run
//! included), so that a scenario can divide their changes by what it did.
//!
//! Reading the counters is traffic too: [`RedisStats::connect`] measures what one reading
//! costs (two readings back to back) and [`RedisStats::since`] takes it off, so a change
//! between two readings is what happened between them.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// One reading of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RedisSample {
    /// `total_net_input_bytes`.
    pub(crate) input: u64,
    /// `total_net_output_bytes`.
    pub(crate) output: u64,
    /// Calls per command (`cmdstat_NAME:calls=N`), `INFO` itself left out.
    pub(crate) calls: BTreeMap<String, u64>,
}

impl RedisSample {
    /// What changed from `before` to `self`.
    fn minus(&self, before: &RedisSample) -> RedisSample {
        RedisSample {
            input: self.input.saturating_sub(before.input),
            output: self.output.saturating_sub(before.output),
            calls: self
                .calls
                .iter()
                .map(|(name, calls)| {
                    let earlier = before.calls.get(name).copied().unwrap_or(0);
                    (name.clone(), calls.saturating_sub(earlier))
                })
                .filter(|(_, calls)| *calls > 0)
                .collect(),
        }
    }

    /// The change divided by `per` (e.g. joins), as JSON: bytes in and out, calls by
    /// command.
    pub(crate) fn per(&self, per: u64) -> Value {
        let per = per.max(1) as f64;
        let calls: Map<String, Value> = self
            .calls
            .iter()
            .map(|(name, calls)| (name.clone(), json!(round2(*calls as f64 / per))))
            .collect();
        json!({
            "in_bytes": round2(self.input as f64 / per),
            "out_bytes": round2(self.output as f64 / per),
            "calls": calls,
        })
    }

    /// A one-line summary of [`RedisSample::per`].
    pub(crate) fn per_summary(&self, per: u64) -> String {
        let per = per.max(1) as f64;
        let calls: Vec<String> = self
            .calls
            .iter()
            .map(|(name, calls)| format!("{name} {:.2}", *calls as f64 / per))
            .collect();
        format!(
            "{:.0} B in, {:.0} B out; calls: {}",
            self.input as f64 / per,
            self.output as f64 / per,
            if calls.is_empty() {
                "none".to_owned()
            } else {
                calls.join(", ")
            }
        )
    }
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// A connection to Redis for reading its counters.
#[derive(Debug)]
pub(crate) struct RedisStats {
    stream: BufReader<TcpStream>,
    /// What one reading adds to the counters.
    overhead: RedisSample,
}

impl RedisStats {
    /// Connects to `redis://HOST:PORT` (a loopback address; no password, no TLS) and
    /// measures the cost of a reading.
    ///
    /// # Errors
    /// A URL of another form, an address off this machine, or Redis not answering `INFO`.
    pub(crate) async fn connect(url: &str) -> anyhow::Result<RedisStats> {
        let Some(rest) = url.strip_prefix("redis://") else {
            bail!("--redis takes a redis://HOST:PORT URL, not {url:?}");
        };
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.contains('@') {
            bail!("--redis: a Redis with a password is not supported here");
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(authority)
            .await
            .with_context(|| format!("cannot resolve {authority:?}"))?
            .collect();
        let Some(addr) = addrs.first().copied() else {
            bail!("{authority:?} resolves to no address");
        };
        if !addr.ip().is_loopback() {
            bail!("--redis: {addr} is not on this machine's loopback interface");
        }
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to Redis at {addr}"))?;
        let mut stats = RedisStats {
            stream: BufReader::new(stream),
            overhead: RedisSample::default(),
        };
        let _ = stats.read().await?;
        let first = stats.read().await?;
        let second = stats.read().await?;
        stats.overhead = second.minus(&first);
        Ok(stats)
    }

    /// Reads the counters now.
    ///
    /// # Errors
    /// Redis not answering.
    pub(crate) async fn sample(&mut self) -> anyhow::Result<RedisSample> {
        self.read().await
    }

    /// What changed between two readings, without the cost of the readings.
    pub(crate) fn since(&self, before: &RedisSample, after: &RedisSample) -> RedisSample {
        let mut delta = after.minus(before);
        delta.input = delta.input.saturating_sub(self.overhead.input);
        delta.output = delta.output.saturating_sub(self.overhead.output);
        delta
    }

    async fn read(&mut self) -> anyhow::Result<RedisSample> {
        let stats = self.info("stats").await?;
        let commands = self.info("commandstats").await?;
        parse(&stats, &commands)
    }

    async fn info(&mut self, section: &str) -> anyhow::Result<String> {
        let request = format!("*2\r\n$4\r\nINFO\r\n${}\r\n{section}\r\n", section.len());
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let mut header = String::new();
        self.stream.read_line(&mut header).await?;
        let Some(len) = header.strip_prefix('$') else {
            bail!("Redis answered INFO with {:?}", header.trim_end());
        };
        let len: usize = len.trim_end().parse().context("INFO reply length")?;
        let mut body = vec![0; len + 2];
        self.stream.read_exact(&mut body).await?;
        body.truncate(len);
        String::from_utf8(body).context("INFO reply is not UTF-8")
    }
}

/// Reads the counters out of the two `INFO` texts.
fn parse(stats: &str, commands: &str) -> anyhow::Result<RedisSample> {
    let field = |name: &str| -> anyhow::Result<u64> {
        stats
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|value| value.trim().parse().ok())
            .with_context(|| format!("no {name} in INFO stats"))
    };
    let mut calls = BTreeMap::new();
    for line in commands.lines() {
        let Some((name, values)) = line
            .strip_prefix("cmdstat_")
            .and_then(|rest| rest.split_once(':'))
        else {
            continue;
        };
        if name == "info" {
            continue;
        }
        let count = values
            .split(',')
            .find_map(|pair| pair.strip_prefix("calls="))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        calls.insert(name.to_owned(), count);
    }
    Ok(RedisSample {
        input: field("total_net_input_bytes")?,
        output: field("total_net_output_bytes")?,
        calls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_and_subtracted() {
        let stats = "# Stats\r\ntotal_connections_received:4\r\ntotal_net_input_bytes:1000\r\n\
                     total_net_output_bytes:5000\r\n";
        let commands = "# Commandstats\r\ncmdstat_evalsha:calls=10,usec=50,usec_per_call=5.00\r\n\
                        cmdstat_info:calls=7,usec=1\r\ncmdstat_zadd:calls=3,usec=2\r\n";
        let before = parse(stats, commands).expect("parsed");
        assert_eq!((before.input, before.output), (1000, 5000));
        assert_eq!(before.calls.get("evalsha"), Some(&10));
        assert!(!before.calls.contains_key("info"));
        let after = RedisSample {
            input: 1600,
            output: 5400,
            calls: [("evalsha".to_owned(), 14), ("zadd".to_owned(), 3)].into(),
        };
        let delta = after.minus(&before);
        assert_eq!((delta.input, delta.output), (600, 400));
        assert_eq!(delta.calls, [("evalsha".to_owned(), 4)].into());
        assert_eq!(
            delta.per(2),
            json!({"in_bytes": 300.0, "out_bytes": 200.0, "calls": {"evalsha": 2.0}})
        );
    }
}
