//! The `webrtc-signaling` binary as a user runs it: flags, logging, and SIGTERM/SIGINT.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::{expect_refused, Client, Process};
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
    // Killed on drop, so a failed assertion cannot leave the server running.
    struct Child(std::process::Child);
    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    // Not `Process::spawn`: that passes --bind/--port, which would win over the env.
    let mut child = Child(
        Command::new(BIN)
            .env("WEBRTC_SIGNALING_BIND", "127.0.0.1")
            .env("WEBRTC_SIGNALING_PORT", "0")
            .env("WEBRTC_SIGNALING_STUN", "stun:stun.invalid:3478")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    let stderr = child.0.stderr.take().expect("stderr");
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
    drop(child);
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
fn a_router_failure_ends_the_process_with_status_70() {
    // The debug build's test switch makes the router panic on a join to this room.
    let mut server = Process::spawn(&[], &[("WEBRTC_SIGNALING_DEBUG_PANIC_ROOM", "boom")]);
    let addr = server.addr();
    let mut a = Client::join_expect(addr, "room", "a", &[]);
    expect_refused(addr, "boom", "b", 1001, "going_away");
    a.expect_close(1001, "going_away");
    let (code, _, lines) = server.wait_exit();
    assert_eq!(code, Some(70), "exit status; log: {lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("router thread panicked")),
        "{lines:#?}"
    );
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

// ---------------------------------------------------------------- tokens and access flags

/// `webrtc-signaling ARGS` with no auth secret inherited from the environment, plus `env`.
fn run_bin(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("WEBRTC_SIGNALING_AUTH_SECRET")
        .env_remove("WEBRTC_SIGNALING_AUTH_SECRET_FILE")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run the binary")
}

/// Runs `token ARGS`, expects exit 0 and exactly one line on stdout: the token.
fn mint_with_binary(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run_bin(&[&["token"], args].concat(), env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "token {args:?}: stdout {stdout:?}, stderr {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "token {args:?} must print one line: {stdout:?}"
    );
    let token = lines[0].trim().to_owned();
    assert_eq!(
        token.split('.').count(),
        3,
        "token {args:?} printed {token:?}, not a JWS"
    );
    token
}

/// The JSON claims of a token (its middle part), unverified.
fn token_claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a payload part");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap_or_else(|e| panic!("payload of {token:?} is not base64url: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("payload of {token:?}: {e}"))
}

/// A usage error: exit code 2, nothing on stdout, `webrtc-signaling: ...` on stderr
/// containing every one of `needles`.
fn assert_usage_error(args: &[&str], env: &[(&str, &str)], needles: &[&str]) {
    let out = run_bin(args, env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: stderr {stderr:?}");
    assert!(
        out.stdout.is_empty(),
        "{args:?} printed on stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let line = stderr.trim();
    assert!(
        line.starts_with("webrtc-signaling: "),
        "{args:?}: stderr {stderr:?}"
    );
    for needle in needles {
        assert!(
            line.contains(needle),
            "{args:?}: {needle:?} not in {stderr:?}"
        );
    }
}

/// `/webrtc/signaling/{room}/{peer}?token=...` joins alone in its room.
fn join_with_token(addr: SocketAddr, room: &str, peer: &str, token: &str) -> Client {
    let mut c = Client::connect_path(
        addr,
        &format!("/webrtc/signaling/{room}/{peer}?token={token}"),
    );
    c.name = format!("{room}/{peer}");
    c.expect_json(json!({"type": "existing_peers", "peers": []}));
    c
}

fn expect_4401(addr: SocketAddr, path: &str) {
    let mut c = Client::connect_path(addr, path);
    c.expect_close(4401, "unauthorized");
}

/// `GET path` with an optional bearer token.
fn get_bearer(addr: SocketAddr, path: &str, token: Option<&str>) -> common::HttpResponse {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    common::http_exchange(addr, req.as_bytes(), false)
        .expect("HTTP exchange")
        .unwrap_or_else(|| panic!("GET {path}: no response"))
}

#[test]
fn help_documents_the_access_flags() {
    let out = run_bin(&["--help"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--auth-secret",
        "--auth-secret-file",
        "--auth-public-key",
        "--auth-leeway",
        "--allowed-origin",
        "WEBRTC_SIGNALING_AUTH_SECRET",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
    let out = run_bin(&["token", "--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--room", "--peer", "--ttl", "--admin", "--auth-secret"] {
        assert!(text.contains(flag), "token --help lacks {flag}:\n{text}");
    }
}

#[test]
fn token_subcommand_prints_a_token_the_server_accepts_for_its_room_and_peer() {
    let before = webrtc_signaling::access::now_secs();
    let token = mint_with_binary(
        &[
            "--room",
            "r",
            "--peer",
            "p",
            "--ttl",
            "1h",
            "--auth-secret",
            "s3cret-s3cret-s3cret-s3cret-s3cret",
        ],
        &[],
    );
    let after = webrtc_signaling::access::now_secs();
    let claims = token_claims(&token);
    assert_eq!(claims["room"], json!("r"), "{claims}");
    assert_eq!(claims["peer"], json!("p"), "{claims}");
    assert!(
        claims.get("admin").is_none_or(|a| a == &json!(false)),
        "{claims}"
    );
    let exp = claims["exp"]
        .as_u64()
        .unwrap_or_else(|| panic!("no exp in {claims}"));
    assert!(
        (before + 3600..=after + 3600).contains(&exp),
        "--ttl 1h: exp {exp} not an hour after [{before}, {after}]"
    );

    let (_server, addr) = start(&["--auth-secret", "s3cret-s3cret-s3cret-s3cret-s3cret"]);
    let mut p = join_with_token(addr, "r", "p", &token);
    // The flag turned auth on, and the token opens r/p only.
    expect_4401(addr, "/webrtc/signaling/r/q");
    expect_4401(addr, &format!("/webrtc/signaling/r/q?token={token}"));
    expect_4401(addr, &format!("/webrtc/signaling/other/p?token={token}"));
    p.send_json(&json!({"type": "ping"}));
    p.expect_json(json!({"type": "pong"}));
}

#[test]
fn token_subcommand_and_server_take_the_secret_from_the_environment() {
    let env = [(
        "WEBRTC_SIGNALING_AUTH_SECRET",
        "s3cret-s3cret-s3cret-s3cret-s3cret",
    )];
    let token = mint_with_binary(&["--room", "r", "--peer", "p"], &env);
    let mut server = Process::spawn(&[], &env);
    let addr = server.addr();
    let _p = join_with_token(addr, "r", "p", &token);
    expect_4401(addr, "/webrtc/signaling/r/q");
    // A server with another secret refuses the same token.
    let (_other, other_addr) = start(&["--auth-secret", "another-another-another-another-another"]);
    expect_4401(other_addr, &format!("/webrtc/signaling/r/p?token={token}"));
}

#[test]
fn admin_token_from_the_binary_opens_the_room_listings() {
    let admin = mint_with_binary(
        &[
            "--admin",
            "--auth-secret",
            "s3cret-s3cret-s3cret-s3cret-s3cret",
        ],
        &[],
    );
    let claims = token_claims(&admin);
    assert_eq!(claims["admin"], json!(true), "{claims}");
    let peer = mint_with_binary(
        &[
            "--room",
            "r",
            "--peer",
            "p",
            "--auth-secret",
            "s3cret-s3cret-s3cret-s3cret-s3cret",
        ],
        &[],
    );
    let (_server, addr) = start(&["--auth-secret", "s3cret-s3cret-s3cret-s3cret-s3cret"]);
    get_bearer(addr, "/webrtc/rooms", Some(&admin)).assert_json(200, json!({"rooms": []}));
    let _p = join_with_token(addr, "r", "p", &peer);
    get_bearer(addr, "/webrtc/rooms", Some(&admin))
        .assert_json(200, json!({"rooms": [{"room_id": "r", "peer_count": 1}]}));
    get_bearer(addr, "/webrtc/rooms", None).assert_error(401, "unauthorized");
    get_bearer(addr, "/webrtc/rooms", Some(&peer)).assert_error(403, "forbidden");
}

#[test]
fn server_with_a_public_key_file_accepts_rs256_tokens() {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine as _;
    use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
    let dir = env!("CARGO_MANIFEST_DIR");
    let public = format!("{dir}/tests/fixtures/rs256-test-key.pub.pem");
    let private = std::fs::read_to_string(format!("{dir}/tests/fixtures/rs256-test-key.pem"))
        .expect("read the RSA test key");
    let der: String = private
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let key = RsaKeyPair::from_pkcs8(&STANDARD.decode(der).expect("PEM body"))
        .expect("a PKCS#8 RSA private key");
    let claims =
        json!({"room": "r", "peer": "p", "exp": webrtc_signaling::access::now_secs() + 3600});
    let b64 = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let input = format!("{}.{}", b64(json!({"alg": "RS256"})), b64(claims));
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .expect("sign RS256");
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature));
    let (_server, addr) = start(&["--auth-public-key", &public]);
    let _p = join_with_token(addr, "r", "p", &token);
    expect_4401(addr, "/webrtc/signaling/r/q");
}

#[test]
fn token_for_a_room_without_a_peer_is_a_usage_error() {
    let secret = ["--auth-secret", "s3cret-s3cret-s3cret-s3cret-s3cret"];
    assert_usage_error(
        &[&["token", "--room", "r"], &secret[..]].concat(),
        &[],
        &["--room", "--peer"],
    );
    assert_usage_error(
        &[&["token", "--peer", "p"], &secret[..]].concat(),
        &[],
        &["--room", "--peer"],
    );
    assert_usage_error(
        &[&["token"], &secret[..]].concat(),
        &[],
        &["--room", "--peer", "--admin"],
    );
}

#[test]
fn token_without_a_secret_is_a_usage_error() {
    assert_usage_error(
        &["token", "--room", "r", "--peer", "p"],
        &[],
        &["--auth-secret"],
    );
    assert_usage_error(&["token", "--admin"], &[], &["--auth-secret"]);
}

#[test]
fn tls_cert_without_tls_key_is_a_usage_error() {
    assert_usage_error(
        &["--tls-cert", "/nonexistent/cert.pem"],
        &[],
        &["--tls-cert", "--tls-key"],
    );
    assert_usage_error(
        &["--tls-key", "/nonexistent/key.pem"],
        &[],
        &["--tls-cert", "--tls-key"],
    );
}

/// Tokens are credentials: even at `debug`, the log never shows one (paths are logged
/// with `token=…`), whether the token was accepted or refused.
#[test]
fn debug_log_never_shows_a_token() {
    let (mut server, addr) = start(&["--auth-secret", "s3cret-s3cret-s3cret-s3cret-s3cret"]);
    let good = mint_with_binary(
        &[
            "--room",
            "r",
            "--peer",
            "p",
            "--auth-secret",
            "s3cret-s3cret-s3cret-s3cret-s3cret",
        ],
        &[],
    );
    let wrong = mint_with_binary(
        &[
            "--room",
            "r",
            "--peer",
            "q",
            "--auth-secret",
            "s3cret-s3cret-s3cret-s3cret-s3cret",
        ],
        &[],
    );
    let _p = join_with_token(addr, "r", "p", &good);
    expect_4401(addr, &format!("/webrtc/signaling/r/p2?token={wrong}"));
    let resp = get_bearer(addr, &format!("/webrtc/ice-servers?token={good}"), None);
    assert_eq!(resp.status, 200);
    let resp = get_bearer(addr, "/webrtc/rooms", Some(&good));
    assert_eq!(resp.status, 403);
    wait_line(&mut server, "token=…");
    server.signal("TERM");
    let (_, _, lines) = server.wait_exit();
    for token in [&good, &wrong] {
        let signature = token.rsplit('.').next().unwrap_or_default();
        assert!(
            lines.iter().all(|l| !l.contains(signature)),
            "a token in the log: {lines:#?}"
        );
    }
}
