//! A session's byte transport: the plain TCP socket, or the TCP socket with a rustls
//! connection driven by hand on top of it.
//!
//! Both are driven by TCP readiness with non-blocking calls, so one task serves a connection
//! and an idle one holds no buffers of ours. For TLS, rustls keeps its own (bounded) record
//! buffers; plaintext goes in through `write_vectored` only while its outgoing buffer has room.

use std::io::{self, IoSlice, Read, Write};

use bytes::BytesMut;
use rustls::ServerConnection;
use tokio::net::TcpStream;

/// Encrypted bytes rustls may hold for the socket before it stops taking plaintext.
const TLS_BUFFER_LIMIT: usize = 64 * 1024;

/// The socket of a session.
pub(crate) enum Transport {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsTransport>),
}

/// TCP plus the connection's TLS state.
pub(crate) struct TlsTransport {
    tcp: TcpStream,
    conn: ServerConnection,
}

impl Transport {
    /// A TLS transport from the pieces of a finished handshake.
    pub(crate) fn tls(tcp: TcpStream, mut conn: ServerConnection) -> Self {
        conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        Transport::Tls(Box::new(TlsTransport { tcp, conn }))
    }

    /// The TCP socket (for readiness and socket options).
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(tcp) => tcp,
            Transport::Tls(tls) => &tls.tcp,
        }
    }

    /// Whether this is TLS.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// Appends readable plaintext to `buf`. `Ok(0)` is the end of the stream;
    /// `Err(WouldBlock)` means nothing more for now.
    pub(crate) fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.try_read_buf(buf),
            Transport::Tls(tls) => tls.try_read_buf(buf),
        }
    }

    /// Writes as much of `slices` as the socket (or rustls's buffer) takes; returns the
    /// number of plaintext bytes taken, or `Err(WouldBlock)` when none.
    pub(crate) fn try_write_vectored(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.try_write_vectored(slices),
            Transport::Tls(tls) => {
                let taken = tls.conn.writer().write_vectored(slices)?;
                match tls.flush_pending() {
                    Ok(()) => {}
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(err) => return Err(err),
                }
                if taken == 0 {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(taken)
                }
            }
        }
    }

    /// Whether encrypted bytes wait for the socket.
    pub(crate) fn wants_write(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(tls) => tls.conn.wants_write(),
        }
    }

    /// Writes pending encrypted bytes; `Err(WouldBlock)` when the socket is full.
    pub(crate) fn flush_pending(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(tls) => tls.flush_pending(),
        }
    }
}

impl TlsTransport {
    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let mut chunk = [0u8; 8192];
        loop {
            match self.conn.reader().read(&mut chunk) {
                Ok(read) => {
                    buf.extend_from_slice(&chunk[..read]);
                    return Ok(read);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
            let read = self.conn.read_tls(&mut TcpIo(&self.tcp))?;
            if read == 0 {
                return Ok(0);
            }
            self.conn
                .process_new_packets()
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
            // Processing may have produced records to send (alerts, key updates).
            match self.flush_pending() {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
        }
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut TcpIo(&self.tcp))? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }
}

/// Blocking-style `Read`/`Write` over a non-blocking socket: `WouldBlock` comes back as an
/// error instead of waiting.
struct TcpIo<'a>(&'a TcpStream);

impl Read for TcpIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for TcpIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
