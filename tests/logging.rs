//! `--log-format json`: the binary writes one JSON object per line on stderr.

mod common;

use common::{Client, Process};
use serde_json::{json, Value};

/// The first JSON log line whose `msg` contains `needle` (bounded wait).
fn wait_msg(server: &mut Process, needle: &str) -> Value {
    let msg_has = |l: &str| {
        serde_json::from_str::<Value>(l)
            .ok()
            .is_some_and(|v| v["msg"].as_str().is_some_and(|m| m.contains(needle)))
    };
    let line = server.wait_line(&format!("with msg {needle:?}"), msg_has);
    serde_json::from_str(&line).expect("JSON line")
}

/// SIGTERM, wait for a clean exit, and return every stderr line.
fn stop(server: Process) -> Vec<String> {
    server.signal("TERM");
    let (code, _, lines) = server.wait_exit();
    assert_eq!(code, Some(0), "exit code; log {lines:#?}");
    lines
}

/// `2025-01-31T12:00:00.123Z`
fn is_rfc3339_utc_millis(ts: &str) -> bool {
    let b = ts.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() == 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z'
}

#[test]
fn json_format_writes_one_object_per_line_with_ts_level_and_msg() {
    let mut server = Process::spawn(&["--log-format", "json", "--log-level", "debug"], &[]);
    let addr = server.addr();
    let mut a = Client::join_expect(addr, "room", "a", &[]);
    let mut b = Client::join_expect(addr, "room", "b", &["a"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    a.send_json(&json!({"type": "offer", "offer": {"type": "offer", "sdp": "v=0 SECRET-SDP"}, "target_peer_id": "b"}));
    b.recv_json();
    let start = wait_msg(&mut server, "session start room=room peer=b");
    assert_eq!(start["level"], "info");
    let relay = wait_msg(&mut server, "relay offer a -> b in room");
    assert_eq!(relay["level"], "debug");
    assert_eq!(relay["target"], "webrtc_signaling::core::router");
    assert_eq!(relay["thread"], "router");
    b.close(1000);
    let lines = stop(server);

    assert!(lines.len() >= 6, "{lines:#?}");
    for line in &lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {line}"));
        let ts = obj["ts"].as_str().unwrap_or_default();
        assert!(is_rfc3339_utc_millis(ts), "ts {ts:?} in {line}");
        assert!(
            ["error", "warn", "info", "debug", "trace"].contains(&obj["level"].as_str().unwrap()),
            "{line}"
        );
        assert!(
            obj["msg"].is_string() && obj["target"].is_string(),
            "{line}"
        );
        assert!(!line.contains('\u{1b}'), "colour codes in {line:?}");
        assert!(!line.contains("SECRET-SDP"), "{line}");
    }
    let msgs: Vec<String> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["msg"].as_str().map(str::to_owned))
        .collect();
    for needle in [
        "session end room=room peer=b",
        "signal 15: shutting down",
        "stopped",
    ] {
        assert!(
            msgs.iter().any(|m| m.contains(needle)),
            "no {needle:?} in {msgs:#?}"
        );
    }
}

#[test]
fn log_level_filters_json_lines_and_env_selects_the_format() {
    let mut server = Process::spawn(
        &["--log-level", "warn", "--admin"],
        &[("WEBRTC_SIGNALING_LOG_FORMAT", "json")],
    );
    // --admin warns at start: the one line a warn-level server writes here.
    let warn = wait_msg(&mut server, "--admin");
    assert_eq!(warn["level"], "warn");
    let lines = stop(server);
    assert_eq!(
        lines.len(),
        1,
        "info lines leaked through --log-level warn: {lines:#?}"
    );
}

#[test]
fn text_format_stays_the_default() {
    let mut server = Process::spawn(&["--log-level", "info"], &[]);
    let line = server.wait_line("listening on", |l| l.contains("listening on "));
    assert!(serde_json::from_str::<Value>(&line).is_err(), "{line}");
    assert!(line.contains("[INFO]"), "{line}");
}
