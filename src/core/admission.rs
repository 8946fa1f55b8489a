//! Who may open a signaling session (PROTOCOL.md §2, §5): identifiers, then the
//! Origin allow-list, then the room token. Pure, and the same for plain and TLS
//! connections; size limits are the router's (they need the rooms).

use crate::access::Access;
use crate::protocol::{CloseReason, PeerId, RoomId};
use crate::query;

/// What the upgrade request says about the session it wants.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The `{room_id}` and `{peer_id}` path segments, as sent.
    pub room: &'a str,
    pub peer: &'a str,
    pub query: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub host: Option<&'a str>,
}

/// An admitted session's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub room: RoomId,
    pub peer: PeerId,
    /// The `?resume=` token (PROTOCOL.md §8), checked by the router.
    pub resume: Option<String>,
}

/// A refusal: the close reason, and a line for the log (never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: CloseReason,
    pub detail: String,
}

fn refuse(reason: CloseReason, detail: String) -> Refusal {
    Refusal { reason, detail }
}

/// Decides whether `req` may open a session under `access`.
pub fn admit(req: &Request<'_>, access: &Access) -> Result<Admitted, Refusal> {
    let room = RoomId::parse(req.room)
        .map_err(|e| refuse(CloseReason::InvalidRoomId, format!("room_id {e}")))?;
    let peer = PeerId::parse(req.peer)
        .map_err(|e| refuse(CloseReason::InvalidPeerId, format!("peer_id {e}")))?;
    if !access.origins.allows(req.origin, req.host) {
        return Err(refuse(
            CloseReason::OriginNotAllowed,
            format!("origin {:?} is not allowed", req.origin.unwrap_or("")),
        ));
    }
    if let Some(verifier) = &access.verifier {
        let token = query::param(req.query, "token");
        if let Err(e) = verifier.check_peer(token.as_deref(), room.as_str(), peer.as_str()) {
            return Err(refuse(
                CloseReason::Unauthorized,
                format!("unauthorized ({e})"),
            ));
        }
    }
    let resume = query::param(req.query, "resume").filter(|t| !t.is_empty());
    Ok(Admitted { room, peer, resume })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{mint, now_secs, Claims, Origins, Verifier};

    fn req<'a>(room: &'a str, peer: &'a str) -> Request<'a> {
        Request {
            room,
            peer,
            query: None,
            origin: None,
            host: Some("server:8000"),
        }
    }

    fn open() -> Access {
        Access {
            verifier: None,
            origins: Origins::default(),
            admin: false,
        }
    }

    #[test]
    fn identifiers_are_checked_room_first() {
        let a = open();
        assert_eq!(
            admit(&req("r", "p"), &a),
            Ok(Admitted {
                room: RoomId::parse("r").unwrap(),
                peer: PeerId::parse("p").unwrap(),
                resume: None,
            })
        );
        assert_eq!(
            admit(&req("bad room", "bad peer"), &a).unwrap_err().reason,
            CloseReason::InvalidRoomId
        );
        assert_eq!(
            admit(&req("r", &"p".repeat(65)), &a).unwrap_err().reason,
            CloseReason::InvalidPeerId
        );
    }

    #[test]
    fn origin_comes_before_the_token_and_the_token_never_reaches_the_log() {
        let mut a = open();
        a.origins.add("https://app.example").unwrap();
        a.verifier = Some(Verifier::new(Some(&[b'k'; 32]), None, 0).unwrap());
        let mut r = req("r", "p");
        r.origin = Some("https://evil.example");
        assert_eq!(
            admit(&r, &a).unwrap_err().reason,
            CloseReason::OriginNotAllowed
        );
        r.origin = Some("https://app.example");
        r.query = Some("token=not-a-jwt-secret");
        let refusal = admit(&r, &a).unwrap_err();
        assert_eq!(refusal.reason, CloseReason::Unauthorized);
        assert!(!refusal.detail.contains("not-a-jwt-secret"));
        let claims = Claims {
            room: Some("r".into()),
            peer: Some("p".into()),
            admin: false,
            exp: now_secs() + 60,
            ..Claims::default()
        };
        let token = mint(&[b'k'; 32], &claims).unwrap();
        let q = format!("token={token}");
        r.query = Some(&q);
        assert!(admit(&r, &a).is_ok());
        let other = req("r", "someone-else");
        let other = Request {
            query: Some(&q),
            ..other
        };
        assert_eq!(
            admit(&other, &a).unwrap_err().reason,
            CloseReason::Unauthorized
        );
    }
}
