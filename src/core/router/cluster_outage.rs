//! What the cluster router does about time and absence: joins Redis never answered,
//! instances that vanished (their members leave after the TTL), and bringing the
//! remote members in line with Redis after a (re)connection.

use std::collections::HashSet;

use super::{Output, Reply, Router, SessionId};
use crate::core::cluster::{InstanceId, Presence};
use crate::protocol::CloseReason;

impl Router {
    pub(super) fn cluster_timeouts(&mut self) {
        let now = self.now;
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let ttl = c.ttl;
        let stale: Vec<SessionId> = c
            .pending
            .iter()
            .filter(|(_, p)| p.since + ttl <= now)
            .map(|(&s, _)| s)
            .collect();
        for session in stale {
            c.pending.remove(&session);
            self.out.push_back(Output::Answer {
                session,
                reply: Reply::Refused(CloseReason::TryAgainLater),
            });
        }
        let gone: Vec<InstanceId> = c
            .missing
            .iter()
            .filter(|(_, &since)| since + ttl <= now)
            .map(|(i, _)| i.clone())
            .collect();
        for instance in gone {
            if let Some(c) = self.cluster.as_mut() {
                c.missing.remove(&instance);
            }
            self.instance_gone(&instance);
        }
        let late: Vec<SessionId> = self
            .members
            .iter()
            .filter(|(_, m)| m.awaiting.as_ref().is_some_and(|a| a.since + ttl <= now))
            .map(|(&s, _)| s)
            .collect();
        for session in late {
            self.kept_done(session);
        }
    }

    /// Every member of a vanished instance leaves (one `peer_left` each).
    pub(super) fn instance_gone(&mut self, instance: &InstanceId) {
        let gone: Vec<SessionId> = self
            .members
            .iter()
            .filter(|(_, m)| m.remote.as_ref() == Some(instance))
            .map(|(&s, _)| s)
            .collect();
        if !gone.is_empty() {
            log::warn!(
                "instance {instance} is gone: {} of its peers leave",
                gone.len()
            );
        }
        for s in gone {
            self.remove(s, None);
        }
    }

    /// Which instances are alive: members of one missing for longer than the TTL
    /// leave (their Redis records may be gone with a Redis restart).
    pub(super) fn instances(&mut self, alive: Vec<InstanceId>) {
        let now = self.now;
        let known: Vec<InstanceId> = self
            .members
            .values()
            .filter_map(|m| m.remote.clone())
            .collect();
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        c.missing.retain(|i, _| !alive.contains(i));
        for i in known {
            if !alive.contains(&i) {
                c.missing.entry(i).or_insert(now);
            }
        }
    }

    /// After a (re)connection: bring the remote members in line with Redis. Members of
    /// instances that have not re-announced yet are left alone (the TTL decides).
    pub(super) fn reconcile(&mut self, snapshot: Vec<Presence>) {
        let me = self.me();
        for p in &snapshot {
            if p.instance == me {
                continue;
            }
            match self.find(&p.room, &p.peer) {
                Some(s) if self.members.get(&s).is_some_and(|m| m.seq == p.seq) => {
                    if let Some(m) = self.members.get_mut(&s) {
                        if m.remote.is_some() {
                            m.remote = Some(p.instance.clone());
                        }
                    }
                }
                Some(s) => {
                    if self.members.get(&s).is_some_and(|m| m.remote.is_some()) {
                        self.remove(s, None);
                        self.add_remote(p.clone(), true);
                    }
                }
                None => self.add_remote(p.clone(), true),
            }
        }
        let present: HashSet<&InstanceId> = snapshot.iter().map(|p| &p.instance).collect();
        let stale: Vec<SessionId> = self
            .members
            .iter()
            .filter(|(_, m)| {
                m.remote.as_ref().is_some_and(|i| present.contains(i))
                    && !snapshot
                        .iter()
                        .any(|p| p.room == m.room && p.peer == m.peer && p.seq == m.seq)
            })
            .map(|(&s, _)| s)
            .collect();
        for s in stale {
            self.remove(s, None);
        }
    }
}
