//! PROTOCOL.md §1 and §6: the HTTP surface (REST bodies, status codes,
//! headers, request-head limits).

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

// ---------------------------------------------------------------- /webrtc/rooms

#[test]
fn rooms_list_is_empty_without_peers() {
    let server = start();
    get(server.local_addr(), "/webrtc/rooms").assert_json(200, json!({"rooms": []}));
}

#[test]
fn rooms_list_is_sorted_by_room_id_with_peer_counts() {
    let server = start();
    let addr = server.local_addr();
    let _g = Client::join_expect(addr, "gamma", "p1", &[]);
    let _b1 = Client::join_expect(addr, "beta", "p1", &[]);
    let _a1 = Client::join_expect(addr, "alpha", "p1", &[]);
    let _b2 = Client::join_expect(addr, "beta", "p2", &["p1"]);
    let _b3 = Client::join_expect(addr, "beta", "p3", &["p1", "p2"]);
    let _a2 = Client::join_expect(addr, "alpha", "p2", &["p1"]);
    get(addr, "/webrtc/rooms").assert_json(
        200,
        json!({"rooms": [
            {"room_id": "alpha", "peer_count": 2},
            {"room_id": "beta", "peer_count": 3},
            {"room_id": "gamma", "peer_count": 1},
        ]}),
    );
}

#[test]
fn rooms_list_follows_peers_leaving() {
    let server = start();
    let addr = server.local_addr();
    let (a, _b) = pair(addr, "room", "a", "b");
    let _c = Client::join_expect(addr, "other", "c", &[]);
    a.close(1000);
    wait_for_json(
        addr,
        "/webrtc/rooms",
        json!({"rooms": [{"room_id": "other", "peer_count": 1}, {"room_id": "room", "peer_count": 1}]}),
    );
}

#[test]
fn rooms_list_ignores_query_string() {
    let server = start();
    get(server.local_addr(), "/webrtc/rooms?x=1").assert_json(200, json!({"rooms": []}));
}

// ---------------------------------------------------------------- /webrtc/rooms/{id}/peers

#[test]
fn room_peers_are_listed_in_join_order() {
    let server = start();
    let addr = server.local_addr();
    let _z = Client::join_expect(addr, "room1", "zed", &[]);
    let _a = Client::join_expect(addr, "room1", "alpha", &["zed"]);
    let _m = Client::join_expect(addr, "room1", "mid", &["zed", "alpha"]);
    get(addr, "/webrtc/rooms/room1/peers").assert_json(
        200,
        json!({"room_id": "room1", "peers": ["zed", "alpha", "mid"]}),
    );
}

#[test]
fn room_peers_of_unknown_room_is_404_room_not_found() {
    let server = start();
    let addr = server.local_addr();
    let _a = Client::join_expect(addr, "room1", "a", &[]);
    get(addr, "/webrtc/rooms/nope/peers").assert_error(404, "room_not_found");
    // Ids are case-sensitive.
    get(addr, "/webrtc/rooms/ROOM1/peers").assert_error(404, "room_not_found");
}

#[test]
fn room_peers_of_invalid_room_id_is_400_invalid_room_id() {
    let server = start();
    let long = "r".repeat(65);
    for bad in ["a%20b", "%C3%A9", "room!", "a+b", long.as_str()] {
        get(server.local_addr(), &format!("/webrtc/rooms/{bad}/peers"))
            .assert_error(400, "invalid_room_id");
    }
}

// ---------------------------------------------------------------- other endpoints

#[test]
fn healthz_is_ok() {
    let server = start();
    get(server.local_addr(), "/healthz").assert_json(200, json!({"status": "ok"}));
}

#[test]
fn ice_servers_default_is_empty() {
    let server = start();
    get(server.local_addr(), "/webrtc/ice-servers")
        .assert_json(200, json!({"iceServers": [], "ttl": 0}));
}

#[test]
fn ice_servers_lists_configured_stun_server() {
    let server = start_with(|c| c.ice.servers = vec!["stun:stun.example.org:3478".to_string()]);
    get(server.local_addr(), "/webrtc/ice-servers").assert_json(
        200,
        json!({"iceServers": [{"urls": ["stun:stun.example.org:3478"]}], "ttl": 0}),
    );
}

#[test]
fn ice_servers_lists_each_configured_url_in_order() {
    let server = start_with(|c| {
        c.ice.servers = vec![
            "stun:b.example.org:3478".to_string(),
            "stun:a.example.org:19302".to_string(),
        ]
    });
    get(server.local_addr(), "/webrtc/ice-servers").assert_json(
        200,
        json!({"iceServers": [{"urls": ["stun:b.example.org:3478"]}, {"urls": ["stun:a.example.org:19302"]}], "ttl": 0}),
    );
}

#[test]
fn root_redirects_to_client() {
    let server = start();
    let resp = get(server.local_addr(), "/");
    assert_eq!(resp.status, 302, "{resp:?}");
    assert_eq!(resp.header("location"), Some("/webrtc/client"));
}

#[test]
fn client_page_is_served_as_html() {
    let server = start();
    let resp = get(server.local_addr(), "/webrtc/client");
    assert_eq!(resp.status, 200);
    assert!(
        resp.content_type().starts_with("text/html"),
        "Content-Type {}",
        resp.content_type()
    );
    assert!(
        resp.body == include_bytes!("../static/client.html"),
        "body is not static/client.html"
    );
}

#[test]
fn client_script_is_served_as_javascript() {
    let server = start();
    let resp = get(server.local_addr(), "/webrtc/client/signaling.js");
    assert_eq!(resp.status, 200);
    assert!(
        resp.content_type().starts_with("text/javascript"),
        "Content-Type {}",
        resp.content_type()
    );
    assert!(
        resp.body == include_bytes!("../static/signaling.js"),
        "body is not static/signaling.js"
    );
}

// ---------------------------------------------------------------- methods and unknown paths

/// Headers that may legitimately differ between two responses.
fn comparable_headers(resp: &HttpResponse) -> Vec<(String, String)> {
    let mut hs: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .filter(|(k, _)| k != "date")
        .collect();
    hs.sort();
    hs
}

#[test]
fn head_is_get_without_body() {
    let server = start();
    let addr = server.local_addr();
    let _a = Client::join_expect(addr, "room", "a", &[]);
    for path in [
        "/healthz",
        "/webrtc/rooms",
        "/webrtc/rooms/room/peers",
        "/webrtc/rooms/nope/peers",
        "/webrtc/ice-servers",
        "/webrtc/client",
        "/",
        "/nope",
    ] {
        let g = get(addr, path);
        let h = http(addr, "HEAD", path);
        assert_eq!(h.status, g.status, "HEAD {path}");
        assert_eq!(
            comparable_headers(&h),
            comparable_headers(&g),
            "HEAD {path} headers"
        );
        assert!(
            h.body.is_empty(),
            "HEAD {path} has a body: {:?}",
            String::from_utf8_lossy(&h.body)
        );
    }
}

fn request_with_empty_body(addr: std::net::SocketAddr, method: &str, path: &str) -> HttpResponse {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    http_exchange(addr, req.as_bytes(), false)
        .expect("HTTP exchange")
        .unwrap_or_else(|| panic!("{method} {path}: no response"))
}

#[test]
fn other_method_on_known_path_is_405_with_allow() {
    let server = start();
    let addr = server.local_addr();
    for (method, path) in [
        ("POST", "/webrtc/rooms"),
        ("POST", "/healthz"),
        ("PUT", "/webrtc/ice-servers"),
        ("DELETE", "/webrtc/rooms/room/peers"),
        ("POST", "/webrtc/client"),
        ("PATCH", "/"),
    ] {
        let resp = request_with_empty_body(addr, method, path);
        resp.assert_some_error(405);
        assert_eq!(resp.header("allow"), Some("GET, HEAD"), "{method} {path}");
    }
}

#[test]
fn unknown_path_is_404_json() {
    let server = start();
    let addr = server.local_addr();
    for path in [
        "/nope",
        "/webrtc",
        "/webrtc/",
        "/webrtc/rooms/room",
        "/webrtc/rooms/room/peers/extra",
        "/webrtc/signaling/only-room",
        "/webrtc/signaling/a/b/c",
        "/healthz/x",
        "/webrtc/client/nope.js",
    ] {
        let resp = get(addr, path);
        assert_eq!(resp.status, 404, "GET {path}: {resp:?}");
        resp.assert_some_error(404);
    }
}

#[test]
fn plain_get_on_signaling_path_is_426_upgrade_required() {
    let server = start();
    let resp = get(server.local_addr(), "/webrtc/signaling/room/peer");
    resp.assert_error(426, "upgrade_required");
}

#[test]
fn upgrade_required_response_carries_upgrade_websocket_header() {
    let server = start();
    let resp = get(server.local_addr(), "/webrtc/signaling/room/peer");
    assert_eq!(resp.status, 426);
    // RFC 9110 §15.5.22: a 426 response carries an Upgrade header.
    let upgrade = resp
        .header("upgrade")
        .unwrap_or_else(|| panic!("426 without Upgrade header: {resp:?}"));
    assert!(
        upgrade.eq_ignore_ascii_case("websocket"),
        "Upgrade: {upgrade}"
    );
}

#[test]
fn plain_get_does_not_join_the_room() {
    let server = start();
    let addr = server.local_addr();
    let mut a = Client::join_expect(addr, "room", "a", &[]);
    get(addr, "/webrtc/signaling/room/peer").assert_error(426, "upgrade_required");
    a.expect_silence(Duration::from_millis(300));
    get(addr, "/webrtc/rooms/room/peers")
        .assert_json(200, json!({"room_id": "room", "peers": ["a"]}));
}

// ---------------------------------------------------------------- request-head limits

#[test]
fn request_head_within_limit_is_served() {
    let server = start_with(|c| c.limits.http_head_max = 1024);
    let addr = server.local_addr();
    let req = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(800)
    );
    assert!(req.len() < 1024);
    let resp = http_exchange(addr, req.as_bytes(), false)
        .unwrap()
        .expect("a response");
    resp.assert_json(200, json!({"status": "ok"}));
}

#[test]
fn request_head_over_limit_is_431_or_closed() {
    let server = start_with(|c| c.limits.http_head_max = 1024);
    let addr = server.local_addr();
    let req = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(4000)
    );
    // http_exchange bounds the wait; the server must answer 431 or close.
    // `None`: closed without a response, which is also acceptable.
    if let Some(resp) = http_exchange(addr, req.as_bytes(), false).unwrap() {
        resp.assert_error(431, "header_too_large");
    }
    // The server is still fine.
    get(addr, "/healthz").assert_json(200, json!({"status": "ok"}));
}

#[test]
fn trickled_request_head_is_cut_off_after_head_timeout() {
    let server = start_with(|c| c.limits.http_head_timeout = Duration::from_secs(1));
    let addr = server.local_addr();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    // One byte every 100 ms (the read timeout paces the loop) until the
    // server ends the connection.
    loop {
        assert!(
            Instant::now() < deadline,
            "trickling client still connected after 20 s"
        );
        if s.write_all(b"a").is_err() {
            break;
        }
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    // A 408 is best effort; if anything was sent, it is a 408.
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let _ = s.read_to_end(&mut received);
    if !received.is_empty() {
        let text = String::from_utf8_lossy(&received);
        assert!(
            text.starts_with("HTTP/1.1 408") || text.starts_with("HTTP/1.0 408"),
            "got {text:?}"
        );
    }
    // The server is still fine.
    get(addr, "/healthz").assert_json(200, json!({"status": "ok"}));
}

#[test]
fn rest_requests_do_not_count_as_signaling_sessions() {
    let server = start_with(|c| c.limits.max_connections = 1);
    let addr = server.local_addr();
    for _ in 0..5 {
        get(addr, "/healthz").assert_json(200, json!({"status": "ok"}));
    }
    let _a = Client::join_expect(addr, "room", "a", &[]);
    get(addr, "/webrtc/rooms").assert_json(
        200,
        json!({"rooms": [{"room_id": "room", "peer_count": 1}]}),
    );
}
