//! The HTTP side of the server: request heads ([`head`]), the route decision
//! ([`route`]), responses ([`response`]) and the REST handlers ([`rest`]), the
//! built-in client page, and the decision to upgrade a request to a signaling
//! session. The connection thread (`crate::driver::conn`) does the reading and
//! writing; nothing here touches a socket.

pub mod cors;
pub mod framing;
pub mod head;
pub mod ops;
pub mod response;
mod rest;
pub mod route;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::access::Access;
use crate::core::admission::{self, Admitted, Refusal};
use crate::core::router::{Command, Reply};
use crate::ice::Ice;
use crate::metrics::Metrics;
use crate::query;
use head::Head;
pub use ops::Side;
use response::Resp;
use route::Route;

const CLIENT_HTML: &str = include_str!("../../static/client.html");
/// The classic script; the ES module is the same text with an `export` line after it
/// (static/signaling.js says how it behaves as either).
macro_rules! signaling_js {
    () => {
        include_str!("../../static/signaling.js")
    };
}
const SIGNALING_JS: &str = signaling_js!();
const SIGNALING_MJS: &str = concat!(
    "// ES module build of signaling.js (the same source, served with an export line).\n",
    "const module = { exports: {}, url: import.meta.url };\n",
    signaling_js!(),
    "\nexport const { WebRTCSignalingClient, WebRTCPeerMesh } = module.exports;\n",
    "export default module.exports;\n"
);
const SIGNALING_DTS: &str = include_str!("../../static/signaling.d.ts");
const PACKAGE_JSON: &str = include_str!("../../static/package.json");

/// Whether the server takes work (`/healthz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Ok,
    Stopping,
    /// The router thread died: the room state is gone.
    Failed,
    /// The cluster's Redis is unreachable (PROTOCOL.md §9).
    ClusterDown,
}

/// What the handlers need from the running server.
pub trait Backend {
    /// Asks the router; `None` if it does not answer in time.
    fn ask(&self, cmd: Command) -> Option<Reply>;
    /// The access rules in force now (a reload may replace them).
    fn access(&self) -> Arc<Access>;
    fn ice(&self) -> Arc<Ice>;
    fn metrics(&self) -> &Metrics;
    fn health(&self) -> Health;
}

/// What to do with a request.
pub enum Action {
    Respond(Resp),
    /// Answer 101, then run the session, or (with a refusal) send its `error` and
    /// close frame right after the upgrade (PROTOCOL.md §5: 4400, 4401, 4403).
    Upgrade {
        accept: String,
        admission: Result<Admitted, Refusal>,
    },
}

/// Decides the answer to one request that came in on `side`.
pub fn handle(head: &Head, ctx: &dyn Backend, remote: SocketAddr, side: Side) -> Action {
    let (path, query) = query::split_target(&head.target);
    let route = route::route(&head.method, path);
    let access = ctx.access();
    if head.method == "OPTIONS" {
        let get = route::route("GET", path);
        let allow = match route {
            Route::MethodNotAllowed(allow) if ops::serves(side, &get) => Some(allow),
            _ => None,
        };
        return Action::Respond(cors::options(head, allow, &get, &access));
    }
    if !ops::serves(side, &route) {
        return Action::Respond(response::not_found());
    }
    if let Route::Signaling { room, peer } = route {
        return upgrade(head, ctx, room, peer, query);
    }
    let resp = answer(head, ctx, remote, route, query);
    Action::Respond(cors::decorate(resp, &route, head, &access))
}

fn answer(
    head: &Head,
    ctx: &dyn Backend,
    remote: SocketAddr,
    route: Route<'_>,
    query: Option<&str>,
) -> Resp {
    if route::is_room_listing(&route) {
        if let Err(resp) = rest::admin_token(head, ctx, remote) {
            return resp;
        }
    }
    match route {
        Route::Root => Resp::new(302, "text/plain; charset=utf-8", "see /webrtc/client\n")
            .with("Location", "/webrtc/client"),
        Route::Healthz => match ctx.health() {
            Health::Ok => Resp::json(200, &serde_json::json!({"status": "ok"})),
            Health::Stopping => Resp::error(503, "shutting_down", "the server is shutting down"),
            Health::Failed => Resp::error(
                503,
                "router_failed",
                "the server lost its room state and must restart",
            ),
            Health::ClusterDown => Resp::error(
                503,
                "redis_unreachable",
                "the cluster's Redis is unreachable: new sessions are refused for now",
            ),
        },
        Route::Client => Resp::new(200, "text/html; charset=utf-8", CLIENT_HTML)
            .with("Cache-Control", "no-cache"),
        Route::ClientJs => Resp::new(200, "text/javascript; charset=utf-8", SIGNALING_JS)
            .with("Cache-Control", "no-cache"),
        Route::ClientModule => Resp::new(200, "text/javascript; charset=utf-8", SIGNALING_MJS)
            .with("Cache-Control", "no-cache"),
        Route::ClientTypes => {
            Resp::new(200, "application/typescript; charset=utf-8", SIGNALING_DTS)
                .with("Cache-Control", "no-cache")
        }
        Route::ClientPackage => {
            Resp::new(200, "application/json", PACKAGE_JSON).with("Cache-Control", "no-cache")
        }
        Route::IceServers => rest::ice_servers(head, ctx, query),
        Route::Metrics => Resp::new(200, crate::metrics::CONTENT_TYPE, ctx.metrics().encode())
            .with("Cache-Control", "no-store"),
        Route::Rooms => rest::rooms(ctx),
        Route::Room(room) => rest::room_summary(ctx, room),
        Route::RoomPeers(room) => rest::peers(ctx, room),
        Route::Peer(room, peer) => rest::peer_summary(ctx, room, peer),
        Route::KickRoom(room) => rest::kick(ctx, remote, room, None),
        Route::KickPeer(room, peer) => rest::kick(ctx, remote, room, Some(peer)),
        Route::MethodNotAllowed(allow) => response::method_not_allowed(allow),
        Route::NotFound | Route::Signaling { .. } => response::not_found(),
    }
}

fn upgrade(head: &Head, ctx: &dyn Backend, room: &str, peer: &str, query: Option<&str>) -> Action {
    if !head.is_websocket_upgrade() {
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
            accept: tungstenite::handshake::derive_accept_key(key.as_bytes()),
            admission: admission::admit(
                &admission::Request {
                    room,
                    peer,
                    query,
                    origin: head.header("origin"),
                    host: head.header("host"),
                },
                &ctx.access(),
            ),
        },
        _ => Action::Respond(Resp::error(
            400,
            "bad_request",
            "Sec-WebSocket-Key is missing",
        )),
    }
}
