//! Hostile input that must not hurt the server: deep JSON on the smallest stacks,
//! garbage instead of HTTP, and a connection that vanishes mid-message.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{start_with, Client};
use serde_json::json;

/// The reader never parses relayed payloads recursively (they are kept as raw JSON),
/// so even absurd nesting is relayed verbatim on the smallest stack the flags allow,
/// and nesting at the top level is refused.
#[test]
fn deeply_nested_json_is_safe_on_the_smallest_stack() {
    let server = start_with(|c| {
        c.limits.thread_stack = 64 * 1024;
    });
    let addr = server.local_addr();
    let mut a = Client::join_expect(addr, "room", "a", &[]);
    let mut b = Client::join_expect(addr, "room", "b", &["a"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    let depth = 10_000; // two of these stay under the 64 KiB message limit
    let deep = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    a.send_text(&format!(
        r#"{{"type":"offer","target_peer_id":"b","offer":{{"x":{deep}}},"extra":{deep}}}"#
    ));
    let got = match b.recv_message_within(common::DEADLINE) {
        tungstenite::Message::Text(t) => t.as_str().to_owned(),
        other => panic!("expected text, got {other:?}"),
    };
    assert_eq!(
        got,
        format!(
            r#"{{"type":"offer","target_peer_id":"b","offer":{{"x":{deep}}},"extra":{deep},"from_peer_id":"a"}}"#
        )
    );
    a.send_text(&deep);
    a.expect_error("invalid_json");
    a.send_text(&format!(
        r#"{{"type":"offer","target_peer_id":"b","offer":{}}}"#,
        "[".repeat(depth)
    ));
    a.expect_error("invalid_json");
}

#[test]
fn garbage_instead_of_http_gets_400_and_the_server_goes_on() {
    let server = start_with(|_| {});
    let addr = server.local_addr();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")
        .expect("write");
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).expect("read");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
    assert!(reply.contains(r#""error":"bad_request""#), "{reply}");
    common::get(addr, "/healthz").assert_json(200, json!({"status": "ok"}));
}

#[test]
fn a_client_vanishing_mid_frame_only_ends_its_own_session() {
    // §3 as it is with resuming off (`--resume-grace 0`); tests/resume.rs covers the hold.
    let server = start_with(|c| c.limits.resume_grace = std::time::Duration::ZERO);
    let addr = server.local_addr();
    let mut a = Client::join_expect(addr, "room", "a", &[]);
    let b = Client::join_expect(addr, "room", "b", &["a"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    // Half a text frame header claiming 1000 masked bytes, then the TCP connection drops.
    let mut raw = b.stream().try_clone().expect("clone");
    raw.write_all(&[0x81, 0xfe, 0x03, 0xe8, 1, 2, 3, 4, b'{'])
        .expect("write");
    b.drop_tcp();
    a.expect_json(json!({"type": "peer_left", "peer_id": "b"}));
    let mut c = Client::join_expect(addr, "room", "b", &["a"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    c.send_json(&json!({"type": "ping"}));
    c.expect_json(json!({"type": "pong"}));
}
