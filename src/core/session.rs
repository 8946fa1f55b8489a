//! One signaling session's rules, without a socket: bytes and `now` in; bytes to
//! write, commands for the router, the close and the next deadline out.
//!
//! The session owns the WebSocket codec (tungstenite's, fed through an in-memory
//! adapter) and one output buffer. It decides rate limits (PROTOCOL.md §5
//! `rate_limited`, 4429), the idle timeout (4408), the ping schedule, size limits
//! (1009), back-pressure (it stops reading its client while its output is over
//! `--write-buffer`, and is a slow consumer when the socket refuses data for
//! `--write-timeout`), and the closing handshake: queued messages, `error`, close
//! frame, TLS `close_notify`, half-close, then a bounded linger that keeps unread
//! input from turning the close into a reset. Its driver
//! (`crate::driver::session`) only moves bytes and waits.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::error::ProtocolError;
use tungstenite::protocol::{Role, WebSocketContext};
use tungstenite::{Bytes, Error as WsError, Message, Utf8Bytes};

pub use super::codec::{closing_messages, ws_config};
use super::codec::{Dry, Duplex};
use super::rate::RateLimit;
use super::router::{Command, SessionId, Text};
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::protocol::{outbound, parse_inbound, CloseReason, ErrorCode, Inbound, PeerId, RoomId};

/// Messages read per call before the driver gets a turn (to write, to take its queue).
const READ_BATCH: usize = 64;

/// Relayed messages in the output buffer whose latency is measured when they reach
/// the socket; beyond that many, the oldest is measured when the next one comes.
const RELAYED_STAMPS: usize = 32;

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// A reason to close is decided; what is queued for the peer goes out first.
    Sealing(CloseReason),
    /// Writing what is left (the `error`, the close frame); then `close_notify`.
    Flushing {
        reason: CloseReason,
        deadline: Instant,
        notified: bool,
    },
    /// The driver half-closes the socket, then lingers or is done.
    Shutdown {
        reason: CloseReason,
        deadline: Instant,
        linger: bool,
    },
    /// Discarding input until the client hangs up or the deadline passes.
    Lingering {
        reason: CloseReason,
        deadline: Instant,
    },
    Done(CloseReason),
}

/// One session's state.
pub struct Session {
    id: SessionId,
    room: RoomId,
    peer: PeerId,
    limits: Limits,
    metrics: Arc<Metrics>,
    codec: WebSocketContext,
    /// Bytes for the socket; `out[sent..]` is still to be written.
    out: Vec<u8>,
    sent: usize,
    /// End offsets in `out` of relayed messages, and when their senders read them.
    relayed: VecDeque<(usize, Instant)>,
    phase: Phase,
    commands: VecDeque<Command>,
    rate: RateLimit,
    last_rx: Instant,
    next_ping: Option<Instant>,
    /// Since when the socket (or TLS) has refused data.
    blocked_since: Option<Instant>,
    /// The router holds this peer's sends back (its target is behind).
    paused: bool,
    /// Whether the client's bytes have reached the codec yet. Until then the codec
    /// has no read buffer (`--read-buffer` bytes per session): many peers join and
    /// then only listen, and their buffers would be memory for nothing.
    heard: bool,
    /// Bytes the codec has taken from the client, and what the messages it returned
    /// take on the wire as single minimal frames (see `recycle`).
    rx_read: u64,
    rx_framed: u64,
    /// A pong came: once the codec holds nothing, drop its read buffer.
    recycle: bool,
    /// Give the output buffer back once it is empty (after the preface's write).
    release_out: bool,
}

impl Session {
    /// A session admitted at `now`; `leftover` holds what the client sent after its
    /// request head.
    pub fn new(
        id: SessionId,
        room: RoomId,
        peer: PeerId,
        limits: &Limits,
        metrics: Arc<Metrics>,
        leftover: Vec<u8>,
        now: Instant,
    ) -> Session {
        let every = Some(limits.ping_interval).filter(|d| !d.is_zero());
        // No read buffer until the first read (see `hear`).
        let heard = !leftover.is_empty();
        let leftover_len = leftover.len() as u64;
        Session {
            id,
            room,
            peer,
            codec: codec(leftover, limits, heard),
            heard,
            rx_read: leftover_len,
            rx_framed: 0,
            recycle: false,
            release_out: false,
            limits: limits.clone(),
            metrics,
            out: Vec::new(),
            sent: 0,
            relayed: VecDeque::new(),
            phase: Phase::Open,
            commands: VecDeque::new(),
            rate: RateLimit::new(limits.rate_per_sec, limits.rate_burst, now),
            last_rx: now,
            next_ping: every.map(|d| now + d),
            blocked_since: None,
            paused: false,
        }
    }

    /// Bytes that go out before any frame still to come, while the output is empty:
    /// the upgrade's `101` response (so that it leaves in one write with the first
    /// message), or what the router wrote through the gate only in part. Once written,
    /// the buffer goes: most peers only listen, and it would stay as idle memory.
    pub fn preface(&mut self, bytes: Vec<u8>) {
        debug_assert!(self.out.is_empty(), "the preface comes first");
        self.out = bytes;
        self.release_out = true;
    }

    pub fn id(&self) -> SessionId {
        self.id
    }

    pub fn room(&self) -> &RoomId {
        &self.room
    }

    pub fn peer(&self) -> &PeerId {
        &self.peer
    }

    fn backlog(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Whether the driver should hand over queued messages now.
    pub fn wants_mailbox(&self) -> bool {
        match self.phase {
            Phase::Open => self.backlog() < self.limits.write_buffer,
            Phase::Sealing(_) => true,
            _ => false,
        }
    }

    /// Whether the driver should read the client's bytes now.
    pub fn wants_read(&self) -> bool {
        match self.phase {
            Phase::Open => !self.paused && self.backlog() < self.limits.write_buffer,
            Phase::Lingering { .. } => true,
            _ => false,
        }
    }

    /// The socket refuses data and the output buffer takes nothing more: with a
    /// backlog in the router, this peer is a slow consumer.
    pub fn stalled(&self) -> bool {
        self.blocked_since.is_some() && !self.wants_mailbox()
    }

    /// Whether the driver should wait for the socket to take data.
    pub fn is_blocked(&self) -> bool {
        self.blocked_since.is_some()
    }

    /// The router paused (or resumed) reading from this peer.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    /// A message from the router (a relay, an announcement, an error reply).
    pub fn deliver(&mut self, text: Text, now: Instant) {
        if !matches!(self.phase, Phase::Open | Phase::Sealing(_)) {
            return;
        }
        let read_at = text.read_at();
        self.write(Message::Text(text.into_frame()), now);
        if let Some(at) = read_at {
            if self.relayed.len() == RELAYED_STAMPS {
                if let Some((_, oldest)) = self.relayed.pop_front() {
                    self.metrics
                        .relay_latency(now.saturating_duration_since(oldest));
                }
            }
            self.relayed.push_back((self.out.len(), at));
        }
    }

    /// The driver found the queue empty: a pending close can go out now.
    pub fn mailbox_empty(&mut self, now: Instant) {
        if let Phase::Sealing(reason) = self.phase {
            let (error, frame) = closing_messages(reason);
            if let (Some(error), Some(code)) = (error, reason.error_code()) {
                self.metrics.error_sent(code);
                self.write(error, now);
            }
            let mut dry = Dry;
            let (codec, mut io) = self.duplex(&mut dry);
            let _ = codec.close(&mut io, Some(frame));
            self.phase = Phase::Flushing {
                reason,
                deadline: now + self.limits.close_timeout,
                notified: false,
            };
        }
    }

    /// Ends the session for `reason` (the first reason wins).
    pub fn close(&mut self, reason: CloseReason, now: Instant) {
        if !matches!(self.phase, Phase::Open) {
            return;
        }
        let deadline = now + self.limits.close_timeout;
        self.phase = match reason {
            CloseReason::Disconnected => Phase::Shutdown {
                reason,
                deadline,
                linger: false,
            },
            // Nothing more can be written to a client that does not read.
            CloseReason::SlowConsumer => Phase::Shutdown {
                reason,
                deadline,
                linger: true,
            },
            CloseReason::ClientClosed(_) => {
                // tungstenite has queued the echo of the client's close frame.
                let mut dry = Dry;
                let (codec, mut io) = self.duplex(&mut dry);
                let _ = codec.flush(&mut io);
                Phase::Flushing {
                    reason,
                    deadline,
                    notified: false,
                }
            }
            _ => Phase::Sealing(reason),
        };
    }

    /// The reason, once the session is over and its socket may be dropped.
    pub fn finished(&self) -> Option<CloseReason> {
        match self.phase {
            Phase::Done(reason) => Some(reason),
            _ => None,
        }
    }

    /// Why the session is ending, as soon as that is decided.
    pub fn closing(&self) -> Option<CloseReason> {
        match self.phase {
            Phase::Open => None,
            Phase::Sealing(reason)
            | Phase::Flushing { reason, .. }
            | Phase::Shutdown { reason, .. }
            | Phase::Lingering { reason, .. }
            | Phase::Done(reason) => Some(reason),
        }
    }

    /// Bytes to write to the socket.
    pub fn pending(&self) -> &[u8] {
        match self.phase {
            Phase::Open | Phase::Sealing(_) | Phase::Flushing { .. } => &self.out[self.sent..],
            _ => &[],
        }
    }

    /// The socket took `n` bytes of [`Session::pending`].
    pub fn written(&mut self, n: usize, now: Instant) {
        self.sent = (self.sent + n).min(self.out.len());
        while let Some(&(end, at)) = self.relayed.front() {
            if end > self.sent {
                break;
            }
            self.relayed.pop_front();
            self.metrics
                .relay_latency(now.saturating_duration_since(at));
        }
        if self.sent == self.out.len() {
            self.sent = 0;
            self.out.clear();
            // A burst may have grown the buffer far beyond what an idle peer needs.
            if std::mem::take(&mut self.release_out)
                || self.out.capacity() > 4 * self.limits.write_buffer.max(4096)
            {
                self.out = Vec::new();
            }
        }
    }

    /// The socket refuses data for now.
    pub fn write_blocked(&mut self, now: Instant) {
        self.blocked_since.get_or_insert(now);
    }

    /// Everything pending (TLS records too) has reached the socket.
    pub fn write_flushed(&mut self, now: Instant) {
        self.blocked_since = None;
        if let Phase::Flushing {
            reason,
            deadline,
            notified: true,
        } = self.phase
        {
            if self.backlog() == 0 {
                let linger = !matches!(reason, CloseReason::ClientClosed(_));
                self.phase = Phase::Shutdown {
                    reason,
                    deadline: deadline.max(now),
                    linger,
                };
            }
        }
    }

    /// Writing failed: the connection is gone.
    pub fn write_failed(&mut self, now: Instant) {
        match self.phase {
            Phase::Open => self.close(CloseReason::Disconnected, now),
            Phase::Sealing(reason) | Phase::Flushing { reason, .. } => {
                self.phase = Phase::Shutdown {
                    reason,
                    deadline: now,
                    linger: false,
                }
            }
            _ => {}
        }
    }

    /// The socket reported an error or a hang-up while the session was not reading.
    pub fn hung_up(&mut self, now: Instant) {
        match self.phase {
            Phase::Lingering { reason, .. } => self.phase = Phase::Done(reason),
            _ => self.write_failed(now),
        }
    }

    /// Whether the driver should queue TLS `close_notify` now (after the close frame).
    pub fn wants_notify(&self) -> bool {
        matches!(
            self.phase,
            Phase::Flushing {
                notified: false,
                ..
            }
        ) && self.backlog() == 0
    }

    pub fn notified(&mut self) {
        if let Phase::Flushing { notified, .. } = &mut self.phase {
            *notified = true;
        }
    }

    /// Whether the driver should half-close the socket now.
    pub fn wants_shutdown(&self) -> bool {
        matches!(self.phase, Phase::Shutdown { .. })
    }

    /// The write half is shut.
    pub fn shutdown_done(&mut self, now: Instant) {
        if let Phase::Shutdown {
            reason,
            deadline,
            linger,
        } = self.phase
        {
            self.phase = if linger && now < deadline {
                Phase::Lingering { reason, deadline }
            } else {
                Phase::Done(reason)
            };
        }
    }

    /// The next command for the router.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When [`Session::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Open => {
                let mut at = self.last_rx + self.limits.idle_timeout;
                if let Some(ping) = self.next_ping {
                    at = at.min(ping);
                }
                if let Some(since) = self.blocked_since {
                    at = at.min(since + self.limits.write_timeout);
                }
                Some(at)
            }
            Phase::Flushing { deadline, .. }
            | Phase::Shutdown { deadline, .. }
            | Phase::Lingering { deadline, .. } => Some(deadline),
            Phase::Sealing(_) | Phase::Done(_) => None,
        }
    }

    /// Runs the rules that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Open => {
                if self
                    .blocked_since
                    .is_some_and(|since| now >= since + self.limits.write_timeout)
                {
                    return self.close(CloseReason::SlowConsumer, now);
                }
                if now >= self.last_rx + self.limits.idle_timeout {
                    if self.wants_read() {
                        return self.close(CloseReason::Timeout, now);
                    }
                    // Not reading (paused, or its own output is backed up): whatever
                    // the client sent waits unread, so this is not silence.
                    self.last_rx = now;
                }
                if let (Some(at), Some(every)) = (self.next_ping, self.ping_every()) {
                    if now >= at {
                        self.next_ping = Some(now + every);
                        self.write(Message::Ping(Bytes::new()), now);
                    }
                }
            }
            Phase::Flushing {
                reason, deadline, ..
            } if now >= deadline => {
                self.phase = Phase::Shutdown {
                    reason,
                    deadline,
                    linger: false,
                }
            }
            Phase::Lingering { reason, deadline } if now >= deadline => {
                self.phase = Phase::Done(reason)
            }
            _ => {}
        }
    }

    fn ping_every(&self) -> Option<Duration> {
        Some(self.limits.ping_interval).filter(|d| !d.is_zero())
    }

    fn duplex<'a, R>(&'a mut self, src: &'a mut R) -> (&'a mut WebSocketContext, Duplex<'a, R>) {
        (
            &mut self.codec,
            Duplex {
                src,
                out: &mut self.out,
                read: 0,
            },
        )
    }

    fn write(&mut self, msg: Message, _now: Instant) {
        let mut dry = Dry;
        let (codec, mut io) = self.duplex(&mut dry);
        // Writing into memory cannot block; after a close frame tungstenite refuses
        // more, which is what we want.
        let _ = codec.write(&mut io, msg);
    }

    /// Whether the client's bytes have reached the codec yet: until then a driver may
    /// wait for the socket to be readable before calling [`Session::read_from`], so
    /// that a peer that never speaks never gets a read buffer.
    pub fn heard(&self) -> bool {
        self.heard
    }

    /// Before the first read: a codec with the configured read buffer. Replacing it
    /// loses nothing while the session is open and nothing has been read: the codec
    /// has only written whole frames (into `out`, nothing of them kept), and its
    /// read side and close state are as new.
    fn hear(&mut self) {
        if self.heard {
            return;
        }
        self.heard = true;
        if matches!(self.phase, Phase::Open) {
            self.codec = codec(Vec::new(), &self.limits, true);
        }
    }

    /// After a pong (an idle client answering the ping, every `--ping-interval`),
    /// gives the read buffer back, as before the first read: a peer that listens
    /// for hours holds none, and whatever a burst grew it to is released too. At most
    /// once per pong, so a busy session does not pay for it.
    ///
    /// Only when the codec provably holds nothing: every byte it took from the client
    /// belongs to a message it returned. The wire size counted for a message is its
    /// smallest (one frame, minimal length), so the sums are equal only if nothing is
    /// buffered and no message is half-received; a client that fragments or pads
    /// its frames never matches again, and simply keeps its buffer.
    fn recycle(&mut self) {
        if !self.recycle
            || !self.heard
            || !matches!(self.phase, Phase::Open)
            || self.rx_read != self.rx_framed
        {
            return;
        }
        self.recycle = false;
        self.heard = false;
        // What a burst grew stays otherwise: the output buffer (up to four times
        // `--write-buffer`), the queues of timestamps and commands. Given back only
        // when empty, so nothing in them is lost.
        if self.out.is_empty() {
            self.out = Vec::new();
        }
        if self.relayed.is_empty() {
            self.relayed = VecDeque::new();
        }
        if self.commands.is_empty() {
            self.commands = VecDeque::new();
        }
        self.codec = codec(Vec::new(), &self.limits, false);
    }

    /// Reads what `src` has (it returns `WouldBlock` when dry), up to a batch of
    /// messages. Returns the number of bytes taken.
    pub fn read_from<R: Read>(&mut self, src: &mut R, now: Instant) -> usize {
        if let Phase::Lingering { reason, .. } = self.phase {
            return self.linger(src, reason);
        }
        self.hear();
        let mut taken = 0;
        for _ in 0..READ_BATCH {
            if !self.wants_read() {
                break;
            }
            let (codec, mut io) = self.duplex(src);
            let result = codec.read(&mut io);
            taken += io.read;
            self.rx_read += io.read as u64;
            match result {
                Ok(msg) => {
                    self.last_rx = now;
                    self.rx_framed += wire_len(&msg);
                    self.recycle |= matches!(msg, Message::Pong(_));
                    self.handle(msg, now);
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.recycle();
                    break;
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                // tungstenite has consumed the frame; like any bad message it only
                // earns an error (PROTOCOL.md §5: a bad message never ends the session).
                Err(WsError::Utf8(_)) => {
                    self.last_rx = now;
                    self.reject(
                        ErrorCode::InvalidJson,
                        "the text frame is not valid UTF-8",
                        now,
                    );
                }
                Err(e) => {
                    self.close(read_error(e), now);
                    break;
                }
            }
        }
        taken
    }

    fn linger<R: Read>(&mut self, src: &mut R, reason: CloseReason) -> usize {
        let mut sink = [0u8; 512];
        let mut taken = 0;
        loop {
            match src.read(&mut sink) {
                Ok(0) => {
                    self.phase = Phase::Done(reason);
                    return taken.max(1);
                }
                Ok(n) => taken += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return taken,
                Err(_) => {
                    self.phase = Phase::Done(reason);
                    return taken.max(1);
                }
            }
        }
    }

    /// One message from the client. Handling a message is public so the rules can be
    /// tested message by message.
    pub fn handle(&mut self, msg: Message, now: Instant) {
        let data = matches!(msg, Message::Text(_) | Message::Binary(_));
        if data && !self.rate.allow(now) {
            if self.rate.strikes() >= self.limits.rate_strikes {
                return self.close(CloseReason::RateLimited, now);
            }
            return self.reject(
                ErrorCode::RateLimited,
                "rate limit exceeded: message dropped",
                now,
            );
        }
        match msg {
            Message::Text(text) => match parse_inbound(text.as_str(), &self.peer) {
                Ok(Inbound::Ping) => {
                    self.write(Message::Text(Utf8Bytes::from_static(outbound::PONG)), now)
                }
                Ok(Inbound::Relay {
                    kind,
                    target,
                    frame,
                }) => self.commands.push_back(Command::Relay {
                    session: self.id,
                    kind,
                    target,
                    text: Text::relayed(frame, now, self.id),
                }),
                Err(rejection) => {
                    log::debug!(
                        "{} in {}: {} {}",
                        self.peer,
                        self.room,
                        rejection.code,
                        rejection.message
                    );
                    self.reject(rejection.code, &rejection.message, now)
                }
            },
            Message::Binary(_) => self.reject(
                ErrorCode::InvalidMessage,
                "binary frames are not supported: send JSON text frames",
                now,
            ),
            Message::Close(frame) => self.close(
                CloseReason::ClientClosed(frame.map_or(1000, |f| u16::from(f.code))),
                now,
            ),
            // tungstenite queued the pong itself; the next write carries it.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                let mut dry = Dry;
                let (codec, mut io) = self.duplex(&mut dry);
                let _ = codec.flush(&mut io);
            }
        }
    }

    fn reject(&mut self, code: ErrorCode, message: &str, now: Instant) {
        self.metrics.error_sent(code);
        self.write(Message::text(outbound::error(code, message)), now);
    }
}

/// A server-side codec that has read `leftover`, with its read buffer only if
/// `buffered` (a session that has not heard from its client yet has none).
fn codec(leftover: Vec<u8>, limits: &Limits, buffered: bool) -> WebSocketContext {
    let config = ws_config(limits);
    let config = if buffered {
        config
    } else {
        config.read_buffer_size(0)
    };
    WebSocketContext::from_partially_read(leftover, Role::Server, Some(config))
}

/// Bytes `msg` takes from a client as one masked frame with the shortest length
/// encoding (RFC 6455 §5.2): the least it can have taken.
fn wire_len(msg: &Message) -> u64 {
    let payload = match msg {
        Message::Text(t) => t.len(),
        Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
        Message::Close(Some(frame)) => 2 + frame.reason.len(),
        Message::Close(None) => 0,
        Message::Frame(f) => f.payload().len(),
    } as u64;
    let length = match payload {
        0..=125 => 0,
        126..=65535 => 2,
        _ => 8,
    };
    2 + length + 4 + payload
}

fn read_error(e: WsError) -> CloseReason {
    match e {
        WsError::Capacity(_) => CloseReason::MessageTooLarge,
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
        | WsError::ConnectionClosed
        | WsError::AlreadyClosed
        | WsError::Io(_) => CloseReason::Disconnected,
        _ => CloseReason::ProtocolError,
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
