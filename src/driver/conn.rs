//! A connection thread's HTTP phase: TLS handshake and request heads (bounded in size
//! and time), answers written in one piece, keep-alive, and the hand-off of an
//! upgraded connection to its session on the same thread and socket. Plain and TLS
//! connections take the same path; only [`Stream`] differs.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::context::Context;
use super::session;
use super::transport::{Stream, TlsConfig};
use crate::http::head::{self, Head, HeadError};
use crate::http::response::{self, Resp};
use crate::http::{self, Action, Side};
use crate::query;

/// Why no request head came.
enum ReadError {
    /// The client closed the connection between requests.
    Closed,
    Head(HeadError),
    Timeout,
    Io,
}

/// Reads one request head into `buf`, within the head size limit and by `deadline`:
/// a client trickling bytes (or TLS records) cannot hold the thread longer.
fn read_head(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    max: usize,
    deadline: Instant,
) -> Result<Head, ReadError> {
    let mut chunk = [0u8; 1024];
    loop {
        if !buf.is_empty() {
            match head::parse(buf) {
                Ok(Some((head, len))) => {
                    buf.drain(..len);
                    return Ok(head);
                }
                Ok(None) => {}
                Err(e) => return Err(ReadError::Head(e)),
            }
        }
        let room = max.saturating_sub(buf.len());
        if room == 0 {
            return Err(ReadError::Head(HeadError::TooLarge));
        }
        let want = room.min(chunk.len());
        match stream.read_before(&mut chunk[..want], deadline) {
            Ok(0) if buf.is_empty() => return Err(ReadError::Closed),
            Ok(0) => return Err(ReadError::Head(HeadError::Malformed)),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ReadError::Timeout)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(ReadError::Io),
        }
    }
}

fn write_response(stream: &mut Stream, resp: Resp, head_only: bool, close: bool) -> io::Result<()> {
    stream.write_all(&response::encode(resp, head_only, close))?;
    stream.flush()
}

/// Serves one accepted connection: requests (with keep-alive) until the client closes
/// or upgrades to a signaling session.
pub fn serve(
    tcp: TcpStream,
    tls: Option<&TlsConfig>,
    peer: SocketAddr,
    ctx: &Arc<Context>,
    side: Side,
) {
    let limits = &ctx.limits;
    // A client that does not read its response cannot hold the thread either.
    let _ = tcp.set_write_timeout(Some(limits.write_timeout.max(Duration::from_millis(1))));
    if tls.is_some() {
        match first_byte(&tcp, limits.http_head_timeout) {
            // A TLS ClientHello starts with 0x16; a letter is a plain HTTP method.
            Some(b) if b.is_ascii_uppercase() => {
                if let Ok(mut plain) = Stream::new(tcp, None) {
                    let resp = Resp::error(
                        400,
                        "tls_required",
                        "this port speaks TLS: use https:// or wss://",
                    );
                    let _ = write_response(&mut plain, resp, false, true);
                }
                return;
            }
            Some(_) => {}
            None => return,
        }
    }
    let mut stream = match Stream::new(tcp, tls) {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot start TLS for {peer}: {e}");
            return;
        }
    };
    // The first head (and with TLS, the handshake before it) must be in by then.
    let mut deadline = Instant::now() + limits.http_head_timeout;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let head = match read_head(&mut stream, &mut buf, limits.http_head_max, deadline) {
            Ok(h) => h,
            Err(e) => {
                let resp = match e {
                    ReadError::Head(HeadError::TooLarge) => Some(Resp::error(
                        431,
                        "header_too_large",
                        "the request head is too large",
                    )),
                    ReadError::Timeout if !buf.is_empty() => Some(Resp::error(
                        408,
                        "request_timeout",
                        "the request head took too long",
                    )),
                    ReadError::Head(HeadError::Malformed) => {
                        Some(Resp::error(400, "bad_request", "malformed HTTP request"))
                    }
                    ReadError::Timeout | ReadError::Closed | ReadError::Io => None,
                };
                if let Some(resp) = resp {
                    let _ = write_response(&mut stream, resp, false, true);
                }
                return;
            }
        };
        // Behind a --trusted-proxy, the client is who its forwarding headers say.
        let remote = ctx.proxies.client(
            peer,
            head.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        );
        debug!("{remote} {} {}", head.method, query::redact(&head.target));
        let head_only = head.method == "HEAD";
        match http::handle(&head, ctx.as_ref(), remote, side) {
            Action::Respond(resp) => {
                let keep = head.keep_alive() && resp.status < 500;
                if write_response(&mut stream, resp, head_only, !keep).is_err() || !keep {
                    stream.close_notify();
                    return;
                }
                deadline = Instant::now() + limits.http_head_timeout;
            }
            Action::Upgrade { accept, admission } => {
                let Some(token) = ctx.session_token() else {
                    return;
                };
                let switched = response::switching_protocols(&accept);
                if stream
                    .write_all(&switched)
                    .and_then(|_| stream.flush())
                    .is_err()
                {
                    return;
                }
                match admission {
                    Ok(who) => session::run(stream, buf, who, remote, ctx, token),
                    Err(refusal) => {
                        info!("refused session from {remote}: {}", refusal.detail);
                        session::refuse(stream, ctx, refusal.reason);
                    }
                }
                return;
            }
        }
    }
}

/// The first byte the client sends, within `timeout` (`None`: nothing came).
fn first_byte(tcp: &TcpStream, timeout: Duration) -> Option<u8> {
    tcp.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
        .ok()?;
    let mut b = [0u8; 1];
    loop {
        match tcp.peek(&mut b) {
            Ok(1) => return Some(b[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            _ => return None,
        }
    }
}
