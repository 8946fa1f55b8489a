//! Unit tests of PROTOCOL.md §8 in the router: hold, keep, take over, expire.

use super::*;

const GRACE: Duration = Duration::from_secs(10);

fn sim(peer_queue: usize) -> Sim {
    Sim::with(RouterLimits {
        max_sessions: 10,
        max_room_peers: 10,
        peer_queue,
        max_backlog: 1000,
        resume_grace: GRACE,
    })
}

impl Sim {
    /// Joins with a token of its own (`t<session>`), resuming with `resume` if given.
    fn join_t(&mut self, rm: &str, p: &str, session: SessionId, resume: Option<&str>) -> Reply {
        self.cmd(Command::Join {
            room: room(rm),
            peer: peer(p),
            session,
            resume: resume.map(str::to_owned),
            token: Some(format!("t{session}")),
        })
    }

    fn end(&mut self, session: SessionId, reason: CloseReason) {
        self.cmd(Command::Leave {
            session,
            reason,
            unsent: Vec::new(),
            ack: None,
        });
    }

    fn listed(&mut self, rm: &str) -> Vec<String> {
        match self.cmd(Command::ListPeers { room: room(rm) }) {
            Reply::Peers(Some(p)) => p.iter().map(|p| p.to_string()).collect(),
            _ => Vec::new(),
        }
    }
}

fn welcome(peers: &[&str], token: &str) -> String {
    let peers: Vec<String> = peers.iter().map(|p| format!("{p:?}")).collect();
    format!(
        r#"{{"type":"existing_peers","peers":[{}],"resume_token":"{token}"}}"#,
        peers.join(",")
    )
}

#[test]
fn existing_peers_carries_a_token_only_with_the_grace_on() {
    let mut s = sim(10);
    s.join_t("r", "a", 1, None);
    assert_eq!(s.take(1), [welcome(&[], "t1")]);
    let mut off = Sim::new(10, 10, 10);
    off.join_t("r", "a", 1, None);
    assert_eq!(off.take(1), [r#"{"type":"existing_peers","peers":[]}"#]);
}

#[test]
fn a_network_end_holds_the_peer_quietly_and_keeps_relays_in_order() {
    let mut s = sim(10);
    s.join_t("r", "a", 1, None);
    s.join_t("r", "b", 2, None);
    s.take_all(1);
    s.take_all(2);
    s.end(2, CloseReason::Disconnected);
    assert!(s.forgotten.contains(&2), "the session is gone");
    assert!(s.take(1).is_empty(), "nobody sees anything");
    assert_eq!(s.listed("r"), ["a", "b"], "REST still lists the held peer");
    assert_eq!(s.r.sessions(), 1);
    assert_eq!(s.r.held(), 1);
    for i in 0..3 {
        s.relay(1, "b", &format!("m{i}"));
    }
    s.join_t("r", "c", 3, None); // joins are not replayed to b
    assert!(s.take(1).iter().all(|m| m.contains("peer_joined")));
    // b comes back with its token: existing_peers (fresh token), then what was kept.
    assert_eq!(s.join_t("r", "b", 4, Some("t2")), Reply::Resumed);
    assert_eq!(
        s.take_all(4),
        [
            welcome(&["a", "c"], "t4"),
            "m0".into(),
            "m1".into(),
            "m2".into()
        ]
    );
    assert!(s.take(1).is_empty(), "no peer_left, no peer_joined for a");
    assert!(
        s.take(3).iter().all(|m| !m.contains("peer_")),
        "c saw b listed, never leaving or joining"
    );
    assert_eq!(s.listed("r"), ["a", "b", "c"], "b keeps its place");
    assert_eq!(s.r.held(), 0);
    s.relay(4, "a", "from the new session");
    assert_eq!(s.take(1), ["from the new session"]);
}

#[test]
fn kept_relays_are_bounded_oldest_dropped_first() {
    let mut s = sim(3);
    s.join_t("r", "a", 1, None);
    s.join_t("r", "b", 2, None);
    s.take_all(1);
    s.take_all(2);
    s.end(2, CloseReason::Timeout);
    for i in 0..5 {
        s.relay(1, "b", &format!("m{i}"));
    }
    s.join_t("r", "b", 3, Some("t2"));
    assert_eq!(
        s.take_all(3),
        [welcome(&["a"], "t3"), "m2".into(), "m3".into(), "m4".into()]
    );
}

#[test]
fn what_the_session_never_got_is_kept_for_the_resume() {
    let mut s = sim(10);
    s.join_t("r", "a", 1, None);
    s.join_t("r", "b", 2, None);
    s.take_all(1);
    s.take_all(2);
    s.relay(1, "b", "unread");
    let unsent = vec![Text::relayed("unread".to_owned(), s.now, 1)];
    s.queues.remove(&2);
    s.cmd(Command::Leave {
        session: 2,
        reason: CloseReason::Disconnected,
        unsent,
        ack: None,
    });
    s.relay(1, "b", "later");
    s.join_t("r", "b", 3, Some("t2"));
    assert_eq!(
        s.take_all(3),
        [welcome(&["a"], "t3"), "unread".into(), "later".into()]
    );
}

#[test]
fn relays_from_a_peer_that_left_meanwhile_are_dropped() {
    let mut s = sim(10);
    s.join_t("r", "a", 1, None);
    s.join_t("r", "b", 2, None);
    s.join_t("r", "c", 3, None);
    s.end(3, CloseReason::Disconnected);
    s.relay(1, "c", "from a");
    s.relay(2, "c", "from b");
    s.end(1, CloseReason::ClientClosed(1000));
    s.join_t("r", "c", 4, Some("t3"));
    let got = s.take_all(4);
    assert_eq!(got, [welcome(&["b"], "t4"), "from b".into()]);
}

#[test]
fn a_half_open_session_is_replaced_with_4410() {
    let mut s = sim(10);
    s.join_t("r", "a", 1, None);
    s.join_t("r", "b", 2, None);
    s.take_all(1);
    s.take_all(2);
    // The old session still looks connected when the new one arrives.
    assert_eq!(s.join_t("r", "b", 3, Some("t2")), Reply::Resumed);
    assert_eq!(s.closed.get(&2), Some(&CloseReason::Replaced));
    assert_eq!(s.take(3), [welcome(&["a"], "t3")]);
    assert!(s.take(1).is_empty());
    // Its late Leave changes nothing.
    s.end(2, CloseReason::Replaced);
    assert!(s.take(1).is_empty());
    assert_eq!(s.listed("r"), ["a", "b"]);
}

#[test]
fn a_wrong_used_or_missing_token_is_peer_id_taken_and_the_holder_is_untouched() {
    let mut s = sim(10);
    s.join_t("r", "a", 1, None);
    s.join_t("r", "b", 2, None);
    s.end(2, CloseReason::Disconnected);
    for bad in [None, Some("t1"), Some("t2x"), Some("")] {
        assert_eq!(
            s.join_t("r", "b", 9, bad),
            Reply::Refused(CloseReason::PeerIdTaken),
            "{bad:?}"
        );
    }
    assert_eq!(s.join_t("r", "b", 3, Some("t2")), Reply::Resumed);
    s.end(3, CloseReason::Disconnected);
    assert_eq!(
        s.join_t("r", "b", 4, Some("t2")),
        Reply::Refused(CloseReason::PeerIdTaken),
        "a token is good for one takeover"
    );
    assert_eq!(s.join_t("r", "b", 5, Some("t3")), Reply::Resumed);
}

#[test]
fn a_resume_for_a_peer_not_held_joins_as_new() {
    let mut s = sim(10);
    s.join_t("r", "a", 1, None);
    s.take_all(1);
    assert_eq!(s.join_t("r", "b", 2, Some("whatever")), Reply::Joined);
    assert_eq!(s.take(1), [r#"{"type":"peer_joined","peer_id":"b"}"#]);
}

#[test]
fn the_grace_running_out_is_one_peer_left_after_everything_sent() {
    let mut s = sim(10);
    s.join_t("r", "a", 1, None);
    s.join_t("r", "b", 2, None);
    s.take_all(1);
    s.relay(2, "a", "last words");
    s.end(2, CloseReason::Disconnected);
    assert_eq!(s.r.poll_timeout(), Some(s.now + GRACE));
    s.tick(GRACE - Duration::from_millis(1));
    assert_eq!(s.take(1), ["last words"]);
    s.tick(Duration::from_millis(1));
    assert_eq!(s.take(1), [r#"{"type":"peer_left","peer_id":"b"}"#]);
    s.tick(GRACE);
    assert!(s.take(1).is_empty(), "exactly once");
    assert_eq!(s.r.poll_timeout(), None);
    assert_eq!(s.listed("r"), ["a"]);
    assert_eq!(
        s.join_t("r", "b", 3, Some("t2")),
        Reply::Joined,
        "too late to resume"
    );
}

#[test]
fn closes_that_are_not_network_reasons_leave_at_once() {
    for reason in [
        CloseReason::ClientClosed(1000),
        CloseReason::RateLimited,
        CloseReason::MessageTooLarge,
        CloseReason::ProtocolError,
    ] {
        let mut s = sim(10);
        s.join_t("r", "a", 1, None);
        s.join_t("r", "b", 2, None);
        s.take_all(1);
        s.end(2, reason);
        assert_eq!(
            s.take(1),
            [r#"{"type":"peer_left","peer_id":"b"}"#],
            "{reason}"
        );
    }
}

#[test]
fn a_slow_consumer_is_held_and_so_are_its_undelivered_relays() {
    let mut s = sim(2);
    s.join_t("r", "a", 1, None);
    s.join_t("r", "b", 2, None);
    s.take_all(1);
    s.take_all(2);
    s.cmd(Command::Stalled {
        session: 2,
        stalled: true,
    });
    for i in 0..3 {
        s.relay(1, "b", &format!("m{i}"));
    }
    assert_eq!(s.closed.get(&2), Some(&CloseReason::SlowConsumer));
    assert!(s.take(1).is_empty(), "held, not gone");
    assert!(s.paused.is_empty(), "a is let go");
    s.queues.remove(&2); // the old session's queue is gone with it
    s.join_t("r", "b", 3, Some("t2"));
    let got = s.take_all(3);
    assert_eq!(got[0], welcome(&["a"], "t3"));
    assert_eq!(got[1..], ["m2".to_owned()], "m0, m1 went to the old queue");
}

#[test]
fn kicking_a_held_peer_or_shutting_down_ends_the_hold() {
    let mut s = sim(10);
    s.join_t("r", "a", 1, None);
    s.join_t("r", "b", 2, None);
    s.take_all(1);
    s.end(2, CloseReason::Disconnected);
    assert_eq!(
        s.cmd(Command::Kick {
            room: room("r"),
            peer: Some(peer("b")),
        }),
        Reply::Kicked(vec![peer("b")])
    );
    assert_eq!(s.take(1), [r#"{"type":"peer_left","peer_id":"b"}"#]);
    assert_eq!(s.r.held(), 0);
    assert_eq!(s.r.poll_timeout(), None);
    s.join_t("r", "c", 3, None);
    s.end(3, CloseReason::Disconnected);
    s.cmd(Command::Shutdown);
    assert_eq!(s.r.held(), 0);
    assert_eq!(s.cmd(Command::ListRooms), Reply::Rooms(vec![]));
}

#[test]
fn a_held_peer_counts_in_its_room_but_not_as_a_connection() {
    let mut s = Sim::with(RouterLimits {
        max_sessions: 2,
        max_room_peers: 2,
        peer_queue: 10,
        max_backlog: 100,
        resume_grace: GRACE,
    });
    s.join_t("r", "a", 1, None);
    s.join_t("r", "b", 2, None);
    s.end(2, CloseReason::Disconnected);
    assert_eq!(
        s.join_t("r", "c", 3, None),
        Reply::Refused(CloseReason::RoomFull)
    );
    assert_eq!(s.join_t("other", "c", 4, None), Reply::Joined);
}
