//! Relay latency through a real server on loopback, join latency, and the router's
//! own cost with no sockets. Run: `cargo bench --bench relay`.

use std::hint::black_box;
use std::net::{SocketAddr, TcpStream};

use criterion::{criterion_group, criterion_main, Criterion};
use tungstenite::{Message, WebSocket};
use webrtc_signaling::protocol::{CloseReason, PeerId, RelayKind, RoomId};
use webrtc_signaling::router::{Command, Full, Mailbox, Router, RouterLimits, Text};
use webrtc_signaling::{Config, Server};

type Ws = WebSocket<TcpStream>;

/// A ~2.4 KB SDP body, the size of a real audio+video offer.
fn sdp(kind: &str) -> String {
    let mut s = String::from("v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\na=msid-semantic: WMS\r\n");
    while s.len() < 2400 {
        s.push_str("a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n");
    }
    s.push_str(&format!("a=setup:{kind}\r\n"));
    s
}

fn server() -> Server {
    let mut cfg = Config {
        bind: "127.0.0.1".parse().expect("ip"),
        port: 0,
        ..Config::default()
    };
    cfg.limits.rate_per_sec = 0;
    Server::start(cfg).expect("server")
}

fn connect(addr: SocketAddr, room: &str, peer: &str) -> Ws {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let url = format!("ws://{addr}/webrtc/signaling/{room}/{peer}");
    let (mut ws, _) = tungstenite::client(url, stream).expect("handshake");
    next_text(&mut ws); // existing_peers
    ws
}

fn next_text(ws: &mut Ws) -> String {
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => return t.as_str().to_owned(),
            _ => continue,
        }
    }
}

fn relay_round_trip(c: &mut Criterion) {
    let server = server();
    let addr = server.local_addr();
    let mut a = connect(addr, "bench", "a");
    let mut b = connect(addr, "bench", "b");
    next_text(&mut a); // peer_joined b
    let offer = serde_json::json!({"type":"offer","offer":{"type":"offer","sdp":sdp("actpass")},"target_peer_id":"b"}).to_string();
    let answer = serde_json::json!({"type":"answer","answer":{"type":"answer","sdp":sdp("active")},"target_peer_id":"a"}).to_string();
    let candidate = serde_json::json!({"type":"ice_candidate","candidate":{"candidate":"candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 10.0.0.2 rport 46154 generation 0 ufrag EsAw network-cost 999","sdpMLineIndex":0,"sdpMid":"0","usernameFragment":"EsAw"},"target_peer_id":"b"}).to_string();
    c.bench_function("offer_answer_round_trip", |bench| {
        bench.iter(|| {
            a.send(Message::text(offer.as_str())).expect("send");
            black_box(next_text(&mut b));
            b.send(Message::text(answer.as_str())).expect("send");
            black_box(next_text(&mut a));
        })
    });
    c.bench_function("candidate_one_way_pipelined_x100", |bench| {
        bench.iter(|| {
            for _ in 0..100 {
                a.write(Message::text(candidate.as_str())).expect("write");
            }
            a.flush().expect("flush");
            for _ in 0..100 {
                black_box(next_text(&mut b));
            }
        })
    });
}

fn join_latency(c: &mut Criterion) {
    let server = server();
    let addr = server.local_addr();
    let _host = connect(addr, "join", "host");
    let mut n = 0u64;
    c.bench_function("join_connect_to_existing_peers", |bench| {
        bench.iter(|| {
            n += 1;
            let mut ws = connect(addr, "join", &format!("p{n}"));
            let _ = ws.close(None);
        })
    });
}

/// A mailbox that accepts everything and keeps nothing: the router's cost alone.
struct Sink;

impl Mailbox for Sink {
    fn push(&self, text: Text) -> Result<(), Full> {
        black_box(text);
        Ok(())
    }
    fn close(&self, _: CloseReason) {}
}

fn router_only(c: &mut Criterion) {
    let mut router = Router::new(RouterLimits {
        max_sessions: 1000,
        max_room_peers: 32,
    });
    let room = RoomId::parse("room").expect("id");
    let peers: Vec<PeerId> = (0..8)
        .map(|i| PeerId::parse(&format!("p{i}")).expect("id"))
        .collect();
    for (i, p) in peers.iter().enumerate() {
        router.handle(Command::Join {
            room: room.clone(),
            peer: p.clone(),
            session: i as u64,
            mailbox: Sink,
        });
    }
    let text: Text = sdp("actpass").into();
    c.bench_function("router_relay_in_room_of_8", |bench| {
        bench.iter(|| {
            router.handle(Command::Relay {
                room: room.clone(),
                from: peers[0].clone(),
                session: 0,
                kind: RelayKind::Offer,
                target: peers[7].clone(),
                text: text.clone(),
            })
        })
    });
}

criterion_group!(benches, relay_round_trip, join_latency, router_only);
criterion_main!(benches);
