//! `GET /metrics`: the counters move by exactly what the clients did, and the whole
//! exposition passes a Prometheus text parser (`promtool check metrics`, from Debian's
//! `prometheus` package). Without promtool the parser check prints why it is skipped,
//! unless WEBRTC_SIGNALING_REQUIRE_PROMTOOL=1 (then it fails).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{candidate, get, http, start_with, Client, DEADLINE};
use serde_json::json;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

const REQUIRE_ENV: &str = "WEBRTC_SIGNALING_REQUIRE_PROMTOOL";
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every sample of one scrape: `name{labels}` exactly as exposed → value.
type Samples = BTreeMap<String, f64>;

/// Runs `promtool check metrics` on `text`: `Ok(false)` when promtool is absent.
fn promtool_check(text: &str) -> Result<bool, String> {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("cannot run promtool: {e}")),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    if out.status.success() {
        Ok(true)
    } else {
        Err(format!(
            "promtool check metrics failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Fails the test on a malformed exposition (or a missing promtool where it is required).
fn assert_valid_exposition(text: &str) {
    match promtool_check(text) {
        Ok(true) => {}
        Ok(false) => {
            if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
                panic!("promtool is not installed (apt package prometheus) and {REQUIRE_ENV}=1");
            }
            println!("SKIPPED promtool check: promtool is not installed (apt package prometheus)");
        }
        Err(e) => panic!("{e}\nexposition:\n{text}"),
    }
}

fn scrape(addr: SocketAddr) -> Samples {
    let resp = get(addr, "/metrics");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.content_type(), CONTENT_TYPE);
    let text = String::from_utf8(resp.body).expect("UTF-8 exposition");
    assert_valid_exposition(&text);
    let mut samples = Samples::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}")),
        };
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "series {series} exposed twice"
        );
    }
    samples
}

fn value(s: &Samples, series: &str) -> f64 {
    *s.get(series)
        .unwrap_or_else(|| panic!("no series {series} in {s:#?}"))
}

/// Bytes of a WebSocket frame with this payload (clients mask, the server does not).
fn frame_len(payload: usize, masked: bool) -> u64 {
    let ext = match payload {
        0..=125 => 0,
        126..=65535 => 2,
        _ => 8,
    };
    (2 + ext + if masked { 4 } else { 0 } + payload) as u64
}

/// A client that tallies the bytes of every frame it sends and receives.
struct Counted {
    c: Client,
    sent: u64,
    received: u64,
}

impl Counted {
    fn new(c: Client, first_message: &serde_json::Value) -> Counted {
        Counted {
            c,
            sent: 0,
            received: frame_len(first_message.to_string().len(), false),
        }
    }

    fn send(&mut self, text: &str) {
        self.sent += frame_len(text.len(), true);
        self.c.send_text(text);
    }

    fn recv(&mut self) -> serde_json::Value {
        match self.c.recv_message_within(DEADLINE) {
            Message::Text(t) => {
                self.received += frame_len(t.len(), false);
                serde_json::from_str(t.as_str()).expect("JSON")
            }
            other => panic!("{}: expected text, got {other:?}", self.c.name),
        }
    }

    /// Client-initiated close with 1000 "bye"; waits for the echo and the end.
    fn close(mut self) -> (u64, u64) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        };
        self.sent += frame_len(2 + 3, true);
        self.c.ws.close(Some(frame)).expect("send close");
        match self.c.recv_message_within(DEADLINE) {
            Message::Close(Some(f)) => {
                assert_eq!(u16::from(f.code), 1000);
                self.received += frame_len(2 + f.reason.len(), false);
            }
            Message::Close(None) => self.received += frame_len(0, false),
            other => panic!("expected the close echo, got {other:?}"),
        }
        self.c.expect_end(DEADLINE);
        (self.sent, self.received)
    }
}

/// Scrapes until `done` holds (what the clients saw may be counted a moment later),
/// at most [`DEADLINE`]; returns the last scrape either way.
fn settle(addr: SocketAddr, done: impl Fn(&Samples) -> bool) -> Samples {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let s = scrape(addr);
        if done(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn join(addr: SocketAddr, room: &str, peer: &str, existing: &[&str]) -> Counted {
    let c = Client::join_expect(addr, room, peer, existing);
    Counted::new(c, &json!({"type": "existing_peers", "peers": existing}))
}

#[test]
fn counters_move_by_exactly_what_the_clients_did() {
    let server = start_with(|c| {
        c.limits.ping_interval = Duration::ZERO;
        c.limits.peer_queue = 100;
        // Exact byte counts: no resume token in existing_peers.
        c.limits.resume_grace = Duration::ZERO;
    });
    let addr = server.local_addr();
    let before = scrape(addr);

    // Two peers join one room.
    let mut a = join(addr, "room", "a", &[]);
    let mut b = join(addr, "room", "b", &["a"]);
    assert_eq!(a.recv(), json!({"type": "peer_joined", "peer_id": "b"}));
    // Three offers and two candidates from a to b.
    for i in 0..3 {
        let offer = json!({"type": "offer", "offer": {"type": "offer", "sdp": format!("v=0 {i}")}, "target_peer_id": "b"});
        a.send(&offer.to_string());
        assert_eq!(b.recv()["type"], json!("offer"));
    }
    for seq in 0..2 {
        a.send(&candidate("b", seq).to_string());
        assert_eq!(b.recv()["type"], json!("ice_candidate"));
    }
    // One invalid message.
    a.send("not json");
    let err = a.recv();
    assert_eq!(err["code"], json!("invalid_json"), "{err}");
    // One session closed by its client.
    let (b_sent, b_received) = b.close();
    assert_eq!(a.recv(), json!({"type": "peer_left", "peer_id": "b"}));

    let closed = "webrtc_signaling_sessions_closed_total{reason=\"client_closed\"}";
    let mut expected: BTreeMap<&str, f64> = BTreeMap::new();
    expected.insert("webrtc_signaling_sessions_opened_total", 2.0);
    expected.insert(closed, 1.0);
    expected.insert(
        "webrtc_signaling_messages_relayed_total{type=\"offer\"}",
        3.0,
    );
    expected.insert(
        "webrtc_signaling_messages_relayed_total{type=\"ice_candidate\"}",
        2.0,
    );
    expected.insert(
        "webrtc_signaling_errors_sent_total{code=\"invalid_json\"}",
        1.0,
    );
    expected.insert("webrtc_signaling_relay_latency_seconds_count", 5.0);
    expected.insert(
        "webrtc_signaling_relay_latency_seconds_bucket{le=\"+Inf\"}",
        5.0,
    );
    expected.insert(
        "webrtc_signaling_received_bytes_total",
        (a.sent + b_sent) as f64,
    );
    expected.insert(
        "webrtc_signaling_sent_bytes_total",
        (a.received + b_received) as f64,
    );
    // A session counts its bytes just after the socket took them, and its end after
    // the closing handshake; the router updates the gauges when it handles the Leave.
    let after = settle(addr, |s| {
        expected
            .iter()
            .all(|(k, want)| value(s, k) - before.get(*k).copied().unwrap_or(0.0) >= *want)
            && value(s, "webrtc_signaling_sessions_active") == 1.0
            && value(s, "webrtc_signaling_rooms_active") == 1.0
    });
    // Every counter of ours moved by exactly the expected amount; all others stayed.
    for (series, now) in &after {
        let counter = series.contains("_total")
            || series.ends_with("_count")
            || series.ends_with("_bucket{le=\"+Inf\"}");
        if !series.starts_with("webrtc_signaling_") || !counter {
            continue;
        }
        let delta = now - before.get(series).copied().unwrap_or(0.0);
        let want = expected.get(series.as_str()).copied().unwrap_or(0.0);
        assert_eq!(delta, want, "{series} moved by {delta}, expected {want}");
    }
    for series in expected.keys() {
        assert!(after.contains_key(*series), "no series {series}");
    }
    // Latency buckets are cumulative and bounded by the count.
    let buckets: Vec<f64> = after
        .iter()
        .filter(|(k, _)| k.starts_with("webrtc_signaling_relay_latency_seconds_bucket"))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(buckets.len(), 19);
    assert!(buckets.iter().all(|&v| v <= 5.0));
    let sum = value(&after, "webrtc_signaling_relay_latency_seconds_sum");
    assert!(sum > 0.0 && sum < 5.0 * DEADLINE.as_secs_f64(), "sum {sum}");

    // Gauges: one peer left in one room; the fullest queue held at least one message.
    assert_eq!(value(&after, "webrtc_signaling_sessions_active"), 1.0);
    assert_eq!(value(&after, "webrtc_signaling_rooms_active"), 1.0);
    let high = value(&after, "webrtc_signaling_peer_queue_high_water");
    assert!((1.0..=100.0).contains(&high), "high-water {high}");
    assert_eq!(value(&after, "webrtc_signaling_peer_queue_capacity"), 100.0);

    // process_* figures of this (test) process.
    assert!(value(&after, "process_resident_memory_bytes") > 1e6);
    assert!(value(&after, "process_virtual_memory_bytes") > 1e6);
    assert!(value(&after, "process_threads") >= 4.0, "router, accept, a");
    assert!(value(&after, "process_open_fds") >= 3.0);
    assert!(value(&after, "process_max_fds") >= value(&after, "process_open_fds"));
    assert!(value(&after, "process_cpu_seconds_total") >= 0.0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = value(&after, "process_start_time_seconds");
    assert!(
        start <= now + 2.0 && start > now - 86_400.0,
        "start time {start}, now {now}"
    );

    // Scraping itself moves none of the session counters.
    let again = scrape(addr);
    for (series, v) in &after {
        if series.starts_with("webrtc_signaling_") {
            assert_eq!(again.get(series), Some(v), "{series} moved on a scrape");
        }
    }
}

#[test]
fn refused_upgrades_and_server_closes_are_counted_by_reason() {
    let server = start_with(|c| {
        c.limits.ping_interval = Duration::ZERO;
        c.limits.max_room_peers = 1;
        // The dropped peer's room must go at once: no resume hold.
        c.limits.resume_grace = Duration::ZERO;
    });
    let addr = server.local_addr();
    let before = scrape(addr);
    let _a = Client::join_expect(addr, "room", "a", &[]);
    common::expect_refused(addr, "room", "a", 4409, "peer_id_taken");
    common::expect_refused(addr, "room", "b", 4503, "room_full");
    // A peer whose TCP connection just drops.
    let c = Client::join_expect(addr, "other", "c", &[]);
    c.drop_tcp();
    let disconnected = "webrtc_signaling_sessions_closed_total{reason=\"disconnected\"}";
    let after = settle(addr, |s| {
        value(s, disconnected) >= 1.0 && value(s, "webrtc_signaling_rooms_active") == 1.0
    });
    let delta = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(delta("webrtc_signaling_sessions_opened_total"), 2.0);
    assert_eq!(delta(disconnected), 1.0);
    for (reason, n) in [
        ("peer_id_taken", 1.0),
        ("room_full", 1.0),
        ("server_full", 0.0),
    ] {
        assert_eq!(
            delta(&format!(
                "webrtc_signaling_sessions_refused_total{{reason=\"{reason}\"}}"
            )),
            n,
            "{reason}"
        );
        assert_eq!(
            delta(&format!(
                "webrtc_signaling_errors_sent_total{{code=\"{reason}\"}}"
            )),
            n,
            "{reason}"
        );
    }
    assert_eq!(value(&after, "webrtc_signaling_sessions_active"), 1.0);
    assert_eq!(
        value(&after, "webrtc_signaling_rooms_active"),
        1.0,
        "{after:#?}"
    );
}

#[test]
fn get_and_head_only_and_unknown_paths_stay_404() {
    let server = start_with(|_| {});
    let addr = server.local_addr();
    let head = http(addr, "HEAD", "/metrics");
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.content_type(), CONTENT_TYPE);
    assert!(head.body.is_empty());
    let length: usize = head
        .header("content-length")
        .expect("HEAD has the GET's Content-Length")
        .parse()
        .unwrap();
    assert!(length > 1000, "Content-Length {length}");
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let resp = http(addr, method, "/metrics");
        resp.assert_error(405, "method_not_allowed");
        assert_eq!(resp.header("allow"), Some("GET, HEAD"), "{method}");
    }
    for path in ["/metrics/", "/metrics/x", "/metricsx", "/webrtc/metrics"] {
        get(addr, path).assert_error(404, "not_found");
    }
    // A query string is ignored.
    assert_eq!(get(addr, "/metrics?x=1").status, 200);
}

/// The parser really is a parser: a broken exposition fails.
#[test]
fn promtool_rejects_a_malformed_exposition() {
    let broken = "# TYPE x counter\nx_total{le=\"1\" 3\n";
    match promtool_check(broken) {
        Ok(false) => {
            if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
                panic!("promtool is not installed (apt package prometheus) and {REQUIRE_ENV}=1");
            }
            println!("SKIPPED promtool check: promtool is not installed (apt package prometheus)");
        }
        Ok(true) => panic!("promtool accepted a malformed exposition"),
        Err(_) => {}
    }
}
