//! The REST endpoints (PROTOCOL.md §6): room and peer listings and the admin
//! `DELETE`s, answered from the router's consistent snapshot, and the ICE server
//! list with per-request TURN credentials.

use std::net::SocketAddr;
use std::time::Duration;

use log::{debug, info};

use super::head::Head;
use super::response::{busy, Resp, JSON};
use super::Backend;
use crate::access::{self, AuthError};
use crate::core::router::{Command, Reply, RoomSummary};
use crate::ice;
use crate::protocol::{PeerId, RoomId};
use crate::query;

/// With auth on, the room listings and admin actions need `Authorization: Bearer` with
/// an admin token: 401 without a valid token, 403 with a valid one that is not admin.
pub fn admin_token(head: &Head, ctx: &dyn Backend, remote: SocketAddr) -> Result<(), Resp> {
    let access = ctx.access();
    let Some(verifier) = &access.verifier else {
        return Ok(());
    };
    let token = access::bearer(head.header("authorization"));
    verifier.check_admin(token).map_err(|e| {
        debug!(
            "{remote} {} {}: {e}",
            head.method,
            crate::logsafe::escape(&query::redact(&head.target))
        );
        auth_failure(e)
    })
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

/// `GET /webrtc/ice-servers`: with auth on it needs a valid token of any kind, as a
/// bearer header or as `?token=` (what the built-in client sends). The body built at
/// start, or with a TURN secret, that body with credentials minted for this request.
/// With auth on, the credentials follow the token: their user is the token's peer
/// (a random one for a token without a valid peer) and they expire no later than
/// the token; without auth, the user is `?peer=` if valid.
pub fn ice_servers(head: &Head, ctx: &dyn Backend, query: Option<&str>) -> Resp {
    let now = access::now_secs();
    let mut ttl = ctx.ice().turn_ttl;
    let mut user = None;
    let access = ctx.access();
    if let Some(verifier) = &access.verifier {
        let from_query = query::param(query, "token");
        let token = access::bearer(head.header("authorization")).or(from_query.as_deref());
        let claims = match token {
            None => Err(AuthError::Missing),
            Some(t) => verifier.verify(t),
        };
        match claims {
            Ok(claims) => {
                ttl = ttl.min(Duration::from_secs(claims.exp.saturating_sub(now)));
                user = Some(
                    claims
                        .peer
                        .and_then(|p| PeerId::parse(&p).ok())
                        .map_or_else(ice::random_user, |p| p.as_str().to_owned()),
                );
            }
            Err(e) => return auth_failure(e),
        }
    }
    let ice = ctx.ice();
    let Some(secret) = &ice.turn_secret else {
        return Resp::new(200, JSON, ice.static_json.as_bytes().to_vec());
    };
    let user = user
        .or_else(|| ice::user_from_query(query))
        .unwrap_or_else(ice::random_user);
    let body = ice::with_turn_credentials(&ice.static_json, secret, ttl, now, &user);
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

/// `{"room_id":..,"peers":[..]}`.
#[derive(serde::Serialize)]
struct PeersBody<'a> {
    room_id: &'a RoomId,
    peers: &'a [PeerId],
}

/// `GET /webrtc/rooms`: `{"rooms":[..]}`, sorted by room id.
pub fn rooms(ctx: &dyn Backend) -> Resp {
    match ctx.ask(Command::ListRooms) {
        Some(Reply::Rooms(rooms)) => Resp::json(200, &serde_json::json!({ "rooms": rooms })),
        _ => busy(),
    }
}

/// The peers of `room` in join order, or the response that says why not.
fn room_peers(ctx: &dyn Backend, room: &str) -> Result<(RoomId, Vec<PeerId>), Resp> {
    let room = parse_room(room)?;
    match ctx.ask(Command::ListPeers { room: room.clone() }) {
        Some(Reply::Peers(Some(peers))) => Ok((room, peers)),
        Some(Reply::Peers(None)) => Err(room_not_found(&room)),
        _ => Err(busy()),
    }
}

/// `GET /webrtc/rooms/{room}`: `{"room_id":..,"peer_count":..}`.
pub fn room_summary(ctx: &dyn Backend, room: &str) -> Resp {
    match room_peers(ctx, room) {
        Ok((room_id, peers)) => Resp::json(
            200,
            &RoomSummary {
                room_id,
                peer_count: peers.len(),
            },
        ),
        Err(resp) => resp,
    }
}

/// `GET /webrtc/rooms/{room}/peers`: `{"room_id":..,"peers":[..]}` in join order.
pub fn peers(ctx: &dyn Backend, room: &str) -> Resp {
    match room_peers(ctx, room) {
        Ok((room_id, peers)) => Resp::json(
            200,
            &PeersBody {
                room_id: &room_id,
                peers: &peers,
            },
        ),
        Err(resp) => resp,
    }
}

/// `GET /webrtc/rooms/{room}/peers/{peer}` while the peer is connected.
pub fn peer_summary(ctx: &dyn Backend, room: &str, peer: &str) -> Resp {
    let (room_id, peer) = match (parse_room(room), parse_peer(peer)) {
        (Ok(r), Ok(p)) => (r, p),
        (Err(resp), _) | (_, Err(resp)) => return resp,
    };
    match room_peers(ctx, room) {
        Ok((_, peers)) if peers.contains(&peer) => Resp::json(
            200,
            &PeerBody {
                room_id: &room_id,
                peer_id: &peer,
            },
        ),
        Ok(_) => peer_not_found(&room_id, &peer),
        Err(resp) => resp,
    }
}

/// `DELETE /webrtc/rooms/{room}[/peers/{peer}]` (with `--admin`): ends the sessions
/// with `kicked` (4403) and answers `{"room_id":..,"kicked":[..]}`.
pub fn kick(ctx: &dyn Backend, remote: SocketAddr, room: &str, peer: Option<&str>) -> Resp {
    if !ctx.access().admin {
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
    match ctx.ask(cmd) {
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
