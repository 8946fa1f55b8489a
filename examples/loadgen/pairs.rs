//! `pairs` mode: N pairs, each a sender thread pipelining candidates to a receiver
//! thread through the server within an in-flight window; throughput, latency, loss
//! and order.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::Message;

use crate::candidate::{
    decimal_len, field_after, valid_candidate, CandidateWriter, SEQ_KEY, TS_KEY,
};
use crate::net::{
    close_desc, close_hint, connect_pair, drain_nonblocking, is_timeout, polite_close, ws_config,
    Ws,
};
use crate::opts::Opts;
use crate::procs::{report_procs, Watch};
use crate::report::{int, now_ns, round3, Out, Summary};
use crate::target::{bases, pick, spread, Target};
use crate::{Fail, Res};

pub struct PairShared {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub sender_done: AtomicBool,
    pub sender_waiting: AtomicBool,
    pub receiver_done: AtomicBool,
    pub lock: Mutex<()>,
    pub wake: Condvar,
}

impl PairShared {
    pub fn new() -> PairShared {
        PairShared {
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            sender_done: AtomicBool::new(false),
            sender_waiting: AtomicBool::new(false),
            receiver_done: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// Receiver: one more message arrived.
    pub fn ack(&self, received: u64) {
        self.received.store(received, Ordering::SeqCst);
        if self.sender_waiting.load(Ordering::SeqCst) {
            let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_one();
        }
    }

    /// Receiver: it has everything, or gave up.
    pub fn set_receiver_done(&self) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.receiver_done.store(true, Ordering::SeqCst);
        self.wake.notify_all();
    }

    /// Sender: blocks until the receiver is done (it always ends: at the latest at
    /// the drain deadline).
    pub fn wait_receiver_done(&self) {
        let mut g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        while !self.receiver_done.load(Ordering::SeqCst) {
            g = self
                .wake
                .wait_timeout(g, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Sender: blocks until fewer than `window` of the first `sent` are unreceived, or
    /// `stop`. The SeqCst flag/counter pair plus the re-check under the lock means a
    /// wake-up cannot be lost; the timeout only bounds the reaction to `stop`.
    pub fn wait_window(&self, sent: u64, window: u64, stop: &AtomicBool) {
        let full = || sent - self.received.load(Ordering::SeqCst) >= window;
        self.sender_waiting.store(true, Ordering::SeqCst);
        if full() {
            let mut g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            while full() && !stop.load(Ordering::SeqCst) {
                g = self
                    .wake
                    .wait_timeout(g, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        self.sender_waiting.store(false, Ordering::SeqCst);
    }
}

pub struct Global {
    pub start: Mutex<bool>,
    pub started: Condvar,
    pub stop: AtomicBool,
    /// Send timestamps at or after this are measured (u64::MAX: not yet).
    pub measure_from_ns: AtomicU64,
    /// Receivers give up waiting for stragglers at this time (u64::MAX: not yet).
    pub drain_until_ns: AtomicU64,
}

impl Global {
    pub fn open_start(&self) {
        *self.start.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.started.notify_all();
    }

    pub fn wait_start(&self) {
        let mut go = self.start.lock().unwrap_or_else(|e| e.into_inner());
        while !*go {
            go = self.started.wait(go).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[derive(Default)]
pub struct SendResult {
    pub sent: u64,
    /// Error codes and close reasons the sender's own socket received.
    pub events: BTreeMap<String, u64>,
    pub failure: Option<String>,
}

#[derive(Default)]
pub struct RecvResult {
    pub received: u64,
    pub order_violations: u64,
    pub duplicates: u64,
    pub invalid: u64,
    pub validated: u64,
    pub unexpected: BTreeMap<String, u64>,
    pub samples: Vec<u32>,
    pub stride: u64,
    pub max_ns: u64,
    pub failure: Option<String>,
}

pub fn sender(
    mut ws: Ws,
    shared: Arc<PairShared>,
    g: Arc<Global>,
    writer: Arc<CandidateWriter>,
    window: u64,
) -> SendResult {
    let mut r = SendResult::default();
    g.wait_start();
    let mut seq = 0u64;
    let mut next_check = Instant::now() + Duration::from_millis(100);
    'outer: while !g.stop.load(Ordering::Relaxed) {
        let received = shared.received.load(Ordering::SeqCst);
        let free = window - (seq - received);
        if free == 0 {
            shared.wait_window(seq, window, &g.stop);
            continue;
        }
        for _ in 0..free {
            let text = writer.build(seq, now_ns());
            if let Err(e) = ws.write(Message::text(text)) {
                r.failure = Some(format!("write: {e}"));
                break 'outer;
            }
            seq += 1;
        }
        if let Err(e) = ws.flush() {
            r.failure = Some(format!("write: {e}"));
            break;
        }
        shared.sent.store(seq, Ordering::SeqCst);
        // Now and then, read what the server sent this peer (errors such as
        // rate_limited, a close, pings to answer) without blocking.
        if Instant::now() >= next_check {
            next_check = Instant::now() + Duration::from_millis(100);
            if let Err(e) = drain_nonblocking(&mut ws, &mut r.events) {
                r.failure = Some(e);
                break;
            }
        }
    }
    shared.sent.store(seq, Ordering::SeqCst);
    shared.sender_done.store(true, Ordering::SeqCst);
    r.sent = seq;
    let _ = drain_nonblocking(&mut ws, &mut r.events);
    // Keep the session until the receiver has everything (or gives up): closing now
    // would put a `peer_left a` in front of the receiver, counted as unexpected.
    shared.wait_receiver_done();
    let _ = ws.get_mut().set_nonblocking(false);
    polite_close(&mut ws, Duration::from_millis(500));
    r
}

pub fn receiver(
    mut ws: Ws,
    shared: Arc<PairShared>,
    g: Arc<Global>,
    seq_hint: usize,
    sample_cap: usize,
) -> RecvResult {
    let mut r = RecvResult {
        stride: 1,
        samples: Vec::with_capacity(sample_cap.min(1 << 16)),
        ..RecvResult::default()
    };
    let _ = ws
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(100)));
    let mut next = 0u64;
    let mut kept = 0u64;
    let ts_hint_base = seq_hint; // the timestamp follows the sequence number
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                let now = now_ns();
                let text = t.as_str();
                if !text.starts_with("{\"type\":\"ice_candidate\"") {
                    let key = match serde_json::from_str::<Value>(text) {
                        Ok(v) if v["type"] == "error" => {
                            format!("error {}", v["code"].as_str().unwrap_or("?"))
                        }
                        Ok(v) => format!(
                            "{} {}",
                            v["type"].as_str().unwrap_or("?"),
                            v["peer_id"].as_str().unwrap_or("")
                        )
                        .trim_end()
                        .to_string(),
                        Err(_) => "not JSON".into(),
                    };
                    *r.unexpected.entry(key).or_default() += 1;
                    continue;
                }
                let seq = field_after(text, SEQ_KEY, seq_hint);
                let seq_len = seq.map(decimal_len).unwrap_or(0);
                let ts = field_after(text, TS_KEY, ts_hint_base + SEQ_KEY.len() + seq_len + 1);
                let (Some(seq), Some(ts)) = (seq, ts) else {
                    r.invalid += 1;
                    continue;
                };
                // Every 1024th message is checked in full: every field kept, plus
                // from_peer_id.
                if seq % 1024 == 0 {
                    r.validated += 1;
                    if !valid_candidate(text, seq, ts) {
                        r.invalid += 1;
                    }
                }
                if seq == next {
                    next += 1;
                } else if seq > next {
                    r.order_violations += 1;
                    next = seq + 1;
                } else {
                    r.order_violations += 1;
                    r.duplicates += 1;
                }
                r.received += 1;
                shared.ack(r.received);
                if ts >= g.measure_from_ns.load(Ordering::Relaxed) {
                    let lat = now.saturating_sub(ts);
                    r.max_ns = r.max_ns.max(lat);
                    if kept % r.stride == 0 {
                        if r.samples.len() >= sample_cap {
                            // Thin to every other sample, uniformly over time.
                            let mut i = 0;
                            r.samples.retain(|_| {
                                i += 1;
                                i % 2 == 1
                            });
                            r.stride *= 2;
                        }
                        if kept % r.stride == 0 {
                            r.samples.push(lat.min(u32::MAX as u64) as u32);
                        }
                    }
                    kept += 1;
                }
            }
            Ok(Message::Close(f)) => {
                r.failure = Some(format!("closed by the server: {}", close_desc(f)));
                break;
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
            Err(e) => {
                r.failure = Some(format!("read: {e}"));
                break;
            }
        }
        if shared.sender_done.load(Ordering::SeqCst)
            && r.received >= shared.sent.load(Ordering::SeqCst)
        {
            break;
        }
        if now_ns() >= g.drain_until_ns.load(Ordering::SeqCst) {
            break;
        }
    }
    shared.set_receiver_done();
    polite_close(&mut ws, Duration::from_millis(500));
    r
}

pub fn run(o: &Opts, t: &[Target], prefix: &str, watch: &Watch, out: &mut Out) -> Res<bool> {
    let writer = Arc::new(CandidateWriter::new(o.payload_bytes));
    let seq_hint = writer.head.len() - SEQ_KEY.len();
    out.line(format!(
        "pairs: {} {} ({} connections), window {}, {}-byte ice_candidate messages, {:.1} s measured after {:.1} s warm-up, at {}",
        o.pairs,
        if o.pairs == 1 { "pair" } else { "pairs" },
        2 * o.pairs,
        o.window,
        o.payload_bytes,
        o.secs,
        o.warmup_secs,
        bases(t).join(", ")
    ));
    let cross = usize::from(o.cross);
    if t.len() > 1 || o.cross {
        let mut counts = vec![0u64; t.len()];
        for i in 0..o.pairs {
            counts[i % t.len()] += 1;
            counts[(i + cross) % t.len()] += 1;
        }
        let (line, list) = spread(t, &counts, "connections");
        out.line(format!(
            "  pair i: a on url[i % {n}], b on url[(i+{cross}) % {n}]; connections {line}",
            n = t.len()
        ));
        out.set("spread", json!({"cross": o.cross, "per_url": list}));
    }
    let before = watch.snap();
    let cfg = ws_config(64 * 1024);
    let g = Arc::new(Global {
        start: Mutex::new(false),
        started: Condvar::new(),
        stop: AtomicBool::new(false),
        measure_from_ns: AtomicU64::new(u64::MAX),
        drain_until_ns: AtomicU64::new(u64::MAX),
    });
    // Samples kept in memory: at most ~8M in all (4 bytes each), thinned uniformly.
    let sample_cap = (8_000_000 / o.pairs).max(1024);
    let mut shared = Vec::with_capacity(o.pairs);
    let mut senders = Vec::with_capacity(o.pairs);
    let mut receivers = Vec::with_capacity(o.pairs);
    out.progress(format!("connecting {} pairs", o.pairs));
    let c0 = Instant::now();
    for i in 0..o.pairs {
        let room = format!("{prefix}-p{i}");
        let (ta, tb) = (pick(t, i), pick(t, i + cross));
        let (a, b) = match connect_pair(ta, tb, &room, cfg, o.connect_timeout) {
            Ok(ab) => ab,
            Err(e) => {
                g.stop.store(true, Ordering::SeqCst);
                g.open_start();
                g.drain_until_ns.store(0, Ordering::SeqCst);
                return Err(Fail::Fatal(format!("pair {i} of {}: {e}", o.pairs)));
            }
        };
        let s = Arc::new(PairShared::new());
        shared.push(s.clone());
        let (gs, ws_writer) = (g.clone(), writer.clone());
        let s2 = s.clone();
        let window = o.window;
        senders.push(
            thread::Builder::new()
                .name(format!("send-{i}"))
                .stack_size(256 * 1024)
                .spawn(move || sender(a, s2, gs, ws_writer, window))
                .map_err(|e| format!("spawning a thread: {e}"))?,
        );
        let gr = g.clone();
        receivers.push(
            thread::Builder::new()
                .name(format!("recv-{i}"))
                .stack_size(256 * 1024)
                .spawn(move || receiver(b, s, gr, seq_hint, sample_cap))
                .map_err(|e| format!("spawning a thread: {e}"))?,
        );
    }
    let connect_secs = c0.elapsed().as_secs_f64();
    out.progress(format!(
        "connected in {connect_secs:.2} s; warming up for {:.1} s",
        o.warmup_secs
    ));
    g.open_start();
    thread::sleep(Duration::from_secs_f64(o.warmup_secs));
    let total_received = || -> u64 {
        shared
            .iter()
            .map(|s| s.received.load(Ordering::SeqCst))
            .sum()
    };
    let total_sent = || -> u64 { shared.iter().map(|s| s.sent.load(Ordering::SeqCst)).sum() };
    g.measure_from_ns.store(now_ns(), Ordering::SeqCst);
    let m0 = watch.snap();
    let (r0, s0, t0) = (total_received(), total_sent(), Instant::now());
    out.progress(format!("measuring for {:.1} s", o.secs));
    thread::sleep(Duration::from_secs_f64(o.secs));
    let (r1, s1, elapsed) = (total_received(), total_sent(), t0.elapsed());
    let m1 = watch.snap();
    g.stop.store(true, Ordering::SeqCst);
    g.drain_until_ns
        .store(now_ns() + (o.drain * 1e9) as u64, Ordering::SeqCst);
    out.progress("stopped; draining");
    let sends: Vec<SendResult> = senders
        .into_iter()
        .map(|h| {
            h.join().unwrap_or_else(|_| SendResult {
                failure: Some("sender thread panicked".into()),
                ..SendResult::default()
            })
        })
        .collect();
    let recvs: Vec<RecvResult> = receivers
        .into_iter()
        .map(|h| {
            h.join().unwrap_or_else(|_| RecvResult {
                failure: Some("receiver thread panicked".into()),
                stride: 1,
                ..RecvResult::default()
            })
        })
        .collect();

    let secs = elapsed.as_secs_f64();
    let relayed = r1 - r0;
    let rate = relayed as f64 / secs;
    let send_rate = (s1 - s0) as f64 / secs;
    // Merge samples at one common stride so every pair weighs what it relayed.
    let stride = recvs.iter().map(|r| r.stride).max().unwrap_or(1);
    let mut samples: Vec<u64> = Vec::new();
    for r in &recvs {
        let step = (stride / r.stride.max(1)) as usize;
        samples.extend(r.samples.iter().step_by(step.max(1)).map(|&v| v as u64));
    }
    let true_max = recvs.iter().map(|r| r.max_ns).max().unwrap_or(0);
    let lat = Summary::of(samples, Some(true_max));
    let sent_total: u64 = sends.iter().map(|s| s.sent).sum();
    let recv_total: u64 = recvs.iter().map(|r| r.received).sum();
    let lost: u64 = sends
        .iter()
        .zip(&recvs)
        .map(|(s, r)| s.sent.saturating_sub(r.received))
        .sum();
    let order: u64 = recvs.iter().map(|r| r.order_violations).sum();
    let dups: u64 = recvs.iter().map(|r| r.duplicates).sum();
    let invalid: u64 = recvs.iter().map(|r| r.invalid).sum();
    let validated: u64 = recvs.iter().map(|r| r.validated).sum();
    let mut events: BTreeMap<String, u64> = BTreeMap::new();
    for s in &sends {
        for (k, v) in &s.events {
            *events.entry(format!("sender got {k}")).or_default() += v;
        }
    }
    for r in &recvs {
        for (k, v) in &r.unexpected {
            *events.entry(format!("receiver got {k}")).or_default() += v;
        }
    }
    let failures: Vec<String> = sends
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.failure.as_ref().map(|f| format!("pair {i} sender: {f}")))
        .chain(recvs.iter().enumerate().filter_map(|(i, r)| {
            r.failure
                .as_ref()
                .map(|f| format!("pair {i} receiver: {f}"))
        }))
        .collect();
    let ok = lost == 0 && order == 0 && invalid == 0 && events.is_empty() && failures.is_empty();

    out.line(format!(
        "relayed: {} msgs in {secs:.2} s = {} msgs/s (sent {} msgs/s)",
        int(relayed),
        int(rate as u64),
        int(send_rate as u64)
    ));
    out.line(format!("latency send->receive: {}", lat.line()));
    out.line(format!(
        "check: sent {}, received {}, lost {lost}, order violations {order} (duplicates {dups}), invalid {invalid} of {} fully validated -> {}",
        int(sent_total),
        int(recv_total),
        int(validated),
        if ok { "OK" } else { "FAILED" }
    ));
    for (k, v) in &events {
        out.line(format!("  {k}: {v}{}", close_hint(k)));
    }
    for f in failures.iter().take(10) {
        out.line(format!("  {f}{}", close_hint(f)));
    }
    if failures.len() > 10 {
        out.line(format!("  ... and {} more", failures.len() - 10));
    }
    report_procs(out, watch, &before, &m0, &m1);
    out.set(
        "params",
        json!({"pairs": o.pairs, "window": o.window, "payload_bytes": o.payload_bytes,
               "secs": o.secs, "warmup_secs": o.warmup_secs}),
    );
    out.set("connect_secs", json!(round3(connect_secs)));
    out.set("measured_secs", json!(round3(secs)));
    out.set("relayed", json!(relayed));
    out.set("msgs_per_sec", json!(rate.round()));
    out.set("sent_per_sec", json!(send_rate.round()));
    out.set("latency_us", lat.json());
    out.set(
        "check",
        json!({"ok": ok, "sent": sent_total, "received": recv_total, "lost": lost,
               "order_violations": order, "duplicates": dups, "invalid": invalid,
               "validated": validated, "events": events, "failures": failures}),
    );
    out.set("ok", json!(ok));
    Ok(ok)
}
