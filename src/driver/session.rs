//! The session thread: joins the router, then moves bytes between the socket and the
//! session's state machine ([`crate::core::session`]) and messages from the queue
//! into it, and waits in `ppoll(2)` when there is nothing to do. The rules are the
//! state machine's; this loop only does I/O, keeps the router informed, and sleeps.
//!
//! The thread waits for its socket (bytes in, room to write), for the router (a
//! message queued, a close, a resume: a thread-directed signal, [`super::wake`]) and
//! for the state machine's next deadline. No polling, no second thread; over TLS
//! nothing changes here ([`Io`] hides rustls behind the same non-blocking calls).
//! While it sleeps with nothing to write, a plain-TCP session leaves its gate open
//! ([`super::direct`]): the router then writes to the socket itself, and the thread
//! sleeps on.

use std::cell::Cell;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use tungstenite::protocol::{Role, WebSocketContext};

use super::context::{Context, SessionToken};
use super::direct::Direct;
use super::queue::{queue, QueueRx};
use super::router::{Ctl, Link};
use super::transport::{Io, Stream};
use super::wake::Parker;
use crate::core::admission::Admitted;
use crate::core::cluster::Ack;
use crate::core::router::{Command, Reply, Text};
use crate::core::session::{closing_messages, ws_config, Session};
use crate::protocol::CloseReason;

/// Runs an admitted session on the calling (connection) thread until it ends.
/// `switched` is the upgrade's `101` response, still to be written: it goes out in one
/// write with `existing_peers` (or with the refusal), one segment instead of two on the
/// join's path. `leftover` holds bytes the client sent after its request head.
pub fn run(
    stream: Stream,
    switched: Vec<u8>,
    leftover: Vec<u8>,
    who: Admitted,
    remote: SocketAddr,
    ctx: &Arc<Context>,
    token: SessionToken,
) {
    let _token = token;
    let parker = match Parker::for_current_thread() {
        Ok(p) => p,
        Err(e) => {
            warn!("cannot prepare a session thread: {e}");
            return refuse(stream, &switched, ctx, CloseReason::Internal);
        }
    };
    let (queue_tx, queue) = queue(ctx.limits.peer_queue);
    let ctl = Arc::new(Ctl::new(parker.waker()));
    let id = ctx.next_session();
    let join = Command::Join {
        room: who.room.clone(),
        peer: who.peer.clone(),
        session: id,
        resume: who.resume.clone(),
        token: (!ctx.limits.resume_grace.is_zero())
            .then(fresh_token)
            .flatten(),
    };
    // Plain TCP only: over TLS every record is the session's own state.
    let direct = (!stream.is_tls()).then(|| Arc::new(Direct::new(ctx.metrics.clone())));
    let link = Link {
        queue: queue_tx,
        ctl: ctl.clone(),
        direct: direct.clone(),
    };
    let resumed = match ctx.router.ask(join, Some(link), None) {
        Some(Reply::Joined) => false,
        Some(Reply::Resumed) => true,
        Some(Reply::Refused(reason)) => {
            info!(
                "refused {} in {} from {remote}: {reason}",
                who.peer, who.room
            );
            return refuse(stream, &switched, ctx, reason);
        }
        _ => return refuse(stream, &switched, ctx, CloseReason::GoingAway),
    };
    // From here on the router knows the peer: whatever happens, it must hear Leave.
    let leaving = Leaving {
        ctx,
        session: id,
        ctl: &ctl,
        queue,
        announced: Cell::new(None),
    };
    let started = Instant::now();
    ctx.metrics.session_opened();
    info!(
        "session {} room={} peer={} remote={remote}",
        if resumed { "resume" } else { "start" },
        who.room,
        who.peer
    );
    let (tcp, tls) = stream.into_parts();
    let tcp = Arc::new(tcp);
    if let Some(direct) = &direct {
        direct.attach(tcp.clone());
    }
    let mut session = Session::new(
        id,
        who.room,
        who.peer,
        &ctx.limits,
        ctx.metrics.clone(),
        leftover,
        started,
    );
    let preface = switched.len();
    session.preface(switched);
    let reason = match Io::new(&tcp, tls, &ctx.metrics) {
        Ok(mut io) => {
            io.uncounted(preface);
            Driver {
                session: &mut session,
                io,
                tcp: &tcp,
                ctx,
                ctl: &ctl,
                parker: &parker,
                leaving: &leaving,
                direct: direct.as_deref(),
                taken: 0,
                stalled_reported: false,
                paused_seen: false,
            }
            .run()
        }
        Err(e) => {
            warn!("cannot switch a session socket to non-blocking mode: {e}");
            CloseReason::Internal
        }
    };
    if let Some(direct) = &direct {
        direct.retire();
    }
    leaving.announce(reason);
    drop(leaving);
    // The thread may exit only once no router wake-up can be in flight.
    drop(parker);
    ctx.metrics.session_closed(reason);
    info!(
        "session end room={} peer={} remote={remote} duration={:.3}s reason={reason}",
        session.room(),
        session.peer(),
        started.elapsed().as_secs_f64()
    );
}

struct Driver<'a> {
    session: &'a mut Session,
    io: Io<'a>,
    tcp: &'a TcpStream,
    ctx: &'a Context,
    ctl: &'a Ctl,
    parker: &'a Parker,
    leaving: &'a Leaving<'a>,
    /// The gate through which the router writes while this thread sleeps.
    direct: Option<&'a Direct>,
    /// Messages taken off the queue since the last `Drained` report.
    taken: usize,
    stalled_reported: bool,
    /// What the session was last told about the router's pause switch.
    paused_seen: bool,
}

impl Driver<'_> {
    fn run(&mut self) -> CloseReason {
        loop {
            if let Some(hook) = &self.ctx.hooks.session_turn {
                hook(self.session.room(), self.session.peer());
            }
            let now = Instant::now();
            if let Some(reason) = self.ctl.close_reason() {
                self.session.close(reason, now);
            }
            self.paused_seen = self.ctl.paused();
            self.session.set_paused(self.paused_seen);
            let mut busy = self.take_queue(now);
            busy |= self.write(now);
            self.report();
            if self.session.wants_shutdown() {
                let _ = self.tcp.shutdown(Shutdown::Write);
                self.session.shutdown_done(now);
                busy = true;
            }
            // Until the client's first bytes, a read happens only when the socket has
            // some: the session then gets its read buffer (see `Session::heard`).
            if self.session.wants_read() && (self.session.heard() || self.io.has_input()) {
                busy |= self.session.read_from(&mut self.io, now) > 0;
            }
            while let Some(cmd) = self.session.poll_command() {
                busy = true;
                if self.ctx.router.send(cmd).is_err() {
                    self.session.close(CloseReason::GoingAway, now);
                }
            }
            if let Some(reason) = self.session.closing() {
                // As soon as it is decided: the room hears of it (or the peer is held)
                // without waiting for the closing handshake.
                self.leaving.announce(reason);
            }
            if let Some(reason) = self.session.finished() {
                return reason;
            }
            if let Some(at) = self.session.poll_timeout() {
                if at <= Instant::now() {
                    self.session.handle_timeout(Instant::now());
                    continue;
                }
            }
            if busy {
                continue;
            }
            self.wait();
        }
    }

    /// Moves queued messages into the session while it takes them. `true` if any.
    fn take_queue(&mut self, now: Instant) -> bool {
        let mut any = false;
        while self.session.wants_mailbox() {
            match self.leaving.queue.try_recv() {
                Some(text) => {
                    self.session.deliver(text, now);
                    self.taken += 1;
                    any = true;
                }
                None => {
                    self.session.mailbox_empty(now);
                    break;
                }
            }
        }
        any
    }

    /// Writes what the session has for the socket. `true` if any byte moved.
    fn write(&mut self, now: Instant) -> bool {
        let mut moved = false;
        loop {
            if self.session.wants_notify() {
                self.io.close_notify();
                self.session.notified();
            }
            let pending = self.session.pending();
            if pending.is_empty() {
                match self.io.flush() {
                    Ok(()) => self.session.write_flushed(now),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.session.write_blocked(now)
                    }
                    Err(_) => self.session.write_failed(now),
                }
                return moved;
            }
            match put(&mut self.io, pending) {
                Put::Took(n) => {
                    self.session.written(n, now);
                    moved = true;
                }
                Put::Full => {
                    self.session.write_blocked(now);
                    return moved;
                }
                Put::Failed => {
                    self.session.write_failed(now);
                    return true;
                }
            }
        }
    }

    /// Tells the router what it asked about: how much was taken off the queue, and
    /// whether the socket is stuck (both only while the router is waiting on us).
    fn report(&mut self) {
        let id = self.session.id();
        if self.taken > 0 && self.ctl.take_want_drained() {
            let taken = std::mem::take(&mut self.taken);
            let _ = self
                .ctx
                .router
                .send(Command::Drained { session: id, taken });
        }
        let stalled = self.session.stalled() && self.session.closing().is_none();
        if stalled != self.stalled_reported && (!stalled || self.ctl.wants_drained()) {
            self.stalled_reported = stalled;
            let _ = self.ctx.router.send(Command::Stalled {
                session: id,
                stalled,
            });
        }
    }

    /// Sleeps until the socket, the router or a deadline needs the thread.
    fn wait(&mut self) {
        self.parker.park();
        // Re-check after announcing the park: a wake-up from here on interrupts the
        // poll at once, one before it is seen now.
        let open = self.session.closing().is_none();
        let news = !self.leaving.queue.is_empty() && self.session.wants_mailbox()
            || open && self.ctl.close_reason().is_some()
            || open && self.ctl.paused() != self.paused_seen
            || self.ctl.wants_drained()
                && (self.taken > 0 || self.session.stalled() && !self.stalled_reported);
        // Asleep with nothing to write: the router may write to the socket itself.
        let gate = if news { None } else { self.open_gate() };
        if !news && gate != Some(false) {
            let mut events = 0;
            if self.session.wants_read() {
                events |= libc::POLLIN;
            }
            if self.session.is_blocked() || !self.session.pending().is_empty() {
                events |= libc::POLLOUT;
            }
            let timeout = self
                .session
                .poll_timeout()
                .map_or(Duration::from_secs(3600), |at| {
                    at.saturating_duration_since(Instant::now())
                });
            let revents = self.parker.poll(self.io.fd(), events, timeout);
            // Errors and hang-ups are reported whatever was asked for: a session that
            // is not reading would otherwise be woken by them again and again.
            if revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
                && !self.session.wants_read()
            {
                self.session.hung_up(Instant::now());
            }
        }
        if let (Some(direct), Some(_)) = (self.direct, gate) {
            // Awake: from here on only this thread writes, the router's rest first
            // (the session's output is empty while the gate is open).
            let rest = direct.close();
            if !rest.is_empty() {
                self.session.preface(rest);
            }
        }
        self.parker.unpark();
    }

    /// Opens the gate if the session sleeps with nothing to write and nothing to
    /// read from its queue. `None`: not now; `Some(false)`: a message came first.
    fn open_gate(&self) -> Option<bool> {
        let direct = self.direct?;
        let idle = self.session.closing().is_none()
            && !self.session.is_blocked()
            && self.session.pending().is_empty()
            && self.ctl.close_reason().is_none();
        idle.then(|| direct.open(|| self.leaving.queue.is_empty()))
    }
}

/// What one non-blocking write did.
enum Put {
    Took(usize),
    /// The socket (or TLS) takes nothing now.
    Full,
    /// The connection is gone.
    Failed,
}

/// Writes some of `bytes` (retrying only an interrupted call).
fn put(io: &mut Io<'_>, bytes: &[u8]) -> Put {
    loop {
        return match io.write(bytes) {
            Ok(0) => Put::Failed,
            Ok(n) => Put::Took(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Put::Full,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => Put::Failed,
        };
    }
}

/// Tells the router the session is over, once, as soon as its reason is known, and
/// even if the thread panics. For a network reason the messages its queue still holds
/// go back with it, to be kept for a resume.
struct Leaving<'a> {
    ctx: &'a Context,
    session: u64,
    ctl: &'a Ctl,
    /// The session's queue (its only receiving end: the driver takes from it here).
    queue: QueueRx<Text>,
    announced: Cell<Option<CloseReason>>,
}

impl Leaving<'_> {
    fn announce(&self, reason: CloseReason) {
        if self.announced.get().is_some() {
            return;
        }
        self.announced.set(Some(reason));
        self.send(reason);
    }

    fn send(&self, reason: CloseReason) {
        let unsent = if reason.is_resumable() {
            self.queue.take_all()
        } else {
            Vec::new()
        };
        // Until the leave is settled (in a cluster: in Redis), the close is not
        // confirmed to the client, so its id is free everywhere once it knows.
        let (tx, settled) = crossbeam_channel::bounded::<()>(0);
        let sent = self.ctx.router.send(Command::Leave {
            session: self.session,
            reason,
            unsent,
            ack: Some(Ack(tx)),
        });
        if sent.is_ok() {
            let _ = settled.recv_timeout(self.ctx.limits.close_timeout);
        }
    }
}

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.ctl.close(CloseReason::Internal);
        }
        match self.announced.get() {
            None => self.announce(CloseReason::Internal),
            // What arrived after the first Leave: kept for the resume too, in order.
            Some(reason) if reason.is_resumable() && !self.queue.is_empty() => self.send(reason),
            Some(_) => {}
        }
    }
}

/// 128 bits from the operating system's CSPRNG, URL-safe (PROTOCOL.md §8 tokens).
fn fresh_token() -> Option<String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 16];
    match getrandom::fill(&mut bytes) {
        Ok(()) => Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)),
        Err(e) => {
            warn!("no randomness for a resume token ({e}): this session cannot be resumed");
            None
        }
    }
}

/// Ends a session that was never admitted: the upgrade's `switched` response, error
/// message, close frame, lingering close.
pub fn refuse(mut stream: Stream, switched: &[u8], ctx: &Context, reason: CloseReason) {
    let limits = &ctx.limits;
    ctx.metrics.session_refused(reason);
    if let Some(code) = reason.error_code() {
        ctx.metrics.error_sent(code);
    }
    let _ = stream
        .tcp()
        .set_write_timeout(Some(limits.write_timeout.max(Duration::from_millis(1))));
    if stream.write_all(switched).is_err() {
        return;
    }
    let mut ws = WebSocketContext::new(Role::Server, Some(ws_config(limits)));
    let (error, frame) = closing_messages(reason);
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
