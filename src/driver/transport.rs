//! The bytes under HTTP and WebSocket: a TCP socket, plain or wrapped in TLS (rustls).
//!
//! Two views of one connection. [`Stream`] blocks, but never past a deadline: the
//! HTTP phase (TLS handshake, request heads, responses) and refusals use it. [`Io`]
//! never blocks (the socket is switched to non-blocking mode): a session thread waits
//! only in `ppoll`, so a relayed message still reaches a peer whose thread waits for
//! its client. rustls fits that model as it is: it never touches the socket itself,
//! we feed it with `read_tls`/`write_tls`, so TLS stays full duplex on one thread.
//! No raw file descriptors: every call goes through the `TcpStream` it borrows.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Instant;

use crate::metrics::Metrics;

/// A TLS connection's state (handshake, keys, buffered records).
#[cfg(feature = "tls")]
pub type Tls = Box<rustls::ServerConnection>;
/// The server's TLS configuration, shared by its connections.
#[cfg(feature = "tls")]
pub type TlsConfig = std::sync::Arc<rustls::ServerConfig>;

/// Built without the `tls` feature: no TLS connection can exist.
#[cfg(not(feature = "tls"))]
pub enum Tls {}
#[cfg(not(feature = "tls"))]
#[derive(Clone)]
pub enum TlsConfig {}

/// A connection in its blocking phase.
pub struct Stream {
    tcp: TcpStream,
    tls: Option<Tls>,
    /// When set, no write goes on past it, however slowly the client reads (each
    /// write(2) waits at most the time left).
    write_deadline: Option<Instant>,
}

impl Stream {
    /// Wraps an accepted socket; with `tls`, the handshake happens in the first read.
    pub fn new(tcp: TcpStream, tls: Option<&TlsConfig>) -> io::Result<Stream> {
        let tls = match tls {
            None => None,
            #[cfg(feature = "tls")]
            Some(config) => Some(Box::new(
                rustls::ServerConnection::new(config.clone()).map_err(io::Error::other)?,
            )),
            #[cfg(not(feature = "tls"))]
            Some(never) => match *never {},
        };
        Ok(Stream {
            tcp,
            tls,
            write_deadline: None,
        })
    }

    /// Bounds every later write by `deadline` (a whole response, not each write(2)).
    pub fn set_write_deadline(&mut self, deadline: Instant) {
        self.write_deadline = Some(deadline);
    }

    /// Sets the socket's write timeout to what is left before the write deadline.
    fn arm_write(&self) -> io::Result<()> {
        match self.write_deadline {
            Some(deadline) => self.tcp.set_write_timeout(Some(left(deadline)?)),
            None => Ok(()),
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Reads some plaintext, waiting at most until `deadline` in all (however the
    /// client trickles its TLS records). `Ok(0)`: the client closed.
    pub fn read_before(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        match &mut self.tls {
            None => {
                self.tcp.set_read_timeout(Some(left(deadline)?))?;
                self.tcp.read(buf)
            }
            #[cfg(feature = "tls")]
            Some(conn) => read_plaintext(
                conn,
                &mut self.tcp,
                buf,
                |conn, tcp| {
                    tcp.set_read_timeout(Some(left(deadline)?))?;
                    conn.read_tls(tcp)
                },
                // Handshake replies and alerts go out before the next wait, within
                // the same deadline: a handshake that does not read is cut off too.
                |conn, tcp| {
                    tcp.set_write_timeout(Some(left(deadline)?))?;
                    drain_blocking(conn, tcp, None)
                },
            ),
            #[cfg(not(feature = "tls"))]
            Some(never) => match *never {},
        }
    }

    /// Sends TLS `close_notify` (nothing on plain TCP) before the socket is shut.
    pub fn close_notify(&mut self) {
        #[cfg(feature = "tls")]
        if let Some(conn) = &mut self.tls {
            conn.send_close_notify();
            let _ = drain_blocking(conn, &mut self.tcp, self.write_deadline);
        }
    }

    /// Splits into the socket and its TLS state, for the session's non-blocking view
    /// ([`Io::new`]); plaintext the client sent past its request head stays in the
    /// TLS state, where [`Io`] reads it first.
    pub fn into_parts(self) -> (TcpStream, Option<Tls>) {
        (self.tcp, self.tls)
    }
}

fn left(deadline: Instant) -> io::Result<std::time::Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::ErrorKind::TimedOut.into())
    } else {
        Ok(left)
    }
}

/// Plaintext from `conn`. Only when none is buffered does `fill` take records from
/// the socket `sock` (so the received-plaintext buffer never overflows; `Ok(0)`: the
/// client closed); `send` then pushes what processing them produced (handshake
/// replies, alerts, key updates), best effort. One loop for both views.
#[cfg(feature = "tls")]
fn read_plaintext<S>(
    conn: &mut rustls::ServerConnection,
    sock: &mut S,
    buf: &mut [u8],
    mut fill: impl FnMut(&mut rustls::ServerConnection, &mut S) -> io::Result<usize>,
    mut send: impl FnMut(&mut rustls::ServerConnection, &mut S) -> io::Result<()>,
) -> io::Result<usize> {
    loop {
        match conn.reader().read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) => return Err(e),
        }
        if fill(conn, sock)? == 0 {
            return Ok(0);
        }
        let state = conn.process_new_packets();
        let _ = send(conn, sock);
        if let Err(e) = state {
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
    }
}

/// Writes every pending TLS record, blocking (bounded by the socket's write timeout,
/// re-armed to what is left before `deadline` for each write if there is one).
#[cfg(feature = "tls")]
fn drain_blocking(
    conn: &mut rustls::ServerConnection,
    tcp: &mut TcpStream,
    deadline: Option<Instant>,
) -> io::Result<()> {
    while conn.wants_write() {
        if let Some(deadline) = deadline {
            tcp.set_write_timeout(Some(left(deadline)?))?;
        }
        if conn.write_tls(tcp)? == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
    }
    Ok(())
}

/// Only for tungstenite's trait bounds when a refusal is written: every blocking read
/// goes through [`Stream::read_before`], which has a deadline.
impl Read for Stream {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Blocking writes, bounded by the write deadline if set, else by the socket's write
/// timeout.
impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => {
                self.arm_write()?;
                self.tcp.write(buf)
            }
            #[cfg(feature = "tls")]
            Some(conn) => {
                let n = conn.writer().write(buf)?;
                drain_blocking(conn, &mut self.tcp, self.write_deadline)?;
                Ok(n)
            }
            #[cfg(not(feature = "tls"))]
            Some(never) => match *never {},
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.tls {
            None => Ok(()),
            #[cfg(feature = "tls")]
            Some(conn) => drain_blocking(conn, &mut self.tcp, self.write_deadline),
            #[cfg(not(feature = "tls"))]
            Some(never) => match *never {},
        }
    }
}

/// The socket itself, in non-blocking mode; counts the bytes both ways.
struct Raw<'a> {
    tcp: &'a TcpStream,
    metrics: &'a Metrics,
    /// Bytes still to write that are HTTP's, not the session's (the `101`): not
    /// counted as sent, like the request head is not counted as received.
    uncounted: usize,
}

impl Read for Raw<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (&mut &*self.tcp).read(buf)?;
        self.metrics.received(n);
        Ok(n)
    }
}

impl Write for Raw<'_> {
    /// std sends with `MSG_NOSIGNAL`: a closed peer is an error, never SIGPIPE.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (&mut &*self.tcp).write(buf)?;
        let http = n.min(self.uncounted);
        self.uncounted -= http;
        self.metrics.sent(n - http);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A session's connection: plaintext in and out, never blocking (`WouldBlock`
/// instead), so the session thread only ever waits in `ppoll`.
///
/// With TLS, "the socket is full" means encrypted records are still waiting: `write`
/// then takes no more plaintext and `flush` reports `WouldBlock`, so back-pressure and
/// the slow-consumer rule work exactly as on plain TCP.
pub struct Io<'a> {
    raw: Raw<'a>,
    tls: Option<Tls>,
}

impl<'a> Io<'a> {
    /// The session's view of `tcp` (switched to non-blocking mode).
    pub fn new(tcp: &'a TcpStream, tls: Option<Tls>, metrics: &'a Metrics) -> io::Result<Self> {
        tcp.set_nonblocking(true)?;
        Ok(Io {
            raw: Raw {
                tcp,
                metrics,
                uncounted: 0,
            },
            tls,
        })
    }

    /// The next `n` bytes written are the upgrade's response, not session traffic:
    /// they are not counted as sent. (Over TLS the response shares its record with
    /// the first message, so the record's overhead is counted once, as before.)
    pub fn uncounted(&mut self, n: usize) {
        self.raw.uncounted = n;
    }

    /// The socket, to wait on.
    pub fn fd(&self) -> BorrowedFd<'a> {
        self.raw.tcp.as_fd()
    }

    /// Whether a read may find input now. Over TLS always (rustls may hold plaintext
    /// that the socket no longer shows); on plain TCP, whether the socket has bytes,
    /// an end of stream or an error pending (`poll` with no wait).
    pub fn has_input(&self) -> bool {
        if self.tls.is_some() {
            return true;
        }
        let mut pfd = libc::pollfd {
            fd: self.raw.tcp.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd on the stack, for a descriptor `tcp` keeps open;
        // a zero timeout never waits.
        let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
        // On a failed poll, read and let the read report what is wrong.
        ready != 0
    }

    /// Queues TLS `close_notify`; the next flush sends it.
    pub fn close_notify(&mut self) {
        #[cfg(feature = "tls")]
        if let Some(conn) = &mut self.tls {
            conn.send_close_notify();
        }
    }

    /// Sends pending TLS records until the socket is full. `Ok(true)`: all sent.
    #[cfg(feature = "tls")]
    fn push_tls(conn: &mut rustls::ServerConnection, raw: &mut Raw<'_>) -> io::Result<bool> {
        while conn.wants_write() {
            match conn.write_tls(raw) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

impl Read for Io<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => self.raw.read(buf),
            #[cfg(feature = "tls")]
            // WouldBlock from the socket ends the read.
            Some(conn) => read_plaintext(
                conn,
                &mut self.raw,
                buf,
                |conn, raw| conn.read_tls(raw),
                // Alerts, key updates: best effort now, the next flush finishes.
                |conn, raw| Self::push_tls(conn, raw).map(|_| ()),
            ),
            #[cfg(not(feature = "tls"))]
            Some(never) => match *never {},
        }
    }
}

impl Write for Io<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => self.raw.write(buf),
            #[cfg(feature = "tls")]
            Some(conn) => {
                if !Self::push_tls(conn, &mut self.raw)? {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let n = conn.writer().write(buf)?;
                Self::push_tls(conn, &mut self.raw)?;
                Ok(n)
            }
            #[cfg(not(feature = "tls"))]
            Some(never) => match *never {},
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.tls {
            None => Ok(()),
            #[cfg(feature = "tls")]
            Some(conn) => match Self::push_tls(conn, &mut self.raw)? {
                true => Ok(()),
                false => Err(io::ErrorKind::WouldBlock.into()),
            },
            #[cfg(not(feature = "tls"))]
            Some(never) => match *never {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Duration;

    /// A reader that takes a little every few milliseconds keeps each write(2) going,
    /// so a timeout per write never fires; the deadline for the whole response does.
    #[test]
    fn the_write_deadline_bounds_a_whole_response_against_a_trickling_reader() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = done.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            client
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if !matches!(client.read(&mut buf), Ok(1..)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let mut stream = Stream::new(server, None).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            stream.set_write_deadline(Instant::now() + Duration::from_millis(300));
            // 256 MiB: at this reader's pace, hours.
            let big = vec![0u8; 256 << 20];
            let _ = tx.send(stream.write_all(&big).map_err(|e| e.kind()));
        });
        let result = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the write ended by its deadline");
        assert!(
            matches!(
                result,
                Err(io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
            ),
            "{result:?}"
        );
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().unwrap();
    }
}
