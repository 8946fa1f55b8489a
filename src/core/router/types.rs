//! The router's vocabulary: the commands it takes, its replies and outputs, its
//! limits, and the ready-to-send text it moves. Pure data.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use crate::core::cluster::{Ack, ClusterEvent, ClusterOut};
use crate::protocol::{CloseReason, PeerId, RelayKind, RoomId};

/// A text frame ready for the socket (clones share one buffer). A relayed message also
/// carries the moment the sender's session read it, for the relay latency histogram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Text {
    frame: tungstenite::Utf8Bytes,
    read_at: Option<Instant>,
    from: Option<SessionId>,
}

impl Text {
    /// A relayed message from session `from`, read from its socket at `read_at`.
    pub fn relayed(
        frame: impl Into<tungstenite::Utf8Bytes>,
        read_at: Instant,
        from: SessionId,
    ) -> Self {
        Text {
            frame: frame.into(),
            read_at: Some(read_at),
            from: Some(from),
        }
    }

    /// The session that sent a relayed message (`None`: the server's own message).
    pub fn sender(&self) -> Option<SessionId> {
        self.from
    }

    pub fn as_str(&self) -> &str {
        self.frame.as_str()
    }

    /// When the sender's session read it (relayed messages only).
    pub fn read_at(&self) -> Option<Instant> {
        self.read_at
    }

    pub fn into_frame(self) -> tungstenite::Utf8Bytes {
        self.frame
    }
}

/// A message of the server's own (`existing_peers`, `peer_joined`, an error...).
impl From<String> for Text {
    fn from(s: String) -> Self {
        Text {
            frame: s.into(),
            read_at: None,
            from: None,
        }
    }
}

/// Names one session; never reused, so a late command of an ended session cannot
/// touch a new session of the same peer id.
pub type SessionId = u64;

/// What a session or an HTTP handler asks of the router.
#[derive(Debug)]
pub enum Command {
    /// Admit `peer` into `room` (limits, unique id), announce it both ways; or, with
    /// the held peer's `resume` token, take it over (PROTOCOL.md §8).
    Join {
        room: RoomId,
        peer: PeerId,
        session: SessionId,
        /// The `?resume=` token the client sent, if any.
        resume: Option<String>,
        /// A fresh unguessable token for this session's `existing_peers` (made by the
        /// caller: the router has no source of randomness).
        token: Option<String>,
    },
    /// The session has ended for `reason`: for a network reason its peer is held for
    /// the resume grace, with `unsent` (what its queue still held) kept for it;
    /// otherwise the room hears `peer_left` once.
    Leave {
        session: SessionId,
        reason: CloseReason,
        unsent: Vec<Text>,
        /// Dropped when the leave is settled (at once on a single instance).
        ack: Option<Ack>,
    },
    /// A validated message from `session` for `target` in its room.
    Relay {
        session: SessionId,
        kind: RelayKind,
        target: PeerId,
        text: Text,
    },
    /// The session took `taken` messages off its queue since its last report.
    Drained {
        session: SessionId,
        taken: usize,
    },
    /// The session's socket refuses data and it takes nothing off its queue (or, with
    /// `false`, it writes again).
    Stalled {
        session: SessionId,
        stalled: bool,
    },
    ListRooms,
    ListPeers {
        room: RoomId,
    },
    /// Operator action: end `peer`'s session, or with `None` every session of the
    /// room, with `kicked` (4403).
    Kick {
        room: RoomId,
        peer: Option<PeerId>,
    },
    /// Close every session with `going_away` and refuse new ones.
    Shutdown,
    /// From the Redis bridge (PROTOCOL.md §9).
    Cluster(ClusterEvent),
}

/// One row of `GET /webrtc/rooms`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoomSummary {
    pub room_id: RoomId,
    pub peer_count: usize,
}

/// The router's immediate answer to a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Done,
    /// The answer comes later, as [`Output::Answer`] (a join that Redis must claim).
    Deferred,
    Joined,
    /// `Join` with a valid resume token: the held peer is this session's now.
    Resumed,
    Refused(CloseReason),
    Rooms(Vec<RoomSummary>),
    /// `None`: no such room.
    Peers(Option<Vec<PeerId>>),
    /// `Kick`: the peers whose sessions were ended, in join order.
    Kicked(Vec<PeerId>),
    /// `Kick`: the room has no peers.
    RoomNotFound,
    /// `Kick`: the room exists but the peer is not in it.
    PeerNotFound,
}

/// What the router wants done; its driver carries these out in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Push onto the session's queue (it has room: the router counted).
    Deliver {
        to: SessionId,
        text: Text,
    },
    /// Ask the session to report [`Command::Drained`] at its next chance.
    WantDrained {
        session: SessionId,
    },
    /// Stop reading the session's client until [`Output::Resume`].
    Pause {
        session: SessionId,
    },
    Resume {
        session: SessionId,
    },
    /// End the session with `reason`; the router has already forgotten it.
    Close {
        session: SessionId,
        reason: CloseReason,
    },
    /// The session left by itself and the router has forgotten it.
    Forget {
        session: SessionId,
    },
    /// The answer to a command that got [`Reply::Deferred`].
    Answer {
        session: SessionId,
        reply: Reply,
    },
    /// For the Redis bridge.
    Cluster(ClusterOut),
}

/// The limits the router enforces.
#[derive(Debug, Clone, Copy)]
pub struct RouterLimits {
    pub max_sessions: usize,
    pub max_room_peers: usize,
    /// Capacity of each session's queue.
    pub peer_queue: usize,
    /// Messages that may wait in the router for one session beyond its queue.
    pub max_backlog: usize,
    /// How long a peer whose session ended for a network reason is held (0: never).
    pub resume_grace: Duration,
}

/// Session ids are sequential: a multiplicative hash spreads them well enough, at a
/// fraction of SipHash's cost on the relay path.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub type IdMap<V> = HashMap<SessionId, V, BuildHasherDefault<IdHasher>>;
