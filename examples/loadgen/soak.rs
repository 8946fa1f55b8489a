//! `soak` mode, the controller: connects the peers room by room over the URLs,
//! starts the workers' offers, makes peers leave and rejoin one at a time (so the
//! tool always knows each room's true membership), then drains and hands the
//! streams to the report.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::Message;

use crate::net::{connect, is_timeout, ws_config};
use crate::opts::Opts;
use crate::poller::Waker;
use crate::procs::Watch;
use crate::report::{int, now_ns, Out};
use crate::soak_peer::{peer_id, Peer, Seen, Slot, Tally};
use crate::soak_report::{report, Churn, Run};
use crate::soak_worker::{self, Cmd, Expectation, Progress, WorkerEnd};
use crate::target::{bases, Target};
use crate::{Fail, Res};

/// The tool's own record of a peer: the membership the server must reflect.
pub struct Truth {
    pub room: usize,
    /// Successful joins so far; the current session's index is `sessions - 1`.
    pub sessions: u32,
    pub present: bool,
}

impl Truth {
    pub fn live(&self, session: u32) -> bool {
        self.present && self.sessions == session + 1
    }
}

struct Controller<'a> {
    o: &'a Opts,
    t: &'a [Target],
    prefix: &'a str,
    cfg: WebSocketConfig,
    truth: Vec<Truth>,
    /// Present members of each room, in join order (what `existing_peers` must say).
    order: Vec<Vec<Slot>>,
    workers: Vec<(Sender<Cmd>, Arc<Waker>)>,
    /// Peers that left and could not rejoin yet: the next churn tick retries them.
    away: Vec<Peer>,
    /// What the leaving peers read during their closing handshakes.
    tallies: Vec<Tally>,
    churn: Churn,
    rng: u64,
}

pub fn run(o: &Opts, t: &[Target], prefix: &str, watch: &Watch, out: &mut Out) -> Res<bool> {
    let rooms = o.peers.div_ceil(o.room_size);
    out.line(format!(
        "soak: {} peers in {} rooms of {}, {} offers/s each, churn {}/s, {:.1} s, at {}",
        o.peers,
        rooms,
        o.room_size,
        o.rate,
        o.churn_per_sec,
        o.secs,
        bases(t).join(", ")
    ));
    let before = watch.snap();
    let nworkers = o.peers.div_ceil(1000).clamp(1, 4);
    // About 4 million latency samples in all, whatever the run's length.
    let sample_cap = 4_000_000 / (nworkers + 1) / t.len();
    let progress = Arc::new(Progress::default());
    let mut workers = Vec::new();
    let mut handles = Vec::new();
    for i in 0..nworkers {
        let waker = Arc::new(Waker::new().map_err(|e| format!("eventfd: {e}"))?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let (w, p, urls) = (waker.clone(), progress.clone(), t.len());
        handles.push(
            thread::Builder::new()
                .name(format!("soak-{i}"))
                .stack_size(256 * 1024)
                .spawn(move || soak_worker::run(rx, w, urls, sample_cap, p))
                .map_err(|e| format!("spawning a thread: {e}"))?,
        );
        workers.push((tx, waker));
    }
    let mut c = Controller {
        o,
        t,
        prefix,
        // Small client buffers, as in `idle`: thousands of peers in one process.
        cfg: ws_config(4096),
        truth: (0..o.peers)
            .map(|k| Truth {
                room: k / o.room_size,
                sessions: 0,
                present: false,
            })
            .collect(),
        order: vec![Vec::new(); rooms],
        workers,
        away: Vec::new(),
        tallies: (0..t.len()).map(|_| Tally::new(sample_cap)).collect(),
        churn: Churn::new(t.len()),
        rng: (now_ns() ^ (u64::from(std::process::id()) << 32)) | 1,
    };
    out.progress(format!(
        "connecting {} peers ({nworkers} worker threads)",
        o.peers
    ));
    let c0 = Instant::now();
    let mut consecutive = 0;
    let mut connected = 0;
    for k in 0..o.peers {
        let mut peer = Peer::new(k, k / o.room_size, k % t.len());
        match c.join(&mut peer, k % t.len()) {
            Ok(()) => {
                consecutive = 0;
                connected += 1;
                c.hand_over(peer);
            }
            Err(key) => {
                *c.churn.not_connected.entry(key).or_default() += 1;
                consecutive += 1;
                if consecutive >= 50 {
                    c.churn.gave_up = true;
                    break;
                }
            }
        }
        if !o.json && (k + 1) % 1000 == 0 {
            eprintln!("  .. {connected} / {} connected", o.peers);
        }
    }
    let connect_secs = c0.elapsed().as_secs_f64();
    if connected == 0 {
        let why = format!("no peer connected: {:?}", c.churn.not_connected);
        c.finish(handles, Vec::new(), (0, 0.0, 0.0));
        return Err(Fail::Fatal(why));
    }
    out.progress(format!(
        "{connected} connected in {connect_secs:.2} s; soaking for {:.1} s",
        o.secs
    ));
    let period = (1e9 / o.rate) as u64;
    c.each(|| Cmd::Start { period });
    let m0 = watch.snap();
    let t0 = Instant::now();
    c.soak(t0, &progress, out);
    let secs = t0.elapsed().as_secs_f64();
    let m1 = watch.snap();
    out.progress("stopped; draining");
    let expectations = c.drain();
    let run = c.finish(handles, expectations, (connected, connect_secs, secs));
    Ok(report(o, t, &run, watch, (&before, &m0, &m1), out))
}

impl Controller<'_> {
    fn members(&self, room: usize) -> Range<Slot> {
        room * self.o.room_size..((room + 1) * self.o.room_size).min(self.o.peers)
    }

    fn each(&self, cmd: impl Fn() -> Cmd) {
        for (tx, waker) in &self.workers {
            let _ = tx.send(cmd());
            waker.wake();
        }
    }

    fn worker(&self, slot: Slot) -> &(Sender<Cmd>, Arc<Waker>) {
        &self.workers[slot % self.workers.len()]
    }

    fn hand_over(&self, p: Peer) {
        let (tx, waker) = self.worker(p.slot);
        let _ = tx.send(Cmd::Add(Box::new(p)));
        waker.wake();
    }

    /// One session for `peer` through `url`; on success the room's record is
    /// updated and `existing_peers` compared with it.
    fn join(&mut self, peer: &mut Peer, url: usize) -> Result<(), String> {
        let (slot, room) = (peer.slot, peer.room);
        let name = format!("{}-s{room}", self.prefix);
        let s0 = now_ns();
        let s = match connect(
            &self.t[url],
            &name,
            &peer_id(slot),
            self.cfg,
            self.o.connect_timeout,
        ) {
            Ok(s) => s,
            Err(e) => return Err(e.key()),
        };
        self.churn.connect_ns.push(now_ns() - s0);
        let want: Vec<String> = self.order[room].iter().map(|&m| peer_id(m)).collect();
        if s.existing_peers != want {
            self.churn.inconsistent += 1;
            if self.churn.examples.len() < 5 {
                self.churn.examples.push(format!(
                    "p{slot} joining {name} via {} got existing_peers {:?}, expected {want:?}",
                    self.t[url].base(),
                    s.existing_peers
                ));
            }
        }
        self.churn.joined_expected += self.order[room].len() as u64;
        self.churn.joins[url] += 1;
        let truth = &mut self.truth[slot];
        truth.sessions += 1;
        truth.present = true;
        let session = truth.sessions - 1;
        self.order[room].push(slot);
        let mates: BTreeMap<Slot, Seen> = self
            .members(room)
            .filter(|&m| m != slot)
            .map(|m| {
                let t = &self.truth[m];
                (
                    m,
                    Seen {
                        sessions: t.sessions,
                        present: t.present,
                    },
                )
            })
            .collect();
        peer.start_session(s.ws, session, url, mates);
        Ok(())
    }

    /// A polite leave: close frame, then read until the server's close (what
    /// arrives meanwhile is counted like any delivery).
    fn leave(&mut self, peer: &mut Peer) {
        if let Some(mut ws) = peer.ws.take() {
            let _ = ws
                .get_mut()
                .set_read_timeout(Some(Duration::from_millis(100)));
            if ws.close(None).is_ok() {
                let deadline = Instant::now() + Duration::from_secs(2);
                while Instant::now() < deadline {
                    match ws.read() {
                        Ok(Message::Text(t)) => {
                            peer.on_text(t.as_str(), now_ns(), &mut self.tallies[peer.url])
                        }
                        Ok(_) => {}
                        Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
                        Err(_) => break,
                    }
                }
            }
        }
        let room = peer.room;
        self.truth[peer.slot].present = false;
        self.order[room].retain(|&m| m != peer.slot);
        self.churn.leaves[peer.url] += 1;
        self.churn.left_expected += self.order[room].len() as u64;
    }

    /// A rejoin goes through the next URL: a client that reconnects through a load
    /// balancer rarely lands on the same instance.
    fn rejoin(&mut self, mut peer: Peer) {
        let url = (peer.url + 1) % self.t.len();
        match self.join(&mut peer, url) {
            Ok(()) => self.hand_over(peer),
            Err(key) => {
                *self.churn.rejoin_failed.entry(key).or_default() += 1;
                self.away.push(peer);
            }
        }
    }

    fn churn_one(&mut self) {
        if let Some(p) = self.away.pop() {
            self.rejoin(p);
            return;
        }
        // xorshift64: a spread of victims, not cryptography.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let n = self.truth.len();
        let start = (self.rng % n as u64) as usize;
        let Some(slot) = (0..n)
            .map(|i| (start + i) % n)
            .find(|&s| self.truth[s].present)
        else {
            return;
        };
        let (tx, waker) = self.worker(slot);
        let (reply, taken) = crossbeam_channel::bounded(1);
        let _ = tx.send(Cmd::Take(slot, reply));
        waker.wake();
        match taken.recv_timeout(Duration::from_secs(10)) {
            Ok(mut p) => {
                self.leave(&mut p);
                self.rejoin(p);
            }
            Err(_) => self.churn.handover_failed += 1,
        }
    }

    /// The soak proper: churn at its rate, a progress line every 5 s. The sleeps
    /// pace the schedule; nothing waits on them for another thread's work.
    fn soak(&mut self, t0: Instant, progress: &Progress, out: &Out) {
        let end = t0 + Duration::from_secs_f64(self.o.secs);
        let interval = (self.o.churn_per_sec > 0.0)
            .then(|| Duration::from_secs_f64(1.0 / self.o.churn_per_sec));
        let mut next_churn = interval.map(|i| t0 + i);
        let mut next_line = t0 + Duration::from_secs(5);
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            let wake = next_churn.map_or(end, |c| c.min(end)).min(next_line);
            if wake > now {
                thread::sleep(wake - now);
                continue;
            }
            if let (Some(at), Some(i)) = (next_churn, interval) {
                if at <= now {
                    self.churn_one();
                    // Behind by more than a second (slow joins): skip, do not burst.
                    let next = at + i;
                    next_churn = Some(if next + Duration::from_secs(1) < Instant::now() {
                        self.churn.skipped += 1;
                        Instant::now() + i
                    } else {
                        next
                    });
                }
            }
            if next_line <= now {
                out.progress(format!(
                    "{:.0} s: sent {}, received {}, leaves {}",
                    t0.elapsed().as_secs_f64(),
                    int(progress.sent.load(std::sync::atomic::Ordering::Relaxed)),
                    int(progress.received.load(std::sync::atomic::Ordering::Relaxed)),
                    self.churn.leaves.iter().sum::<u64>()
                ));
                next_line += Duration::from_secs(5);
            }
        }
    }

    /// Stops the offers, then waits (up to --drain) until every receiver has every
    /// relay of the streams that are still live and sees its room as it is.
    fn drain(&mut self) -> Vec<Expectation> {
        let (reply, sent) = crossbeam_channel::unbounded();
        self.each(|| Cmd::Stop(reply.clone()));
        let mut streams: HashMap<Slot, Vec<_>> = HashMap::new();
        for _ in 0..self.workers.len() {
            let Ok(list) = sent.recv_timeout(Duration::from_secs(10)) else {
                break;
            };
            for s in list {
                let live = self.truth[s.key.0].live(s.key.1) && self.truth[s.to].live(s.key.2);
                if live {
                    streams.entry(s.to).or_default().push((s.key, s.sent));
                }
            }
        }
        let mut per_worker: Vec<Vec<Expectation>> =
            (0..self.workers.len()).map(|_| Vec::new()).collect();
        for (slot, truth) in self.truth.iter().enumerate().filter(|(_, t)| t.present) {
            let mates = self
                .members(truth.room)
                .filter(|&m| m != slot && self.truth[m].present)
                .map(|m| (m, self.truth[m].sessions - 1))
                .collect();
            per_worker[slot % self.workers.len()].push(Expectation {
                slot,
                streams: streams.remove(&slot).unwrap_or_default(),
                mates,
            });
        }
        let all: Vec<Expectation> = per_worker.iter().flatten().cloned().collect();
        let (done, settled) = crossbeam_channel::unbounded();
        for ((tx, waker), list) in self.workers.iter().zip(per_worker) {
            let _ = tx.send(Cmd::Expect(list, done.clone()));
            waker.wake();
        }
        let deadline = Instant::now() + Duration::from_secs_f64(self.o.drain);
        for _ in 0..self.workers.len() {
            if settled.recv_deadline(deadline).is_err() {
                break;
            }
        }
        all
    }

    /// Ends the workers and closes every session: a close frame each, no waiting,
    /// as in `idle` (the counting is over).
    fn finish(
        self,
        handles: Vec<thread::JoinHandle<WorkerEnd>>,
        expectations: Vec<Expectation>,
        (connected, connect_secs, secs): (usize, f64, f64),
    ) -> Run {
        self.each(|| Cmd::Finish);
        let mut ends: Vec<WorkerEnd> = handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| WorkerEnd {
                    peers: Vec::new(),
                    tallies: Vec::new(),
                    error: Some("worker thread panicked".into()),
                    late: 0,
                })
            })
            .collect();
        for p in ends.iter_mut().flat_map(|e| e.peers.iter_mut()) {
            if let Some(ws) = p.ws.as_mut() {
                let _ = ws.get_mut().set_nonblocking(false);
                let _ = ws.close(None);
                let _ = ws.flush();
            }
        }
        Run {
            truth: self.truth,
            ends,
            away: self.away,
            tallies: self.tallies,
            churn: self.churn,
            expectations,
            connected,
            connect_secs,
            secs,
        }
    }
}
