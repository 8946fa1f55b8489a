//! SIGHUP: the binary re-reads its TLS certificate and key and its secret files, and
//! open sessions (over TLS) stay up; a broken file changes nothing. Real rustls
//! clients, certificates made here with rcgen.
#![cfg(feature = "tls")]

mod common;

#[path = "support/tls_client.rs"]
mod tls_client;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

use common::Process;
use rustls::ClientConfig;
use serde_json::{json, Value};
use tls_client::{peer_leaf, tls_over, Ca, Tls};
use tungstenite::{Message, WebSocket};
use webrtc_signaling::access::{self, Claims};

fn tls_connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> (Tls, Vec<u8>) {
    let tls = tls_over(TcpStream::connect(addr).unwrap(), config);
    let leaf = peer_leaf(&tls);
    (tls, leaf)
}

fn token(secret: &str, peer: &str) -> String {
    let claims = Claims {
        room: Some("room1".into()),
        peer: Some(peer.into()),
        exp: access::now_secs() + 600,
        ..Claims::default()
    };
    access::mint(secret.as_bytes(), &claims).unwrap()
}

struct Wss(WebSocket<Tls>);

impl Wss {
    fn connect(addr: SocketAddr, config: &Arc<ClientConfig>, peer: &str, secret: &str) -> Wss {
        let (tls, _) = tls_connect(addr, config);
        let url = format!(
            "wss://localhost:{}/webrtc/signaling/room1/{peer}?token={}",
            addr.port(),
            token(secret, peer)
        );
        let (ws, _) = tungstenite::client(url.as_str(), tls).expect("wss upgrade");
        Wss(ws)
    }

    fn recv(&mut self) -> Value {
        loop {
            match self.0.read().expect("a message within the deadline") {
                Message::Text(t) => {
                    // The §8 resume token is checked by tests/resume.rs; not compared here.
                    let mut v = serde_json::from_str(t.as_str()).unwrap();
                    common::take_resume_token(&mut v);
                    return v;
                }
                Message::Close(f) => return json!({"closed": f.map(|f| u16::from(f.code))}),
                _ => {}
            }
        }
    }

    fn send(&mut self, v: Value) {
        self.0.send(Message::text(v.to_string())).unwrap();
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn sighup_reloads_the_certificate_and_the_secret_without_dropping_sessions() {
    let dir = std::env::temp_dir().join(format!("webrtc-signaling-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = Ca::new();
    let config = ca.client_config();
    let (a_leaf, b_leaf) = (ca.leaf(), ca.leaf());
    let (chain_a, key_a, der_a) = (a_leaf.chain_pem, a_leaf.key_pem, a_leaf.der);
    let (chain_b, key_b, der_b) = (b_leaf.chain_pem, b_leaf.key_pem, b_leaf.der);
    write(&dir, "cert.pem", &chain_a);
    write(&dir, "key.pem", &key_a);
    write(&dir, "auth-secret", "secret-one-secret-one-secret-one-1\n");
    let path = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    let mut server = Process::spawn(
        &[
            "--tls-cert",
            &path("cert.pem"),
            "--tls-key",
            &path("key.pem"),
            "--auth-secret-file",
            &path("auth-secret"),
        ],
        &[],
    );
    let addr = server.addr();
    assert_eq!(tls_connect(addr, &config).1, der_a);
    let mut a = Wss::connect(addr, &config, "a", "secret-one-secret-one-secret-one-1");
    assert_eq!(a.recv(), json!({"type": "existing_peers", "peers": []}));
    let mut b = Wss::connect(addr, &config, "b", "secret-one-secret-one-secret-one-1");
    assert_eq!(b.recv(), json!({"type": "existing_peers", "peers": ["a"]}));
    assert_eq!(a.recv(), json!({"type": "peer_joined", "peer_id": "b"}));

    // Renewed certificate and rotated secret, then SIGHUP.
    write(&dir, "cert.pem", &chain_b);
    write(&dir, "key.pem", &key_b);
    write(&dir, "auth-secret", "secret-two-secret-two-secret-two-2\n");
    server.signal("HUP");
    let line = server.wait_line("SIGHUP: reloaded", |l| l.contains("SIGHUP: reloaded"));
    assert!(
        line.contains("TLS certificate") && line.contains("token keys"),
        "{line}"
    );

    assert_eq!(
        tls_connect(addr, &config).1,
        der_b,
        "new connections get the new certificate"
    );
    // The sessions opened before the reload go on, over their old TLS state.
    a.send(
        json!({"type": "offer", "offer": {"type": "offer", "sdp": "v=0"}, "target_peer_id": "b"}),
    );
    assert_eq!(b.recv()["from_peer_id"], "a");
    b.send(json!({"type": "ping"}));
    assert_eq!(b.recv(), json!({"type": "pong"}));
    // The old secret no longer admits anybody; the new one does.
    let mut stale = Wss::connect(addr, &config, "c", "secret-one-secret-one-secret-one-1");
    assert_eq!(stale.recv()["code"], "unauthorized");
    let mut fresh = Wss::connect(addr, &config, "c", "secret-two-secret-two-secret-two-2");
    assert_eq!(
        fresh.recv(),
        json!({"type": "existing_peers", "peers": ["a", "b"]})
    );
    assert_eq!(a.recv(), json!({"type": "peer_joined", "peer_id": "c"}));

    // A broken certificate file: logged, and the running certificate stays.
    write(&dir, "cert.pem", "not a certificate");
    server.signal("HUP");
    server.wait_line("SIGHUP: reload failed", |l| {
        l.contains("SIGHUP: reload failed")
    });
    assert_eq!(tls_connect(addr, &config).1, der_b);
    a.send(json!({"type": "ping"}));
    assert_eq!(a.recv(), json!({"type": "pong"}));

    server.signal("TERM");
    let (code, _, lines) = server.wait_exit();
    assert_eq!(code, Some(0), "{lines:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}
