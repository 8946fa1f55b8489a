//! The router never waits, and what that buys: a session thread that is held (not
//! scheduled, stuck) stalls nobody outside its room and loses nothing; a router that
//! dies is reported, not hidden; server messages larger than the write buffer and
//! huge bad messages are handled without spinning or dropping the sender.

mod common;

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use webrtc_signaling::protocol::{PeerId, RoomId};

/// A gate a session thread can be held at.
#[derive(Default)]
struct Gate {
    closed: Mutex<bool>,
    cond: Condvar,
    /// Set once the held thread has reached the gate.
    reached: Mutex<bool>,
    reached_cond: Condvar,
}

impl Gate {
    fn set(&self, closed: bool) {
        *self.closed.lock().unwrap() = closed;
        self.cond.notify_all();
    }

    fn pass(&self) {
        let mut closed = self.closed.lock().unwrap();
        if *closed {
            *self.reached.lock().unwrap() = true;
            self.reached_cond.notify_all();
        }
        while *closed {
            closed = self.cond.wait(closed).unwrap();
        }
    }

    fn wait_reached(&self) {
        let deadline = Instant::now() + DEADLINE;
        let mut reached = self.reached.lock().unwrap();
        while !*reached {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the held session never reached its gate");
            reached = self.reached_cond.wait_timeout(reached, left).unwrap().0;
        }
    }
}

#[test]
fn a_held_session_thread_stalls_nobody_else_and_loses_nothing() {
    let gate = Arc::new(Gate::default());
    let hook_gate = gate.clone();
    let server = start_with(|c| {
        c.limits.rate_per_sec = 0;
        c.limits.peer_queue = 8;
        // The old router waited up to this long for a full queue: far beyond DEADLINE.
        c.limits.write_timeout = Duration::from_secs(60);
        c.hooks.session_turn = Some(Arc::new(move |room: &RoomId, peer: &PeerId| {
            if room.as_str() == "held" && peer.as_str() == "h" {
                hook_gate.pass();
            }
        }));
    });
    let addr = server.local_addr();
    let (mut s, mut h) = pair(addr, "held", "s", "h");
    gate.set(true);
    // h's own message wakes its thread, which stops at the gate. (A relay to a
    // sleeping session would not wake it: the router writes it to the socket itself.)
    h.send_json(&candidate("s", 0));
    gate.wait_reached();
    // With h's thread awake and held, s's burst piles up in h's queue and then in the
    // router, and s is paused rather than anyone waiting.
    const N: u64 = 300;
    let burst: Vec<_> = (0..N).map(|i| candidate("h", i)).collect();
    s.send_batch(&burst);
    // Everyone else is served meanwhile: joins, relays both ways, REST.
    let (mut x, mut y) = pair(addr, "elsewhere", "x", "y");
    x.send_json(&candidate("y", 1));
    y.expect_json(relayed_candidate("y", 1, "x"));
    y.send_json(&candidate("x", 2));
    x.expect_json(relayed_candidate("x", 2, "y"));
    let rooms = get_json(addr, "/webrtc/rooms");
    assert_eq!(
        rooms,
        json!({"rooms": [{"room_id": "elsewhere", "peer_count": 2},
                         {"room_id": "held", "peer_count": 2}]})
    );
    let _z = Client::join_expect(addr, "third", "z", &[]);
    // Released, h gets every message, in order, and s works again.
    gate.set(false);
    for i in 0..N {
        h.expect_json(relayed_candidate("h", i, "s"));
    }
    s.expect_json(relayed_candidate("s", 0, "h"));
    assert_still_works(&mut s, "s", &mut h, "h", N);
}

#[test]
fn a_router_failure_ends_every_session_and_turns_healthz_to_503() {
    let server = start_with(|c| {
        c.hooks.router_join = Some(Arc::new(|room: &RoomId| {
            if room.as_str() == "boom" {
                panic!("test: router failure on purpose");
            }
        }));
    });
    let addr = server.local_addr();
    let mut a = Client::join_expect(addr, "fine", "a", &[]);
    assert_eq!(get_json(addr, "/healthz"), json!({"status": "ok"}));
    assert!(!server.failed());
    // The join that kills the router is refused, the open session is told to go away.
    expect_refused(addr, "boom", "b", 1001, "going_away");
    a.expect_close(1001, "going_away");
    server.wait_failure();
    assert!(server.failed());
    get(addr, "/healthz").assert_error(503, "router_failed");
    get(addr, "/webrtc/rooms").assert_some_error(503);
    expect_refused(addr, "fine", "c", 1001, "going_away");
}

#[test]
fn existing_peers_longer_than_the_write_buffer_arrives_whole() {
    let server = start_with(|c| c.limits.write_buffer = 64);
    let addr = server.local_addr();
    let names: Vec<String> = (0..12)
        .map(|i| format!("{i:02}-{}", "p".repeat(40)))
        .collect();
    let mut held = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let before: Vec<&str> = names[..i].iter().map(String::as_str).collect();
        held.push(Client::join_expect(addr, "big", n, &before));
    }
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut last = Client::join_expect(addr, "big", "last", &all);
    last.send_json(&json!({"type": "ping"}));
    last.expect_json(json!({"type": "pong"}));
}

#[test]
fn a_huge_unknown_type_earns_a_short_error_not_a_slow_consumer_close() {
    let server = start_with(|c| c.limits.max_message_size = 256 * 1024);
    let addr = server.local_addr();
    let (mut a, mut b) = pair(addr, "room", "a", "b");
    let huge = "t".repeat(200 * 1024);
    for _ in 0..5 {
        a.send_json(&json!({ "type": huge }));
    }
    for _ in 0..5 {
        let e = a.recv_json();
        assert_error_msg(&e, "unknown_type");
        assert!(
            e.to_string().len() < 512,
            "the error echoes a short piece only"
        );
    }
    assert_still_works(&mut a, "a", &mut b, "b", 1);
}
