//! The pure state machines alone, no sockets, no threads: what a relay, a broadcast
//! to a room of 20 and a join/leave cost in the router, and what a message costs in
//! a session (decode, rules, encode). Regressions show here without the noise of a
//! shared machine's scheduler. Run: `cargo bench --bench core`.

use std::hint::black_box;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tungstenite::protocol::{Role, WebSocketContext};
use tungstenite::Message;
use webrtc_signaling::core::router::{Command, Output, Router, RouterLimits, SessionId, Text};
use webrtc_signaling::core::session::Session;
use webrtc_signaling::metrics::Metrics;
use webrtc_signaling::protocol::{PeerId, RelayKind, RoomId};
use webrtc_signaling::Limits;

const CANDIDATE: &str = r#"{"type":"ice_candidate","candidate":{"candidate":"candidate:842163049 1 udp 1677729535 192.0.2.10 50123 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag Xy9z network-cost 999","sdpMid":"0","sdpMLineIndex":0},"target_peer_id":"p1"}"#;

fn limits() -> RouterLimits {
    RouterLimits {
        max_sessions: 10_000,
        max_room_peers: 64,
        peer_queue: 64,
        max_backlog: 4096,
        resume_grace: Duration::from_secs(10),
    }
}

fn id(s: &str) -> PeerId {
    PeerId::parse(s).expect("id")
}

/// A router with `n` peers in one room, every queue drained.
fn room_of(n: u64) -> (Router, RoomId, Vec<PeerId>) {
    let mut router = Router::new(limits());
    let now = Instant::now();
    let room = RoomId::parse("room").expect("id");
    let peers: Vec<PeerId> = (0..n).map(|i| id(&format!("p{i}"))).collect();
    for (i, p) in peers.iter().enumerate() {
        router.handle(
            Command::Join {
                room: room.clone(),
                peer: p.clone(),
                session: i as SessionId,
                resume: None,
                token: Some(format!("token-{i}")),
            },
            now,
        );
        drain(&mut router);
    }
    (router, room, peers)
}

/// Takes every output; reports the queues drained whenever the router asks, as
/// reading sessions would.
fn drain(router: &mut Router) {
    let mut asked = Vec::new();
    while let Some(out) = router.poll_output() {
        match out {
            Output::WantDrained { session } => asked.push(session),
            other => {
                black_box(other);
            }
        }
    }
    for session in asked {
        router.handle(Command::Drained { session, taken: 64 }, Instant::now());
        while let Some(out) = router.poll_output() {
            black_box(out);
        }
    }
}

fn router_relay(c: &mut Criterion) {
    let (mut router, _, peers) = room_of(8);
    let text: Text = CANDIDATE.to_owned().into();
    let now = Instant::now();
    c.bench_function("core_router_relay", |b| {
        b.iter(|| {
            router.handle(
                Command::Relay {
                    session: 0,
                    kind: RelayKind::IceCandidate,
                    target: peers[7].clone(),
                    text: text.clone(),
                },
                now,
            );
            drain(&mut router);
        })
    });
}

fn router_broadcast_20(c: &mut Criterion) {
    // A leave and a join: each tells the other 19 members.
    let (mut router, room, _) = room_of(20);
    let now = Instant::now();
    let mut next: SessionId = 1000;
    c.bench_function("core_router_leave_and_join_in_room_of_20", |b| {
        b.iter(|| {
            router.handle(
                Command::Leave {
                    session: 19,
                    reason: webrtc_signaling::protocol::CloseReason::ClientClosed(1000),
                    unsent: Vec::new(),
                    ack: None,
                },
                now,
            );
            drain(&mut router);
            next += 1;
            router.handle(
                Command::Join {
                    room: room.clone(),
                    peer: id("p19"),
                    session: 19,
                    resume: None,
                    token: Some(format!("t{next}")),
                },
                now,
            );
            drain(&mut router);
        })
    });
}

/// Client bytes for the session to read, over and over.
struct Repeat {
    frame: Vec<u8>,
    at: usize,
    left: usize,
}

impl Read for Repeat {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.frame.len() - self.at);
        buf[..n].copy_from_slice(&self.frame[self.at..self.at + n]);
        self.at += n;
        if self.at == self.frame.len() {
            self.at = 0;
            self.left -= 1;
        }
        Ok(n)
    }
}

fn session_message(c: &mut Criterion) {
    let limits = Limits {
        rate_per_sec: 0,
        ..Limits::default()
    };
    let mut session = Session::new(
        1,
        RoomId::parse("room").expect("id"),
        id("p0"),
        &limits,
        Arc::new(Metrics::new(64)),
        Vec::new(),
        Instant::now(),
    );
    // One masked client frame, as a browser sends it.
    let mut client = WebSocketContext::new(Role::Client, None);
    let mut frame = Vec::new();
    struct Sink<'a>(&'a mut Vec<u8>);
    impl Read for Sink<'_> {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }
    impl io::Write for Sink<'_> {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    client
        .write(&mut Sink(&mut frame), Message::text(CANDIDATE))
        .expect("frame");
    client.flush(&mut Sink(&mut frame)).expect("frame");
    let relayed: Text = Text::relayed(
        CANDIDATE.replace("}", ",\"from_peer_id\":\"p9\"}"),
        Instant::now(),
        9,
    );
    c.bench_function("core_session_read_relay_and_write_one", |b| {
        b.iter(|| {
            let now = Instant::now();
            let mut src = Repeat {
                frame: frame.clone(),
                at: 0,
                left: 1,
            };
            session.read_from(&mut src, now);
            while let Some(cmd) = session.poll_command() {
                black_box(cmd);
            }
            session.deliver(relayed.clone(), now);
            let n = session.pending().len();
            session.written(n, now);
        })
    });
}

criterion_group!(benches, router_relay, router_broadcast_20, session_message);
criterion_main!(benches);
