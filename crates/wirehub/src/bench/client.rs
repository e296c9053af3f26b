//! A minimal WebSocket client made for load generation, not for general use.
//!
//! The generator must receive far more messages per second than the server under test sends
//! on one core, so this client does as little as possible per message: it reads everything
//! the socket has into one large scratch buffer shared by every connection of the thread,
//! cuts frames out of it in place (server frames are unmasked), and leaves the JSON to the
//! caller, which scans it for the two or three numbers it needs instead of deserializing it.
//! Only the bytes of a frame that has not fully arrived are kept per connection, so ten
//! thousand idle connections cost no buffers.
//!
//! Frames it sends are masked, as RFC 6455 requires of clients. It answers pings, supports
//! no extension and never fragments; the handshake checks only the `101` status.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::net::{TcpSocket, TcpStream};

/// Bytes read per connection wake-up at most (and the largest frame this client accepts).
const SCRATCH_LEN: usize = 512 * 1024;

thread_local! {
    /// The read buffer every connection of this thread uses in turn.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_LEN]);
}

/// WebSocket opcodes this client cares about.
pub(crate) const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;

/// Where to connect: a loopback address and the request path.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The server's address (always a loopback address).
    pub(crate) addr: SocketAddr,
    /// `Host` header value.
    pub(crate) host: String,
    /// Request path, e.g. `/ws`.
    pub(crate) path: String,
}

/// One or more servers (nodes of one cluster); connection `i` goes to node `i mod n`.
#[derive(Debug, Clone)]
pub(crate) struct Targets(Vec<Target>);

impl Targets {
    /// Parses a comma-separated list of `ws://` URLs (see [`Target::resolve`]).
    pub(crate) async fn resolve(urls: &str) -> anyhow::Result<Targets> {
        let mut targets = Vec::new();
        for url in urls.split(',').map(str::trim).filter(|url| !url.is_empty()) {
            targets.push(Target::resolve(url).await?);
        }
        if targets.is_empty() {
            bail!("no URL given");
        }
        Ok(Targets(targets))
    }

    /// The target of connection `index`.
    pub(crate) fn get(&self, index: usize) -> &Target {
        &self.0[index % self.0.len()]
    }
}

impl Target {
    /// Parses a `ws://HOST:PORT/PATH` URL and resolves it, refusing anything that is not on
    /// this machine's loopback interface.
    pub(crate) async fn resolve(url: &str) -> anyhow::Result<Target> {
        let Some(rest) = url.strip_prefix("ws://") else {
            if url.starts_with("wss://") {
                bail!("the load generator speaks plain ws:// only (benchmark TLS separately)");
            }
            bail!("{url:?} is not a ws:// URL");
        };
        let (authority, path) = match rest.find('/') {
            Some(index) => rest.split_at(index),
            None => (rest, "/ws"),
        };
        let with_port = if authority.contains(':') && !authority.ends_with(']') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&with_port)
            .await
            .with_context(|| format!("cannot resolve {authority:?}"))?
            .collect();
        if addrs.is_empty() {
            bail!("{authority:?} resolves to no address");
        }
        if let Some(remote) = addrs.iter().find(|addr| !addr.ip().is_loopback()) {
            bail!(
                "refusing to load-test {remote}: `wirehub bench` targets loopback addresses only \
                 (127.0.0.0/8, ::1)"
            );
        }
        let addr = addrs
            .iter()
            .find(|addr| addr.is_ipv4())
            .copied()
            .unwrap_or(addrs[0]);
        Ok(Target {
            addr,
            host: authority.to_owned(),
            path: path.to_owned(),
        })
    }

    /// The source address for connection number `index` when connections are spread over
    /// `sources` loopback addresses (127.0.0.1, 127.0.0.2, …), so that more connections can
    /// be opened than one source address has ephemeral ports.
    pub(crate) fn source(&self, index: usize, sources: usize) -> Option<IpAddr> {
        if sources <= 1 || !self.addr.is_ipv4() {
            return None;
        }
        let host = 1 + (index % sources) as u32;
        Some(IpAddr::from(std::net::Ipv4Addr::from(
            u32::from(std::net::Ipv4Addr::new(127, 0, 0, 0)) + host,
        )))
    }
}

/// The server answered the upgrade with something else than `101`.
#[derive(Debug, Clone)]
pub(crate) struct Refused {
    /// The status line, e.g. `HTTP/1.1 503 Service Unavailable`.
    pub(crate) status_line: String,
    /// The status code.
    pub(crate) status: u16,
    /// `Retry-After` in seconds, when the server sent one.
    pub(crate) retry_after: Option<Duration>,
}

impl Refused {
    fn parse(head: &str) -> Refused {
        let mut lines = head.lines();
        let status_line = lines.next().unwrap_or_default().to_owned();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let retry_after = lines
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("retry-after"))
            .and_then(|(_, value)| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Refused {
            status_line,
            status,
            retry_after,
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "handshake refused: {}", self.status_line)
    }
}

impl std::error::Error for Refused {}

/// A frame cut out of the read buffer.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    /// The opcode.
    pub(crate) opcode: u8,
    /// The payload (server frames are unmasked).
    pub(crate) payload: &'a [u8],
}

/// What a [`WsConn::drain`] call saw besides frames.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Drained {
    /// The server closed the TCP connection or sent a close frame.
    pub(crate) closed: bool,
}

/// One client connection.
#[derive(Debug)]
pub(crate) struct WsConn {
    stream: TcpStream,
    /// Received bytes of a frame that has not fully arrived.
    pending: Vec<u8>,
    /// Frames to send (pongs, requests) that the socket did not take yet.
    outgoing: Vec<u8>,
    mask_state: u32,
}

impl WsConn {
    /// Connects (from `source`, when given) and completes the opening handshake.
    pub(crate) async fn connect(
        target: &Target,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> anyhow::Result<WsConn> {
        tokio::time::timeout(timeout, Self::connect_inner(target, source))
            .await
            .map_err(|_| anyhow::anyhow!("connect and handshake timed out after {timeout:?}"))?
    }

    async fn connect_inner(target: &Target, source: Option<IpAddr>) -> anyhow::Result<WsConn> {
        let socket = if target.addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(source) = source {
            socket
                .bind(SocketAddr::new(source, 0))
                .with_context(|| format!("bind {source}"))?;
        }
        let stream = socket.connect(target.addr).await.context("connect")?;
        stream.set_nodelay(true)?;
        let port = stream.local_addr().map_or(0, |a| u32::from(a.port()));
        let mut conn = WsConn {
            stream,
            pending: Vec::new(),
            outgoing: Vec::new(),
            mask_state: 0x9E37_79B9 ^ port.wrapping_mul(0x85EB_CA6B) | 1,
        };
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            target.path, target.host
        );
        conn.outgoing.extend_from_slice(request.as_bytes());
        conn.flush().await.context("send handshake")?;
        loop {
            if let Some(end) = find(&conn.pending, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&conn.pending[..end]).into_owned();
                conn.pending.drain(..end + 4);
                let status = head.lines().next().unwrap_or_default();
                if !status.starts_with("HTTP/1.1 101") {
                    return Err(Refused::parse(&head).into());
                }
                if conn.pending.capacity() > 4096 {
                    conn.pending.shrink_to_fit();
                }
                return Ok(conn);
            }
            if conn.pending.len() > 16 * 1024 {
                bail!("handshake response too long");
            }
            conn.stream.readable().await?;
            let mut chunk = [0u8; 2048];
            match conn.stream.try_read(&mut chunk) {
                Ok(0) => bail!("connection closed during the handshake"),
                Ok(n) => conn.pending.extend_from_slice(&chunk[..n]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Waits until the socket may have bytes to read. Cancel-safe.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.stream.readable().await
    }

    /// Reads everything the socket has now and calls `on_frame` for each complete data frame,
    /// in order. Pings are answered (the pongs are written before returning when the socket
    /// takes them). Never blocks: returns when the socket has nothing more.
    ///
    /// # Errors
    /// A socket error, or a frame larger than this client accepts.
    pub(crate) fn drain(&mut self, mut on_frame: impl FnMut(Frame<'_>)) -> io::Result<Drained> {
        let mut drained = Drained::default();
        let WsConn {
            stream,
            pending,
            outgoing,
            mask_state,
        } = self;
        SCRATCH.with_borrow_mut(|scratch| {
            let mut filled = pending.len();
            scratch[..filled].copy_from_slice(pending);
            pending.clear();
            loop {
                let mut at = 0;
                while let Some((opcode, payload, end)) = parse_frame(&scratch[at..filled])? {
                    let payload = &scratch[at + payload.start..at + payload.end];
                    match opcode {
                        OP_PING => push_frame(outgoing, mask_state, 0xA, payload),
                        OP_CLOSE => drained.closed = true,
                        _ => on_frame(Frame { opcode, payload }),
                    }
                    at += end;
                }
                scratch.copy_within(at..filled, 0);
                filled -= at;
                if drained.closed {
                    break;
                }
                if filled == scratch.len() {
                    return Err(io::Error::other("frame larger than the client's buffer"));
                }
                match stream.try_read(&mut scratch[filled..]) {
                    Ok(0) => {
                        drained.closed = true;
                        break;
                    }
                    Ok(read) => filled += read,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) => return Err(err),
                }
            }
            pending.extend_from_slice(&scratch[..filled]);
            if pending.is_empty() && pending.capacity() > 0 {
                *pending = Vec::new();
            }
            Ok(())
        })?;
        if !self.outgoing.is_empty() {
            self.try_flush()?;
        }
        Ok(drained)
    }

    /// Waits for the next complete text frame (setup path: welcome, replies). Answers pings.
    ///
    /// # Errors
    /// A socket error, the server closing, or no text frame before `timeout`.
    pub(crate) async fn next_text(&mut self, timeout: Duration) -> anyhow::Result<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some((opcode, payload, end)) = parse_frame(&self.pending)? {
                let payload = self.pending[payload].to_vec();
                self.pending.drain(..end);
                match opcode {
                    OP_TEXT => return Ok(payload),
                    OP_PING => {
                        push_frame(&mut self.outgoing, &mut self.mask_state, 0xA, &payload);
                        self.flush().await?;
                    }
                    OP_CLOSE => bail!("the server closed the connection"),
                    _ => {}
                }
                continue;
            }
            tokio::time::timeout_at(deadline, self.stream.readable())
                .await
                .map_err(|_| anyhow::anyhow!("no reply within {timeout:?}"))??;
            let mut chunk = [0u8; 4096];
            match self.stream.try_read(&mut chunk) {
                Ok(0) => bail!("the server closed the connection"),
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Queues a masked text frame (sent by the next flush).
    pub(crate) fn queue_text(&mut self, payload: &[u8]) {
        push_frame(&mut self.outgoing, &mut self.mask_state, OP_TEXT, payload);
    }

    /// Bytes queued and not yet sent.
    pub(crate) fn unsent(&self) -> usize {
        self.outgoing.len()
    }

    /// Writes what the socket takes now without waiting.
    ///
    /// # Errors
    /// A socket error.
    pub(crate) fn try_flush(&mut self) -> io::Result<()> {
        while !self.outgoing.is_empty() {
            match self.stream.try_write(&self.outgoing) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    self.outgoing.drain(..written);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) => return Err(err),
            }
        }
        if self.outgoing.capacity() > 64 * 1024 {
            self.outgoing = Vec::new();
        }
        Ok(())
    }

    /// Writes everything queued, waiting for the socket as needed.
    ///
    /// # Errors
    /// A socket error.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        loop {
            self.try_flush()?;
            if self.outgoing.is_empty() {
                return Ok(());
            }
            self.stream.writable().await?;
        }
    }

    /// Waits until the socket may take more bytes. Cancel-safe.
    pub(crate) async fn writable(&self) -> io::Result<()> {
        self.stream.writable().await
    }

    /// Sends a close frame (1000) and waits, at most `timeout`, for the server to close the
    /// TCP connection, so that the server side ends up in TIME_WAIT rather than this one.
    pub(crate) async fn close(mut self, timeout: Duration) {
        push_frame(
            &mut self.outgoing,
            &mut self.mask_state,
            OP_CLOSE,
            &1000u16.to_be_bytes(),
        );
        let _ = tokio::time::timeout(timeout, async {
            if self.flush().await.is_err() {
                return;
            }
            // Read and discard until the server closes the TCP connection.
            let mut sink = [0u8; 4096];
            loop {
                if self.stream.readable().await.is_err() {
                    return;
                }
                match self.stream.try_read(&mut sink) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        })
        .await;
    }
}

/// Parses the frame at the front of `buf`: `(opcode, payload range, frame length)`, or `None`
/// when it has not fully arrived.
fn parse_frame(buf: &[u8]) -> io::Result<Option<(u8, std::ops::Range<usize>, usize)>> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if b1 & 0x80 != 0 {
        return Err(io::Error::other("the server sent a masked frame"));
    }
    if b0 & 0x80 == 0 {
        return Err(io::Error::other(
            "the server fragmented a message (not expected)",
        ));
    }
    let (len, header) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(bytes) => (usize::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(bytes) => {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(bytes);
                let len = usize::try_from(u64::from_be_bytes(raw))
                    .map_err(|_| io::Error::other("frame length overflows"))?;
                (len, 10)
            }
            None => return Ok(None),
        },
        short => (usize::from(short), 2),
    };
    if len > SCRATCH_LEN - 16 {
        return Err(io::Error::other("frame larger than the client's buffer"));
    }
    let end = header + len;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some((b0 & 0x0F, header..end, end)))
}

/// Appends one masked FIN frame.
fn push_frame(out: &mut Vec<u8>, mask_state: &mut u32, opcode: u8, payload: &[u8]) {
    // xorshift32: masking keys only need to differ, not to be secret, in a load test.
    let mut x = *mask_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *mask_state = x;
    let key = x.to_ne_bytes();
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
}

/// Position of `needle` in `haystack`.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The unsigned integer right after the first `key` (e.g. `"offset":`) in `text`.
pub(crate) fn number_after(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(text, key)? + key.len();
    parse_digits(&text[at..])
}

/// The unsigned integer right after the last `key` in `text` (for fields written last).
pub(crate) fn number_after_last(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = text.windows(key.len()).rposition(|window| window == key)? + key.len();
    parse_digits(&text[at..])
}

fn parse_digits(text: &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    let mut any = false;
    for &b in text {
        if !b.is_ascii_digit() {
            break;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        any = true;
    }
    any.then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_numbers() {
        let mut buf = vec![0x81, 5];
        buf.extend_from_slice(b"hello");
        buf.extend_from_slice(&[0x81, 126, 0, 200]);
        buf.extend(std::iter::repeat_n(b'x', 200));
        let (op, payload, end) = parse_frame(&buf).expect("ok").expect("complete");
        assert_eq!((op, &buf[payload], end), (1, &b"hello"[..], 7));
        let (_, payload, end) = parse_frame(&buf[7..]).expect("ok").expect("complete");
        assert_eq!((payload.len(), end), (200, 204));
        assert!(parse_frame(&buf[7..100]).expect("ok").is_none());
        let text = br#"{"type":"message","channel":"c","data":{"t":12,"s":3},"offset":44}"#;
        assert_eq!(number_after_last(text, b"\"offset\":"), Some(44));
        assert_eq!(number_after(text, b"\"t\":"), Some(12));
        assert_eq!(number_after(text, b"\"s\":"), Some(3));
        assert_eq!(number_after(text, b"\"x\":"), None);
    }

    #[test]
    fn masked_frames_unmask() {
        let mut out = Vec::new();
        let mut state = 7;
        push_frame(&mut out, &mut state, OP_TEXT, b"abcdef");
        assert_eq!(out[0], 0x81);
        assert_eq!(out[1], 0x80 | 6);
        let key = [out[2], out[3], out[4], out[5]];
        let plain: Vec<u8> = out[6..]
            .iter()
            .zip(key.iter().cycle())
            .map(|(b, k)| b ^ k)
            .collect();
        assert_eq!(plain, b"abcdef");
    }

    #[test]
    fn sources_spread() {
        let target = Target {
            addr: "127.0.0.1:9".parse().expect("addr"),
            host: "127.0.0.1:9".into(),
            path: "/ws".into(),
        };
        assert_eq!(target.source(0, 1), None);
        assert_eq!(target.source(0, 3), Some("127.0.0.1".parse().expect("ip")));
        assert_eq!(target.source(4, 3), Some("127.0.0.2".parse().expect("ip")));
    }
}
