//! Connections to the server: the byte stream (plain or TLS), connect and upgrade
//! up to `existing_peers`, why a connection failed (with hints), the probe, polite
//! closes, and reading messages off a session.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::{ClientConnection, StreamOwned};
use serde_json::Value;
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use crate::target::Target;
use crate::tls::tls_handshake;
use crate::{Fail, Res};

pub type Ws = WebSocket<Conn>;

/// The client's byte stream: a plain TCP socket, or rustls over one. Socket options
/// (timeouts, non-blocking mode, the fd for epoll) always act on the TCP socket.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => &t.sock,
        }
    }

    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(d)
    }

    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.tcp().set_nonblocking(nonblocking)
    }
}

impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp().as_raw_fd()
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(t) => t.flush(),
        }
    }
}

/// Why a connection did not become a session.
pub enum ConnErr {
    /// TCP connect failed.
    Tcp(io::Error),
    /// The TLS handshake failed (certificate, timeout, not a TLS server).
    Tls(String),
    /// The HTTP upgrade failed (status, reset, timeout).
    Handshake(String),
    /// The server admitted the socket and then refused the session (PROTOCOL.md §5).
    Refused { close: Option<u16>, code: String },
    /// Something else arrived instead of `existing_peers`.
    Unexpected(String),
}

impl ConnErr {
    /// Short key for grouping counts.
    pub fn key(&self) -> String {
        match self {
            ConnErr::Tcp(e) => format!("tcp connect: {}", io_kind(e)),
            ConnErr::Tls(m) => format!("tls: {m}"),
            ConnErr::Handshake(m) => format!("handshake: {m}"),
            ConnErr::Refused { close, code } => match close {
                Some(c) => format!("{c} {code}"),
                None => code.clone(),
            },
            ConnErr::Unexpected(m) => format!("unexpected: {m}"),
        }
    }

    /// A sentence for a fatal error, with a hint where one helps.
    pub fn explain(&self, addr: SocketAddr) -> String {
        match self {
            ConnErr::Tcp(e) if e.kind() == io::ErrorKind::ConnectionRefused => format!(
                "connection refused by {addr}: nothing listens there (is the server running, on this address and port?)"
            ),
            ConnErr::Tcp(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => {
                format!("no answer from {addr} within the connect timeout (firewall, wrong host?)")
            }
            ConnErr::Tcp(e) => format!("cannot connect to {addr}: {e}{}", fd_hint(e)),
            ConnErr::Tls(m) => format!("TLS handshake with {addr} failed: {m}"),
            ConnErr::Handshake(m) => format!("WebSocket upgrade at {addr} failed: {m}"),
            ConnErr::Refused { .. } => {
                format!("the server refused the session: {}{}", self.key(), close_hint(&self.key()))
            }
            ConnErr::Unexpected(m) => format!(
                "expected `existing_peers` as the first message, got {m} (is this a webrtc-signaling server?)"
            ),
        }
    }
}

pub fn io_kind(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EMFILE) | Some(libc::ENFILE) => "too many open files".into(),
        Some(libc::EADDRNOTAVAIL) => "no free local port".into(),
        _ => format!("{:?}", e.kind()),
    }
}

pub fn fd_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            " (out of file descriptors: raise the hard RLIMIT_NOFILE, e.g. `ulimit -Hn`, or use fewer connections)"
        }
        Some(libc::EADDRNOTAVAIL) => {
            " (out of local ports: widen net.ipv4.ip_local_port_range or use fewer connections)"
        }
        _ => "",
    }
}

/// A hint for a close code or error code the server sent.
pub fn close_hint(key: &str) -> &'static str {
    if key.contains("server_full") {
        " (raise the server's --max-connections)"
    } else if key.contains("room_full") {
        " (raise the server's --max-room-peers)"
    } else if key.contains("rate_limited") {
        " (the server limits messages per session: run it with --rate-limit 0 for load tests)"
    } else if key.contains("slow_consumer") {
        " (this tool did not read fast enough: is it CPU-bound? see loadgen CPU)"
    } else if key.contains("unauthorized") {
        " (the server wants room tokens: --auth-secret with the server's own --auth-secret)"
    } else if key.contains("peer_id_taken") {
        " (another client uses the same room and peer ids: run one loadgen at a time per room prefix)"
    } else {
        ""
    }
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

pub struct Session {
    pub ws: Ws,
    pub existing_peers: Vec<String>,
}

/// TCP connect, TLS handshake (wss://), WebSocket upgrade, then wait for
/// `existing_peers`. The socket is left blocking with `timeout` as its read and write
/// timeouts.
pub fn connect(
    t: &Target,
    room: &str,
    peer: &str,
    cfg: WebSocketConfig,
    timeout: Duration,
) -> Result<Session, ConnErr> {
    let mut last = None;
    let mut stream = None;
    for addr in &t.addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let stream = match stream {
        Some(s) => s,
        None => return Err(ConnErr::Tcp(last.expect("at least one address"))),
    };
    let setup = || -> io::Result<()> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))
    };
    setup().map_err(ConnErr::Tcp)?;
    let stream = match &t.tls {
        None => Conn::Plain(stream),
        Some(tls) => Conn::Tls(Box::new(tls_handshake(tls, stream, timeout)?)),
    };
    let url = t.request_url(room, peer).map_err(ConnErr::Handshake)?;
    let mut ws = match tungstenite::client::client_with_config(url, stream, Some(cfg)) {
        Ok((ws, _response)) => ws,
        Err(HandshakeError::Interrupted(_)) => {
            return Err(ConnErr::Handshake(
                "no HTTP answer within the timeout".into(),
            ))
        }
        Err(HandshakeError::Failure(e)) => return Err(ConnErr::Handshake(handshake_error(e))),
    };
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => {
                let v: Value = serde_json::from_str(text.as_str())
                    .map_err(|_| ConnErr::Unexpected(clip(text.as_str())))?;
                match v["type"].as_str() {
                    Some("existing_peers") => {
                        let peers = v["peers"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|p| p.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default();
                        return Ok(Session {
                            ws,
                            existing_peers: peers,
                        });
                    }
                    Some("error") => {
                        let code = v["code"].as_str().unwrap_or("error").to_string();
                        // The close frame follows (PROTOCOL.md §5); pick its code up.
                        let close = read_close_code(&mut ws);
                        return Err(ConnErr::Refused { close, code });
                    }
                    _ => return Err(ConnErr::Unexpected(clip(text.as_str()))),
                }
            }
            Ok(Message::Close(f)) => {
                return Err(ConnErr::Refused {
                    close: f.as_ref().map(|f| u16::from(f.code)),
                    code: f
                        .map(|f| f.reason.as_str().to_string())
                        .unwrap_or_else(|| "closed".into()),
                })
            }
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {
                return Err(ConnErr::Unexpected(
                    "nothing within the timeout after the upgrade".into(),
                ))
            }
            Err(e) => return Err(ConnErr::Unexpected(format!("a broken connection ({e})"))),
        }
    }
}

pub fn read_close_code(ws: &mut Ws) -> Option<u16> {
    for _ in 0..16 {
        match ws.read() {
            Ok(Message::Close(f)) => return f.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    None
}

pub fn handshake_error(e: tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Http(resp) => {
            let body = resp
                .body()
                .as_deref()
                .map(|b| clip(&String::from_utf8_lossy(b)))
                .unwrap_or_default();
            let hint = match resp.status().as_u16() {
                400 if body.contains("tls_required") => " (this port speaks TLS: use wss://)",
                404 => " (wrong path prefix in --url, or not a webrtc-signaling server?)",
                401 | 403 => {
                    " (the server wants a room token: --auth-secret with the server's secret?)"
                }
                400 => " (the server rejected the room or peer id?)",
                503 => " (server overloaded or shutting down)",
                _ => "",
            };
            format!("HTTP {}{hint} {body}", resp.status())
        }
        tungstenite::Error::Io(e) if is_timeout(&e) => "no HTTP answer within the timeout".into(),
        tungstenite::Error::Io(e) => format!(
            "{e}{}{}",
            fd_hint(&e),
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
            ) {
                " (the server closed the connection: over its --max-connections + --max-http-connections, or not a WebSocket server?)"
            } else {
                ""
            }
        ),
        tungstenite::Error::Protocol(p) => format!("{p} (not a WebSocket server?)"),
        other => other.to_string(),
    }
}

pub fn clip(s: &str) -> String {
    let s = s.trim();
    if s.len() <= 160 {
        s.to_string()
    } else {
        let mut end = 160;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

/// One probe connection so that a wrong URL or a missing server is one clear error,
/// not N of them. Keeps the address that answered first.
pub fn probe(t: &mut Target, prefix: &str, timeout: Duration) -> Res<()> {
    let mut errors = Vec::new();
    for addr in t.addrs.clone() {
        let one = Target {
            addrs: vec![addr],
            ..t.clone()
        };
        match connect(
            &one,
            &format!("{prefix}-probe"),
            "probe",
            ws_config(4096),
            timeout,
        ) {
            Ok(mut s) => {
                polite_close(&mut s.ws, Duration::from_secs(1));
                t.addrs = vec![addr];
                return Ok(());
            }
            Err(e) => errors.push(e.explain(addr)),
        }
    }
    Err(Fail::Fatal(format!("{}: {}", t.base(), errors.join("; "))))
}

/// Close frame, then wait (bounded) for the server's reply so the server sees a
/// clean close rather than a reset.
pub fn polite_close(ws: &mut Ws, wait: Duration) {
    let _ = ws.get_mut().set_read_timeout(Some(wait));
    if ws.close(None).is_err() {
        return;
    }
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(_) => continue,
            Err(_) => return,
        }
    }
}

pub fn ws_config(read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(1 << 20))
}

/// Room ids unique to this run (PROTOCOL.md §2: 1-64 of `A-Za-z0-9._~-`).
pub fn run_prefix() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() % 100_000_000)
        .unwrap_or(0);
    format!("lg{}-{t}", std::process::id())
}

/// Connects the two peers of one room: `a` first (through `ta`), then `b` (through
/// `tb`, the same instance or another of the cluster); `a` then sees `peer_joined b`.
pub fn connect_pair(
    ta: &Target,
    tb: &Target,
    room: &str,
    cfg: WebSocketConfig,
    timeout: Duration,
) -> Result<(Ws, Ws), String> {
    let a = connect(ta, room, "a", cfg, timeout).map_err(|e| e.explain(ta.addrs[0]))?;
    if !a.existing_peers.is_empty() {
        return Err(format!(
            "room {room} is not empty ({:?}): another client uses it",
            a.existing_peers
        ));
    }
    let b = connect(tb, room, "b", cfg, timeout).map_err(|e| e.explain(tb.addrs[0]))?;
    if b.existing_peers != ["a"] {
        return Err(format!(
            "room {room}: b expected existing_peers [\"a\"], got {:?}",
            b.existing_peers
        ));
    }
    let mut a = a.ws;
    match next_json(&mut a) {
        Ok(v) if v["type"] == "peer_joined" && v["peer_id"] == "b" => {}
        Ok(v) => return Err(format!("room {room}: a expected peer_joined b, got {v}")),
        Err(e) => return Err(format!("room {room}: a expected peer_joined b: {e}")),
    }
    Ok((a, b.ws))
}

/// Next text message as JSON (pings are answered by tungstenite as it reads).
pub fn next_json(ws: &mut Ws) -> Result<Value, String> {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                return serde_json::from_str(t.as_str())
                    .map_err(|_| format!("not JSON: {}", clip(t.as_str())))
            }
            Ok(Message::Close(f)) => {
                return Err(format!("closed by the server: {}", close_desc(f)))
            }
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {
                return Err("timed out waiting for a message".into())
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

pub fn close_desc(f: Option<tungstenite::protocol::CloseFrame>) -> String {
    match f {
        Some(f) => format!("{} {}", u16::from(f.code), f.reason.as_str()),
        None => "close without a code".into(),
    }
}

/// Reads whatever is already buffered for this socket without blocking; records
/// `error` codes, closes and other messages by kind. Err when the session ended.
pub fn drain_nonblocking(ws: &mut Ws, events: &mut BTreeMap<String, u64>) -> Result<(), String> {
    ws.get_mut()
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;
    let result = loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                let key = match serde_json::from_str::<Value>(t.as_str()) {
                    Ok(v) if v["type"] == "error" => {
                        format!("error {}", v["code"].as_str().unwrap_or("?"))
                    }
                    Ok(v) => v["type"].as_str().unwrap_or("?").to_string(),
                    Err(_) => "not JSON".into(),
                };
                *events.entry(key).or_default() += 1;
            }
            Ok(Message::Close(f)) => {
                let d = close_desc(f);
                *events.entry(format!("close {d}")).or_default() += 1;
                break Err(format!("the server closed the sender: {d}"));
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => break Ok(()),
            Err(e) => break Err(format!("read: {e}")),
        }
    };
    let _ = ws.get_mut().set_nonblocking(false);
    result
}
