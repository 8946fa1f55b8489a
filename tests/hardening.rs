//! Issue 14 against the real server on real sockets: ambiguous framing, connection
//! slots (eviction of idle keep-alive connections, 503s, the cap per address and per
//! connection), slow TLS handshakes, a failed thread start, DNS rebinding, TURN
//! credentials that follow the token, admin tokens, short secrets.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{get, http_exchange, start_with, take_resume_token, Client, DEADLINE};
use serde_json::json;
use webrtc_signaling::access::{self, Audience, Claims};
use webrtc_signaling::{Secret, Server};

const SECRET: &str = "hardening-secret-hardening-secret";

/// Sends `request` and reads until the server closes: everything it answered.
fn exchange_all(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn responses(text: &str) -> usize {
    text.matches("HTTP/1.1 ").count()
}

#[test]
fn ambiguous_framing_gets_400_and_the_connection_ends() {
    let server = start_with(|_| {});
    let addr = server.local_addr();
    let next = "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n";
    for head in [
        "POST /webrtc/rooms HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /webrtc/rooms HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 4\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 2\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "GET /healthz HTTP/1.1\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET /healthz HTTP/1.1\nHost: h\n\n",
    ] {
        let got = exchange_all(addr, format!("{head}{next}").as_bytes());
        assert!(got.starts_with("HTTP/1.1 400 "), "{head:?}: {got}");
        assert!(got.contains(r#""error":"bad_request""#), "{head:?}: {got}");
        assert!(got.contains("Connection: close\r\n"), "{head:?}: {got}");
        assert_eq!(responses(&got), 1, "{head:?}: nothing after the 400: {got}");
    }
    get(addr, "/healthz").assert_json(200, json!({"status": "ok"}));
}

#[test]
fn pipelined_requests_are_answered_in_order_up_to_the_cap_per_connection() {
    let server = start_with(|c| c.limits.http_max_requests = 2);
    let addr = server.local_addr();
    let one = "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n";
    let got = exchange_all(addr, one.repeat(3).as_bytes());
    assert_eq!(responses(&got), 2, "{got}");
    let second = got.rfind("HTTP/1.1 ").unwrap();
    assert!(!got[..second].contains("Connection: close"), "{got}");
    assert!(got[second..].contains("Connection: close\r\n"), "{got}");
}

/// A body is never read by an endpoint: the answer comes, then the connection ends
/// with a lingering close, so the client reads the whole answer even while it is
/// still sending (an immediate close would reset the connection under it).
#[test]
fn a_body_is_answered_and_the_close_lingers() {
    let server = start_with(|_| {});
    let addr = server.local_addr();
    let body = vec![b'x'; 1 << 20];
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let head = format!(
        "POST /webrtc/rooms HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        // The server stops reading after the linger; the rest may fail.
        let _ = w.write_all(&body);
    });
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 405 "), "{got}");
    assert!(
        got.ends_with(r#"method not allowed on this path"}"#),
        "{got}"
    );
    assert!(got.contains("Connection: close\r\n"), "{got}");
    drop(s);
    writer.join().unwrap();
}

#[test]
fn an_upgrade_with_a_body_is_400() {
    let server = start_with(|_| {});
    let req = "GET /webrtc/signaling/r/p HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
               Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
               Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 2\r\n\r\nhi";
    let got = exchange_all(server.local_addr(), req.as_bytes());
    assert!(got.starts_with("HTTP/1.1 400 "), "{got}");
}

/// A keep-alive connection that has had its answer: idle, waiting for more.
fn idle_connection(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).expect("an answer");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 "));
    s
}

/// GET /healthz on a new connection until it is answered 200 (a connection that has
/// just had its answer may not be registered as idle yet, or a closed one not yet
/// have given its slot back, and then the new one is refused with 503). Bounded by
/// the deadline.
fn get_until_admitted(addr: SocketAddr) {
    get_admitted(addr, "/healthz");
}

fn get_admitted(addr: SocketAddr, path: &str) -> common::HttpResponse {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let resp = get(addr, path);
        if resp.status == 200 {
            return resp;
        }
        assert_eq!(resp.status, 503, "{resp:?}");
        assert!(Instant::now() < deadline, "never admitted");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_oldest_idle_keep_alive_connection_makes_room_for_new_work() {
    let server = start_with(|c| c.limits.max_http_connections = 2);
    let addr = server.local_addr();
    let mut oldest = idle_connection(addr);
    let mut younger = idle_connection(addr);
    get_until_admitted(addr);
    // The oldest was closed for it; the younger one still serves.
    let mut byte = [0u8; 1];
    assert_eq!(oldest.read(&mut byte).expect("an end of stream"), 0);
    younger
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut rest = String::new();
    younger.read_to_string(&mut rest).unwrap();
    assert!(rest.starts_with("HTTP/1.1 200 "), "{rest}");
}

/// A connection still sending its head is not idle: with every slot busy that way,
/// the next connection gets 503, and the busy ones are not disturbed.
#[test]
fn without_an_idle_connection_the_next_one_gets_503() {
    let server = start_with(|c| c.limits.max_http_connections = 1);
    let addr = server.local_addr();
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(DEADLINE)).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    // The slow connection holds the one slot once accepted: wait for a 503.
    let deadline = Instant::now() + DEADLINE;
    let refused = loop {
        let resp = get(addr, "/healthz");
        if resp.status == 503 {
            break resp;
        }
        assert!(Instant::now() < deadline, "never refused: {resp:?}");
    };
    refused.assert_error(503, "unavailable");
    assert_eq!(refused.header("Retry-After"), Some("1"));
    slow.write_all(b"Host: h\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut rest = String::new();
    slow.read_to_string(&mut rest).unwrap();
    assert!(rest.starts_with("HTTP/1.1 200 "), "{rest}");
}

#[test]
fn the_cap_per_address_refuses_the_next_connection_from_it() {
    let server = start_with(|c| c.limits.max_connections_per_ip = 1);
    let addr = server.local_addr();
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    let deadline = Instant::now() + DEADLINE;
    while get(addr, "/healthz").status != 503 {
        assert!(
            Instant::now() < deadline,
            "the second connection was never refused"
        );
    }
    drop(slow);
    get_until_admitted(addr);
}

/// A session gives its HTTP slot back: with one HTTP slot, REST still works while a
/// session is open.
#[test]
fn a_session_does_not_hold_an_http_slot() {
    let server = start_with(|c| c.limits.max_http_connections = 1);
    let addr = server.local_addr();
    let mut a = Client::join_expect(addr, "room", "a", &[]);
    let rooms = get_admitted(addr, "/webrtc/rooms");
    assert_eq!(
        rooms.json(),
        json!({"rooms": [{"room_id": "room", "peer_count": 1}]})
    );
    a.send_json(&json!({"type": "ping"}));
    a.expect_json(json!({"type": "pong"}));
}

/// The thread for a connection cannot start (a stack no machine can map): that
/// connection gets 503, and the server goes on accepting.
#[test]
fn a_connection_whose_thread_cannot_start_gets_503() {
    let server = start_with(|c| c.limits.thread_stack = 1 << 52);
    let addr = server.local_addr();
    for _ in 0..3 {
        let got = http_exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n", false)
            .expect("exchange")
            .expect("an answer");
        got.assert_error(503, "unavailable");
    }
}

/// A TLS handshake trickling in is cut off at the head deadline, not when it ends.
#[cfg(feature = "tls")]
#[test]
fn a_trickling_tls_handshake_is_cut_off_at_the_head_deadline() {
    let server = start_with(|c| {
        c.tls.self_signed = true;
        c.limits.http_head_timeout = Duration::from_millis(500);
    });
    let addr = server.local_addr();
    let s = TcpStream::connect(addr).unwrap();
    let mut w = s.try_clone().unwrap();
    // A TLS record header announcing 255 bytes, then one byte every 100 ms: 25 s.
    let trickle = std::thread::spawn(move || {
        let mut sent = 0;
        if w.write_all(&[0x16, 0x03, 0x01, 0x00, 0xff]).is_err() {
            return sent;
        }
        for _ in 0..255 {
            std::thread::sleep(Duration::from_millis(100));
            if w.write_all(&[0]).is_err() {
                return sent;
            }
            sent += 1;
        }
        sent
    });
    let mut s = s;
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let mut buf = [0u8; 64];
    // An end of stream or a reset: either way the server let go.
    let _ = s.read(&mut buf);
    drop(s);
    let sent = trickle.join().unwrap();
    assert!(sent < 255, "the handshake was waited for to its end");
}

/// DNS rebinding: the attacker's page at http://rebind.example:PORT, its name pointed
/// at this server, sends that name in both Origin and Host. That is not the server's
/// own page; one at a configured --public-origin is.
#[test]
fn a_host_name_in_host_does_not_make_a_page_the_servers_own() {
    let connect = |server: &Server, origin: &str| {
        let addr = server.local_addr();
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let url = format!(
            "ws://rebind.example:{}/webrtc/signaling/room/x",
            addr.port()
        );
        let mut req = tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
        req.headers_mut().insert("Origin", origin.parse().unwrap());
        let (mut ws, _) = tungstenite::client(req, stream).expect("upgrade");
        let first = ws.read().expect("a first message");
        first.into_text().unwrap().to_string()
    };
    let origin = |server: &Server| format!("http://rebind.example:{}", server.local_addr().port());
    let strict = start_with(|c| c.access.allowed_origins.add("https://app.example").unwrap());
    let got = connect(&strict, &origin(&strict));
    assert!(got.contains(r#""code":"origin_not_allowed""#), "{got}");
    // Configured as the server's public origin: admitted.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let free_port = listener.local_addr().unwrap().port();
    drop(listener);
    let public = start_with(|c| {
        c.port = free_port;
        c.access.allowed_origins.add("https://app.example").unwrap();
        c.access
            .allowed_origins
            .add_public(&format!("http://rebind.example:{free_port}"))
            .unwrap();
    });
    let mut got: serde_json::Value =
        serde_json::from_str(&connect(&public, &origin(&public))).unwrap();
    assert!(take_resume_token(&mut got).is_some(), "{got}");
    assert_eq!(got, json!({"type": "existing_peers", "peers": []}));
}

fn token(claims: &Claims) -> String {
    access::mint(SECRET.as_bytes(), claims).expect("mint")
}

#[test]
fn turn_credentials_follow_the_token() {
    let server = start_with(|c| {
        c.access.auth_secret = Some(Secret::new(SECRET));
        c.ice.servers.push("turn:turn.example:3478".into());
        c.ice.turn_secret = Some(Secret::new("turn-secret"));
    });
    let addr = server.local_addr();
    let exp = access::now_secs() + 120;
    let t = token(&Claims {
        room: Some("r".into()),
        peer: Some("alice".into()),
        exp,
        ..Claims::default()
    });
    let body = common::get_json(addr, &format!("/webrtc/ice-servers?token={t}&peer=mallory"));
    let user = body["iceServers"][0]["username"].as_str().unwrap();
    let (expiry, name) = user.split_once(':').unwrap();
    assert_eq!(name, "alice", "the token's peer, not ?peer=");
    assert!(
        expiry.parse::<u64>().unwrap() <= exp,
        "{user} outlives the token ({exp})"
    );
    assert!(body["ttl"].as_u64().unwrap() <= 120, "{body}");
    get(addr, "/webrtc/ice-servers?peer=mallory").assert_error(401, "unauthorized");
}

#[test]
fn an_admin_claim_alone_is_not_an_admin_token() {
    let server = start_with(|c| c.access.auth_secret = Some(Secret::new(SECRET)));
    let addr = server.local_addr();
    let exp = access::now_secs() + 60;
    let rooms = |t: &str| {
        let req = format!(
            "GET /webrtc/rooms HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {t}\r\nConnection: close\r\n\r\n"
        );
        http_exchange(addr, req.as_bytes(), false).unwrap().unwrap()
    };
    let other_app = token(&Claims {
        admin: true,
        exp,
        aud: Audience::of(&["another-app"]),
        ..Claims::default()
    });
    rooms(&other_app).assert_error(403, "forbidden");
    rooms(&token(&Claims::admin(exp, None))).assert_json(200, json!({"rooms": []}));
}

#[test]
fn a_short_hs256_secret_is_refused_at_start() {
    let mut c = common::test_config();
    c.access.auth_secret = Some(Secret::new("s3cret"));
    let e = Server::start(c).err().expect("refused").to_string();
    assert!(e.contains("at least 32"), "{e}");
}
