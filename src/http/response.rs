//! HTTP responses: a small value type and its encoding (tiny_http's writer), built in
//! memory so a response leaves in one `write`. Pure.

use tiny_http::{HTTPVersion, Header};

pub const JSON: &str = "application/json";
pub const SERVER: &str = concat!("webrtc-signaling/", env!("CARGO_PKG_VERSION"));

/// A response before it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resp {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl Resp {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Resp {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    pub fn json(status: u16, body: &impl serde::Serialize) -> Self {
        Resp::new(status, JSON, serde_json::to_vec(body).unwrap_or_default())
    }

    /// PROTOCOL.md §1: every error body is `{"error":..,"message":..}`.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Resp::json(
            status,
            &serde_json::json!({ "error": code, "message": message }),
        )
    }

    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

pub fn not_found() -> Resp {
    Resp::error(404, "not_found", "no such endpoint")
}

pub fn method_not_allowed(allow: &str) -> Resp {
    Resp::error(405, "method_not_allowed", "method not allowed on this path").with("Allow", allow)
}

pub fn busy() -> Resp {
    Resp::error(503, "unavailable", "the server is busy or shutting down").with("Retry-After", "1")
}

fn header(name: &str, value: &str) -> Option<Header> {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

/// Headers tiny_http's `Response` refuses to carry.
const HOP_BY_HOP: [&str; 2] = ["Connection", "Upgrade"];

/// The bytes of `resp` (without its body for `HEAD`), announcing `Connection: close`
/// when the connection ends after it.
pub fn encode(resp: Resp, head_only: bool, close: bool) -> Vec<u8> {
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
    // Writing into a Vec cannot fail.
    let _ = r.raw_print(&mut out, HTTPVersion(1, 1), &[], head_only, None);
    // tiny_http reserves Connection and Upgrade for itself; they go right after the
    // status line (which never contains CRLF).
    if let Some(at) = out.windows(2).position(|w| w == b"\r\n") {
        out.splice(at + 2..at + 2, hop_by_hop.into_bytes());
    }
    out
}

/// The `101 Switching Protocols` answer to a WebSocket upgrade.
pub fn switching_protocols(accept: &str) -> Vec<u8> {
    let mut resp = tiny_http::Response::empty(101);
    for h in [
        header("Server", SERVER),
        header("Sec-WebSocket-Accept", accept),
    ]
    .into_iter()
    .flatten()
    {
        resp.add_header(h);
    }
    let mut out = Vec::with_capacity(256);
    let _ = resp.raw_print(&mut out, HTTPVersion(1, 1), &[], false, Some("websocket"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn errors_are_json_with_a_length_and_hop_by_hop_headers_survive() {
        let r = method_not_allowed("GET, HEAD").with("Upgrade", "websocket");
        let t = text(encode(r, false, true));
        assert!(t.starts_with("HTTP/1.1 405 "), "{t}");
        let status_end = t.find("\r\n").unwrap();
        assert!(t[status_end..].starts_with("\r\nUpgrade: websocket\r\nConnection: close\r\n"));
        assert!(t.contains("Allow: GET, HEAD\r\n"));
        assert!(t.contains("Content-Type: application/json\r\n"));
        let body = t.split("\r\n\r\n").nth(1).unwrap();
        assert!(t.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(body.contains(r#""error":"method_not_allowed""#));
    }

    #[test]
    fn head_requests_get_no_body_but_the_same_length() {
        let t = text(encode(Resp::new(200, "text/plain", "hello"), true, false));
        assert!(t.contains("Content-Length: 5\r\n"));
        assert!(t.ends_with("\r\n\r\n"));
    }

    #[test]
    fn switching_protocols_names_the_accept_key() {
        let t = text(switching_protocols("abc="));
        assert!(t.starts_with("HTTP/1.1 101 "));
        assert!(t.contains("Sec-WebSocket-Accept: abc=\r\n"));
        assert!(t.to_ascii_lowercase().contains("upgrade: websocket\r\n"));
    }
}
