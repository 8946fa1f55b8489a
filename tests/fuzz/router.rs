//! A model test of the room state machine (`core::router::Router`, pure): commands
//! decoded from the input bytes, outputs carried out as the router thread would
//! (bounded queues, closes), and after every command the invariants: each peer
//! knows exactly the other members of its room (one `peer_joined` before anything
//! from a peer, one `peer_left` per departure and nothing from it after), messages
//! from one sender to one receiver arrive in order, the queue bound holds, and the
//! counts agree (`sessions()`, ListRooms, ListPeers).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use webrtc_signaling::core::router::{
    Command, Output, Reply, Router, RouterLimits, SessionId, Text,
};
use webrtc_signaling::protocol::{CloseReason, PeerId, RelayKind, RoomId};

const ROOMS: [&str; 3] = ["r0", "r1", "r2"];
const PEERS: [&str; 5] = ["a", "b", "c", "d", "e"];

#[derive(Default)]
struct Peer {
    room: String,
    name: String,
    queue: Vec<String>,
    /// The other members this peer has been told about, in order.
    knows: Vec<String>,
    asked: bool,
    taken: usize,
    /// Last sequence number received from each sender session.
    last_seq: HashMap<SessionId, u64>,
}

struct Model {
    r: Router,
    cap: usize,
    live: BTreeMap<SessionId, Peer>,
    gone: HashSet<SessionId>,
    next: SessionId,
    seq: u64,
    now: Instant,
}

fn field<'a>(v: &'a serde_json::Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

impl Model {
    fn cmd(&mut self, cmd: Command) -> Result<Reply, String> {
        let reply = self.r.handle(cmd, self.now);
        while let Some(out) = self.r.poll_output() {
            match out {
                Output::Deliver { to, text } => {
                    let p = self
                        .live
                        .get_mut(&to)
                        .ok_or(format!("delivery to ended session {to}"))?;
                    p.queue.push(text.as_str().to_owned());
                    if p.queue.len() > self.cap {
                        return Err(format!("queue of {to} over its bound"));
                    }
                }
                Output::WantDrained { session } => {
                    if let Some(p) = self.live.get_mut(&session) {
                        p.asked = true;
                    }
                }
                Output::Pause { .. } | Output::Resume { .. } => {}
                // Only with a cluster, which this model has none of.
                Output::Answer { .. } | Output::Cluster(_) => {
                    return Err("a cluster output without a cluster".into())
                }
                Output::Close { session, .. } | Output::Forget { session } => {
                    if self.live.remove(&session).is_none() {
                        return Err(format!("session {session} ended twice"));
                    }
                    self.gone.insert(session);
                }
            }
        }
        Ok(reply)
    }

    /// Session `s` takes everything off its queue and checks each message.
    fn take(&mut self, s: SessionId) -> Result<(), String> {
        loop {
            let Some(p) = self.live.get_mut(&s) else {
                return Ok(());
            };
            let msgs = std::mem::take(&mut p.queue);
            p.taken += msgs.len();
            for m in &msgs {
                let v: serde_json::Value =
                    serde_json::from_str(m).map_err(|e| format!("{e}: {m}"))?;
                match field(&v, "type") {
                    "existing_peers" => {
                        p.knows = v["peers"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|x| x.as_str().unwrap_or("").to_owned())
                            .collect();
                    }
                    "peer_joined" => {
                        let who = field(&v, "peer_id").to_owned();
                        if p.knows.contains(&who) {
                            return Err(format!("{}: peer_joined {who} twice", p.name));
                        }
                        p.knows.push(who);
                    }
                    "peer_left" => {
                        let who = field(&v, "peer_id");
                        let before = p.knows.len();
                        p.knows.retain(|k| k != who);
                        if p.knows.len() == before {
                            return Err(format!("{}: peer_left {who} without a join", p.name));
                        }
                    }
                    "offer" => {
                        let from = field(&v, "from_peer_id").to_owned();
                        if !p.knows.contains(&from) {
                            return Err(format!(
                                "{}: a message from {from}, not a member it knows",
                                p.name
                            ));
                        }
                        let sender = v["s"].as_u64().unwrap_or(0);
                        let seq = v["n"].as_u64().unwrap_or(0);
                        if p.last_seq.get(&sender).is_some_and(|&last| last >= seq) {
                            return Err(format!("{}: out of order from session {sender}", p.name));
                        }
                        p.last_seq.insert(sender, seq);
                    }
                    "error" => {}
                    other => return Err(format!("unexpected {other}")),
                }
            }
            let report = if p.asked {
                p.asked = false;
                Some(std::mem::take(&mut p.taken))
            } else {
                None
            };
            match report {
                Some(taken) => {
                    self.cmd(Command::Drained { session: s, taken })?;
                }
                None => return Ok(()),
            }
        }
    }

    fn check_counts(&mut self) -> Result<(), String> {
        if self.r.sessions() != self.live.len() {
            return Err(format!(
                "sessions() = {}, live {}",
                self.r.sessions(),
                self.live.len()
            ));
        }
        let Reply::Rooms(rooms) = self.cmd(Command::ListRooms)? else {
            return Err("ListRooms".into());
        };
        let total: usize = rooms.iter().map(|r| r.peer_count).sum();
        if total != self.live.len() {
            return Err(format!(
                "ListRooms counts {total}, live {}",
                self.live.len()
            ));
        }
        for room in ROOMS {
            let mut members: Vec<(SessionId, String)> = self
                .live
                .iter()
                .filter(|(_, p)| p.room == room)
                .map(|(s, p)| (*s, p.name.clone()))
                .collect();
            members.sort();
            let want: Vec<String> = members.into_iter().map(|(_, n)| n).collect();
            let got = match self.cmd(Command::ListPeers {
                room: RoomId::parse(room).map_err(|e| e.to_string())?,
            })? {
                Reply::Peers(Some(p)) => p.iter().map(|p| p.as_str().to_owned()).collect(),
                Reply::Peers(None) => Vec::new(),
                other => return Err(format!("ListPeers: {other:?}")),
            };
            if got != want {
                return Err(format!("ListPeers {room}: {got:?}, joined {want:?}"));
            }
        }
        Ok(())
    }
}

pub fn check(input: &[u8]) -> Result<(), String> {
    let cap = 1 + usize::from(input.first().copied().unwrap_or(0) % 4);
    let mut m = Model {
        r: Router::new(RouterLimits {
            max_sessions: 8,
            max_room_peers: 4,
            peer_queue: cap,
            max_backlog: 6,
            // Holds (PROTOCOL.md §8) have their own model in the router's unit tests
            // and tests/resume.rs; here every departure is final.
            resume_grace: Duration::ZERO,
        }),
        cap,
        live: BTreeMap::new(),
        gone: HashSet::new(),
        next: 1,
        seq: 0,
        now: Instant::now(),
    };
    let mut bytes = input.iter().copied().skip(1);
    let mut shutdown = false;
    while let Some(op) = bytes.next() {
        let arg = bytes.next().unwrap_or(0) as usize;
        let sessions: Vec<SessionId> = m
            .live
            .keys()
            .copied()
            .chain(m.gone.iter().copied())
            .collect();
        let pick = |i: usize| {
            sessions
                .get(i % sessions.len().max(1))
                .copied()
                .unwrap_or(0)
        };
        match op % 8 {
            0 | 1 => {
                let (room, peer) = (ROOMS[arg % 3], PEERS[(arg / 3) % 5]);
                let s = m.next;
                m.next += 1;
                let taken = shutdown || m.live.values().any(|p| p.room == room && p.name == peer);
                // In the table before the command: the welcome is delivered during it.
                m.live.insert(
                    s,
                    Peer {
                        room: room.into(),
                        name: peer.into(),
                        ..Peer::default()
                    },
                );
                let reply = m.cmd(Command::Join {
                    room: RoomId::parse(room).map_err(|e| e.to_string())?,
                    peer: PeerId::parse(peer).map_err(|e| e.to_string())?,
                    session: s,
                    resume: None,
                    token: None,
                })?;
                if reply == Reply::Joined && taken {
                    return Err(format!(
                        "joined {peer} in {room} while it should be refused"
                    ));
                }
                if reply != Reply::Joined {
                    m.live.remove(&s);
                }
            }
            2 | 3 => {
                let from = pick(arg);
                let to = PEERS[usize::from(bytes.next().unwrap_or(0)) % 5];
                m.seq += 1;
                let text = format!(
                    r#"{{"type":"offer","s":{from},"n":{},"from_peer_id":"{}"}}"#,
                    m.seq,
                    m.live.get(&from).map_or("gone", |p| p.name.as_str())
                );
                m.cmd(Command::Relay {
                    session: from,
                    kind: RelayKind::Offer,
                    target: PeerId::parse(to).map_err(|e| e.to_string())?,
                    text: Text::relayed(text, m.now, from),
                })?;
            }
            4 => m.take(pick(arg))?,
            5 => {
                // A close frame or a dropped connection: the same with no grace.
                let reason = if arg % 2 == 0 {
                    CloseReason::ClientClosed(1000)
                } else {
                    CloseReason::Disconnected
                };
                m.cmd(Command::Leave {
                    session: pick(arg),
                    reason,
                    unsent: Vec::new(),
                    ack: None,
                })?;
            }
            6 => {
                m.cmd(Command::Stalled {
                    session: pick(arg),
                    stalled: arg % 2 == 0,
                })?;
            }
            _ => match arg % 16 {
                0 => {
                    let room = RoomId::parse(ROOMS[(arg / 16) % 3]).map_err(|e| e.to_string())?;
                    m.cmd(Command::Kick { room, peer: None })?;
                }
                1..=3 => {
                    let room = RoomId::parse(ROOMS[arg % 3]).map_err(|e| e.to_string())?;
                    let peer = PeerId::parse(PEERS[(arg / 3) % 5]).map_err(|e| e.to_string())?;
                    m.cmd(Command::Kick {
                        room,
                        peer: Some(peer),
                    })?;
                }
                4 if arg > 200 => {
                    m.cmd(Command::Shutdown)?;
                    shutdown = true;
                }
                _ => m.check_counts()?,
            },
        }
    }
    // Everyone reads everything; then every peer knows exactly its room's members.
    for _ in 0..64 {
        let all: Vec<SessionId> = m.live.keys().copied().collect();
        for s in all {
            m.take(s)?;
        }
        m.cmd(Command::Stalled {
            session: 0,
            stalled: false,
        })?;
    }
    m.check_counts()?;
    for (s, p) in &m.live {
        let mut want: Vec<&str> = m
            .live
            .iter()
            .filter(|(o, q)| *o != s && q.room == p.room)
            .map(|(_, q)| q.name.as_str())
            .collect();
        let mut knows: Vec<&str> = p.knows.iter().map(String::as_str).collect();
        want.sort_unstable();
        knows.sort_unstable();
        if want != knows || !p.queue.is_empty() {
            return Err(format!(
                "{} in {} knows {knows:?}, the room has {want:?}",
                p.name, p.room
            ));
        }
    }
    Ok(())
}

pub const DICTIONARY: &[&[u8]] = &[
    &[0, 0],
    &[1, 3],
    &[4, 0],
    &[4, 1],
    &[5, 0],
    &[6, 0],
    &[7, 0],
    &[2, 0, 1],
];

pub fn generate() -> BoxedStrategy<Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..400).boxed()
}
