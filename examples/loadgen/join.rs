//! `join` mode: sequential joins into a room with one resident peer; the latency
//! from TCP connect to `existing_peers`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::Message;

use crate::net::{close_desc, close_hint, connect, is_timeout, polite_close, ws_config};
use crate::opts::Opts;
use crate::procs::{report_procs, Watch};
use crate::report::{int, now_ns, round3, Out, Summary};
use crate::target::{bases, pick, Target};
use crate::{Fail, Res};

pub fn run(o: &Opts, t: &[Target], prefix: &str, watch: &Watch, out: &mut Out) -> Res<bool> {
    out.line(format!(
        "join: {} sequential joins (after {} warm-up) into a room with one resident peer, at {}",
        o.joins,
        o.warmup_iters,
        bases(t).join(", ")
    ));
    let before = watch.snap();
    let room = format!("{prefix}-join");
    let cfg = ws_config(4096);
    // The resident on the first URL, joiner i on url[i % n]: with several instances,
    // most joins cross from one instance to another.
    let home = pick(t, 0);
    let resident = connect(home, &room, "resident", cfg, o.connect_timeout)
        .map_err(|e| e.explain(home.addrs[0]))?;
    // The resident reads (peer_joined / peer_left for every joiner, pings) so that
    // its socket never fills.
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    // The resident's count of `peer_left`, so that the end of the run can wait for
    // the last joiner's leave instead of guessing how long it takes.
    let left = Arc::new((Mutex::new(0u64), Condvar::new()));
    let left2 = left.clone();
    let mut rws = resident.ws;
    let reader = thread::Builder::new()
        .name("resident".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let _ = rws
                .get_mut()
                .set_read_timeout(Some(Duration::from_millis(100)));
            let mut seen: BTreeMap<String, u64> = BTreeMap::new();
            let mut end = None;
            while !stop2.load(Ordering::SeqCst) {
                match rws.read() {
                    Ok(Message::Text(t)) => {
                        let kind = serde_json::from_str::<Value>(t.as_str())
                            .ok()
                            .and_then(|v| v["type"].as_str().map(str::to_string))
                            .unwrap_or_else(|| "not JSON".into());
                        if kind == "peer_left" {
                            let (count, changed) = &*left2;
                            *count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                            changed.notify_all();
                        }
                        *seen.entry(kind).or_default() += 1;
                    }
                    Ok(Message::Close(f)) => {
                        end = Some(close_desc(f));
                        break;
                    }
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
                    Err(e) => {
                        end = Some(e.to_string());
                        break;
                    }
                }
            }
            if end.is_none() {
                polite_close(&mut rws, Duration::from_millis(500));
            }
            (seen, end)
        })
        .map_err(|e| format!("spawning a thread: {e}"))?;
    let mut samples = Vec::with_capacity(o.joins);
    let mut failed: BTreeMap<String, u64> = BTreeMap::new();
    let mut wrong_peers = 0u64;
    let mut m0 = watch.snap();
    let mut t0 = Instant::now();
    let mut consecutive = 0;
    let mut per_url: Vec<Vec<u64>> = vec![Vec::new(); t.len()];
    let mut admitted = 0u64;
    for i in 0..o.warmup_iters + o.joins {
        if i == o.warmup_iters {
            m0 = watch.snap();
            t0 = Instant::now();
        }
        let start = now_ns();
        let via = pick(t, i);
        match connect(via, &room, &format!("j{i}"), cfg, o.connect_timeout) {
            Ok(mut s) => {
                let lat = now_ns() - start;
                consecutive = 0;
                admitted += 1;
                if s.existing_peers != ["resident"] {
                    wrong_peers += 1;
                }
                if i >= o.warmup_iters {
                    samples.push(lat);
                    per_url[i % t.len()].push(lat);
                }
                polite_close(&mut s.ws, Duration::from_secs(2));
            }
            Err(e) => {
                if i == 0 {
                    stop.store(true, Ordering::SeqCst);
                    return Err(Fail::Fatal(format!(
                        "the first join failed: {}",
                        e.explain(via.addrs[0])
                    )));
                }
                *failed.entry(e.key()).or_default() += 1;
                consecutive += 1;
                if consecutive >= 50 {
                    break;
                }
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let m1 = watch.snap();
    // Every admitted joiner's leave reaches the resident; bounded, in case one does
    // not (the check then reports it).
    {
        let (count, changed) = &*left;
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
        while *n < admitted {
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                break;
            }
            n = changed
                .wait_timeout(n, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let (seen, end) = reader
        .join()
        .unwrap_or_else(|_| (BTreeMap::new(), Some("resident thread panicked".into())));
    let n = samples.len() as u64;
    let lat = Summary::of(samples, None);
    let attempts = (o.warmup_iters + o.joins) as u64;
    let joined_seen = seen.get("peer_joined").copied().unwrap_or(0);
    let nfailed: u64 = failed.values().sum();
    let ok = nfailed == 0 && wrong_peers == 0 && end.is_none() && joined_seen == attempts;
    out.line(format!("connect->existing_peers: {}", lat.line()));
    if t.len() > 1 {
        let mut list = Vec::new();
        for (target, samples) in t.iter().zip(per_url) {
            let s = Summary::of(samples, None);
            out.line(format!("  via {}: {}", target.base(), s.line()));
            list.push(json!({"url": target.base(), "join_us": s.json()}));
        }
        out.set("spread", json!({"per_url": list}));
    }
    out.line(format!(
        "{} joins in {secs:.2} s = {} joins/s (each followed by a close handshake)",
        int(n),
        int((n as f64 / secs.max(1e-9)) as u64)
    ));
    out.line(format!(
        "check: failed {nfailed}, existing_peers not [\"resident\"] {wrong_peers}, resident saw {:?} of {attempts} joins{} -> {}",
        seen,
        end.as_ref().map(|e| format!(", resident lost: {e}")).unwrap_or_default(),
        if ok { "OK" } else { "FAILED" }
    ));
    for (k, v) in &failed {
        out.line(format!("  failed: {v} x {k}{}", close_hint(k)));
    }
    report_procs(out, watch, &before, &m0, &m1);
    out.set(
        "params",
        json!({"joins": o.joins, "warmup": o.warmup_iters}),
    );
    out.set("measured_secs", json!(round3(secs)));
    out.set("join_us", lat.json());
    out.set(
        "check",
        json!({"ok": ok, "failed": failed, "wrong_existing_peers": wrong_peers,
               "resident_saw": seen, "resident_lost": end}),
    );
    out.set("ok", json!(ok));
    Ok(ok)
}
