//! Unit tests of PROTOCOL.md §9 in the router: events in, outputs out, no Redis.

use super::*;
use crate::core::cluster::{ClusterEvent, InstanceId, Presence};

const ME: &str = "me";
const OTHER: &str = "other";

fn clustered(peer_queue: usize) -> Sim {
    let limits = RouterLimits {
        max_sessions: 10,
        max_room_peers: 10,
        peer_queue,
        max_backlog: 1000,
        resume_grace: Duration::from_secs(10),
    };
    let mut s = Sim::with(limits);
    s.r = Router::clustered(
        limits,
        Arc::new(crate::metrics::Metrics::new(peer_queue)),
        InstanceId::from(ME),
        Duration::from_secs(5),
    );
    s
}

fn presence(rm: &str, p: &str, seq: u64, inst: &str) -> Presence {
    Presence {
        room: room(rm),
        peer: peer(p),
        seq,
        instance: InstanceId::from(inst),
    }
}

impl Sim {
    fn ev(&mut self, e: ClusterEvent) {
        self.cmd(Command::Cluster(e));
    }

    fn up(&mut self) {
        self.ev(ClusterEvent::Up {
            snapshot: Vec::new(),
            alive: vec![InstanceId::from(ME), InstanceId::from(OTHER)],
        });
    }

    /// A local join, claimed and echoed back by "Redis" with `seq`.
    fn join_local(&mut self, rm: &str, p: &str, session: SessionId, seq: u64) {
        let reply = self.cmd(Command::Join {
            room: room(rm),
            peer: peer(p),
            session,
            resume: None,
            token: Some(format!("t{session}")),
        });
        assert_eq!(reply, Reply::Deferred);
        assert!(
            matches!(self.bridge.pop(), Some(ClusterOut::Claim { session: s, .. }) if s == session)
        );
        self.ev(ClusterEvent::Joined {
            presence: presence(rm, p, seq, ME),
            session: Some(session),
        });
        assert_eq!(self.answers.remove(&session), Some(Reply::Joined));
    }

    fn remote_joins(&mut self, rm: &str, p: &str, seq: u64) {
        self.ev(ClusterEvent::Joined {
            presence: presence(rm, p, seq, OTHER),
            session: None,
        });
    }
}

#[test]
fn joins_wait_for_redis_and_list_remote_members_in_the_cluster_order() {
    let mut s = clustered(10);
    assert_eq!(
        s.join("r", "a", 1),
        Reply::Refused(CloseReason::TryAgainLater),
        "down at start"
    );
    s.up();
    s.remote_joins("r", "x", 1);
    s.join_local("r", "a", 1, 2);
    assert_eq!(
        s.take(1),
        [r#"{"type":"existing_peers","peers":["x"],"resume_token":"t1"}"#]
    );
    s.remote_joins("r", "y", 3);
    assert_eq!(s.take(1), [r#"{"type":"peer_joined","peer_id":"y"}"#]);
    assert_eq!(
        s.cmd(Command::ListPeers { room: room("r") }),
        Reply::Peers(Some(vec![peer("x"), peer("a"), peer("y")]))
    );
    assert_eq!(s.r.sessions(), 1, "remote members are not connections here");
    // A refused claim is answered.
    assert_eq!(s.join("r", "x", 2), Reply::Deferred);
    s.ev(ClusterEvent::ClaimFailed {
        session: 2,
        reason: CloseReason::PeerIdTaken,
    });
    assert_eq!(
        s.answers.remove(&2),
        Some(Reply::Refused(CloseReason::PeerIdTaken))
    );
}

#[test]
fn relays_cross_instances_through_the_bridge_and_come_back_in() {
    let mut s = clustered(10);
    s.up();
    s.join_local("r", "a", 1, 1);
    s.remote_joins("r", "x", 2);
    s.take_all(1);
    s.bridge.clear();
    s.relay(1, "x", "hello");
    assert!(matches!(
        &s.bridge[..],
        [ClusterOut::Relay { instance, from_seq: 1, text, .. }] if &**instance == OTHER && text.as_str() == "hello"
    ));
    s.ev(ClusterEvent::Relay {
        room: room("r"),
        from: peer("x"),
        from_seq: 2,
        target: peer("a"),
        text: "back".into(),
    });
    assert_eq!(s.take(1), ["back"]);
    // From another incarnation of x (or one that left): dropped.
    s.ev(ClusterEvent::Relay {
        room: room("r"),
        from: peer("x"),
        from_seq: 9,
        target: peer("a"),
        text: "stale".into(),
    });
    assert!(s.take(1).is_empty());
}

#[test]
fn leaves_are_told_to_redis_and_remote_leaves_to_the_room() {
    let mut s = clustered(10);
    s.up();
    s.join_local("r", "a", 1, 1);
    s.join_local("r", "b", 2, 2);
    s.remote_joins("r", "x", 3);
    s.take_all(1);
    s.bridge.clear();
    s.leave(2);
    assert_eq!(
        s.bridge,
        [ClusterOut::Leave {
            room: room("r"),
            peer: peer("b"),
            seq: 2,
            ack: None,
        }]
    );
    assert_eq!(
        s.take(1),
        [r#"{"type":"peer_left","peer_id":"b"}"#],
        "at once, locally"
    );
    // Its echo from Redis changes nothing.
    s.ev(ClusterEvent::Left {
        room: room("r"),
        peer: peer("b"),
        seq: 2,
    });
    assert!(s.take(1).is_empty());
    s.ev(ClusterEvent::Left {
        room: room("r"),
        peer: peer("x"),
        seq: 3,
    });
    assert_eq!(s.take(1), [r#"{"type":"peer_left","peer_id":"x"}"#]);
}

#[test]
fn while_down_remote_relays_are_unreachable_and_new_sessions_wait() {
    let mut s = clustered(10);
    s.up();
    s.join_local("r", "a", 1, 1);
    s.join_local("r", "b", 2, 2);
    s.remote_joins("r", "x", 3);
    s.take_all(1);
    s.take_all(2);
    assert_eq!(s.join("r", "c", 3), Reply::Deferred);
    s.ev(ClusterEvent::Down);
    assert_eq!(
        s.answers.remove(&3),
        Some(Reply::Refused(CloseReason::TryAgainLater))
    );
    s.relay(1, "b", "local");
    assert_eq!(s.take(2), ["local"]);
    s.relay(1, "x", "remote");
    assert!(s.take(1)[0].contains(r#""code":"peer_unreachable""#));
    assert_eq!(
        s.join("r", "d", 4),
        Reply::Refused(CloseReason::TryAgainLater)
    );
    // Back: the router re-announces its members first.
    s.bridge.clear();
    s.ev(ClusterEvent::Connected);
    let Some(ClusterOut::Reannounce { members }) = s.bridge.pop() else {
        panic!("no re-announcement")
    };
    let mut names: Vec<&str> = members.iter().map(|(p, _)| p.peer.as_str()).collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
    s.up();
    assert_eq!(s.join("r", "d", 4), Reply::Deferred);
}

#[test]
fn a_vanished_instance_s_members_leave_after_the_ttl_once() {
    let mut s = clustered(10);
    s.up();
    s.join_local("r", "a", 1, 1);
    s.remote_joins("r", "x", 2);
    s.take_all(1);
    s.ev(ClusterEvent::Instances {
        alive: vec![InstanceId::from(ME)],
    });
    s.tick(Duration::from_secs(4));
    assert!(s.take(1).is_empty());
    s.tick(Duration::from_secs(1));
    assert_eq!(s.take(1), [r#"{"type":"peer_left","peer_id":"x"}"#]);
    s.tick(Duration::from_secs(10));
    assert!(s.take(1).is_empty());
}

#[test]
fn after_a_reconnection_the_snapshot_settles_who_is_there_without_noise() {
    let mut s = clustered(10);
    s.up();
    s.join_local("r", "a", 1, 1);
    s.remote_joins("r", "x", 2);
    s.remote_joins("r", "y", 3);
    s.take_all(1);
    // Redis came back: x is still there, y left meanwhile, z joined meanwhile.
    s.ev(ClusterEvent::Up {
        snapshot: vec![
            presence("r", "a", 1, ME),
            presence("r", "x", 2, OTHER),
            presence("r", "z", 4, OTHER),
        ],
        alive: vec![InstanceId::from(ME), InstanceId::from(OTHER)],
    });
    let mut got = s.take(1);
    got.sort();
    assert_eq!(
        got,
        [
            r#"{"type":"peer_joined","peer_id":"z"}"#,
            r#"{"type":"peer_left","peer_id":"y"}"#
        ]
    );
}

#[test]
fn a_member_resumed_elsewhere_hands_over_what_was_kept_and_stays_listed() {
    let mut s = clustered(10);
    s.up();
    s.join_local("r", "a", 1, 1);
    s.join_local("r", "b", 2, 2);
    s.take_all(1);
    s.take_all(2);
    s.cmd(Command::Leave {
        session: 2,
        reason: CloseReason::Disconnected,
        unsent: Vec::new(),
        ack: None,
    });
    s.relay(1, "b", "kept");
    s.bridge.clear();
    s.ev(ClusterEvent::Moved {
        presence: presence("r", "b", 2, OTHER),
        from: InstanceId::from(ME),
        session: 77,
    });
    assert!(matches!(
        &s.bridge[..],
        [ClusterOut::Kept { instance, texts, .. }] if &**instance == OTHER && texts.len() == 1 && texts[0].as_str() == "kept"
    ));
    assert!(s.take(1).is_empty(), "a sees nothing");
    s.bridge.clear();
    s.relay(1, "b", "now remote");
    assert!(matches!(&s.bridge[..], [ClusterOut::Relay { instance, .. }] if &**instance == OTHER));
}

#[test]
fn a_member_resumed_here_gets_the_kept_relays_before_anything_newer() {
    let mut s = clustered(10);
    s.up();
    s.join_local("r", "a", 1, 1);
    s.remote_joins("r", "b", 2);
    s.take_all(1);
    assert_eq!(
        s.cmd(Command::Join {
            room: room("r"),
            peer: peer("b"),
            session: 5,
            resume: Some("tok".into()),
            token: Some("fresh".into()),
        }),
        Reply::Deferred
    );
    s.ev(ClusterEvent::Moved {
        presence: presence("r", "b", 2, ME),
        from: InstanceId::from(OTHER),
        session: 5,
    });
    assert_eq!(s.answers.remove(&5), Some(Reply::Resumed));
    s.relay(1, "b", "newer");
    assert_eq!(
        s.take(5),
        [r#"{"type":"existing_peers","peers":["a"],"resume_token":"fresh"}"#],
        "newer waits for the kept ones"
    );
    s.ev(ClusterEvent::Kept {
        room: room("r"),
        peer: peer("b"),
        text: Some("older".into()),
    });
    s.ev(ClusterEvent::Kept {
        room: room("r"),
        peer: peer("b"),
        text: None,
    });
    assert_eq!(s.take(5), ["older", "newer"]);
    assert!(s.take(1).is_empty(), "a saw no flap");
}
