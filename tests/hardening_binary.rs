//! Issue 14 against the binary: log lines escape what clients send and keep
//! tungstenite's frame payloads out unless asked for by name; accept(2) failing for
//! want of descriptors backs off, logs once, and recovers; TURN without auth warns.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Client, Process, DEADLINE};
use serde_json::{json, Value};

fn stop(server: Process) -> Vec<String> {
    server.signal("TERM");
    server.wait_exit().2
}

/// A WebSocket upgrade with this Origin (which the allow-list refuses).
fn upgrade_with_origin(addr: std::net::SocketAddr, origin: &str) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let req = format!(
        "GET /webrtc/signaling/room/x HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: {origin}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
}

#[test]
fn client_text_is_escaped_in_every_log_line_and_tungstenite_stays_quiet() {
    let mut server = Process::spawn(
        &[
            "--log-format",
            "json",
            "--log-level",
            "trace",
            "--allowed-origin",
            "https://app.example",
        ],
        &[],
    );
    let addr = server.addr();
    // Bidirectional controls in a header value (UTF-8 is legal there as obs-text;
    // ASCII control characters are not, and get 400 before anything is logged).
    upgrade_with_origin(addr, "https://evil\u{202e}moc.example\u{2066}");
    let line = server.wait_line("the refusal", |l| l.contains("refused session"));
    let msg = serde_json::from_str::<Value>(&line).unwrap()["msg"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(msg.contains("u{202e}") && msg.contains("u{2066}"), "{msg}");
    assert!(
        !msg.contains('\u{202e}') && !msg.contains('\u{2066}'),
        "{msg}"
    );
    // A session at trace level: frames flow, but tungstenite says nothing below info.
    let (mut a, _) = Client::join(addr, "room", "a");
    a.send_json(&json!({"type": "ping"}));
    a.expect_json(json!({"type": "pong"}));
    a.close(1000);
    let lines = stop(server);
    let chatty: Vec<&String> = lines
        .iter()
        .filter(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_default();
            v["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("tungstenite"))
                && matches!(v["level"].as_str(), Some("debug" | "trace"))
        })
        .collect();
    assert!(chatty.is_empty(), "{chatty:#?}");
    assert!(
        lines.iter().all(|l| !l.contains('\u{202e}')),
        "a raw bidi character reached the log"
    );
}

#[test]
fn naming_tungstenite_turns_its_frame_logging_on() {
    let mut server = Process::spawn(
        &[
            "--log-format",
            "json",
            "--log-level",
            "info,tungstenite=trace",
        ],
        &[],
    );
    let addr = server.addr();
    let (mut a, _) = Client::join(addr, "room", "a");
    a.send_json(&json!({"type": "ping"}));
    a.expect_json(json!({"type": "pong"}));
    server.wait_line("a tungstenite trace line", |l| {
        l.contains(r#""level":"trace","target":"tungstenite"#)
    });
}

#[test]
fn turn_without_auth_warns_at_start() {
    let mut server = Process::spawn(
        &[
            "--turn",
            "turn:turn.example:3478",
            "--turn-secret",
            "turn-secret",
        ],
        &[],
    );
    server.wait_line("the TURN warning", |l| {
        l.contains("--turn-secret without --auth-secret") && l.contains("WARN")
    });
}

/// The binary, once listening, limited to `fds` open descriptors (util-linux's
/// prlimit on the running process: the test process's own limit stays as it is).
fn spawn_with_fd_limit(fds: u64) -> Process {
    let mut server = Process::spawn(&["--max-http-connections", "200"], &[]);
    let _ = server.addr();
    let pid = server.pid();
    let status = std::process::Command::new("prlimit")
        .args([&format!("--pid={pid}"), &format!("--nofile={fds}:{fds}")])
        .status()
        .expect("run prlimit (util-linux)");
    assert!(status.success());
    server
}

#[test]
fn out_of_descriptors_accept_backs_off_logs_once_and_recovers() {
    let mut server = spawn_with_fd_limit(48);
    let addr = server.addr();
    // Hold more connections than the server has descriptors for.
    let mut held = Vec::new();
    for _ in 0..80 {
        let s = TcpStream::connect(addr).expect("the kernel queues the connection");
        held.push(s);
    }
    let warning = server.wait_line("the accept failure", |l| l.contains("accept failed"));
    assert!(warning.contains("backing off"), "{warning}");
    // Let the server's threads see their clients go, then it must serve again.
    drop(held);
    let deadline = Instant::now() + DEADLINE * 2;
    loop {
        let got = common::http_exchange(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            false,
        );
        if let Ok(Some(resp)) = got {
            if resp.status == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the server did not recover");
        std::thread::sleep(Duration::from_millis(50));
    }
    let lines = stop(server);
    let failures = lines.iter().filter(|l| l.contains("accept failed")).count();
    // One line per 10 s interval: the whole test takes far less than 30 s.
    assert!(failures <= 3, "{failures} lines: {lines:#?}");
}
