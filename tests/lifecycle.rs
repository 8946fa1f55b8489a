//! PROTOCOL.md §3: session lifecycle (existing_peers, peer_joined, peer_left,
//! ordering, duplicate peer ids, room isolation).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn joined(peer: &str) -> serde_json::Value {
    json!({"type": "peer_joined", "peer_id": peer})
}

fn left(peer: &str) -> serde_json::Value {
    json!({"type": "peer_left", "peer_id": peer})
}

#[test]
fn first_peer_gets_empty_existing_peers() {
    let server = start();
    let _a = Client::join_expect(server.local_addr(), "room", "a", &[]);
}

#[test]
fn existing_peers_lists_earlier_peers_in_join_order() {
    let server = start();
    let addr = server.local_addr();
    let _z = Client::join_expect(addr, "room", "zed", &[]);
    let _a = Client::join_expect(addr, "room", "alpha", &["zed"]);
    let _m = Client::join_expect(addr, "room", "mid", &["zed", "alpha"]);
    let _b = Client::join_expect(addr, "room", "beta", &["zed", "alpha", "mid"]);
}

#[test]
fn existing_peers_omits_peers_that_left() {
    let server = start();
    let addr = server.local_addr();
    let mut a = Client::join_expect(addr, "room", "a", &[]);
    let b = Client::join_expect(addr, "room", "b", &["a"]);
    let _c = Client::join_expect(addr, "room", "c", &["a", "b"]);
    a.expect_json(joined("b"));
    a.expect_json(joined("c"));
    b.close(1000);
    a.expect_json(left("b"));
    let _d = Client::join_expect(addr, "room", "d", &["a", "c"]);
}

#[test]
fn peer_joined_is_sent_to_every_other_peer() {
    let server = start();
    let addr = server.local_addr();
    let mut a = Client::join_expect(addr, "room", "a", &[]);
    let mut b = Client::join_expect(addr, "room", "b", &["a"]);
    a.expect_json(joined("b"));
    let mut c = Client::join_expect(addr, "room", "c", &["a", "b"]);
    a.expect_json(joined("c"));
    b.expect_json(joined("c"));
    // The newcomer is not told about itself.
    c.expect_silence(Duration::from_millis(300));
}

#[test]
fn peer_ids_are_case_sensitive() {
    let server = start();
    let addr = server.local_addr();
    let mut lower = Client::join_expect(addr, "room", "alice", &[]);
    let _upper = Client::join_expect(addr, "room", "Alice", &["alice"]);
    lower.expect_json(joined("Alice"));
}

#[test]
fn exactly_one_peer_left_on_close() {
    let server = start();
    let addr = server.local_addr();
    let (mut a, b) = pair(addr, "room", "a", "b");
    b.close(1000);
    a.expect_json(left("b"));
    a.expect_silence(Duration::from_millis(500));
}

#[test]
fn client_close_is_echoed_with_same_code() {
    let server = start();
    let (_a, b) = pair(server.local_addr(), "room", "a", "b");
    b.close(4000); // `close` asserts the echoed code
}

#[test]
fn exactly_one_peer_left_on_tcp_drop_without_close_frame() {
    // §3 as it is with resuming off (`--resume-grace 0`); tests/resume.rs covers the hold.
    let server = start_with(|c| c.limits.resume_grace = Duration::ZERO);
    let addr = server.local_addr();
    let (mut a, b) = pair(addr, "room", "a", "b");
    b.drop_tcp();
    a.expect_json(left("b"));
    a.expect_silence(Duration::from_millis(500));
}

#[test]
fn exactly_one_peer_left_when_server_ends_a_session() {
    let server = start_with(|c| c.limits.max_message_size = 1024);
    let addr = server.local_addr();
    let (mut a, mut b) = pair(addr, "room", "a", "b");
    b.send_text(&"x".repeat(2000));
    b.expect_close(1009, "message_too_large");
    a.expect_json(left("b"));
    a.expect_silence(Duration::from_millis(500));
}

#[test]
fn every_remaining_peer_gets_peer_left() {
    let server = start();
    let addr = server.local_addr();
    let mut a = Client::join_expect(addr, "room", "a", &[]);
    let mut b = Client::join_expect(addr, "room", "b", &["a"]);
    let c = Client::join_expect(addr, "room", "c", &["a", "b"]);
    a.expect_json(joined("b"));
    a.expect_json(joined("c"));
    b.expect_json(joined("c"));
    c.close(1000);
    a.expect_json(left("c"));
    b.expect_json(left("c"));
}

#[test]
fn peer_joined_arrives_before_first_relay_from_new_peer() {
    let server = start();
    let addr = server.local_addr();
    let mut b = Client::join_expect(addr, "room", "b", &[]);
    for i in 0..20 {
        let id = format!("a{i}");
        // The newcomer sends immediately, without waiting for existing_peers.
        let mut a = Client::connect(addr, "room", &id);
        a.send_json(&candidate("b", i));
        b.expect_json(joined(&id));
        b.expect_json(relayed_candidate("b", i, &id));
        a.expect_json(json!({"type": "existing_peers", "peers": ["b"]}));
        a.close(1000);
        b.expect_json(left(&id));
    }
}

#[test]
fn nothing_from_a_peer_arrives_after_its_peer_left() {
    // §3 as it is with resuming off (`--resume-grace 0`); tests/resume.rs covers the hold.
    let server = start_with(|c| c.limits.resume_grace = Duration::ZERO);
    let addr = server.local_addr();
    let (mut a, mut b) = pair(addr, "room", "a", "b");
    for seq in 0..50 {
        a.send_json(&candidate("b", seq));
    }
    a.drop_tcp();
    for seq in 0..50 {
        b.expect_json(relayed_candidate("b", seq, "a"));
    }
    b.expect_json(left("a"));
    b.expect_silence(Duration::from_millis(500));
}

#[test]
fn messages_from_one_sender_arrive_in_send_order() {
    let server = start_with(|c| {
        c.limits.rate_per_sec = 100_000;
        c.limits.rate_burst = 100_000;
    });
    let addr = server.local_addr();
    let (mut a, mut b) = pair(addr, "room", "a", "b");
    let mut c = Client::join_expect(addr, "room", "c", &["a", "b"]);
    a.expect_json(joined("c"));
    b.expect_json(joined("c"));
    // Interleave two senders to one receiver; each sender's order must hold.
    // Batches keep the receiver's backlog well below any queue bound.
    let (mut next_a, mut next_b) = (0, 1000);
    for batch in 0..6 {
        for i in 0..50 {
            let seq = batch * 50 + i;
            a.send_json(&candidate("c", seq));
            b.send_json(&candidate("c", 1000 + seq));
        }
        for _ in 0..100 {
            let m = c.recv_json();
            match m["from_peer_id"].as_str() {
                Some("a") => {
                    assert_eq!(m, relayed_candidate("c", next_a, "a"));
                    next_a += 1;
                }
                Some("b") => {
                    assert_eq!(m, relayed_candidate("c", next_b, "b"));
                    next_b += 1;
                }
                _ => panic!("unexpected message {m}"),
            }
        }
    }
    assert_eq!((next_a, next_b), (300, 1300));
}

#[test]
fn duplicate_peer_id_is_refused_with_4409() {
    let server = start();
    let addr = server.local_addr();
    let (_a, _b) = pair(addr, "room", "a", "b");
    expect_refused(addr, "room", "a", 4409, "peer_id_taken");
}

#[test]
fn duplicate_peer_id_leaves_first_session_untouched() {
    let server = start();
    let addr = server.local_addr();
    let (mut a, mut b) = pair(addr, "room", "a", "b");
    expect_refused(addr, "room", "a", 4409, "peer_id_taken");
    expect_refused(addr, "room", "b", 4409, "peer_id_taken");
    // Relays both ways still work, and they are the next messages each side
    // sees: no peer_left / peer_joined was caused by the refused sessions.
    assert_still_works(&mut a, "a", &mut b, "b", 1);
    assert_still_works(&mut b, "b", &mut a, "a", 2);
    assert_eq!(
        get_json(addr, "/webrtc/rooms/room/peers"),
        json!({"room_id": "room", "peers": ["a", "b"]})
    );
}

#[test]
fn peer_id_can_rejoin_after_leaving() {
    let server = start();
    let addr = server.local_addr();
    let (mut a, b) = pair(addr, "room", "a", "b");
    b.close(1000);
    a.expect_json(left("b"));
    let _b2 = Client::join_expect(addr, "room", "b", &["a"]);
    a.expect_json(joined("b"));
}

#[test]
fn same_peer_id_in_two_rooms_is_two_peers() {
    let server = start();
    let addr = server.local_addr();
    let (mut a1, mut b1) = pair(addr, "r1", "a", "b");
    let (mut a2, mut b2) = pair(addr, "r2", "a", "b");
    a1.send_json(&candidate("b", 1));
    a2.send_json(&candidate("b", 2));
    b1.expect_json(relayed_candidate("b", 1, "a"));
    b2.expect_json(relayed_candidate("b", 2, "a"));
    b2.send_json(&candidate("a", 3));
    a2.expect_json(relayed_candidate("a", 3, "b"));
    a1.expect_silence(Duration::from_millis(300));
}

#[test]
fn rooms_are_isolated() {
    let server = start();
    let addr = server.local_addr();
    let (mut a, mut b) = pair(addr, "r1", "a", "b");
    let mut c = Client::join_expect(addr, "r2", "c", &[]);
    // A peer of another room is not a valid target.
    a.send_json(&candidate("c", 1));
    a.expect_error("peer_not_found");
    // Joins and leaves in r2 are not announced in r1.
    let d = Client::join_expect(addr, "r2", "d", &["c"]);
    c.expect_json(joined("d"));
    d.close(1000);
    c.expect_json(left("d"));
    assert_still_works(&mut a, "a", &mut b, "b", 2);
    assert_still_works(&mut b, "b", &mut a, "a", 3);
    c.expect_silence(Duration::from_millis(300));
}

#[test]
fn room_disappears_with_its_last_peer() {
    // §3 as it is with resuming off (`--resume-grace 0`); tests/resume.rs covers the hold.
    let server = start_with(|c| c.limits.resume_grace = Duration::ZERO);
    let addr = server.local_addr();
    let (a, b) = pair(addr, "solo", "a", "b");
    assert_eq!(
        get_json(addr, "/webrtc/rooms"),
        json!({"rooms": [{"room_id": "solo", "peer_count": 2}]})
    );
    a.close(1000);
    wait_for_json(
        addr,
        "/webrtc/rooms",
        json!({"rooms": [{"room_id": "solo", "peer_count": 1}]}),
    );
    b.drop_tcp();
    wait_for_json(addr, "/webrtc/rooms", json!({"rooms": []}));
    get(addr, "/webrtc/rooms/solo/peers").assert_error(404, "room_not_found");
}

#[test]
fn query_string_on_signaling_path_is_ignored_without_auth() {
    let server = start();
    let addr = server.local_addr();
    let mut a = Client::connect_path(addr, "/webrtc/signaling/room/a?token=whatever");
    a.expect_json(json!({"type": "existing_peers", "peers": []}));
    let _b = Client::join_expect(addr, "room", "b", &["a"]);
    a.expect_json(joined("b"));
}
