//! Unit tests of the router's rules, with simulated session queues.

use super::*;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::core::cluster::ClusterOut;

fn room(s: &str) -> RoomId {
    RoomId::parse(s).unwrap()
}
fn peer(s: &str) -> PeerId {
    PeerId::parse(s).unwrap()
}

/// A router plus what its driver would have done with the outputs: one queue per
/// session (bounded by `peer_queue`, which the test asserts is never exceeded).
struct Sim {
    r: Router,
    now: Instant,
    queues: HashMap<SessionId, Vec<String>>,
    closed: HashMap<SessionId, CloseReason>,
    forgotten: HashSet<SessionId>,
    paused: HashSet<SessionId>,
    asked: HashSet<SessionId>,
    /// Messages taken off a queue since the session last reported.
    taken: HashMap<SessionId, usize>,
    /// Deferred answers, by session.
    answers: HashMap<SessionId, Reply>,
    /// What went to the Redis bridge, in order.
    bridge: Vec<ClusterOut>,
    /// Sessions asleep with their gate open: a delivery that finds their queue empty
    /// goes straight to the socket (`wire`), as `driver::direct` does.
    direct: HashSet<SessionId>,
    wire: HashMap<SessionId, Vec<String>>,
}

impl Sim {
    fn new(max_sessions: usize, max_room_peers: usize, peer_queue: usize) -> Sim {
        Sim::with(RouterLimits {
            max_sessions,
            max_room_peers,
            peer_queue,
            max_backlog: 1000,
            resume_grace: Duration::ZERO,
        })
    }

    fn with(limits: RouterLimits) -> Sim {
        Sim {
            r: Router::new(limits),
            now: Instant::now(),
            queues: HashMap::new(),
            closed: HashMap::new(),
            forgotten: HashSet::new(),
            paused: HashSet::new(),
            asked: HashSet::new(),
            taken: HashMap::new(),
            answers: HashMap::new(),
            bridge: Vec::new(),
            direct: HashSet::new(),
            wire: HashMap::new(),
        }
    }

    fn cmd(&mut self, cmd: Command) -> Reply {
        let reply = self.r.handle(cmd, self.now);
        self.carry_out();
        reply
    }

    /// Moves the clock on and runs the router's timers.
    fn tick(&mut self, by: Duration) {
        self.now += by;
        self.r.handle_timeout(self.now);
        self.carry_out();
    }

    fn carry_out(&mut self) {
        let cap = self.r.limits.peer_queue;
        while let Some(out) = self.r.poll_output() {
            match out {
                Output::Deliver { to, text } => {
                    assert!(!self.closed.contains_key(&to), "delivery after close");
                    let q = self.queues.entry(to).or_default();
                    if self.direct.contains(&to) && q.is_empty() {
                        self.wire
                            .entry(to)
                            .or_default()
                            .push(text.as_str().to_owned());
                        self.r.written(to, 1);
                        continue;
                    }
                    q.push(text.as_str().to_owned());
                    assert!(q.len() <= cap, "queue of {to} over its bound");
                }
                Output::WantDrained { session } => {
                    self.asked.insert(session);
                }
                Output::Pause { session } => {
                    assert!(self.paused.insert(session), "paused twice");
                }
                Output::Resume { session } => {
                    assert!(self.paused.remove(&session), "resumed while running");
                }
                Output::Close { session, reason } => {
                    assert!(
                        self.closed.insert(session, reason).is_none(),
                        "closed twice"
                    );
                }
                Output::Forget { session } => {
                    assert!(self.forgotten.insert(session));
                }
                Output::Answer { session, reply } => {
                    assert!(
                        self.answers.insert(session, reply).is_none(),
                        "answered twice"
                    );
                }
                Output::Cluster(out) => self.bridge.push(out),
            }
        }
    }

    fn join(&mut self, rm: &str, p: &str, session: SessionId) -> Reply {
        self.cmd(Command::Join {
            room: room(rm),
            peer: peer(p),
            session,
            resume: None,
            token: None,
        })
    }

    fn relay(&mut self, session: SessionId, to: &str, text: &str) {
        self.cmd(Command::Relay {
            session,
            kind: RelayKind::Offer,
            target: peer(to),
            text: Text::relayed(text.to_owned(), self.now, session),
        });
    }

    fn leave(&mut self, session: SessionId) {
        self.cmd(Command::Leave {
            session,
            reason: CloseReason::ClientClosed(1000),
            unsent: Vec::new(),
            ack: None,
        });
    }

    /// The session takes everything off its queue (and reports if asked to).
    fn take(&mut self, session: SessionId) -> Vec<String> {
        let got = std::mem::take(self.queues.entry(session).or_default());
        *self.taken.entry(session).or_default() += got.len();
        if self.asked.remove(&session) {
            let taken = std::mem::take(self.taken.entry(session).or_default());
            self.cmd(Command::Drained { session, taken });
        }
        got
    }

    /// Takes until nothing more arrives (a session that keeps reading).
    fn take_all(&mut self, session: SessionId) -> Vec<String> {
        let mut all = Vec::new();
        loop {
            let got = self.take(session);
            if got.is_empty() && !self.asked.contains(&session) {
                return all;
            }
            all.extend(got);
        }
    }
}

fn joined(p: &str) -> String {
    format!(r#"{{"type":"peer_joined","peer_id":"{p}"}}"#)
}
fn left(p: &str) -> String {
    format!(r#"{{"type":"peer_left","peer_id":"{p}"}}"#)
}

#[test]
fn join_announces_both_ways_in_order() {
    let mut s = Sim::new(10, 10, 100);
    assert_eq!(s.join("r", "a", 1), Reply::Joined);
    assert_eq!(s.take(1), [r#"{"type":"existing_peers","peers":[]}"#]);
    s.join("r", "b", 2);
    s.join("r", "c", 3);
    assert_eq!(
        s.take(3),
        [r#"{"type":"existing_peers","peers":["a","b"]}"#]
    );
    assert_eq!(s.take(1), [joined("b"), joined("c")]);
    assert_eq!(
        s.take(2),
        [
            r#"{"type":"existing_peers","peers":["a"]}"#.to_owned(),
            joined("c")
        ]
    );
}

#[test]
fn duplicate_and_limits_are_refused_without_side_effects() {
    let mut s = Sim::new(3, 2, 100);
    s.join("r", "a", 1);
    s.take(1);
    assert_eq!(
        s.join("r", "a", 2),
        Reply::Refused(CloseReason::PeerIdTaken)
    );
    assert!(s.take(2).is_empty());
    assert!(s.take(1).is_empty(), "the first session is untouched");
    s.join("r", "b", 3);
    assert_eq!(s.join("r", "c", 4), Reply::Refused(CloseReason::RoomFull));
    s.join("other", "c", 5);
    assert_eq!(
        s.join("third", "d", 6),
        Reply::Refused(CloseReason::ServerFull)
    );
    assert_eq!(s.r.sessions(), 3);
    assert_eq!(
        s.cmd(Command::ListPeers {
            room: room("third")
        }),
        Reply::Peers(None),
        "a refused join leaves no room behind"
    );
}

#[test]
fn relay_reaches_target_only_and_unknown_target_errors() {
    let mut s = Sim::new(10, 10, 100);
    s.join("r", "a", 1);
    s.join("r", "b", 2);
    s.join("other", "x", 3);
    for id in [1, 2, 3] {
        s.take(id);
    }
    s.relay(1, "b", "hello");
    assert_eq!(s.take(2), ["hello"]);
    s.relay(1, "x", "nope");
    s.relay(1, "a", "self");
    let errs = s.take(1);
    assert_eq!(errs.len(), 2);
    assert!(errs
        .iter()
        .all(|e| e.contains(r#""code":"peer_not_found""#)));
    assert!(s.take(3).is_empty(), "rooms are isolated");
}

#[test]
fn leave_announces_once_and_empties_room() {
    let mut s = Sim::new(10, 10, 100);
    s.join("r", "a", 1);
    s.join("r", "b", 2);
    s.take(1);
    s.leave(99); // an unknown session changes nothing
    assert!(s.take(1).is_empty());
    s.leave(2);
    s.leave(2);
    assert_eq!(s.take(1), [left("b")]);
    assert!(s.forgotten.contains(&2));
    s.leave(1);
    assert_eq!(s.cmd(Command::ListRooms), Reply::Rooms(vec![]));
    assert_eq!(s.r.sessions(), 0);
}

#[test]
fn nothing_from_a_peer_after_it_left() {
    let mut s = Sim::new(10, 10, 100);
    s.join("r", "a", 1);
    s.join("r", "b", 2);
    s.leave(2);
    // b rejoins with a new session; the old session's late relay is dropped.
    s.join("r", "b", 3);
    s.take(1);
    s.relay(2, "a", "stale");
    s.relay(3, "a", "fresh");
    assert_eq!(s.take(1), ["fresh"]);
}

#[test]
fn a_full_queue_backlogs_in_order_and_pauses_the_sender_until_drained() {
    let mut s = Sim::new(10, 10, 4);
    s.join("r", "a", 1);
    s.join("r", "b", 2);
    s.take(1);
    // b's queue: existing_peers + 3 relays fill it; the rest waits in the router.
    for i in 0..10 {
        s.relay(1, "b", &format!("m{i}"));
    }
    assert!(s.paused.contains(&1), "the sender is paused, not dropped");
    assert!(s.closed.is_empty());
    let got = s.take_all(2);
    let want: Vec<String> = std::iter::once(r#"{"type":"existing_peers","peers":["a"]}"#.into())
        .chain((0..10).map(|i| format!("m{i}")))
        .collect();
    assert_eq!(got, want, "FIFO across queue and backlog");
    assert!(!s.paused.contains(&1), "resumed once the backlog is gone");
}

#[test]
fn a_delivery_straight_to_the_socket_gives_its_slot_back() {
    let mut s = Sim::new(10, 10, 4);
    s.join("r", "a", 1);
    s.join("r", "b", 2);
    s.take(1);
    s.take(2);
    // b sleeps with its gate open: far more relays than its queue holds go through,
    // and nobody is paused.
    s.direct.insert(2);
    for i in 0..100 {
        s.relay(1, "b", &format!("m{i}"));
    }
    let want: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    assert_eq!(s.wire.remove(&2).unwrap_or_default(), want);
    assert!(s.paused.is_empty() && s.closed.is_empty());
    // Awake (gate shut): its queue and credit count again.
    s.direct.remove(&2);
    s.take(2);
    for i in 100..110 {
        s.relay(1, "b", &format!("m{i}"));
    }
    assert!(
        s.paused.contains(&1),
        "four slots, then the backlog pauses a"
    );
    let want: Vec<String> = (100..110).map(|i| format!("m{i}")).collect();
    assert_eq!(s.take_all(2), want);
    assert!(s.paused.is_empty());
    // A held or unknown session's refund changes nothing.
    s.r.written(99, 1);
}

#[test]
fn a_backlog_drains_through_an_open_gate_without_more_reports() {
    let mut s = Sim::new(10, 10, 4);
    s.join("r", "a", 1);
    s.join("r", "b", 2);
    s.take(1);
    s.take(2);
    // b is awake and busy: its queue fills, the rest waits in the router, a is paused.
    for i in 0..20 {
        s.relay(1, "b", &format!("m{i}"));
    }
    assert!(s.paused.contains(&1));
    // b takes its queue, reports, and sleeps with its gate open: what its report
    // moves goes to the socket, and so does the rest of the backlog, with no report.
    s.direct.insert(2);
    let mut got = s.take(2);
    got.extend(s.wire.remove(&2).unwrap_or_default());
    let want: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);
    assert!(s.paused.is_empty(), "a goes on once the backlog is gone");
}

#[test]
fn the_credit_is_refilled_by_reports_so_a_reading_peer_is_never_backlogged() {
    let mut s = Sim::new(10, 10, 8);
    s.join("r", "a", 1);
    s.join("r", "b", 2);
    s.take(1);
    s.take(2);
    for i in 0..1000 {
        s.relay(1, "b", &format!("m{i}"));
        if i % 3 == 0 {
            s.take(2);
        }
    }
    assert!(s.paused.is_empty() && s.closed.is_empty());
}

#[test]
fn a_stalled_peer_with_a_backlog_is_a_slow_consumer_and_the_room_hears_once() {
    let mut s = Sim::new(10, 10, 2);
    s.join("r", "a", 1);
    s.join("r", "slow", 2);
    s.join("r", "c", 3);
    s.take_all(1);
    s.take_all(3);
    // slow: existing_peers + peer_joined c fill its queue; its socket is full too.
    s.cmd(Command::Stalled {
        session: 2,
        stalled: true,
    });
    assert!(s.closed.is_empty(), "a full socket alone drops nobody");
    s.relay(1, "slow", "one");
    assert_eq!(s.closed.get(&2), Some(&CloseReason::SlowConsumer));
    assert!(
        !s.paused.contains(&1),
        "the sender is let go with the slow peer"
    );
    assert_eq!(s.take(1), [left("slow")]);
    assert_eq!(s.take(3), [left("slow")]);
    s.relay(1, "slow", "three");
    assert!(s.take(1)[0].contains("peer_not_found"));
    assert_eq!(s.r.sessions(), 2);
}

#[test]
fn stalling_with_a_backlog_already_waiting_evicts_at_once() {
    let mut s = Sim::new(10, 10, 1);
    s.join("r", "a", 1);
    s.join("r", "b", 2);
    s.take(1);
    s.relay(1, "b", "x");
    assert!(s.paused.contains(&1));
    s.cmd(Command::Stalled {
        session: 2,
        stalled: true,
    });
    assert_eq!(s.closed.get(&2), Some(&CloseReason::SlowConsumer));
    assert!(s.paused.is_empty());
}

#[test]
fn a_backlog_at_its_bound_is_a_slow_consumer_even_with_a_writable_socket() {
    let mut s = Sim::with(RouterLimits {
        max_sessions: 10,
        max_room_peers: 10,
        peer_queue: 2,
        max_backlog: 3,
        resume_grace: Duration::ZERO,
    });
    s.join("r", "a", 1);
    s.join("r", "b", 2);
    s.take(1);
    for i in 0..4 {
        s.relay(1, "b", &format!("m{i}"));
    }
    assert!(
        s.closed.is_empty(),
        "queue 2 (welcome + m0) + backlog 3 hold 4"
    );
    s.relay(1, "b", "m4");
    s.relay(1, "b", "m5");
    assert_eq!(s.closed.get(&2), Some(&CloseReason::SlowConsumer));
}

#[test]
fn cascading_slow_consumers_each_get_one_peer_left() {
    let mut s = Sim::new(10, 10, 3);
    s.join("r", "a", 1);
    s.join("r", "b", 2);
    s.join("r", "c", 3);
    s.join("r", "d", 4);
    s.take(1);
    s.take(4);
    // b: existing_peers + 2 joins = full; c: existing_peers + 1 join + (full after one
    // more). Both sockets are full.
    for id in [2, 3] {
        s.cmd(Command::Stalled {
            session: id,
            stalled: true,
        });
    }
    s.leave(1);
    assert_eq!(s.closed.get(&2), Some(&CloseReason::SlowConsumer));
    assert_eq!(s.closed.get(&3), Some(&CloseReason::SlowConsumer));
    let mut got = s.take_all(4);
    got.sort();
    assert_eq!(got, [left("a"), left("b"), left("c")]);
    assert_eq!(s.r.sessions(), 1);
}

#[test]
fn peer_left_comes_after_everything_the_peer_sent() {
    let mut s = Sim::new(10, 10, 2);
    s.join("r", "a", 1);
    s.join("r", "b", 2);
    s.take(1);
    for i in 0..5 {
        s.relay(1, "b", &format!("m{i}"));
    }
    s.leave(1);
    let got = s.take_all(2);
    assert_eq!(got.last(), Some(&left("a")));
    assert_eq!(got.len(), 1 + 5 + 1, "{got:?}");
}

#[test]
fn listings_are_sorted_and_in_join_order() {
    let mut s = Sim::new(10, 10, 10);
    s.join("zeta", "z", 1);
    s.join("alpha", "p2", 2);
    s.join("alpha", "p1", 3);
    assert_eq!(
        s.cmd(Command::ListRooms),
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
        s.cmd(Command::ListPeers {
            room: room("alpha")
        }),
        Reply::Peers(Some(vec![peer("p2"), peer("p1")]))
    );
}

fn kick(s: &mut Sim, rm: &str, p: Option<&str>) -> Reply {
    s.cmd(Command::Kick {
        room: room(rm),
        peer: p.map(peer),
    })
}

#[test]
fn kick_one_peer_closes_it_and_tells_the_room_once() {
    let mut s = Sim::new(10, 10, 100);
    for (p, id) in [("a", 1), ("b", 2), ("c", 3)] {
        s.join("r", p, id);
    }
    for id in [1, 2, 3] {
        s.take(id);
    }
    assert_eq!(kick(&mut s, "r", Some("b")), Reply::Kicked(vec![peer("b")]));
    assert_eq!(s.closed.get(&2), Some(&CloseReason::Kicked));
    assert!(s.take(2).is_empty(), "the kicked peer hears no peer_left");
    for other in [1, 3] {
        assert_eq!(s.take(other), [left("b")]);
    }
    // The kicked session's own Leave and late relays change nothing.
    s.leave(2);
    s.relay(2, "a", "late");
    assert!(s.take(1).is_empty() && s.take(3).is_empty());
    assert_eq!(s.r.sessions(), 2);
    assert_eq!(s.join("r", "b", 4), Reply::Joined, "the id is free at once");
    assert_eq!(kick(&mut s, "r", Some("zz")), Reply::PeerNotFound);
    assert_eq!(kick(&mut s, "nope", Some("a")), Reply::RoomNotFound);
    assert_eq!(kick(&mut s, "nope", None), Reply::RoomNotFound);
}

#[test]
fn kick_a_room_closes_everyone_in_it_without_peer_left_noise() {
    let mut s = Sim::new(10, 10, 100);
    s.join("r", "a", 1);
    s.join("r", "b", 2);
    s.join("other", "x", 3);
    for id in [1, 2, 3] {
        s.take(id);
    }
    assert_eq!(
        kick(&mut s, "r", None),
        Reply::Kicked(vec![peer("a"), peer("b")])
    );
    assert_eq!(s.closed.get(&1), Some(&CloseReason::Kicked));
    assert_eq!(s.closed.get(&2), Some(&CloseReason::Kicked));
    assert!(!s.closed.contains_key(&3), "other rooms are untouched");
    assert!(s.take(1).is_empty() && s.take(2).is_empty() && s.take(3).is_empty());
    assert_eq!(s.r.sessions(), 1);
    // Late Leaves of the kicked sessions do not touch a room re-made under the name.
    s.join("r", "a", 4);
    s.take(4);
    s.leave(1);
    s.leave(2);
    assert!(s.take(4).is_empty());
    assert_eq!(s.r.sessions(), 2);
}

#[test]
fn shutdown_closes_everyone_and_refuses_joins() {
    let mut s = Sim::new(10, 10, 10);
    s.join("r", "a", 1);
    s.join("r", "b", 2);
    s.take(1);
    s.cmd(Command::Shutdown);
    assert_eq!(s.closed.get(&1), Some(&CloseReason::GoingAway));
    assert_eq!(s.closed.get(&2), Some(&CloseReason::GoingAway));
    assert_eq!(s.join("r", "c", 3), Reply::Refused(CloseReason::GoingAway));
    s.leave(2);
    assert!(s.take(1).is_empty(), "no peer_left while shutting down");
    assert_eq!(s.r.sessions(), 0);
}

#[test]
fn a_peer_held_by_its_own_error_replies_resumes_when_it_reads_them() {
    let mut s = Sim::new(10, 10, 2);
    s.join("r", "a", 1);
    for i in 0..6 {
        s.relay(1, "nobody", &format!("m{i}"));
    }
    assert!(s.paused.contains(&1));
    let got = s.take_all(1);
    assert_eq!(got.len(), 7);
    assert!(got[1..].iter().all(|e| e.contains("peer_not_found")));
    assert!(s.paused.is_empty() && s.closed.is_empty());
}

#[test]
fn a_sender_held_by_two_targets_resumes_only_when_both_are_drained() {
    let mut s = Sim::new(10, 10, 1);
    s.join("r", "a", 1);
    s.join("r", "b", 2);
    s.join("r", "c", 3);
    s.take_all(1);
    s.relay(1, "b", "x");
    s.relay(1, "c", "y");
    assert!(s.paused.contains(&1));
    s.take_all(2);
    assert!(s.paused.contains(&1), "c still holds a");
    s.take_all(3);
    assert!(!s.paused.contains(&1));
}

#[path = "resume_tests.rs"]
mod resume;

#[path = "cluster_tests.rs"]
mod cluster;
