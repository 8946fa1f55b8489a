//! The Origin allow-list (PROTOCOL.md §5, close 4403 `origin_not_allowed`): a real
//! server with `limits.allowed_origins`, WebSocket upgrades with chosen `Origin` headers.

mod common;

use std::net::{SocketAddr, TcpStream};

use common::{assert_still_works, start, start_with, Client, DEADLINE};
use serde_json::json;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use webrtc_signaling::access::{self, Claims, Origins};
use webrtc_signaling::{Secret, Server};

const APP: &str = "https://app.example";

fn origins(list: &[&str]) -> Origins {
    let mut o = Origins::default();
    for origin in list {
        o.add(origin)
            .unwrap_or_else(|e| panic!("{origin:?} is a valid origin: {e}"));
    }
    o
}

/// A server that lets browsers on `APP` (and only there) open sessions.
fn app_server() -> Server {
    start_with(|c| c.access.allowed_origins = origins(&[APP]))
}

/// Upgrade on `path` sending `Origin: origin` (no Origin header with `None`);
/// the upgrade itself must succeed (101). Reads nothing after the handshake.
fn connect_origin(addr: SocketAddr, path: &str, origin: Option<&str>) -> Client {
    let stream = TcpStream::connect(addr).expect("tcp connect");
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(DEADLINE))
        .expect("write timeout");
    stream.set_nodelay(true).expect("nodelay");
    let url = format!("ws://{addr}{path}");
    let mut req = url
        .as_str()
        .into_client_request()
        .unwrap_or_else(|e| panic!("request for {url}: {e}"));
    if let Some(o) = origin {
        let value =
            HeaderValue::from_str(o).unwrap_or_else(|e| panic!("Origin {o:?} as a header: {e}"));
        req.headers_mut().insert("Origin", value);
    }
    let (ws, resp) = match tungstenite::client(req, stream) {
        Ok(ok) => ok,
        Err(e) => panic!("WebSocket handshake on {path} (Origin {origin:?}) failed: {e:?}"),
    };
    assert_eq!(
        resp.status().as_u16(),
        101,
        "upgrade status on {path} (Origin {origin:?})"
    );
    Client {
        ws,
        name: format!("{path} (Origin {origin:?})"),
        resume_token: None,
    }
}

fn signaling_path(room: &str, peer: &str) -> String {
    format!("/webrtc/signaling/{room}/{peer}")
}

/// Join room/peer with this Origin; `existing_peers` must be `existing`.
fn join_origin(
    addr: SocketAddr,
    room: &str,
    peer: &str,
    origin: Option<&str>,
    existing: &[&str],
) -> Client {
    let mut c = connect_origin(addr, &signaling_path(room, peer), origin);
    let first = c.recv_json();
    assert_eq!(
        first,
        json!({"type": "existing_peers", "peers": existing}),
        "first message of {room}/{peer} with Origin {origin:?}"
    );
    c
}

/// The upgrade succeeds, then error `origin_not_allowed`, close 4403 and the end.
fn expect_origin_refused(addr: SocketAddr, room: &str, peer: &str, origin: Option<&str>) {
    let mut c = connect_origin(addr, &signaling_path(room, peer), origin);
    c.expect_close(4403, "origin_not_allowed");
}

#[test]
fn a_foreign_origin_is_4403_and_the_room_never_learns() {
    let server = app_server();
    let addr = server.local_addr();
    let mut a = join_origin(addr, "room", "a", Some(APP), &[]);
    expect_origin_refused(addr, "room", "x", Some("https://evil.example"));
    // The next peer is told of a only, and a's next message is about b, not x.
    let mut b = join_origin(addr, "room", "b", Some(APP), &["a"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    // x's id was never taken.
    let mut x = join_origin(addr, "room", "x", Some(APP), &["a", "b"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "x"}));
    b.expect_json(json!({"type": "peer_joined", "peer_id": "x"}));
    assert_still_works(&mut x, "x", &mut a, "a", 1);
    assert_still_works(&mut x, "x", &mut b, "b", 2);
    common::get(addr, "/webrtc/rooms/room/peers")
        .assert_json(200, json!({"room_id": "room", "peers": ["a", "b", "x"]}));
    common::get(addr, "/webrtc/rooms").assert_json(
        200,
        json!({"rooms": [{"room_id": "room", "peer_count": 3}]}),
    );
}

#[test]
fn origins_that_merely_resemble_the_allowed_one_are_4403() {
    let server = app_server();
    let addr = server.local_addr();
    for origin in [
        "https://evil.example",
        "http://app.example",
        "https://app.example:8443",
        "https://sub.app.example",
        "https://app.example.evil.example",
        "https://evilapp.example",
        "app.example",
        "",
    ] {
        expect_origin_refused(addr, "room", "x", Some(origin));
    }
    common::get(addr, "/webrtc/rooms").assert_json(200, json!({"rooms": []}));
}

#[test]
fn the_allowed_origin_joins_in_any_case_and_with_a_trailing_slash() {
    let server = app_server();
    let addr = server.local_addr();
    let mut a = join_origin(addr, "room", "a", Some(APP), &[]);
    let mut b = join_origin(addr, "room", "b", Some("HTTPS://App.Example"), &["a"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    let _c = join_origin(addr, "room", "c", Some("https://app.example/"), &["a", "b"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "c"}));
    b.expect_json(json!({"type": "peer_joined", "peer_id": "c"}));
    assert_still_works(&mut a, "a", &mut b, "b", 1);
}

#[test]
fn configured_origins_are_normalised_and_several_may_be_allowed() {
    let server = start_with(|c| {
        c.access.allowed_origins = origins(&["HTTPS://App.Example/", "http://localhost:3000"])
    });
    let addr = server.local_addr();
    let _a = join_origin(addr, "room", "a", Some(APP), &[]);
    let _b = join_origin(addr, "room", "b", Some("http://localhost:3000"), &["a"]);
    expect_origin_refused(addr, "room", "x", Some("http://localhost:3001"));
    expect_origin_refused(addr, "room", "x", Some("https://localhost:3000"));
}

#[test]
fn a_request_without_origin_joins() {
    // Not a browser page: the allow-list protects browsers, not against programs.
    let server = app_server();
    let addr = server.local_addr();
    let mut a = join_origin(addr, "room", "a", None, &[]);
    let mut b = join_origin(addr, "room", "b", Some(APP), &["a"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    assert_still_works(&mut a, "a", &mut b, "b", 1);
}

#[test]
fn origin_null_is_4403() {
    let server = app_server();
    let addr = server.local_addr();
    for origin in ["null", "NULL"] {
        expect_origin_refused(addr, "room", "x", Some(origin));
    }
    let _x = join_origin(addr, "room", "x", Some(APP), &[]);
}

#[test]
fn the_servers_own_origin_joins() {
    // The built-in client page is served from this server: its Origin is the Host
    // the client sends (tungstenite sends Host: 127.0.0.1:PORT).
    let server = app_server();
    let addr = server.local_addr();
    let own = format!("http://{addr}");
    let mut a = join_origin(addr, "room", "a", Some(&own), &[]);
    let mut b = join_origin(addr, "room", "b", Some(&format!("https://{addr}")), &["a"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    assert_still_works(&mut b, "b", &mut a, "a", 1);
    // Same host, another port: another origin.
    let other_port = if addr.port() == 1 { 2 } else { 1 };
    expect_origin_refused(
        addr,
        "room",
        "x",
        Some(&format!("http://{}:{other_port}", addr.ip())),
    );
    expect_origin_refused(addr, "room", "x", Some(&format!("http://{}", addr.ip())));
}

#[test]
fn without_an_allow_list_every_origin_joins() {
    let server = start();
    let addr = server.local_addr();
    let mut a = join_origin(addr, "room", "a", Some("https://evil.example"), &[]);
    let mut b = join_origin(addr, "room", "b", Some("null"), &["a"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    let _c = join_origin(addr, "room", "c", None, &["a", "b"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "c"}));
    b.expect_json(json!({"type": "peer_joined", "peer_id": "c"}));
    assert_still_works(&mut a, "a", &mut b, "b", 1);
}

#[test]
fn the_origin_is_checked_before_the_token() {
    let secret = "s3cret-s3cret-s3cret-s3cret-s3cret";
    let server = start_with(|c| {
        c.access.allowed_origins = origins(&[APP]);
        c.access.auth_secret = Some(Secret::new(secret));
    });
    let addr = server.local_addr();
    let token = |room: &str, peer: &str| {
        access::mint(
            secret.as_bytes(),
            &Claims {
                room: Some(room.to_owned()),
                peer: Some(peer.to_owned()),
                exp: access::now_secs() + 3600,
                ..Claims::default()
            },
        )
        .expect("mint")
    };
    let with_token = |peer: &str| {
        format!(
            "/webrtc/signaling/room/{peer}?token={}",
            token("room", peer)
        )
    };
    // A valid token does not help a foreign page.
    let mut c = connect_origin(addr, &with_token("x"), Some("https://evil.example"));
    c.expect_close(4403, "origin_not_allowed");
    // A foreign page without a token hears about its origin, not its token.
    expect_origin_refused(addr, "room", "x", Some("https://evil.example"));
    // The right page still needs a token.
    let mut c = connect_origin(addr, &signaling_path("room", "x"), Some(APP));
    c.expect_close(4401, "unauthorized");
    // Both right: in.
    let mut c = connect_origin(addr, &with_token("x"), Some(APP));
    assert_eq!(
        c.recv_json(),
        json!({"type": "existing_peers", "peers": []}),
        "allowed origin with a valid token"
    );
}

#[test]
fn invalid_ids_are_still_4400_with_an_allow_list() {
    let server = app_server();
    let addr = server.local_addr();
    for origin in [Some(APP), None] {
        let mut c = connect_origin(addr, &signaling_path("bad!room", "x"), origin);
        c.expect_close(4400, "invalid_room_id");
        let mut c = connect_origin(addr, &signaling_path("room", "bad!peer"), origin);
        c.expect_close(4400, "invalid_peer_id");
    }
}
