//! The vocabulary between the router and the Redis bridge (PROTOCOL.md §9), and how
//! an event is written as the fields of a Redis stream entry and read back. Pure.
//!
//! Every instance has an inbox stream. Membership changes are written into every
//! live inbox by the Redis scripts that make them, so all instances see them in one
//! order (the cluster's join order); relays, kept messages and kicks are written into
//! the inbox of the instance that holds the target, by one connection, in the order
//! the router decided them. One reader per inbox keeps that order up to the router.

use std::sync::Arc;

use super::router::{SessionId, Text};
use crate::protocol::{CloseReason, PeerId, RoomId};

/// Names one running instance (random, made at start).
pub type InstanceId = Arc<str>;

/// One member of the cluster: where it is and its place in the join order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub room: RoomId,
    pub peer: PeerId,
    pub seq: u64,
    pub instance: InstanceId,
}

/// What the bridge tells the router.
#[derive(Debug)]
pub enum ClusterEvent {
    /// Connected to Redis: the router answers with [`ClusterOut::Reannounce`].
    Connected,
    /// Registered, members re-announced: full service, with the whole cluster's
    /// membership as Redis holds it now.
    Up {
        snapshot: Vec<Presence>,
        alive: Vec<InstanceId>,
    },
    /// Redis is unreachable.
    Down,
    /// A claim for a local session's join was refused or failed.
    ClaimFailed {
        session: SessionId,
        reason: CloseReason,
    },
    /// A relay from a local session could not be handed to Redis.
    RelayFailed { session: SessionId, target: PeerId },
    /// From the inbox: a member joined (`session` is set on the instance whose
    /// session claimed it).
    Joined {
        presence: Presence,
        session: Option<SessionId>,
    },
    Left {
        room: RoomId,
        peer: PeerId,
        seq: u64,
    },
    /// A resume moved a member from one instance to another (or within one).
    Moved {
        presence: Presence,
        from: InstanceId,
        session: SessionId,
    },
    /// A relay for a local member from a member on another instance.
    Relay {
        room: RoomId,
        from: PeerId,
        from_seq: u64,
        target: PeerId,
        text: String,
    },
    /// A relay kept for a member that resumed here, from the instance that held it;
    /// `text: None` ends them.
    Kept {
        room: RoomId,
        peer: PeerId,
        text: Option<String>,
    },
    /// An operator on another instance removed a local member (or room).
    Kick { room: RoomId, peer: Option<PeerId> },
    /// The instances alive now.
    Instances { alive: Vec<InstanceId> },
}

/// Dropped once a leave is settled in Redis: the session that left waits for it
/// before it confirms its close, so that once the client knows the session is over,
/// its id is free on every instance (a reconnection elsewhere is not refused).
#[derive(Debug)]
pub struct Ack(pub crossbeam_channel::Sender<()>);

impl PartialEq for Ack {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Ack {}

/// What the router asks of the bridge.
#[derive(Debug, PartialEq, Eq)]
pub enum ClusterOut {
    /// Take `peer`'s id in `room` cluster-wide for `session` (or, with the hash of its
    /// resume token, take the member over).
    Claim {
        session: SessionId,
        room: RoomId,
        peer: PeerId,
        token_hash: Option<String>,
        resume_hash: Option<String>,
    },
    /// A local member left: drop its claim (only if it is still this instance's).
    Leave {
        room: RoomId,
        peer: PeerId,
        seq: u64,
        ack: Option<Ack>,
    },
    Relay {
        instance: InstanceId,
        /// The local sender, told if the relay cannot be written.
        session: SessionId,
        room: RoomId,
        from: PeerId,
        from_seq: u64,
        target: PeerId,
        text: Text,
    },
    /// Relays kept here for a member that resumed on `instance`, oldest first.
    Kept {
        instance: InstanceId,
        room: RoomId,
        peer: PeerId,
        texts: Vec<Text>,
    },
    Kick {
        instance: InstanceId,
        room: RoomId,
        peer: Option<PeerId>,
    },
    /// The local members (and their resume token hashes), after a reconnection.
    Reannounce {
        members: Vec<(Presence, Option<String>)>,
    },
}

/// A resume token as Redis keeps it: the hex SHA-1 of the token (the token is 128
/// random bits, so a hash is as unguessable, and Redis never holds a usable token).
pub fn token_hash(token: &str) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The fields of an inbox entry written by Rust (the scripts write the others).
pub fn relay_fields(
    room: &RoomId,
    from: &PeerId,
    from_seq: u64,
    target: &PeerId,
    text: &str,
) -> [(&'static str, String); 6] {
    [
        ("t", "r".into()),
        ("r", room.to_string()),
        ("p", from.to_string()),
        ("s", from_seq.to_string()),
        ("g", target.to_string()),
        ("m", text.to_owned()),
    ]
}

pub fn kept_fields(
    room: &RoomId,
    peer: &PeerId,
    text: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("t", if text.is_some() { "k" } else { "K" }.to_owned()),
        ("r", room.to_string()),
        ("p", peer.to_string()),
    ];
    if let Some(text) = text {
        f.push(("m", text.to_owned()));
    }
    f
}

pub fn kick_fields(room: &RoomId, peer: Option<&PeerId>) -> Vec<(&'static str, String)> {
    let mut f = vec![("t", "x".to_owned()), ("r", room.to_string())];
    if let Some(p) = peer {
        f.push(("p", p.to_string()));
    }
    f
}

/// Reads one inbox entry (`fields` as name/value pairs). `None`: not one of ours,
/// or malformed (an entry is never trusted further than its syntax).
pub fn decode(fields: &[(String, String)]) -> Option<ClusterEvent> {
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let room = || get("r").and_then(|r| RoomId::parse(r).ok());
    let peer = |k: &str| get(k).and_then(|p| PeerId::parse(p).ok());
    let num = |k: &str| get(k).and_then(|s| s.parse::<u64>().ok());
    let inst = |k: &str| get(k).filter(|i| !i.is_empty()).map(InstanceId::from);
    Some(match get("t")? {
        "j" => ClusterEvent::Joined {
            presence: Presence {
                room: room()?,
                peer: peer("p")?,
                seq: num("s")?,
                instance: inst("i")?,
            },
            session: num("x").filter(|&s| s != 0),
        },
        "l" => ClusterEvent::Left {
            room: room()?,
            peer: peer("p")?,
            seq: num("s")?,
        },
        "m" => ClusterEvent::Moved {
            presence: Presence {
                room: room()?,
                peer: peer("p")?,
                seq: num("s")?,
                instance: inst("o")?,
            },
            from: inst("f")?,
            session: num("x")?,
        },
        "r" => ClusterEvent::Relay {
            room: room()?,
            from: peer("p")?,
            from_seq: num("s")?,
            target: peer("g")?,
            text: get("m")?.to_owned(),
        },
        "k" => ClusterEvent::Kept {
            room: room()?,
            peer: peer("p")?,
            text: Some(get("m")?.to_owned()),
        },
        "K" => ClusterEvent::Kept {
            room: room()?,
            peer: peer("p")?,
            text: None,
        },
        "x" => ClusterEvent::Kick {
            room: room()?,
            peer: match get("p") {
                Some(p) => Some(PeerId::parse(p).ok()?),
                None => None,
            },
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(f: &[(&str, String)]) -> Vec<(String, String)> {
        f.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn what_rust_writes_reads_back() {
        let room = RoomId::parse("r").unwrap();
        let (a, b) = (PeerId::parse("a").unwrap(), PeerId::parse("b").unwrap());
        let ev = decode(&owned(&relay_fields(&room, &a, 7, &b, "{\"x\":1}"))).unwrap();
        assert!(
            matches!(ev, ClusterEvent::Relay { from_seq: 7, ref text, .. } if text == "{\"x\":1}")
        );
        let ev = decode(&owned(&kept_fields(&room, &b, None))).unwrap();
        assert!(matches!(ev, ClusterEvent::Kept { text: None, .. }));
        let ev = decode(&owned(&kick_fields(&room, Some(&a)))).unwrap();
        assert!(matches!(ev, ClusterEvent::Kick { peer: Some(_), .. }));
    }

    #[test]
    fn what_the_scripts_write_reads_back_and_garbage_does_not() {
        let f = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let ev = decode(&f(&[
            ("t", "j"),
            ("r", "room"),
            ("p", "a"),
            ("s", "3"),
            ("i", "I1"),
            ("x", "9"),
        ]));
        assert!(matches!(
            ev,
            Some(ClusterEvent::Joined {
                session: Some(9),
                ..
            })
        ));
        let ev = decode(&f(&[
            ("t", "j"),
            ("r", "room"),
            ("p", "a"),
            ("s", "3"),
            ("i", "I1"),
            ("x", "0"),
        ]));
        assert!(matches!(
            ev,
            Some(ClusterEvent::Joined { session: None, .. })
        ));
        assert!(decode(&f(&[
            ("t", "j"),
            ("r", "bad room"),
            ("p", "a"),
            ("s", "3"),
            ("i", "I")
        ]))
        .is_none());
        assert!(decode(&f(&[("t", "l"), ("r", "room"), ("p", "a")])).is_none());
        assert!(decode(&f(&[("t", "?")])).is_none());
        assert!(decode(&[]).is_none());
    }

    #[test]
    fn token_hashes_are_hex_sha1() {
        // printf %s abc | sha1sum
        assert_eq!(
            token_hash("abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}
