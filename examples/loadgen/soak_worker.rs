//! A `soak` worker thread: holds many peers' non-blocking sockets in one `epoll`
//! set, sends each peer's offers on schedule, reads and checks what arrives, and
//! hands peers to the controller (churn) and back on command.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::poller::{self, Epoll, Waker};
use crate::report::now_ns;
use crate::soak_peer::{Peer, RxKey, Slot, Tally};

pub enum Cmd {
    /// A peer whose session just joined: poll it, and send on schedule once started.
    Add(Box<Peer>),
    /// Hand this peer over (the controller makes it leave).
    Take(Slot, Sender<Peer>),
    /// Start sending: one offer per peer every `period` ns.
    Start { period: u64 },
    /// Stop sending; reply with the streams of the peers' current sessions.
    Stop(Sender<Vec<Sent>>),
    /// Reply once every listed peer has settled (see `Peer::settled`).
    Expect(Vec<Expectation>, Sender<()>),
    /// End the thread; it returns its peers and tallies.
    Finish,
}

/// A stream's final count: `sent` relays from (sender, session) to `to`'s session
/// `key.2`.
pub struct Sent {
    pub to: Slot,
    pub key: RxKey,
    pub sent: u64,
}

#[derive(Clone)]
pub struct Expectation {
    pub slot: Slot,
    pub streams: Vec<(RxKey, u64)>,
    /// The room-mates present at the end (slot, session index).
    pub mates: BTreeMap<Slot, u32>,
}

pub struct WorkerEnd {
    pub peers: Vec<Peer>,
    pub tallies: Vec<Tally>,
    pub error: Option<String>,
    /// Sends more than a second behind schedule, skipped rather than sent in a burst.
    pub late: u64,
}

/// Shared progress counters (relaxed: only for the progress lines).
#[derive(Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

const WAKE: u64 = u64::MAX;
const LATE_NS: u64 = 1_000_000_000;

struct Worker {
    ep: Epoll,
    peers: HashMap<Slot, Peer>,
    tallies: Vec<Tally>,
    /// (due time, slot, session): entries of a peer that has since left are stale.
    due: BinaryHeap<Reverse<(u64, Slot, u32)>>,
    /// Peers whose socket is polled for writability too.
    polled_out: HashSet<Slot>,
    period: Option<u64>,
    pending: HashMap<Slot, Expectation>,
    done: Option<Sender<()>>,
    late: u64,
    progress: Arc<Progress>,
}

pub fn run(
    rx: Receiver<Cmd>,
    waker: Arc<Waker>,
    urls: usize,
    sample_cap: usize,
    progress: Arc<Progress>,
) -> WorkerEnd {
    let tallies = (0..urls).map(|_| Tally::new(sample_cap)).collect();
    let ep = match Epoll::new().and_then(|ep| ep.add(waker.fd(), WAKE, poller::IN).map(|()| ep)) {
        Ok(ep) => ep,
        Err(e) => return unpolled(rx, tallies, format!("epoll: {e}")),
    };
    let mut w = Worker {
        ep,
        peers: HashMap::new(),
        tallies,
        due: BinaryHeap::new(),
        polled_out: HashSet::new(),
        period: None,
        pending: HashMap::new(),
        done: None,
        late: 0,
        progress,
    };
    let mut events = vec![poller::event(); 256];
    loop {
        loop {
            match rx.try_recv() {
                Ok(Cmd::Finish) | Err(TryRecvError::Disconnected) => return w.end(None),
                Ok(cmd) => w.command(cmd),
                Err(TryRecvError::Empty) => break,
            }
        }
        let timeout = w.send_due();
        let n = match w.ep.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(e) => return w.end(Some(format!("epoll_wait: {e}"))),
        };
        for ev in &events[..n] {
            if ev.u64 == WAKE {
                waker.drain();
            } else {
                w.ready(ev.u64 as Slot, ev.events & poller::OUT != 0);
            }
        }
    }
}

/// Without an epoll set the worker still answers commands, so that the run ends
/// with the error reported rather than hung.
fn unpolled(rx: Receiver<Cmd>, tallies: Vec<Tally>, error: String) -> WorkerEnd {
    let mut peers = Vec::new();
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Cmd::Add(p) => peers.push(*p),
            Cmd::Take(slot, reply) => {
                if let Some(i) = peers.iter().position(|p| p.slot == slot) {
                    let _ = reply.send(peers.swap_remove(i));
                }
            }
            Cmd::Start { .. } => {}
            Cmd::Stop(reply) => {
                let _ = reply.send(Vec::new());
            }
            Cmd::Expect(_, done) => {
                let _ = done.send(());
            }
            Cmd::Finish => break,
        }
    }
    WorkerEnd {
        peers,
        tallies,
        error: Some(error),
        late: 0,
    }
}

impl Worker {
    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Add(p) => {
                let mut p = *p;
                let slot = p.slot;
                let fd = match p.ws.as_mut() {
                    Some(ws) => {
                        let _ = ws.get_mut().set_nonblocking(true);
                        ws.get_ref().as_raw_fd()
                    }
                    None => return,
                };
                if let Err(e) = self.ep.add(fd, slot as u64, poller::IN) {
                    p.ended = Some(format!("epoll_ctl: {e}"));
                }
                if let Some(period) = self.period {
                    self.due
                        .push(Reverse((now_ns() + phase(slot, period), slot, p.session)));
                }
                self.peers.insert(slot, p);
                // Whatever tungstenite or rustls already buffered would not wake
                // epoll: read it now.
                self.ready(slot, false);
            }
            Cmd::Take(slot, reply) => {
                self.polled_out.remove(&slot);
                if let Some(mut p) = self.peers.remove(&slot) {
                    if let Some(ws) = p.ws.as_mut() {
                        self.ep.delete(ws.get_ref().as_raw_fd());
                        let _ = ws.get_mut().set_nonblocking(false);
                    }
                    let _ = reply.send(p);
                }
            }
            Cmd::Start { period } => {
                self.period = Some(period);
                let now = now_ns();
                for (slot, p) in &self.peers {
                    self.due
                        .push(Reverse((now + phase(*slot, period), *slot, p.session)));
                }
            }
            Cmd::Stop(reply) => {
                self.period = None;
                self.due.clear();
                let mut sent = Vec::new();
                for p in self.peers.values().filter(|p| p.alive()) {
                    for s in p.tx.iter().filter(|s| s.session == p.session) {
                        sent.push(Sent {
                            to: s.to,
                            key: (p.slot, s.session, s.to_session),
                            sent: s.sent,
                        });
                    }
                }
                let _ = reply.send(sent);
            }
            Cmd::Expect(list, done) => {
                self.pending = list.into_iter().map(|e| (e.slot, e)).collect();
                self.done = Some(done);
                let slots: Vec<Slot> = self.pending.keys().copied().collect();
                for slot in slots {
                    self.check(slot);
                }
                self.check_done();
            }
            Cmd::Finish => {}
        }
    }

    /// Sends what is due; returns how long epoll may block (ms).
    fn send_due(&mut self) -> i32 {
        let Some(period) = self.period else {
            return 200;
        };
        let now = now_ns();
        while let Some(&Reverse((due, slot, session))) = self.due.peek() {
            if due > now {
                break;
            }
            self.due.pop();
            let Some(p) = self.peers.get_mut(&slot) else {
                continue;
            };
            if p.session != session || !p.alive() {
                continue;
            }
            let tally = &mut self.tallies[p.url];
            let before = tally.sent;
            if let Err(e) = p.send_next(tally) {
                *tally.closes.entry(e.clone()).or_default() += 1;
                p.ended = Some(e);
            }
            let sent = tally.sent - before;
            self.progress.sent.fetch_add(sent, Ordering::Relaxed);
            let mut next = due + period;
            if next + LATE_NS < now {
                self.late += 1;
                next = now + period;
            }
            self.due.push(Reverse((next, slot, session)));
            self.register(slot);
        }
        match self.due.peek() {
            Some(&Reverse((due, _, _))) => {
                (due.saturating_sub(now).div_ceil(1_000_000)).min(200) as i32
            }
            None => 200,
        }
    }

    fn ready(&mut self, slot: Slot, writable: bool) {
        let Some(p) = self.peers.get_mut(&slot) else {
            return;
        };
        if !p.alive() {
            return;
        }
        let tally = &mut self.tallies[p.url];
        let before = tally.received;
        if writable || p.want_write {
            if let Err(e) = p.flush() {
                *tally.closes.entry(e.clone()).or_default() += 1;
                p.ended = Some(e);
            }
        }
        p.service(tally);
        self.progress
            .received
            .fetch_add(tally.received - before, Ordering::Relaxed);
        self.register(slot);
        if self.pending.contains_key(&slot) {
            self.check(slot);
            self.check_done();
        }
    }

    /// Polls for writability only while bytes wait; drops an ended session's socket
    /// from the set.
    fn register(&mut self, slot: Slot) {
        let Some(p) = self.peers.get(&slot) else {
            return;
        };
        let Some(ws) = p.ws.as_ref() else {
            return;
        };
        let fd = ws.get_ref().as_raw_fd();
        if !p.alive() {
            self.ep.delete(fd);
            return;
        }
        // Only on a change: one syscall per send would cost more than the send.
        if p.want_write != self.polled_out.contains(&slot) {
            let events = if p.want_write {
                self.polled_out.insert(slot);
                poller::IN | poller::OUT
            } else {
                self.polled_out.remove(&slot);
                poller::IN
            };
            let _ = self.ep.modify(fd, slot as u64, events);
        }
    }

    fn check(&mut self, slot: Slot) {
        let settled = match (self.pending.get(&slot), self.peers.get(&slot)) {
            (Some(e), Some(p)) => p.settled(&e.streams, &e.mates),
            _ => true,
        };
        if settled {
            self.pending.remove(&slot);
        }
    }

    fn check_done(&mut self) {
        if self.pending.is_empty() {
            if let Some(done) = self.done.take() {
                let _ = done.send(());
            }
        }
    }

    fn end(&mut self, error: Option<String>) -> WorkerEnd {
        WorkerEnd {
            peers: self.peers.drain().map(|(_, p)| p).collect(),
            tallies: std::mem::take(&mut self.tallies),
            error,
            late: self.late,
        }
    }
}

/// Spreads the peers' sends over the period (golden-ratio steps), so that a
/// worker's sends do not come in one burst per period.
fn phase(slot: Slot, period: u64) -> u64 {
    let frac = (slot as f64 * 0.618_033_988_75).fract();
    (frac * period as f64) as u64
}
