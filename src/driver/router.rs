//! The router thread: the one owner of room state. It takes commands from a bounded
//! channel, runs them through [`Router`], and carries out the outputs: pushes onto
//! session queues (which always have room: the router counts), flags, and wake-ups,
//! one per session per turn. Its only wait is for its own channel or the router's
//! next deadline; nothing it does can block on a session.
//!
//! A panic in the router is not survivable (the room state is gone): every session
//! is told `going_away`, the handle reports [`RouterHandle::failed`] (so `/healthz`
//! answers 503), and whoever waits on [`Failure`] (the binary) ends the process with
//! a non-zero status, so a supervisor restarts it.

use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use log::error;

use super::direct::{Delivery, Direct};
use super::queue::QueueTx;
use super::wake::Waker;
use crate::core::cluster::{ClusterEvent, ClusterOut};
use crate::core::router::{Command, IdMap, Output, Reply, Router, SessionId, Text};
use crate::hooks::RouterHook;
use crate::protocol::CloseReason;

/// Commands taken per turn before the sessions that got work are woken: a burst
/// costs one wake-up per session, not one per message.
const BATCH: usize = 64;

/// Turns after which what gates staged is written even if the router has more to do.
const FLUSH_TURNS: u64 = 8;

/// The router's switches on one session, shared with its thread.
pub struct Ctl {
    close: OnceLock<CloseReason>,
    paused: AtomicBool,
    want_drained: AtomicBool,
    waker: Arc<Waker>,
}

impl Ctl {
    pub fn new(waker: Arc<Waker>) -> Self {
        Ctl {
            close: OnceLock::new(),
            paused: AtomicBool::new(false),
            want_drained: AtomicBool::new(false),
            waker,
        }
    }

    /// Ends the session with `reason` (the first reason wins) and wakes it.
    pub fn close(&self, reason: CloseReason) {
        if self.close.set(reason).is_ok() {
            self.waker.wake();
        }
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close.get().copied()
    }

    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Whether the router asked for a [`Command::Drained`] report (and the request is
    /// taken).
    pub fn take_want_drained(&self) -> bool {
        self.want_drained.load(Ordering::Acquire) && self.want_drained.swap(false, Ordering::AcqRel)
    }

    pub fn wants_drained(&self) -> bool {
        self.want_drained.load(Ordering::Acquire)
    }
}

/// What the router thread holds of a session: its queue's sending end, its switches,
/// and (plain TCP only) the gate to its socket.
pub struct Link {
    pub queue: QueueTx<Text>,
    pub ctl: Arc<Ctl>,
    pub direct: Option<Arc<Direct>>,
}

impl Link {
    fn deliver(&self, text: Text) -> Delivery {
        match &self.direct {
            Some(direct) => direct.deliver(text, &self.queue),
            None => Delivery::queue(text, &self.queue),
        }
    }
}

/// A command on its way to the router thread.
pub struct Envelope {
    pub cmd: Command,
    /// With a `Join`: the new session's link.
    pub link: Option<Link>,
    pub reply: Option<Sender<Reply>>,
}

/// Set when the router thread has died; [`Failure::wait`] returns then.
#[derive(Default)]
pub struct Failure {
    failed: Mutex<bool>,
    cond: Condvar,
    flag: AtomicBool,
}

impl Failure {
    fn set(&self) {
        self.flag.store(true, Ordering::Release);
        if let Ok(mut f) = self.failed.lock() {
            *f = true;
            self.cond.notify_all();
        }
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Blocks until the router has failed.
    pub fn wait(&self) {
        let Ok(mut f) = self.failed.lock() else {
            return;
        };
        while !*f {
            match self.cond.wait(f) {
                Ok(g) => f = g,
                Err(_) => return,
            }
        }
    }
}

/// How the router thread sleeps while its queue is empty, and how a sender wakes it.
///
/// Why not the channel's own blocking receive: crossbeam spins and calls
/// `sched_yield` several times before it parks a receiver, and the router goes idle
/// twice per relayed round trip; with the server on one core that was 14 % of its CPU
/// in the round-trip bench (perf, cpu-clock samples), for nothing.
#[derive(Default)]
struct Doorbell {
    sleeping: AtomicBool,
    router: OnceLock<std::thread::Thread>,
}

impl Doorbell {
    /// After a command was queued (or a sender dropped): wakes the router if it sleeps.
    fn ring(&self) {
        // Pairs with the fence in `wait`: either the router's re-check finds what was
        // queued before this, or this load sees it asleep.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::SeqCst) {
            if let Some(router) = self.router.get() {
                router.unpark();
            }
        }
    }

    /// The next command, waiting at most until `deadline` (on the router thread).
    fn wait<T>(&self, rx: &Receiver<T>, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        loop {
            match rx.try_recv() {
                Ok(envelope) => return Ok(envelope),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            let now = Instant::now();
            if deadline.is_some_and(|at| at <= now) {
                return Err(RecvTimeoutError::Timeout);
            }
            self.sleeping.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if rx.is_empty() {
                // A ring after the store above unparks us (or leaves the token that
                // makes this park return at once). Spurious returns just loop.
                match deadline {
                    Some(at) => std::thread::park_timeout(at - now),
                    None => std::thread::park(),
                }
            }
            self.sleeping.store(false, Ordering::SeqCst);
        }
    }
}

/// How connection threads reach the router.
#[derive(Clone)]
pub struct RouterHandle {
    /// `None` only while the handle is dropped (see `Drop`).
    tx: Option<Sender<Envelope>>,
    bell: Arc<Doorbell>,
    failure: Arc<Failure>,
}

impl Drop for RouterHandle {
    /// The last handle gone disconnects the queue: the router must wake to see it.
    fn drop(&mut self) {
        drop(self.tx.take());
        self.bell.ring();
    }
}

/// The router thread is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

impl RouterHandle {
    /// Sends a command that needs no answer. Waits while the router's queue is full:
    /// the router never waits for anyone, so it drains it.
    pub fn send(&self, cmd: Command) -> Result<(), Gone> {
        self.queue()?
            .send(Envelope {
                cmd,
                link: None,
                reply: None,
            })
            .map_err(|_| Gone)?;
        self.bell.ring();
        Ok(())
    }

    fn queue(&self) -> Result<&Sender<Envelope>, Gone> {
        self.tx.as_ref().ok_or(Gone)
    }

    /// Asks and waits for the answer, at most `timeout` for each of the two steps.
    pub fn ask(
        &self,
        cmd: Command,
        link: Option<Link>,
        timeout: Option<Duration>,
    ) -> Option<Reply> {
        let (tx, rx) = bounded(1);
        let envelope = Envelope {
            cmd,
            link,
            reply: Some(tx),
        };
        match timeout {
            Some(t) => {
                self.queue().ok()?.send_timeout(envelope, t).ok()?;
                self.bell.ring();
                rx.recv_timeout(t).ok()
            }
            None => {
                self.queue().ok()?.send(envelope).ok()?;
                self.bell.ring();
                rx.recv().ok()
            }
        }
    }

    /// Whether the router thread died.
    pub fn failed(&self) -> bool {
        self.failure.is_set()
    }

    pub fn failure(&self) -> Arc<Failure> {
        self.failure.clone()
    }
}

#[cfg(feature = "cluster")]
impl RouterHandle {
    /// Sends an event of the Redis bridge (waits while the queue is full).
    pub fn cluster(&self, event: ClusterEvent) -> Result<(), Gone> {
        self.send(Command::Cluster(event))
    }
}

/// Starts the router thread with `router` and a queue of `capacity` commands;
/// `bridge`: where cluster outputs go (with `--redis`).
pub fn spawn(
    router: Router,
    capacity: usize,
    hook: Option<RouterHook>,
    bridge: Option<Sender<ClusterOut>>,
) -> io::Result<(RouterHandle, JoinHandle<()>)> {
    let (tx, rx) = bounded(capacity);
    let failure = Arc::new(Failure::default());
    let bell = Arc::new(Doorbell::default());
    let handle = RouterHandle {
        tx: Some(tx),
        bell: bell.clone(),
        failure: failure.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("router".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let _ = bell.router.set(std::thread::current());
            supervise(router, rx, &bell, hook, bridge, &failure)
        })?;
    Ok((handle, thread))
}

fn supervise(
    router: Router,
    rx: Receiver<Envelope>,
    bell: &Doorbell,
    hook: Option<RouterHook>,
    bridge: Option<Sender<ClusterOut>>,
    failure: &Failure,
) {
    let mut driver = Driver {
        router,
        links: IdMap::default(),
        replies: IdMap::default(),
        turn: 0,
        wake: Vec::new(),
        hook,
        bridge,
        leaves: std::collections::VecDeque::new(),
        staged: Vec::new(),
        flushed: 0,
    };
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| driver.run(&rx, bell)));
    if outcome.is_err() {
        error!("the router thread panicked: ending every session; the server must restart");
        failure.set();
        for (_, entry) in driver.links.drain() {
            entry.link.ctl.close(CloseReason::GoingAway);
        }
    }
}

struct Entry {
    link: Link,
    /// The turn in which this session was last put on the wake list.
    woken: u64,
    /// Messages staged in its gate since the last flush (on the flush list if any).
    staged: usize,
}

struct Driver {
    router: Router,
    links: IdMap<Entry>,
    /// Joins whose answer comes later (claimed in Redis first).
    replies: IdMap<Sender<Reply>>,
    turn: u64,
    wake: Vec<Arc<Ctl>>,
    hook: Option<RouterHook>,
    bridge: Option<Sender<ClusterOut>>,
    /// Leaves the bridge could not take yet (they must not be lost).
    leaves: std::collections::VecDeque<ClusterOut>,
    /// Sessions with frames staged in their gate since the last flush.
    staged: Vec<SessionId>,
    /// The turn of the last flush.
    flushed: u64,
}

impl Driver {
    fn run(&mut self, rx: &Receiver<Envelope>, bell: &Doorbell) {
        loop {
            let first = bell.wait(rx, self.router.poll_timeout());
            self.turn += 1;
            match first {
                Ok(envelope) => self.apply(envelope),
                Err(RecvTimeoutError::Timeout) => {
                    self.router.handle_timeout(Instant::now());
                    self.carry_out();
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
            for _ in 1..BATCH {
                match rx.try_recv() {
                    Ok(envelope) => self.apply(envelope),
                    Err(_) => break,
                }
            }
            // What the gates staged goes out when the router is about to sleep, as it
            // did when session threads wrote it (they ran then): a burst is one
            // write per session, not one per turn. Under load, at least every few turns.
            if rx.is_empty() || self.turn - self.flushed >= FLUSH_TURNS {
                self.flush();
            }
            for ctl in self.wake.drain(..) {
                ctl.waker.wake();
            }
        }
    }

    fn apply(&mut self, envelope: Envelope) {
        let Envelope { cmd, link, reply } = envelope;
        if let (Some(hook), Command::Join { room, .. }) = (&self.hook, &cmd) {
            hook(room);
        }
        let joining = match (&cmd, link) {
            (Command::Join { session, .. }, Some(link)) => {
                self.links.insert(
                    *session,
                    Entry {
                        link,
                        woken: 0,
                        staged: 0,
                    },
                );
                Some(*session)
            }
            _ => None,
        };
        let answer = self.router.handle(cmd, Instant::now());
        if let (Some(session), Reply::Refused(_)) = (joining, &answer) {
            self.links.remove(&session);
        }
        match (joining, answer, reply) {
            (Some(session), Reply::Deferred, Some(reply)) => {
                self.replies.insert(session, reply);
            }
            (_, answer, Some(reply)) => {
                let _ = reply.send(answer);
            }
            _ => {}
        }
        self.carry_out();
    }

    /// Hands an output to the Redis bridge without waiting; what does not fit is
    /// answered as a failure (relays, claims) or kept for the next turn (leaves).
    fn hand_to_bridge(&mut self, out: ClusterOut) {
        let Some(bridge) = &self.bridge else {
            return;
        };
        while let Some(leave) = self.leaves.pop_front() {
            if let Err(e) = bridge.try_send(leave) {
                self.leaves.push_front(e.into_inner());
                break;
            }
        }
        let out = match bridge.try_send(out) {
            Ok(()) => return,
            Err(e) => e.into_inner(),
        };
        let event = match out {
            ClusterOut::Claim { session, .. } => ClusterEvent::ClaimFailed {
                session,
                reason: crate::protocol::CloseReason::TryAgainLater,
            },
            ClusterOut::Relay {
                session, target, ..
            } => ClusterEvent::RelayFailed { session, target },
            ClusterOut::Leave {
                room, peer, seq, ..
            } => {
                self.leaves.push_back(ClusterOut::Leave {
                    room,
                    peer,
                    seq,
                    ack: None,
                });
                return;
            }
            other => {
                error!("the Redis bridge is full: dropped {other:?}");
                return;
            }
        };
        self.router.handle(Command::Cluster(event), Instant::now());
    }

    fn answer(&mut self, session: SessionId, reply: Reply) {
        if matches!(reply, Reply::Refused(_)) {
            self.links.remove(&session);
        }
        if let Some(tx) = self.replies.remove(&session) {
            let _ = tx.send(reply);
        }
    }

    fn carry_out(&mut self) {
        while let Some(out) = self.router.poll_output() {
            match out {
                Output::Deliver { to, text } => {
                    let Some(entry) = self.links.get_mut(&to) else {
                        continue;
                    };
                    match entry.link.deliver(text) {
                        // For the socket, not the queue: its queue slot is free
                        // again, and the session sleeps on.
                        // Its slot is given back once written (`flush`): what a
                        // gate stages is bounded by the queue's bound too.
                        Delivery::Staged => {
                            if entry.staged == 0 {
                                self.staged.push(to);
                            }
                            entry.staged += 1;
                        }
                        Delivery::Queued => Self::mark(entry, self.turn, &mut self.wake),
                        // The router counts free slots, so this is a bug; the message
                        // is lost rather than the router blocked.
                        Delivery::Refused(TrySendError::Full(_)) => {
                            error!("session {to}: queue full despite credit; message dropped")
                        }
                        // The session has ended; its Leave is on the way.
                        Delivery::Refused(TrySendError::Disconnected(_)) => {}
                    }
                }
                Output::WantDrained { session } => {
                    if let Some(entry) = self.links.get_mut(&session) {
                        entry.link.ctl.want_drained.store(true, Ordering::Release);
                        Self::mark(entry, self.turn, &mut self.wake);
                    }
                }
                Output::Pause { session } => {
                    if let Some(entry) = self.links.get(&session) {
                        entry.link.ctl.paused.store(true, Ordering::Release);
                    }
                }
                Output::Resume { session } => {
                    if let Some(entry) = self.links.get_mut(&session) {
                        entry.link.ctl.paused.store(false, Ordering::Release);
                        Self::mark(entry, self.turn, &mut self.wake);
                    }
                }
                Output::Close { session, reason } => {
                    if let Some(entry) = self.links.remove(&session) {
                        entry.link.ctl.close(reason);
                    }
                }
                Output::Forget { session } => {
                    self.links.remove(&session);
                }
                Output::Answer { session, reply } => self.answer(session, reply),
                Output::Cluster(out) => self.hand_to_bridge(out),
            }
        }
    }

    /// Writes what was staged in sessions' gates: one write per session, and a
    /// wake-up for each session whose socket did not take it all. The staged
    /// messages' queue slots come back (the rest of a cut write is the session's to
    /// write, before its queue), which may move a backlog, through the gate again.
    fn flush(&mut self) {
        self.flushed = self.turn;
        while !self.staged.is_empty() {
            for session in std::mem::take(&mut self.staged) {
                let Some(entry) = self.links.get_mut(&session) else {
                    // Closed meanwhile: its thread takes what was staged when it wakes.
                    continue;
                };
                let n = std::mem::take(&mut entry.staged);
                if entry.link.direct.as_ref().is_some_and(|d| d.flush()) {
                    Self::mark(entry, self.turn, &mut self.wake);
                }
                self.router.written(session, n);
            }
            self.carry_out();
        }
    }

    fn mark(entry: &mut Entry, turn: u64, wake: &mut Vec<Arc<Ctl>>) {
        if entry.woken != turn {
            entry.woken = turn;
            wake.push(entry.link.ctl.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A doorbell whose router is the calling thread, as `spawn` sets it up.
    fn bell_here() -> Arc<Doorbell> {
        let bell = Arc::new(Doorbell::default());
        bell.router.set(std::thread::current()).expect("set once");
        bell
    }

    #[test]
    fn a_command_sent_while_the_router_sleeps_wakes_it() {
        let bell = bell_here();
        let (tx, rx) = bounded(4);
        let sender = {
            let bell = bell.clone();
            std::thread::spawn(move || {
                // Whether it rings before or after the router sleeps, the command
                // is seen: no deadline, so a lost wake-up would hang this test.
                tx.send(7u32).expect("queued");
                bell.ring();
                tx
            })
        };
        assert_eq!(bell.wait(&rx, None), Ok(7));
        let _tx = sender.join().expect("sender");
    }

    #[test]
    fn the_deadline_ends_the_wait_and_a_dropped_queue_is_seen() {
        let bell = bell_here();
        let (tx, rx) = bounded::<u32>(4);
        let at = Instant::now() + Duration::from_millis(20);
        assert_eq!(bell.wait(&rx, Some(at)), Err(RecvTimeoutError::Timeout));
        assert!(Instant::now() >= at);
        let dropper = {
            let bell = bell.clone();
            std::thread::spawn(move || {
                drop(tx);
                bell.ring();
            })
        };
        assert_eq!(bell.wait(&rx, None), Err(RecvTimeoutError::Disconnected));
        dropper.join().expect("dropper");
    }
}
