//! Admin actions: `DELETE /webrtc/rooms/{room}/peers/{peer}` and
//! `DELETE /webrtc/rooms/{room}` end sessions with `kicked` (4403), only with `--admin`.

mod common;

use std::time::Duration;

use common::{get, get_json, http, start, start_with, wait_for_json, Client};
use serde_json::json;

fn admin_server() -> webrtc_signaling::Server {
    start_with(|c| c.access.admin = true)
}

#[test]
fn delete_is_403_admin_disabled_without_the_admin_flag() {
    let server = start();
    let addr = server.local_addr();
    let mut a = Client::join_expect(addr, "room", "a", &[]);
    for path in [
        "/webrtc/rooms/room/peers/a",
        "/webrtc/rooms/room",
        "/webrtc/rooms/nope",
        "/webrtc/rooms/bad!id",
    ] {
        http(addr, "DELETE", path).assert_error(403, "admin_disabled");
    }
    a.expect_silence(Duration::from_millis(200));
    assert_eq!(
        get_json(addr, "/webrtc/rooms/room/peers"),
        json!({"room_id": "room", "peers": ["a"]})
    );
}

#[test]
fn kicking_a_peer_closes_it_with_4403_and_the_room_sees_one_peer_left() {
    let server = admin_server();
    let addr = server.local_addr();
    let mut a = Client::join_expect(addr, "room", "a", &[]);
    let mut b = Client::join_expect(addr, "room", "b", &["a"]);
    let mut c = Client::join_expect(addr, "room", "c", &["a", "b"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    a.expect_json(json!({"type": "peer_joined", "peer_id": "c"}));
    b.expect_json(json!({"type": "peer_joined", "peer_id": "c"}));

    let resp = http(addr, "DELETE", "/webrtc/rooms/room/peers/b");
    resp.assert_json(200, json!({"room_id": "room", "kicked": ["b"]}));

    b.expect_close(4403, "kicked");
    for other in [&mut a, &mut c] {
        other.expect_json(json!({"type": "peer_left", "peer_id": "b"}));
    }
    assert_eq!(
        get_json(addr, "/webrtc/rooms/room/peers"),
        json!({"room_id": "room", "peers": ["a", "c"]})
    );
    // The kicked session's own leave (after its close) adds no second peer_left.
    a.expect_silence(Duration::from_millis(300));
    c.expect_silence(Duration::from_millis(10));
    // The id is free again: b may come back (it is a kick, not a ban).
    let _b2 = Client::join_expect(addr, "room", "b", &["a", "c"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    c.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    common::assert_still_works(&mut a, "a", &mut c, "c", 1);
}

#[test]
fn kicking_a_room_ends_every_session_in_it_and_no_other() {
    let server = admin_server();
    let addr = server.local_addr();
    let mut a = Client::join_expect(addr, "room", "a", &[]);
    let mut b = Client::join_expect(addr, "room", "b", &["a"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    let mut x = Client::join_expect(addr, "other", "x", &[]);

    let resp = http(addr, "DELETE", "/webrtc/rooms/room");
    resp.assert_json(200, json!({"room_id": "room", "kicked": ["a", "b"]}));

    // The error is the first thing each one hears: no peer_left about peers that
    // are being closed themselves.
    a.expect_close(4403, "kicked");
    b.expect_close(4403, "kicked");
    x.expect_silence(Duration::from_millis(200));
    wait_for_json(
        addr,
        "/webrtc/rooms",
        json!({"rooms": [{"room_id": "other", "peer_count": 1}]}),
    );
    get(addr, "/webrtc/rooms/room/peers").assert_error(404, "room_not_found");
    // The room can be used again at once.
    let mut a2 = Client::join_expect(addr, "room", "a", &[]);
    let mut b2 = Client::join_expect(addr, "room", "b", &["a"]);
    a2.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    common::assert_still_works(&mut a2, "a", &mut b2, "b", 7);
}

#[test]
fn kicking_what_is_not_there_is_404_and_bad_ids_are_400() {
    let server = admin_server();
    let addr = server.local_addr();
    let _a = Client::join_expect(addr, "room", "a", &[]);
    http(addr, "DELETE", "/webrtc/rooms/nope").assert_error(404, "room_not_found");
    http(addr, "DELETE", "/webrtc/rooms/nope/peers/a").assert_error(404, "room_not_found");
    http(addr, "DELETE", "/webrtc/rooms/room/peers/zz").assert_error(404, "peer_not_found");
    http(addr, "DELETE", "/webrtc/rooms/ROOM/peers/a").assert_error(404, "room_not_found");
    http(addr, "DELETE", "/webrtc/rooms/bad!room").assert_error(400, "invalid_room_id");
    http(addr, "DELETE", "/webrtc/rooms/room/peers/bad%20peer")
        .assert_error(400, "invalid_peer_id");
    let long = "p".repeat(65);
    http(addr, "DELETE", &format!("/webrtc/rooms/room/peers/{long}"))
        .assert_error(400, "invalid_peer_id");
    http(addr, "DELETE", "/webrtc/rooms/room/peers/a/extra").assert_error(404, "not_found");
    assert_eq!(
        get_json(addr, "/webrtc/rooms/room/peers"),
        json!({"room_id": "room", "peers": ["a"]})
    );
}

#[test]
fn room_and_peer_resources_answer_get_and_head() {
    let server = start();
    let addr = server.local_addr();
    let _a = Client::join_expect(addr, "room", "a", &[]);
    let _b = Client::join_expect(addr, "room", "b", &["a"]);
    get(addr, "/webrtc/rooms/room").assert_json(200, json!({"room_id": "room", "peer_count": 2}));
    get(addr, "/webrtc/rooms/room/peers/b")
        .assert_json(200, json!({"room_id": "room", "peer_id": "b"}));
    get(addr, "/webrtc/rooms/nope").assert_error(404, "room_not_found");
    get(addr, "/webrtc/rooms/room/peers/zz").assert_error(404, "peer_not_found");
    get(addr, "/webrtc/rooms/nope/peers/a").assert_error(404, "room_not_found");
    get(addr, "/webrtc/rooms/r!/peers/a").assert_error(400, "invalid_room_id");
    get(addr, "/webrtc/rooms/room/peers/p!").assert_error(400, "invalid_peer_id");
    for path in ["/webrtc/rooms/room", "/webrtc/rooms/room/peers/b"] {
        let g = get(addr, path);
        let h = http(addr, "HEAD", path);
        assert_eq!(h.status, g.status, "HEAD {path}");
        assert_eq!(h.header("content-length"), g.header("content-length"));
        assert!(h.body.is_empty(), "HEAD {path} has a body");
    }
}

#[test]
fn other_methods_are_405_with_an_allow_header_that_names_delete_where_it_exists() {
    let server = admin_server();
    let addr = server.local_addr();
    let _a = Client::join_expect(addr, "room", "a", &[]);
    for (method, path, allow) in [
        ("POST", "/webrtc/rooms/room", "GET, HEAD, DELETE"),
        ("PUT", "/webrtc/rooms/room/peers/a", "GET, HEAD, DELETE"),
        ("PATCH", "/webrtc/rooms/nope", "GET, HEAD, DELETE"),
        ("DELETE", "/webrtc/rooms/room/peers", "GET, HEAD"),
        ("DELETE", "/webrtc/rooms", "GET, HEAD"),
        ("DELETE", "/webrtc/ice-servers", "GET, HEAD"),
    ] {
        let resp = http(addr, method, path);
        resp.assert_error(405, "method_not_allowed");
        assert_eq!(resp.header("allow"), Some(allow), "{method} {path}");
    }
    // Nothing above touched the session.
    assert_eq!(
        get_json(addr, "/webrtc/rooms/room/peers"),
        json!({"room_id": "room", "peers": ["a"]})
    );
}
