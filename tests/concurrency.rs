//! Many peers in many rooms relaying concurrently while other peers join and
//! leave: every message to a peer that stayed is delivered exactly once, in
//! per-sender order, and every join of a leaving peer is matched by one leave.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

const ROOMS: usize = 20;
const STABLE_PER_ROOM: usize = 10;
const MESSAGES_PER_PEER: u64 = 100;
const CHURNERS_PER_ROOM: usize = 2;
const CHURN_CYCLES: usize = 5;
const CHURN_MESSAGES: u64 = 5;
/// Bound on the whole test; every wait below is bounded by it.
const TEST_DEADLINE: Duration = Duration::from_secs(120);

/// A barrier whose wait gives up at a deadline (so one failing thread cannot
/// hang the others).
struct Gate {
    arrived: Mutex<usize>,
    cv: Condvar,
    n: usize,
}

impl Gate {
    fn new(n: usize) -> Arc<Gate> {
        Arc::new(Gate {
            arrived: Mutex::new(0),
            cv: Condvar::new(),
            n,
        })
    }

    fn wait(&self, deadline: Instant) {
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.cv.notify_all();
        while *arrived < self.n {
            let now = Instant::now();
            assert!(
                now < deadline,
                "gate: only {} of {} threads arrived",
                *arrived,
                self.n
            );
            arrived = self.cv.wait_timeout(arrived, deadline - now).unwrap().0;
        }
    }
}

fn stable_id(room: usize, i: usize) -> String {
    format!("r{room}-s{i}")
}

fn churn_id(room: usize, c: usize, cycle: usize) -> String {
    format!("r{room}-c{c}-{cycle}")
}

fn room_name(room: usize) -> String {
    format!("room{room}")
}

/// (from, to) -> sequence numbers sent, in order.
type SentLog = Vec<((String, String), u64)>;

/// Read messages until the close echo; only peer_joined / peer_left may arrive.
fn close_and_drain(mut c: Client, deadline: Instant) {
    c.ws.close(None).expect("send close");
    loop {
        match c.next_until(deadline) {
            Next::Msg(Message::Close(_)) => {}
            Next::Msg(Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                let kind = v["type"].as_str().unwrap_or("");
                assert!(
                    kind == "peer_joined" || kind == "peer_left",
                    "{}: unexpected {v}",
                    c.name
                );
            }
            Next::Msg(_) => continue,
            Next::Ended(_) => return,
            Next::TimedOut => panic!("{}: close not completed", c.name),
        }
    }
}

/// What one stable peer saw, in arrival order (after existing_peers).
struct Seen {
    me: String,
    existing: Vec<String>,
    events: Vec<Value>,
}

fn stable_peer(
    addr: SocketAddr,
    room: usize,
    i: usize,
    start: Arc<Gate>,
    end: Arc<Gate>,
    deadline: Instant,
) -> (SentLog, Seen) {
    let me = stable_id(room, i);
    let mates: Vec<String> = (0..STABLE_PER_ROOM)
        .filter(|&j| j != i)
        .map(|j| stable_id(room, j))
        .collect();
    let churners: BTreeSet<String> = (0..CHURNERS_PER_ROOM)
        .flat_map(|c| (0..CHURN_CYCLES).map(move |cycle| churn_id(room, c, cycle)))
        .collect();
    let (mut reader, existing) = Client::join(addr, &room_name(room), &me);
    let mut writer =
        WebSocket::from_raw_socket(reader.stream().try_clone().unwrap(), Role::Client, None);

    // Reader: until every stable mate said "done" and every churner left.
    let mates_done: BTreeSet<String> = mates.iter().cloned().collect();
    let reader_thread = thread::spawn(move || {
        let mut events = Vec::new();
        let mut done = BTreeSet::new();
        let mut left = BTreeSet::new();
        while done != mates_done || left != churners {
            let v = match reader.next_until(deadline) {
                Next::Msg(Message::Text(t)) => serde_json::from_str::<Value>(t.as_str()).unwrap(),
                Next::Msg(Message::Ping(_)) | Next::Msg(Message::Pong(_)) => continue,
                Next::Msg(m) => panic!("{}: unexpected {m:?}", reader.name),
                Next::TimedOut => panic!(
                    "{}: timed out; done from {done:?}, churners left {left:?}",
                    reader.name
                ),
                Next::Ended(e) => panic!("{}: connection ended: {e}", reader.name),
            };
            if v["type"] == json!("peer_left") {
                left.insert(v["peer_id"].as_str().unwrap().to_string());
            }
            if v["candidate"]["done"] == json!(true) {
                done.insert(v["from_peer_id"].as_str().unwrap().to_string());
            }
            events.push(v);
        }
        (reader, events)
    });

    start.wait(deadline);
    let mut rng = XorShift::new(1 + (room * 1000 + i) as u64);
    let mut sent = Vec::new();
    let mut send = |to: &str, msg: Value| {
        writer
            .send(Message::text(msg.to_string()))
            .unwrap_or_else(|e| panic!("send to {to}: {e}"))
    };
    for seq in 0..MESSAGES_PER_PEER {
        let to = &mates[rng.below(mates.len())];
        send(to, candidate(to, seq));
        sent.push(((me.clone(), to.clone()), seq));
    }
    for to in &mates {
        send(
            to,
            json!({"type": "ice_candidate", "candidate": {"done": true}, "target_peer_id": to}),
        );
    }
    let (reader, events) = reader_thread.join().expect("reader thread");
    // Stay in the room until every stable peer has seen everything.
    end.wait(deadline);
    drop(reader);
    (
        sent,
        Seen {
            me,
            existing,
            events,
        },
    )
}

fn churner(
    addr: SocketAddr,
    room: usize,
    c: usize,
    start: Arc<Gate>,
    deadline: Instant,
) -> SentLog {
    let stable: BTreeSet<String> = (0..STABLE_PER_ROOM).map(|i| stable_id(room, i)).collect();
    let stable_list: Vec<String> = stable.iter().cloned().collect();
    let mut rng = XorShift::new(7 + (room * 100 + c) as u64);
    let mut sent = Vec::new();
    start.wait(deadline);
    for cycle in 0..CHURN_CYCLES {
        let me = churn_id(room, c, cycle);
        let (mut client, existing) = Client::join(addr, &room_name(room), &me);
        let existing: BTreeSet<String> = existing.into_iter().collect();
        assert!(
            existing.is_superset(&stable),
            "{me}: existing_peers {existing:?} lacks stable peers"
        );
        for seq in 0..CHURN_MESSAGES {
            let to = &stable_list[rng.below(stable_list.len())];
            client.send_json(&candidate(to, seq));
            sent.push(((me.clone(), to.clone()), seq));
        }
        close_and_drain(client, deadline);
    }
    sent
}

/// Check one stable peer's view; returns the relayed sequence numbers it got,
/// keyed by (from, to).
fn check_view(seen: &Seen, room: usize) -> HashMap<(String, String), Vec<u64>> {
    let me = &seen.me;
    let stable: BTreeSet<String> = (0..STABLE_PER_ROOM)
        .map(|i| stable_id(room, i))
        .filter(|s| s != me)
        .collect();
    let mut present: BTreeSet<String> = BTreeSet::new();
    for p in &seen.existing {
        assert!(
            stable.contains(p),
            "{me}: existing_peers has {p}, not a stable peer of the room"
        );
        assert!(
            present.insert(p.clone()),
            "{me}: {p} twice in existing_peers"
        );
    }
    let mut joined: BTreeMap<String, usize> = BTreeMap::new();
    let mut left: BTreeMap<String, usize> = BTreeMap::new();
    let mut got: HashMap<(String, String), Vec<u64>> = HashMap::new();
    for v in &seen.events {
        match v["type"].as_str().unwrap() {
            "peer_joined" => {
                let p = v["peer_id"].as_str().unwrap().to_string();
                assert_eq!(v, &json!({"type": "peer_joined", "peer_id": p}));
                assert!(
                    present.insert(p.clone()),
                    "{me}: peer_joined {p} while present"
                );
                *joined.entry(p).or_default() += 1;
            }
            "peer_left" => {
                let p = v["peer_id"].as_str().unwrap().to_string();
                assert_eq!(v, &json!({"type": "peer_left", "peer_id": p}));
                assert!(present.remove(&p), "{me}: peer_left {p} while not present");
                assert!(!stable.contains(&p), "{me}: stable peer {p} left");
                *left.entry(p).or_default() += 1;
            }
            "ice_candidate" => {
                let from = v["from_peer_id"].as_str().unwrap().to_string();
                assert!(
                    present.contains(&from),
                    "{me}: relay from {from} outside its membership: {v}"
                );
                if v["candidate"]["done"] == json!(true) {
                    continue;
                }
                let seq = v["candidate"]["seq"].as_u64().unwrap();
                assert_eq!(
                    v,
                    &relayed_candidate(me, seq, &from),
                    "{me}: relayed message altered"
                );
                got.entry((from, me.clone())).or_default().push(seq);
            }
            other => panic!("{me}: unexpected message type {other}: {v}"),
        }
    }
    let all_stable_seen: BTreeSet<String> = seen
        .existing
        .iter()
        .cloned()
        .chain(joined.keys().filter(|p| stable.contains(*p)).cloned())
        .collect();
    assert_eq!(
        all_stable_seen, stable,
        "{me}: did not learn of every stable room-mate"
    );
    for (p, n) in &joined {
        if !stable.contains(p) {
            assert_eq!(
                (*n, left.get(p).copied().unwrap_or(0)),
                (1, 1),
                "{me}: joins/leaves of {p}"
            );
        }
    }
    let churners: usize = joined.keys().filter(|p| !stable.contains(*p)).count();
    assert_eq!(
        churners,
        CHURNERS_PER_ROOM * CHURN_CYCLES,
        "{me}: churner joins seen"
    );
    got
}

#[test]
fn relay_is_exactly_once_and_ordered_under_churn() {
    let server = start_with(|c| {
        c.limits.rate_per_sec = 1_000_000;
        c.limits.rate_burst = 1_000_000;
        c.limits.peer_queue = 4096;
        c.limits.max_connections = 1024;
        c.limits.max_room_peers = 64;
        c.limits.idle_timeout = Duration::from_secs(3600);
        c.limits.ping_interval = Duration::ZERO;
    });
    let addr = server.local_addr();
    let deadline = Instant::now() + TEST_DEADLINE;
    let stable_count = ROOMS * STABLE_PER_ROOM;
    let start = Gate::new(stable_count + ROOMS * CHURNERS_PER_ROOM);
    let end = Gate::new(stable_count);

    let mut stable_threads = Vec::new();
    for room in 0..ROOMS {
        for i in 0..STABLE_PER_ROOM {
            let (start, end) = (start.clone(), end.clone());
            let t = thread::Builder::new()
                .stack_size(512 * 1024)
                .spawn(move || (room, stable_peer(addr, room, i, start, end, deadline)))
                .unwrap();
            stable_threads.push(t);
        }
    }
    let mut churn_threads = Vec::new();
    for room in 0..ROOMS {
        for c in 0..CHURNERS_PER_ROOM {
            let start = start.clone();
            let t = thread::Builder::new()
                .stack_size(512 * 1024)
                .spawn(move || churner(addr, room, c, start, deadline))
                .unwrap();
            churn_threads.push(t);
        }
    }

    let mut expected: HashMap<(String, String), Vec<u64>> = HashMap::new();
    let mut received: HashMap<(String, String), Vec<u64>> = HashMap::new();
    for t in churn_threads {
        for (key, seq) in t.join().expect("churner thread") {
            expected.entry(key).or_default().push(seq);
        }
    }
    for t in stable_threads {
        let (room, (sent, seen)) = t.join().expect("stable peer thread");
        for (key, seq) in sent {
            expected.entry(key).or_default().push(seq);
        }
        received.extend(check_view(&seen, room));
    }
    let total: usize = expected.values().map(Vec::len).sum();
    assert_eq!(
        total as u64,
        (ROOMS * STABLE_PER_ROOM) as u64 * MESSAGES_PER_PEER
            + (ROOMS * CHURNERS_PER_ROOM * CHURN_CYCLES) as u64 * CHURN_MESSAGES
    );
    let mut keys: Vec<&(String, String)> = expected.keys().chain(received.keys()).collect();
    keys.sort();
    keys.dedup();
    let mismatches: Vec<String> = keys
        .into_iter()
        .filter(|k| received.get(*k) != expected.get(*k))
        .map(|k| {
            format!(
                "{} -> {}: sent {:?}, received {:?}",
                k.0,
                k.1,
                expected.get(k),
                received.get(k)
            )
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} sender/receiver pairs differ (first 10):\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(10)].join("\n")
    );
}
