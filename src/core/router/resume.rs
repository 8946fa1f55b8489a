//! PROTOCOL.md §8 in the router: holding a peer whose session ended for a network
//! reason, keeping relays for it, handing it to a session that brings its token, and
//! letting it leave when the grace runs out.

use std::collections::VecDeque;
use std::time::Instant;

use super::{Member, Reply, Router, SessionId, Text};
use crate::protocol::{outbound, CloseReason, PeerId};

/// A held peer: until when, and the relays kept for it (oldest first).
pub(super) struct Held {
    pub until: Instant,
    pub kept: VecDeque<Text>,
}

impl Held {
    /// Keeps a relay, dropping the oldest beyond `bound`; returns how many it dropped.
    pub fn keep(&mut self, text: Text, bound: usize) -> usize {
        self.kept.push_back(text);
        let mut dropped = 0;
        while self.kept.len() > bound {
            self.kept.pop_front();
            dropped += 1;
        }
        dropped
    }
}

/// Compares a token in time that does not depend on where the two differ.
fn same_token(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Router {
    /// A session ended by itself (its `Leave`): a network reason holds the peer for
    /// the grace; anything else leaves at once. `unsent` is what its queue still held.
    pub(super) fn leave(&mut self, session: SessionId, reason: CloseReason, unsent: Vec<Text>) {
        let Some(m) = self.members.get_mut(&session) else {
            return;
        };
        if let Some(held) = &mut m.held {
            // A late Leave of a held session: what its queue took meanwhile.
            let bound = self.limits.peer_queue;
            let mut dropped = 0;
            for text in unsent.into_iter().filter(|t| t.sender().is_some()) {
                dropped += held.keep(text, bound);
                self.metrics.kept();
            }
            self.metrics.kept_dropped(dropped);
            return;
        }
        if reason.is_resumable() && self.suspend_with(session, None, unsent) {
            return;
        }
        self.remove(session, None);
    }

    /// Holds `session`'s peer for the resume grace instead of removing it; `false` if
    /// it cannot be held (grace off, shutting down, no token, not connected).
    pub(super) fn suspend(&mut self, session: SessionId, close: Option<CloseReason>) -> bool {
        self.suspend_with(session, close, Vec::new())
    }

    fn suspend_with(
        &mut self,
        session: SessionId,
        close: Option<CloseReason>,
        unsent: Vec<Text>,
    ) -> bool {
        if self.limits.resume_grace.is_zero() || self.shutting_down {
            return false;
        }
        let until = self.now + self.limits.resume_grace;
        let bound = self.limits.peer_queue;
        let Some(m) = self.members.get_mut(&session) else {
            return false;
        };
        if m.held.is_some() || m.token.is_none() {
            return false;
        }
        let mut held = Held {
            until,
            kept: VecDeque::new(),
        };
        // What the session never got, in order: its queue, then the router's backlog.
        let mut dropped = 0;
        for text in unsent.into_iter().chain(m.backlog.drain(..)) {
            if text.sender().is_some() {
                dropped += held.keep(text, bound);
                self.metrics.kept();
            }
        }
        self.metrics.kept_dropped(dropped);
        log::info!("holding {} in {} for a resume", m.peer, m.room);
        m.held = Some(held);
        m.stalled = false;
        m.asked = false;
        let holding = std::mem::take(&mut m.holding);
        self.graces.insert((until, session));
        self.out.push_back(match close {
            Some(reason) => super::Output::Close { session, reason },
            None => super::Output::Forget { session },
        });
        self.release(holding);
        self.publish_population();
        true
    }

    /// A join for a peer id that is taken: with the holder's token, `session` takes
    /// the peer over (§8); otherwise it is refused as `peer_id_taken` (§3).
    pub(super) fn take_over(
        &mut self,
        holder: SessionId,
        session: SessionId,
        resume: Option<String>,
        token: Option<String>,
    ) -> Reply {
        let valid = match (self.members.get(&holder), &resume) {
            (Some(m), Some(given)) => m.token.as_deref().is_some_and(|t| same_token(given, t)),
            _ => false,
        };
        if !valid {
            return Reply::Refused(CloseReason::PeerIdTaken);
        }
        self.take_over_checked(holder, session, token)
    }

    /// The takeover itself, the token already checked (here, or by Redis).
    pub(super) fn take_over_checked(
        &mut self,
        holder: SessionId,
        session: SessionId,
        token: Option<String>,
    ) -> Reply {
        let Some(mut m) = self.members.remove(&holder) else {
            return Reply::Refused(CloseReason::PeerIdTaken);
        };
        let kept: VecDeque<Text> = match m.held.take() {
            Some(held) => {
                self.graces.remove(&(held.until, holder));
                held.kept
            }
            None => {
                // Half-open: the old session has not noticed its client is gone.
                self.out.push_back(super::Output::Close {
                    session: holder,
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
        let cap = self.limits.peer_queue;
        let fresh = Member {
            credit: cap,
            asked: false,
            backlog: VecDeque::new(),
            stalled: false,
            holding: Vec::new(),
            held_by: 0,
            token,
            held: None,
            awaiting: None,
            ..m
        };
        let Some(room) = self.rooms.get_mut(&fresh.room) else {
            return Reply::Refused(CloseReason::PeerIdTaken);
        };
        for entry in room.members.iter_mut().filter(|(_, s)| *s == holder) {
            entry.1 = session;
        }
        let existing: Vec<&PeerId> = room
            .members
            .iter()
            .filter(|(_, s)| *s != session)
            .map(|(p, _)| p)
            .collect();
        let welcome: Text = outbound::existing_peers(&existing, fresh.token.as_deref()).into();
        log::info!("{} in {} resumed", fresh.peer, fresh.room);
        self.members.insert(session, fresh);
        let mut slow = Vec::new();
        self.deliver(session, welcome, None, &mut slow);
        for text in kept {
            self.deliver(session, text, None, &mut slow);
        }
        self.metrics.resumed();
        self.publish_population();
        self.evict_all(slow);
        Reply::Resumed
    }

    /// Held peers whose grace has run out leave; their rooms hear `peer_left` once.
    pub(super) fn expire_graces(&mut self) {
        while let Some(&(until, session)) = self.graces.first() {
            if until > self.now {
                break;
            }
            self.graces.pop_first();
            self.metrics.grace_expired();
            self.remove(session, None);
        }
    }

    /// Drops what a held `member` kept from `sender`, who has left (§8: relays from a
    /// peer that has left meanwhile are dropped).
    pub(super) fn forget_kept_from(&mut self, member: SessionId, sender: SessionId) {
        if let Some(held) = self.members.get_mut(&member).and_then(|m| m.held.as_mut()) {
            let before = held.kept.len();
            held.kept.retain(|t| t.sender() != Some(sender));
            self.metrics.kept_dropped(before - held.kept.len());
        }
    }
}
