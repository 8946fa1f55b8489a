//! Shared helpers for the black-box integration tests.
//!
//! Every test starts the real server in-process on 127.0.0.1, port 0, and talks
//! to it over real sockets: a WebSocket client (tungstenite over a blocking
//! `TcpStream` with read timeouts, so nothing can hang) and a raw HTTP/1.1
//! client (so status lines and headers can be asserted exactly).
#![allow(dead_code)]

pub mod redis;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::{CloseCode, Data as OpData, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame};
use tungstenite::{Message, WebSocket};
use webrtc_signaling::{Config, Server};

/// Generous deadline for anything the server should do "now".
pub const DEADLINE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------- server

/// A config bound to 127.0.0.1 on an ephemeral port, everything else default.
pub fn test_config() -> Config {
    Config {
        bind: "127.0.0.1".parse().unwrap(),
        port: 0,
        ..Config::default()
    }
}

/// Start a server with the default test config.
pub fn start() -> Server {
    start_with(|_| {})
}

/// Start a server after letting `f` adjust the test config.
pub fn start_with(f: impl FnOnce(&mut Config)) -> Server {
    let mut cfg = test_config();
    f(&mut cfg);
    Server::start(cfg).expect("server starts")
}

// ---------------------------------------------------------------- JSON

/// Assert `v` is exactly `{"type":"error","code":code,"message":<non-empty string>}`.
pub fn assert_error_msg(v: &Value, code: &str) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("expected an error object with code {code}, got {v}"));
    assert_eq!(
        obj.get("type"),
        Some(&json!("error")),
        "not an error message: {v}"
    );
    assert_eq!(obj.get("code"), Some(&json!(code)), "wrong error code: {v}");
    let message = obj.get("message").and_then(Value::as_str);
    assert!(
        message.is_some_and(|m| !m.is_empty()),
        "error message must carry a non-empty \"message\" string: {v}"
    );
    assert_eq!(
        obj.len(),
        3,
        "unexpected extra fields in error message: {v}"
    );
}

/// An ice_candidate message from a client to `target` carrying a sequence number.
pub fn candidate(target: &str, seq: u64) -> Value {
    json!({
        "type": "ice_candidate",
        "candidate": {"candidate": format!("candidate:{seq} 1 udp 1 127.0.0.1 9 typ host"),
                      "sdpMLineIndex": 0, "sdpMid": "0", "seq": seq},
        "target_peer_id": target,
    })
}

/// What `candidate(target, seq)` looks like when relayed from `from`.
pub fn relayed_candidate(target: &str, seq: u64, from: &str) -> Value {
    let mut v = candidate(target, seq);
    v["from_peer_id"] = json!(from);
    v
}

/// Takes the `resume_token` out of an `existing_peers` message (checking it is an
/// unguessable-looking string: at least 128 bits in URL-safe base64).
pub fn take_resume_token(v: &mut Value) -> Option<String> {
    if v["type"] != json!("existing_peers") {
        return None;
    }
    let token = v.as_object_mut()?.remove("resume_token")?;
    let token = token
        .as_str()
        .filter(|t| {
            t.len() >= 22
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .unwrap_or_else(|| panic!("resume_token must be a long URL-safe string: {token}"));
    Some(token.to_owned())
}

// ---------------------------------------------------------------- WebSocket client

pub fn ws_url(addr: SocketAddr, room: &str, peer: &str) -> String {
    format!("ws://{addr}/webrtc/signaling/{room}/{peer}")
}

/// How a read attempt ended.
pub enum Next {
    Msg(Message),
    TimedOut,
    /// The connection ended (EOF, reset, protocol error after close, ...).
    Ended(String),
}

/// A blocking WebSocket client whose every read is bounded by a deadline.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
    pub name: String,
    /// The `resume_token` of the session's `existing_peers` (PROTOCOL.md §8).
    pub resume_token: Option<String>,
}

impl Client {
    /// Connect and complete the WebSocket upgrade on `path` (e.g.
    /// "/webrtc/signaling/r/p"); reads nothing after the handshake.
    pub fn connect_path(addr: SocketAddr, path: &str) -> Client {
        let stream = TcpStream::connect(addr).expect("tcp connect");
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.set_write_timeout(Some(DEADLINE)).unwrap();
        stream.set_nodelay(true).unwrap();
        let url = format!("ws://{addr}{path}");
        let (ws, resp) = match tungstenite::client(url.as_str(), stream) {
            Ok(ok) => ok,
            Err(e) => panic!("WebSocket handshake on {path} failed: {e:?}"),
        };
        assert_eq!(resp.status().as_u16(), 101, "upgrade status on {path}");
        Client {
            ws,
            name: path.to_string(),
            resume_token: None,
        }
    }

    /// Connect to room/peer; reads nothing after the handshake.
    pub fn connect(addr: SocketAddr, room: &str, peer: &str) -> Client {
        let mut c = Client::connect_path(addr, &format!("/webrtc/signaling/{room}/{peer}"));
        c.name = format!("{room}/{peer}");
        c
    }

    /// Connect and read the first message, which must be `existing_peers`; returns its list.
    pub fn join(addr: SocketAddr, room: &str, peer: &str) -> (Client, Vec<String>) {
        let mut c = Client::connect(addr, room, peer);
        let first = c.recv_json();
        assert_eq!(
            first["type"],
            json!("existing_peers"),
            "first message of {room}/{peer}: {first}"
        );
        let obj = first.as_object().unwrap();
        assert_eq!(
            obj.len(),
            2,
            "existing_peers must have exactly type, peers (and resume_token): {first}"
        );
        let peers = first["peers"]
            .as_array()
            .unwrap_or_else(|| panic!("peers must be an array: {first}"))
            .iter()
            .map(|p| p.as_str().expect("peer ids are strings").to_string())
            .collect();
        (c, peers)
    }

    /// Join and assert the exact `existing_peers` list.
    pub fn join_expect(addr: SocketAddr, room: &str, peer: &str, existing: &[&str]) -> Client {
        let (c, peers) = Client::join(addr, room, peer);
        assert_eq!(peers, existing, "existing_peers of {room}/{peer}");
        c
    }

    pub fn stream(&self) -> &TcpStream {
        self.ws.get_ref()
    }

    pub fn send(&mut self, msg: Message) {
        self.ws
            .send(msg)
            .unwrap_or_else(|e| panic!("{}: send failed: {e}", self.name));
    }

    pub fn send_text(&mut self, text: &str) {
        self.send(Message::text(text.to_string()));
    }

    pub fn send_json(&mut self, v: &Value) {
        self.send_text(&v.to_string());
    }

    /// Write several JSON messages and flush once, so they arrive back to back.
    pub fn send_batch(&mut self, msgs: &[Value]) {
        for m in msgs {
            self.ws
                .write(Message::text(m.to_string()))
                .unwrap_or_else(|e| panic!("{}: write failed: {e}", self.name));
        }
        self.ws
            .flush()
            .unwrap_or_else(|e| panic!("{}: flush failed: {e}", self.name));
    }

    /// Write a raw frame (e.g. a fragment); tungstenite masks it.
    pub fn send_frame(&mut self, payload: &[u8], opcode: OpCode, fin: bool) {
        let frame = Frame::message(payload.to_vec(), opcode, fin);
        self.send(Message::Frame(frame));
    }

    /// Send a text message fragmented into frames of `chunk` bytes.
    pub fn send_fragmented(&mut self, text: &str, chunk: usize) {
        let bytes = text.as_bytes();
        let chunks: Vec<&[u8]> = bytes.chunks(chunk).collect();
        for (i, part) in chunks.iter().enumerate() {
            let opcode = if i == 0 {
                OpCode::Data(OpData::Text)
            } else {
                OpCode::Data(OpData::Continue)
            };
            self.send_frame(part, opcode, i + 1 == chunks.len());
        }
    }

    /// Read the next frame of any kind before `deadline`.
    pub fn next_until(&mut self, deadline: Instant) -> Next {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Next::TimedOut;
            }
            let left = (deadline - now).max(Duration::from_millis(1));
            self.ws.get_ref().set_read_timeout(Some(left)).unwrap();
            match self.ws.read() {
                Ok(Message::Frame(_)) => continue,
                Ok(m) => return Next::Msg(m),
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Next::Ended(e.to_string()),
            }
        }
    }

    /// Next data or close message, skipping WebSocket ping/pong frames.
    pub fn recv_message_within(&mut self, dur: Duration) -> Message {
        let deadline = Instant::now() + dur;
        loop {
            match self.next_until(deadline) {
                Next::Msg(Message::Ping(_)) | Next::Msg(Message::Pong(_)) => continue,
                Next::Msg(m) => return m,
                Next::TimedOut => panic!("{}: no message within {dur:?}", self.name),
                Next::Ended(e) => panic!(
                    "{}: connection ended while waiting for a message: {e}",
                    self.name
                ),
            }
        }
    }

    /// Next pong frame's payload (ping frames are skipped, data is an error).
    pub fn recv_pong(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.next_until(deadline) {
                Next::Msg(Message::Pong(p)) => return p.to_vec(),
                Next::Msg(Message::Ping(_)) => continue,
                Next::Msg(m) => panic!("{}: expected a pong frame, got {m:?}", self.name),
                Next::TimedOut => panic!("{}: no pong within {DEADLINE:?}", self.name),
                Next::Ended(e) => panic!(
                    "{}: connection ended while waiting for pong: {e}",
                    self.name
                ),
            }
        }
    }

    /// Next text message, parsed as JSON (panics on anything else or after `dur`).
    /// An `existing_peers` comes without its `resume_token` (PROTOCOL.md §8), which is
    /// checked and kept in [`Client::resume_token`]: the §3 shape stays comparable.
    pub fn recv_json_within(&mut self, dur: Duration) -> Value {
        let mut v = match self.recv_message_within(dur) {
            Message::Text(t) => serde_json::from_str(t.as_str())
                .unwrap_or_else(|e| panic!("{}: server sent non-JSON text {t:?}: {e}", self.name)),
            other => panic!("{}: expected a JSON text message, got {other:?}", self.name),
        };
        if let Some(token) = take_resume_token(&mut v) {
            self.resume_token = Some(token);
        }
        v
    }

    pub fn recv_json(&mut self) -> Value {
        self.recv_json_within(DEADLINE)
    }

    /// Assert the next message is exactly `expected`.
    pub fn expect_json(&mut self, expected: Value) {
        let got = self.recv_json();
        assert_eq!(got, expected, "{}: unexpected message", self.name);
    }

    /// Assert the next message is `{"type":"error","code":code,...}`.
    pub fn expect_error(&mut self, code: &str) {
        let got = self.recv_json();
        assert_error_msg(&got, code);
    }

    /// The server ends the session: an `error` message with `reason` as its
    /// code, then a close frame (code, reason), then the connection ends.
    pub fn expect_close(&mut self, code: u16, reason: &str) {
        self.expect_error(reason);
        self.expect_close_frame(code, reason);
    }

    /// The next message is a close frame with exactly this code and reason,
    /// after which the connection ends.
    pub fn expect_close_frame(&mut self, code: u16, reason: &str) {
        match self.recv_message_within(DEADLINE) {
            Message::Close(Some(CloseFrame { code: c, reason: r })) => {
                assert_eq!(
                    (u16::from(c), r.as_str()),
                    (code, reason),
                    "{}: close frame",
                    self.name
                );
            }
            other => panic!(
                "{}: expected close frame {code} {reason:?}, got {other:?}",
                self.name
            ),
        }
        self.expect_end(DEADLINE);
    }

    /// Read until the connection ends (close frame, EOF or reset), ignoring
    /// whatever data arrives; panics if it is still open after `dur`.
    pub fn expect_end(&mut self, dur: Duration) {
        let deadline = Instant::now() + dur;
        loop {
            match self.next_until(deadline) {
                Next::Msg(_) => continue,
                Next::Ended(_) => return,
                Next::TimedOut => panic!("{}: connection still open after {dur:?}", self.name),
            }
        }
    }

    /// No data or close message arrives for `dur` (ping/pong frames are fine
    /// and are answered automatically).
    pub fn expect_silence(&mut self, dur: Duration) {
        let deadline = Instant::now() + dur;
        loop {
            match self.next_until(deadline) {
                Next::TimedOut => return,
                Next::Msg(Message::Ping(_)) | Next::Msg(Message::Pong(_)) => continue,
                Next::Msg(m) => panic!("{}: expected silence, got {m:?}", self.name),
                Next::Ended(e) => panic!("{}: expected silence, connection ended: {e}", self.name),
            }
        }
    }

    /// Client-initiated close: send a close frame and expect the server to
    /// echo `code`, then the connection ends. Data messages already in flight
    /// before the echo are skipped.
    pub fn close(mut self, code: u16) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: "bye".into(),
        };
        self.ws.close(Some(frame)).expect("send close");
        loop {
            match self.recv_message_within(DEADLINE) {
                Message::Close(Some(f)) => {
                    assert_eq!(u16::from(f.code), code, "{}: close echo", self.name);
                    break;
                }
                Message::Text(_) | Message::Binary(_) => continue,
                other => panic!("{}: expected close echo, got {other:?}", self.name),
            }
        }
        self.expect_end(DEADLINE);
    }

    /// Drop the TCP connection without a close frame.
    pub fn drop_tcp(self) {
        let _ = self.ws.get_ref().shutdown(Shutdown::Both);
    }
}

/// Connect to room/peer and expect the server to refuse the session with an
/// error + close frame before anything else.
pub fn expect_refused(addr: SocketAddr, room: &str, peer: &str, code: u16, reason: &str) {
    let mut c = Client::connect(addr, room, peer);
    c.expect_close(code, reason);
}

/// A then B in `room`; returns (a, b) after both have seen each other.
pub fn pair(addr: SocketAddr, room: &str, a: &str, b: &str) -> (Client, Client) {
    let mut ca = Client::join_expect(addr, room, a, &[]);
    let cb = Client::join_expect(addr, room, b, &[a]);
    ca.expect_json(json!({"type": "peer_joined", "peer_id": b}));
    (ca, cb)
}

/// `from` can still relay to `to` and still gets pongs: proves the session
/// survived, and (being `to`'s next message) that nothing else reached `to`.
pub fn assert_still_works(
    from: &mut Client,
    from_id: &str,
    to: &mut Client,
    to_id: &str,
    seq: u64,
) {
    from.send_json(&json!({"type": "ping"}));
    from.expect_json(json!({"type": "pong"}));
    from.send_json(&candidate(to_id, seq));
    to.expect_json(relayed_candidate(to_id, seq, from_id));
}

// ---------------------------------------------------------------- raw HTTP client

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The value of header `name` (case-insensitive); panics if repeated.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut found = self
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name));
        let first = found.next().map(|(_, v)| v.as_str());
        assert!(
            found.next().is_none(),
            "header {name} repeated: {:?}",
            self.headers
        );
        first
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type")
            .unwrap_or_else(|| panic!("no Content-Type: {:?}", self.headers))
    }

    /// Status, `Content-Type: application/json` and exact JSON body.
    pub fn assert_json(&self, status: u16, body: Value) {
        assert_eq!(self.status, status, "status; response {self:?}");
        assert_json_type(self.content_type());
        assert_eq!(self.json(), body);
    }

    /// Status, JSON content type and `{"error":code,"message":<non-empty>}`.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "status; response {self:?}");
        assert_json_type(self.content_type());
        let v = self.json();
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("error body not an object: {v}"));
        assert_eq!(obj.get("error"), Some(&json!(code)), "error code in {v}");
        assert!(
            obj.get("message")
                .and_then(Value::as_str)
                .is_some_and(|m| !m.is_empty()),
            "error body needs a non-empty message: {v}"
        );
        assert_eq!(
            obj.len(),
            2,
            "error body must be exactly error+message: {v}"
        );
    }

    /// Like `assert_error` for responses whose code the contract leaves open:
    /// `error` only has to be a non-empty string.
    pub fn assert_some_error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "status; response {self:?}");
        assert_json_type(self.content_type());
        let v = self.json();
        let code = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {v}"))
            .to_string();
        assert!(!code.is_empty());
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "no message in {v}"
        );
        assert_eq!(
            v.as_object().unwrap().len(),
            2,
            "error body must be exactly error+message: {v}"
        );
        code
    }
}

pub fn assert_json_type(content_type: &str) {
    let media = content_type.split(';').next().unwrap().trim();
    assert!(
        media.eq_ignore_ascii_case("application/json"),
        "Content-Type {content_type:?} is not JSON"
    );
}

/// Send `request` verbatim and read the response until the server closes.
/// `Ok(None)`: the connection closed (or was reset) before any response byte.
pub fn http_exchange(
    addr: SocketAddr,
    request: &[u8],
    head_only: bool,
) -> io::Result<Option<HttpResponse>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_write_timeout(Some(DEADLINE))?;
    // The server may close early (e.g. a too-large head); the response, if
    // any, is still readable, so write errors are not fatal.
    let _ = stream.write_all(request);
    let mut buf = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    let mut chunk = [0u8; 8192];
    loop {
        let now = Instant::now();
        assert!(
            now < deadline,
            "HTTP response not finished within {DEADLINE:?}: {:?}",
            String::from_utf8_lossy(&buf)
        );
        stream.set_read_timeout(Some(deadline - now))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) if buf.is_empty() => return Ok(None),
            Err(_) => break,
        }
        if let Some(resp) = parse_complete(&buf, head_only) {
            if !head_only {
                return Ok(Some(resp));
            }
        }
    }
    if buf.is_empty() {
        return Ok(None);
    }
    match parse_head(&buf) {
        Some((status, headers, body_at)) => {
            let body = if is_chunked(&headers) {
                dechunk(&buf[body_at..])
            } else {
                buf[body_at..].to_vec()
            };
            Ok(Some(HttpResponse {
                status,
                headers,
                body,
            }))
        }
        None => panic!(
            "incomplete HTTP response: {:?}",
            String::from_utf8_lossy(&buf)
        ),
    }
}

/// Response header fields, in order, as (name, value).
type Headers = Vec<(String, String)>;

/// (status, headers, offset of the body) once the head is complete.
fn parse_head(buf: &[u8]) -> Option<(u16, Headers, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            let hs = resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            Some((resp.code.unwrap(), hs, n))
        }
        Ok(httparse::Status::Partial) => None,
        Err(e) => panic!(
            "malformed HTTP response ({e}): {:?}",
            String::from_utf8_lossy(buf)
        ),
    }
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    })
}

/// A response with a Content-Length whose body is complete.
fn parse_complete(buf: &[u8], head_only: bool) -> Option<HttpResponse> {
    let (status, headers, body_at) = parse_head(buf)?;
    if head_only || is_chunked(&headers) {
        return None;
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))?
        .1
        .trim()
        .parse()
        .ok()?;
    if buf.len() - body_at < len {
        return None;
    }
    let body = buf[body_at..body_at + len].to_vec();
    Some(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_str = String::from_utf8_lossy(&data[..eol]);
        let size =
            usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
}

/// `METHOD path` with `Connection: close`; panics if the server sends nothing.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> HttpResponse {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    http_exchange(addr, req.as_bytes(), method == "HEAD")
        .expect("HTTP exchange")
        .unwrap_or_else(|| panic!("{method} {path}: connection closed without a response"))
}

pub fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    http(addr, "GET", path)
}

pub fn get_json(addr: SocketAddr, path: &str) -> Value {
    let resp = get(addr, path);
    assert_eq!(resp.status, 200, "GET {path}: {resp:?}");
    assert_json_type(resp.content_type());
    resp.json()
}

/// Poll `GET path` until its JSON body equals `expected` (the server may
/// update its registry just after the client saw the close).
pub fn wait_for_json(addr: SocketAddr, path: &str, expected: Value) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let got = get_json(addr, path);
        if got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "GET {path}: still {got}, expected {expected}"
        );
        // Polling interval only; the loop is bounded by the deadline above.
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------- misc

/// Tiny deterministic PRNG (xorshift64*).
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

// ---------------------------------------------------------------- the binary

/// The server binary run as a user runs it (`--bind 127.0.0.1 --port 0` plus `args`),
/// its stderr lines arriving on a channel; killed on drop.
pub struct Process {
    child: Option<std::process::Child>,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every stderr line received so far.
    pub seen: Vec<String>,
}

/// Generous deadline for the binary to start, log or exit.
pub const PROCESS_DEADLINE: Duration = Duration::from_secs(10);

impl Process {
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Process {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_webrtc-signaling"))
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn server binary");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Process {
            child: Some(child),
            lines,
            seen: Vec::new(),
        }
    }

    /// As [`Process::spawn`], for a command built by the test (flags, environment,
    /// descriptors of its own); its stderr is taken here.
    pub fn from_command(mut cmd: std::process::Command) -> Process {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the command");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Process {
            child: Some(child),
            lines,
            seen: Vec::new(),
        }
    }

    /// The first stderr line (seen before or arriving within the deadline) that
    /// `matches`; `what` names it in the failure message.
    pub fn wait_line(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        if let Some(l) = self.seen.iter().find(|l| matches(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + PROCESS_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("no log line {what}; saw {:#?}", self.seen),
            }
        }
    }

    /// The address from the `listening on ADDR` line.
    pub fn addr(&mut self) -> SocketAddr {
        let line = self.wait_line("listening on", |l| l.contains("listening on "));
        line.rsplit("listening on ")
            .next()
            .and_then(|a| a.split_whitespace().next())
            .map(|a| a.trim_end_matches(['"', '}', ',']))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    /// The process id (for tools such as prlimit).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit; its exit code, how long that took,
    /// and every stderr line it wrote.
    pub fn wait_exit(mut self) -> (Option<i32>, Duration, Vec<String>) {
        let started = Instant::now();
        let mut child = self.child.take().expect("running");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait().map(|s| s.code()));
        });
        let code = rx
            .recv_timeout(PROCESS_DEADLINE)
            .expect("the server exits")
            .expect("wait");
        let took = started.elapsed();
        // The reader hangs up when stderr closes, after the process ended.
        while let Ok(line) = self.lines.recv_timeout(PROCESS_DEADLINE) {
            self.seen.push(line);
        }
        (code, took, std::mem::take(&mut self.seen))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
