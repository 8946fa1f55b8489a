//! The HTTP side of a connection: request heads (bounded in size and time), the REST
//! endpoints and `/metrics` (with the admin `DELETE`s of `--admin` and the per-request TURN
//! credentials of `--turn-secret`), the built-in client page, and the hand-off of
//! WebSocket upgrades.
//!
//! The server reads request heads itself (with `httparse`, already in the tree through
//! tungstenite) so that it keeps the socket: an upgraded session must read and write
//! it without blocking on either, which tiny_http's upgrade cannot give (tiny_http#8).
//! Responses are written with tiny_http's `Response`. Plain or TLS makes no
//! difference here: both are a [`Stream`]. Access rules (tokens, origins) are
//! [`crate::access`]'s; this module applies them to requests.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use log::{debug, info};
use tiny_http::{HTTPVersion, Header};

use crate::access::{self, AuthError};
use crate::ice;
use crate::metrics;
use crate::protocol::CloseReason;
use crate::protocol::{PeerId, RoomId};
use crate::router::{Command, Envelope, Reply, RoomSummary};
use crate::server::Shared;
use crate::session;
use crate::transport::{Stream, TlsConfig};

const CLIENT_HTML: &str = include_str!("../static/client.html");
const SIGNALING_JS: &str = include_str!("../static/signaling.js");

const JSON: &str = "application/json";
const SERVER: &str = concat!("webrtc-signaling/", env!("CARGO_PKG_VERSION"));
const MAX_HEADERS: usize = 64;
/// How long a REST handler waits for the router before answering 503.
const ROUTER_WAIT: Duration = Duration::from_secs(2);

/// A parsed request head, owned so the read buffer can be reused.
struct Head {
    method: String,
    path: String,
    minor_version: u8,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// A request with a body we do not read cannot be followed by another request.
    fn has_body(&self) -> bool {
        self.header("transfer-encoding").is_some()
            || self
                .header("content-length")
                .is_some_and(|v| v.trim() != "0")
    }

    fn keep_alive(&self) -> bool {
        if self.has_body() || self.header_has_token("connection", "close") {
            return false;
        }
        self.minor_version >= 1 || self.header_has_token("connection", "keep-alive")
    }
}

enum HeadError {
    /// The client closed the connection between requests.
    Closed,
    TooLarge,
    Timeout,
    Malformed,
    Io,
}

/// Reads one request head into `buf`, within `head_max` bytes and by `deadline`: a
/// client trickling bytes (or TLS records) cannot hold the thread longer than that.
fn read_head(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    shared: &Shared,
    deadline: Instant,
) -> Result<Head, HeadError> {
    let limits = &shared.limits;
    let mut chunk = [0u8; 1024];
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let head = Head {
                        method: req.method.unwrap_or("").to_owned(),
                        path: req.path.unwrap_or("").to_owned(),
                        minor_version: req.version.unwrap_or(1),
                        headers: req
                            .headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_owned(),
                                    String::from_utf8_lossy(h.value).into_owned(),
                                )
                            })
                            .collect(),
                    };
                    buf.drain(..len);
                    return Ok(head);
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
                Err(_) => return Err(HeadError::Malformed),
            }
        }
        let room = limits.http_head_max.saturating_sub(buf.len());
        if room == 0 {
            return Err(HeadError::TooLarge);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::Timeout);
        }
        let want = room.min(chunk.len());
        match stream.read_before(&mut chunk[..want], deadline) {
            Ok(0) if buf.is_empty() => return Err(HeadError::Closed),
            Ok(0) => return Err(HeadError::Malformed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(HeadError::Timeout)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(HeadError::Io),
        }
    }
}

/// A response before it is written.
struct Resp {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

impl Resp {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Resp {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    fn json(status: u16, body: &impl serde::Serialize) -> Self {
        Resp::new(status, JSON, serde_json::to_vec(body).unwrap_or_default())
    }

    fn error(status: u16, code: &str, message: &str) -> Self {
        Resp::json(
            status,
            &serde_json::json!({ "error": code, "message": message }),
        )
    }

    fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

fn header(name: &str, value: &str) -> Option<Header> {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

/// Writes `resp` with tiny_http's response writer, in one `write` call.
fn write_response(stream: &mut Stream, resp: Resp, head_only: bool, close: bool) -> io::Result<()> {
    // Always a Content-Length (the body is in memory), never chunked.
    let mut r = tiny_http::Response::from_data(resp.body)
        .with_status_code(resp.status)
        .with_chunked_threshold(usize::MAX);
    let mut hop_by_hop = String::new();
    let mut headers = vec![
        header("Server", SERVER),
        header("Content-Type", resp.content_type),
    ];
    for (name, value) in &resp.headers {
        if HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            hop_by_hop.push_str(&format!("{name}: {value}\r\n"));
        } else {
            headers.push(header(name, value));
        }
    }
    if close {
        hop_by_hop.push_str("Connection: close\r\n");
    }
    for h in headers.into_iter().flatten() {
        r.add_header(h);
    }
    let mut out = Vec::with_capacity(512);
    r.raw_print(&mut out, HTTPVersion(1, 1), &[], head_only, None)?;
    // tiny_http reserves Connection and Upgrade for itself; they go right after the
    // status line (which never contains CRLF).
    if let Some(at) = out.windows(2).position(|w| w == b"\r\n") {
        out.splice(at + 2..at + 2, hop_by_hop.into_bytes());
    }
    stream.write_all(&out)?;
    stream.flush()
}

/// Headers tiny_http's `Response` refuses to carry.
const HOP_BY_HOP: [&str; 2] = ["Connection", "Upgrade"];

/// What to do with a request.
enum Action {
    Respond(Resp),
    Upgrade {
        room: String,
        peer: String,
        accept: String,
        /// Origin and token checks: a refusal here ends the session right after the
        /// upgrade with its close code (PROTOCOL.md §5: 4403, 4401).
        admit: Result<(), CloseReason>,
    },
}

/// Serves one accepted connection: REST requests (with keep-alive) until the client
/// closes or upgrades to a signaling session.
pub fn serve(tcp: TcpStream, tls: Option<&TlsConfig>, remote: SocketAddr, shared: Arc<Shared>) {
    // A client that does not read its response cannot hold the thread either.
    let _ = tcp.set_write_timeout(Some(
        shared.limits.write_timeout.max(Duration::from_millis(1)),
    ));
    // The first head (and with TLS, the handshake before it) must be in by then.
    let mut deadline = Instant::now() + shared.limits.http_head_timeout;
    if tls.is_some() {
        match first_byte(&tcp, shared.limits.http_head_timeout) {
            // A TLS ClientHello starts with 0x16; a letter is a plain HTTP method.
            Some(b) if b.is_ascii_uppercase() => {
                if let Ok(mut plain) = Stream::new(tcp, None) {
                    let resp = Resp::error(
                        400,
                        "tls_required",
                        "this port speaks TLS: use https:// or wss://",
                    );
                    let _ = write_response(&mut plain, resp, false, true);
                }
                return;
            }
            Some(_) => {}
            None => return,
        }
    }
    let mut stream = match Stream::new(tcp, tls) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("cannot start TLS for {remote}: {e}");
            return;
        }
    };
    let mut buf = Vec::with_capacity(1024);
    loop {
        let head = match read_head(&mut stream, &mut buf, &shared, deadline) {
            Ok(h) => h,
            Err(e) => {
                let resp = match e {
                    HeadError::TooLarge => Some(Resp::error(
                        431,
                        "header_too_large",
                        "the request head is too large",
                    )),
                    HeadError::Timeout if !buf.is_empty() => Some(Resp::error(
                        408,
                        "request_timeout",
                        "the request head took too long",
                    )),
                    HeadError::Malformed => {
                        Some(Resp::error(400, "bad_request", "malformed HTTP request"))
                    }
                    HeadError::Timeout | HeadError::Closed | HeadError::Io => None,
                };
                if let Some(resp) = resp {
                    let _ = write_response(&mut stream, resp, false, true);
                }
                return;
            }
        };
        debug!("{remote} {} {}", head.method, access::redact(&head.path));
        let head_only = head.method == "HEAD";
        match route(&head, &shared, remote) {
            Action::Respond(resp) => {
                let keep = head.keep_alive() && resp.status < 500;
                if write_response(&mut stream, resp, head_only, !keep).is_err() || !keep {
                    stream.close_notify();
                    return;
                }
                deadline = Instant::now() + shared.limits.http_head_timeout;
            }
            Action::Upgrade {
                room,
                peer,
                accept,
                admit,
            } => {
                let Some(token) = shared.session_token() else {
                    return;
                };
                let mut resp = tiny_http::Response::empty(101);
                if let Some(h) = header("Server", SERVER) {
                    resp.add_header(h);
                }
                let resp = match header("Sec-WebSocket-Accept", &accept) {
                    Some(h) => resp.with_header(h),
                    None => return,
                };
                let mut head = Vec::with_capacity(256);
                let sent = resp
                    .raw_print(&mut head, HTTPVersion(1, 1), &[], false, Some("websocket"))
                    .and_then(|_| stream.write_all(&head))
                    .and_then(|_| stream.flush());
                if sent.is_ok() {
                    session::run(stream, buf, &room, &peer, remote, &shared, token, admit);
                }
                return;
            }
        }
    }
}

/// The first byte the client sends, within `timeout` (`None`: nothing came).
fn first_byte(tcp: &TcpStream, timeout: Duration) -> Option<u8> {
    tcp.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
        .ok()?;
    let mut b = [0u8; 1];
    loop {
        match tcp.peek(&mut b) {
            Ok(1) => return Some(b[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            _ => return None,
        }
    }
}

const GET_HEAD: &str = "GET, HEAD";
const GET_HEAD_DELETE: &str = "GET, HEAD, DELETE";

fn route(head: &Head, shared: &Shared, remote: SocketAddr) -> Action {
    let path = head.path.split(['?', '#']).next().unwrap_or("");
    let query = head
        .path
        .split('#')
        .next()
        .and_then(|p| p.split_once('?'))
        .map(|(_, q)| q);
    let read_only = matches!(head.method.as_str(), "GET" | "HEAD");
    if let Some(rest) = path.strip_prefix("/webrtc/signaling/") {
        let mut parts = rest.split('/');
        return match (parts.next(), parts.next(), parts.next()) {
            (Some(room), Some(peer), None) => signaling(head, shared, remote, room, peer, query),
            _ => Action::Respond(not_found()),
        };
    }
    let resp = match path {
        "/"
        | "/healthz"
        | "/webrtc/rooms"
        | "/webrtc/client"
        | "/webrtc/client/signaling.js"
        | "/webrtc/ice-servers"
        | "/metrics"
            if !read_only =>
        {
            method_not_allowed(GET_HEAD)
        }
        "/" => Resp::new(302, "text/plain; charset=utf-8", "see /webrtc/client\n")
            .with("Location", "/webrtc/client"),
        "/healthz" if shared.is_stopping() => {
            Resp::error(503, "shutting_down", "the server is shutting down")
        }
        "/healthz" => Resp::json(200, &serde_json::json!({"status": "ok"})),
        "/webrtc/client" => Resp::new(200, "text/html; charset=utf-8", CLIENT_HTML)
            .with("Cache-Control", "no-cache"),
        "/webrtc/client/signaling.js" => {
            Resp::new(200, "text/javascript; charset=utf-8", SIGNALING_JS)
                .with("Cache-Control", "no-cache")
        }
        "/webrtc/ice-servers" => match any_token(head, shared, query) {
            Err(resp) => resp,
            Ok(()) => ice_servers(shared, query),
        },
        "/metrics" => Resp::new(200, metrics::CONTENT_TYPE, shared.metrics.encode())
            .with("Cache-Control", "no-store"),
        "/webrtc/rooms" => match admin_token(head, shared, remote) {
            Err(resp) => resp,
            Ok(()) => match ask(shared, Command::ListRooms) {
                Some(Reply::Rooms(rooms)) => {
                    Resp::json(200, &serde_json::json!({ "rooms": rooms }))
                }
                _ => busy(),
            },
        },
        _ => match path.strip_prefix("/webrtc/rooms/") {
            Some(rest) => match admin_token(head, shared, remote) {
                Err(resp) => resp,
                Ok(()) => room_paths(head, shared, remote, rest),
            },
            None => not_found(),
        },
    };
    Action::Respond(resp)
}

/// With auth on, the room listings and admin actions need `Authorization: Bearer` with
/// an admin token: 401 without a valid token, 403 with a valid one that is not admin.
fn admin_token(head: &Head, shared: &Shared, remote: SocketAddr) -> Result<(), Resp> {
    let Some(verifier) = &shared.limits.auth else {
        return Ok(());
    };
    let token = access::bearer(head.header("authorization"));
    verifier.check_admin(token).map_err(|e| {
        debug!(
            "{remote} {} {}: {e}",
            head.method,
            access::redact(&head.path)
        );
        auth_failure(e)
    })
}

/// With auth on, `/webrtc/ice-servers` (TURN credentials) needs a valid token of any
/// kind, as a bearer header or as `?token=` (what the built-in client sends).
fn any_token(head: &Head, shared: &Shared, query: Option<&str>) -> Result<(), Resp> {
    let Some(verifier) = &shared.limits.auth else {
        return Ok(());
    };
    let from_query = access::query_token(query);
    let token = access::bearer(head.header("authorization")).or(from_query.as_deref());
    match token {
        None => Err(auth_failure(AuthError::Missing)),
        Some(t) => verifier.verify(t).map(|_| ()).map_err(auth_failure),
    }
}

fn auth_failure(e: AuthError) -> Resp {
    match e {
        AuthError::NotAdmin => Resp::error(403, "forbidden", "this token is not an admin token"),
        e => Resp::error(
            401,
            "unauthorized",
            &format!("a valid bearer token is required ({e})"),
        )
        .with("WWW-Authenticate", "Bearer"),
    }
}

/// `/webrtc/rooms/{room}`, `.../peers` and `.../peers/{peer}`.
fn room_paths(head: &Head, shared: &Shared, remote: SocketAddr, rest: &str) -> Resp {
    let read_only = matches!(head.method.as_str(), "GET" | "HEAD");
    let delete = head.method == "DELETE";
    let parts: Vec<&str> = rest.split('/').collect();
    match parts[..] {
        [""] => not_found(),
        [room] if read_only => room_summary(shared, room),
        [room] if delete => kick(shared, remote, room, None),
        [_] => method_not_allowed(GET_HEAD_DELETE),
        [room, "peers"] if read_only => peers(shared, room),
        [_, "peers"] => method_not_allowed(GET_HEAD),
        [room, "peers", peer] if read_only => peer_summary(shared, room, peer),
        [room, "peers", peer] if delete => kick(shared, remote, room, Some(peer)),
        [_, "peers", _] => method_not_allowed(GET_HEAD_DELETE),
        _ => not_found(),
    }
}

/// `GET /webrtc/ice-servers`: the body built at start, or with a TURN secret, that
/// body with credentials minted for this request (user part: `?peer=` if valid).
fn ice_servers(shared: &Shared, query: Option<&str>) -> Resp {
    let Some(secret) = &shared.limits.turn_secret else {
        return Resp::new(200, JSON, shared.ice_json.as_bytes().to_vec());
    };
    let now = access::now_secs();
    let user = ice::user_from_query(query).unwrap_or_else(ice::random_user);
    let body =
        ice::with_turn_credentials(&shared.ice_json, secret, shared.limits.turn_ttl, now, &user);
    // Credentials are per client: no cache may hand them to someone else.
    Resp::new(200, JSON, body).with("Cache-Control", "no-store")
}

fn parse_room(room: &str) -> Result<RoomId, Resp> {
    RoomId::parse(room).map_err(|e| Resp::error(400, "invalid_room_id", &format!("room_id {e}")))
}

fn parse_peer(peer: &str) -> Result<PeerId, Resp> {
    PeerId::parse(peer).map_err(|e| Resp::error(400, "invalid_peer_id", &format!("peer_id {e}")))
}

fn room_not_found(room: &RoomId) -> Resp {
    Resp::error(
        404,
        "room_not_found",
        &format!("room {:?} has no peers", room.as_str()),
    )
}

fn peer_not_found(room: &RoomId, peer: &PeerId) -> Resp {
    Resp::error(
        404,
        "peer_not_found",
        &format!(
            "peer {:?} is not in room {:?}",
            peer.as_str(),
            room.as_str()
        ),
    )
}

/// `{"room_id":..,"peer_id":..}` (a struct, so the keys keep this order).
#[derive(serde::Serialize)]
struct PeerBody<'a> {
    room_id: &'a RoomId,
    peer_id: &'a PeerId,
}

/// `{"room_id":..,"kicked":[..]}`.
#[derive(serde::Serialize)]
struct KickedBody<'a> {
    room_id: &'a RoomId,
    kicked: &'a [PeerId],
}

/// `GET /webrtc/rooms/{room}`: `{"room_id":..,"peer_count":..}`.
fn room_summary(shared: &Shared, room: &str) -> Resp {
    let room = match parse_room(room) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match ask(shared, Command::ListPeers { room: room.clone() }) {
        Some(Reply::Peers(Some(peers))) => Resp::json(
            200,
            &RoomSummary {
                room_id: room,
                peer_count: peers.len(),
            },
        ),
        Some(Reply::Peers(None)) => room_not_found(&room),
        _ => busy(),
    }
}

/// `GET /webrtc/rooms/{room}/peers/{peer}`: `{"room_id":..,"peer_id":..}` while the
/// peer is connected.
fn peer_summary(shared: &Shared, room: &str, peer: &str) -> Resp {
    let (room, peer) = match (parse_room(room), parse_peer(peer)) {
        (Ok(r), Ok(p)) => (r, p),
        (Err(resp), _) | (_, Err(resp)) => return resp,
    };
    match ask(shared, Command::ListPeers { room: room.clone() }) {
        Some(Reply::Peers(Some(peers))) if peers.contains(&peer) => Resp::json(
            200,
            &PeerBody {
                room_id: &room,
                peer_id: &peer,
            },
        ),
        Some(Reply::Peers(Some(_))) => peer_not_found(&room, &peer),
        Some(Reply::Peers(None)) => room_not_found(&room),
        _ => busy(),
    }
}

/// `DELETE /webrtc/rooms/{room}[/peers/{peer}]` (with `--admin`): ends the sessions
/// with `kicked` (4403) and answers `{"room_id":..,"kicked":[..]}`.
fn kick(shared: &Shared, remote: SocketAddr, room: &str, peer: Option<&str>) -> Resp {
    if !shared.limits.admin {
        return Resp::error(
            403,
            "admin_disabled",
            "admin actions are disabled; start the server with --admin to allow them",
        );
    }
    let room = match parse_room(room) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let peer = match peer.map(parse_peer).transpose() {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let cmd = Command::Kick {
        room: room.clone(),
        peer: peer.clone(),
    };
    match ask(shared, cmd) {
        Some(Reply::Kicked(kicked)) => {
            let names: Vec<&str> = kicked.iter().map(PeerId::as_str).collect();
            info!(
                "admin request from {remote}: kicked {} from {room}",
                names.join(", ")
            );
            Resp::json(
                200,
                &KickedBody {
                    room_id: &room,
                    kicked: &kicked,
                },
            )
        }
        Some(Reply::RoomNotFound) => room_not_found(&room),
        Some(Reply::PeerNotFound) => match &peer {
            Some(peer) => peer_not_found(&room, peer),
            None => room_not_found(&room),
        },
        _ => busy(),
    }
}

fn peers(shared: &Shared, room: &str) -> Resp {
    let room = match parse_room(room) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match ask(shared, Command::ListPeers { room: room.clone() }) {
        Some(Reply::Peers(Some(peers))) => {
            Resp::json(200, &serde_json::json!({ "room_id": room, "peers": peers }))
        }
        Some(Reply::Peers(None)) => room_not_found(&room),
        _ => busy(),
    }
}

fn signaling(
    head: &Head,
    shared: &Shared,
    remote: SocketAddr,
    room: &str,
    peer: &str,
    query: Option<&str>,
) -> Action {
    if head.method != "GET" {
        return Action::Respond(method_not_allowed("GET"));
    }
    let upgrade = head.header_has_token("upgrade", "websocket")
        && head.header_has_token("connection", "upgrade");
    if !upgrade {
        return Action::Respond(
            Resp::error(
                426,
                "upgrade_required",
                "this path takes a WebSocket upgrade",
            )
            .with("Upgrade", "websocket"),
        );
    }
    if head.header("sec-websocket-version").map(str::trim) != Some("13") {
        return Action::Respond(
            Resp::error(
                426,
                "unsupported_websocket_version",
                "only WebSocket version 13 is supported",
            )
            .with("Sec-WebSocket-Version", "13"),
        );
    }
    match head.header("sec-websocket-key").map(str::trim) {
        Some(key) if !key.is_empty() => Action::Upgrade {
            room: room.to_owned(),
            peer: peer.to_owned(),
            accept: tungstenite::handshake::derive_accept_key(key.as_bytes()),
            admit: admit(head, shared, remote, room, peer, query),
        },
        _ => Action::Respond(Resp::error(
            400,
            "bad_request",
            "Sec-WebSocket-Key is missing",
        )),
    }
}

/// The Origin allow-list, then the room token.
fn admit(
    head: &Head,
    shared: &Shared,
    remote: SocketAddr,
    room: &str,
    peer: &str,
    query: Option<&str>,
) -> Result<(), CloseReason> {
    let limits = &shared.limits;
    let origin = head.header("origin");
    if !limits.allowed_origins.allows(origin, head.header("host")) {
        info!(
            "refused {peer:?} in {room:?} from {remote}: origin {:?} is not allowed",
            origin.unwrap_or("")
        );
        return Err(CloseReason::OriginNotAllowed);
    }
    if let Some(verifier) = &limits.auth {
        let token = access::query_token(query);
        if let Err(e) = verifier.check_peer(token.as_deref(), room, peer) {
            info!("refused {peer:?} in {room:?} from {remote}: unauthorized ({e})");
            return Err(CloseReason::Unauthorized);
        }
    }
    Ok(())
}

fn ask(shared: &Shared, cmd: Command<session::SessionMailbox>) -> Option<Reply> {
    let (tx, rx) = bounded(1);
    shared
        .router
        .send_timeout(
            Envelope {
                cmd,
                reply: Some(tx),
            },
            ROUTER_WAIT,
        )
        .ok()?;
    rx.recv_timeout(ROUTER_WAIT).ok()
}

fn not_found() -> Resp {
    Resp::error(404, "not_found", "no such endpoint")
}

fn method_not_allowed(allow: &str) -> Resp {
    Resp::error(405, "method_not_allowed", "method not allowed on this path").with("Allow", allow)
}

fn busy() -> Resp {
    Resp::error(503, "unavailable", "the server is busy or shutting down").with("Retry-After", "1")
}
