//! The URLs the start-up log names: what to type into a browser or a client for each
//! listener. Pure.

use std::net::SocketAddr;

use crate::http::Side;

/// `addr` as a URL authority: a wildcard bind is reached through `localhost` here.
fn authority(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        return format!("localhost:{}", addr.port());
    }
    SocketAddr::new(addr.ip(), addr.port()).to_string()
}

/// What a listener serves, as URLs: `http://127.0.0.1:8000, ws://127.0.0.1:8000/webrtc/signaling/{room}/{peer}`.
pub fn listening(addr: SocketAddr, tls: bool, side: Side) -> String {
    let host = authority(addr);
    let (http, ws) = if tls {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    let all = if addr.ip().is_unspecified() {
        ", every interface"
    } else {
        ""
    };
    match side {
        Side::Ops => format!("ops: {http}://{host}/metrics and the admin API{all}"),
        _ => format!("{http}://{host}, {ws}://{host}/webrtc/signaling/{{room}}/{{peer}}{all}"),
    }
}

/// The built-in client's address on a listener.
pub fn client_page(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}/webrtc/client", authority(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let a: SocketAddr = "0.0.0.0:8000".parse().unwrap();
        assert_eq!(
            listening(a, false, Side::All),
            "http://localhost:8000, ws://localhost:8000/webrtc/signaling/{room}/{peer}, every interface"
        );
        assert_eq!(client_page(a, true), "https://localhost:8000/webrtc/client");
        let b: SocketAddr = "[::1]:9000".parse().unwrap();
        assert_eq!(client_page(b, false), "http://[::1]:9000/webrtc/client");
        assert_eq!(
            listening("127.0.0.1:9100".parse().unwrap(), false, Side::Ops),
            "ops: http://127.0.0.1:9100/metrics and the admin API"
        );
    }
}
