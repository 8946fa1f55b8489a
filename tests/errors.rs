//! PROTOCOL.md §5: per-message errors (session survives, nothing reaches
//! other peers) and session-ending conditions (error + close code).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tungstenite::Message;

fn left(peer: &str) -> Value {
    json!({"type": "peer_left", "peer_id": peer})
}

/// In a room with a and b: every text in `texts` sent by a is answered with
/// error `code` to a alone, and afterwards both sessions still work.
fn assert_rejected_texts(texts: &[&str], code: &str) {
    let server = start();
    let (mut a, mut b) = pair(server.local_addr(), "room", "a", "b");
    for text in texts {
        a.send_text(text);
        let got = a.recv_json();
        assert!(
            got["code"] == json!(code),
            "for {text:?}: expected {code}, got {got}"
        );
        assert_error_msg(&got, code);
    }
    assert_still_works(&mut a, "a", &mut b, "b", 1);
    assert_still_works(&mut b, "b", &mut a, "a", 2);
}

fn assert_rejected(msgs: &[Value], code: &str) {
    let texts: Vec<String> = msgs.iter().map(Value::to_string).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    assert_rejected_texts(&refs, code);
}

// ---------------------------------------------------------------- errors that keep the session

#[test]
fn text_that_is_not_json_is_invalid_json() {
    assert_rejected_texts(
        &[
            "hello",
            "{\"type\":",
            "",
            "{'type':'ping'}",
            "{\"type\":\"ping\"} trailing",
        ],
        "invalid_json",
    );
}

#[test]
fn json_that_is_not_an_object_is_invalid_json() {
    assert_rejected_texts(
        &[
            "[1]",
            "\"x\"",
            "42",
            "null",
            "true",
            "[{\"type\":\"ping\"}]",
        ],
        "invalid_json",
    );
}

#[test]
fn missing_type_is_invalid_message() {
    assert_rejected(
        &[json!({}), json!({"target_peer_id": "b", "candidate": null})],
        "invalid_message",
    );
}

#[test]
fn non_string_type_is_invalid_message() {
    assert_rejected(
        &[
            json!({"type": 5, "target_peer_id": "b", "candidate": null}),
            json!({"type": null, "target_peer_id": "b", "candidate": null}),
            json!({"type": ["offer"], "target_peer_id": "b", "offer": {}}),
            json!({"type": {"name": "ping"}}),
        ],
        "invalid_message",
    );
}

#[test]
fn missing_target_peer_id_is_invalid_message() {
    assert_rejected(
        &[
            json!({"type": "offer", "offer": {"type": "offer", "sdp": "v=0"}}),
            json!({"type": "answer", "answer": {"type": "answer", "sdp": "v=0"}}),
            json!({"type": "ice_candidate", "candidate": null}),
        ],
        "invalid_message",
    );
}

#[test]
fn non_string_target_peer_id_is_invalid_message() {
    assert_rejected(
        &[
            json!({"type": "ice_candidate", "candidate": null, "target_peer_id": 5}),
            json!({"type": "ice_candidate", "candidate": null, "target_peer_id": null}),
            json!({"type": "ice_candidate", "candidate": null, "target_peer_id": ["b"]}),
            json!({"type": "offer", "offer": {"type": "offer"}, "target_peer_id": {"id": "b"}}),
        ],
        "invalid_message",
    );
}

#[test]
fn missing_payload_is_invalid_message() {
    assert_rejected(
        &[
            json!({"type": "offer", "target_peer_id": "b"}),
            json!({"type": "answer", "target_peer_id": "b"}),
            json!({"type": "ice_candidate", "target_peer_id": "b"}),
            // The payload field must match the type.
            json!({"type": "offer", "answer": {"type": "answer"}, "target_peer_id": "b"}),
        ],
        "invalid_message",
    );
}

#[test]
fn unknown_type_is_unknown_type() {
    assert_rejected(
        &[
            json!({"type": "hello"}),
            json!({"type": "Offer", "offer": {}, "target_peer_id": "b"}),
            json!({"type": "pong"}),
            json!({"type": ""}),
            json!({"type": "peer_joined", "peer_id": "x"}),
            json!({"type": "existing_peers", "peers": []}),
            json!({"type": "error", "code": "x", "message": "y"}),
        ],
        "unknown_type",
    );
}

#[test]
fn unknown_target_is_peer_not_found() {
    assert_rejected(
        &[
            candidate("nobody", 1),
            candidate("B", 2),
            json!({"type": "offer", "offer": {}, "target_peer_id": ""}),
        ],
        "peer_not_found",
    );
}

#[test]
fn target_equal_to_sender_is_peer_not_found() {
    assert_rejected(&[candidate("a", 1)], "peer_not_found");
}

#[test]
fn target_that_left_is_peer_not_found() {
    let server = start();
    let addr = server.local_addr();
    let (mut a, b) = pair(addr, "room", "a", "b");
    b.close(1000);
    a.expect_json(left("b"));
    a.send_json(&candidate("b", 1));
    a.expect_error("peer_not_found");
    a.send_json(&json!({"type": "ping"}));
    a.expect_json(json!({"type": "pong"}));
}

#[test]
fn binary_frame_is_invalid_message() {
    let server = start();
    let (mut a, mut b) = pair(server.local_addr(), "room", "a", "b");
    a.send(Message::binary(candidate("b", 1).to_string().into_bytes()));
    a.expect_error("invalid_message");
    a.send(Message::binary(vec![0u8, 1, 2, 255]));
    a.expect_error("invalid_message");
    assert_still_works(&mut a, "a", &mut b, "b", 2);
    assert_still_works(&mut b, "b", &mut a, "a", 3);
}

// ---------------------------------------------------------------- 4400 invalid ids

const LONG_65: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// Ids that fail §2, as they appear in the URL path.
const BAD_IDS: &[&str] = &[
    LONG_65,
    "a%20b",
    "%C3%A9",
    "caf%C3%A9",
    "room!",
    "a+b",
    "a*b",
    "a%2Fb",
    "a%25",
];

#[test]
fn id_of_65_characters_is_too_long() {
    assert_eq!(LONG_65.len(), 65);
    let server = start();
    let addr = server.local_addr();
    expect_refused(addr, LONG_65, "p", 4400, "invalid_room_id");
    expect_refused(addr, "room", LONG_65, 4400, "invalid_peer_id");
}

#[test]
fn id_of_64_characters_is_accepted() {
    let id64 = &LONG_65[..64];
    let server = start();
    let _c = Client::join_expect(server.local_addr(), id64, id64, &[]);
}

#[test]
fn every_unreserved_character_is_accepted_in_ids() {
    let server = start();
    let addr = server.local_addr();
    let all = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-";
    let (room, peer) = all.split_at(32);
    let _c = Client::join_expect(addr, room, peer, &[]);
    let _d = Client::join_expect(addr, "~", "-", &[]);
}

#[test]
fn invalid_room_id_closes_with_4400() {
    let server = start();
    for bad in BAD_IDS {
        expect_refused(server.local_addr(), bad, "peer", 4400, "invalid_room_id");
    }
}

#[test]
fn invalid_peer_id_closes_with_4400() {
    let server = start();
    for bad in BAD_IDS {
        expect_refused(server.local_addr(), "room", bad, 4400, "invalid_peer_id");
    }
}

#[test]
fn room_id_is_checked_before_peer_id() {
    let server = start();
    expect_refused(
        server.local_addr(),
        "a%20b",
        "c%20d",
        4400,
        "invalid_room_id",
    );
}

#[test]
fn refused_invalid_ids_do_not_create_rooms() {
    let server = start();
    let addr = server.local_addr();
    let mut a = Client::join_expect(addr, "room", "a", &[]);
    expect_refused(addr, "room", "b%20c", 4400, "invalid_peer_id");
    expect_refused(addr, "x%20y", "b", 4400, "invalid_room_id");
    a.expect_silence(Duration::from_millis(300));
    assert_eq!(
        get_json(addr, "/webrtc/rooms"),
        json!({"rooms": [{"room_id": "room", "peer_count": 1}]})
    );
}

// ---------------------------------------------------------------- 1009 message_too_large

fn small_messages_server() -> webrtc_signaling::Server {
    start_with(|c| c.limits.max_message_size = 1024)
}

#[test]
fn oversized_frame_closes_with_1009() {
    let server = small_messages_server();
    let (mut a, mut b) = pair(server.local_addr(), "room", "a", "b");
    let mut msg = candidate("b", 1);
    msg["pad"] = json!("x".repeat(1500));
    a.send_json(&msg);
    a.expect_close(1009, "message_too_large");
    b.expect_json(left("a"));
}

#[test]
fn oversized_binary_frame_closes_with_1009() {
    let server = small_messages_server();
    let mut a = Client::join_expect(server.local_addr(), "room", "a", &[]);
    a.send(Message::binary(vec![7u8; 1500]));
    a.expect_close(1009, "message_too_large");
}

#[test]
fn oversized_fragmented_message_closes_with_1009() {
    let server = small_messages_server();
    let (mut a, mut b) = pair(server.local_addr(), "room", "a", "b");
    // Eleven 100-byte frames: each is small, the message (1100 bytes) is not.
    a.send_fragmented(&"x".repeat(1100), 100);
    a.expect_close(1009, "message_too_large");
    b.expect_json(left("a"));
}

#[test]
fn message_of_exactly_max_size_is_accepted() {
    let server = small_messages_server();
    let mut a = Client::join_expect(server.local_addr(), "room", "a", &[]);
    let mut msg = json!({"type": "ping", "pad": ""});
    let pad = 1024 - msg.to_string().len();
    msg["pad"] = json!("x".repeat(pad));
    assert_eq!(msg.to_string().len(), 1024);
    a.send_json(&msg);
    a.expect_json(json!({"type": "pong"}));
    // Also when fragmented.
    a.send_fragmented(&msg.to_string(), 100);
    a.expect_json(json!({"type": "pong"}));
}

// ---------------------------------------------------------------- 4408 timeout

#[test]
fn silent_client_is_closed_with_4408_timeout() {
    let server = start_with(|c| {
        c.limits.idle_timeout = Duration::from_secs(1);
        c.limits.ping_interval = Duration::ZERO;
        // §3 as it is with resuming off (`--resume-grace 0`); tests/resume.rs covers the hold.
        c.limits.resume_grace = Duration::ZERO;
    });
    let (mut a, mut b) = pair(server.local_addr(), "room", "a", "b");
    // b keeps itself alive with a JSON ping every 300 ms until it hears that
    // a (which only reads) has left.
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut a_left = false;
    while !a_left {
        assert!(
            std::time::Instant::now() < deadline,
            "a was not timed out within {DEADLINE:?}"
        );
        b.send_json(&json!({"type": "ping"}));
        let window = std::time::Instant::now() + Duration::from_millis(300);
        loop {
            match b.next_until(window) {
                Next::Msg(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if v == left("a") {
                        a_left = true;
                    } else {
                        assert_eq!(v, json!({"type": "pong"}), "b");
                    }
                }
                Next::Msg(Message::Ping(_)) | Next::Msg(Message::Pong(_)) => {}
                Next::Msg(m) => panic!("b: unexpected {m:?}"),
                Next::TimedOut => break,
                Next::Ended(e) => panic!("b: connection ended: {e}"),
            }
        }
    }
    a.expect_close(4408, "timeout");
    // Once b stops sending it times out as well.
    b.expect_close(4408, "timeout");
}

#[test]
fn client_answering_server_pings_is_not_timed_out() {
    let server = start_with(|c| {
        c.limits.idle_timeout = Duration::from_secs(1);
        c.limits.ping_interval = Duration::from_millis(200);
    });
    let mut a = Client::join_expect(server.local_addr(), "room", "a", &[]);
    // tungstenite answers the server's ping frames with pongs while reading.
    a.expect_silence(Duration::from_secs(3));
    a.send_json(&json!({"type": "ping"}));
    a.expect_json(json!({"type": "pong"}));
}

#[test]
fn server_sends_websocket_pings() {
    let server = start_with(|c| c.limits.ping_interval = Duration::from_millis(200));
    let mut a = Client::join_expect(server.local_addr(), "room", "a", &[]);
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        match a.next_until(deadline) {
            Next::Msg(Message::Ping(_)) => break,
            Next::Msg(Message::Pong(_)) => continue,
            Next::Msg(m) => panic!("expected a ping frame, got {m:?}"),
            Next::TimedOut => panic!("no ping frame within {DEADLINE:?}"),
            Next::Ended(e) => panic!("connection ended: {e}"),
        }
    }
}

#[test]
fn client_sending_messages_is_not_timed_out() {
    let server = start_with(|c| {
        c.limits.idle_timeout = Duration::from_secs(1);
        c.limits.ping_interval = Duration::ZERO;
    });
    let mut a = Client::join_expect(server.local_addr(), "room", "a", &[]);
    for _ in 0..10 {
        a.send_json(&json!({"type": "ping"}));
        a.expect_json(json!({"type": "pong"}));
        a.expect_silence(Duration::from_millis(300));
    }
}

// ---------------------------------------------------------------- 1008 slow_consumer

#[test]
fn slow_consumer_is_dropped_and_others_see_peer_left() {
    let server = start_with(|c| {
        c.limits.peer_queue = 4;
        c.limits.write_timeout = Duration::from_secs(1);
        c.limits.rate_per_sec = 1_000_000;
        c.limits.rate_burst = 1_000_000;
    });
    let addr = server.local_addr();
    let mut slow = Client::join_expect(addr, "room", "slow", &[]);
    let mut observer = Client::join_expect(addr, "room", "observer", &["slow"]);
    let mut flooder = Client::join_expect(addr, "room", "flooder", &["slow", "observer"]);
    observer.expect_json(json!({"type": "peer_joined", "peer_id": "flooder"}));
    // From here on `slow` never reads until the end of the test.

    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut msg = candidate("slow", 0);
            msg["pad"] = json!("p".repeat(32 * 1024));
            let text = msg.to_string();
            // Bounded: at most 4000 * 32 KiB = 128 MiB.
            for _ in 0..4000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                flooder.send_text(&text);
            }
            flooder
        })
    };

    let seen = observer.recv_json_within(Duration::from_secs(60));
    assert_eq!(seen, left("slow"), "observer");
    stop.store(true, Ordering::SeqCst);
    let _flooder = flood.join().expect("flooder thread");
    // The slow peer's connection ends (error + close frame are best effort).
    slow.expect_end(Duration::from_secs(60));
    // No second peer_left for it. (What happens to the flooder, which got a
    // burst of peer_not_found replies while not reading, is tested separately
    // by reading_peer_survives_a_burst_of_error_replies.)
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    loop {
        match observer.next_until(deadline) {
            Next::TimedOut => break,
            Next::Msg(Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                assert_ne!(
                    v,
                    left("slow"),
                    "observer: second peer_left for the slow peer"
                );
            }
            Next::Msg(_) => {}
            Next::Ended(e) => panic!("observer: connection ended: {e}"),
        }
    }
}

#[test]
fn reading_peer_survives_a_burst_of_error_replies() {
    // §5: a bad message never closes the session; a slow consumer is a peer
    // whose socket buffer fills. 200 short error replies (~20 KB) cannot fill
    // a socket buffer, so the client is not a slow consumer even with a small
    // queue.
    let server = start_with(|c| {
        c.limits.peer_queue = 16;
        c.limits.rate_per_sec = 1_000_000;
        c.limits.rate_burst = 1_000_000;
    });
    let (mut a, mut b) = pair(server.local_addr(), "room", "a", "b");
    let burst: Vec<Value> = (0..200).map(|seq| candidate("nobody", seq)).collect();
    a.send_batch(&burst);
    for _ in 0..200 {
        a.expect_error("peer_not_found");
    }
    assert_still_works(&mut a, "a", &mut b, "b", 1);
}

#[test]
fn reading_peer_survives_a_burst_of_relays() {
    // Same as above for relayed messages: 200 candidates (~40 KB) to a peer
    // that reads them all do not make it a slow consumer.
    let server = start_with(|c| {
        c.limits.peer_queue = 16;
        c.limits.rate_per_sec = 1_000_000;
        c.limits.rate_burst = 1_000_000;
    });
    let (mut a, mut b) = pair(server.local_addr(), "room", "a", "b");
    let burst: Vec<Value> = (0..200).map(|seq| candidate("b", seq)).collect();
    a.send_batch(&burst);
    for seq in 0..200 {
        b.expect_json(relayed_candidate("b", seq, "a"));
    }
    assert_still_works(&mut a, "a", &mut b, "b", 1000);
}

// ---------------------------------------------------------------- 4503 server_full / room_full

#[test]
fn connection_over_max_connections_is_refused_with_server_full() {
    let server = start_with(|c| c.limits.max_connections = 2);
    let addr = server.local_addr();
    let mut a = Client::join_expect(addr, "r1", "a", &[]);
    let mut b = Client::join_expect(addr, "r2", "b", &[]);
    expect_refused(addr, "r3", "c", 4503, "server_full");
    expect_refused(addr, "r1", "c", 4503, "server_full");
    // REST still works while signaling is full, and the sessions are untouched.
    assert_eq!(get_json(addr, "/healthz"), json!({"status": "ok"}));
    a.send_json(&json!({"type": "ping"}));
    a.expect_json(json!({"type": "pong"}));
    b.expect_silence(Duration::from_millis(200));
}

#[test]
fn slot_is_freed_when_a_session_ends() {
    let server = start_with(|c| c.limits.max_connections = 2);
    let addr = server.local_addr();
    let (a, mut b) = pair(addr, "room", "a", "b");
    expect_refused(addr, "room", "c", 4503, "server_full");
    a.close(1000);
    b.expect_json(left("a"));
    // The slot may be released just after peer_left is sent: retry until admitted.
    let deadline = std::time::Instant::now() + DEADLINE;
    let _c = loop {
        let mut c = Client::connect(addr, "room", "c");
        let first = c.recv_json();
        if first == json!({"type": "existing_peers", "peers": ["b"]}) {
            break c;
        }
        assert_error_msg(&first, "server_full");
        assert!(std::time::Instant::now() < deadline, "slot never freed");
        c.expect_close_frame(4503, "server_full");
    };
    b.expect_json(json!({"type": "peer_joined", "peer_id": "c"}));
}

#[test]
fn peer_over_max_room_peers_is_refused_with_room_full() {
    let server = start_with(|c| c.limits.max_room_peers = 2);
    let addr = server.local_addr();
    let (mut a, mut b) = pair(addr, "room", "a", "b");
    expect_refused(addr, "room", "c", 4503, "room_full");
    // Other rooms are not affected.
    let _d = Client::join_expect(addr, "other", "d", &[]);
    let _e = Client::join_expect(addr, "other", "e", &["d"]);
    // a and b saw nothing of c.
    assert_still_works(&mut a, "a", &mut b, "b", 1);
    assert_still_works(&mut b, "b", &mut a, "a", 2);
    assert_eq!(
        get_json(addr, "/webrtc/rooms/room/peers"),
        json!({"room_id": "room", "peers": ["a", "b"]})
    );
}

// ---------------------------------------------------------------- 4429 rate_limited

#[test]
fn dropped_messages_get_rate_limited_error_and_session_stays() {
    let server = start_with(|c| {
        c.limits.rate_per_sec = 1;
        c.limits.rate_burst = 5;
        c.limits.rate_strikes = 3;
    });
    let (mut a, mut b) = pair(server.local_addr(), "room", "a", "b");
    let burst: Vec<Value> = (0..7).map(|seq| candidate("b", seq)).collect();
    a.send_batch(&burst);
    for seq in 0..5 {
        b.expect_json(relayed_candidate("b", seq, "a"));
    }
    a.expect_error("rate_limited");
    a.expect_error("rate_limited");
    // WebSocket pings are not rate limited: the session is alive.
    a.send(Message::Ping(b"alive".to_vec().into()));
    assert_eq!(a.recv_pong(), b"alive".to_vec());
    b.expect_silence(Duration::from_millis(300));
}

#[test]
fn repeated_rate_violations_close_with_4429() {
    let server = start_with(|c| {
        c.limits.rate_per_sec = 1;
        c.limits.rate_burst = 5;
        c.limits.rate_strikes = 3;
    });
    let (mut a, mut b) = pair(server.local_addr(), "room", "a", "b");
    let burst: Vec<Value> = (0..8).map(|seq| candidate("b", seq)).collect();
    a.send_batch(&burst);
    // Dropped messages are answered with rate_limited errors; the third strike
    // ends the session (its error may or may not be sent in addition).
    let mut errors = 0;
    loop {
        match a.recv_message_within(DEADLINE) {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                assert_error_msg(&v, "rate_limited");
                errors += 1;
            }
            Message::Close(Some(f)) => {
                assert_eq!(
                    (u16::from(f.code), f.reason.as_str()),
                    (4429, "rate_limited")
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        (3..=4).contains(&errors),
        "expected 3 or 4 rate_limited errors, got {errors}"
    );
    a.expect_end(DEADLINE);
    for seq in 0..5 {
        b.expect_json(relayed_candidate("b", seq, "a"));
    }
    b.expect_json(left("a"));
}

#[test]
fn websocket_ping_frames_are_not_rate_limited() {
    let server = start_with(|c| {
        c.limits.rate_per_sec = 1;
        c.limits.rate_burst = 2;
        c.limits.rate_strikes = 2;
    });
    let mut a = Client::join_expect(server.local_addr(), "room", "a", &[]);
    for i in 0..20u8 {
        a.send(Message::Ping(vec![i].into()));
        assert_eq!(a.recv_pong(), vec![i]);
    }
    a.send_json(&json!({"type": "ping"}));
    a.expect_json(json!({"type": "pong"}));
    a.send_json(&json!({"type": "ping"}));
    a.expect_json(json!({"type": "pong"}));
}

// ---------------------------------------------------------------- 1001 going_away

/// Read a's messages during shutdown: peer_left of room-mates may come first,
/// then error going_away and close 1001.
fn expect_going_away(c: &mut Client) {
    loop {
        let m = c.recv_json();
        if m["type"] == json!("peer_left") {
            continue;
        }
        assert_error_msg(&m, "going_away");
        break;
    }
    c.expect_close_frame(1001, "going_away");
}

#[test]
fn shutdown_closes_every_session_with_going_away() {
    let server = start();
    let addr = server.local_addr();
    let (mut a, mut b) = pair(addr, "r1", "a", "b");
    let mut c = Client::join_expect(addr, "r2", "c", &[]);
    let (done_tx, done_rx) = mpsc::channel();
    let stopper = thread::spawn(move || {
        server.shutdown();
        done_tx.send(()).unwrap();
    });
    expect_going_away(&mut a);
    expect_going_away(&mut b);
    expect_going_away(&mut c);
    done_rx
        .recv_timeout(DEADLINE)
        .expect("shutdown() returns once the sessions are closed");
    stopper.join().unwrap();
}

#[test]
fn shutdown_stops_accepting_connections() {
    let server = start();
    let addr = server.local_addr();
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        server.shutdown();
        done_tx.send(()).unwrap();
    });
    done_rx.recv_timeout(DEADLINE).expect("shutdown() returns");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting connections after shutdown()"
    );
}
