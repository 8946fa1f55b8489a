//! One signaling session: one thread that owns its socket and its tungstenite codec.
//!
//! tiny_http's upgraded stream cannot be split (tiny_http#8), so the server owns the
//! `TcpStream` itself. The session thread waits in `ppoll(2)` for its socket (bytes
//! in, or room to write) *and* for the router: a message queued for the peer wakes the
//! thread with a thread-directed signal ([`crate::wake`]), so a relayed message goes
//! out while the thread was blocked waiting for its client, with no polling and no
//! second thread. All socket I/O is non-blocking per call (`MSG_DONTWAIT`); every
//! wait is a `ppoll` with the nearest deadline (idle timeout, next ping, write timeout).
//! Over TLS nothing changes here: [`crate::transport::Io`] hides rustls behind the
//! same non-blocking reads and writes.

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, SendTimeoutError, Sender, TrySendError};
use log::{debug, info};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Bytes, Error as WsError, Message, Utf8Bytes};

use crate::config::Limits;
use crate::metrics::Metrics;
use crate::protocol::{outbound, parse_inbound, CloseReason, ErrorCode, Inbound, PeerId, RoomId};
use crate::router::{Command, Envelope, Full, Mailbox, Reply, Text};
use crate::server::{SessionToken, Shared};
use crate::transport::{Io, Stream};
use crate::wake::{Parker, Waker};

/// How a session is told to end (the first reason wins; the thread is woken at once),
/// and whether its socket is refusing data right now.
pub struct Ctl {
    reason: OnceLock<CloseReason>,
    waker: Arc<Waker>,
    /// Set while the kernel's send buffer is full (the client is not reading);
    /// cleared as soon as the socket takes data again.
    socket_full: AtomicBool,
}

impl Ctl {
    pub fn close(&self, reason: CloseReason) {
        if self.reason.set(reason).is_ok() {
            self.waker.wake();
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
    out: Sender<Text>,
    ctl: Arc<Ctl>,
    metrics: Arc<Metrics>,
    /// How long a full queue may wait for a session whose socket still takes data.
    patience: Duration,
}

/// How often a sender waiting on a congested (but not stuck) peer re-checks it.
const CONGESTION_SLICE: Duration = Duration::from_millis(5);

impl Mailbox for SessionMailbox {
    /// A full queue alone does not make a slow consumer (PROTOCOL.md §5 asks for a
    /// full socket buffer *and* a full queue): while the socket takes data the session
    /// is merely behind, so the router waits for it (back-pressure on the senders,
    /// bounded by the write timeout). Only when the socket is full is the peer dropped.
    fn push(&self, text: Text) -> Result<(), Full> {
        let mut text = match self.out.try_send(text) {
            Ok(()) => {
                self.ctl.waker.wake();
                self.metrics.queue_len(self.out.len());
                return Ok(());
            }
            // The session is gone: its Leave is on the way.
            Err(TrySendError::Disconnected(_)) => return Ok(()),
            Err(TrySendError::Full(t)) => t,
        };
        self.ctl.waker.wake();
        let deadline = Instant::now() + self.patience;
        loop {
            if self.ctl.reason().is_some() {
                return Ok(()); // closing anyway: the message has nowhere to go
            }
            if self.ctl.socket_full() || Instant::now() >= deadline {
                return Err(Full);
            }
            // Short slices so that a socket filling up meanwhile is noticed quickly.
            match self.out.send_timeout(text, CONGESTION_SLICE) {
                Ok(()) => {
                    // The session may have drained the queue and parked meanwhile.
                    self.ctl.waker.wake();
                    self.metrics.queue_len(self.out.len());
                    return Ok(());
                }
                Err(SendTimeoutError::Disconnected(_)) => return Ok(()),
                Err(SendTimeoutError::Timeout(t)) => text = t,
            }
        }
    }

    fn close(&self, reason: CloseReason) {
        self.ctl.close(reason);
    }
}

fn would_block(e: &WsError) -> bool {
    matches!(e, WsError::Io(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted))
}

pub fn ws_config(limits: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(limits.read_buffer)
        .write_buffer_size(limits.write_buffer)
        // Room for one whole message on top of the coalescing buffer.
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

/// Runs a session on an upgraded connection, on the calling (connection) thread.
/// `leftover` holds bytes the client sent after its request head.
#[allow(clippy::too_many_arguments)]
pub fn run(
    stream: Stream,
    leftover: Vec<u8>,
    room: &str,
    peer: &str,
    remote: SocketAddr,
    shared: &Arc<Shared>,
    token: SessionToken,
    admit: Result<(), CloseReason>,
) {
    let _token = token;
    let limits = &shared.limits;
    let room = match RoomId::parse(room) {
        Ok(r) => r,
        Err(e) => {
            info!("refused session from {remote}: room_id {e}");
            return refuse(stream, shared, CloseReason::InvalidRoomId);
        }
    };
    let peer = match PeerId::parse(peer) {
        Ok(p) => p,
        Err(e) => {
            info!("refused session from {remote} in {room}: peer_id {e}");
            return refuse(stream, shared, CloseReason::InvalidPeerId);
        }
    };
    // Origin and token: refused before the router ever hears of the peer.
    if let Err(reason) = admit {
        return refuse(stream, shared, reason);
    }
    let parker = match Parker::for_current_thread() {
        Ok(p) => p,
        Err(e) => {
            log::warn!("cannot prepare session thread: {e}");
            return refuse(stream, shared, CloseReason::Internal);
        }
    };
    let (out_tx, out_rx) = bounded(limits.peer_queue);
    let ctl = Arc::new(Ctl {
        reason: OnceLock::new(),
        waker: parker.waker(),
        socket_full: AtomicBool::new(false),
    });
    let session = shared.next_session();
    let mailbox = SessionMailbox {
        out: out_tx,
        ctl: ctl.clone(),
        metrics: shared.metrics.clone(),
        patience: limits.write_timeout,
    };
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
        return refuse(stream, shared, CloseReason::GoingAway);
    }
    match reply_rx.recv() {
        Ok(Reply::Joined) => {}
        Ok(Reply::Refused(reason)) => {
            info!("refused {peer} in {room} from {remote}: {reason}");
            return refuse(stream, shared, reason);
        }
        Ok(_) | Err(_) => return refuse(stream, shared, CloseReason::Internal),
    }
    let started = Instant::now();
    let (stream, io) = stream.into_io(&shared.metrics);
    shared.metrics.session_opened();
    info!("session start room={room} peer={peer} remote={remote}");
    let mut session = Session {
        ws: WebSocketContext::from_partially_read(leftover, Role::Server, Some(ws_config(limits))),
        io,
        limits,
        shared,
        room: &room,
        peer: &peer,
        id: session,
        ctl: &ctl,
        parker: &parker,
        queue: out_rx,
        pending: None,
        relayed: Vec::with_capacity(RELAYED_STAMPS),
        unflushed: false,
        full_since: None,
        last_rx: started,
        rate: RateLimit::new(limits),
    };
    // From here on the router knows the peer: whatever happens, it must hear Leave.
    let leave = LeaveGuard {
        shared,
        room: &room,
        peer: &peer,
        session: session.id,
        ctl: &ctl,
    };
    let ended = session.serve();
    ctl.close(ended);
    drop(leave);
    let reason = ctl.reason().unwrap_or(ended);
    session.finish(&stream, reason);
    drop(session);
    // The thread may exit only once no router wake-up can be in flight.
    drop(parker);
    shared.metrics.session_closed(reason);
    info!(
        "session end room={room} peer={peer} remote={remote} duration={:.3}s reason={reason}",
        started.elapsed().as_secs_f64()
    );
}

/// Messages read from the socket per round before the outbound queue gets a turn.
const READ_BATCH: usize = 64;

/// Relayed messages whose latency is measured at one flush; beyond that many in one
/// round, the earlier ones are measured when they entered the write buffer.
const RELAYED_STAMPS: usize = 32;

struct Session<'a> {
    ws: WebSocketContext,
    io: Io<'a>,
    limits: &'a Limits,
    shared: &'a Shared,
    room: &'a RoomId,
    peer: &'a PeerId,
    id: u64,
    ctl: &'a Ctl,
    parker: &'a Parker,
    queue: Receiver<Text>,
    /// A message that did not fit in the write buffer yet (and when it was read, if
    /// it is a relayed one).
    pending: Option<(Message, Option<Instant>)>,
    /// When the relayed messages now in the write buffer were read from their senders
    /// (capacity fixed at start: measuring allocates nothing).
    relayed: Vec<Instant>,
    /// The write buffer holds bytes the socket has not taken.
    unflushed: bool,
    /// Since when the socket has refused data.
    full_since: Option<Instant>,
    last_rx: Instant,
    rate: RateLimit,
}

impl Session<'_> {
    fn ping_every(&self) -> Option<Duration> {
        Some(self.limits.ping_interval).filter(|d| !d.is_zero())
    }

    /// The session's life until a reason to end it.
    fn serve(&mut self) -> CloseReason {
        match self.serve_loop() {
            Err(reason) => reason,
            Ok(()) => CloseReason::Internal,
        }
    }

    fn serve_loop(&mut self) -> Result<(), CloseReason> {
        let mut next_ping = self.ping_every().map(|d| Instant::now() + d);
        loop {
            if let Some(reason) = self.ctl.reason() {
                return Err(reason);
            }
            let mut busy = self.pump_out()?;
            // A message that found the write buffer full waits in `pending`; once the
            // socket has taken the buffer it must go out now, not after the next event.
            busy |= self.pending.is_some() && !self.unflushed;
            busy |= self.pump_in()?;
            let now = Instant::now();
            if now.duration_since(self.last_rx) >= self.limits.idle_timeout {
                return Err(CloseReason::Timeout);
            }
            if let (Some(at), Some(every)) = (next_ping, self.ping_every()) {
                if now >= at {
                    next_ping = Some(now + every);
                    self.queue_message(Message::Ping(Bytes::new()))?;
                    busy = true;
                }
            }
            if busy {
                continue;
            }
            // Nothing to do: sleep until the socket, the router or a deadline needs us.
            self.parker.park();
            if !self.queue.is_empty() || self.ctl.reason().is_some() {
                self.parker.unpark();
                continue;
            }
            let mut wait = (self.last_rx + self.limits.idle_timeout).saturating_duration_since(now);
            if let Some(at) = next_ping {
                wait = wait.min(at.saturating_duration_since(now));
            }
            let mut events = libc::POLLIN;
            if self.unflushed {
                events |= libc::POLLOUT;
                if let Some(since) = self.full_since {
                    wait = wait
                        .min((since + self.limits.write_timeout).saturating_duration_since(now));
                }
            }
            self.parker.poll(self.io.fd(), events, wait);
            self.parker.unpark();
        }
    }

    /// Moves queued messages into the write buffer (frames coalesce there) and
    /// flushes what the socket takes. `true` if anything moved.
    fn pump_out(&mut self) -> Result<bool, CloseReason> {
        let mut moved = false;
        loop {
            let (msg, read_at) = match self.pending.take() {
                Some(p) => p,
                None => match self.queue.try_recv() {
                    Ok(text) => {
                        let read_at = text.read_at();
                        (Message::Text(text.into_frame()), read_at)
                    }
                    Err(_) => break,
                },
            };
            match self.ws.write(&mut self.io, msg) {
                Ok(()) => moved = true,
                Err(WsError::WriteBufferFull(m)) => {
                    self.pending = Some((*m, read_at));
                    break;
                }
                // Buffered; the socket is full for now.
                Err(e) if would_block(&e) => moved = true,
                Err(e) => return Err(write_error(e)),
            }
            if let Some(at) = read_at {
                if self.relayed.len() == self.relayed.capacity() {
                    self.observe_relayed();
                }
                self.relayed.push(at);
            }
        }
        let flushed = self.flush();
        self.observe_relayed();
        flushed?;
        Ok(moved)
    }

    /// The relayed messages written since the last call have been handed to the
    /// socket (or to the write buffer, if the socket is full): their latency ends now.
    fn observe_relayed(&mut self) {
        if self.relayed.is_empty() {
            return;
        }
        let now = Instant::now();
        for at in self.relayed.drain(..) {
            self.shared
                .metrics
                .relay_latency(now.saturating_duration_since(at));
        }
    }

    /// Flushes the write buffer as far as the socket takes it.
    fn flush(&mut self) -> Result<(), CloseReason> {
        match self.ws.flush(&mut self.io) {
            Ok(()) => {
                self.unflushed = false;
                self.full_since = None;
                self.ctl.socket_full.store(false, Ordering::Release);
                Ok(())
            }
            Err(e) if would_block(&e) => {
                self.unflushed = true;
                let since = *self.full_since.get_or_insert_with(Instant::now);
                self.ctl.socket_full.store(true, Ordering::Release);
                if since.elapsed() >= self.limits.write_timeout {
                    return Err(CloseReason::SlowConsumer);
                }
                Ok(())
            }
            Err(e) => Err(write_error(e)),
        }
    }

    /// Reads and handles what the socket has, up to a batch. `true` if anything came.
    fn pump_in(&mut self) -> Result<bool, CloseReason> {
        for n in 0..READ_BATCH {
            let msg = match self.ws.read(&mut self.io) {
                Ok(m) => m,
                Err(e) if would_block(&e) => return Ok(n > 0),
                // tungstenite has consumed the frame; like any bad message it only
                // earns an error (PROTOCOL.md §5: a bad message never ends the session).
                Err(WsError::Utf8(_)) => {
                    self.last_rx = Instant::now();
                    self.reject(ErrorCode::InvalidJson, "the text frame is not valid UTF-8")?;
                    continue;
                }
                Err(e) => return Err(read_error(e)),
            };
            let now = Instant::now();
            self.last_rx = now;
            self.handle(msg, now)?;
        }
        Ok(true)
    }

    /// `read_at`: when the frame was read (a relayed message carries it to its target).
    fn handle(&mut self, msg: Message, read_at: Instant) -> Result<(), CloseReason> {
        let data = matches!(msg, Message::Text(_) | Message::Binary(_));
        if data && !self.rate.allow() {
            if self.rate.strikes >= self.limits.rate_strikes {
                return Err(CloseReason::RateLimited);
            }
            return self.reject(
                ErrorCode::RateLimited,
                "rate limit exceeded: message dropped",
            );
        }
        match msg {
            Message::Text(text) => match parse_inbound(text.as_str(), self.peer) {
                Ok(Inbound::Ping) => {
                    self.queue_message(Message::Text(Utf8Bytes::from_static(outbound::PONG)))
                }
                Ok(Inbound::Relay {
                    kind,
                    target,
                    frame,
                }) => self.send_to_router(Command::Relay {
                    room: self.room.clone(),
                    from: self.peer.clone(),
                    session: self.id,
                    kind,
                    target,
                    text: Text::relayed(frame, read_at),
                }),
                Err(rejection) => {
                    debug!(
                        "{} in {}: {} {}",
                        self.peer, self.room, rejection.code, rejection.message
                    );
                    self.reject(rejection.code, &rejection.message)
                }
            },
            Message::Binary(_) => self.reject(
                ErrorCode::InvalidMessage,
                "binary frames are not supported: send JSON text frames",
            ),
            Message::Close(frame) => Err(CloseReason::ClientClosed(
                frame.map_or(1000, |f| u16::from(f.code)),
            )),
            // tungstenite queues the pong itself; the next flush sends it.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(()),
        }
    }

    fn reject(&mut self, code: ErrorCode, message: &str) -> Result<(), CloseReason> {
        self.shared.metrics.error_sent(code);
        self.queue_message(Message::text(outbound::error(code, message)))
    }

    /// Writes a message of the session's own (reply, ping) into the write buffer.
    fn queue_message(&mut self, msg: Message) -> Result<(), CloseReason> {
        match self.ws.write(&mut self.io, msg) {
            Ok(()) => Ok(()),
            Err(e) if would_block(&e) => {
                self.unflushed = true;
                Ok(())
            }
            // The client does not read even its own replies.
            Err(WsError::WriteBufferFull(_)) => Err(CloseReason::SlowConsumer),
            Err(e) => Err(write_error(e)),
        }
    }

    /// Sends a command to the router. When the router's queue is full the router may
    /// be waiting for *this* session's queue to drain, so keep draining it meanwhile.
    fn send_to_router(&mut self, cmd: Command<SessionMailbox>) -> Result<(), CloseReason> {
        let mut envelope = Envelope { cmd, reply: None };
        loop {
            match self.shared.router.try_send(envelope) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err(CloseReason::GoingAway),
                Err(TrySendError::Full(e)) => envelope = e,
            }
            self.pump_out()?;
            match self.shared.router.send_timeout(envelope, CONGESTION_SLICE) {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Disconnected(_)) => return Err(CloseReason::GoingAway),
                Err(SendTimeoutError::Timeout(e)) => envelope = e,
            }
        }
    }

    /// The closing handshake: what was queued, the error, the close frame, then a
    /// lingering close so unread input cannot turn the close frame into a reset.
    fn finish(&mut self, stream: &TcpStream, reason: CloseReason) {
        let deadline = Instant::now() + self.limits.close_timeout;
        let broken = matches!(
            reason,
            CloseReason::SlowConsumer | CloseReason::Disconnected
        );
        if !broken {
            if reason.error_code().is_some() {
                // Deliver what was queued before the close (peer_left, a last error...).
                let _ = self.pump_out();
                let (error, frame) = closing_messages(reason, &self.shared.metrics);
                if let Some(error) = error {
                    let _ = self.queue_message(error);
                }
                let _ = self.ws.close(&mut self.io, Some(frame));
            }
            // TLS: close_notify after the close frame.
            self.io.close_notify();
            // Flush (for a client's close this sends tungstenite's echoed reply).
            loop {
                match self.ws.flush(&mut self.io) {
                    Err(e) if would_block(&e) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        self.parker.poll(self.io.fd(), libc::POLLOUT, left);
                    }
                    _ => break,
                }
            }
        }
        let _ = stream.shutdown(Shutdown::Write);
        if matches!(
            reason,
            CloseReason::ClientClosed(_) | CloseReason::Disconnected
        ) {
            return;
        }
        let mut sink = [0u8; 512];
        loop {
            match self.io.read(&mut sink) {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted =>
                {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return;
                    }
                    self.parker.poll(self.io.fd(), libc::POLLIN, left);
                }
                Err(_) => return,
            }
        }
    }
}

/// The `error` message (when the reason has an error code) and the close frame that
/// end a session for `reason`; counts the error in the metrics.
fn closing_messages(reason: CloseReason, metrics: &Metrics) -> (Option<Message>, CloseFrame) {
    let error = reason.error_code().map(|code| {
        metrics.error_sent(code);
        Message::text(outbound::error(code, reason.message()))
    });
    let frame = CloseFrame {
        code: CloseCode::from(reason.close_code()),
        reason: reason.error_code().map_or("", |c| c.as_str()).into(),
    };
    (error, frame)
}

fn write_error(e: WsError) -> CloseReason {
    match e {
        WsError::WriteBufferFull(_) => CloseReason::SlowConsumer,
        _ => CloseReason::Disconnected,
    }
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

fn read_error(e: WsError) -> CloseReason {
    match e {
        WsError::Capacity(_) => CloseReason::MessageTooLarge,
        // WouldBlock never gets here (the caller waits for it); the idle timeout is
        // counted from the last frame, not from a socket timeout.
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

/// Ends a session that was never admitted: error message, close frame, lingering close.
pub fn refuse(mut stream: Stream, shared: &Shared, reason: CloseReason) {
    let limits = &shared.limits;
    shared.metrics.session_refused(reason);
    let _ = stream
        .tcp()
        .set_write_timeout(nonzero(limits.write_timeout));
    let mut ws = WebSocketContext::new(Role::Server, Some(ws_config(limits)));
    let (error, frame) = closing_messages(reason, &shared.metrics);
    if let Some(error) = error {
        let _ = ws.write(&mut stream, error);
    }
    let _ = ws.close(&mut stream, Some(frame));
    let _ = ws.flush(&mut stream);
    stream.close_notify();
    let _ = stream.tcp().shutdown(Shutdown::Write);
    let deadline = Instant::now() + limits.close_timeout;
    let mut sink = [0u8; 1024];
    while let Ok(1..) = stream.read_before(&mut sink, deadline) {}
}
