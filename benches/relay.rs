//! Relay latency through a real server on loopback (plain and TLS), join latency,
//! and the router's own cost with no sockets. Run: `cargo bench --bench relay`.

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use tungstenite::{Message, WebSocket};
use webrtc_signaling::core::router::{Command, Output, Router, RouterLimits, Text};
use webrtc_signaling::protocol::{PeerId, RelayKind, RoomId};
use webrtc_signaling::{Config, Server};

type Ws = WebSocket<TcpStream>;
type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

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
    server_with(|_| {})
}

fn server_with(f: impl FnOnce(&mut Config)) -> Server {
    let mut cfg = Config {
        bind: "127.0.0.1".parse().expect("ip"),
        port: 0,
        ..Config::default()
    };
    cfg.limits.rate_per_sec = 0;
    f(&mut cfg);
    Server::start(cfg).expect("server")
}

fn connect(addr: SocketAddr, room: &str, peer: &str) -> Ws {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    upgrade(stream, "ws", addr, room, peer)
}

fn upgrade<S: Read + Write>(
    stream: S,
    scheme: &str,
    addr: SocketAddr,
    room: &str,
    peer: &str,
) -> WebSocket<S> {
    let url = format!(
        "{scheme}://localhost:{}/webrtc/signaling/{room}/{peer}",
        addr.port()
    );
    let (mut ws, _) = tungstenite::client(url, stream).expect("handshake");
    next_text(&mut ws); // existing_peers
    ws
}

/// A CA and a leaf for localhost (PEM files for the server), and a client
/// configuration that trusts the CA.
fn tls_pki() -> (
    std::path::PathBuf,
    std::path::PathBuf,
    Arc<rustls::ClientConfig>,
) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("leaf");
    let dir = std::env::temp_dir().join(format!("webrtc-signaling-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, leaf.pem()).expect("write");
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    (cert_path, key_path, Arc::new(config))
}

fn connect_tls(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    room: &str,
    peer: &str,
) -> WebSocket<Tls> {
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(config.clone(), name).expect("tls");
    upgrade(rustls::StreamOwned::new(conn, tcp), "wss", addr, room, peer)
}

fn next_text<S: Read + Write>(ws: &mut WebSocket<S>) -> String {
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
    // The same exchange over TLS, in the same run, for comparison.
    let (cert, key, client) = tls_pki();
    let tls_server = server_with(|c| {
        c.tls.cert = Some(cert);
        c.tls.key = Some(key);
    });
    let tls_addr = tls_server.local_addr();
    let mut ta = connect_tls(tls_addr, &client, "bench", "a");
    let mut tb = connect_tls(tls_addr, &client, "bench", "b");
    next_text(&mut ta); // peer_joined b
    c.bench_function("offer_answer_round_trip_tls", |bench| {
        bench.iter(|| {
            ta.send(Message::text(offer.as_str())).expect("send");
            black_box(next_text(&mut tb));
            tb.send(Message::text(answer.as_str())).expect("send");
            black_box(next_text(&mut ta));
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

/// The router state machine alone: a relay in, its outputs out, and the target's
/// queue reported drained whenever the router asks (as a reading session would).
fn router_only(c: &mut Criterion) {
    let mut router = Router::new(RouterLimits {
        max_sessions: 1000,
        max_room_peers: 32,
        peer_queue: 64,
        max_backlog: 4096,
        resume_grace: std::time::Duration::from_secs(10),
    });
    let now = Instant::now();
    let room = RoomId::parse("room").expect("id");
    let peers: Vec<PeerId> = (0..8)
        .map(|i| PeerId::parse(&format!("p{i}")).expect("id"))
        .collect();
    for (i, p) in peers.iter().enumerate() {
        router.handle(
            Command::Join {
                room: room.clone(),
                peer: p.clone(),
                session: i as u64,
                resume: None,
                token: Some(format!("token-{i}")),
            },
            now,
        );
    }
    // Everyone reads what the joins queued.
    for i in 0..8 {
        router.handle(
            Command::Drained {
                session: i,
                taken: 64,
            },
            now,
        );
    }
    while router.poll_output().is_some() {}
    let text: Text = sdp("actpass").into();
    let mut taken = 0;
    c.bench_function("router_relay_in_room_of_8", |bench| {
        bench.iter(|| {
            router.handle(
                Command::Relay {
                    session: 0,
                    kind: RelayKind::Offer,
                    target: peers[7].clone(),
                    text: text.clone(),
                },
                now,
            );
            let mut asked = false;
            while let Some(out) = router.poll_output() {
                match out {
                    Output::Deliver { .. } => taken += 1,
                    Output::WantDrained { .. } => asked = true,
                    other => {
                        black_box(other);
                    }
                }
            }
            if asked {
                router.handle(
                    Command::Drained {
                        session: 7,
                        taken: std::mem::take(&mut taken),
                    },
                    now,
                );
            }
        })
    });
}

criterion_group!(benches, relay_round_trip, join_latency, router_only);
criterion_main!(benches);
