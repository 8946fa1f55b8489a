//! `soak` mode, the figures: sums the threads' tallies, matches every stream a
//! sender sent with its receiver's record (lost, or lost to a departure), and prints
//! the check, the per-URL split and the JSON.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use crate::net::close_hint;
use crate::opts::Opts;
use crate::procs::{report_procs, Snap, Watch};
use crate::report::{int, round3, Out, Samples, Summary};
use crate::soak::Truth;
use crate::soak_peer::{Peer, Slot, Tally};
use crate::soak_worker::{Expectation, WorkerEnd};
use crate::target::Target;

/// The controller's counts: joins, leaves, and what `existing_peers` and the room
/// events should have been.
pub struct Churn {
    /// Successful joins per URL, the first ones included.
    pub joins: Vec<u64>,
    pub leaves: Vec<u64>,
    pub not_connected: BTreeMap<String, u64>,
    pub gave_up: bool,
    pub rejoin_failed: BTreeMap<String, u64>,
    pub inconsistent: u64,
    pub examples: Vec<String>,
    /// One per present room-mate at each join and leave.
    pub joined_expected: u64,
    pub left_expected: u64,
    /// TCP connect to `existing_peers`, every join.
    pub connect_ns: Vec<u64>,
    pub handover_failed: u64,
    /// Churn ticks skipped because joins fell more than a second behind.
    pub skipped: u64,
}

impl Churn {
    pub fn new(urls: usize) -> Churn {
        Churn {
            joins: vec![0; urls],
            leaves: vec![0; urls],
            not_connected: BTreeMap::new(),
            gave_up: false,
            rejoin_failed: BTreeMap::new(),
            inconsistent: 0,
            examples: Vec::new(),
            joined_expected: 0,
            left_expected: 0,
            connect_ns: Vec::new(),
            handover_failed: 0,
            skipped: 0,
        }
    }
}

pub struct Run {
    pub truth: Vec<Truth>,
    pub ends: Vec<WorkerEnd>,
    pub away: Vec<Peer>,
    pub tallies: Vec<Tally>,
    pub churn: Churn,
    pub expectations: Vec<Expectation>,
    pub connected: usize,
    pub connect_secs: f64,
    pub secs: f64,
}

/// One URL's sums (or the run's, in `total`).
#[derive(Default)]
struct Sums {
    sent: u64,
    received: u64,
    duplicated: u64,
    reordered: u64,
    after_left: u64,
    before_joined: u64,
    invalid: u64,
    joined_seen: u64,
    left_seen: u64,
    view_anomalies: u64,
    lost: u64,
    lost_to_departure: u64,
    errors: BTreeMap<String, u64>,
    closes: BTreeMap<String, u64>,
    other: BTreeMap<String, u64>,
    examples: Vec<String>,
}

impl Sums {
    fn add(&mut self, t: &Tally) {
        self.sent += t.sent;
        self.received += t.received;
        self.duplicated += t.duplicated;
        self.reordered += t.reordered;
        self.after_left += t.after_left;
        self.before_joined += t.before_joined;
        self.invalid += t.invalid;
        self.joined_seen += t.joined_seen;
        self.left_seen += t.left_seen;
        self.view_anomalies += t.view_anomalies;
        for (map, from) in [
            (&mut self.errors, &t.errors),
            (&mut self.closes, &t.closes),
            (&mut self.other, &t.other),
        ] {
            for (k, v) in from {
                *map.entry(k.clone()).or_default() += v;
            }
        }
        self.examples.extend(t.examples.iter().cloned());
    }
}

pub fn report(
    o: &Opts,
    t: &[Target],
    run: &Run,
    watch: &Watch,
    (before, m0, m1): (&Snap, &Snap, &Snap),
    out: &mut Out,
) -> bool {
    let peers: HashMap<Slot, &Peer> = run
        .ends
        .iter()
        .flat_map(|e| e.peers.iter())
        .chain(run.away.iter())
        .map(|p| (p.slot, p))
        .collect();
    let mut per_url: Vec<Sums> = (0..t.len()).map(|_| Sums::default()).collect();
    let mut total = Sums::default();
    let mut samples: Vec<Vec<&Samples>> = vec![Vec::new(); t.len()];
    // Each thread keeps one tally per URL, in URL order.
    let threads = run.ends.iter().map(|e| &e.tallies).chain([&run.tallies]);
    for tally in threads.flat_map(|list| list.iter().enumerate()) {
        let (url, tally) = tally;
        per_url[url].add(tally);
        total.add(tally);
        samples[url].push(&tally.latency);
    }
    // Every stream a sender sent, against what its receiver recorded. A stream may
    // lose relays only when one of its two sessions ended before the run did.
    let live = |slot: Slot, session: u32| {
        run.truth[slot].live(session) && peers.get(&slot).is_some_and(|p| p.alive())
    };
    let mut pairs: BTreeMap<(Slot, Slot), (u64, u64, u64)> = BTreeMap::new();
    for p in peers.values() {
        for s in &p.tx {
            let received = peers
                .get(&s.to)
                .and_then(|r| r.rx.get(&(p.slot, s.session, s.to_session)))
                .map_or(0, |r| r.received);
            let missing = s.sent.saturating_sub(received);
            let pair = pairs.entry((p.slot, s.to)).or_default();
            pair.0 += s.sent;
            pair.1 += received;
            if live(p.slot, s.session) && live(s.to, s.to_session) {
                per_url[s.url].lost += missing;
                pair.2 += missing;
            } else {
                per_url[s.url].lost_to_departure += missing;
            }
        }
    }
    let unsettled = run
        .expectations
        .iter()
        .filter(|e| {
            peers
                .get(&e.slot)
                .is_none_or(|p| !p.settled(&e.streams, &e.mates))
        })
        .count();
    total.lost = per_url.iter().map(|u| u.lost).sum();
    total.lost_to_departure = per_url.iter().map(|u| u.lost_to_departure).sum();
    let c = &run.churn;
    let lat = Samples::summary(samples.iter().flatten().copied());
    let joins: u64 = c.joins.iter().sum();
    let leaves: u64 = c.leaves.iter().sum();
    let rejoin_failed: u64 = c.rejoin_failed.values().sum();
    let not_found = total.errors.get("peer_not_found").copied().unwrap_or(0);
    let late: u64 = run.ends.iter().map(|e| e.late).sum();

    let mut failures = Vec::new();
    let mut fail = |cond: bool, what: String| {
        if cond {
            failures.push(what);
        }
    };
    let n = |v: u64| v > 0;
    fail(
        run.connected < o.peers,
        format!("{} peers did not connect", o.peers - run.connected),
    );
    fail(n(total.lost), format!("{} relays lost", total.lost));
    fail(
        n(total.duplicated),
        format!("{} relays duplicated", total.duplicated),
    );
    fail(
        n(total.reordered),
        format!("{} relays reordered", total.reordered),
    );
    fail(
        n(total.after_left),
        format!("{} relays after their sender's peer_left", total.after_left),
    );
    fail(
        n(total.before_joined),
        format!(
            "{} relays before their sender's peer_joined",
            total.before_joined
        ),
    );
    fail(
        n(total.invalid),
        format!("{} invalid messages", total.invalid),
    );
    fail(
        n(total.view_anomalies),
        format!(
            "{} peer_joined/peer_left that contradict the room",
            total.view_anomalies
        ),
    );
    fail(
        n(c.inconsistent),
        format!(
            "{} existing_peers inconsistent with the room",
            c.inconsistent
        ),
    );
    fail(unsettled > 0, format!("{unsettled} peers not settled within --drain (relays missing, or a wrong view of the room)"));
    fail(rejoin_failed > 0, format!("{rejoin_failed} rejoins failed"));
    fail(
        !total.closes.is_empty(),
        format!("sessions ended by the server: {:?}", total.closes),
    );
    let other_errors: BTreeMap<&String, &u64> = total
        .errors
        .iter()
        .filter(|(k, _)| *k != "peer_not_found")
        .collect();
    fail(
        !other_errors.is_empty(),
        format!("errors received: {other_errors:?}"),
    );
    fail(
        not_found > total.lost_to_departure,
        format!(
            "{not_found} peer_not_found, more than the {} relays lost to departure",
            total.lost_to_departure
        ),
    );
    fail(
        total.joined_seen > c.joined_expected,
        format!(
            "{} peer_joined seen, {} expected",
            total.joined_seen, c.joined_expected
        ),
    );
    fail(
        total.left_seen > c.left_expected,
        format!(
            "{} peer_left seen, {} expected",
            total.left_seen, c.left_expected
        ),
    );
    fail(
        n(c.handover_failed),
        format!("{} churn hand-overs timed out", c.handover_failed),
    );
    for e in run.ends.iter().filter_map(|e| e.error.as_ref()) {
        fail(true, format!("worker: {e}"));
    }
    let ok = failures.is_empty();

    let joins_lat = Summary::of(c.connect_ns.clone(), None);
    out.line(format!(
        "connected: {} of {} in {:.2} s; connect->existing_peers (every join) {}",
        int(run.connected as u64),
        int(o.peers as u64),
        run.connect_secs,
        joins_lat.line()
    ));
    for (k, v) in &c.not_connected {
        out.line(format!("  not connected: {v} x {k}{}", close_hint(k)));
    }
    if c.gave_up {
        out.line("  gave up after 50 failures in a row");
    }
    let rate = total.received as f64 / run.secs.max(1e-9);
    out.line(format!(
        "relays: sent {}, received {} ({} msgs/s) between {} sender->receiver pairs; lost {}, lost to departure {}, duplicated {}, reordered {}",
        int(total.sent),
        int(total.received),
        int(rate as u64),
        int(pairs.len() as u64),
        int(total.lost),
        int(total.lost_to_departure),
        int(total.duplicated),
        int(total.reordered)
    ));
    if late > 0 {
        out.line(format!(
            "  {} sends skipped: a worker of this tool fell more than 1 s behind its schedule (CPU-starved? see loadgen CPU)",
            int(late)
        ));
    }
    out.line(format!(
        "membership: relays after their sender's peer_left {}, before its peer_joined {}, invalid {}",
        total.after_left, total.before_joined, total.invalid
    ));
    out.line(format!("delivery latency: {}", lat.line()));
    out.line(format!(
        "churn: {} leaves, {} rejoins ({rejoin_failed} failed), existing_peers inconsistent {}; peer_left seen {} of {}, peer_joined seen {} of {}; contradictions {}; settled after the drain: {} of {} peers",
        int(leaves),
        int(joins.saturating_sub(run.connected as u64)),
        c.inconsistent,
        int(total.left_seen),
        int(c.left_expected),
        int(total.joined_seen),
        int(c.joined_expected),
        total.view_anomalies,
        int((run.expectations.len() - unsettled) as u64),
        int(run.expectations.len() as u64)
    ));
    for (k, v) in &c.rejoin_failed {
        out.line(format!("  rejoin failed: {v} x {k}{}", close_hint(k)));
    }
    for (k, v) in &total.errors {
        let why = match k.as_str() {
            "peer_not_found" => " (a relay that raced its target's leave)",
            _ => close_hint(k),
        };
        out.line(format!("  error {k} received: {v}{why}"));
    }
    for (k, v) in &total.closes {
        out.line(format!(
            "  session ended by the server: {v} x {k}{}",
            close_hint(k)
        ));
    }
    out.line("per URL (peers at the end, joins, leaves; relays sent by its peers, received by its peers; loss by sender's URL; latency of what its peers received):");
    let mut urls_json = Vec::new();
    for (u, (target, s)) in t.iter().zip(&per_url).enumerate() {
        let lat = Samples::summary(samples[u].iter().copied());
        let at_end = peers.values().filter(|p| p.url == u && p.alive()).count();
        out.line(format!(
            "  {}: peers {}, joins {}, leaves {}; sent {}, received {}; lost {} ({} to departure); p50 {} p99 {}{}",
            target.base(),
            at_end,
            c.joins[u],
            c.leaves[u],
            int(s.sent),
            int(s.received),
            s.lost,
            s.lost_to_departure,
            crate::report::dur(lat.p50),
            crate::report::dur(lat.p99),
            if s.errors.is_empty() { String::new() } else { format!("; errors {:?}", s.errors) }
        ));
        urls_json.push(json!({
            "url": target.base(), "peers_at_end": at_end, "joins": c.joins[u], "leaves": c.leaves[u],
            "sent": s.sent, "received": s.received, "lost": s.lost,
            "lost_to_departure": s.lost_to_departure, "latency_us": lat.json(),
            "errors": s.errors, "server_closes": s.closes,
        }));
    }
    out.line(format!(
        "check -> {}",
        if ok {
            "OK".to_string()
        } else {
            format!("FAILED: {}", failures.join("; "))
        }
    ));
    let examples: Vec<&String> = total.examples.iter().chain(&c.examples).take(10).collect();
    for e in &examples {
        out.line(format!("  e.g. {e}"));
    }
    let worst: Vec<Value> = pairs
        .iter()
        .filter(|(_, v)| v.2 > 0)
        .take(10)
        .map(|((a, b), v)| json!({"from": format!("p{a}"), "to": format!("p{b}"), "sent": v.0, "received": v.1, "lost": v.2}))
        .collect();
    report_procs(out, watch, before, m0, m1);
    let workers = run.ends.len();
    out.set(
        "params",
        json!({"peers": o.peers, "room_size": o.room_size, "rooms": o.peers.div_ceil(o.room_size),
               "rate": o.rate, "churn_per_sec": o.churn_per_sec, "secs": o.secs,
               "drain": o.drain, "workers": workers}),
    );
    out.set("connected", json!(run.connected));
    out.set("connect_secs", json!(round3(run.connect_secs)));
    out.set("not_connected", json!(c.not_connected));
    out.set("measured_secs", json!(round3(run.secs)));
    out.set("join_us", joins_lat.json());
    out.set(
        "relays",
        json!({"sent": total.sent, "received": total.received, "msgs_per_sec": rate.round(),
               "pairs": pairs.len(), "lost": total.lost,
               "lost_to_departure": total.lost_to_departure, "duplicated": total.duplicated,
               "reordered": total.reordered, "after_peer_left": total.after_left,
               "before_peer_joined": total.before_joined, "invalid": total.invalid,
               "late_sends_skipped": late, "pairs_with_loss": worst}),
    );
    out.set("latency_us", lat.json());
    out.set(
        "churn",
        json!({"leaves": leaves, "joins": joins, "rejoin_failed": c.rejoin_failed,
               "existing_peers_inconsistent": c.inconsistent,
               "peer_left_seen": total.left_seen, "peer_left_expected": c.left_expected,
               "peer_joined_seen": total.joined_seen, "peer_joined_expected": c.joined_expected,
               "contradictions": total.view_anomalies, "settled": run.expectations.len() - unsettled,
               "to_settle": run.expectations.len(), "ticks_skipped": c.skipped}),
    );
    out.set("errors", json!(total.errors));
    out.set("server_closes", json!(total.closes));
    out.set("other_messages", json!(total.other));
    out.set("per_url", Value::Array(urls_json));
    out.set(
        "check",
        json!({"ok": ok, "failures": failures, "examples": examples}),
    );
    out.set("ok", json!(ok));
    ok
}
