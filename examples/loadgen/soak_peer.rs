//! One `soak` peer across its sessions: who it believes is in its room, the relay
//! streams it sent and received, the offers it sends, and the checks on everything
//! it receives (order, loss, relays outside a sender's membership).

use std::collections::{BTreeMap, HashMap};
use std::io;

use serde_json::Value;
use tungstenite::Message;

use crate::net::{close_desc, Ws};
use crate::report::{now_ns, Samples};

/// A peer's index in the run; its peer id is `p<slot>`.
pub type Slot = usize;

pub fn peer_id(slot: Slot) -> String {
    format!("p{slot}")
}

fn slot_of(id: &str) -> Option<Slot> {
    id.strip_prefix('p')?.parse().ok()
}

/// What one session knows of a room-mate: how many of the mate's sessions have
/// joined so far, and whether the latest one is in the room. Session `k` of a peer
/// is its `k+1`-th successful join.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub sessions: u32,
    pub present: bool,
}

/// Offers from one session of a sender to one session of a receiver (the one the
/// sender believed present); sequence numbers count from 0 within it.
pub struct TxStream {
    pub to: Slot,
    pub to_session: u32,
    pub session: u32,
    /// The sender's URL for that session.
    pub url: usize,
    pub sent: u64,
}

/// The receiving end of a stream: the next sequence number in order, how many
/// distinct ones arrived, and the holes that later ones jumped over.
#[derive(Default)]
pub struct RxStream {
    pub next: u64,
    pub received: u64,
    pub gaps: Vec<(u64, u64)>,
}

/// Key of a received stream: (sender, sender's session, receiver's session it was
/// addressed to).
pub type RxKey = (Slot, u32, u32);

/// Counts of one thread for the peers of one URL; summed at the end.
pub struct Tally {
    pub sent: u64,
    pub received: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub after_left: u64,
    pub before_joined: u64,
    pub invalid: u64,
    pub joined_seen: u64,
    pub left_seen: u64,
    pub view_anomalies: u64,
    pub errors: BTreeMap<String, u64>,
    pub closes: BTreeMap<String, u64>,
    pub other: BTreeMap<String, u64>,
    pub latency: Samples,
    /// The first few violations, in words, for the report.
    pub examples: Vec<String>,
}

impl Tally {
    pub fn new(sample_cap: usize) -> Tally {
        Tally {
            sent: 0,
            received: 0,
            duplicated: 0,
            reordered: 0,
            after_left: 0,
            before_joined: 0,
            invalid: 0,
            joined_seen: 0,
            left_seen: 0,
            view_anomalies: 0,
            errors: BTreeMap::new(),
            closes: BTreeMap::new(),
            other: BTreeMap::new(),
            latency: Samples::new(sample_cap),
            examples: Vec::new(),
        }
    }

    fn example(&mut self, s: String) {
        if self.examples.len() < 5 {
            self.examples.push(s);
        }
    }
}

/// A short SDP: the soak checks relays, not payload sizes.
const SDP: &str = "v=0\\r\\no=- 4611731400430051336 2 IN IP4 127.0.0.1\\r\\ns=-\\r\\nt=0 0\\r\\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\\r\\nc=IN IP4 0.0.0.0\\r\\na=ice-ufrag:EsAw\\r\\na=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\\r\\na=setup:actpass\\r\\na=mid:0\\r\\n";

pub struct Peer {
    pub slot: Slot,
    pub room: usize,
    /// Index of the current (or, while away, the last) session.
    pub session: u32,
    pub url: usize,
    pub ws: Option<Ws>,
    /// The current session's view of its room-mates.
    pub mates: BTreeMap<Slot, Seen>,
    turn: usize,
    pub tx: Vec<TxStream>,
    /// The current session's streams by (receiver, receiver's session): index in `tx`.
    current: HashMap<(Slot, u32), usize>,
    pub rx: HashMap<RxKey, RxStream>,
    /// Why the server ended the current session, if it did.
    pub ended: Option<String>,
    /// Bytes wait in the write buffers: the socket is polled for writability.
    pub want_write: bool,
}

impl Peer {
    pub fn new(slot: Slot, room: usize, url: usize) -> Peer {
        Peer {
            slot,
            room,
            session: 0,
            url,
            ws: None,
            mates: BTreeMap::new(),
            turn: 0,
            tx: Vec::new(),
            current: HashMap::new(),
            rx: HashMap::new(),
            ended: None,
            want_write: false,
        }
    }

    /// A new session joined: its view starts from what `existing_peers` told it.
    pub fn start_session(&mut self, ws: Ws, session: u32, url: usize, mates: BTreeMap<Slot, Seen>) {
        self.ws = Some(ws);
        self.session = session;
        self.url = url;
        self.mates = mates;
        self.current.clear();
        self.turn = 0;
        self.ended = None;
        self.want_write = false;
    }

    pub fn alive(&self) -> bool {
        self.ws.is_some() && self.ended.is_none()
    }

    /// The mates this session believes present, with their session index.
    pub fn present(&self) -> impl Iterator<Item = (Slot, u32)> + '_ {
        self.mates
            .iter()
            .filter(|(_, s)| s.present && s.sessions > 0)
            .map(|(&m, s)| (m, s.sessions - 1))
    }

    /// Sends one offer to the next present mate in turn (none: nothing to do).
    pub fn send_next(&mut self, tally: &mut Tally) -> Result<(), String> {
        let mates: Vec<(Slot, u32)> = self.present().collect();
        if mates.is_empty() || !self.alive() {
            return Ok(());
        }
        let (to, to_session) = mates[self.turn % mates.len()];
        self.turn += 1;
        let idx = match self.current.get(&(to, to_session)) {
            Some(&i) => i,
            None => {
                self.tx.push(TxStream {
                    to,
                    to_session,
                    session: self.session,
                    url: self.url,
                    sent: 0,
                });
                self.current.insert((to, to_session), self.tx.len() - 1);
                self.tx.len() - 1
            }
        };
        let seq = self.tx[idx].sent;
        let text = format!(
            "{{\"type\":\"offer\",\"offer\":{{\"type\":\"offer\",\"sdp\":\"{SDP}\",\"lg\":[{},{},{to_session},{seq},{}]}},\"target_peer_id\":\"p{to}\"}}",
            self.slot,
            self.session,
            now_ns()
        );
        let Some(ws) = self.ws.as_mut() else {
            return Ok(());
        };
        match ws.write(Message::text(text)) {
            Ok(()) => {}
            // The frame is in tungstenite's buffer; the socket is full for now.
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("write: {e}")),
        }
        self.tx[idx].sent += 1;
        tally.sent += 1;
        self.flush()
    }

    /// Writes out what is buffered; `want_write` says whether some is left.
    pub fn flush(&mut self) -> Result<(), String> {
        let Some(ws) = self.ws.as_mut() else {
            return Ok(());
        };
        match ws.flush() {
            Ok(()) => self.want_write = false,
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.want_write = true
            }
            Err(e) => return Err(format!("write: {e}")),
        }
        Ok(())
    }

    /// Reads every complete message without blocking (which also answers pings).
    pub fn service(&mut self, tally: &mut Tally) {
        loop {
            let Some(ws) = self.ws.as_mut() else {
                return;
            };
            match ws.read() {
                Ok(Message::Text(t)) => self.on_text(t.as_str(), now_ns(), tally),
                Ok(Message::Close(f)) => {
                    let why = format!("close {}", close_desc(f));
                    *tally.closes.entry(why.clone()).or_default() += 1;
                    self.ended = Some(why);
                    return;
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    let why = format!("connection lost: {e}");
                    *tally.closes.entry(why.clone()).or_default() += 1;
                    self.ended = Some(why);
                    return;
                }
            }
        }
        // A pong queued by the reads above goes out now (or when writable).
        if let Err(e) = self.flush() {
            *tally.closes.entry(e.clone()).or_default() += 1;
            self.ended = Some(e);
        }
    }

    /// Everything a session receives after `existing_peers`.
    pub fn on_text(&mut self, text: &str, now: u64, tally: &mut Tally) {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            tally.invalid += 1;
            return;
        };
        let kind = v["type"].as_str().unwrap_or("?");
        match kind {
            "offer" => self.on_offer(&v, now, tally),
            "peer_joined" | "peer_left" => {
                let Some(m) = v["peer_id"].as_str().and_then(slot_of) else {
                    tally.invalid += 1;
                    return;
                };
                let slot = self.slot;
                let joined = kind == "peer_joined";
                if joined {
                    tally.joined_seen += 1;
                } else {
                    tally.left_seen += 1;
                }
                let Some(seen) = self.mates.get_mut(&m) else {
                    tally.view_anomalies += 1;
                    tally.example(format!("p{slot} got {kind} p{m}, not of its room"));
                    return;
                };
                if seen.present == joined {
                    tally.view_anomalies += 1;
                    let state = if joined { "present" } else { "absent" };
                    tally.example(format!(
                        "p{slot} got {kind} p{m}, {state} as far as it knew"
                    ));
                    return;
                }
                seen.present = joined;
                if joined {
                    seen.sessions += 1;
                }
            }
            "error" => {
                let code = v["code"].as_str().unwrap_or("?").to_string();
                *tally.errors.entry(code).or_default() += 1;
            }
            other => *tally.other.entry(other.to_string()).or_default() += 1,
        }
    }

    fn on_offer(&mut self, v: &Value, now: u64, tally: &mut Tally) {
        let lg: Vec<u64> = v["offer"]["lg"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        let &[from, from_session, to_session, seq, ts] = lg.as_slice() else {
            tally.invalid += 1;
            return;
        };
        let (from, from_session, to_session) =
            (from as Slot, from_session as u32, to_session as u32);
        if v["from_peer_id"].as_str().and_then(slot_of) != Some(from)
            || v["target_peer_id"].as_str().and_then(slot_of) != Some(self.slot)
            || to_session > self.session
        {
            tally.invalid += 1;
            return;
        }
        // PROTOCOL.md §3: a relay only from a sender session this session has seen
        // join (existing_peers or peer_joined) and not yet seen leave.
        let slot = self.slot;
        match self.mates.get(&from) {
            Some(s) if s.present && s.sessions == from_session + 1 => {}
            Some(s) if from_session + 1 > s.sessions => {
                tally.before_joined += 1;
                tally.example(format!(
                    "p{slot} got a relay from session {from_session} of p{from} before its peer_joined"
                ));
            }
            Some(_) => {
                tally.after_left += 1;
                tally.example(format!(
                    "p{slot} got a relay from session {from_session} of p{from} after its peer_left"
                ));
            }
            None => {
                tally.invalid += 1;
                return;
            }
        }
        let st = self.rx.entry((from, from_session, to_session)).or_default();
        if seq == st.next {
            st.next += 1;
        } else if seq > st.next {
            st.gaps.push((st.next, seq));
            st.next = seq + 1;
        } else if let Some(i) = st.gaps.iter().position(|&(a, b)| a <= seq && seq < b) {
            // Late: it fills a hole that later relays had jumped over.
            let (a, b) = st.gaps.remove(i);
            if seq + 1 < b {
                st.gaps.insert(i, (seq + 1, b));
            }
            if a < seq {
                st.gaps.insert(i, (a, seq));
            }
            tally.reordered += 1;
            tally.example(format!(
                "p{slot} got relay {seq} of p{from} (session {from_session}) after a later one"
            ));
        } else {
            tally.duplicated += 1;
            tally.example(format!(
                "p{slot} got relay {seq} of p{from} (session {from_session}) twice"
            ));
            return;
        }
        st.received += 1;
        tally.received += 1;
        tally.latency.push(now.saturating_sub(ts));
    }

    /// Drain check: every relay of `streams` arrived, in order, and this session's
    /// view of the room is `mates`. A session the server ended has nothing more to
    /// wait for.
    pub fn settled(&self, streams: &[(RxKey, u64)], mates: &BTreeMap<Slot, u32>) -> bool {
        if !self.alive() {
            return true;
        }
        let all_in = streams.iter().all(|(key, sent)| {
            self.rx
                .get(key)
                .map_or(*sent == 0, |r| r.next >= *sent && r.gaps.is_empty())
        });
        all_in && self.present().eq(mates.iter().map(|(&m, &s)| (m, s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(from: Slot, fs: u32, to: Slot, ts: u32, seq: u64) -> String {
        format!(
            "{{\"type\":\"offer\",\"offer\":{{\"type\":\"offer\",\"sdp\":\"x\",\"lg\":[{from},{fs},{ts},{seq},0]}},\"target_peer_id\":\"p{to}\",\"from_peer_id\":\"p{from}\"}}"
        )
    }

    #[test]
    fn order_loss_and_membership() {
        let mut p = Peer::new(1, 0, 0);
        p.mates.insert(
            0,
            Seen {
                sessions: 1,
                present: true,
            },
        );
        let mut t = Tally::new(100);
        for seq in [0, 1, 3, 2, 3] {
            p.on_text(&relay(0, 0, 1, 0, seq), 1, &mut t);
        }
        assert_eq!((t.received, t.reordered, t.duplicated), (4, 1, 1));
        let st = &p.rx[&(0, 0, 0)];
        assert!(st.gaps.is_empty() && st.next == 4);
        p.on_text(&relay(0, 0, 1, 0, 6), 1, &mut t);
        assert_eq!(p.rx[&(0, 0, 0)].gaps, vec![(4, 6)]);
        // Session 1 of p0 before its peer_joined, then session 0 after its peer_left.
        p.on_text(&relay(0, 1, 1, 0, 0), 1, &mut t);
        assert_eq!(t.before_joined, 1);
        p.on_text("{\"type\":\"peer_left\",\"peer_id\":\"p0\"}", 1, &mut t);
        p.on_text(&relay(0, 0, 1, 0, 7), 1, &mut t);
        assert_eq!(t.after_left, 1);
        p.on_text("{\"type\":\"peer_joined\",\"peer_id\":\"p0\"}", 1, &mut t);
        p.on_text(&relay(0, 1, 1, 0, 1), 1, &mut t);
        assert_eq!((t.after_left, t.before_joined, t.view_anomalies), (1, 1, 0));
        p.on_text("{\"type\":\"peer_joined\",\"peer_id\":\"p0\"}", 1, &mut t);
        assert_eq!(t.view_anomalies, 1);
        assert_eq!(p.present().collect::<Vec<_>>(), vec![(0, 1)]);
    }
}
