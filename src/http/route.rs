//! Which endpoint a request is for (PROTOCOL.md §1), from its method and path alone.
//! Pure: access checks and answers are the handlers' (`super::rest`).

/// An endpoint, with the path segments it takes (as sent, not yet validated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    Signaling {
        room: &'a str,
        peer: &'a str,
    },
    Root,
    Healthz,
    Client,
    ClientJs,
    /// `signaling.mjs`, `signaling.d.ts`, `package.json`: the client as a package.
    ClientModule,
    ClientTypes,
    ClientPackage,
    IceServers,
    Metrics,
    Rooms,
    Room(&'a str),
    RoomPeers(&'a str),
    Peer(&'a str, &'a str),
    KickRoom(&'a str),
    KickPeer(&'a str, &'a str),
    /// A known path, another method: 405 with this `Allow`.
    MethodNotAllowed(&'static str),
    NotFound,
}

const GET_HEAD: &str = "GET, HEAD";
const GET_HEAD_DELETE: &str = "GET, HEAD, DELETE";

/// Decides the endpoint of `method` on `path` (the target without its query).
pub fn route<'a>(method: &str, path: &'a str) -> Route<'a> {
    let read = matches!(method, "GET" | "HEAD");
    let delete = method == "DELETE";
    if let Some(rest) = path.strip_prefix("/webrtc/signaling/") {
        let mut parts = rest.split('/');
        return match (parts.next(), parts.next(), parts.next()) {
            (Some(room), Some(peer), None) if method == "GET" => Route::Signaling { room, peer },
            (Some(_), Some(_), None) => Route::MethodNotAllowed("GET"),
            _ => Route::NotFound,
        };
    }
    let fixed = match path {
        "/" => Some(Route::Root),
        "/healthz" => Some(Route::Healthz),
        "/webrtc/client" => Some(Route::Client),
        "/webrtc/client/signaling.js" => Some(Route::ClientJs),
        "/webrtc/client/signaling.mjs" => Some(Route::ClientModule),
        "/webrtc/client/signaling.d.ts" => Some(Route::ClientTypes),
        "/webrtc/client/package.json" => Some(Route::ClientPackage),
        "/webrtc/ice-servers" => Some(Route::IceServers),
        "/metrics" => Some(Route::Metrics),
        "/webrtc/rooms" => Some(Route::Rooms),
        _ => None,
    };
    if let Some(r) = fixed {
        return if read {
            r
        } else {
            Route::MethodNotAllowed(GET_HEAD)
        };
    }
    let Some(rest) = path.strip_prefix("/webrtc/rooms/") else {
        return Route::NotFound;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match parts[..] {
        [""] => Route::NotFound,
        [room] if read => Route::Room(room),
        [room] if delete => Route::KickRoom(room),
        [_] => Route::MethodNotAllowed(GET_HEAD_DELETE),
        [room, "peers"] if read => Route::RoomPeers(room),
        [_, "peers"] => Route::MethodNotAllowed(GET_HEAD),
        [room, "peers", peer] if read => Route::Peer(room, peer),
        [room, "peers", peer] if delete => Route::KickPeer(room, peer),
        [_, "peers", _] => Route::MethodNotAllowed(GET_HEAD_DELETE),
        _ => Route::NotFound,
    }
}

/// Whether the route reads or changes room state (and so needs an admin token when
/// auth is on).
pub fn is_room_listing(r: &Route<'_>) -> bool {
    matches!(
        r,
        Route::Rooms
            | Route::Room(_)
            | Route::RoomPeers(_)
            | Route::Peer(..)
            | Route::KickRoom(_)
            | Route::KickPeer(..)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_of_section_1() {
        assert_eq!(
            route("GET", "/webrtc/signaling/r/p"),
            Route::Signaling {
                room: "r",
                peer: "p"
            }
        );
        assert_eq!(
            route("POST", "/webrtc/signaling/r/p"),
            Route::MethodNotAllowed("GET")
        );
        assert_eq!(route("GET", "/webrtc/signaling/r/p/x"), Route::NotFound);
        assert_eq!(route("GET", "/webrtc/signaling/r"), Route::NotFound);
        assert_eq!(route("HEAD", "/"), Route::Root);
        assert_eq!(route("GET", "/healthz"), Route::Healthz);
        assert_eq!(route("PUT", "/metrics"), Route::MethodNotAllowed(GET_HEAD));
        assert_eq!(route("GET", "/webrtc/rooms"), Route::Rooms);
        assert_eq!(route("GET", "/webrtc/rooms/r"), Route::Room("r"));
        assert_eq!(route("DELETE", "/webrtc/rooms/r"), Route::KickRoom("r"));
        assert_eq!(
            route("POST", "/webrtc/rooms/r"),
            Route::MethodNotAllowed(GET_HEAD_DELETE)
        );
        assert_eq!(route("GET", "/webrtc/rooms/r/peers"), Route::RoomPeers("r"));
        assert_eq!(
            route("DELETE", "/webrtc/rooms/r/peers"),
            Route::MethodNotAllowed(GET_HEAD)
        );
        assert_eq!(
            route("GET", "/webrtc/rooms/r/peers/p"),
            Route::Peer("r", "p")
        );
        assert_eq!(
            route("DELETE", "/webrtc/rooms/r/peers/p"),
            Route::KickPeer("r", "p")
        );
        assert_eq!(route("GET", "/webrtc/rooms/"), Route::NotFound);
        assert_eq!(route("GET", "/webrtc/rooms/r/x"), Route::NotFound);
        assert_eq!(route("GET", "/nope"), Route::NotFound);
        assert!(is_room_listing(&Route::Peer("r", "p")));
        assert!(!is_room_listing(&Route::Healthz));
    }
}
