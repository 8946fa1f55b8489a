//! Unit tests of a session's rules, fed with client frames from memory and read back
//! with a client-side codec: no socket, no clock.

use super::*;
use std::collections::VecDeque;
use std::io::Write;

use serde_json::{json, Value};

use crate::protocol::RelayKind;
use tungstenite::protocol::frame::coding::{CloseCode, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::CloseFrame;

/// Bytes for the session to read: `WouldBlock` when dry, or EOF once closed.
#[derive(Default)]
struct Feed {
    bytes: VecDeque<u8>,
    eof: bool,
}

impl Read for Feed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.bytes.is_empty() {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(self.bytes.len());
        for (i, b) in self.bytes.drain(..n).enumerate() {
            buf[i] = b;
        }
        Ok(n)
    }
}

impl Write for Feed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.extend(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The client's end: it reads what the server wrote, and its automatic replies
/// (pongs) go up to the server.
struct ClientEnd<'a> {
    down: &'a mut Feed,
    up: &'a mut Feed,
}

impl Read for ClientEnd<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.down.read(buf)
    }
}

impl Write for ClientEnd<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.up.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A session with a client on the other side of two in-memory pipes.
struct Harness {
    s: Session,
    t0: Instant,
    /// Client → server bytes.
    up: Feed,
    /// The client's codec, and server → client bytes it has not decoded yet.
    client: WebSocketContext,
    down: Feed,
}

fn limits() -> Limits {
    Limits {
        rate_per_sec: 10,
        rate_burst: 3,
        rate_strikes: 2,
        idle_timeout: Duration::from_secs(60),
        ping_interval: Duration::from_secs(20),
        write_timeout: Duration::from_secs(10),
        close_timeout: Duration::from_secs(1),
        write_buffer: 1024,
        max_message_size: 4096,
        ..Limits::default()
    }
}

impl Harness {
    fn new() -> Harness {
        Harness::with(limits())
    }

    fn with(limits: Limits) -> Harness {
        let t0 = Instant::now();
        let s = Session::new(
            7,
            RoomId::parse("room").unwrap(),
            PeerId::parse("me").unwrap(),
            &limits,
            Arc::new(Metrics::new(limits.peer_queue)),
            Vec::new(),
            t0,
        );
        Harness {
            s,
            t0,
            up: Feed::default(),
            client: WebSocketContext::new(Role::Client, None),
            down: Feed::default(),
        }
    }

    fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }

    /// The client sends `msg` (masked, as a browser would).
    fn send(&mut self, msg: Message) {
        self.client.write(&mut self.up, msg).unwrap();
        self.client.flush(&mut self.up).unwrap();
    }

    fn send_text(&mut self, text: &str) {
        self.send(Message::text(text.to_owned()));
    }

    /// The session reads everything the client sent. Like the driver, it does not
    /// read a session that has not heard from its client while nothing is there.
    fn read(&mut self, at: Instant) {
        while (self.s.heard() || !self.up.bytes.is_empty() || self.up.eof)
            && self.s.read_from(&mut self.up, at) > 0
        {}
    }

    /// The socket takes everything pending; the client decodes it.
    fn drain(&mut self, at: Instant) -> Vec<Message> {
        let pending = self.s.pending().to_vec();
        self.s.written(pending.len(), at);
        self.s.write_flushed(at);
        self.down.bytes.extend(pending);
        let mut got = Vec::new();
        let mut end = ClientEnd {
            down: &mut self.down,
            up: &mut self.up,
        };
        loop {
            match self.client.read(&mut end) {
                Ok(m) => got.push(m),
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return got
                }
                Err(_) => return got,
            }
        }
    }

    /// The JSON texts among what the client got.
    fn texts(&mut self, at: Instant) -> Vec<Value> {
        self.drain(at)
            .into_iter()
            .filter_map(|m| match m {
                Message::Text(t) => Some(serde_json::from_str(t.as_str()).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn commands(&mut self) -> Vec<Command> {
        std::iter::from_fn(|| self.s.poll_command()).collect()
    }

    /// Runs the driver's part of a close: empty mailbox, socket takes everything,
    /// `close_notify`, half-close. Returns what the client got.
    fn finish_close(&mut self, at: Instant) -> Vec<Message> {
        self.s.mailbox_empty(at);
        let mut got = self.drain(at);
        if self.s.wants_notify() {
            self.s.notified();
            got.extend(self.drain(at));
        }
        if self.s.wants_shutdown() {
            self.s.shutdown_done(at);
        }
        got
    }
}

fn close_code(msgs: &[Message]) -> Option<u16> {
    msgs.iter().find_map(|m| match m {
        Message::Close(Some(f)) => Some(u16::from(f.code)),
        _ => None,
    })
}

fn error_code(v: &Value) -> &str {
    assert_eq!(v["type"], "error", "{v}");
    v["code"].as_str().unwrap()
}

#[test]
fn the_preface_goes_out_first_in_the_same_write_as_the_first_message() {
    let mut h = Harness::new();
    let head = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";
    h.s.preface(head.to_vec());
    let at = h.at(0.0);
    h.s.deliver(
        Text::from(r#"{"type":"existing_peers","peers":[]}"#.to_owned()),
        at,
    );
    let pending = h.s.pending().to_vec();
    assert!(pending.starts_with(head), "the 101 first");
    // What follows the head is the message's frame, whole.
    h.s.written(head.len(), at);
    let got = h.texts(at);
    assert_eq!(got, [json!({"type": "existing_peers", "peers": []})]);
    // Written: a peer that only listens keeps no output buffer.
    assert_eq!(h.s.out.capacity(), 0);
}

#[test]
fn ping_is_answered_and_relays_go_to_the_router_with_the_sender() {
    let mut h = Harness::new();
    h.send_text(r#"{"type":"ping"}"#);
    h.send_text(r#"{"type":"offer","offer":{"sdp":"x"},"target_peer_id":"you"}"#);
    h.read(h.t0);
    assert_eq!(h.texts(h.t0), [json!({"type": "pong"})]);
    let cmds = h.commands();
    assert_eq!(cmds.len(), 1);
    let Command::Relay {
        session,
        kind,
        target,
        text,
    } = &cmds[0]
    else {
        panic!("{cmds:?}")
    };
    assert_eq!(
        (*session, *kind, target.as_str()),
        (7, RelayKind::Offer, "you")
    );
    let relayed: Value = serde_json::from_str(text.as_str()).unwrap();
    assert_eq!(relayed["from_peer_id"], "me");
    assert_eq!(text.read_at(), Some(h.t0));
}

#[test]
fn bad_messages_get_an_error_and_the_session_goes_on() {
    let mut h = Harness::with(Limits {
        rate_per_sec: 0,
        ..limits()
    });
    h.send_text("not json");
    h.send_text(r#"{"type":"hello"}"#);
    h.send(Message::binary(vec![1, 2, 3]));
    // A text frame that is not UTF-8: tungstenite refuses it as a message.
    h.send(Message::Frame(Frame::message(
        vec![0xff, 0xfe],
        OpCode::Data(tungstenite::protocol::frame::coding::Data::Text),
        true,
    )));
    h.send_text(r#"{"type":"ping"}"#);
    h.read(h.t0);
    let got = h.texts(h.t0);
    let codes: Vec<&str> = got[..4].iter().map(error_code).collect();
    assert_eq!(
        codes,
        [
            "invalid_json",
            "unknown_type",
            "invalid_message",
            "invalid_json"
        ]
    );
    assert_eq!(got[4], json!({"type": "pong"}));
    assert_eq!(h.s.closing(), None);
}

#[test]
fn a_flood_is_refused_with_rate_limited_then_closed_with_4429() {
    let mut h = Harness::new();
    for _ in 0..3 {
        h.send_text(r#"{"type":"ping"}"#);
    }
    h.read(h.t0);
    assert_eq!(h.texts(h.t0).len(), 3, "the burst passes");
    h.send_text(r#"{"type":"ping"}"#);
    h.read(h.t0);
    let got = h.texts(h.t0);
    assert_eq!(error_code(&got[0]), "rate_limited");
    // A refill lets one through and clears the strikes.
    h.send_text(r#"{"type":"ping"}"#);
    h.read(h.at(0.1));
    assert_eq!(h.texts(h.at(0.1)), [json!({"type": "pong"})]);
    h.send_text(r#"{"type":"ping"}"#);
    h.send_text(r#"{"type":"ping"}"#);
    h.read(h.at(0.1));
    assert_eq!(h.s.closing(), Some(CloseReason::RateLimited));
    let got = h.finish_close(h.at(0.1));
    assert_eq!(close_code(&got), Some(4429));
    let errors: Vec<Value> = got
        .iter()
        .filter_map(|m| m.to_text().ok().and_then(|t| serde_json::from_str(t).ok()))
        .collect();
    assert_eq!(
        errors.iter().map(error_code).collect::<Vec<_>>(),
        ["rate_limited", "rate_limited"],
        "one warning, then the closing error"
    );
}

#[test]
fn websocket_pings_and_pongs_are_not_rate_limited() {
    let mut h = Harness::new();
    for _ in 0..50 {
        h.send(Message::Ping(Bytes::from_static(b"hi")));
    }
    h.read(h.t0);
    let pongs = h
        .drain(h.t0)
        .into_iter()
        .filter(|m| matches!(m, Message::Pong(p) if p.as_ref() == b"hi"))
        .count();
    assert!(
        pongs >= 1,
        "every ping is answered (tungstenite keeps the last)"
    );
    assert_eq!(h.s.closing(), None);
}

#[test]
fn the_idle_timeout_counts_from_the_last_frame_and_pings_keep_their_schedule() {
    let mut h = Harness::new();
    assert_eq!(h.s.poll_timeout(), Some(h.at(20.0)), "first the ping");
    h.s.handle_timeout(h.at(20.0));
    assert!(matches!(h.drain(h.at(20.0))[..], [Message::Ping(_)]));
    assert_eq!(h.s.poll_timeout(), Some(h.at(40.0)));
    // A pong at 30 s moves the idle deadline to 90 s.
    h.send(Message::Pong(Bytes::new()));
    h.read(h.at(30.0));
    h.s.handle_timeout(h.at(40.0));
    h.s.handle_timeout(h.at(60.0));
    h.s.handle_timeout(h.at(80.0));
    assert_eq!(h.s.closing(), None);
    h.drain(h.at(80.0));
    assert_eq!(h.s.poll_timeout(), Some(h.at(90.0)));
    h.s.handle_timeout(h.at(90.0));
    assert_eq!(h.s.closing(), Some(CloseReason::Timeout));
    let got = h.finish_close(h.at(90.0));
    assert_eq!(close_code(&got), Some(4408), "{got:?}");
}

#[test]
fn an_oversized_message_closes_with_1009() {
    let mut h = Harness::new();
    h.send_text(&"x".repeat(5000));
    h.read(h.t0);
    assert_eq!(h.s.closing(), Some(CloseReason::MessageTooLarge));
    let got = h.finish_close(h.t0);
    assert_eq!(close_code(&got), Some(1009));
}

#[test]
fn the_clients_close_is_echoed_then_the_socket_is_shut_without_lingering() {
    let mut h = Harness::new();
    h.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })));
    h.read(h.t0);
    assert_eq!(h.s.closing(), Some(CloseReason::ClientClosed(1000)));
    let got = h.finish_close(h.t0);
    assert_eq!(close_code(&got), Some(1000));
    assert_eq!(h.s.finished(), Some(CloseReason::ClientClosed(1000)));
}

#[test]
fn a_router_close_sends_what_was_queued_first_then_the_error_and_lingers() {
    let mut h = Harness::new();
    h.s.close(CloseReason::Kicked, h.t0);
    assert!(h.s.wants_mailbox(), "the queue is drained before the close");
    h.s.deliver(
        Text::from(r#"{"type":"peer_left","peer_id":"x"}"#.to_owned()),
        h.t0,
    );
    let got = h.finish_close(h.t0);
    let texts: Vec<Value> = got
        .iter()
        .filter_map(|m| m.to_text().ok().and_then(|t| serde_json::from_str(t).ok()))
        .collect();
    assert_eq!(texts[0]["type"], "peer_left");
    assert_eq!(error_code(&texts[1]), "kicked");
    assert_eq!(close_code(&got), Some(4403));
    // Lingering: input is read and dropped until the client hangs up.
    assert!(h.s.wants_read() && h.s.finished().is_none());
    h.up.bytes.extend(b"late bytes");
    h.up.eof = true;
    h.read(h.t0);
    assert_eq!(h.s.finished(), Some(CloseReason::Kicked));
}

#[test]
fn lingering_ends_at_the_close_timeout() {
    let mut h = Harness::new();
    h.s.close(CloseReason::GoingAway, h.t0);
    h.finish_close(h.t0);
    assert_eq!(h.s.poll_timeout(), Some(h.at(1.0)));
    h.s.handle_timeout(h.at(1.0));
    assert_eq!(h.s.finished(), Some(CloseReason::GoingAway));
}

#[test]
fn a_socket_refusing_data_for_the_write_timeout_is_a_slow_consumer() {
    let mut h = Harness::new();
    h.s.deliver(Text::from("{}".to_owned()), h.t0);
    h.s.write_blocked(h.at(1.0));
    assert!(h.s.is_blocked());
    assert_eq!(h.s.poll_timeout(), Some(h.at(11.0)));
    h.s.handle_timeout(h.at(10.9));
    assert_eq!(h.s.closing(), None);
    h.s.handle_timeout(h.at(11.0));
    assert_eq!(h.s.closing(), Some(CloseReason::SlowConsumer));
    assert!(h.s.pending().is_empty(), "nothing more is written to it");
    assert!(h.s.wants_shutdown());
}

#[test]
fn output_over_the_write_buffer_stops_the_queue_and_the_reading_until_written() {
    let mut h = Harness::new();
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(700));
    h.s.deliver(Text::from(big.clone()), h.t0);
    assert!(h.s.wants_mailbox() && h.s.wants_read());
    h.s.deliver(Text::from(big), h.t0);
    assert!(!h.s.wants_mailbox(), "over 1024 bytes: wait for the socket");
    assert!(
        !h.s.wants_read(),
        "and do not take more work from the client"
    );
    h.s.write_blocked(h.t0);
    assert!(h.s.stalled());
    assert_eq!(h.drain(h.t0).len(), 2);
    assert!(h.s.wants_mailbox() && h.s.wants_read() && !h.s.stalled());
}

#[test]
fn a_message_larger_than_the_write_buffer_still_goes_out_whole() {
    // --write-buffer below a room's existing_peers must not stall the session.
    let mut h = Harness::with(Limits {
        write_buffer: 64,
        ..limits()
    });
    let big = format!(
        r#"{{"type":"existing_peers","peers":["{}"]}}"#,
        "p".repeat(500)
    );
    assert!(h.s.wants_mailbox());
    h.s.deliver(Text::from(big.clone()), h.t0);
    let got = h.drain(h.t0);
    assert_eq!(got, [Message::text(big)]);
}

#[test]
fn a_paused_peer_is_not_read_and_its_silence_is_not_idleness() {
    let mut h = Harness::new();
    h.s.set_paused(true);
    h.send_text(r#"{"type":"ping"}"#);
    assert!(!h.s.wants_read());
    h.s.handle_timeout(h.at(61.0));
    assert_eq!(h.s.closing(), None, "unread input is not silence");
    h.s.set_paused(false);
    h.read(h.at(62.0));
    assert_eq!(h.texts(h.at(62.0)), [json!({"type": "pong"})]);
}

#[test]
fn end_of_stream_without_a_close_frame_is_a_disconnect() {
    let mut h = Harness::new();
    h.up.eof = true;
    h.read(h.t0);
    assert_eq!(h.s.closing(), Some(CloseReason::Disconnected));
    assert!(h.s.wants_shutdown());
    h.s.shutdown_done(h.t0);
    assert_eq!(h.s.finished(), Some(CloseReason::Disconnected));
}

#[test]
fn relayed_messages_are_timed_until_the_socket_takes_them() {
    let metrics = Arc::new(Metrics::new(64));
    let t0 = Instant::now();
    let mut s = Session::new(
        1,
        RoomId::parse("r").unwrap(),
        PeerId::parse("p").unwrap(),
        &limits(),
        metrics.clone(),
        Vec::new(),
        t0,
    );
    s.deliver(Text::relayed("{}", t0, 2), t0);
    let count = |m: &Metrics| {
        m.encode()
            .lines()
            .find(|l| l.starts_with("webrtc_signaling_relay_latency_seconds_count "))
            .map(str::to_owned)
    };
    let n = s.pending().len();
    s.written(n - 1, t0 + Duration::from_millis(1));
    assert_eq!(
        count(&metrics).as_deref(),
        Some("webrtc_signaling_relay_latency_seconds_count 0"),
        "not all of it has left yet"
    );
    s.written(1, t0 + Duration::from_millis(2));
    assert_eq!(
        count(&metrics).as_deref(),
        Some("webrtc_signaling_relay_latency_seconds_count 1")
    );
}

#[test]
fn the_read_buffer_comes_with_the_first_read_and_what_was_written_before_is_intact() {
    let mut h = Harness::new();
    assert!(!h.s.heard());
    // The server speaks first (existing_peers, a relay, a ping) while the client is
    // silent: no read, so no read buffer yet.
    h.s.deliver(
        Text::from(r#"{"type":"existing_peers","peers":[]}"#.to_owned()),
        h.t0,
    );
    h.s.handle_timeout(h.at(20.0));
    assert!(!h.s.heard());
    // A read with nothing there yet (the driver would not, the session must cope):
    // the session takes its read buffer all the same, and the codec that replaced
    // the first one goes on where it left off.
    let at = h.at(20.0);
    assert_eq!(h.s.read_from(&mut h.up, at), 0);
    assert!(h.s.heard());
    h.send_text(r#"{"type":"ping"}"#);
    h.read(h.at(21.0));
    h.s.deliver(
        Text::from(r#"{"type":"peer_joined","peer_id":"you"}"#.to_owned()),
        h.at(21.0),
    );
    let got = h.drain(h.at(21.0));
    let kinds: Vec<String> = got
        .iter()
        .map(|m| match m {
            Message::Text(t) => serde_json::from_str::<Value>(t.as_str()).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        ["existing_peers", "Ping(b\"\")", "pong", "peer_joined"]
    );
    // And the closing handshake works on the new codec.
    h.s.close(CloseReason::GoingAway, h.at(22.0));
    assert_eq!(close_code(&h.finish_close(h.at(22.0))), Some(1001));
}

#[test]
fn after_a_pong_the_read_buffer_goes_back_only_if_the_codec_holds_nothing() {
    let mut h = Harness::new();
    h.send_text(r#"{"type":"ping"}"#);
    h.read(h.t0);
    assert!(h.s.heard());
    assert_eq!(h.texts(h.t0), [json!({"type": "pong"})]);
    // The server pings; the client's pong (sent as it reads) is taken, and then the
    // session holds no read buffer.
    h.s.handle_timeout(h.at(20.0));
    let got = h.drain(h.at(20.0));
    assert!(matches!(got[..], [Message::Ping(_)]), "{got:?}");
    h.read(h.at(20.0));
    assert!(!h.s.heard());
    // Everything works as before with the next codec.
    h.send_text(r#"{"type":"ping"}"#);
    h.read(h.at(21.0));
    assert!(h.s.heard());
    assert_eq!(h.texts(h.at(21.0)), [json!({"type": "pong"})]);

    // A pong followed by half a frame: the codec holds bytes, so it is kept.
    h.send(Message::Pong(Bytes::new()));
    h.up.bytes.extend([0x81, 0x85]); // a masked text frame's first two bytes
    h.read(h.at(22.0));
    assert!(h.s.heard());
    // The rest of that frame: "hello" is not JSON, so an error; the pong came first,
    // and the codec holds nothing now, so the buffer goes back.
    let mut rest = vec![0, 0, 0, 0];
    rest.extend(b"hello");
    h.up.bytes.extend(rest);
    h.read(h.at(22.0));
    assert_eq!(error_code(&h.texts(h.at(22.0))[0]), "invalid_json");
    assert!(!h.s.heard());
}

#[test]
fn a_client_that_fragments_its_messages_keeps_its_read_buffer() {
    let mut h = Harness::new();
    // One text message in two frames, then a pong.
    let mut first = Frame::message(
        &b"{\"type\":"[..],
        OpCode::Data(tungstenite::protocol::frame::coding::Data::Text),
        false,
    );
    first.header_mut().mask = Some([1, 2, 3, 4]);
    let mut second = Frame::message(
        &b"\"ping\"}"[..],
        OpCode::Data(tungstenite::protocol::frame::coding::Data::Continue),
        true,
    );
    second.header_mut().mask = Some([5, 6, 7, 8]);
    for frame in [first, second] {
        let mut bytes = Vec::new();
        frame.format(&mut bytes).unwrap();
        h.up.bytes.extend(bytes);
    }
    h.send(Message::Pong(Bytes::new()));
    h.read(h.t0);
    assert_eq!(h.texts(h.t0), [json!({"type": "pong"})]);
    // Its bytes on the wire exceed the smallest encoding: never provably empty.
    assert!(h.s.heard());
}

#[test]
fn after_a_pong_an_emptied_output_buffer_goes_back_and_a_pending_one_stays_whole() {
    let mut h = Harness::new();
    // A burst grows the output buffer; the socket takes it all.
    for i in 0..20 {
        h.s.deliver(
            Text::from(format!(r#"{{"type":"candidate","n":{i}}}"#)),
            h.t0,
        );
    }
    assert_eq!(h.texts(h.t0).len(), 20);
    assert!(h.s.out.capacity() > 0);
    // Idle again: ping, pong, and the buffer goes back with the read buffer.
    h.s.handle_timeout(h.at(20.0));
    h.drain(h.at(20.0));
    h.read(h.at(20.0));
    assert!(!h.s.heard());
    assert_eq!(h.s.out.capacity(), 0);

    // A pong while output is still waiting for the socket: that output stays whole.
    h.s.deliver(Text::from(r#"{"type":"answer"}"#.to_owned()), h.at(21.0));
    h.send(Message::Pong(Bytes::new()));
    h.read(h.at(21.0));
    assert!(!h.s.heard());
    assert_eq!(h.texts(h.at(21.0)), [json!({"type": "answer"})]);
}
