//! PROTOCOL.md §9 in the router: members on other instances, joins claimed in Redis,
//! relays across instances, resume through another instance, and what an outage or
//! a vanished instance means. The router still does no I/O: it asks the bridge
//! ([`Output::Cluster`]) and hears from it ([`Command::Cluster`]).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::{IdMap, Member, Output, Reply, Room, Router, SessionId, Text};
use crate::core::cluster::{token_hash, ClusterEvent, ClusterOut, InstanceId, Presence};
use crate::protocol::{outbound, CloseReason, ErrorCode, PeerId, RelayKind, RoomId};

/// Ids of remote members start here, far from any real session's.
const REMOTE_IDS: SessionId = 1 << 62;

/// A local join waiting for Redis to claim its id.
pub(super) struct Pending {
    pub room: RoomId,
    pub peer: PeerId,
    pub token: Option<String>,
    pub since: Instant,
}

/// The cluster side of the router's state.
pub(super) struct Cluster {
    pub me: InstanceId,
    pub up: bool,
    pub ttl: Duration,
    pub pending: IdMap<Pending>,
    pub next_remote: SessionId,
    /// Instances not seen alive, and since when.
    pub missing: HashMap<InstanceId, Instant>,
}

impl Cluster {
    pub fn new(me: InstanceId, ttl: Duration) -> Self {
        Cluster {
            me,
            up: false,
            ttl,
            pending: IdMap::default(),
            next_remote: REMOTE_IDS,
            missing: HashMap::new(),
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let joins = self.pending.values().map(|p| p.since + self.ttl);
        let gone = self.missing.values().map(|&t| t + self.ttl);
        joins.chain(gone).min()
    }
}

/// A member that resumed here from another instance, waiting for what that
/// instance kept for it.
pub(super) struct Awaiting {
    pub since: Instant,
    /// Kept by the instance the member resumed from, oldest first.
    pub kept: VecDeque<Text>,
    /// Everything that arrived here meanwhile, oldest first.
    pub deferred: VecDeque<Text>,
}

impl Awaiting {
    /// Holds a message for later; `true` (it is on its way) unless it is a
    /// server announcement, which the next `existing_peers` would say anyway.
    pub fn defer(&mut self, text: Text, bound: usize) -> bool {
        self.deferred.push_back(text);
        while self.deferred.len() > bound {
            self.deferred.pop_front();
        }
        true
    }
}

impl Router {
    /// A join in a cluster: the id is claimed in Redis first; the answer comes back
    /// as a [`ClusterEvent`].
    pub(super) fn claim(
        &mut self,
        room: RoomId,
        peer: PeerId,
        session: SessionId,
        resume: Option<String>,
        token: Option<String>,
    ) -> Reply {
        let sessions = self.sessions() + self.cluster.as_ref().map_or(0, |c| c.pending.len());
        let Some(c) = self.cluster.as_mut() else {
            return Reply::Refused(CloseReason::Internal);
        };
        if !c.up {
            return Reply::Refused(CloseReason::TryAgainLater);
        }
        if sessions >= self.limits.max_sessions {
            return Reply::Refused(CloseReason::ServerFull);
        }
        let token_hashed = token.as_deref().map(token_hash);
        let resume_hashed = resume
            .filter(|_| !self.limits.resume_grace.is_zero())
            .as_deref()
            .map(token_hash);
        c.pending.insert(
            session,
            Pending {
                room: room.clone(),
                peer: peer.clone(),
                token,
                since: self.now,
            },
        );
        self.out.push_back(Output::Cluster(ClusterOut::Claim {
            session,
            room,
            peer,
            token_hash: token_hashed,
            resume_hash: resume_hashed,
        }));
        Reply::Deferred
    }

    /// A relay to a member on another instance.
    pub(super) fn relay_remote(
        &mut self,
        session: SessionId,
        kind: RelayKind,
        to: SessionId,
        text: Text,
    ) {
        let up = self.cluster.as_ref().is_some_and(|c| c.up);
        let (Some(from), Some(target)) = (self.members.get(&session), self.members.get(&to)) else {
            return;
        };
        let Some(instance) = target.remote.clone() else {
            return;
        };
        if !up {
            let msg = format!(
                "peer {:?} is on another instance and the cluster is unreachable",
                target.peer.as_str()
            );
            let err: Text = outbound::error(ErrorCode::PeerUnreachable, &msg).into();
            let mut slow = Vec::new();
            if self.deliver(session, err, Some(session), &mut slow) {
                self.metrics.error_sent(ErrorCode::PeerUnreachable);
            }
            self.evict_all(slow);
            return;
        }
        self.metrics.relayed(kind);
        self.out.push_back(Output::Cluster(ClusterOut::Relay {
            instance,
            session,
            room: from.room.clone(),
            from: from.peer.clone(),
            from_seq: from.seq,
            target: target.peer.clone(),
            text,
        }));
    }

    /// A local member is gone for good: in a cluster, Redis drops its claim and the
    /// other instances tell their members.
    pub(super) fn announce_leave(&mut self, gone: &Member) {
        if self.cluster.is_some() && gone.remote.is_none() {
            self.out.push_back(Output::Cluster(ClusterOut::Leave {
                room: gone.room.clone(),
                peer: gone.peer.clone(),
                seq: gone.seq,
                ack: self.leave_ack.take(),
            }));
        }
    }

    /// Every join waiting for Redis is refused.
    pub(super) fn refuse_pending(&mut self, reason: CloseReason) {
        if let Some(c) = self.cluster.as_mut() {
            let pending: Vec<SessionId> = c.pending.keys().copied().collect();
            c.pending.clear();
            for session in pending {
                self.out.push_back(Output::Answer {
                    session,
                    reply: Reply::Refused(reason),
                });
            }
        }
    }

    pub(super) fn cluster_event(&mut self, event: ClusterEvent) {
        match event {
            ClusterEvent::Connected => {
                let members: Vec<(Presence, Option<String>)> = self
                    .members
                    .values()
                    .filter(|m| m.remote.is_none())
                    .map(|m| (self.presence_of(m), m.token.as_deref().map(token_hash)))
                    .collect();
                self.out
                    .push_back(Output::Cluster(ClusterOut::Reannounce { members }));
            }
            ClusterEvent::Up { snapshot, alive } => {
                self.reconcile(snapshot);
                self.instances(alive);
                if let Some(c) = self.cluster.as_mut() {
                    c.up = true;
                }
            }
            ClusterEvent::Down => {
                if let Some(c) = self.cluster.as_mut() {
                    c.up = false;
                }
                self.refuse_pending(CloseReason::TryAgainLater);
            }
            ClusterEvent::ClaimFailed { session, reason } => {
                if self
                    .cluster
                    .as_mut()
                    .is_some_and(|c| c.pending.remove(&session).is_some())
                {
                    self.out.push_back(Output::Answer {
                        session,
                        reply: Reply::Refused(reason),
                    });
                }
            }
            ClusterEvent::RelayFailed { session, target } => {
                let msg = format!(
                    "peer {:?} could not be reached on its instance",
                    target.as_str()
                );
                let err: Text = outbound::error(ErrorCode::PeerUnreachable, &msg).into();
                let mut slow = Vec::new();
                if self.deliver(session, err, Some(session), &mut slow) {
                    self.metrics.error_sent(ErrorCode::PeerUnreachable);
                }
                self.evict_all(slow);
            }
            ClusterEvent::Joined { presence, session } => self.joined(presence, session),
            ClusterEvent::Left { room, peer, seq } => {
                if let Some(s) = self
                    .find(&room, &peer)
                    .filter(|s| self.is_remote_with(*s, seq))
                {
                    self.remove(s, None);
                }
            }
            ClusterEvent::Moved {
                presence,
                from,
                session,
            } => self.moved(presence, from, session),
            ClusterEvent::Relay {
                room,
                from,
                from_seq,
                target,
                text,
            } => {
                let Some(sender) = self
                    .find(&room, &from)
                    .filter(|&s| self.is_remote_with(s, from_seq))
                else {
                    return; // it left (or is another incarnation): nothing after peer_left
                };
                let Some(to) = self
                    .find(&room, &target)
                    .filter(|s| self.members.get(s).is_some_and(|m| m.remote.is_none()))
                else {
                    return;
                };
                self.metrics.cross_received();
                let mut slow = Vec::new();
                self.deliver(
                    to,
                    Text::relayed(text, self.now, sender),
                    Some(sender),
                    &mut slow,
                );
                self.evict_all(slow);
            }
            ClusterEvent::Kept { room, peer, text } => {
                let Some(s) = self.find(&room, &peer) else {
                    return;
                };
                match text {
                    Some(text) => {
                        let bound = self.limits.peer_queue;
                        if let Some(a) = self.members.get_mut(&s).and_then(|m| m.awaiting.as_mut())
                        {
                            a.kept.push_back(Text::from(text));
                            while a.kept.len() > bound {
                                a.kept.pop_front();
                            }
                        }
                    }
                    None => self.kept_done(s),
                }
            }
            ClusterEvent::Kick { room, peer } => match peer {
                Some(peer) => {
                    if let Some(s) = self.find(&room, &peer) {
                        if self.members.get(&s).is_some_and(|m| m.remote.is_none()) {
                            self.remove(s, Some(CloseReason::Kicked));
                        }
                    }
                }
                None => {
                    let local: Vec<SessionId> = self
                        .rooms
                        .get(&room)
                        .map(|r| r.members.iter().map(|&(_, s)| s).collect())
                        .unwrap_or_default();
                    for s in local {
                        if self.members.get(&s).is_some_and(|m| m.remote.is_none()) {
                            self.remove(s, Some(CloseReason::Kicked));
                        }
                    }
                }
            },
            ClusterEvent::Instances { alive } => self.instances(alive),
        }
    }

    pub(super) fn presence_of(&self, m: &Member) -> Presence {
        Presence {
            room: m.room.clone(),
            peer: m.peer.clone(),
            seq: m.seq,
            instance: self.me(),
        }
    }

    pub(super) fn me(&self) -> InstanceId {
        self.cluster
            .as_ref()
            .map(|c| c.me.clone())
            .unwrap_or_else(|| "".into())
    }

    pub(super) fn find(&self, room: &RoomId, peer: &PeerId) -> Option<SessionId> {
        self.rooms
            .get(room)?
            .members
            .iter()
            .find(|(p, _)| p == peer)
            .map(|&(_, s)| s)
    }

    pub(super) fn is_remote_with(&self, session: SessionId, seq: u64) -> bool {
        self.members
            .get(&session)
            .is_some_and(|m| m.remote.is_some() && m.seq == seq)
    }

    /// A join in the cluster's order: ours (admit the waiting session) or another
    /// instance's (known here from now on).
    pub(super) fn joined(&mut self, p: Presence, session: Option<SessionId>) {
        self.seq = self.seq.max(p.seq);
        let mine = p.instance == self.me();
        if let (true, Some(session)) = (mine, session) {
            let Some(pending) = self
                .cluster
                .as_mut()
                .and_then(|c| c.pending.remove(&session))
            else {
                // The session gave up meanwhile: let the claim go.
                self.out.push_back(Output::Cluster(ClusterOut::Leave {
                    room: p.room,
                    peer: p.peer,
                    seq: p.seq,
                    ack: None,
                }));
                return;
            };
            self.admit(pending.room, pending.peer, session, pending.token, p.seq);
            self.out.push_back(Output::Answer {
                session,
                reply: Reply::Joined,
            });
            return;
        }
        if mine || self.find(&p.room, &p.peer).is_some() {
            return; // a re-announcement of someone known
        }
        self.add_remote(p, true);
    }

    /// A member of another instance, placed by its join order; `announce`: tell the
    /// room's local members.
    pub(super) fn add_remote(&mut self, p: Presence, announce: bool) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let id = c.next_remote;
        c.next_remote += 1;
        let mut m = Member::new(p.room.clone(), p.peer.clone(), 0, None, p.seq);
        m.remote = Some(p.instance);
        let room = self.rooms.entry(p.room).or_insert(Room {
            members: Vec::new(),
        });
        let at = room
            .members
            .iter()
            .position(|(_, s)| self.members.get(s).is_some_and(|o| o.seq > p.seq))
            .unwrap_or(room.members.len());
        room.members.insert(at, (p.peer.clone(), id));
        let locals: Vec<SessionId> = room
            .members
            .iter()
            .map(|&(_, s)| s)
            .filter(|s| self.members.get(s).is_some_and(|o| o.remote.is_none()))
            .collect();
        self.members.insert(id, m);
        self.remote += 1;
        self.publish_population();
        if announce {
            let joined: Text = outbound::peer_joined(&p.peer).into();
            let mut slow = Vec::new();
            for s in locals {
                self.deliver(s, joined.clone(), None, &mut slow);
            }
            self.evict_all(slow);
        }
    }
}
