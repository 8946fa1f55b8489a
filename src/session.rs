//! One signaling session: a reader thread and a writer thread over one TCP socket.
//!
//! tiny_http's upgraded stream cannot be split (tiny_http#8), so the server owns the
//! `TcpStream` itself and gives each half its own thread:
//!
//! * the **reader** (the connection thread) blocks in `read`, validates frames and sends
//!   relays to the router;
//! * the **writer** blocks on the peer's bounded outbound queue (fed by the router) and
//!   writes to the socket, so a relayed message goes out while the reader is blocked.
//!
//! Each half has its own tungstenite codec; the reader's never writes to the socket
//! (pongs and close replies are forwarded to the writer instead).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, Receiver, SendTimeoutError, Sender, TrySendError};
use log::{debug, info, warn};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Bytes, Error as WsError, Message};

use crate::config::Limits;
use crate::protocol::{outbound, parse_inbound, CloseReason, ErrorCode, Inbound, PeerId, RoomId};
use crate::router::{Command, Envelope, Full, Mailbox, Reply, Text};
use crate::server::{SessionToken, Shared};

/// What the writer sends besides text.
pub enum Outbound {
    Text(Text),
    Pong(Bytes),
}

/// How a session is told to end (the first reason wins; the writer is woken at once),
/// and whether its socket is refusing data right now.
pub struct Ctl {
    reason: OnceLock<CloseReason>,
    wake: Sender<()>,
    /// Set by the writer while the kernel's send buffer is full (the client is not
    /// reading); cleared as soon as the socket takes data again.
    socket_full: AtomicBool,
}

impl Ctl {
    pub fn close(&self, reason: CloseReason) {
        if self.reason.set(reason).is_ok() {
            let _ = self.wake.try_send(());
        }
    }

    fn reason(&self) -> Option<CloseReason> {
        self.reason.get().copied()
    }

    fn socket_full(&self) -> bool {
        self.socket_full.load(Ordering::Acquire)
    }
}

/// The router's handle on a session: the bounded outbound queue and the close switch.
#[derive(Clone)]
pub struct SessionMailbox {
    out: Sender<Outbound>,
    ctl: Arc<Ctl>,
    /// How long a full queue may wait for a writer whose socket still takes data.
    patience: Duration,
}

impl SessionMailbox {
    /// Queues `msg` for the writer. A full queue alone does not make a slow consumer
    /// (PROTOCOL.md §5 asks for a full socket buffer *and* a full queue): while the
    /// socket takes data the writer is merely behind, so the caller waits for it, which
    /// is back-pressure on the senders. Only when the writer reports the socket full,
    /// or it has not caught up within the write timeout, is the peer given up.
    fn offer(&self, msg: Outbound) -> Result<(), Full> {
        let mut msg = match self.out.try_send(msg) {
            Ok(()) => return Ok(()),
            // The writer is gone: the session is ending and its Leave is on the way.
            Err(TrySendError::Disconnected(_)) => return Ok(()),
            Err(TrySendError::Full(m)) => m,
        };
        let deadline = Instant::now() + self.patience;
        loop {
            if self.ctl.reason().is_some() {
                return Ok(()); // closing anyway: the message has nowhere to go
            }
            if self.ctl.socket_full() || Instant::now() >= deadline {
                return Err(Full);
            }
            // Short slices so that a socket filling up meanwhile is noticed quickly.
            match self.out.send_timeout(msg, CONGESTION_SLICE) {
                Ok(()) | Err(SendTimeoutError::Disconnected(_)) => return Ok(()),
                Err(SendTimeoutError::Timeout(m)) => msg = m,
            }
        }
    }
}

/// How often a sender waiting on a congested (but not stuck) peer re-checks it.
const CONGESTION_SLICE: Duration = Duration::from_millis(5);

impl Mailbox for SessionMailbox {
    fn push(&self, text: Text) -> Result<(), Full> {
        self.offer(Outbound::Text(text))
    }

    fn close(&self, reason: CloseReason) {
        self.ctl.close(reason);
    }
}

/// The reader's socket half: reads from the socket, swallows tungstenite's automatic
/// replies (the writer sends those), so the two threads never interleave bytes.
struct ReadHalf(TcpStream);

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for ReadHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The writer's socket half. It sends without blocking (`MSG_DONTWAIT`, per call, so
/// the reader's half stays blocking); when the kernel's send buffer is full it marks
/// the session's socket full, which is what makes a full queue a slow consumer, and
/// waits for the socket to drain, at most `timeout`.
struct WriteHalf<'a> {
    stream: TcpStream,
    ctl: &'a Ctl,
    timeout: Duration,
}

impl Write for WriteHalf<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let fd = self.stream.as_raw_fd();
        loop {
            // SAFETY: `fd` is an open socket owned by `self.stream` for the whole call,
            // and `buf` is valid for `buf.len()` bytes.
            let n = unsafe {
                libc::send(
                    fd,
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if let Ok(n) = usize::try_from(n) {
                return Ok(n);
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => {
                    self.ctl.socket_full.store(true, Ordering::Release);
                    if !wait_writable(fd, self.timeout)? {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    self.ctl.socket_full.store(false, Ordering::Release);
                }
                _ => return Err(err),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for WriteHalf<'_> {
    /// tungstenite's write path needs `Read` on the stream type but never reads.
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }
}

/// Blocks until `fd` can take data (or has failed: the next send reports it), or
/// `timeout` passes (`false`).
fn wait_writable(fd: std::os::fd::RawFd, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        match n {
            0 => return Ok(false),
            n if n > 0 => return Ok(true),
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
}

pub fn ws_config(limits: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(limits.read_buffer)
        .write_buffer_size(limits.write_buffer)
        // Room for one whole message on top of the coalescing buffer, so a queued
        // frame never bounces off the limit.
        .max_write_buffer_size(limits.write_buffer + limits.max_message_size + 1024)
        .max_message_size(Some(limits.max_message_size))
        .max_frame_size(Some(limits.max_message_size))
}

/// Token bucket per session (PROTOCOL.md §5 `rate_limited`).
struct RateLimit {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    strikes: u32,
}

impl RateLimit {
    fn new(limits: &Limits) -> Self {
        RateLimit {
            per_sec: f64::from(limits.rate_per_sec),
            burst: f64::from(limits.rate_burst),
            tokens: f64::from(limits.rate_burst),
            last: Instant::now(),
            strikes: 0,
        }
    }

    /// `true`: the message may pass.
    fn allow(&mut self) -> bool {
        if self.per_sec <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.per_sec;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.strikes = 0;
            true
        } else {
            self.strikes += 1;
            false
        }
    }
}

/// Runs a session on an upgraded connection; returns when both threads are done or
/// handed off. `leftover` holds bytes the client sent after its request head.
pub fn run(
    stream: TcpStream,
    leftover: Vec<u8>,
    room: &str,
    peer: &str,
    remote: SocketAddr,
    shared: &Arc<Shared>,
    token: SessionToken,
) {
    let limits = &shared.limits;
    let room = match RoomId::parse(room) {
        Ok(r) => r,
        Err(e) => {
            info!("refused session from {remote}: room_id {e}");
            return refuse(stream, limits, CloseReason::InvalidRoomId);
        }
    };
    let peer = match PeerId::parse(peer) {
        Ok(p) => p,
        Err(e) => {
            info!("refused session from {remote} in {room}: peer_id {e}");
            return refuse(stream, limits, CloseReason::InvalidPeerId);
        }
    };
    let (out_tx, out_rx) = bounded(limits.peer_queue);
    let (wake_tx, wake_rx) = bounded(1);
    let ctl = Arc::new(Ctl {
        reason: OnceLock::new(),
        wake: wake_tx,
        socket_full: AtomicBool::new(false),
    });
    let session = shared.next_session();
    let mailbox = SessionMailbox {
        out: out_tx,
        ctl: ctl.clone(),
        patience: limits.write_timeout,
    };
    let own = mailbox.clone();
    let (reply_tx, reply_rx) = bounded(1);
    let join = Envelope {
        cmd: Command::Join {
            room: room.clone(),
            peer: peer.clone(),
            session,
            mailbox,
        },
        reply: Some(reply_tx),
    };
    if shared.router.send(join).is_err() {
        return refuse(stream, limits, CloseReason::GoingAway);
    }
    match reply_rx.recv() {
        Ok(Reply::Joined) => {}
        Ok(Reply::Refused(reason)) => {
            info!("refused {peer} in {room} from {remote}: {reason}");
            return refuse(stream, limits, reason);
        }
        Ok(_) | Err(_) => return refuse(stream, limits, CloseReason::Internal),
    }
    let started = Instant::now();
    info!("session start room={room} peer={peer} remote={remote}");
    // From here on the router knows the peer: whatever happens, it must hear Leave.
    let leave = LeaveGuard {
        shared,
        room: &room,
        peer: &peer,
        session,
        ctl: &ctl,
    };
    let (done_tx, done_rx) = bounded::<()>(0);
    let writer = match stream.try_clone() {
        Ok(ws) => {
            let ctl = ctl.clone();
            let limits = limits.clone();
            let token = token.clone();
            std::thread::Builder::new()
                .name("ws-writer".into())
                .stack_size(shared.limits.writer_stack)
                .spawn(move || {
                    let _token = token;
                    write_loop(ws, &limits, out_rx, wake_rx, &ctl, done_rx)
                })
                .map_err(|e| warn!("cannot start writer thread: {e}"))
                .ok()
        }
        Err(e) => {
            warn!("cannot clone socket: {e}");
            None
        }
    };
    if writer.is_none() {
        ctl.close(CloseReason::Internal);
        let _ = stream.shutdown(Shutdown::Both);
    } else {
        read_loop(
            &stream, leftover, limits, &room, &peer, session, shared, &own,
        );
    }
    drop(leave);
    drop(done_tx);
    let reason = ctl.reason().unwrap_or(CloseReason::Disconnected);
    info!(
        "session end room={room} peer={peer} remote={remote} duration={:.3}s reason={reason}",
        started.elapsed().as_secs_f64()
    );
}

/// Tells the router the session is over, even if the reader panicked.
struct LeaveGuard<'a> {
    shared: &'a Shared,
    room: &'a RoomId,
    peer: &'a PeerId,
    session: u64,
    ctl: &'a Ctl,
}

impl Drop for LeaveGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.ctl.close(CloseReason::Internal);
        }
        let _ = self.shared.router.send(Envelope {
            cmd: Command::Leave {
                room: self.room.clone(),
                peer: self.peer.clone(),
                session: self.session,
            },
            reply: None,
        });
    }
}

#[allow(clippy::too_many_arguments)]
fn read_loop(
    stream: &TcpStream,
    leftover: Vec<u8>,
    limits: &Limits,
    room: &RoomId,
    peer: &PeerId,
    session: u64,
    shared: &Shared,
    own: &SessionMailbox,
) {
    let ctl = &*own.ctl;
    let Ok(clone) = stream.try_clone() else {
        ctl.close(CloseReason::Internal);
        return;
    };
    let mut half = ReadHalf(clone);
    if let Err(e) = half.0.set_read_timeout(nonzero(limits.idle_timeout)) {
        warn!("set_read_timeout: {e}");
    }
    let mut ws =
        WebSocketContext::from_partially_read(leftover, Role::Server, Some(ws_config(limits)));
    let mut rate = RateLimit::new(limits);
    // Replies to this client go through its own queue, with the same slow-consumer rule.
    let reply = |msg: Outbound| own.offer(msg).map_err(|Full| CloseReason::SlowConsumer);
    let reject = |code: ErrorCode, message: &str| {
        reply(Outbound::Text(outbound::error(code, message).into()))
    };
    let ended: CloseReason = loop {
        if ctl.reason().is_some() {
            // The router or the writer ended the session; wait for the client's close
            // reply (or the writer's shutdown) to finish the handshake.
            match ws.read(&mut half) {
                Ok(Message::Close(_)) | Err(_) => break CloseReason::Disconnected,
                Ok(_) => continue,
            }
        }
        let msg = match ws.read(&mut half) {
            Ok(m) => m,
            // tungstenite has consumed the frame; like any bad message it only earns an
            // error (PROTOCOL.md §5: a bad message never closes the session).
            Err(WsError::Utf8(_)) => {
                if let Err(r) = reject(ErrorCode::InvalidJson, "the text frame is not valid UTF-8")
                {
                    break r;
                }
                continue;
            }
            Err(e) => break read_error(e),
        };
        let data = matches!(msg, Message::Text(_) | Message::Binary(_));
        if data && !rate.allow() {
            if rate.strikes >= limits.rate_strikes {
                break CloseReason::RateLimited;
            }
            if let Err(r) = reject(
                ErrorCode::RateLimited,
                "rate limit exceeded: message dropped",
            ) {
                break r;
            }
            continue;
        }
        let result = match msg {
            Message::Text(text) => match parse_inbound(text.as_str(), peer) {
                Ok(Inbound::Ping) => reply(Outbound::Text(Text::from_static(outbound::PONG))),
                Ok(Inbound::Relay {
                    kind,
                    target,
                    frame,
                }) => {
                    let cmd = Command::Relay {
                        room: room.clone(),
                        from: peer.clone(),
                        session,
                        kind,
                        target,
                        text: frame.into(),
                    };
                    // Blocks only while the router's queue is full: back-pressure on
                    // this one client, never on the router.
                    shared
                        .router
                        .send(Envelope { cmd, reply: None })
                        .map_err(|_| CloseReason::GoingAway)
                }
                Err(rejection) => {
                    debug!("{peer} in {room}: {} {}", rejection.code, rejection.message);
                    reject(rejection.code, &rejection.message)
                }
            },
            Message::Binary(_) => reject(
                ErrorCode::InvalidMessage,
                "binary frames are not supported: send JSON text frames",
            ),
            Message::Ping(payload) => reply(Outbound::Pong(payload)),
            Message::Close(frame) => {
                let code = frame.map_or(1000, |f| u16::from(f.code));
                break CloseReason::ClientClosed(code);
            }
            Message::Pong(_) | Message::Frame(_) => Ok(()),
        };
        if let Err(reason) = result {
            break reason;
        }
    };
    let client_done = matches!(
        ended,
        CloseReason::ClientClosed(_) | CloseReason::Disconnected
    );
    ctl.close(ended);
    if !client_done {
        // Lingering close: keep reading (and discarding) until the client has seen our
        // close frame and hung up, so unread input does not turn our close into a reset.
        let _ = half.0.set_read_timeout(nonzero(limits.close_timeout));
        let deadline = Instant::now() + limits.close_timeout;
        let mut sink = [0u8; 1024];
        while Instant::now() < deadline {
            match half.0.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

fn read_error(e: WsError) -> CloseReason {
    match e {
        WsError::Capacity(_) => CloseReason::MessageTooLarge,
        WsError::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            CloseReason::Timeout
        }
        WsError::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake)
        | WsError::ConnectionClosed
        | WsError::AlreadyClosed
        | WsError::Io(_) => CloseReason::Disconnected,
        _ => CloseReason::ProtocolError,
    }
}

fn nonzero(d: Duration) -> Option<Duration> {
    Some(d.max(Duration::from_millis(1)))
}

/// The writer thread: drains the outbound queue into the socket, sends pings, and
/// performs the closing handshake.
fn write_loop(
    stream: TcpStream,
    limits: &Limits,
    out: Receiver<Outbound>,
    wake: Receiver<()>,
    ctl: &Ctl,
    reader_done: Receiver<()>,
) {
    let mut stream = WriteHalf {
        stream,
        ctl,
        timeout: limits.write_timeout,
    };
    let mut ws = WebSocketContext::new(Role::Server, Some(ws_config(limits)));
    // A zero interval turns pings off (the idle timeout alone then applies).
    let ping_every = Some(limits.ping_interval).filter(|d| !d.is_zero());
    let mut next_ping = ping_every.map(|d| Instant::now() + d);
    let failed: Option<CloseReason> = loop {
        let now = Instant::now();
        if let (Some(every), Some(at)) = (ping_every, next_ping) {
            if now >= at {
                next_ping = Some(now + every);
                if let Err(e) = send(&mut ws, &mut stream, Message::Ping(Bytes::new()), true) {
                    break Some(e);
                }
            }
        }
        // Without pings the writer sleeps until a message or a close arrives.
        let idle = next_ping.map_or(Duration::from_secs(86_400), |at| {
            at.saturating_duration_since(now)
        });
        select! {
            recv(wake) -> _ => break None,
            recv(out) -> msg => {
                let Ok(msg) = msg else { break None };
                if let Err(e) = write_batch(&mut ws, &mut stream, msg, &out) {
                    break Some(e);
                }
            },
            default(idle) => {},
        }
    };
    if let Some(reason) = failed {
        ctl.close(reason);
    }
    let reason = ctl.reason().unwrap_or(CloseReason::Internal);
    let writable = failed.is_none() && reason != CloseReason::SlowConsumer;
    if writable {
        // Deliver what was queued before the close (peer_left, a last error...).
        while let Ok(msg) = out.try_recv() {
            if write_one(&mut ws, &mut stream, msg).is_err() {
                break;
            }
        }
    }
    if failed.is_none() && reason != CloseReason::Disconnected {
        if let Some(code) = reason.error_code() {
            let text = outbound::error(code, reason.message());
            let _ = ws.write(&mut stream, Message::text(text));
        }
        let reason_text = reason.error_code().map_or("", |c| c.as_str());
        let frame = CloseFrame {
            code: CloseCode::from(reason.close_code()),
            reason: reason_text.into(),
        };
        let _ = ws.close(&mut stream, Some(frame));
        let _ = ws.flush(&mut stream);
    }
    let _ = stream.stream.shutdown(Shutdown::Write);
    // Nothing more will be written: a sender waiting on a full queue must not wait here.
    drop(out);
    // Give the client the close timeout to answer; then cut the reader loose.
    if let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
        reader_done.recv_timeout(limits.close_timeout)
    {
        let _ = stream.stream.shutdown(Shutdown::Both);
    }
}

fn write_one(
    ws: &mut WebSocketContext,
    stream: &mut WriteHalf<'_>,
    msg: Outbound,
) -> Result<(), CloseReason> {
    let msg = match msg {
        Outbound::Text(t) => Message::Text(t),
        Outbound::Pong(p) => Message::Pong(p),
    };
    send(ws, stream, msg, false)
}

/// Writes `first` and whatever else is already queued, then flushes once: a burst of
/// candidates leaves in as few syscalls as the write buffer allows.
fn write_batch(
    ws: &mut WebSocketContext,
    stream: &mut WriteHalf<'_>,
    first: Outbound,
    out: &Receiver<Outbound>,
) -> Result<(), CloseReason> {
    write_one(ws, stream, first)?;
    for _ in 0..64 {
        match out.try_recv() {
            Ok(msg) => write_one(ws, stream, msg)?,
            Err(_) => break,
        }
    }
    ws.flush(stream).map_err(write_error)
}

fn send(
    ws: &mut WebSocketContext,
    stream: &mut WriteHalf<'_>,
    msg: Message,
    flush: bool,
) -> Result<(), CloseReason> {
    ws.write(stream, msg).map_err(write_error)?;
    if flush {
        ws.flush(stream).map_err(write_error)?;
    }
    Ok(())
}

fn write_error(e: WsError) -> CloseReason {
    match e {
        WsError::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            CloseReason::SlowConsumer
        }
        WsError::WriteBufferFull(_) => CloseReason::SlowConsumer,
        _ => CloseReason::Disconnected,
    }
}

/// Ends a session that was never admitted: error message, close frame, lingering close.
pub fn refuse(mut stream: TcpStream, limits: &Limits, reason: CloseReason) {
    let _ = stream.set_write_timeout(nonzero(limits.write_timeout));
    let mut ws = WebSocketContext::new(Role::Server, Some(ws_config(limits)));
    if let Some(code) = reason.error_code() {
        let _ = ws.write(
            &mut stream,
            Message::text(outbound::error(code, reason.message())),
        );
    }
    let frame = CloseFrame {
        code: CloseCode::from(reason.close_code()),
        reason: reason.error_code().map_or("", |c| c.as_str()).into(),
    };
    let _ = ws.close(&mut stream, Some(frame));
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(nonzero(limits.close_timeout));
    let deadline = Instant::now() + limits.close_timeout;
    let mut sink = [0u8; 1024];
    while Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}
