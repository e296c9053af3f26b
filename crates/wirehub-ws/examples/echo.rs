//! A minimal WebSocket echo server built on `wirehub-ws`.
//!
//! It exists to run the RFC 6455 conformance suite (Autobahn's fuzzing client needs an echo
//! endpoint) against the codec, and as a small reference for driving the sans-IO decoder from
//! a tokio read loop: handshake, decode everything buffered, batch the replies, read more.
//!
//! Usage: `cargo run --release -p wirehub-ws --example echo -- [ADDR] [--max BYTES]`
//! (defaults: `127.0.0.1:9001`, 16 MiB).
//!
//! Behaviour: Text and Binary messages are echoed as single frames, a Ping is answered with
//! a Pong, a Close is answered with a Close carrying the same code (1000 when it had none);
//! a protocol violation is answered with a Close carrying the error's close code. After
//! either close the server shuts down its write side, drains what the client still sends
//! (so the close frame is not lost to a TCP reset) until EOF or a timeout, and closes.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use wirehub_ws::{Decoder, Message, OpCode, accept_key, encode_close, write_frame, write_header};

/// Bytes reserved in the read buffer before each read.
const READ_CHUNK: usize = 64 * 1024;
/// Largest HTTP upgrade request accepted.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// Payloads at least this large are written straight from the message, without a copy.
const LARGE_PAYLOAD: usize = 64 * 1024;
/// How long to wait for the client to close after our close frame.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> io::Result<()> {
    let (addr, max) = parse_args().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let listener = TcpListener::bind(&addr).await?;
    eprintln!(
        "echo: listening on ws://{}/ (max message {max} bytes)",
        listener.local_addr()?
    );
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, max).await {
                        eprintln!("echo: connection error: {e}");
                    }
                });
            }
            Err(e) => {
                eprintln!("echo: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// `[ADDR] [--max BYTES]`.
fn parse_args() -> Result<(String, usize), String> {
    let mut addr = String::from("127.0.0.1:9001");
    let mut max = 16 * 1024 * 1024;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = if arg == "--max" {
            Some(args.next().ok_or("--max needs a value")?)
        } else {
            arg.strip_prefix("--max=").map(str::to_owned)
        };
        match value {
            Some(v) => max = v.parse().map_err(|e| format!("bad --max {v:?}: {e}"))?,
            None if arg.starts_with("--") => return Err(format!("unknown option {arg}")),
            None => addr = arg,
        }
    }
    Ok((addr, max))
}

/// One connection: upgrade, then echo until a close or an error.
async fn serve(mut stream: TcpStream, max: usize) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    if !handshake(&mut stream, &mut buf).await? {
        return Ok(());
    }
    let mut decoder = Decoder::new(max);
    let mut out = BytesMut::new();
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Message::Text(data))) => {
                    send(&mut stream, &mut out, OpCode::Text, data).await?
                }
                Ok(Some(Message::Binary(data))) => {
                    send(&mut stream, &mut out, OpCode::Binary, data).await?;
                }
                Ok(Some(Message::Ping(data))) => write_frame(&mut out, OpCode::Pong, &data),
                Ok(Some(Message::Pong(_))) => {}
                Ok(Some(Message::Close(frame))) => {
                    let code = frame.map_or(1000, |f| f.code);
                    out.extend_from_slice(&encode_close(code, ""));
                    return close(stream, &out).await;
                }
                Ok(None) => break,
                Err(e) => {
                    out.extend_from_slice(&encode_close(e.close_code(), ""));
                    return close(stream, &out).await;
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        buf.reserve(READ_CHUNK);
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// Queues an echo frame in `out`; a large payload is written at once after the header
/// instead of being copied into `out`.
async fn send(
    stream: &mut TcpStream,
    out: &mut BytesMut,
    opcode: OpCode,
    payload: Bytes,
) -> io::Result<()> {
    if payload.len() < LARGE_PAYLOAD {
        write_frame(out, opcode, &payload);
        return Ok(());
    }
    write_header(out, opcode, payload.len());
    stream.write_all(out).await?;
    out.clear();
    stream.write_all(&payload).await
}

/// Sends the final bytes (ending with a close frame), shuts down the write side and waits
/// for the client to close (or the timeout) before dropping the socket.
async fn close(mut stream: TcpStream, out: &[u8]) -> io::Result<()> {
    stream.write_all(out).await?;
    stream.shutdown().await?;
    let mut sink = vec![0; 16 * 1024];
    let drain = async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
    Ok(())
}

/// Reads the HTTP upgrade request and answers it; false when the connection should be
/// dropped. Bytes after the request head stay in `buf` (the client may already have sent
/// frames).
async fn handshake(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<bool> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = buf.split_to(end + 4);
            let Some(key) = header_value(&head, b"sec-websocket-key") else {
                stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await?;
                return Ok(false);
            };
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                accept_key(key)
            );
            stream.write_all(response.as_bytes()).await?;
            return Ok(true);
        }
        if buf.len() > MAX_REQUEST_HEAD {
            stream
                .write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await?;
            return Ok(false);
        }
        buf.reserve(4096);
        if stream.read_buf(buf).await? == 0 {
            return Ok(false);
        }
    }
}

/// The trimmed value of the first header called `name` (lowercase), case-insensitively.
fn header_value<'a>(head: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        let (field, value) = line.split_at(colon);
        field
            .trim_ascii()
            .eq_ignore_ascii_case(name)
            .then(|| value.get(1..).unwrap_or_default().trim_ascii())
    })
}
