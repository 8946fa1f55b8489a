//! PROTOCOL.md §8 across instances: a member that resumes through another instance
//! moves there, and the relays its old instance kept follow it, first.

use std::collections::VecDeque;

use super::cluster::Awaiting;
use super::{Member, Output, Reply, Room, Router, SessionId, Text};
use crate::core::cluster::{ClusterOut, InstanceId, Presence};
use crate::protocol::{outbound, CloseReason, PeerId};

impl Router {
    /// A resume moved a member (PROTOCOL.md §8 across instances).
    pub(super) fn moved(&mut self, p: Presence, from: InstanceId, session: SessionId) {
        let me = self.me();
        let existing = self.find(&p.room, &p.peer);
        if p.instance == me {
            let Some(pending) = self
                .cluster
                .as_mut()
                .and_then(|c| c.pending.remove(&session))
            else {
                return;
            };
            match existing {
                // It was ours: the local takeover, its token already checked by Redis.
                Some(old)
                    if from == me && self.members.get(&old).is_some_and(|m| m.remote.is_none()) =>
                {
                    let reply = self.take_over_checked(old, session, pending.token);
                    self.out.push_back(Output::Answer { session, reply });
                }
                Some(old) => {
                    // From another instance: it becomes ours, at its place in the room.
                    if self
                        .members
                        .remove(&old)
                        .is_some_and(|m| m.remote.is_some())
                    {
                        self.remote -= 1;
                    }
                    let m = Member::new(
                        p.room.clone(),
                        p.peer.clone(),
                        self.limits.peer_queue,
                        pending.token.clone(),
                        p.seq,
                    );
                    let room = self.rooms.entry(p.room.clone()).or_insert(Room {
                        members: Vec::new(),
                    });
                    for entry in room.members.iter_mut().filter(|(_, s)| *s == old) {
                        entry.1 = session;
                    }
                    let existing: Vec<&PeerId> = room
                        .members
                        .iter()
                        .filter(|(_, s)| *s != session)
                        .map(|(pp, _)| pp)
                        .collect();
                    let welcome: Text =
                        outbound::existing_peers(&existing, pending.token.as_deref()).into();
                    self.members.insert(session, m);
                    self.metrics.resumed();
                    self.publish_population();
                    let mut slow = Vec::new();
                    self.deliver(session, welcome, None, &mut slow);
                    // Everything else waits for the relays the old instance kept.
                    if let Some(m) = self.members.get_mut(&session) {
                        m.awaiting = Some(Awaiting {
                            since: self.now,
                            kept: VecDeque::new(),
                            deferred: VecDeque::new(),
                        });
                    }
                    self.out.push_back(Output::Answer {
                        session,
                        reply: Reply::Resumed,
                    });
                }
                None => {
                    self.admit(pending.room, pending.peer, session, pending.token, p.seq);
                    self.out.push_back(Output::Answer {
                        session,
                        reply: Reply::Joined,
                    });
                }
            }
            return;
        }
        let Some(old) = existing else {
            self.add_remote(p, true);
            return;
        };
        let local = self.members.get(&old).is_some_and(|m| m.remote.is_none());
        if !local {
            if let Some(m) = self.members.get_mut(&old) {
                m.remote = Some(p.instance);
            }
            return;
        }
        // It was ours and resumed elsewhere: close the old session quietly (4410 if it
        // is still open), hand over what was kept, and know it as remote from now on.
        let Some(mut m) = self.members.remove(&old) else {
            return;
        };
        let kept: Vec<Text> = match m.held.take() {
            Some(held) => {
                self.graces.remove(&(held.until, old));
                held.kept.into()
            }
            None => {
                self.out.push_back(Output::Close {
                    session: old,
                    reason: CloseReason::Replaced,
                });
                m.backlog
                    .drain(..)
                    .filter(|t| t.sender().is_some())
                    .collect()
            }
        };
        let holding = std::mem::take(&mut m.holding);
        self.release(holding);
        self.out.push_back(Output::Cluster(ClusterOut::Kept {
            instance: p.instance.clone(),
            room: p.room.clone(),
            peer: p.peer.clone(),
            texts: kept,
        }));
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let id = c.next_remote;
        c.next_remote += 1;
        let mut r = Member::new(p.room.clone(), p.peer.clone(), 0, None, p.seq);
        r.remote = Some(p.instance);
        if let Some(room) = self.rooms.get_mut(&p.room) {
            for entry in room.members.iter_mut().filter(|(_, s)| *s == old) {
                entry.1 = id;
            }
        }
        self.members.insert(id, r);
        self.remote += 1;
        self.publish_population();
    }

    /// The kept relays of a member that resumed here are in (or will not come):
    /// deliver what waited, in order.
    pub(super) fn kept_done(&mut self, session: SessionId) {
        let Some(a) = self
            .members
            .get_mut(&session)
            .and_then(|m| m.awaiting.take())
        else {
            return;
        };
        let mut slow = Vec::new();
        for text in a.kept.into_iter().chain(a.deferred) {
            self.deliver(session, text, None, &mut slow);
        }
        self.evict_all(slow);
    }
}
