//! `--log-format json`: the binary writes one JSON object per line on stderr.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::Client;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_webrtc-signaling");
const DEADLINE: Duration = Duration::from_secs(10);

/// The binary with its stderr lines arriving on a channel; killed on drop.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut child = Command::new(BIN)
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn server binary");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first JSON log line whose `msg` contains `needle` (bounded wait).
    fn wait_msg(&mut self, needle: &str) -> Value {
        let find = |seen: &[String]| {
            seen.iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["msg"].as_str().is_some_and(|m| m.contains(needle)))
        };
        if let Some(v) = find(&self.seen) {
            return v;
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line);
                    if let Some(v) = find(&self.seen[self.seen.len() - 1..]) {
                        return v;
                    }
                }
                Err(_) => panic!("no JSON log line with {needle:?}; saw {:#?}", self.seen),
            }
        }
    }

    fn addr(&mut self) -> SocketAddr {
        let v = self.wait_msg("listening on ");
        v["msg"]
            .as_str()
            .and_then(|m| m.rsplit("listening on ").next())
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("no address in {v}"))
    }

    /// SIGTERM, wait for the exit, and return every stderr line.
    fn stop(mut self) -> Vec<String> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => self.seen.push(line),
                // The sender hangs up when stderr closes, i.e. when the process ends.
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("server still running after SIGTERM; saw {:#?}", self.seen)
                }
            }
        }
        let code = self.child.wait().expect("wait").code();
        assert_eq!(code, Some(0), "exit code; log {:#?}", self.seen);
        std::mem::take(&mut self.seen)
    }
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
    let mut server = Running::start(&["--log-format", "json", "--log-level", "debug"], &[]);
    let addr = server.addr();
    let mut a = Client::join_expect(addr, "room", "a", &[]);
    let mut b = Client::join_expect(addr, "room", "b", &["a"]);
    a.expect_json(json!({"type": "peer_joined", "peer_id": "b"}));
    a.send_json(&json!({"type": "offer", "offer": {"type": "offer", "sdp": "v=0 SECRET-SDP"}, "target_peer_id": "b"}));
    b.recv_json();
    let start = server.wait_msg("session start room=room peer=b");
    assert_eq!(start["level"], "info");
    let relay = server.wait_msg("relay offer a -> b in room");
    assert_eq!(relay["level"], "debug");
    assert_eq!(relay["target"], "webrtc_signaling::router");
    assert_eq!(relay["thread"], "router");
    b.close(1000);
    let lines = server.stop();

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
    let mut server = Running::start(
        &["--log-level", "warn", "--admin"],
        &[("WEBRTC_SIGNALING_LOG_FORMAT", "json")],
    );
    // --admin warns at start: the one line a warn-level server writes here.
    let warn = server.wait_msg("--admin");
    assert_eq!(warn["level"], "warn");
    let lines = server.stop();
    assert_eq!(
        lines.len(),
        1,
        "info lines leaked through --log-level warn: {lines:#?}"
    );
}

#[test]
fn text_format_stays_the_default() {
    let server = Running::start(&["--log-level", "info"], &[]);
    let deadline = Instant::now() + DEADLINE;
    let line = loop {
        let line = server
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("a log line");
        if line.contains("listening on ") {
            break line;
        }
    };
    assert!(serde_json::from_str::<Value>(&line).is_err(), "{line}");
    assert!(line.contains("[INFO]"), "{line}");
}
