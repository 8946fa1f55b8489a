//! `idle` mode: thousands of quiet peers held by a few `epoll` threads; how many
//! connect, how many stay connected, and what they cost the server.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::Message;

use crate::net::{close_desc, close_hint, connect, is_timeout, ws_config, Ws};
use crate::opts::Opts;
use crate::poller::{self, Epoll};
use crate::procs::{cpu, snap_json, snap_line, Watch};
use crate::report::{int, mib, now_ns, round1, round3, Out, Summary};
use crate::target::{bases, pick, Target};
use crate::Res;

pub struct IdlePeer {
    pub idx: usize,
    pub ws: Ws,
    pub alive: bool,
    pub end: Option<String>,
    pub peer_left: u32,
}

#[derive(Default)]
pub struct IdleStats {
    pub alive: u64,
    pub pings: u64,
    pub messages: BTreeMap<String, u64>,
    pub dropped: BTreeMap<String, u64>,
    pub poll_error: Option<String>,
    /// Per peer: (index, still connected, `peer_left` messages received).
    pub peers: Vec<(usize, bool, u32)>,
    /// The sockets still open when the hold ended.
    pub open: Vec<Ws>,
}

/// One of a few threads that each hold many idle sockets: `epoll(7)` over all of
/// them (blocking, no busy loop, no per-wake scan of every socket), and on readiness
/// read every complete frame, which also makes tungstenite answer the server's pings.
pub fn idle_poller(
    rx: crossbeam_channel::Receiver<(usize, Ws)>,
    stop: Arc<AtomicBool>,
) -> IdleStats {
    let mut st = IdleStats::default();
    let mut peers: Vec<IdlePeer> = Vec::new();
    let ep = match Epoll::new() {
        Ok(ep) => Some(ep),
        Err(e) => {
            st.poll_error = Some(format!("epoll_create1: {e}"));
            // Still take the sockets so they are counted (as not held).
            while let Ok((idx, ws)) = rx.recv() {
                peers.push(IdlePeer {
                    idx,
                    ws,
                    alive: false,
                    end: Some("not polled".into()),
                    peer_left: 0,
                });
            }
            None
        }
    };
    let mut events = vec![poller::event(); 256];
    let mut feeding = true;
    while let Some(ep) = &ep {
        while feeding {
            match rx.try_recv() {
                Ok((idx, mut ws)) => {
                    let _ = ws.get_mut().set_nonblocking(true);
                    let fd = ws.get_ref().as_raw_fd();
                    let failed = ep
                        .add(fd, peers.len() as u64, poller::IN)
                        .err()
                        .map(|e| format!("epoll_ctl: {e}"));
                    let mut p = IdlePeer {
                        idx,
                        ws,
                        alive: failed.is_none(),
                        end: failed,
                        peer_left: 0,
                    };
                    // Whatever is already buffered (by tungstenite, or decrypted by
                    // rustls) would not wake epoll: read it now.
                    if p.alive {
                        service_idle(&mut p, &mut st);
                        if !p.alive {
                            ep.delete(fd);
                        }
                    }
                    peers.push(p);
                }
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => feeding = false,
            }
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        // Short timeout only while sockets are still being handed over.
        let timeout = if feeding { 50 } else { 200 };
        let n = match ep.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(e) => {
                st.poll_error = Some(format!("epoll_wait: {e}"));
                break;
            }
        };
        for ev in &events[..n] {
            let Some(p) = peers.get_mut(ev.u64 as usize) else {
                continue;
            };
            if !p.alive {
                continue;
            }
            service_idle(p, &mut st);
            if !p.alive {
                ep.delete(p.ws.get_ref().as_raw_fd());
            }
        }
    }
    for mut p in peers {
        st.peers.push((p.idx, p.alive, p.peer_left));
        if p.alive {
            st.alive += 1;
            // Closed by the caller once every poller has stopped reading, so that no
            // peer sees its partner leave while it is still being counted.
            st.open.push(p.ws);
        } else {
            let reason = p.end.take().unwrap_or_else(|| "closed".into());
            *st.dropped.entry(reason).or_default() += 1;
        }
    }
    st
}

pub fn service_idle(p: &mut IdlePeer, st: &mut IdleStats) {
    loop {
        match p.ws.read() {
            Ok(Message::Text(t)) => {
                let kind = match serde_json::from_str::<Value>(t.as_str()) {
                    Ok(v) if v["type"] == "error" => {
                        format!("error {}", v["code"].as_str().unwrap_or("?"))
                    }
                    Ok(v) => v["type"].as_str().unwrap_or("?").to_string(),
                    Err(_) => "not JSON".into(),
                };
                if kind == "peer_left" {
                    p.peer_left += 1;
                }
                *st.messages.entry(kind).or_default() += 1;
            }
            Ok(Message::Ping(_)) => st.pings += 1,
            Ok(Message::Close(f)) => {
                p.alive = false;
                p.end = Some(format!("closed by the server: {}", close_desc(f)));
                return;
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => return,
            Err(e) => {
                p.alive = false;
                p.end = Some(format!("connection lost: {e}"));
                return;
            }
        }
    }
}

pub fn run(o: &Opts, t: &[Target], prefix: &str, watch: &Watch, out: &mut Out) -> Res<bool> {
    out.line(format!(
        "idle: {} peers in rooms of two, held {:.1} s once connected, at {}",
        o.peers,
        o.hold,
        bases(t).join(", ")
    ));
    let before = watch.snap();
    let npollers = o.peers.div_ceil(1000).clamp(1, 4);
    let stop = Arc::new(AtomicBool::new(false));
    let mut txs = Vec::new();
    let mut pollers = Vec::new();
    for i in 0..npollers {
        let (tx, rx) = crossbeam_channel::unbounded();
        txs.push(tx);
        let stop = stop.clone();
        pollers.push(
            thread::Builder::new()
                .name(format!("idle-{i}"))
                .stack_size(256 * 1024)
                .spawn(move || idle_poller(rx, stop))
                .map_err(|e| format!("spawning a thread: {e}"))?,
        );
    }
    // Small client buffers: 10,000 peers at tungstenite's default 128 KiB would be
    // 1.3 GB in this process.
    let cfg = ws_config(4096);
    let mut connected = 0u64;
    let mut failed: BTreeMap<String, u64> = BTreeMap::new();
    let mut consecutive_failures = 0;
    let mut connect_lat = Vec::with_capacity(o.peers);
    let mut gave_up = false;
    out.progress(format!(
        "connecting {} peers ({} poller threads)",
        o.peers, npollers
    ));
    let c0 = Instant::now();
    for i in 0..o.peers {
        let room = format!("{prefix}-i{}", i / 2);
        let peer = if i % 2 == 0 { "a" } else { "b" };
        let s0 = now_ns();
        match connect(pick(t, i), &room, peer, cfg, o.connect_timeout) {
            Ok(s) => {
                connect_lat.push(now_ns() - s0);
                connected += 1;
                consecutive_failures = 0;
                let _ = txs[i % npollers].send((i, s.ws));
            }
            Err(e) => {
                *failed.entry(e.key()).or_default() += 1;
                consecutive_failures += 1;
                if consecutive_failures >= 50 {
                    gave_up = true;
                    break;
                }
            }
        }
        if !o.json && (i + 1) % 1000 == 0 {
            eprintln!("  .. {} / {} connected", connected, o.peers);
        }
    }
    drop(txs);
    let connect_secs = c0.elapsed().as_secs_f64();
    let held = watch.snap();
    out.progress(format!(
        "{connected} connected in {connect_secs:.2} s; holding for {:.1} s",
        o.hold
    ));
    thread::sleep(Duration::from_secs_f64(o.hold));
    let after = watch.snap();
    stop.store(true, Ordering::SeqCst);
    let mut st = IdleStats::default();
    for p in pollers {
        let s = p.join().unwrap_or_else(|_| IdleStats {
            poll_error: Some("poller thread panicked".into()),
            ..IdleStats::default()
        });
        st.alive += s.alive;
        st.pings += s.pings;
        for (k, v) in s.messages {
            *st.messages.entry(k).or_default() += v;
        }
        for (k, v) in s.dropped {
            *st.dropped.entry(k).or_default() += v;
        }
        if s.poll_error.is_some() {
            st.poll_error = s.poll_error;
        }
        st.peers.extend(s.peers);
        st.open.extend(s.open);
    }
    // A close frame each, no waiting: thousands of closes go out at once, and the
    // server ends those sessions.
    for ws in &mut st.open {
        let _ = ws.close(None);
        let _ = ws.flush();
    }
    st.open.clear();
    // A `peer_left` for a partner this tool still holds is a server-side anomaly
    // (the server ended a session whose client is still connected).
    let mut alive = vec![false; o.peers];
    for &(i, a, _) in &st.peers {
        alive[i] = a;
    }
    let spurious: Vec<usize> = st
        .peers
        .iter()
        .filter(|&&(i, _, left)| left > 0 && alive.get(i ^ 1).copied().unwrap_or(false))
        .map(|&(i, _, _)| i)
        .collect();
    let lat = Summary::of(connect_lat, None);
    let ok = connected == o.peers as u64
        && st.alive == connected
        && st.poll_error.is_none()
        && spurious.is_empty();
    out.line(format!(
        "connected: {} of {} in {connect_secs:.2} s ({} peers/s); connect->existing_peers {}",
        int(connected),
        int(o.peers as u64),
        int((connected as f64 / connect_secs.max(1e-9)) as u64),
        lat.line()
    ));
    for (k, v) in &failed {
        out.line(format!("  not connected: {v} x {k}{}", close_hint(k)));
    }
    if gave_up {
        out.line("  gave up after 50 failures in a row");
    }
    out.line(format!(
        "stayed connected for the {:.1} s hold: {} of {} -> {}",
        o.hold,
        int(st.alive),
        int(connected),
        if ok { "OK" } else { "FAILED" }
    ));
    if t.len() > 1 {
        // Peer i went through url[i % n]: a room's two peers on two instances.
        let mut per_url = vec![(0u64, 0u64); t.len()];
        for &(i, alive, _) in &st.peers {
            per_url[i % t.len()].0 += 1;
            per_url[i % t.len()].1 += u64::from(alive);
        }
        let line: Vec<String> = t
            .iter()
            .zip(&per_url)
            .map(|(t, (c, s))| format!("{} {c} connected, {s} stayed", t.base()))
            .collect();
        out.line(format!("  per URL: {}", line.join("; ")));
        let list: Vec<Value> = t
            .iter()
            .zip(&per_url)
            .map(|(t, (c, s))| json!({"url": t.base(), "connected": c, "stayed_connected": s}))
            .collect();
        out.set("spread", json!({"per_url": list}));
    }
    for (k, v) in &st.dropped {
        out.line(format!("  dropped: {v} x {k}{}", close_hint(k)));
    }
    if let Some(e) = &st.poll_error {
        out.line(format!("  poll(2) failed: {e}"));
    }
    if !spurious.is_empty() {
        out.line(format!(
            "  {} peers got peer_left for a partner this tool still holds open (server-side anomaly), e.g. rooms {}",
            spurious.len(),
            spurious
                .iter()
                .take(5)
                .map(|i| format!("{prefix}-i{}", i / 2))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.line(format!(
        "received while held: {} WebSocket pings (answered), messages {:?}",
        int(st.pings),
        st.messages
    ));
    // Memory: the server's RSS per connected peer, and the machine's MemAvailable
    // drop (which also holds the kernel's socket buffers and this process).
    let mut mem = serde_json::Map::new();
    if let (Some(b), Some(h), Some(a)) = (before.server, held.server, after.server) {
        let per_peer = if connected > 0 {
            h.rss_kib.saturating_sub(b.rss_kib) as f64 / connected as f64
        } else {
            0.0
        };
        let (cpu_s, cpu_pct) = cpu(&h, &a);
        out.line(format!(
            "server pid {} ({}):",
            watch.server_pid.unwrap_or(0),
            watch.server_name().unwrap_or_default()
        ));
        out.line(format!("  before       {}", snap_line(&b)));
        out.line(format!("  connected    {}", snap_line(&h)));
        out.line(format!("  after hold   {}", snap_line(&a)));
        out.line(format!(
            "  RSS per connected peer: {per_peer:.1} KiB; CPU during the hold {cpu_s:.2} s ({cpu_pct:.1}% of one core)"
        ));
        let reused = b.hwm_kib > b.rss_kib + b.rss_kib / 2 + 1024;
        if reused {
            out.line(format!(
                "  note: before this run the server's RSS ({}) was well below its high-water mark ({}): memory from earlier load is kept by its allocator and reused, so the per-peer figure is low; restart the server for a clean one",
                mib(b.rss_kib),
                mib(b.hwm_kib)
            ));
        }
        out.set(
            "server",
            json!({"pid": watch.server_pid, "before": snap_json(&b), "connected": snap_json(&h),
                   "rss_reused_from_earlier_load": reused,
                   "after": snap_json(&a), "rss_per_peer_kib": round1(per_peer),
                   "cpu_s": round3(cpu_s), "cpu_pct": round1(cpu_pct)}),
        );
        if let (Some(m0), Some(m1), Some(o0), Some(o1)) = (
            before.mem_available_kib,
            held.mem_available_kib,
            before.own,
            held.own,
        ) {
            let drop = m0.saturating_sub(m1);
            let own = o1.rss_kib.saturating_sub(o0.rss_kib);
            let server = h.rss_kib.saturating_sub(b.rss_kib);
            let rest = drop.saturating_sub(own + server);
            out.line(format!(
                "  machine MemAvailable dropped {} while connecting: server RSS +{}, loadgen RSS +{}, the rest ({}, {:.1} KiB per peer) is mostly kernel: both ends' sockets and the server's thread stacks and page tables",
                mib(drop),
                mib(server),
                mib(own),
                mib(rest),
                if connected > 0 { rest as f64 / connected as f64 } else { 0.0 }
            ));
            mem.insert("mem_available_drop_kib".into(), json!(drop));
            mem.insert("server_rss_delta_kib".into(), json!(server));
            mem.insert("loadgen_rss_delta_kib".into(), json!(own));
            mem.insert("rest_kib".into(), json!(rest));
        }
    } else if watch.server_pid.is_some() {
        out.line("server: /proc figures unavailable (did the server exit?)");
    }
    if let (Some(o0), Some(o1)) = (held.own, after.own) {
        let (cpu_s, cpu_pct) = cpu(&o0, &o1);
        out.line(format!(
            "loadgen: RSS {}, CPU during the hold {cpu_s:.2} s ({cpu_pct:.1}% of one core)",
            mib(o1.rss_kib)
        ));
        out.set(
            "loadgen",
            json!({"rss_kib": o1.rss_kib, "cpu_s": round3(cpu_s), "cpu_pct": round1(cpu_pct)}),
        );
    }
    out.set("params", json!({"peers": o.peers, "hold_secs": o.hold}));
    out.set("connected", json!(connected));
    out.set("stayed_connected", json!(st.alive));
    out.set("connect_secs", json!(round3(connect_secs)));
    out.set("connect_us", lat.json());
    out.set("not_connected", json!(failed));
    out.set("dropped", json!(st.dropped));
    out.set("spurious_peer_left", json!(spurious.len()));
    out.set("pings_answered", json!(st.pings));
    out.set("messages", json!(st.messages));
    if !mem.is_empty() {
        out.set("memory", Value::Object(mem));
    }
    out.set("ok", json!(ok));
    Ok(ok)
}
