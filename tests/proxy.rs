//! The reverse-proxy configurations of docs/production.md, run as written (only the
//! ports and certificate paths are the test's) in front of the real binary: a real
//! nginx and a real Caddy terminate TLS, pass WebSocket upgrades on, serve the page
//! under `/signal/`, and `X-Forwarded-For` names the client in the server's log only
//! with `--trusted-proxy`, never with what the client wrote itself. Clients connect
//! from 127.0.0.3 so the proxy (127.0.0.1 towards the server) and the client differ.
//!
//! Needs `nginx` and `caddy` (Debian: nginx-light, caddy); prints why it skips
//! otherwise, and WEBRTC_SIGNALING_REQUIRE_PROXIES=1 (set by .ci/run) makes that a
//! failure.
#![cfg(feature = "tls")]

mod common;
#[path = "support/proxies.rs"]
mod proxies;
#[path = "support/tls_client.rs"]
mod tls_client;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::Process;
use proxies::{doc_block, free_port, start_nginx, wait_listening, Dir, Proxy};
use rustls::ClientConfig;
use serde_json::{json, Value};
use tls_client::{connect_from, tls_over, Ca, Tls};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

const REQUIRE_ENV: &str = "WEBRTC_SIGNALING_REQUIRE_PROXIES";
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

fn tool(name: &str, paths: &[&str]) -> Option<PathBuf> {
    let found = paths.iter().map(PathBuf::from).find(|p| p.is_file());
    if found.is_none() {
        if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
            panic!("{name} is not installed ({REQUIRE_ENV}=1 makes this a failure)");
        }
        println!("SKIPPED {name} test: {name} is not installed (apt-get install {name})");
    }
    found
}

type Wss = WebSocket<Tls>;

/// A wss session through the proxy on `port` at `path`, from 127.0.0.3, with extra
/// request headers.
fn wss(config: &Arc<ClientConfig>, port: u16, path: &str, headers: &[(&str, &str)]) -> Wss {
    let tcp = connect_from(CLIENT_IP, SocketAddr::from(([127, 0, 0, 1], port)));
    let tls = tls_over(tcp, config);
    let mut req = format!("wss://localhost:{port}{path}")
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut()
            .insert(name, tungstenite::http::HeaderValue::from_str(v).unwrap());
    }
    let (ws, resp) = tungstenite::client(req, tls).expect("wss upgrade through the proxy");
    assert_eq!(resp.status().as_u16(), 101);
    ws
}

fn recv(ws: &mut Wss) -> Value {
    loop {
        match ws.read().expect("a message within the deadline") {
            Message::Text(t) => {
                // The §8 resume token is checked by tests/resume.rs; not compared here.
                let mut v = serde_json::from_str(t.as_str()).unwrap();
                common::take_resume_token(&mut v);
                return v;
            }
            Message::Close(f) => return json!({ "closed": f.map(|f| u16::from(f.code)) }),
            _ => {}
        }
    }
}

/// `GET path` over TLS through the proxy: (status, headers and body as text).
fn https_get(config: &Arc<ClientConfig>, port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let tcp = connect_from(CLIENT_IP, SocketAddr::from(([127, 0, 0, 1], port)));
    let mut tls = tls_over(tcp, config);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A call through the proxy: peer a at the root, peer b under /signal/ from the
/// server's own page (Origin = the proxy's address), a relay between them.
fn call_through(config: &Arc<ClientConfig>, port: u16, a_headers: &[(&str, &str)]) {
    let mut a = wss(config, port, "/webrtc/signaling/room1/a", a_headers);
    assert_eq!(recv(&mut a), json!({"type": "existing_peers", "peers": []}));
    let origin = format!("https://localhost:{port}");
    let mut b = wss(
        config,
        port,
        "/signal/webrtc/signaling/room1/b",
        &[("Origin", &origin)],
    );
    assert_eq!(
        recv(&mut b),
        json!({"type": "existing_peers", "peers": ["a"]})
    );
    assert_eq!(recv(&mut a), json!({"type": "peer_joined", "peer_id": "b"}));
    a.send(Message::text(
        json!({"type": "offer", "offer": {"type": "offer", "sdp": "v=0"}, "target_peer_id": "b"})
            .to_string(),
    ))
    .unwrap();
    assert_eq!(recv(&mut b)["from_peer_id"], "a");
    let _ = a.close(None);
    let _ = b.close(None);
}

fn session_remote(server: &mut Process, peer: &str) -> String {
    let needle = format!("session start room=room1 peer={peer} remote=");
    let line = server.wait_line(&needle, |l| l.contains(&needle));
    line.rsplit("remote=").next().unwrap().trim().to_owned()
}

#[test]
fn nginx_as_documented_with_trusted_proxy() {
    let Some(nginx) = tool("nginx", &["/usr/sbin/nginx", "/usr/bin/nginx"]) else {
        return;
    };
    let mut server = Process::spawn(
        &[
            "--trusted-proxy",
            "127.0.0.1",
            "--allowed-origin",
            "https://app.example",
        ],
        &[],
    );
    let upstream = server.addr();
    let dir = Dir::new("nginx");
    let ca = Ca::new();
    let config = ca.client_config();
    let leaf = ca.leaf();
    let (_nginx, port) = start_nginx(&nginx, &dir, &leaf.chain_pem, &leaf.key_pem, upstream);

    // A client that claims to be someone else: nginx appends its real address.
    call_through(&config, port, &[("X-Forwarded-For", "198.51.100.7")]);
    assert_eq!(session_remote(&mut server, "a"), "127.0.0.3:0");
    assert_eq!(session_remote(&mut server, "b"), "127.0.0.3:0");

    let (status, page) = https_get(&config, port, "/signal/webrtc/client");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("id=\"status\""));
    let (status, module) = https_get(&config, port, "/signal/webrtc/client/signaling.mjs");
    assert_eq!(status, 200);
    assert!(module.contains("export const { WebRTCSignalingClient"));
    let (status, redirect) = https_get(&config, port, "/signal/");
    assert_eq!(status, 302, "{redirect}");
    assert!(
        redirect.contains("/signal/webrtc/client\r\n"),
        "the redirect stays under the prefix: {redirect}"
    );
    let (status, ice) = https_get(&config, port, "/signal/webrtc/ice-servers");
    assert_eq!(status, 200);
    assert!(ice.contains("\"iceServers\":[]"), "{ice}");
}

#[test]
fn nginx_without_trusted_proxy_the_headers_are_ignored() {
    let Some(nginx) = tool("nginx", &["/usr/sbin/nginx", "/usr/bin/nginx"]) else {
        return;
    };
    let mut server = Process::spawn(&[], &[]);
    let upstream = server.addr();
    let dir = Dir::new("nginx-untrusted");
    let ca = Ca::new();
    let config = ca.client_config();
    let leaf = ca.leaf();
    let (_nginx, port) = start_nginx(&nginx, &dir, &leaf.chain_pem, &leaf.key_pem, upstream);
    call_through(&config, port, &[]);
    let remote = session_remote(&mut server, "a");
    assert!(
        remote.starts_with("127.0.0.1:") && remote != "127.0.0.1:0",
        "the proxy's own address: {remote}"
    );
}

#[test]
fn caddy_as_documented() {
    let Some(caddy) = tool("caddy", &["/usr/bin/caddy"]) else {
        return;
    };
    let mut server = Process::spawn(&["--trusted-proxy", "127.0.0.1"], &[]);
    let upstream = server.addr();
    let dir = Dir::new("caddy");
    let ca = Ca::new();
    let config = ca.client_config();
    let leaf = ca.leaf();
    let cert = dir.file("fullchain.pem", &leaf.chain_pem);
    let key = dir.file("privkey.pem", &leaf.key_pem);
    let port = free_port();
    // The test's certificate instead of an ACME one, and no admin endpoint or
    // redirect listener that could collide with other tests.
    let site = doc_block("caddyfile")
        .replace("127.0.0.1:8000", &upstream.to_string())
        .replace(
            "signal.example.org {",
            &format!("https://localhost:{port} {{\n\ttls {cert} {key}"),
        );
    let caddyfile = dir.file(
        "Caddyfile",
        &format!("{{\n\tadmin off\n\tauto_https disable_redirects\n}}\n{site}"),
    );
    let log = dir.0.join("caddy.log");
    let child = Command::new(caddy)
        .args(["run", "--adapter", "caddyfile", "--config", &caddyfile])
        .env("HOME", &dir.0)
        .env("XDG_DATA_HOME", dir.0.join("data"))
        .env("XDG_CONFIG_HOME", dir.0.join("config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start caddy");
    let mut proxy = Proxy(child, log);
    wait_listening(&mut proxy, port);

    call_through(&config, port, &[("X-Forwarded-For", "198.51.100.7")]);
    assert_eq!(session_remote(&mut server, "a"), "127.0.0.3:0");
    let (status, page) = https_get(&config, port, "/signal/webrtc/client");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("id=\"status\""));
}
