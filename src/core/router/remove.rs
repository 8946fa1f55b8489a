//! How members leave: a departure told to the room once (and cascading to slow
//! consumers), the driver told to close or forget the session, and operator kicks.

use log::info;

use super::{Member, Output, Reply, Router, SessionId, Text};
use crate::core::cluster::{ClusterOut, InstanceId};
use crate::protocol::{outbound, CloseReason, PeerId, RoomId};

impl Router {
    /// Ends one peer's session like an eviction (the rest of the room gets one
    /// `peer_left`), or the whole room's: then nobody is left to tell, so no
    /// `peer_left` goes to peers that are being closed themselves.
    pub(super) fn kick(&mut self, room_id: RoomId, peer: Option<PeerId>) -> Reply {
        let Some(room) = self.rooms.get(&room_id) else {
            return Reply::RoomNotFound;
        };
        match peer {
            Some(peer) => match room.members.iter().find(|(p, _)| *p == peer) {
                Some(&(_, session)) => {
                    match self.members.get(&session).and_then(|m| m.remote.clone()) {
                        // Its instance ends it; the room hears peer_left from there.
                        Some(instance) => self.out.push_back(Output::Cluster(ClusterOut::Kick {
                            instance,
                            room: room_id,
                            peer: Some(peer.clone()),
                        })),
                        None => self.remove(session, Some(CloseReason::Kicked)),
                    }
                    Reply::Kicked(vec![peer])
                }
                None => Reply::PeerNotFound,
            },
            None => {
                let Some(room) = self.rooms.remove(&room_id) else {
                    return Reply::RoomNotFound;
                };
                info!("kicking every peer of {room_id}");
                let mut kicked = Vec::with_capacity(room.members.len());
                let mut instances: Vec<InstanceId> = Vec::new();
                for (peer, session) in room.members {
                    if let Some(gone) = self.forget(session, Some(CloseReason::Kicked)) {
                        match &gone.remote {
                            Some(i) if !instances.contains(i) => instances.push(i.clone()),
                            Some(_) => {}
                            None => self.announce_leave(&gone),
                        }
                    }
                    kicked.push(peer);
                }
                for instance in instances {
                    self.out.push_back(Output::Cluster(ClusterOut::Kick {
                        instance,
                        room: room_id.clone(),
                        peer: None,
                    }));
                }
                self.publish_population();
                Reply::Kicked(kicked)
            }
        }
    }

    /// Removes a member and tells the rest of its room. Telling may find more slow
    /// consumers; they end in turn, so each `peer_left` is sent exactly once.
    pub(super) fn remove(&mut self, session: SessionId, reason: Option<CloseReason>) {
        let mut pending = vec![(session, reason)];
        while let Some((session, reason)) = pending.pop() {
            if reason == Some(CloseReason::SlowConsumer) && self.suspend(session, reason) {
                continue;
            }
            let Some(gone) = self.forget(session, reason) else {
                continue;
            };
            self.announce_leave(&gone);
            let Some(room) = self.rooms.get_mut(&gone.room) else {
                continue;
            };
            room.members.retain(|&(_, s)| s != session);
            if room.members.is_empty() {
                self.rooms.remove(&gone.room);
                continue;
            }
            let others: Vec<SessionId> = room.members.iter().map(|&(_, s)| s).collect();
            let left: Text = outbound::peer_left(&gone.peer).into();
            let mut slow = Vec::new();
            for other in others {
                self.forget_kept_from(other, session);
                self.deliver(other, left.clone(), None, &mut slow);
            }
            for s in slow {
                if !pending.iter().any(|&(p, _)| p == s) {
                    pending.push((s, Some(CloseReason::SlowConsumer)));
                }
            }
        }
        self.publish_population();
    }

    /// Drops a member from the session table (not from its room's list) and tells the
    /// driver: [`Output::Close`] with a reason, else [`Output::Forget`].
    pub(super) fn forget(
        &mut self,
        session: SessionId,
        reason: Option<CloseReason>,
    ) -> Option<Member> {
        let mut gone = self.members.remove(&session)?;
        if gone.remote.is_some() {
            self.remote -= 1;
        } else if let Some(held) = gone.held.take() {
            self.graces.remove(&(held.until, session));
        } else {
            match reason {
                Some(reason) => {
                    if reason != CloseReason::GoingAway {
                        info!("evicting {} from {}: {reason}", gone.peer, gone.room);
                    }
                    self.out.push_back(Output::Close { session, reason });
                }
                None => self.out.push_back(Output::Forget { session }),
            }
        }
        let holding = std::mem::take(&mut gone.holding);
        self.release(holding);
        Some(gone)
    }
}
