//! Admission control at the upgrade, and the retry hints of refusals and of the drain.
//!
//! A WebSocket upgrade that passed the handshake, origin and token checks is admitted only
//! if three limits allow it, checked in this order:
//!
//! 1. `max_connections_per_ip`: connections held by one client address (the TCP peer, or,
//!    when the peer is a trusted proxy, the address it names in `X-Forwarded-For`);
//!    refused with `429 Too Many Requests`.
//! 2. `max_connections`: connections held by the server; refused with `503`.
//! 3. `connect_rate` / `connect_burst`: a token bucket of new connections per second;
//!    refused with `503`.
//!
//! The places of the first two are taken atomically with their checks and travel with the
//! connection ([`crate::state::ConnectionSlot`]); a rate token is only spent once both
//! passed. Every refusal says when to come back: `Retry-After` (seconds), a JSON body with
//! the window in milliseconds, and, for browsers (a request with an `Origin`), which cannot
//! read a refused upgrade's status or headers, optionally the upgrade completed and closed at
//! once with 4103 and the window as a retry hint in the close reason
//! ([`wirehub_protocol::parse_retry_hint`]).
//!
//! The waits are spread by the server itself, so that refused clients do not come back
//! together: a rate refusal gets the next free appointment (the bucket's refill time for
//! the clients already told to come back), so that returning clients arrive at about the
//! admission rate; a refusal by a held-connection limit waits a random point of
//! `[retry_after, 2 × retry_after)`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};
use wirehub_protocol::{CloseCode, RetryWindow, reason_with_hint};

use crate::metrics::Metrics;
use crate::state::{AppState, ConnectionSlot};

/// The admission settings (see the module docs).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AdmissionConfig {
    /// New WebSocket connections admitted per second (0: no limit).
    pub connect_rate: u32,
    /// How many connections the bucket admits at once after a quiet time (0: `connect_rate`).
    pub connect_burst: u32,
    /// WebSocket connections one client address may hold (0: no limit).
    pub max_connections_per_ip: u32,
    /// Peers whose `X-Forwarded-For` names the client (addresses or CIDR blocks, e.g. a
    /// load balancer's); for any other peer the header is ignored.
    pub trusted_proxies: Vec<IpNet>,
    /// The base wait told to clients refused by a held-connection limit (`max_connections`,
    /// `max_connections_per_ip`): each gets a random point of `[retry_after, 2 ×
    /// retry_after)`.
    pub retry_after: Duration,
    /// The longest wait a rate refusal is told (its appointment); beyond it, a random point
    /// of the last half of this.
    pub max_retry_after: Duration,
    /// The window, from the close, in which connections closed on shutdown (1001) are told
    /// to come back: each gets `retry=LO-HI` with `LO` a random point of the first half and
    /// `HI = LO + half`, so that even clients that take the window's start come back spread
    /// out. Zero: no hint.
    pub drain_retry: Duration,
    /// Refuse browsers (requests with an `Origin`) by completing the upgrade and closing at
    /// once with 4103 and the retry hint, since a browser's WebSocket cannot read the status
    /// or `Retry-After` of a refused upgrade.
    pub close_refused_browsers: bool,
}

impl AdmissionConfig {
    /// The documented defaults: no rate or per-address limit.
    pub fn new() -> AdmissionConfig {
        AdmissionConfig {
            connect_rate: 0,
            connect_burst: 0,
            max_connections_per_ip: 0,
            trusted_proxies: Vec::new(),
            retry_after: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(60),
            drain_retry: Duration::from_secs(5),
            close_refused_browsers: true,
        }
    }

    /// Sets [`AdmissionConfig::connect_rate`] and [`AdmissionConfig::connect_burst`].
    pub fn connect_rate(mut self, rate: u32, burst: u32) -> Self {
        self.connect_rate = rate;
        self.connect_burst = burst;
        self
    }

    /// Sets [`AdmissionConfig::max_connections_per_ip`].
    pub fn max_connections_per_ip(mut self, value: u32) -> Self {
        self.max_connections_per_ip = value;
        self
    }

    /// Sets [`AdmissionConfig::trusted_proxies`].
    pub fn trusted_proxies(mut self, value: Vec<IpNet>) -> Self {
        self.trusted_proxies = value;
        self
    }

    /// Sets [`AdmissionConfig::retry_after`].
    pub fn retry_after(mut self, value: Duration) -> Self {
        self.retry_after = value;
        self
    }

    /// Sets [`AdmissionConfig::max_retry_after`].
    pub fn max_retry_after(mut self, value: Duration) -> Self {
        self.max_retry_after = value;
        self
    }

    /// Sets [`AdmissionConfig::drain_retry`].
    pub fn drain_retry(mut self, value: Duration) -> Self {
        self.drain_retry = value;
        self
    }

    /// Sets [`AdmissionConfig::close_refused_browsers`].
    pub fn close_refused_browsers(mut self, value: bool) -> Self {
        self.close_refused_browsers = value;
        self
    }
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig::new()
    }
}

/// An address or a CIDR block (`10.0.0.0/8`, `::1`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is in this block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(text: &str) -> Result<IpNet, String> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(IpNet { addr, prefix })
    }
}

/// Which limit refused an upgrade (the `reason` label of the metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// `connect_rate`.
    Rate,
    /// `max_connections`.
    MaxConnections,
    /// `max_connections_per_ip`.
    PerIp,
}

impl Limit {
    pub(crate) const ALL: [Limit; 3] = [Limit::Rate, Limit::MaxConnections, Limit::PerIp];

    /// The metric label and the body's `reason`.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Limit::Rate => "connect_rate",
            Limit::MaxConnections => "max_connections",
            Limit::PerIp => "per_ip",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Limit::PerIp => StatusCode::TOO_MANY_REQUESTS,
            Limit::Rate | Limit::MaxConnections => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn message(self) -> &'static str {
        match self {
            Limit::Rate => "the server admits new connections at a limited rate; retry later",
            Limit::MaxConnections => "connection limit reached; retry later",
            Limit::PerIp => "too many connections from this address",
        }
    }
}

/// An upgrade the limits refused, with the wait the client is told.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refusal {
    limit: Limit,
    wait: Duration,
}

impl Refusal {
    /// `Retry-After` in whole seconds (rounded up, at least 1).
    fn retry_after_secs(&self) -> u64 {
        self.wait.as_millis().div_ceil(1000).max(1) as u64
    }

    /// The window of the hint: the wait, and the second after it (the jitter a client adds
    /// to `Retry-After`, whose resolution is a second).
    fn window(&self) -> RetryWindow {
        RetryWindow::new(self.wait, self.wait + Duration::from_secs(1))
    }
}

/// The admission state of one server.
#[derive(Debug)]
pub(crate) struct Admission {
    bucket: Option<Mutex<Bucket>>,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    refused: [AtomicU64; Limit::ALL.len()],
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
    /// Until when the refill is promised to clients already told to come back.
    booked_until: Instant,
}

impl Admission {
    pub(crate) fn new(config: &AdmissionConfig) -> Admission {
        let bucket = (config.connect_rate > 0).then(|| {
            let rate = f64::from(config.connect_rate);
            let burst = f64::from(if config.connect_burst == 0 {
                config.connect_rate
            } else {
                config.connect_burst
            });
            let now = Instant::now();
            Mutex::new(Bucket {
                rate,
                burst,
                tokens: burst,
                refilled: now,
                booked_until: now,
            })
        });
        Admission {
            bucket,
            per_ip: Mutex::new(HashMap::new()),
            refused: Default::default(),
        }
    }

    /// Refusals so far by limit, in [`Limit::ALL`] order.
    pub(crate) fn refused(&self) -> impl Iterator<Item = (Limit, u64)> + '_ {
        Limit::ALL
            .iter()
            .zip(&self.refused)
            .map(|(limit, count)| (*limit, count.load(Ordering::Relaxed)))
    }

    fn count(&self, limit: Limit) {
        if let Some(index) = Limit::ALL.iter().position(|l| *l == limit) {
            self.refused[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes a place for `ip` unless it holds `max` already.
    fn reserve_ip(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<IpSlot> {
        let mut held = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            admission: self.clone(),
            ip,
        })
    }

    /// Takes a token, or books the next free appointment and returns its wait.
    fn take_token(&self, max_wait: Duration) -> Result<(), Duration> {
        let Some(bucket) = &self.bucket else {
            return Ok(());
        };
        let mut bucket = bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * bucket.rate).min(bucket.burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let step = Duration::from_secs_f64(1.0 / bucket.rate);
        let next_token = Duration::from_secs_f64((1.0 - bucket.tokens) / bucket.rate);
        let from = bucket.booked_until.max(now + next_token);
        let appointment = from + step;
        let wait = appointment.saturating_duration_since(now);
        if wait > max_wait {
            // The book is full that far ahead: spread the rest over the last half.
            return Err(max_wait.mul_f64(0.5 + rand::random::<f64>() * 0.5));
        }
        bucket.booked_until = appointment;
        Err(wait)
    }
}

/// A place among one client address's connections, released when dropped.
#[derive(Debug)]
pub(crate) struct IpSlot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut held = self
            .admission
            .per_ip
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// The client's address: the TCP peer, or for a trusted proxy the rightmost address of
/// `X-Forwarded-For` that is not itself a trusted proxy.
pub(crate) fn client_ip(trusted: &[IpNet], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect::<Vec<_>>();
    for entry in forwarded.iter().rev() {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            break;
        };
        client = ip.to_canonical();
        if !is_trusted(client) {
            break;
        }
    }
    client
}

/// Runs the admission checks for an upgrade from `peer`: the connection's slot, or the
/// refusal.
pub(crate) fn admit(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<ConnectionSlot, Refusal> {
    let config = &state.config.admission;
    let admission = &state.admission;
    let held_limit_wait = || {
        config
            .retry_after
            .mul_f64(1.0 + rand::random::<f64>())
            .min(config.max_retry_after.max(Duration::from_secs(1)))
    };
    let ip_slot = if config.max_connections_per_ip > 0 {
        let ip = client_ip(&config.trusted_proxies, peer.ip(), headers);
        match admission.reserve_ip(ip, config.max_connections_per_ip) {
            Some(slot) => Some(slot),
            None => {
                return Err(Refusal {
                    limit: Limit::PerIp,
                    wait: held_limit_wait(),
                });
            }
        }
    } else {
        None
    };
    let Some(slot) = state.reserve_connection(ip_slot) else {
        return Err(Refusal {
            limit: Limit::MaxConnections,
            wait: held_limit_wait(),
        });
    };
    match admission.take_token(config.max_retry_after) {
        Ok(()) => Ok(slot),
        Err(wait) => Err(Refusal {
            limit: Limit::Rate,
            wait,
        }),
    }
}

/// Answers a refused upgrade: `429`/`503` with `Retry-After` and a JSON body, or, for a
/// browser when so configured, a completed upgrade closed at once with 4103 and the hint.
pub(crate) fn refuse(
    state: &Arc<AppState>,
    request: &mut Request,
    peer: SocketAddr,
    refusal: Refusal,
) -> Response {
    Metrics::add(&state.metrics.upgrades_refused_total, 1);
    state.admission.count(refusal.limit);
    let window = refusal.window();
    debug!(
        %peer,
        limit = refusal.limit.as_str(),
        wait_ms = refusal.wait.as_millis() as u64,
        "upgrade refused by admission control"
    );
    if refusal.limit == Limit::MaxConnections {
        let max = state.config.max_connections;
        warn!(%peer, max, "upgrade refused: connection limit reached");
    }
    let browser = request.headers().contains_key(header::ORIGIN);
    if browser
        && state.config.admission.close_refused_browsers
        && let Some(response) = close_at_once(state, request, peer, window)
    {
        return response;
    }
    let body = serde_json::json!({
        "error": {
            "code": "overloaded",
            "reason": refusal.limit.as_str(),
            "message": refusal.limit.message(),
            "retry_after": refusal.retry_after_secs(),
            "retry_ms": [window.min.as_millis() as u64, window.max.as_millis() as u64],
        }
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = refusal.limit.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from(refusal.retry_after_secs()),
    );
    response
}

/// Completes the upgrade and closes at once with 4103 and the retry hint; `None` when the
/// request cannot be upgraded (then the HTTP refusal is sent).
fn close_at_once(
    state: &Arc<AppState>,
    request: &mut Request,
    peer: SocketAddr,
    window: RetryWindow,
) -> Option<Response> {
    let key = request.headers().get(header::SEC_WEBSOCKET_KEY)?;
    let accept = HeaderValue::from_str(&wirehub_ws::accept_key(key.as_bytes())).ok()?;
    let on_upgrade = request.extensions_mut().remove::<OnUpgrade>()?;
    let reason = reason_with_hint(CloseCode::Overloaded.reason(), window);
    let frame = wirehub_ws::encode_close(CloseCode::Overloaded.code(), &reason);
    state.tracker.spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut io = TokioIo::new(upgraded);
        if let Err(err) = io.write_all(&frame).await {
            debug!(%peer, error = %err, "could not send the overload close");
            return;
        }
        // Wait briefly for the client's close frame (or its end of the connection) so that
        // ours is read before the socket goes away.
        let mut scratch = [0u8; 256];
        let _ = tokio::time::timeout(Duration::from_secs(1), io.read(&mut scratch)).await;
        let _ = io.shutdown().await;
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    Some(response)
}

/// The reason sent with a close the server starts: for a shutdown (1001) with a retry hint
/// spread over `drain_retry`; otherwise the code's reason.
pub(crate) fn close_reason(state: &AppState, code: CloseCode) -> Cow<'static, str> {
    let drain = state.config.admission.drain_retry;
    if code != CloseCode::GoingAway || drain.is_zero() {
        return Cow::Borrowed(code.reason());
    }
    let half = drain / 2;
    let low = half.mul_f64(rand::random::<f64>());
    Cow::Owned(reason_with_hint(
        code.reason(),
        RetryWindow::new(low, low + half),
    ))
}

/// Appends the admission metrics to the Prometheus page.
pub(crate) fn render_metrics(out: &mut String, admission: &Admission) {
    use std::fmt::Write as _;
    let name = "wirehub_admission_refused_total";
    let _ = writeln!(
        out,
        "# HELP {name} WebSocket upgrades refused by admission control, by limit.\n# TYPE {name} counter"
    );
    for (limit, count) in admission.refused() {
        let _ = writeln!(out, "{name}{{reason=\"{}\"}} {count}", limit.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().expect("valid block")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("valid address")
    }

    #[test]
    fn blocks_match_their_addresses() {
        assert!(net("10.0.0.0/8").contains(ip("10.200.3.4")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(net("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!net("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(net("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(net("fd00::/8").contains(ip("fd12::1")));
        assert!(net("127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        assert!(!net("::1").contains(ip("127.0.0.1")));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("nonsense".parse::<IpNet>().is_err());
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let mut headers = HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_static("1.1.1.1, 2.2.2.2"),
        );
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.7"));
        let trusted = [net("10.0.0.0/8"), net("127.0.0.1")];
        // An untrusted peer: its header is ignored.
        assert_eq!(client_ip(&trusted, ip("5.5.5.5"), &headers), ip("5.5.5.5"));
        // Behind trusted proxies: the rightmost address that is not one of them.
        assert_eq!(
            client_ip(&trusted, ip("127.0.0.1"), &headers),
            ip("2.2.2.2")
        );
        assert_eq!(client_ip(&[], ip("127.0.0.1"), &headers), ip("127.0.0.1"));
        let mut garbage = HeaderMap::new();
        garbage.append("x-forwarded-for", HeaderValue::from_static("not-an-ip"));
        assert_eq!(
            client_ip(&trusted, ip("127.0.0.1"), &garbage),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn the_bucket_books_appointments_at_its_rate() {
        let admission = Admission::new(&AdmissionConfig::new().connect_rate(10, 2));
        let max = Duration::from_secs(60);
        assert!(admission.take_token(max).is_ok());
        assert!(admission.take_token(max).is_ok());
        let waits: Vec<Duration> = (0..5)
            .map(|_| admission.take_token(max).expect_err("the burst is spent"))
            .collect();
        // One appointment per tenth of a second, in order.
        for pair in waits.windows(2) {
            let step = pair[1].saturating_sub(pair[0]);
            assert!(
                (Duration::from_millis(95)..=Duration::from_millis(105)).contains(&step),
                "{waits:?}"
            );
        }
        assert!(waits[0] <= Duration::from_millis(210), "{waits:?}");
    }

    #[test]
    fn a_full_book_spreads_over_the_last_half_of_the_longest_wait() {
        let admission = Admission::new(&AdmissionConfig::new().connect_rate(1, 1));
        let max = Duration::from_secs(4);
        assert!(admission.take_token(max).is_ok());
        let waits: Vec<Duration> = (0..20)
            .map(|_| admission.take_token(max).expect_err("refused"))
            .collect();
        assert!(waits.iter().all(|wait| *wait <= max), "{waits:?}");
        assert!(waits[5..].iter().all(|wait| *wait >= max / 2), "{waits:?}");
    }

    #[test]
    fn refusals_round_their_wait_up_to_whole_seconds() {
        let refusal = Refusal {
            limit: Limit::Rate,
            wait: Duration::from_millis(1001),
        };
        assert_eq!(refusal.retry_after_secs(), 2);
        let refusal = Refusal {
            limit: Limit::Rate,
            wait: Duration::from_millis(10),
        };
        assert_eq!(refusal.retry_after_secs(), 1);
        assert_eq!(
            refusal.window(),
            RetryWindow::new(Duration::from_millis(10), Duration::from_millis(1010))
        );
    }
}
