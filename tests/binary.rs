//! The `webrtc-signaling` binary as a user runs it: flags, logging, and SIGTERM/SIGINT.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::{Client, Process};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_webrtc-signaling");

/// The binary with debug logging, and its address.
fn start(args: &[&str]) -> (Process, SocketAddr) {
    let mut server = Process::spawn(&[args, &["--log-level", "debug"]].concat(), &[]);
    let addr = server.addr();
    (server, addr)
}

/// Waits for a stderr line containing `needle`.
fn wait_line(server: &mut Process, needle: &str) -> String {
    server.wait_line(&format!("containing {needle:?}"), |l| l.contains(needle))
}

#[test]
fn help_documents_every_flag_with_its_env_variable() {
    let out = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--bind",
        "--port",
        "--stun",
        "--turn",
        "--max-connections",
        "--max-room-peers",
        "--max-message-size",
        "--peer-queue",
        "--rate-limit",
        "--idle-timeout",
        "--ping-interval",
        "--http-head-max",
        "--http-head-timeout",
        "--thread-stack",
        "--turn-secret",
        "--turn-secret-file",
        "--turn-ttl",
        "--admin",
        "--log-format",
        "WEBRTC_SIGNALING_BIND",
        "WEBRTC_SIGNALING_PORT",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
}

#[test]
fn a_bad_flag_is_a_clear_error_with_exit_code_2() {
    let out = Command::new(BIN)
        .args(["--port", "eighty"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "webrtc-signaling: --port: \"eighty\" is not a valid number"
    );
}

#[test]
fn env_variables_configure_the_binary() {
    let mut child = Command::new(BIN)
        .env("WEBRTC_SIGNALING_BIND", "127.0.0.1")
        .env("WEBRTC_SIGNALING_PORT", "0")
        .env("WEBRTC_SIGNALING_STUN", "stun:stun.invalid:3478")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let line = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("listening on "))
        .expect("listening line");
    let addr: SocketAddr = line
        .rsplit("listening on ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(addr.ip().is_loopback());
    let body = common::get_json(addr, "/webrtc/ice-servers");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        body,
        json!({"iceServers": [{"urls": ["stun:stun.invalid:3478"]}], "ttl": 0})
    );
}

fn graceful_exit_on(sig: &str) {
    let (mut server, addr) = start(&["--close-timeout", "0.5"]);
    let mut a = Client::join_expect(addr, "room", "a", &[]);
    let mut b = Client::join_expect(addr, "room", "b", &["a"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    wait_line(&mut server, "session start room=room peer=b");
    server.signal(sig);
    a.expect_close(1001, "going_away");
    b.expect_close(1001, "going_away");
    let (code, took, lines) = server.wait_exit();
    println!("exit after {sig} took {took:?}");
    assert_eq!(code, Some(0), "exit code after {sig}; log: {lines:#?}");
    for peer in ["a", "b"] {
        let end = format!("session end room=room peer={peer} remote=127.0.0.1:");
        let line = lines
            .iter()
            .find(|l| l.contains(&end))
            .unwrap_or_else(|| panic!("no {end:?} in {lines:#?}"));
        assert!(line.contains("reason=going_away (1001)"), "{line}");
        assert!(line.contains("duration="), "{line}");
    }
}

#[test]
fn sigterm_closes_every_session_with_1001_and_exits_0() {
    graceful_exit_on("TERM");
}

#[test]
fn sigint_closes_every_session_with_1001_and_exits_0() {
    graceful_exit_on("INT");
}

#[test]
fn debug_log_names_relays_without_their_bodies() {
    let (mut server, addr) = start(&[]);
    let mut a = Client::join_expect(addr, "room", "a", &[]);
    let mut b = Client::join_expect(addr, "room", "b", &["a"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    a.send_json(&json!({"type": "offer", "offer": {"type": "offer", "sdp": "v=0 SECRET-SDP"}, "target_peer_id": "b"}));
    b.recv_json();
    let line = wait_line(&mut server, "relay offer a -> b in room");
    assert!(!line.contains("SECRET-SDP"));
    server.signal("TERM");
    let (_, _, lines) = server.wait_exit();
    assert!(
        lines.iter().all(|l| !l.contains("SECRET-SDP")),
        "{lines:#?}"
    );
}
