//! A connection thread's HTTP phase: TLS handshake and request heads (bounded in size
//! and time), answers written in one piece by a deadline, keep-alive (a bounded number
//! of requests, evictable while idle), closes that linger so the answer is not lost,
//! and the hand-off of an upgraded connection to its session on the same thread and
//! socket. Plain and TLS connections take the same path; only [`Stream`] differs.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::context::{Context, SessionToken};
use super::session;
use super::slots::Slot;
use super::transport::{Stream, TlsConfig};
use crate::config::Limits;
use crate::core::admission::Admitted;
use crate::http::framing::{self, Body, Step};
use crate::http::response::{self, Resp};
use crate::http::{self, Action, Side};
use crate::protocol::CloseReason;
use crate::{logsafe, query};

/// Why no request head came.
enum ReadError {
    /// The client closed the connection between requests (or it was evicted while
    /// idle).
    Closed,
    Timeout,
    Io,
}

/// Reads until `buf` starts with a whole request head (or what stands there is not
/// one), within the head size limit and by `deadline`: a client trickling bytes (or
/// TLS records) cannot hold the thread longer. While nothing of the next request has
/// come, the connection is registered as idle in `idle_slot`, where new work may
/// evict it.
fn read_request(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    max: usize,
    deadline: Instant,
    idle_slot: Option<&Slot>,
) -> Result<Step, ReadError> {
    let mut chunk = [0u8; 1024];
    loop {
        if !buf.is_empty() {
            match framing::next(buf, max) {
                Step::Partial => {}
                step => return Ok(step),
            }
        }
        let want = max.saturating_sub(buf.len()).clamp(1, chunk.len());
        let read = match idle_slot.filter(|_| buf.is_empty()) {
            Some(slot) => {
                let Some(idle) = slot.idle(stream.tcp()) else {
                    return Err(ReadError::Closed);
                };
                let read = stream.read_before(&mut chunk[..want], deadline);
                if !idle.finish() {
                    return Err(ReadError::Closed);
                }
                read
            }
            None => stream.read_before(&mut chunk[..want], deadline),
        };
        match read {
            Ok(0) if buf.is_empty() => return Err(ReadError::Closed),
            Ok(0) => return Ok(Step::Bad("the request head ends early")),
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

/// Writes a whole response by `deadline` (a client that reads slowly cannot stretch
/// it).
fn write_response(
    stream: &mut Stream,
    resp: Resp,
    head_only: bool,
    close: bool,
    deadline: Instant,
) -> io::Result<()> {
    stream.set_write_deadline(deadline);
    stream.write_all(&response::encode(resp, head_only, close))?;
    stream.flush()
}

/// Ends the HTTP phase from our side: TLS `close_notify`, a half-close, then what the
/// client still sends (an unread body, pipelined requests) is read and dropped until
/// it hangs up or `linger` passes, so unread input cannot turn the close into a reset
/// that destroys the answer in flight.
fn close_lingering(mut stream: Stream, linger: Duration) {
    stream.close_notify();
    let _ = stream.tcp().shutdown(Shutdown::Write);
    let deadline = Instant::now() + linger;
    let mut sink = [0u8; 4096];
    while let Ok(1..) = stream.read_before(&mut sink, deadline) {}
}

/// Answers `resp` and ends the connection.
fn answer_and_close(mut stream: Stream, resp: Resp, limits: &Limits) {
    let deadline = Instant::now() + limits.write_timeout;
    if write_response(&mut stream, resp, false, true, deadline).is_ok() {
        close_lingering(stream, limits.close_timeout);
    }
}

/// A connection upgraded to an admitted session, handed back to the thread's caller
/// to run ([`Upgraded::run`]) once this module's frames are off the stack.
pub struct Upgraded {
    stream: Stream,
    /// The `101 Switching Protocols` response, not written yet.
    switched: Vec<u8>,
    /// What the client sent after its request head.
    leftover: Vec<u8>,
    who: Admitted,
    remote: SocketAddr,
    token: SessionToken,
    /// The session slot, held for as long as the session runs.
    _slot: Slot,
}

impl Upgraded {
    /// Runs the session on the calling thread until it ends.
    pub fn run(self, ctx: &Arc<Context>) {
        let Upgraded {
            stream,
            switched,
            leftover,
            who,
            remote,
            token,
            _slot,
        } = self;
        session::run(stream, switched, leftover, who, remote, ctx, token);
    }
}

/// Serves one accepted connection: requests (with keep-alive) until the client closes
/// or upgrades to a signaling session. `slot` is its HTTP slot, traded for a session
/// slot on upgrade. An admitted session is returned rather than run here: a session
/// lives for hours on this thread, and what the HTTP phase kept (its request head,
/// its buffers, its stack frames) should not live with it.
pub fn serve(
    tcp: TcpStream,
    tls: Option<&TlsConfig>,
    peer: SocketAddr,
    ctx: &Arc<Context>,
    side: Side,
    mut slot: Slot,
) -> Option<Upgraded> {
    let limits = &ctx.limits;
    // The first head (and with TLS, the first byte and the handshake before it) must
    // be in by then.
    let mut deadline = Instant::now() + limits.http_head_timeout;
    // Until a response sets its own deadline (refusals after an upgrade included).
    let _ = tcp.set_write_timeout(Some(limits.write_timeout.max(Duration::from_millis(1))));
    if tls.is_some() {
        match first_byte(&tcp, deadline) {
            // A TLS ClientHello starts with 0x16; a letter is a plain HTTP method.
            Some(b) if b.is_ascii_uppercase() => {
                if let Ok(plain) = Stream::new(tcp, None) {
                    let resp = Resp::error(
                        400,
                        "tls_required",
                        "this port speaks TLS: use https:// or wss://",
                    );
                    answer_and_close(plain, resp, limits);
                }
                return None;
            }
            Some(_) => {}
            None => return None,
        }
    }
    let mut stream = match Stream::new(tcp, tls) {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot start TLS for {peer}: {e}");
            return None;
        }
    };
    let mut buf = Vec::with_capacity(1024);
    let mut served = 0;
    loop {
        let idle_slot = (served > 0).then_some(&slot);
        let step = read_request(
            &mut stream,
            &mut buf,
            limits.http_head_max,
            deadline,
            idle_slot,
        );
        let (head, len, body, keep_alive) = match step {
            Ok(Step::Request {
                head,
                len,
                body,
                keep_alive,
            }) => (head, len, body, keep_alive),
            Ok(Step::Partial) | Err(ReadError::Closed | ReadError::Io) => return None,
            Err(ReadError::Timeout) if buf.is_empty() => return None,
            Err(ReadError::Timeout) => {
                let resp = Resp::error(408, "request_timeout", "the request head took too long");
                answer_and_close(stream, resp, limits);
                return None;
            }
            Ok(Step::TooLarge) => {
                let resp = Resp::error(431, "header_too_large", "the request head is too large");
                answer_and_close(stream, resp, limits);
                return None;
            }
            Ok(Step::Bad(why)) => {
                debug!("{peer}: bad request: {why}");
                answer_and_close(stream, Resp::error(400, "bad_request", why), limits);
                return None;
            }
        };
        buf.drain(..len);
        served += 1;
        // Behind a --trusted-proxy, the client is who its forwarding headers say.
        let remote = ctx.proxies.client(
            peer,
            head.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        );
        debug!(
            "{remote} {} {}",
            head.method,
            logsafe::escape(&query::redact(&head.target))
        );
        let head_only = head.method == "HEAD";
        match http::handle(&head, ctx.as_ref(), remote, side) {
            Action::Respond(resp) => {
                let keep = keep_alive
                    && resp.status < 500
                    && served < limits.http_max_requests
                    && !ctx.is_stopping();
                let write_by = Instant::now() + limits.write_timeout;
                if write_response(&mut stream, resp, head_only, !keep, write_by).is_err() {
                    return None;
                }
                if !keep {
                    close_lingering(stream, limits.close_timeout);
                    return None;
                }
                deadline = Instant::now() + limits.http_head_timeout;
            }
            // What follows the head of an upgrade is WebSocket frames: a body there
            // would be read as frames.
            Action::Upgrade { .. } if body != Body::None => {
                let resp = Resp::error(400, "bad_request", "an upgrade request has no body");
                answer_and_close(stream, resp, limits);
                return None;
            }
            Action::Upgrade { accept, admission } => {
                let token = ctx.session_token()?;
                stream.set_write_deadline(Instant::now() + limits.write_timeout);
                let switched = response::switching_protocols(&accept);
                match admission {
                    // The session writes the 101 itself, with `existing_peers`.
                    Ok(who) if slot.enter_session() => {
                        buf.shrink_to_fit();
                        return Some(Upgraded {
                            stream,
                            switched,
                            leftover: buf,
                            who,
                            remote,
                            token,
                            _slot: slot,
                        });
                    }
                    Ok(who) => {
                        info!(
                            "refused session {} in {} from {remote}: every session slot is busy",
                            who.peer, who.room
                        );
                        session::refuse(stream, &switched, ctx, CloseReason::ServerFull);
                    }
                    Err(refusal) => {
                        info!(
                            "refused session from {remote}: {}",
                            logsafe::escape(&refusal.detail)
                        );
                        session::refuse(stream, &switched, ctx, refusal.reason);
                    }
                }
                return None;
            }
        }
    }
}

/// The first byte the client sends, by `deadline` (`None`: nothing came).
fn first_byte(tcp: &TcpStream, deadline: Instant) -> Option<u8> {
    let left = deadline.saturating_duration_since(Instant::now());
    tcp.set_read_timeout(Some(left.max(Duration::from_millis(1))))
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
