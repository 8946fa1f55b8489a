//! TLS end to end: real sockets, real rustls clients, certificates made in the test
//! (a CA and a leaf for `localhost`/127.0.0.1, written to PEM files for --tls-cert).
#![cfg(feature = "tls")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{Client, DEADLINE};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, StreamOwned};
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};
use webrtc_signaling::{Config, Server};

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A CA, and a leaf it signed for localhost and 127.0.0.1, as PEM files.
struct Pki {
    ca_der: CertificateDer<'static>,
    cert: PathBuf,
    key: PathBuf,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let dir = std::env::temp_dir().join(format!("webrtc-signaling-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        // Leaf first, then the CA: a chain as a real deployment has it.
        std::fs::write(&cert, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
        std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
        Pki {
            ca_der: ca.der().clone(),
            cert,
            key,
        }
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config() -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(pki().ca_der.clone()).unwrap();
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn tls_config(c: &mut Config) {
    c.tls.cert = Some(pki().cert.clone());
    c.tls.key = Some(pki().key.clone());
}

fn start_tls(f: impl FnOnce(&mut Config)) -> Server {
    common::start_with(|c| {
        tls_config(c);
        f(c);
    })
}

/// A TLS connection to `addr` that verified the server's certificate for localhost.
fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> Tls {
    let tcp = TcpStream::connect(addr).expect("tcp connect");
    tcp.set_read_timeout(Some(DEADLINE)).unwrap();
    tcp.set_write_timeout(Some(DEADLINE)).unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(config, name).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .expect("TLS handshake with the server");
    }
    tls
}

struct WssClient {
    ws: WebSocket<Tls>,
}

impl WssClient {
    fn connect(addr: SocketAddr, path: &str) -> WssClient {
        let tls = tls_connect(addr, client_config());
        let url = format!("wss://localhost:{}{path}", addr.port());
        let (ws, resp) = tungstenite::client(url.as_str(), tls).expect("wss upgrade");
        assert_eq!(resp.status().as_u16(), 101);
        WssClient { ws }
    }

    fn join(addr: SocketAddr, room: &str, peer: &str, existing: &[&str]) -> WssClient {
        let mut c = WssClient::connect(addr, &format!("/webrtc/signaling/{room}/{peer}"));
        c.expect(json!({"type": "existing_peers", "peers": existing}));
        c
    }

    fn send(&mut self, v: &Value) {
        self.ws.send(Message::text(v.to_string())).expect("send");
    }

    fn recv(&mut self) -> Value {
        loop {
            match self.ws.read().expect("read a message within the deadline") {
                Message::Text(t) => {
                    let mut v = serde_json::from_str(t.as_str()).unwrap();
                    common::take_resume_token(&mut v);
                    return v;
                }
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn expect(&mut self, v: Value) {
        assert_eq!(self.recv(), v);
    }

    /// The close frame (code, reason) that ends the session.
    fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.ws.read() {
                Ok(Message::Close(Some(f))) => return (u16::from(f.code), f.reason.to_string()),
                Ok(Message::Close(None)) => panic!("close without a code"),
                Ok(_) => {}
                Err(e) => panic!("no close frame: {e}"),
            }
        }
    }
}

fn offer(target: &str, sdp: &str) -> Value {
    json!({"type": "offer", "target_peer_id": target, "offer": {"type": "offer", "sdp": sdp}})
}

#[test]
fn relay_over_wss_with_a_certificate_from_files() {
    // §3 as it is with resuming off (`--resume-grace 0`); tests/resume.rs covers the hold.
    let server = start_tls(|c| c.limits.resume_grace = std::time::Duration::ZERO);
    let addr = server.local_addr();
    assert_eq!(server.tls_addr(), Some(addr), "TLS alone runs on --port");
    let mut a = WssClient::join(addr, "r", "a", &[]);
    let mut b = WssClient::join(addr, "r", "b", &["a"]);
    a.expect(json!({"type": "peer_joined", "peer_id": "b"}));
    a.send(&offer("b", "v=0 a"));
    b.expect(json!({"type": "offer", "target_peer_id": "b", "offer": {"type": "offer", "sdp": "v=0 a"}, "from_peer_id": "a"}));
    b.send(&json!({"type": "answer", "target_peer_id": "a", "answer": {"type": "answer", "sdp": "v=0 b"}}));
    a.expect(json!({"type": "answer", "target_peer_id": "a", "answer": {"type": "answer", "sdp": "v=0 b"}, "from_peer_id": "b"}));
    drop(b);
    a.expect(json!({"type": "peer_left", "peer_id": "b"}));
}

/// Both peers send a burst while the other is blocked in its own read (a reader
/// thread each): every message arrives, in order, both ways at once. The session's
/// one thread must interleave TLS reads and writes without waiting on either.
#[test]
fn wss_is_full_duplex_under_load() {
    const N: usize = 300;
    let server = start_tls(|c| c.limits.rate_per_sec = 0);
    let addr = server.local_addr();
    let mut a = WssClient::join(addr, "r", "a", &[]);
    let b = WssClient::join(addr, "r", "b", &["a"]);
    a.expect(json!({"type": "peer_joined", "peer_id": "b"}));
    // A 2 KB SDP-like payload: several TLS records per burst.
    let sdp = "x".repeat(2000);
    let run = |mut me: WssClient, target: &'static str, sdp: String| {
        std::thread::spawn(move || {
            for i in 0..N {
                me.send(&offer(target, &format!("{i} {sdp}")));
                // The other side's i-th offer, in order.
                let got = me.recv();
                let seq = got["offer"]["sdp"]
                    .as_str()
                    .and_then(|s| s.split(' ').next());
                assert_eq!(
                    seq,
                    Some(i.to_string().as_str()),
                    "message {i} to {target}'s peer"
                );
            }
            me
        })
    };
    let ta = run(a, "b", sdp.clone());
    let tb = run(b, "a", sdp.clone());
    let a = ta.join().expect("a's thread");
    let b = tb.join().expect("b's thread");
    drop((a, b));
}

/// A large relayed message (many TLS records) arrives byte for byte.
#[test]
fn message_of_max_size_is_relayed_over_wss() {
    let server = start_tls(|_| {});
    let addr = server.local_addr();
    let mut a = WssClient::join(addr, "r", "a", &[]);
    let mut b = WssClient::join(addr, "r", "b", &["a"]);
    a.expect(json!({"type": "peer_joined", "peer_id": "b"}));
    let frame = offer("b", "");
    let overhead = frame.to_string().len();
    let sdp = "s".repeat(64 * 1024 - overhead);
    let msg = offer("b", &sdp);
    assert_eq!(msg.to_string().len(), 64 * 1024);
    a.send(&msg);
    let got = b.recv();
    assert_eq!(got["offer"]["sdp"].as_str().map(str::len), Some(sdp.len()));
    assert_eq!(got["from_peer_id"], "a");
}

/// A peer idle in its read (its session thread parked) gets a relayed message.
#[test]
fn parked_wss_peer_receives_relay_and_errors() {
    let server = start_tls(|_| {});
    let addr = server.local_addr();
    let mut a = WssClient::join(addr, "r", "a", &[]);
    let mut b = WssClient::join(addr, "r", "b", &["a"]);
    a.expect(json!({"type": "peer_joined", "peer_id": "b"}));
    for i in 0..20 {
        b.send(
            &json!({"type": "ice_candidate", "target_peer_id": "a", "candidate": {"candidate": i}}),
        );
        let got = a.recv();
        assert_eq!(got["candidate"]["candidate"], i);
    }
    a.send(&offer("nobody", "x"));
    let err = a.recv();
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "peer_not_found");
    a.ws.send(Message::text("not json")).unwrap();
    assert_eq!(a.recv()["code"], "invalid_json");
}

#[test]
fn refusals_over_wss_carry_their_close_codes() {
    let server = start_tls(|_| {});
    let addr = server.local_addr();
    let _a = WssClient::join(addr, "r", "a", &[]);
    let mut dup = WssClient::connect(addr, "/webrtc/signaling/r/a");
    assert_eq!(dup.recv()["code"], "peer_id_taken");
    assert_eq!(dup.expect_close(), (4409, "peer_id_taken".to_owned()));
    let mut bad = WssClient::connect(addr, "/webrtc/signaling/r/bad%20id");
    assert_eq!(bad.recv()["code"], "invalid_peer_id");
    assert_eq!(bad.expect_close().0, 4400);
}

#[test]
fn shutdown_closes_wss_sessions_with_going_away() {
    let server = start_tls(|_| {});
    let addr = server.local_addr();
    let mut a = WssClient::join(addr, "r", "a", &[]);
    server.shutdown();
    assert_eq!(a.recv()["code"], "going_away");
    assert_eq!(a.expect_close(), (1001, "going_away".to_owned()));
}

/// One HTTP/1.1 request over TLS; the whole response (the server closes after it).
fn https_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut tls = tls_connect(addr, client_config());
    assert_eq!(
        tls.conn.alpn_protocol(),
        None,
        "no ALPN offered, none chosen"
    );
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => {}
        // Servers may skip close_notify; what was read is still the response.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => panic!("reading the response: {e}"),
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, head.to_owned(), body.to_owned())
}

#[test]
fn client_page_rest_and_health_over_https() {
    let server = start_tls(|_| {});
    let addr = server.local_addr();
    let (status, head, body) = https_get(addr, "/webrtc/client");
    assert_eq!(status, 200, "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: text/html"));
    assert!(
        body.contains("<video") || body.contains("video"),
        "client page"
    );
    let (status, _, body) = https_get(addr, "/healthz");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    let _a = WssClient::join(addr, "room1", "a", &[]);
    let (status, _, body) = https_get(addr, "/webrtc/rooms/room1/peers");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v, json!({"room_id": "room1", "peers": ["a"]}));
}

#[test]
fn alpn_h2_offer_gets_http_1_1() {
    let server = start_tls(|_| {});
    let mut config = (*client_config()).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tls = tls_connect(server.local_addr(), Arc::new(config));
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
}

/// Plain HTTP sent to the TLS port gets a readable answer, not a silent close.
#[test]
fn plain_http_on_the_tls_port_is_told_to_use_tls() {
    let server = start_tls(|_| {});
    let resp = common::http_exchange(
        server.local_addr(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        false,
    )
    .unwrap()
    .expect("a response");
    resp.assert_error(400, "tls_required");
}

/// `--tls-port`: plain on --port, TLS beside it, one set of rooms.
#[test]
fn plain_and_tls_ports_share_rooms() {
    let server = common::start_with(|c| {
        tls_config(c);
        c.tls.port = Some(0);
    });
    let plain = server.local_addr();
    let tls = server.tls_addr().expect("a TLS port");
    assert_ne!(plain, tls);
    let mut a = WssClient::join(tls, "r", "a", &[]);
    let mut b = Client::join_expect(plain, "r", "b", &["a"]);
    a.expect(json!({"type": "peer_joined", "peer_id": "b"}));
    b.send_json(&offer("a", "from plain"));
    assert_eq!(a.recv()["from_peer_id"], "b");
    a.send(&offer("b", "from tls"));
    assert_eq!(b.recv_json()["offer"]["sdp"], "from tls");
}

/// A client that opens TCP and stalls mid-handshake (or never starts it) is cut off
/// at the head timeout, and meanwhile other clients are served.
#[test]
fn stalled_tls_handshake_is_cut_off_at_the_head_timeout() {
    let server = start_tls(|c| c.limits.http_head_timeout = Duration::from_millis(500));
    let addr = server.local_addr();
    // The first 40 bytes of a real ClientHello, then nothing.
    let mut hello = Vec::new();
    {
        let name = ServerName::try_from("localhost").unwrap();
        let mut conn = ClientConnection::new(client_config(), name).unwrap();
        conn.write_tls(&mut hello).unwrap();
    }
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled.write_all(&hello[..40]).unwrap();
    let silent = TcpStream::connect(addr).unwrap();
    // Served meanwhile.
    let mut a = WssClient::join(addr, "r", "a", &[]);
    a.send(&json!({"type": "ping"}));
    assert_eq!(a.recv()["type"], "pong");
    for (name, mut s) in [("mid-handshake", stalled), ("silent", silent)] {
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("{name}: unexpected {n} bytes"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("{name}: not closed by the server within {DEADLINE:?}: {e}"),
        }
        println!("{name}: closed after {:?}", started.elapsed());
    }
}

/// A certificate whose chain the client cannot verify: the handshake fails on the
/// client's side and the server carries on.
#[test]
fn untrusted_client_does_not_disturb_the_server() {
    let server = start_tls(|_| {});
    let addr = server.local_addr();
    let roots = RootCertStore::empty();
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(DEADLINE)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = StreamOwned::new(ClientConnection::new(Arc::new(config), name).unwrap(), tcp);
    let err = tls.conn.complete_io(&mut tls.sock);
    assert!(err.is_err(), "an empty root store cannot trust the server");
    let _a = WssClient::join(addr, "r", "a", &[]);
}

/// Accepts any certificate and keeps the one the server presented.
#[derive(Debug)]
struct Recorder(
    Mutex<Option<CertificateDer<'static>>>,
    Arc<rustls::crypto::CryptoProvider>,
);

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap() = Some(end_entity.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.1.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.1.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.1.signature_verification_algorithms.supported_schemes()
    }
}

/// `--tls-self-signed`: the certificate covers localhost and 127.0.0.1, and its
/// SHA-256 is the fingerprint the server reports.
#[test]
fn self_signed_certificate_matches_the_reported_fingerprint() {
    let server = common::start_with(|c| c.tls.self_signed = true);
    let addr = server.local_addr();
    let fingerprint = server.tls_fingerprint().expect("a fingerprint").to_owned();
    let recorder = Arc::new(Recorder(Mutex::new(None), provider()));
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    config
        .dangerous()
        .set_certificate_verifier(recorder.clone());
    let _tls = tls_connect(addr, Arc::new(config));
    let der = recorder.0.lock().unwrap().clone().expect("a certificate");
    assert_eq!(webrtc_signaling::tls::fingerprint(&der), fingerprint);
    // And a verifying client that trusts exactly that certificate accepts it for
    // both names a browser on this machine would use.
    for name in ["localhost", "127.0.0.1"] {
        let mut roots = RootCertStore::empty();
        roots.add(der.clone()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let ok = verifier.verify_server_cert(
            &der,
            &[],
            &ServerName::try_from(name).unwrap(),
            &[],
            UnixTime::now(),
        );
        assert!(ok.is_ok(), "{name}: {ok:?}");
    }
}

/// A TLS peer that stops reading is a slow consumer (1008) like on plain TCP: its
/// socket fills with encrypted records, its queue fills, the others see peer_left.
#[test]
fn wss_peer_that_stops_reading_is_dropped_as_slow_consumer() {
    let server = start_tls(|c| {
        c.limits.peer_queue = 4;
        c.limits.write_timeout = Duration::from_secs(1);
        c.limits.rate_per_sec = 0;
    });
    let addr = server.local_addr();
    let slow = WssClient::join(addr, "r", "slow", &[]);
    let mut observer = WssClient::join(addr, "r", "observer", &["slow"]);
    let flooder = WssClient::join(addr, "r", "flooder", &["slow", "observer"]);
    observer.expect(json!({"type": "peer_joined", "peer_id": "flooder"}));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut flooder = flooder;
            let text = offer("slow", &"p".repeat(32 * 1024)).to_string();
            // Bounded: at most 4000 * 32 KiB = 128 MiB.
            for _ in 0..4000 {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                if flooder.ws.send(Message::text(text.clone())).is_err() {
                    break;
                }
            }
            flooder
        })
    };
    observer
        .ws
        .get_ref()
        .sock
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    observer.expect(json!({"type": "peer_left", "peer_id": "slow"}));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _flooder = flood.join().expect("flooder thread");
    drop(slow);
}
