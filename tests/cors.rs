//! Apps on other origins (CORS on the JSON endpoints, `OPTIONS` preflights), the
//! `--ops-bind` listener, the client as a package (`signaling.mjs`, `.d.ts`,
//! `package.json`) and the `build_info`/limit series: real server, real sockets.

mod common;

use std::net::SocketAddr;

use common::{http_exchange, start_with, HttpResponse};
use webrtc_signaling::access::{self, Claims};
use webrtc_signaling::Secret;

/// An HS256 secret of the 32 bytes the server insists on.
const APP_SECRET: &str = "cors-test-secret-cors-test-secret";
const APP: &str = "https://app.example";
const EVIL: &str = "https://evil.example";

/// `method path` with extra header lines.
fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    http_exchange(addr, req.as_bytes(), method == "HEAD")
        .expect("HTTP exchange")
        .expect("a response")
}

fn cors_headers(r: &HttpResponse) -> Vec<String> {
    r.headers
        .iter()
        .filter(|(k, _)| k.to_ascii_lowercase().starts_with("access-control-"))
        .map(|(k, v)| format!("{}: {v}", k.to_ascii_lowercase()))
        .collect()
}

#[test]
fn listed_origins_may_read_the_json_endpoints_and_others_may_not() {
    let server = start_with(|c| {
        c.access.allowed_origins.add(APP).unwrap();
        c.ice.servers.push("stun:stun.example.org:3478".into());
    });
    let addr = server.local_addr();
    for path in ["/webrtc/ice-servers", "/webrtc/rooms", "/healthz"] {
        let ok = request(addr, "GET", path, &[("Origin", APP)]);
        assert_eq!(ok.status, 200, "{path}: {ok:?}");
        assert_eq!(
            ok.header("access-control-allow-origin"),
            Some(APP),
            "{path}"
        );
        assert_eq!(ok.header("vary"), Some("Origin"), "{path}");
        let evil = request(addr, "GET", path, &[("Origin", EVIL)]);
        assert_eq!(evil.status, 200, "{path}");
        assert!(cors_headers(&evil).is_empty(), "{path}: {evil:?}");
        assert_eq!(evil.header("vary"), Some("Origin"), "{path}");
    }
    // A 404 for an unknown room is readable by the app too.
    let missing = request(addr, "GET", "/webrtc/rooms/nope/peers", &[("Origin", APP)]);
    missing.assert_error(404, "room_not_found");
    assert_eq!(missing.header("access-control-allow-origin"), Some(APP));
    // The page, the module and the metrics are not CORS endpoints.
    for path in ["/webrtc/client", "/webrtc/client/signaling.mjs", "/metrics"] {
        let r = request(addr, "GET", path, &[("Origin", APP)]);
        assert_eq!(r.status, 200, "{path}");
        assert!(cors_headers(&r).is_empty(), "{path}: {r:?}");
    }
}

#[test]
fn preflights_get_204_and_the_allowed_methods() {
    let server = start_with(|c| c.access.allowed_origins.add(APP).unwrap());
    let addr = server.local_addr();
    let pre = request(
        addr,
        "OPTIONS",
        "/webrtc/ice-servers",
        &[
            ("Origin", APP),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "authorization"),
        ],
    );
    assert_eq!(pre.status, 204, "{pre:?}");
    assert!(pre.body.is_empty());
    assert_eq!(pre.header("allow"), Some("GET, HEAD, OPTIONS"));
    assert_eq!(pre.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        pre.header("access-control-allow-methods"),
        Some("GET, HEAD, OPTIONS")
    );
    assert!(pre
        .header("access-control-allow-headers")
        .is_some_and(|h| h.to_ascii_lowercase().contains("authorization")));
    assert!(pre.header("access-control-max-age").is_some());
    let admin = request(
        addr,
        "OPTIONS",
        "/webrtc/rooms/r/peers/p",
        &[("Origin", APP), ("Access-Control-Request-Method", "DELETE")],
    );
    assert_eq!(admin.status, 204);
    assert_eq!(
        admin.header("access-control-allow-methods"),
        Some("GET, HEAD, DELETE, OPTIONS")
    );
    // Another origin: the preflight is answered, without any CORS header.
    let evil = request(
        addr,
        "OPTIONS",
        "/webrtc/ice-servers",
        &[("Origin", EVIL), ("Access-Control-Request-Method", "GET")],
    );
    assert_eq!(evil.status, 204);
    assert!(cors_headers(&evil).is_empty(), "{evil:?}");
    assert_eq!(
        request(addr, "OPTIONS", "/nope", &[("Origin", APP)]).status,
        404
    );
}

#[test]
fn without_an_allow_list_there_are_no_cors_headers() {
    let server = start_with(|_| {});
    let addr = server.local_addr();
    let r = request(addr, "GET", "/webrtc/ice-servers", &[("Origin", APP)]);
    assert_eq!(r.status, 200);
    assert!(cors_headers(&r).is_empty(), "{r:?}");
    assert_eq!(r.header("vary"), None);
    let pre = request(addr, "OPTIONS", "/webrtc/ice-servers", &[("Origin", APP)]);
    assert_eq!(pre.status, 204, "OPTIONS is no longer 405");
    assert!(cors_headers(&pre).is_empty());
}

#[test]
fn an_app_reads_its_turn_credentials_with_a_bearer_token() {
    let server = start_with(|c| {
        c.access.allowed_origins.add(APP).unwrap();
        c.access.auth_secret = Some(Secret::new(APP_SECRET));
        c.ice.servers.push("turn:turn.example.org:3478".into());
        c.ice.turn_secret = Some(Secret::new("turn"));
    });
    let addr = server.local_addr();
    let token = access::mint(
        APP_SECRET.as_bytes(),
        &Claims {
            room: Some("r".into()),
            peer: Some("p".into()),
            exp: access::now_secs() + 60,
            ..Claims::default()
        },
    )
    .unwrap();
    let denied = request(addr, "GET", "/webrtc/ice-servers", &[("Origin", APP)]);
    denied.assert_error(401, "unauthorized");
    assert_eq!(denied.header("access-control-allow-origin"), Some(APP));
    let bearer = format!("Bearer {token}");
    let ok = request(
        addr,
        "GET",
        "/webrtc/ice-servers?peer=p",
        &[("Origin", APP), ("Authorization", &bearer)],
    );
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.header("access-control-allow-origin"), Some(APP));
    assert!(ok.json()["iceServers"][0]["credential"].is_string());
}

#[test]
fn the_ops_listener_takes_metrics_and_the_admin_api_off_the_public_port() {
    let server = start_with(|c| {
        c.ops_bind = Some("127.0.0.1:0".parse().unwrap());
        c.access.admin = true;
    });
    let public = server.local_addr();
    let ops = server.ops_addr().expect("an ops listener");
    assert_ne!(public, ops);
    let (_a, _) = common::Client::join(public, "room1", "a");
    for path in [
        "/metrics",
        "/webrtc/rooms/room1",
        "/webrtc/rooms/room1/peers/a",
    ] {
        common::get(public, path).assert_error(404, "not_found");
        assert_eq!(common::get(ops, path).status, 200, "{path} on ops");
    }
    common::http(public, "DELETE", "/webrtc/rooms/room1/peers/a").assert_error(404, "not_found");
    for path in ["/healthz", "/webrtc/rooms", "/webrtc/rooms/room1/peers"] {
        assert_eq!(common::get(public, path).status, 200, "{path} on public");
        assert_eq!(common::get(ops, path).status, 200, "{path} on ops");
    }
    for path in [
        "/webrtc/client",
        "/webrtc/ice-servers",
        "/webrtc/client/signaling.js",
    ] {
        common::get(ops, path).assert_error(404, "not_found");
    }
    let kicked = common::http(ops, "DELETE", "/webrtc/rooms/room1/peers/a");
    assert_eq!(kicked.status, 200, "{kicked:?}");
}

#[test]
fn the_client_is_served_as_a_package() {
    let server = start_with(|_| {});
    let addr = server.local_addr();
    let classic = common::get(addr, "/webrtc/client/signaling.js");
    let module = common::get(addr, "/webrtc/client/signaling.mjs");
    assert_eq!(module.status, 200);
    assert!(module.content_type().starts_with("text/javascript"));
    let (classic, module) = (
        String::from_utf8(classic.body).unwrap(),
        String::from_utf8(module.body).unwrap(),
    );
    // One source: the module is the classic script with an export line around it.
    assert!(
        module.contains(&classic),
        "the module embeds signaling.js as it is"
    );
    assert!(module.contains("export const { WebRTCSignalingClient, WebRTCPeerMesh }"));
    let dts = common::get(addr, "/webrtc/client/signaling.d.ts");
    assert_eq!(dts.status, 200);
    let dts = String::from_utf8(dts.body).unwrap();
    assert!(dts.contains("export class WebRTCSignalingClient"));
    assert!(dts.contains("export class WebRTCPeerMesh"));
    let pkg = common::get(addr, "/webrtc/client/package.json").json();
    assert_eq!(
        pkg["version"],
        env!("CARGO_PKG_VERSION"),
        "package.json follows Cargo.toml"
    );
    assert_eq!(pkg["exports"]["."]["import"], "./signaling.mjs");
    assert_eq!(pkg["exports"]["."]["types"], "./signaling.d.ts");
}

#[test]
fn metrics_name_the_build_and_the_limits() {
    let server = start_with(|c| {
        c.limits.max_connections = 77;
        c.limits.max_room_peers = 5;
    });
    let text = String::from_utf8(common::get(server.local_addr(), "/metrics").body).unwrap();
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .to_owned()
    };
    let build = line("webrtc_signaling_build_info{");
    assert!(
        build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && build.ends_with(" 1"),
        "{build}"
    );
    assert_eq!(
        line("webrtc_signaling_sessions_limit "),
        "webrtc_signaling_sessions_limit 77"
    );
    assert_eq!(
        line("webrtc_signaling_room_peers_limit "),
        "webrtc_signaling_room_peers_limit 5"
    );
}
