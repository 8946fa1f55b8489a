//! The room state machine: who is in which room, who receives what, when a peer that
//! does not keep up is dropped, and which peers are held for a resume. Pure: commands
//! and `now` in, [`Output`]s and the next deadline out.
//!
//! The router never blocks, sleeps or retries. It knows how many messages each
//! session's queue can still take (its *credit*, refilled when the session reports
//! what it consumed), so every [`Output::Deliver`] fits. A message that does not fit
//! waits here in the target's backlog, in order, and its sender is paused until the
//! backlog is gone: back-pressure without a wait. A target whose socket is full
//! (reported as [`Command::Stalled`]) while it has a backlog is a slow consumer
//! (PROTOCOL.md §5), and so is one whose backlog reaches
//! [`RouterLimits::max_backlog`].
//!
//! A session that ends for a network reason leaves its peer *held* (§8,
//! [`resume`]): still listed, its id taken, relays to it kept, until a new session
//! brings its token or the grace runs out. Because every join, leave and relay passes
//! through this one sequential machine, §3's ordering holds by construction.

mod cluster;
mod cluster_moves;
mod cluster_outage;
mod remove;
mod resume;
mod types;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::debug;

pub use types::*;

use crate::core::cluster::{Ack, InstanceId};

use crate::metrics::Metrics;
use crate::protocol::{outbound, CloseReason, ErrorCode, PeerId, RelayKind, RoomId};

struct Member {
    room: RoomId,
    peer: PeerId,
    /// Free slots in the session's queue, as far as the router knows.
    credit: usize,
    /// A [`Output::WantDrained`] is outstanding.
    asked: bool,
    /// Messages that did not fit in the queue, oldest first.
    backlog: VecDeque<Text>,
    /// The session's socket is full and it takes nothing off its queue.
    stalled: bool,
    /// Senders paused until this member's backlog is gone.
    holding: Vec<SessionId>,
    /// How many members' backlogs hold this member paused.
    held_by: usize,
    /// The token that may take this peer over (§8); `None` with the grace off.
    token: Option<String>,
    /// `Some` while the peer is held after its session ended.
    held: Option<resume::Held>,
    /// Its place in the (cluster-wide) join order.
    seq: u64,
    /// `Some` for a member on another instance (PROTOCOL.md §9): known here so that
    /// it is listed and relayed to, with no session of ours behind it.
    remote: Option<InstanceId>,
    /// After a resume from another instance: relays wait here until the kept ones
    /// from `awaiting` have arrived (FIFO per sender and receiver).
    awaiting: Option<cluster::Awaiting>,
}

impl Member {
    fn new(room: RoomId, peer: PeerId, credit: usize, token: Option<String>, seq: u64) -> Member {
        Member {
            room,
            peer,
            credit,
            asked: false,
            backlog: VecDeque::new(),
            stalled: false,
            holding: Vec::new(),
            held_by: 0,
            token,
            held: None,
            seq,
            remote: None,
            awaiting: None,
        }
    }
}

/// Members in join order. Rooms are small (a mesh call), so a scan beats hashing.
struct Room {
    members: Vec<(PeerId, SessionId)>,
}

/// All room state of the server.
pub struct Router {
    rooms: BTreeMap<RoomId, Room>,
    members: IdMap<Member>,
    /// Held peers by the end of their grace.
    graces: BTreeSet<(Instant, SessionId)>,
    limits: RouterLimits,
    shutting_down: bool,
    metrics: Arc<Metrics>,
    out: VecDeque<Output>,
    now: Instant,
    /// The last join order given out (single instance), or seen (cluster).
    seq: u64,
    /// Remote members (they are in `members` too).
    remote: usize,
    /// `Some` when instances share rooms through Redis.
    cluster: Option<cluster::Cluster>,
    /// The acknowledgement of the `Leave` being handled, for its member's announcement.
    leave_ack: Option<Ack>,
}

impl Router {
    /// A router that counts into metrics of its own (nobody scrapes them).
    pub fn new(limits: RouterLimits) -> Self {
        Self::with_metrics(limits, Arc::new(Metrics::new(limits.peer_queue)))
    }

    /// A router that counts sessions, rooms, relays and its errors into `metrics`.
    pub fn with_metrics(limits: RouterLimits, metrics: Arc<Metrics>) -> Self {
        Router {
            rooms: BTreeMap::new(),
            members: IdMap::default(),
            graces: BTreeSet::new(),
            limits: RouterLimits {
                peer_queue: limits.peer_queue.max(1),
                ..limits
            },
            shutting_down: false,
            metrics,
            out: VecDeque::new(),
            now: Instant::now(),
            seq: 0,
            remote: 0,
            cluster: None,
            leave_ack: None,
        }
    }

    /// A router that shares its rooms with other instances through Redis as
    /// instance `me`; it starts down until the bridge is up. `ttl`: how long an
    /// instance may be gone before its members leave.
    pub fn clustered(
        limits: RouterLimits,
        metrics: Arc<Metrics>,
        me: InstanceId,
        ttl: Duration,
    ) -> Self {
        let mut r = Self::with_metrics(limits, metrics);
        r.cluster = Some(cluster::Cluster::new(me, ttl));
        r
    }

    /// Sessions now connected here (held peers and other instances' not included).
    pub fn sessions(&self) -> usize {
        self.members.len() - self.graces.len() - self.remote
    }

    /// Peers held for a resume.
    pub fn held(&self) -> usize {
        self.graces.len()
    }

    /// The next thing to carry out, in the order the router decided them.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Router::handle_timeout`] wants to run next (`None`: no timer).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let grace = self.graces.first().map(|&(at, _)| at);
        let cluster = self.cluster.as_ref().and_then(|c| c.next_deadline());
        match (grace, cluster) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs what is due at `now`: held peers whose grace has run out leave; in a
    /// cluster, stale joins and vanished instances are settled.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.expire_graces();
        self.cluster_timeouts();
    }

    /// Applies one command; outputs wait in [`Router::poll_output`].
    pub fn handle(&mut self, cmd: Command, now: Instant) -> Reply {
        self.now = now;
        match cmd {
            Command::Join {
                room,
                peer,
                session,
                resume,
                token,
            } => self.join(room, peer, session, resume, token),
            Command::Leave {
                session,
                reason,
                unsent,
                ack,
            } => {
                self.leave_ack = ack;
                self.leave(session, reason, unsent);
                // Not needed (held, or nothing to settle): let the session go on.
                self.leave_ack = None;
                Reply::Done
            }
            Command::Relay {
                session,
                kind,
                target,
                text,
            } => {
                self.relay(session, kind, &target, text);
                Reply::Done
            }
            Command::Drained { session, taken } => {
                self.drained(session, taken);
                Reply::Done
            }
            Command::Stalled { session, stalled } => {
                if let Some(m) = self.members.get_mut(&session).filter(|m| m.held.is_none()) {
                    m.stalled = stalled;
                    if stalled && !m.backlog.is_empty() {
                        self.remove(session, Some(CloseReason::SlowConsumer));
                    }
                }
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
                    .map(|r| r.members.iter().map(|(p, _)| p.clone()).collect()),
            ),
            Command::Kick { room, peer } => self.kick(room, peer),
            Command::Shutdown => {
                self.shutting_down = true;
                let everyone: Vec<SessionId> = self.members.keys().copied().collect();
                self.rooms.clear();
                for session in everyone {
                    // In a cluster this is the goodbye: the others hear peer_left now.
                    if let Some(gone) = self.forget(session, Some(CloseReason::GoingAway)) {
                        self.announce_leave(&gone);
                    }
                }
                self.refuse_pending(CloseReason::GoingAway);
                self.publish_population();
                Reply::Done
            }
            Command::Cluster(event) => {
                self.cluster_event(event);
                Reply::Done
            }
        }
    }

    fn publish_population(&self) {
        self.metrics
            .set_population(self.sessions(), self.rooms.len());
        self.metrics.set_suspended(self.graces.len());
    }

    fn join(
        &mut self,
        room_id: RoomId,
        peer: PeerId,
        session: SessionId,
        resume: Option<String>,
        token: Option<String>,
    ) -> Reply {
        if self.shutting_down {
            return Reply::Refused(CloseReason::GoingAway);
        }
        let token = token.filter(|_| !self.limits.resume_grace.is_zero());
        if self.cluster.is_some() {
            return self.claim(room_id, peer, session, resume, token);
        }
        let holder = self
            .rooms
            .get(&room_id)
            .and_then(|r| r.members.iter().find(|(p, _)| *p == peer))
            .map(|&(_, s)| s);
        if let Some(holder) = holder {
            return self.take_over(holder, session, resume, token);
        }
        if self.sessions() >= self.limits.max_sessions {
            return Reply::Refused(CloseReason::ServerFull);
        }
        let room = self.rooms.entry(room_id.clone()).or_insert(Room {
            members: Vec::new(),
        });
        if room.members.len() >= self.limits.max_room_peers {
            if room.members.is_empty() {
                self.rooms.remove(&room_id);
            }
            return Reply::Refused(CloseReason::RoomFull);
        }
        self.seq += 1;
        let seq = self.seq;
        self.admit(room_id, peer, session, token, seq);
        Reply::Joined
    }

    /// Puts a local session into its room (last in the join order), welcomes it and
    /// tells the room's other local members.
    fn admit(
        &mut self,
        room_id: RoomId,
        peer: PeerId,
        session: SessionId,
        token: Option<String>,
        seq: u64,
    ) {
        let room = self.rooms.entry(room_id.clone()).or_insert(Room {
            members: Vec::new(),
        });
        let existing: Vec<&PeerId> = room.members.iter().map(|(p, _)| p).collect();
        let welcome: Text = outbound::existing_peers(&existing, token.as_deref()).into();
        let others: Vec<SessionId> = room.members.iter().map(|&(_, s)| s).collect();
        room.members.push((peer.clone(), session));
        self.members.insert(
            session,
            Member::new(room_id, peer.clone(), self.limits.peer_queue, token, seq),
        );
        self.publish_population();
        // A new, empty queue: the welcome always fits.
        let mut slow = Vec::new();
        self.deliver(session, welcome, None, &mut slow);
        let joined: Text = outbound::peer_joined(&peer).into();
        for other in others {
            self.deliver(other, joined.clone(), None, &mut slow);
        }
        self.evict_all(slow);
    }

    fn relay(&mut self, session: SessionId, kind: RelayKind, target: &PeerId, text: Text) {
        // A sender that already left (or was evicted) must not be heard after peer_left.
        let Some(from) = self.members.get(&session).filter(|m| m.held.is_none()) else {
            return;
        };
        let Some(room) = self.rooms.get(&from.room) else {
            return;
        };
        let to = room
            .members
            .iter()
            .find(|(p, s)| p == target && *s != session)
            .map(|&(_, s)| s);
        let mut slow = Vec::new();
        match to {
            Some(to) if self.members.get(&to).is_some_and(|m| m.remote.is_some()) => {
                self.relay_remote(session, kind, to, text);
            }
            Some(to) => {
                debug!(
                    "relay {} {} -> {target} in {}",
                    kind.as_str(),
                    from.peer,
                    from.room
                );
                if self.deliver(to, text, Some(session), &mut slow) {
                    self.metrics.relayed(kind);
                }
            }
            None => {
                let msg = format!(
                    "peer {:?} is not in room {:?}",
                    target.as_str(),
                    from.room.as_str()
                );
                let err: Text = outbound::error(ErrorCode::PeerNotFound, &msg).into();
                if self.deliver(session, err, Some(session), &mut slow) {
                    self.metrics.error_sent(ErrorCode::PeerNotFound);
                }
            }
        }
        self.evict_all(slow);
    }

    /// Queues `text` for `to`: onto its queue if it has credit, else into its backlog
    /// (pausing `sender`); for a held peer, relays are kept and the rest dropped. A
    /// target that cannot take it is pushed onto `slow`. `true` if it is on its way.
    fn deliver(
        &mut self,
        to: SessionId,
        text: Text,
        sender: Option<SessionId>,
        slow: &mut Vec<SessionId>,
    ) -> bool {
        let Some(m) = self.members.get_mut(&to) else {
            return false;
        };
        let cap = self.limits.peer_queue;
        if m.remote.is_some() {
            // Its own instance tells it about joins and leaves.
            return false;
        }
        if let Some(waiting) = &mut m.awaiting {
            return waiting.defer(text, cap);
        }
        if let Some(held) = &mut m.held {
            // Joins and leaves are not replayed: the next existing_peers says it.
            if text.sender().is_none() || sender == Some(to) {
                return false;
            }
            let dropped = held.keep(text, cap);
            self.metrics.kept();
            self.metrics.kept_dropped(dropped);
            return true;
        }
        if m.backlog.is_empty() && m.credit > 0 {
            m.credit -= 1;
            self.out.push_back(Output::Deliver { to, text });
            if m.credit <= cap / 2 && !m.asked {
                m.asked = true;
                self.out.push_back(Output::WantDrained { session: to });
            }
            self.metrics.queue_len(cap - m.credit);
            return true;
        }
        let full = m.backlog.len() >= self.limits.max_backlog;
        if m.stalled || full {
            // Kept in order for a resume (§8), unless the bound is reached.
            if !full {
                m.backlog.push_back(text);
            }
            if !slow.contains(&to) {
                slow.push(to);
            }
            return false;
        }
        m.backlog.push_back(text);
        self.metrics.queue_len(cap + m.backlog.len());
        if !m.asked {
            m.asked = true;
            self.out.push_back(Output::WantDrained { session: to });
        }
        if let Some(sender) = sender {
            self.hold(sender, to);
        }
        true
    }

    /// Pauses `sender` until `target`'s backlog is gone.
    fn hold(&mut self, sender: SessionId, target: SessionId) {
        let Some(t) = self.members.get_mut(&target) else {
            return;
        };
        if t.holding.contains(&sender) {
            return;
        }
        t.holding.push(sender);
        if let Some(s) = self.members.get_mut(&sender) {
            s.held_by += 1;
            if s.held_by == 1 {
                self.out.push_back(Output::Pause { session: sender });
            }
        }
    }

    /// Lets go of the senders `holding` paused (the holder's backlog is gone, or so is
    /// the holder).
    fn release(&mut self, holding: Vec<SessionId>) {
        for sender in holding {
            if let Some(s) = self.members.get_mut(&sender) {
                s.held_by = s.held_by.saturating_sub(1);
                if s.held_by == 0 && s.held.is_none() {
                    self.out.push_back(Output::Resume { session: sender });
                }
            }
        }
    }

    fn drained(&mut self, session: SessionId, taken: usize) {
        let cap = self.limits.peer_queue;
        let Some(m) = self.members.get_mut(&session).filter(|m| m.held.is_none()) else {
            return;
        };
        m.credit = (m.credit + taken).min(cap);
        m.asked = false;
        while m.credit > 0 {
            let Some(text) = m.backlog.pop_front() else {
                break;
            };
            m.credit -= 1;
            self.out.push_back(Output::Deliver { to: session, text });
        }
        if !m.backlog.is_empty() || m.credit <= cap / 2 {
            m.asked = true;
            self.out.push_back(Output::WantDrained { session });
        }
        if m.backlog.is_empty() && !m.holding.is_empty() {
            let holding = std::mem::take(&mut m.holding);
            self.release(holding);
        }
    }

    /// `n` [`Output::Deliver`]s to `session` went straight to its socket (its thread
    /// was asleep with nothing to write), not onto its queue: the slots they took
    /// are free again, and a backlog moves on with them (the session has nothing to
    /// report, so no [`Command::Drained`] would move it).
    pub fn written(&mut self, session: SessionId, n: usize) {
        let cap = self.limits.peer_queue;
        let Some(m) = self.members.get_mut(&session).filter(|m| m.held.is_none()) else {
            return;
        };
        m.credit = (m.credit + n).min(cap);
        if !m.backlog.is_empty() {
            self.drained(session, 0);
        }
    }

    fn evict_all(&mut self, slow: Vec<SessionId>) {
        for session in slow {
            self.remove(session, Some(CloseReason::SlowConsumer));
        }
    }
}

#[cfg(test)]
mod tests;
