//! PROTOCOL.md §4: relay of offer / answer / ice_candidate, JSON ping,
//! WebSocket ping frames.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tungstenite::Message;

/// Send `msg` from a to b and assert b receives it unchanged plus from_peer_id "a".
fn assert_relayed(a: &mut Client, b: &mut Client, msg: Value) {
    a.send_json(&msg);
    let mut expected = msg;
    expected["from_peer_id"] = json!("a");
    b.expect_json(expected);
}

#[test]
fn offer_is_relayed_with_from_peer_id() {
    let server = start();
    let (mut a, mut b) = pair(server.local_addr(), "room", "a", "b");
    let offer = json!({
        "type": "offer",
        "offer": {"type": "offer", "sdp": "v=0\r\no=- 46117317 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"},
        "target_peer_id": "b",
    });
    assert_relayed(&mut a, &mut b, offer);
}

#[test]
fn answer_is_relayed_with_from_peer_id() {
    let server = start();
    let (mut a, mut b) = pair(server.local_addr(), "room", "a", "b");
    let answer = json!({
        "type": "answer",
        "answer": {"type": "answer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"},
        "target_peer_id": "b",
    });
    assert_relayed(&mut a, &mut b, answer);
}

#[test]
fn ice_candidate_is_relayed_with_from_peer_id() {
    let server = start();
    let (mut a, mut b) = pair(server.local_addr(), "room", "a", "b");
    let msg = json!({
        "type": "ice_candidate",
        "candidate": {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 54321 typ host",
                      "sdpMLineIndex": 0, "sdpMid": "0", "usernameFragment": "abcd"},
        "target_peer_id": "b",
    });
    assert_relayed(&mut a, &mut b, msg);
}

#[test]
fn relay_works_in_both_directions() {
    let server = start();
    let (mut a, mut b) = pair(server.local_addr(), "room", "a", "b");
    b.send_json(&candidate("a", 7));
    a.expect_json(relayed_candidate("a", 7, "b"));
    a.send_json(&candidate("b", 8));
    b.expect_json(relayed_candidate("b", 8, "a"));
}

#[test]
fn unknown_fields_nested_objects_and_unicode_are_kept() {
    let server = start();
    let (mut a, mut b) = pair(server.local_addr(), "room", "a", "b");
    let msg = json!({
        "type": "offer",
        "offer": {"type": "offer", "sdp": "v=0\r\n", "x-extra": {"deep": {"deeper": [1, 2.5, -3, null, true]}}},
        "target_peer_id": "b",
        "meta": {"nested": [{"k": "v"}, [], {}], "big": 9_007_199_254_740_993_u64, "neg": -42},
        "label": "héllo wörld ✓ 🚀 \u{0000} \"quoted\" \\ /",
        "empty": "",
        "flag": false,
        "nothing": null,
    });
    assert_relayed(&mut a, &mut b, msg);
}

#[test]
fn sender_supplied_from_peer_id_is_overwritten() {
    let server = start();
    let (mut a, mut b) = pair(server.local_addr(), "room", "a", "b");
    let mut forged = candidate("b", 1);
    forged["from_peer_id"] = json!("mallory");
    a.send_json(&forged);
    b.expect_json(relayed_candidate("b", 1, "a"));
}

#[test]
fn non_string_from_peer_id_is_overwritten() {
    let server = start();
    let (mut a, mut b) = pair(server.local_addr(), "room", "a", "b");
    let mut forged = candidate("b", 1);
    forged["from_peer_id"] = json!({"id": "mallory"});
    a.send_json(&forged);
    b.expect_json(relayed_candidate("b", 1, "a"));
}

#[test]
fn null_candidate_is_relayed() {
    let server = start();
    let (mut a, mut b) = pair(server.local_addr(), "room", "a", "b");
    assert_relayed(
        &mut a,
        &mut b,
        json!({"type": "ice_candidate", "candidate": null, "target_peer_id": "b"}),
    );
}

#[test]
fn relay_reaches_only_the_target() {
    let server = start();
    let addr = server.local_addr();
    let (mut a, mut b) = pair(addr, "room", "a", "b");
    let mut c = Client::join_expect(addr, "room", "c", &["a", "b"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "c"}));
    b.expect_json(json!({"type": "peer_joined", "peer_id": "c"}));
    a.send_json(&candidate("b", 1));
    b.expect_json(relayed_candidate("b", 1, "a"));
    // c's next message is the one addressed to it: nothing else leaked to c.
    a.send_json(&candidate("c", 2));
    c.expect_json(relayed_candidate("c", 2, "a"));
    a.expect_silence(Duration::from_millis(300));
}

#[test]
fn fragmented_message_is_reassembled_and_relayed() {
    let server = start();
    let (mut a, mut b) = pair(server.local_addr(), "room", "a", "b");
    let msg = candidate("b", 99);
    a.send_fragmented(&msg.to_string(), 7);
    b.expect_json(relayed_candidate("b", 99, "a"));
}

#[test]
fn payload_that_is_not_an_object_is_invalid_message() {
    let server = start();
    let (mut a, mut b) = pair(server.local_addr(), "room", "a", "b");
    let bad = [
        json!({"type": "offer", "offer": "v=0", "target_peer_id": "b"}),
        json!({"type": "offer", "offer": null, "target_peer_id": "b"}),
        json!({"type": "answer", "answer": [1, 2], "target_peer_id": "b"}),
        json!({"type": "answer", "answer": 5, "target_peer_id": "b"}),
        json!({"type": "ice_candidate", "candidate": "candidate:1 1 udp", "target_peer_id": "b"}),
        json!({"type": "ice_candidate", "candidate": true, "target_peer_id": "b"}),
    ];
    for msg in &bad {
        a.send_json(msg);
        let got = a.recv_json();
        assert_error_msg(&got, "invalid_message");
    }
    assert_still_works(&mut a, "a", &mut b, "b", 1);
}

#[test]
fn json_ping_gets_pong_to_sender_only() {
    let server = start();
    let (mut a, mut b) = pair(server.local_addr(), "room", "a", "b");
    a.send_json(&json!({"type": "ping"}));
    a.expect_json(json!({"type": "pong"}));
    // b's next message is a later relay from a: the pong did not reach b.
    a.send_json(&candidate("b", 1));
    b.expect_json(relayed_candidate("b", 1, "a"));
}

#[test]
fn json_ping_works_when_alone_in_room() {
    let server = start();
    let mut a = Client::join_expect(server.local_addr(), "room", "a", &[]);
    for _ in 0..3 {
        a.send_json(&json!({"type": "ping"}));
        a.expect_json(json!({"type": "pong"}));
    }
}

#[test]
fn websocket_ping_frame_gets_pong_with_same_payload() {
    let server = start();
    let mut a = Client::join_expect(server.local_addr(), "room", "a", &[]);
    for payload in [b"hello".to_vec(), Vec::new(), vec![0u8, 255, 1, 254]] {
        a.send(Message::Ping(payload.clone().into()));
        assert_eq!(a.recv_pong(), payload);
    }
}

#[test]
fn websocket_ping_frame_does_not_reach_other_peers() {
    let server = start();
    let (mut a, mut b) = pair(server.local_addr(), "room", "a", "b");
    a.send(Message::Ping(b"x".to_vec().into()));
    assert_eq!(a.recv_pong(), b"x".to_vec());
    a.send_json(&candidate("b", 1));
    b.expect_json(relayed_candidate("b", 1, "a"));
}
