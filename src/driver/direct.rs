//! Delivery straight to a sleeping session's socket: the gate a plain-TCP session
//! opens while it sleeps with nothing to write, through which the router thread
//! writes messages to the socket itself instead of queueing them and waking the
//! session's thread.
//!
//! Why: a relay used to cost two thread hand-offs (the sender's thread to the router,
//! the router to the receiver's thread) and a signal. Most relays find their receiver
//! idle, its queue empty and its socket with room, so the second hand-off (a signal,
//! a context switch, a queue round trip) bought nothing. The router stages frames in
//! the gate and writes them when it is about to sleep (at least every few turns under
//! load): a burst is one `send(2)` per session, as it was from the session's thread.
//! It never blocks (the socket is non-blocking) and hands over to the session
//! whatever the socket does not take at once, so the router still never waits for a
//! client. What a gate holds counts against the session's queue bound until written.
//!
//! The rules, all under one lock per session:
//! - the session opens the gate only while it sleeps in `ppoll`, with its queue empty,
//!   nothing pending for the socket and its session open; it closes the gate as soon
//!   as it wakes, before it touches the socket, and takes what the router staged but
//!   did not write yet, to write before anything else. So while the gate is open the
//!   router is the only writer, and frames never interleave;
//! - the router pushes onto the session's queue under the same lock, so a message
//!   staged through the gate can never be overtaken by a queued one;
//! - a write the socket takes only in part, or refuses (full, or failed), shuts the
//!   gate and wakes the session, which finds the rest staged, and the socket's state.
//!
//! TLS sessions have no gate: their records are the session's own state.

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::queue::{QueueTx, TrySendError};
use crate::core::router::Text;
use crate::metrics::Metrics;

/// A session's gate, shared by the router (which writes through it) and the session
/// thread (which opens and closes it).
pub struct Direct {
    gate: Mutex<Gate>,
    metrics: Arc<Metrics>,
}

struct Gate {
    /// The session sleeps with nothing to write: the router may write.
    open: bool,
    /// The session's socket, until its session ends.
    socket: Option<Arc<TcpStream>>,
    /// Frames the router took for this session and has not written yet.
    staged: Vec<u8>,
}

/// What became of a delivery.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Staged for the socket: [`Direct::flush`] writes it at the end of the turn.
    Staged,
    /// On the session's queue: the session must wake.
    Queued,
    /// Not queued: the queue is at its bound (the router counts, so a bug) or gone.
    Refused(TrySendError<Text>),
}

impl Delivery {
    /// Onto the session's queue: the path without a gate, or with a shut one.
    pub fn queue(text: Text, queue: &QueueTx<Text>) -> Delivery {
        match queue.try_send(text) {
            Ok(()) => Delivery::Queued,
            Err(e) => Delivery::Refused(e),
        }
    }
}

impl Direct {
    /// A shut gate, with no socket yet (see [`Direct::attach`]).
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Direct {
            gate: Mutex::new(Gate {
                open: false,
                socket: None,
                staged: Vec::new(),
            }),
            metrics,
        }
    }

    /// The session's socket, once the session has it (after its upgrade).
    pub fn attach(&self, socket: Arc<TcpStream>) {
        self.lock().socket = Some(socket);
    }

    /// The gate, even after a panic elsewhere: every operation leaves it consistent.
    fn lock(&self) -> MutexGuard<'_, Gate> {
        self.gate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// On the router thread: stages `text` for the socket if the gate is open, else
    /// queues it.
    pub fn deliver(&self, text: Text, queue: &QueueTx<Text>) -> Delivery {
        let mut gate = self.lock();
        if gate.open {
            frame(text.as_str().as_bytes(), &mut gate.staged);
            if let Some(at) = text.read_at() {
                // Measured when staged: the router writes it before it next sleeps
                // (or the session does, if it wakes first), within 8 turns.
                self.metrics
                    .relay_latency(Instant::now().saturating_duration_since(at));
            }
            return Delivery::Staged;
        }
        Delivery::queue(text, queue)
    }

    /// On the router thread, at the end of a turn: writes what was staged, if the
    /// gate is still open. `true` if the session must wake to write the rest (the
    /// gate is then shut).
    pub fn flush(&self) -> bool {
        let mut gate = self.lock();
        if !gate.open || gate.staged.is_empty() {
            return false;
        }
        let written = match &gate.socket {
            Some(socket) => write_some(socket, &gate.staged),
            None => Err(io::ErrorKind::NotConnected.into()),
        };
        match written {
            Ok(n) if n == gate.staged.len() => {
                self.metrics.sent(n);
                // An idle peer keeps no buffer.
                gate.staged = Vec::new();
                false
            }
            Ok(n) => {
                self.metrics.sent(n);
                gate.staged.drain(..n);
                gate.open = false;
                true
            }
            // Full or failed: the session finds out when it wakes.
            Err(_) => {
                gate.open = false;
                true
            }
        }
    }

    /// On the session thread, about to sleep with nothing to write: opens the gate
    /// unless `queue_empty` (asked under the gate's lock) says a message came.
    /// `true` if the gate is open.
    pub fn open(&self, queue_empty: impl FnOnce() -> bool) -> bool {
        let mut gate = self.lock();
        if gate.socket.is_none() || !gate.staged.is_empty() || !queue_empty() {
            return false;
        }
        gate.open = true;
        true
    }

    /// On the session thread, awake: shuts the gate and returns what the router
    /// staged but did not write, to be written before anything else.
    pub fn close(&self) -> Vec<u8> {
        let mut gate = self.lock();
        gate.open = false;
        std::mem::take(&mut gate.staged)
    }

    /// The session is over: the router never writes again, and the socket is the
    /// session's alone to close.
    pub fn retire(&self) {
        let mut gate = self.lock();
        gate.open = false;
        gate.socket = None;
    }
}

/// One `send(2)`, retried only when a signal interrupts it; never blocks (the
/// session set the socket non-blocking) and never raises SIGPIPE (std sends with
/// `MSG_NOSIGNAL`).
fn write_some(socket: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    loop {
        match (&mut &*socket).write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// A server's WebSocket text frame (final, unmasked) of `payload`, appended to `out`;
/// the header is tungstenite's, the one the sessions' codec writes.
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    use tungstenite::protocol::frame::FrameHeader;
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Text),
        ..FrameHeader::default()
    };
    out.reserve(payload.len() + 10);
    // Writing into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::queue::{queue, QueueRx};
    use std::net::TcpListener;
    use tungstenite::protocol::{Role, WebSocketContext};
    use tungstenite::Message;

    /// A connected pair on loopback: (the server's socket, non-blocking; the client's).
    fn pair() -> (Arc<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        server.set_nonblocking(true).expect("non-blocking");
        (Arc::new(server), client)
    }

    fn gate(server: Arc<TcpStream>) -> Direct {
        let direct = Direct::new(Arc::new(Metrics::new(64)));
        direct.attach(server);
        direct
    }

    fn text(s: &str) -> Text {
        Text::from(s.to_owned())
    }

    fn next(rx: &QueueRx<Text>) -> Option<String> {
        rx.try_recv().map(|t| t.as_str().to_owned())
    }

    /// Reads messages as a WebSocket client would (tungstenite's codec) until `last`.
    fn read_until(client: &mut TcpStream, last: &str) -> Vec<String> {
        let mut ws = WebSocketContext::new(Role::Client, None);
        let mut seen = Vec::new();
        loop {
            match ws.read(client) {
                Ok(Message::Text(t)) => {
                    seen.push(t.as_str().to_owned());
                    if t.as_str() == last {
                        return seen;
                    }
                }
                Ok(other) => panic!("not text: {other:?}"),
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    #[test]
    fn frames_of_every_length_class_decode_as_the_same_text() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload = "x".repeat(len);
            let mut bytes = Vec::new();
            frame(payload.as_bytes(), &mut bytes);
            let mut ws = WebSocketContext::new(Role::Client, None);
            let mut src = io::Cursor::new(bytes);
            match ws.read(&mut src).expect("decodes") {
                Message::Text(t) => assert_eq!(t.as_str(), payload),
                other => panic!("not text: {other:?}"),
            }
        }
    }

    #[test]
    fn a_shut_gate_queues_and_an_open_one_writes_a_turn_in_one_go() {
        let (server, mut client) = pair();
        let direct = gate(server);
        let (tx, rx) = queue(4);
        assert_eq!(direct.deliver(text("one"), &tx), Delivery::Queued);
        // A queued message keeps the gate shut: nothing may overtake it.
        assert!(!direct.open(|| rx.is_empty()));
        assert_eq!(next(&rx).as_deref(), Some("one"));
        assert!(direct.open(|| rx.is_empty()));
        assert_eq!(direct.deliver(text("two"), &tx), Delivery::Staged);
        assert_eq!(direct.deliver(text("three"), &tx), Delivery::Staged);
        assert!(rx.is_empty());
        assert!(!direct.flush(), "the socket took the turn whole");
        assert!(!direct.flush(), "nothing left to write");
        assert_eq!(read_until(&mut client, "three"), ["two", "three"]);
        // Awake again: nothing was left over, and the router queues.
        assert!(direct.close().is_empty());
        assert_eq!(direct.deliver(text("four"), &tx), Delivery::Queued);
    }

    #[test]
    fn a_session_that_wakes_before_the_flush_writes_what_was_staged_first() {
        let (server, _client) = pair();
        let direct = gate(server);
        let (tx, rx) = queue(4);
        assert!(direct.open(|| rx.is_empty()));
        assert_eq!(direct.deliver(text("a"), &tx), Delivery::Staged);
        // The client spoke: the session wakes and shuts the gate first.
        let mut expected = Vec::new();
        frame(b"a", &mut expected);
        assert_eq!(direct.close(), expected);
        assert!(
            !direct.flush(),
            "the router writes nothing once the gate is shut"
        );
        assert_eq!(direct.deliver(text("b"), &tx), Delivery::Queued);
        assert_eq!(next(&rx).as_deref(), Some("b"));
    }

    #[test]
    fn a_full_socket_hands_the_rest_to_the_session_and_order_holds() {
        let (server, mut client) = pair();
        let direct = gate(server.clone());
        let (tx, rx) = queue(64);
        let big = "y".repeat(64 * 1024);
        // The client reads nothing: fill the socket until a flush leaves a rest.
        let mut whole = 0;
        loop {
            assert!(
                direct.open(|| rx.is_empty()),
                "the gate reopens after a whole write"
            );
            assert_eq!(direct.deliver(text(&big), &tx), Delivery::Staged);
            if direct.flush() {
                break;
            }
            whole += 1;
            assert!(whole < 10_000, "the socket never filled");
        }
        // Shut now: the next message is queued, behind the rest.
        assert!(!direct.open(|| true), "a rest keeps the gate shut");
        assert_eq!(direct.deliver(text("after"), &tx), Delivery::Queued);
        let mut rest = direct.close();
        assert!(!rest.is_empty());
        frame(next(&rx).expect("queued").as_bytes(), &mut rest);
        let reader = std::thread::spawn(move || read_until(&mut client, "after"));
        // The session's part: the rest first, then its queue.
        server.set_nonblocking(false).expect("blocking");
        (&*server).write_all(&rest).expect("written");
        let seen = reader.join().expect("reader");
        assert_eq!(seen.len(), whole + 2);
        assert!(seen[..=whole].iter().all(|m| *m == big));
        assert_eq!(seen[whole + 1], "after");
    }

    #[test]
    fn a_dead_socket_shuts_the_gate_and_a_retired_gate_never_opens() {
        let (server, client) = pair();
        let direct = gate(server);
        let (tx, rx) = queue(4);
        // The client is gone: the first write may still reach the kernel, which then
        // answers with a reset; the first failed flush shuts the gate and wakes the
        // session, which gets the message to write (and find the socket dead).
        drop(client);
        let mut failed = None;
        for i in 0..1000 {
            assert!(direct.open(|| rx.is_empty()));
            assert_eq!(
                direct.deliver(text(&format!("m{i}")), &tx),
                Delivery::Staged
            );
            if direct.flush() {
                failed = Some(i);
                break;
            }
        }
        let i = failed.expect("a write to a reset socket fails");
        let mut expected = Vec::new();
        frame(format!("m{i}").as_bytes(), &mut expected);
        assert_eq!(direct.close(), expected);
        direct.retire();
        assert!(!direct.open(|| true));
        assert_eq!(direct.deliver(text("late"), &tx), Delivery::Queued);
    }
}
