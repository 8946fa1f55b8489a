//! CORS for the JSON endpoints (`/webrtc/rooms…`, `/webrtc/ice-servers`, `/healthz`),
//! so an app served from another origin can read its TURN credentials and the room
//! listings. Opt-in through the same list as the WebSocket Origin check
//! (`--allowed-origin`): a listed origin gets `Access-Control-Allow-Origin` with its
//! exact value (never `*`: the answers may hold credentials), any other origin gets no
//! CORS header, and the browser keeps the answer from its page. Pure.
//!
//! `OPTIONS` on any known path is answered `204` with `Allow`; a preflight from a
//! listed origin also gets the `Access-Control-Allow-*` headers.

use super::head::Head;
use super::response::Resp;
use super::route::Route;
use crate::access::Access;

/// How long a browser may cache a preflight answer.
const MAX_AGE_SECS: &str = "600";

/// Whether the endpoint answers cross-origin reads.
pub fn applies(route: &Route<'_>) -> bool {
    matches!(
        route,
        Route::Healthz
            | Route::IceServers
            | Route::Rooms
            | Route::Room(_)
            | Route::RoomPeers(_)
            | Route::Peer(..)
            | Route::KickRoom(_)
            | Route::KickPeer(..)
    )
}

/// The request's `Origin` if it is on the list.
fn listed<'h>(head: &'h Head, access: &Access) -> Option<&'h str> {
    let origin = head.header("origin")?.trim();
    access.origins.lists(origin).then_some(origin)
}

/// Adds the CORS headers to the answer of a cross-origin read.
pub fn decorate(resp: Resp, route: &Route<'_>, head: &Head, access: &Access) -> Resp {
    if !applies(route) || access.origins.is_empty() {
        return resp;
    }
    // Caches must keep answers for different origins apart, listed or not.
    let resp = resp.with("Vary", "Origin");
    match listed(head, access) {
        Some(origin) => resp.with("Access-Control-Allow-Origin", origin).with(
            "Access-Control-Expose-Headers",
            "WWW-Authenticate, Retry-After",
        ),
        None => resp,
    }
}

/// The answer to `OPTIONS` on a path whose methods are `allow` (`None`: unknown path).
/// `get_route` is the path's route as a `GET` would see it.
pub fn options(head: &Head, allow: Option<&str>, get_route: &Route<'_>, access: &Access) -> Resp {
    let Some(allow) = allow else {
        return super::response::not_found();
    };
    let allow = format!("{allow}, OPTIONS");
    let resp = Resp::new(204, "text/plain; charset=utf-8", Vec::new()).with("Allow", allow.clone());
    if !applies(get_route) || access.origins.is_empty() {
        return resp;
    }
    let resp = resp.with("Vary", "Origin");
    match listed(head, access) {
        Some(origin) => resp
            .with("Access-Control-Allow-Origin", origin)
            .with("Access-Control-Allow-Methods", allow)
            .with(
                "Access-Control-Allow-Headers",
                "Authorization, Content-Type",
            )
            .with("Access-Control-Max-Age", MAX_AGE_SECS),
        None => resp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::parse;

    fn head(text: &str) -> Head {
        parse(text.as_bytes()).unwrap().unwrap().0
    }

    fn access() -> Access {
        let mut a = Access::default();
        a.origins.add("https://app.example").unwrap();
        a
    }

    fn header<'r>(r: &'r Resp, name: &str) -> Option<&'r str> {
        r.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn listed_origins_only() {
        let ok = head("GET / HTTP/1.1\r\nOrigin: https://app.example\r\n\r\n");
        let evil = head("GET / HTTP/1.1\r\nOrigin: https://evil.example\r\n\r\n");
        let r = decorate(Resp::new(200, "x", ""), &Route::IceServers, &ok, &access());
        assert_eq!(
            header(&r, "access-control-allow-origin"),
            Some("https://app.example")
        );
        assert_eq!(header(&r, "vary"), Some("Origin"));
        let r = decorate(
            Resp::new(200, "x", ""),
            &Route::IceServers,
            &evil,
            &access(),
        );
        assert_eq!(header(&r, "access-control-allow-origin"), None);
        let r = decorate(Resp::new(200, "x", ""), &Route::Metrics, &ok, &access());
        assert!(r.headers.is_empty(), "{r:?}");
        let r = decorate(
            Resp::new(200, "x", ""),
            &Route::IceServers,
            &ok,
            &Access::default(),
        );
        assert!(r.headers.is_empty(), "no list, no CORS: {r:?}");
    }

    #[test]
    fn preflights() {
        let pre = head("OPTIONS / HTTP/1.1\r\nOrigin: https://app.example\r\n\r\n");
        let route = Route::Peer("r", "p");
        let r = options(&pre, Some("GET, HEAD, DELETE"), &route, &access());
        assert_eq!(r.status, 204);
        assert_eq!(header(&r, "allow"), Some("GET, HEAD, DELETE, OPTIONS"));
        assert_eq!(
            header(&r, "access-control-allow-methods"),
            Some("GET, HEAD, DELETE, OPTIONS")
        );
        assert!(header(&r, "access-control-allow-headers")
            .unwrap()
            .contains("Authorization"));
        assert_eq!(options(&pre, None, &Route::NotFound, &access()).status, 404);
        let evil = head("OPTIONS / HTTP/1.1\r\nOrigin: https://evil.example\r\n\r\n");
        let r = options(&evil, Some("GET, HEAD"), &Route::IceServers, &access());
        assert_eq!(r.status, 204);
        assert_eq!(header(&r, "access-control-allow-origin"), None);
    }
}
