//! The client's WebSocket: the opening handshake over TCP or TLS, then RFC 6455 framing by
//! `wirehub-ws` (the server's codec, in its client role), with permessage-deflate when the
//! server accepts the offer.
//!
//! [`Socket::next`] is cancel-safe: everything it has read or still has to write is kept in
//! the socket's buffers, so the connection task can `select!` on it. It answers pings and a
//! close by itself, writing those replies as the socket becomes writable without holding up
//! the reading. [`Socket::send_text`] writes a whole masked frame, compressed when the
//! extension was negotiated and the message is long enough.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf as _, Bytes, BytesMut};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;
use wirehub_ws::{CloseFrame, Decoder, Message, OpCode, ProtocolError};

/// Messages shorter than this go uncompressed even with permessage-deflate: the server's
/// default threshold, below which compression saves next to nothing.
const DEFLATE_THRESHOLD: usize = 256;

/// How much room each read asks for.
const READ_CHUNK: usize = 16 * 1024;

/// The largest response head (status line and headers) accepted at the upgrade.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// The byte stream under the WebSocket: TCP, or TLS over TCP for `wss://`.
type Stream = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// What [`Socket::next`] yields.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A text message (valid UTF-8, inflated if it was compressed).
    Text(Bytes),
    /// A binary message (the wirehub protocol has none; skipped by the connection).
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "read by the conformance test only")
    )]
    Binary(Bytes),
    /// The server's close frame (already answered).
    Close(Option<CloseFrame>),
}

/// Why the socket failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SocketError {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The server broke RFC 6455 (the close frame with its code was sent back).
    #[error("protocol error from the server: {0}")]
    Protocol(#[from] ProtocolError),
}

/// What the server's answer to the upgrade says.
pub(crate) enum Upgrade {
    /// `101`: the WebSocket is open.
    Open(Socket),
    /// Any other status, with its headers, to be sorted by the caller.
    Refused {
        status: u16,
        headers: Vec<(String, String)>,
    },
}

/// Where and how to open the WebSocket (from the client's URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) secure: bool,
    /// The host as written in the URL (IPv6 without its brackets).
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The `Host` header's value.
    pub(crate) authority: String,
    /// Path and query, at least `/`.
    pub(crate) resource: String,
}

impl Target {
    /// Parses a `ws://` or `wss://` URL.
    pub(crate) fn parse(url: &str) -> std::result::Result<Target, String> {
        let uri: http::Uri = url.parse().map_err(|error| format!("{error}"))?;
        let secure = match uri.scheme_str() {
            Some(scheme) if scheme.eq_ignore_ascii_case("ws") => false,
            Some(scheme) if scheme.eq_ignore_ascii_case("wss") => true,
            _ => return Err("the scheme must be ws:// or wss://".into()),
        };
        let authority = uri.authority().ok_or("the URL has no host")?;
        if authority.as_str().contains('@') {
            return Err("credentials in the URL are not supported: use a token".into());
        }
        let host = authority.host();
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        let port = authority
            .port_u16()
            .unwrap_or(if secure { 443 } else { 80 });
        Ok(Target {
            secure,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            authority: authority.as_str().to_owned(),
            resource: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |path| path.as_str().to_owned()),
        })
    }
}

/// Settings of one connection.
pub(crate) struct Options<'a> {
    /// `Authorization` header value, if any.
    pub(crate) authorization: Option<&'a str>,
    /// Offer permessage-deflate.
    pub(crate) compression: bool,
    /// Largest message accepted from the server, compressed on the wire or inflated.
    pub(crate) max_message_size: usize,
    /// TLS settings for `wss://`.
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
}

/// Connects (TCP, then TLS for `wss://`) and performs the opening handshake.
pub(crate) async fn open(target: &Target, options: &Options<'_>) -> io::Result<Upgrade> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
    tcp.set_nodelay(true)?;
    let mut stream = if target.secure {
        let settings = options.tls.clone().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no TLS settings for wss://")
        })?;
        let name = ServerName::try_from(target.host.clone())
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        let tls = tokio_rustls::TlsConnector::from(settings)
            .connect(name, tcp)
            .await?;
        Either::Right(Box::new(tls))
    } else {
        Either::Left(tcp)
    };
    let key = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>())
    };
    stream
        .write_all(request(target, options, &key).as_bytes())
        .await?;
    stream.flush().await?;

    let mut buf = BytesMut::with_capacity(1024);
    let (head_len, status, headers) = loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(invalid(
                "the server closed the connection during the handshake",
            ));
        }
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut slots);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let headers = response
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).trim().to_owned(),
                        )
                    })
                    .collect::<Vec<_>>();
                break (len, response.code.unwrap_or_default(), headers);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE_HEAD => {}
            Ok(httparse::Status::Partial) => return Err(invalid("the response head is too long")),
            Err(error) => return Err(invalid(&format!("not an HTTP response: {error}"))),
        }
    };
    if status != 101 {
        return Ok(Upgrade::Refused { status, headers });
    }
    let values = |name: &'static str| {
        headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let has_token = |name: &'static str, token: &str| {
        values(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err(invalid("the 101 response does not upgrade to websocket"));
    }
    let accept = wirehub_ws::accept_key(key.as_bytes());
    if values("sec-websocket-accept").next() != Some(accept.as_str()) {
        return Err(invalid("wrong Sec-WebSocket-Accept"));
    }
    if values("sec-websocket-protocol").next().is_some() {
        return Err(invalid(
            "the server chose a subprotocol that was not offered",
        ));
    }
    let extensions = values("sec-websocket-extensions");
    let deflate =
        wirehub_ws::accept_response(extensions).map_err(|error| invalid(&error.to_string()))?;
    if deflate.is_some() && !options.compression {
        return Err(invalid(
            "the server answered with an extension that was not offered",
        ));
    }
    let mut decoder = Decoder::for_client(options.max_message_size);
    if let Some(deflate) = deflate {
        decoder = decoder.with_inflate(deflate.server_context_takeover, options.max_message_size);
    }
    buf.advance(head_len);
    Ok(Upgrade::Open(Socket {
        stream,
        read: buf,
        out: BytesMut::new(),
        flush: false,
        decoder,
        deflate: deflate.is_some(),
        close_sent: false,
        closed: false,
    }))
}

fn invalid(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.to_owned())
}

/// The upgrade request.
fn request(target: &Target, options: &Options<'_>, key: &str) -> String {
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
        target.resource, target.authority
    );
    if let Some(authorization) = options.authorization {
        request.push_str(&format!("Authorization: {authorization}\r\n"));
    }
    if options.compression {
        request.push_str(&format!(
            "Sec-WebSocket-Extensions: {}\r\n",
            wirehub_ws::CLIENT_OFFER
        ));
    }
    request.push_str("\r\n");
    request
}

/// An open WebSocket to the server.
pub(crate) struct Socket {
    stream: Stream,
    /// Received bytes not decoded yet.
    read: BytesMut,
    /// Frames to write: replies to pings and close frames queued while reading, or the rest
    /// of a frame whose write was interrupted.
    out: BytesMut,
    /// `out` was written and the stream still has to be flushed (TLS).
    flush: bool,
    decoder: Decoder,
    /// permessage-deflate was negotiated.
    deflate: bool,
    /// A close frame was queued: nothing else may be sent.
    close_sent: bool,
    /// The stream ended, or failed: nothing more will be read.
    closed: bool,
}

impl Socket {
    /// Whether permessage-deflate was negotiated.
    pub(crate) fn compressed(&self) -> bool {
        self.deflate
    }

    /// The next message or the server's close; `None` when the stream ended without a
    /// close frame. Pings are answered, pongs skipped. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Option<Result<Incoming, SocketError>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Incoming, SocketError>>> {
        loop {
            if self.closed {
                return Poll::Ready(None);
            }
            // Replies go out as the socket takes them; a full send buffer does not stop
            // the reading.
            if let Poll::Ready(Err(error)) = self.poll_write_out(cx) {
                self.closed = true;
                return Poll::Ready(Some(Err(error.into())));
            }
            match self.decoder.decode(&mut self.read) {
                Ok(Some(Message::Text(text))) => {
                    return Poll::Ready(Some(Ok(Incoming::Text(text))));
                }
                Ok(Some(Message::Binary(data))) => {
                    return Poll::Ready(Some(Ok(Incoming::Binary(data))));
                }
                Ok(Some(Message::Ping(payload))) => {
                    if !self.close_sent {
                        self.queue(OpCode::Pong, &payload);
                    }
                    continue;
                }
                Ok(Some(Message::Pong(_))) => continue,
                Ok(Some(Message::Close(frame))) => {
                    if !self.close_sent {
                        // Echo the code (RFC 6455 §5.5.1), best effort before the caller
                        // drops the socket.
                        let code = frame.as_ref().map_or(1000, |f| f.code);
                        self.queue_close(code, "");
                        let _ = self.poll_write_out(cx);
                    }
                    self.closed = true;
                    return Poll::Ready(Some(Ok(Incoming::Close(frame))));
                }
                Ok(None) => {}
                Err(error) => {
                    if !self.close_sent {
                        self.queue_close(error.close_code(), "");
                        let _ = self.poll_write_out(cx);
                    }
                    self.closed = true;
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
            self.read.reserve(READ_CHUNK);
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut self.stream),
                cx,
                &mut self.read
            ));
            match read {
                Ok(0) => {
                    self.closed = true;
                    return Poll::Ready(None);
                }
                Ok(_) => {}
                Err(error) => {
                    self.closed = true;
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
        }
    }

    /// Writes what `out` holds as far as the socket takes it, then flushes.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let written = ready!(Pin::new(&mut self.stream).poll_write(cx, &self.out))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(written);
            self.flush = true;
        }
        if self.flush {
            ready!(Pin::new(&mut self.stream).poll_flush(cx))?;
            self.flush = false;
        }
        Poll::Ready(Ok(()))
    }

    fn queue(&mut self, opcode: OpCode, payload: &[u8]) {
        wirehub_ws::write_client_frame(&mut self.out, opcode, payload, rand::random());
    }

    fn queue_close(&mut self, code: u16, reason: &str) {
        self.out.extend_from_slice(&wirehub_ws::encode_client_close(
            code,
            reason,
            rand::random(),
        ));
        self.close_sent = true;
    }

    /// Sends one text message (compressed when the extension was negotiated and it is long
    /// enough to gain) and flushes it.
    pub(crate) async fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.send(OpCode::Text, text.as_bytes()).await
    }

    /// Sends one message of `opcode` (Text or Binary) as [`Socket::send_text`] does.
    pub(crate) async fn send(&mut self, opcode: OpCode, payload: &[u8]) -> io::Result<()> {
        if self.close_sent {
            return Err(io::ErrorKind::NotConnected.into());
        }
        let compressed = (self.deflate && payload.len() >= DEFLATE_THRESHOLD)
            .then(|| wirehub_ws::deflate_client_frame(opcode, payload, rand::random()))
            .flatten();
        match compressed {
            Some(frame) => self.out.extend_from_slice(&frame),
            None => self.queue(opcode, payload),
        }
        self.write_out().await
    }

    async fn write_out(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_write_out(cx)).await
    }

    /// The closing handshake: sends a close frame, waits for the server's (skipping what
    /// arrives before it), then shuts the stream down. The caller bounds it with a timeout.
    pub(crate) async fn close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        if !self.close_sent {
            self.queue_close(code, reason);
        }
        self.write_out().await?;
        while let Some(incoming) = self.next().await {
            if matches!(incoming, Ok(Incoming::Close(_)) | Err(_)) {
                break;
            }
        }
        self.write_out().await?;
        self.stream.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_from_urls() {
        let target = Target::parse("ws://127.0.0.1:8080/ws?x=1").expect("valid");
        assert_eq!(
            target,
            Target {
                secure: false,
                host: "127.0.0.1".into(),
                port: 8080,
                authority: "127.0.0.1:8080".into(),
                resource: "/ws?x=1".into(),
            }
        );
        let target = Target::parse("WSS://example.com").expect("valid");
        assert!(target.secure);
        assert_eq!((target.port, target.resource.as_str()), (443, "/"));
        let target = Target::parse("ws://[::1]:9/ws").expect("valid");
        assert_eq!(
            (target.host.as_str(), target.authority.as_str()),
            ("::1", "[::1]:9")
        );
        for bad in [
            "http://x/ws",
            "not a url",
            "ws:///ws",
            "ws://user:pw@x/ws",
            "/ws",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_request_offers_deflate_only_when_asked() {
        let target = Target::parse("ws://h:1/ws").expect("valid");
        let mut options = Options {
            authorization: Some("Bearer t"),
            compression: true,
            max_message_size: 1024,
            tls: None,
        };
        let text = request(&target, &options, "a2V5");
        assert!(
            text.starts_with("GET /ws HTTP/1.1\r\nHost: h:1\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nAuthorization: Bearer t\r\n"));
        assert!(text.contains(
            "\r\nSec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n"
        ));
        assert!(text.ends_with("\r\n\r\n"));
        options.compression = false;
        assert!(!request(&target, &options, "a2V5").contains("Extensions"));
    }
}
