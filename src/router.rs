//! The room state machine: who is in which room, and who receives what. No I/O.
//!
//! One router thread owns a [`Router`] and feeds it [`Command`]s from a channel;
//! deliveries leave through each peer's [`Mailbox`], which never blocks. Because
//! every join, leave and relay passes through this one sequential state machine,
//! the ordering guarantees of PROTOCOL.md §3 hold by construction.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use log::{debug, info};

use crate::metrics::Metrics;
use crate::protocol::{outbound, CloseReason, ErrorCode, PeerId, RelayKind, RoomId};

/// A text frame ready for the socket (clones share one buffer). A relayed message also
/// carries the moment the sender's session read it, for the relay latency histogram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Text {
    frame: tungstenite::Utf8Bytes,
    read_at: Option<Instant>,
}

impl Text {
    /// A relayed message, read from the sender's socket at `read_at`.
    pub fn relayed(frame: impl Into<tungstenite::Utf8Bytes>, read_at: Instant) -> Self {
        Text {
            frame: frame.into(),
            read_at: Some(read_at),
        }
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
        }
    }
}

/// Distinguishes two sessions that used the same peer id one after the other.
pub type SessionId = u64;

/// The mailbox is full (or gone): its peer is a slow consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// Where the router drops a peer's deliveries. Implementations must never block.
pub trait Mailbox {
    fn push(&self, text: Text) -> Result<(), Full>;
    /// Ends the session with `reason` (best effort; the first reason wins).
    fn close(&self, reason: CloseReason);
}

/// What a connection or an HTTP handler asks of the router.
pub enum Command<M> {
    Join {
        room: RoomId,
        peer: PeerId,
        session: SessionId,
        mailbox: M,
    },
    Leave {
        room: RoomId,
        peer: PeerId,
        session: SessionId,
    },
    Relay {
        room: RoomId,
        from: PeerId,
        session: SessionId,
        kind: RelayKind,
        target: PeerId,
        text: Text,
    },
    ListRooms,
    ListPeers {
        room: RoomId,
    },
    /// Close every session with `going_away` and refuse new ones.
    Shutdown,
    /// Operator action: end `peer`'s session, or with `None` every session of the
    /// room, with `kicked` (4403).
    Kick {
        room: RoomId,
        peer: Option<PeerId>,
    },
}

/// One row of `GET /webrtc/rooms`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoomSummary {
    pub room_id: RoomId,
    pub peer_count: usize,
}

/// The router's answer to a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Done,
    Joined,
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

/// The limits the router enforces.
#[derive(Debug, Clone, Copy)]
pub struct RouterLimits {
    pub max_sessions: usize,
    pub max_room_peers: usize,
}

struct Member<M> {
    peer: PeerId,
    session: SessionId,
    mailbox: M,
}

/// Members in join order. Rooms are small (a mesh call), so a scan beats hashing.
struct Room<M> {
    members: Vec<Member<M>>,
}

impl<M> Room<M> {
    fn position(&self, peer: &PeerId) -> Option<usize> {
        self.members.iter().position(|m| &m.peer == peer)
    }
}

/// All room state of the server.
pub struct Router<M> {
    rooms: BTreeMap<RoomId, Room<M>>,
    sessions: usize,
    limits: RouterLimits,
    shutting_down: bool,
    metrics: Arc<Metrics>,
}

impl<M: Mailbox> Router<M> {
    /// A router that counts into metrics of its own (nobody scrapes them).
    pub fn new(limits: RouterLimits) -> Self {
        Self::with_metrics(limits, Arc::new(Metrics::new(0)))
    }

    /// A router that counts sessions, rooms, relays and its errors into `metrics`.
    pub fn with_metrics(limits: RouterLimits, metrics: Arc<Metrics>) -> Self {
        Router {
            rooms: BTreeMap::new(),
            sessions: 0,
            limits,
            shutting_down: false,
            metrics,
        }
    }

    fn publish_population(&self) {
        self.metrics.set_population(self.sessions, self.rooms.len());
    }

    /// Number of admitted sessions.
    pub fn sessions(&self) -> usize {
        self.sessions
    }

    pub fn handle(&mut self, cmd: Command<M>) -> Reply {
        match cmd {
            Command::Join {
                room,
                peer,
                session,
                mailbox,
            } => self.join(room, peer, session, mailbox),
            Command::Leave {
                room,
                peer,
                session,
            } => {
                self.leave(&room, &peer, session);
                Reply::Done
            }
            Command::Relay {
                room,
                from,
                session,
                kind,
                target,
                text,
            } => {
                self.relay(&room, &from, session, kind, &target, text);
                Reply::Done
            }
            Command::ListRooms => Reply::Rooms(
                self.rooms
                    .iter()
                    .map(|(id, r)| RoomSummary {
                        room_id: id.clone(),
                        peer_count: r.members.len(),
                    })
                    .collect(),
            ),
            Command::ListPeers { room } => Reply::Peers(
                self.rooms
                    .get(&room)
                    .map(|r| r.members.iter().map(|m| m.peer.clone()).collect()),
            ),
            Command::Shutdown => {
                self.shutting_down = true;
                for member in self.rooms.values().flat_map(|r| r.members.iter()) {
                    member.mailbox.close(CloseReason::GoingAway);
                }
                Reply::Done
            }
            Command::Kick { room, peer } => self.kick(room, peer),
        }
    }

    /// Ends one peer's session like an eviction (the rest of the room gets one
    /// `peer_left`), or the whole room's: then nobody is left to tell, so, as at
    /// shutdown, no `peer_left` goes to peers that are being closed themselves.
    /// The kicked sessions' own `Leave` arrives later and finds nothing to do.
    fn kick(&mut self, room_id: RoomId, peer: Option<PeerId>) -> Reply {
        let Some(room) = self.rooms.get(&room_id) else {
            return Reply::RoomNotFound;
        };
        match peer {
            Some(peer) => match room.position(&peer) {
                Some(idx) => {
                    self.remove(&room_id, idx, Some(CloseReason::Kicked));
                    Reply::Kicked(vec![peer])
                }
                None => Reply::PeerNotFound,
            },
            None => {
                let Some(room) = self.rooms.remove(&room_id) else {
                    return Reply::RoomNotFound;
                };
                self.sessions -= room.members.len();
                self.publish_population();
                info!("kicking every peer of {room_id}");
                let mut kicked = Vec::with_capacity(room.members.len());
                for member in room.members {
                    member.mailbox.close(CloseReason::Kicked);
                    kicked.push(member.peer);
                }
                Reply::Kicked(kicked)
            }
        }
    }

    fn join(&mut self, room_id: RoomId, peer: PeerId, session: SessionId, mailbox: M) -> Reply {
        if self.shutting_down {
            return Reply::Refused(CloseReason::GoingAway);
        }
        if self.sessions >= self.limits.max_sessions {
            return Reply::Refused(CloseReason::ServerFull);
        }
        if let Some(room) = self.rooms.get(&room_id) {
            if room.position(&peer).is_some() {
                return Reply::Refused(CloseReason::PeerIdTaken);
            }
            if room.members.len() >= self.limits.max_room_peers {
                return Reply::Refused(CloseReason::RoomFull);
            }
        }
        let room = self.rooms.entry(room_id.clone()).or_insert(Room {
            members: Vec::new(),
        });
        let existing: Vec<&PeerId> = room.members.iter().map(|m| &m.peer).collect();
        // The mailbox is new and empty, so this cannot fail; if it did, the peer would
        // simply be evicted on its next delivery.
        let _ = mailbox.push(outbound::existing_peers(&existing).into());
        room.members.push(Member {
            peer: peer.clone(),
            session,
            mailbox,
        });
        self.sessions += 1;
        self.publish_population();
        let joined: Text = outbound::peer_joined(&peer).into();
        self.broadcast(&room_id, &peer, joined);
        Reply::Joined
    }

    fn leave(&mut self, room_id: &RoomId, peer: &PeerId, session: SessionId) {
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        // The session may already be gone (evicted) and the id taken by a new session.
        if let Some(idx) = room
            .position(peer)
            .filter(|&i| room.members[i].session == session)
        {
            self.remove(room_id, idx, None);
        }
    }

    fn relay(
        &mut self,
        room_id: &RoomId,
        from: &PeerId,
        session: SessionId,
        kind: RelayKind,
        target: &PeerId,
        text: Text,
    ) {
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        // A sender that already left (or was evicted) must not be heard after peer_left.
        let Some(from_idx) = room
            .position(from)
            .filter(|&i| room.members[i].session == session)
        else {
            return;
        };
        match room.position(target).filter(|_| target != from) {
            Some(to_idx) => {
                debug!("relay {} {from} -> {target} in {room_id}", kind.as_str());
                if room.members[to_idx].mailbox.push(text).is_ok() {
                    self.metrics.relayed(kind);
                } else {
                    self.evict(room_id, to_idx);
                }
            }
            None => {
                let msg = format!(
                    "peer {:?} is not in room {:?}",
                    target.as_str(),
                    room_id.as_str()
                );
                let err: Text = outbound::error(ErrorCode::PeerNotFound, &msg).into();
                if room.members[from_idx].mailbox.push(err).is_ok() {
                    self.metrics.error_sent(ErrorCode::PeerNotFound);
                } else {
                    self.evict(room_id, from_idx);
                }
            }
        }
    }

    /// Removes a peer whose mailbox is full and tells it why.
    fn evict(&mut self, room_id: &RoomId, idx: usize) {
        self.remove(room_id, idx, Some(CloseReason::SlowConsumer));
    }

    /// Removes member `idx` and tells the rest of the room. Telling may find more
    /// slow consumers; they are removed in turn, so each peer_left is sent exactly once.
    fn remove(&mut self, room_id: &RoomId, idx: usize, reason: Option<CloseReason>) {
        self.remove_cascade(room_id, idx, reason);
        self.publish_population();
    }

    fn remove_cascade(&mut self, room_id: &RoomId, idx: usize, reason: Option<CloseReason>) {
        let mut pending = vec![(idx, reason)];
        while let Some((idx, reason)) = pending.pop() {
            let Some(room) = self.rooms.get_mut(room_id) else {
                return;
            };
            let gone = room.members.remove(idx);
            self.sessions -= 1;
            if let Some(reason) = reason {
                info!("evicting {} from {room_id}: {reason}", gone.peer);
                gone.mailbox.close(reason);
            }
            let left: Text = outbound::peer_left(&gone.peer).into();
            let mut slow = Vec::new();
            // At shutdown everyone is being closed with going_away: no peer_left noise
            // ahead of that error.
            let members = if self.shutting_down {
                &[][..]
            } else {
                &room.members[..]
            };
            for member in members {
                if member.mailbox.push(left.clone()).is_err() {
                    slow.push(member.peer.clone());
                }
            }
            if room.members.is_empty() {
                self.rooms.remove(room_id);
                return;
            }
            // Indices shift as members go, so re-find each slow peer when its turn comes.
            for peer in slow {
                if let Some(i) = self.rooms.get(room_id).and_then(|r| r.position(&peer)) {
                    pending.push((i, Some(CloseReason::SlowConsumer)));
                }
            }
            pending.sort_by_key(|p| p.0);
            pending.dedup_by_key(|p| p.0);
        }
    }

    /// Sends `text` to every member of the room but `except`.
    fn broadcast(&mut self, room_id: &RoomId, except: &PeerId, text: Text) {
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        let slow: Vec<PeerId> = room
            .members
            .iter()
            .filter(|m| &m.peer != except && m.mailbox.push(text.clone()).is_err())
            .map(|m| m.peer.clone())
            .collect();
        for peer in slow {
            if let Some(i) = self.rooms.get(room_id).and_then(|r| r.position(&peer)) {
                self.evict(room_id, i);
            }
        }
    }
}

/// A command plus where to send the answer, as it travels to the router thread.
pub struct Envelope<M> {
    pub cmd: Command<M>,
    pub reply: Option<Sender<Reply>>,
}

/// The router thread's loop: runs until every sender of `rx` is gone.
pub fn run<M: Mailbox>(mut router: Router<M>, rx: Receiver<Envelope<M>>) {
    for Envelope { cmd, reply } in rx {
        let answer = router.handle(cmd);
        if let Some(reply) = reply {
            let _ = reply.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Records deliveries; refuses pushes beyond `capacity`.
    #[derive(Clone)]
    struct TestBox(Rc<RefCell<BoxState>>);

    struct BoxState {
        got: Vec<String>,
        capacity: usize,
        closed: Option<CloseReason>,
    }

    impl TestBox {
        fn new(capacity: usize) -> Self {
            TestBox(Rc::new(RefCell::new(BoxState {
                got: Vec::new(),
                capacity,
                closed: None,
            })))
        }
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut self.0.borrow_mut().got)
        }
        fn closed(&self) -> Option<CloseReason> {
            self.0.borrow().closed
        }
    }

    impl Mailbox for TestBox {
        fn push(&self, text: Text) -> Result<(), Full> {
            let mut s = self.0.borrow_mut();
            if s.got.len() >= s.capacity {
                return Err(Full);
            }
            s.got.push(text.as_str().to_owned());
            Ok(())
        }
        fn close(&self, reason: CloseReason) {
            self.0.borrow_mut().closed.get_or_insert(reason);
        }
    }

    fn room(s: &str) -> RoomId {
        RoomId::parse(s).unwrap()
    }
    fn peer(s: &str) -> PeerId {
        PeerId::parse(s).unwrap()
    }

    fn router(max_sessions: usize, max_room_peers: usize) -> Router<TestBox> {
        Router::new(RouterLimits {
            max_sessions,
            max_room_peers,
        })
    }

    fn join(
        r: &mut Router<TestBox>,
        rm: &str,
        p: &str,
        session: SessionId,
        cap: usize,
    ) -> (Reply, TestBox) {
        let mb = TestBox::new(cap);
        let reply = r.handle(Command::Join {
            room: room(rm),
            peer: peer(p),
            session,
            mailbox: mb.clone(),
        });
        (reply, mb)
    }

    fn relay(
        r: &mut Router<TestBox>,
        rm: &str,
        from: &str,
        session: SessionId,
        to: &str,
        text: &str,
    ) {
        r.handle(Command::Relay {
            room: room(rm),
            from: peer(from),
            session,
            kind: RelayKind::Offer,
            target: peer(to),
            text: text.to_owned().into(),
        });
    }

    #[test]
    fn join_announces_both_ways_in_order() {
        let mut r = router(10, 10);
        let (rep, a) = join(&mut r, "r", "a", 1, 100);
        assert_eq!(rep, Reply::Joined);
        assert_eq!(a.take(), [r#"{"type":"existing_peers","peers":[]}"#]);
        let (_, b) = join(&mut r, "r", "b", 2, 100);
        let (_, c) = join(&mut r, "r", "c", 3, 100);
        assert_eq!(c.take(), [r#"{"type":"existing_peers","peers":["a","b"]}"#]);
        assert_eq!(
            a.take(),
            [
                r#"{"type":"peer_joined","peer_id":"b"}"#,
                r#"{"type":"peer_joined","peer_id":"c"}"#
            ]
        );
        assert_eq!(
            b.take(),
            [
                r#"{"type":"existing_peers","peers":["a"]}"#,
                r#"{"type":"peer_joined","peer_id":"c"}"#
            ]
        );
    }

    #[test]
    fn duplicate_and_limits_are_refused_without_side_effects() {
        let mut r = router(3, 2);
        let (_, a) = join(&mut r, "r", "a", 1, 100);
        a.take();
        let (rep, dup) = join(&mut r, "r", "a", 2, 100);
        assert_eq!(rep, Reply::Refused(CloseReason::PeerIdTaken));
        assert!(dup.take().is_empty());
        assert!(a.take().is_empty(), "the first session is untouched");
        join(&mut r, "r", "b", 3, 100);
        let (rep, _) = join(&mut r, "r", "c", 4, 100);
        assert_eq!(rep, Reply::Refused(CloseReason::RoomFull));
        join(&mut r, "other", "c", 5, 100);
        let (rep, _) = join(&mut r, "third", "d", 6, 100);
        assert_eq!(rep, Reply::Refused(CloseReason::ServerFull));
        assert_eq!(r.sessions(), 3);
    }

    #[test]
    fn relay_reaches_target_only_and_unknown_target_errors() {
        let mut r = router(10, 10);
        let (_, a) = join(&mut r, "r", "a", 1, 100);
        let (_, b) = join(&mut r, "r", "b", 2, 100);
        let (_, x) = join(&mut r, "other", "x", 3, 100);
        a.take();
        b.take();
        x.take();
        relay(&mut r, "r", "a", 1, "b", "hello");
        assert_eq!(b.take(), ["hello"]);
        relay(&mut r, "r", "a", 1, "x", "nope");
        relay(&mut r, "r", "a", 1, "a", "self");
        let errs = a.take();
        assert_eq!(errs.len(), 2);
        assert!(errs
            .iter()
            .all(|e| e.contains(r#""code":"peer_not_found""#)));
        assert!(x.take().is_empty(), "rooms are isolated");
    }

    #[test]
    fn leave_announces_once_and_empties_room() {
        let mut r = router(10, 10);
        let (_, a) = join(&mut r, "r", "a", 1, 100);
        join(&mut r, "r", "b", 2, 100);
        a.take();
        let leave = |r: &mut Router<TestBox>, s| {
            r.handle(Command::Leave {
                room: room("r"),
                peer: peer("b"),
                session: s,
            })
        };
        leave(&mut r, 99); // a stale session id changes nothing
        assert!(a.take().is_empty());
        leave(&mut r, 2);
        leave(&mut r, 2);
        assert_eq!(a.take(), [r#"{"type":"peer_left","peer_id":"b"}"#]);
        r.handle(Command::Leave {
            room: room("r"),
            peer: peer("a"),
            session: 1,
        });
        assert_eq!(r.handle(Command::ListRooms), Reply::Rooms(vec![]));
        assert_eq!(r.sessions(), 0);
    }

    #[test]
    fn nothing_from_a_peer_after_it_left() {
        let mut r = router(10, 10);
        let (_, a) = join(&mut r, "r", "a", 1, 100);
        join(&mut r, "r", "b", 2, 100);
        r.handle(Command::Leave {
            room: room("r"),
            peer: peer("b"),
            session: 2,
        });
        // b rejoins with a new session; the old session's late relay is dropped.
        join(&mut r, "r", "b", 3, 100);
        a.take();
        relay(&mut r, "r", "b", 2, "a", "stale");
        relay(&mut r, "r", "b", 3, "a", "fresh");
        assert_eq!(a.take(), ["fresh"]);
    }

    #[test]
    fn slow_consumer_is_evicted_and_announced() {
        let mut r = router(10, 10);
        let (_, a) = join(&mut r, "r", "a", 1, 100);
        let (_, slow) = join(&mut r, "r", "slow", 2, 2); // existing_peers + 1 more
        a.take();
        relay(&mut r, "r", "a", 1, "slow", "one");
        relay(&mut r, "r", "a", 1, "slow", "two");
        assert_eq!(slow.closed(), Some(CloseReason::SlowConsumer));
        assert_eq!(a.take(), [r#"{"type":"peer_left","peer_id":"slow"}"#]);
        relay(&mut r, "r", "a", 1, "slow", "three");
        assert!(a.take()[0].contains("peer_not_found"));
        assert_eq!(r.sessions(), 1);
    }

    #[test]
    fn cascading_slow_consumers_each_get_one_peer_left() {
        let mut r = router(10, 10);
        let (_, a) = join(&mut r, "r", "a", 1, 1000);
        // b fills up with existing_peers + 2 joins; c with existing_peers, a join and
        // peer_left a, so a leaving evicts b, and b's peer_left then evicts c.
        let (_, b) = join(&mut r, "r", "b", 2, 3);
        let (_, c) = join(&mut r, "r", "c", 3, 3);
        let (_, d) = join(&mut r, "r", "d", 4, 1000);
        a.take();
        d.take();
        assert_eq!(b.closed(), None);
        r.handle(Command::Leave {
            room: room("r"),
            peer: peer("a"),
            session: 1,
        });
        assert_eq!(b.closed(), Some(CloseReason::SlowConsumer));
        assert_eq!(c.closed(), Some(CloseReason::SlowConsumer));
        let got = d.take();
        let mut left: Vec<&str> = got.iter().map(String::as_str).collect();
        left.sort();
        assert_eq!(
            left,
            [
                r#"{"type":"peer_left","peer_id":"a"}"#,
                r#"{"type":"peer_left","peer_id":"b"}"#,
                r#"{"type":"peer_left","peer_id":"c"}"#
            ]
        );
        assert_eq!(r.sessions(), 1);
    }

    #[test]
    fn listings_are_sorted_and_in_join_order() {
        let mut r = router(10, 10);
        join(&mut r, "zeta", "z", 1, 10);
        join(&mut r, "alpha", "p2", 2, 10);
        join(&mut r, "alpha", "p1", 3, 10);
        assert_eq!(
            r.handle(Command::ListRooms),
            Reply::Rooms(vec![
                RoomSummary {
                    room_id: room("alpha"),
                    peer_count: 2
                },
                RoomSummary {
                    room_id: room("zeta"),
                    peer_count: 1
                },
            ])
        );
        assert_eq!(
            r.handle(Command::ListPeers {
                room: room("alpha")
            }),
            Reply::Peers(Some(vec![peer("p2"), peer("p1")]))
        );
        assert_eq!(
            r.handle(Command::ListPeers { room: room("none") }),
            Reply::Peers(None)
        );
    }

    fn kick(r: &mut Router<TestBox>, rm: &str, p: Option<&str>) -> Reply {
        r.handle(Command::Kick {
            room: room(rm),
            peer: p.map(peer),
        })
    }

    #[test]
    fn kick_one_peer_closes_it_and_tells_the_room_once() {
        let mut r = router(10, 10);
        let (_, a) = join(&mut r, "r", "a", 1, 100);
        let (_, b) = join(&mut r, "r", "b", 2, 100);
        let (_, c) = join(&mut r, "r", "c", 3, 100);
        a.take();
        b.take();
        c.take();
        assert_eq!(kick(&mut r, "r", Some("b")), Reply::Kicked(vec![peer("b")]));
        assert_eq!(b.closed(), Some(CloseReason::Kicked));
        assert_eq!(a.closed(), None);
        assert!(b.take().is_empty(), "the kicked peer hears no peer_left");
        for other in [&a, &c] {
            assert_eq!(other.take(), [r#"{"type":"peer_left","peer_id":"b"}"#]);
        }
        // The kicked session's own Leave (sent when its threads end) changes nothing,
        // and neither do its late relays.
        r.handle(Command::Leave {
            room: room("r"),
            peer: peer("b"),
            session: 2,
        });
        relay(&mut r, "r", "b", 2, "a", "late");
        assert!(a.take().is_empty() && c.take().is_empty());
        assert_eq!(r.sessions(), 2);
        // The id is free again at once.
        let (rep, _) = join(&mut r, "r", "b", 4, 100);
        assert_eq!(rep, Reply::Joined);
        assert_eq!(kick(&mut r, "r", Some("zz")), Reply::PeerNotFound);
        assert_eq!(kick(&mut r, "nope", Some("a")), Reply::RoomNotFound);
        assert_eq!(kick(&mut r, "nope", None), Reply::RoomNotFound);
    }

    #[test]
    fn kick_cascades_to_slow_consumers_like_an_eviction() {
        let mut r = router(10, 10);
        let (_, a) = join(&mut r, "r", "a", 1, 100);
        // c fills up with existing_peers + d's peer_joined: a's peer_left evicts it.
        let (_, c) = join(&mut r, "r", "c", 2, 2);
        let (_, d) = join(&mut r, "r", "d", 3, 100);
        d.take();
        assert_eq!(kick(&mut r, "r", Some("a")), Reply::Kicked(vec![peer("a")]));
        assert_eq!(a.closed(), Some(CloseReason::Kicked));
        assert_eq!(c.closed(), Some(CloseReason::SlowConsumer));
        assert_eq!(
            d.take(),
            [
                r#"{"type":"peer_left","peer_id":"a"}"#,
                r#"{"type":"peer_left","peer_id":"c"}"#
            ]
        );
        assert_eq!(r.sessions(), 1);
    }

    #[test]
    fn kick_a_room_closes_everyone_in_it_without_peer_left_noise() {
        let mut r = router(10, 10);
        let (_, a) = join(&mut r, "r", "a", 1, 100);
        let (_, b) = join(&mut r, "r", "b", 2, 100);
        let (_, x) = join(&mut r, "other", "x", 3, 100);
        a.take();
        b.take();
        x.take();
        assert_eq!(
            kick(&mut r, "r", None),
            Reply::Kicked(vec![peer("a"), peer("b")])
        );
        assert_eq!(a.closed(), Some(CloseReason::Kicked));
        assert_eq!(b.closed(), Some(CloseReason::Kicked));
        assert_eq!(x.closed(), None, "other rooms are untouched");
        assert!(a.take().is_empty() && b.take().is_empty() && x.take().is_empty());
        assert_eq!(r.sessions(), 1);
        assert_eq!(
            r.handle(Command::ListPeers { room: room("r") }),
            Reply::Peers(None)
        );
        // Late Leaves of the kicked sessions do not touch a room re-made under the
        // same name.
        let (_, a2) = join(&mut r, "r", "a", 4, 100);
        a2.take();
        for (p, s) in [("a", 1), ("b", 2)] {
            r.handle(Command::Leave {
                room: room("r"),
                peer: peer(p),
                session: s,
            });
        }
        assert!(a2.take().is_empty());
        assert_eq!(r.sessions(), 2);
        assert_eq!(kick(&mut r, "r", None), Reply::Kicked(vec![peer("a")]));
        assert_eq!(r.sessions(), 1);
    }

    #[test]
    fn shutdown_closes_everyone_and_refuses_joins() {
        let mut r = router(10, 10);
        let (_, a) = join(&mut r, "r", "a", 1, 10);
        let (_, b) = join(&mut r, "r", "b", 2, 10);
        a.take();
        r.handle(Command::Shutdown);
        assert_eq!(a.closed(), Some(CloseReason::GoingAway));
        assert_eq!(b.closed(), Some(CloseReason::GoingAway));
        let (rep, _) = join(&mut r, "r", "c", 3, 10);
        assert_eq!(rep, Reply::Refused(CloseReason::GoingAway));
        r.handle(Command::Leave {
            room: room("r"),
            peer: peer("b"),
            session: 2,
        });
        assert_eq!(r.sessions(), 1);
        assert!(a.take().is_empty(), "no peer_left while shutting down");
    }
}
