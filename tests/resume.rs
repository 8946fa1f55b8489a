//! PROTOCOL.md §8 over real sockets: a peer whose connection drops is held for the
//! resume grace, takes itself over with its token through a new connection, and
//! otherwise leaves once the grace runs out.

mod common;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use webrtc_signaling::access::{mint, now_secs, Claims};
use webrtc_signaling::Secret;

fn left(p: &str) -> serde_json::Value {
    json!({"type": "peer_left", "peer_id": p})
}

/// A server's `/metrics` value of `series` (0 when absent).
fn metric(addr: SocketAddr, series: &str) -> f64 {
    let body = String::from_utf8(get(addr, "/metrics").body).unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until `series` reads `want` (the server has noticed what the test did).
fn settle(addr: SocketAddr, series: &str, want: f64) {
    let deadline = Instant::now() + DEADLINE;
    while metric(addr, series) != want {
        assert!(Instant::now() < deadline, "{series} never reached {want}");
        std::thread::yield_now();
    }
}

const HELD: &str = "webrtc_signaling_peers_suspended";

/// Ends the TCP connection with a reset (SO_LINGER 0), as a phone changing networks
/// or a crashed proxy would.
fn reset(c: Client) {
    let fd = c.stream().as_raw_fd();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(c);
}

fn resume_path(room: &str, peer: &str, token: &str) -> String {
    format!("/webrtc/signaling/{room}/{peer}?resume={token}")
}

/// Connects with `?resume=` and reads `existing_peers`.
fn resume(addr: SocketAddr, room: &str, peer: &str, token: &str, existing: &[&str]) -> Client {
    let mut c = Client::connect_path(addr, &resume_path(room, peer, token));
    c.name = format!("{room}/{peer} (resumed)");
    c.expect_json(json!({"type": "existing_peers", "peers": existing}));
    c
}

#[test]
fn a_reset_connection_is_held_and_resumed_with_the_kept_messages_and_no_flap() {
    let server = start();
    let addr = server.local_addr();
    let (mut a, b) = pair(addr, "room", "a", "b");
    let token = b
        .resume_token
        .clone()
        .expect("existing_peers carries a resume token");
    reset(b);
    settle(addr, HELD, 1.0);
    // Held: still listed, its id taken, relays to it kept.
    assert_eq!(
        get_json(addr, "/webrtc/rooms/room/peers"),
        json!({"room_id": "room", "peers": ["a", "b"]})
    );
    for seq in 0..5 {
        a.send_json(&candidate("b", seq));
    }
    let mut b2 = resume(addr, "room", "b", &token, &["a"]);
    let fresh = b2.resume_token.clone().expect("a fresh token");
    assert_ne!(fresh, token);
    for seq in 0..5 {
        b2.expect_json(relayed_candidate("b", seq, "a"));
    }
    // a never saw b leave or join again, and both directions work.
    assert_still_works(&mut a, "a", &mut b2, "b", 100);
    assert_still_works(&mut b2, "b", &mut a, "a", 101);
    assert_eq!(metric(addr, "webrtc_signaling_resumes_total"), 1.0);
    assert_eq!(metric(addr, HELD), 0.0);
}

#[test]
fn a_half_open_session_is_replaced_with_4410() {
    let server = start();
    let addr = server.local_addr();
    let (mut a, mut b) = pair(addr, "room", "a", "b");
    let token = b.resume_token.clone().unwrap();
    // The old connection is still open as far as the server knows.
    let mut b2 = resume(addr, "room", "b", &token, &["a"]);
    b.expect_close(4410, "replaced");
    assert_still_works(&mut a, "a", &mut b2, "b", 1);
    a.expect_silence(Duration::from_millis(200));
}

#[test]
fn a_wrong_or_used_token_is_4409_and_the_holder_is_untouched() {
    let server = start();
    let addr = server.local_addr();
    let (mut a, b) = pair(addr, "room", "a", "b");
    let token = b.resume_token.clone().unwrap();
    let a_token = a.resume_token.clone().unwrap();
    reset(b);
    settle(addr, HELD, 1.0);
    for bad in ["nope", a_token.as_str(), ""] {
        let mut c = Client::connect_path(addr, &resume_path("room", "b", bad));
        c.expect_close(4409, "peer_id_taken");
    }
    expect_refused(addr, "room", "b", 4409, "peer_id_taken");
    let b2 = resume(addr, "room", "b", &token, &["a"]);
    b2.close(1000);
    a.expect_json(left("b"));
    // The token was good for one takeover only.
    let (_c, peers) = Client::join(addr, "room", "b");
    assert_eq!(peers, ["a"], "b joins as new: nothing held any more");
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    let mut stale = Client::connect_path(addr, &resume_path("room", "b", &token));
    stale.expect_close(4409, "peer_id_taken");
}

#[test]
fn the_grace_running_out_is_one_peer_left() {
    let server = start_with(|c| c.limits.resume_grace = Duration::from_millis(300));
    let addr = server.local_addr();
    let (mut a, b) = pair(addr, "room", "a", "b");
    let token = b.resume_token.clone().unwrap();
    b.drop_tcp();
    a.expect_json(left("b"));
    a.expect_silence(Duration::from_millis(300));
    assert_eq!(
        metric(addr, "webrtc_signaling_resume_grace_expired_total"),
        1.0
    );
    // Too late: the token is ignored and b is a new peer.
    let _b = resume(addr, "room", "b", &token, &["a"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
}

#[test]
fn a_close_frame_leaves_at_once() {
    let server = start();
    let addr = server.local_addr();
    let (mut a, b) = pair(addr, "room", "a", "b");
    b.close(1000);
    a.expect_json(left("b"));
    assert_eq!(metric(addr, HELD), 0.0);
}

#[test]
fn a_silent_peer_timed_out_is_held_too() {
    let server = start_with(|c| {
        c.limits.idle_timeout = Duration::from_millis(500);
        c.limits.ping_interval = Duration::ZERO;
        c.limits.rate_per_sec = 0; // a pings as fast as it reads the metrics
    });
    let addr = server.local_addr();
    let (mut a, mut b) = pair(addr, "room", "a", "b");
    let token = b.resume_token.clone().unwrap();
    // a keeps itself alive while b, which sends nothing, is timed out and held.
    let deadline = Instant::now() + DEADLINE;
    while metric(addr, HELD) != 1.0 {
        assert!(Instant::now() < deadline, "b was never held");
        a.send_json(&json!({"type": "ping"}));
        a.expect_json(json!({"type": "pong"}));
    }
    b.expect_close(4408, "timeout");
    a.send_json(&candidate("b", 7));
    let mut b2 = resume(addr, "room", "b", &token, &["a"]);
    b2.expect_json(relayed_candidate("b", 7, "a"));
}

#[test]
fn with_the_grace_off_there_is_no_token_and_section_3_holds() {
    let server = start_with(|c| c.limits.resume_grace = Duration::ZERO);
    let addr = server.local_addr();
    let (mut a, b) = pair(addr, "room", "a", "b");
    assert_eq!(b.resume_token, None);
    b.drop_tcp();
    a.expect_json(left("b"));
    // ?resume= is ignored: a plain join.
    let _b = resume(addr, "room", "b", "anything", &["a"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
}

#[test]
fn with_auth_on_a_resume_also_needs_a_valid_room_token() {
    const SECRET: &str = "resume-test-secret-resume-test-secret";
    let server = start_with(|c| c.access.auth_secret = Some(Secret::new(SECRET)));
    let addr = server.local_addr();
    let jwt = |peer: &str| {
        mint(
            SECRET.as_bytes(),
            &Claims {
                room: Some("room".into()),
                peer: Some(peer.into()),
                exp: now_secs() + 600,
                ..Claims::default()
            },
        )
        .unwrap()
    };
    let join = |peer: &str, extra: &str| {
        Client::connect_path(
            addr,
            &format!("/webrtc/signaling/room/{peer}?token={}{extra}", jwt(peer)),
        )
    };
    let mut a = join("a", "");
    a.expect_json(json!({"type": "existing_peers", "peers": []}));
    let mut b = join("b", "");
    b.expect_json(json!({"type": "existing_peers", "peers": ["a"]}));
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    let token = b.resume_token.clone().unwrap();
    reset(b);
    // The resume token alone is not enough.
    let mut bare = Client::connect_path(addr, &resume_path("room", "b", &token));
    bare.expect_close(4401, "unauthorized");
    let mut b2 = join("b", &format!("&resume={token}"));
    b2.expect_json(json!({"type": "existing_peers", "peers": ["a"]}));
    assert_still_works(&mut a, "a", &mut b2, "b", 1);
}
