//! One session (`core::session::Session`, pure) fed arbitrary client bytes and
//! well-formed frames, with the socket taking some, none or all of its output, the
//! router delivering and closing, and time passing: no panic, output bounded, no
//! spin (a read with input waiting takes some or says why not; a due timer moves
//! on), and in the end the session finishes with a §5 close code (or the client's
//! own, or 1006 when the connection is gone), which its close frame carries.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tungstenite::protocol::{Role, WebSocketContext};
use tungstenite::Message;
use webrtc_signaling::config::Limits;
use webrtc_signaling::core::router::Text;
use webrtc_signaling::core::session::Session;
use webrtc_signaling::metrics::Metrics;
use webrtc_signaling::protocol::{CloseReason, PeerId, RoomId};

/// §5's close codes, 1002 (RFC 6455: the client broke the protocol) and 1011.
const SERVER_CODES: [u16; 14] = [
    4400, 4401, 4403, 4409, 4429, 4503, 1009, 1001, 4408, 1008, 4410, 1013, 1002, 1011,
];

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

impl io::Write for Feed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.extend(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn limits() -> Limits {
    Limits {
        rate_per_sec: 20,
        rate_burst: 10,
        rate_strikes: 5,
        idle_timeout: Duration::from_secs(30),
        ping_interval: Duration::from_secs(10),
        write_timeout: Duration::from_secs(5),
        close_timeout: Duration::from_secs(1),
        write_buffer: 2048,
        max_message_size: 4096,
        read_buffer: 1024,
        ..Limits::default()
    }
}

/// One turn of what the session driver does; `Err` on a spin or a broken bound.
fn turn(
    s: &mut Session,
    up: &mut Feed,
    down: &mut Vec<u8>,
    take: usize,
    now: Instant,
) -> Result<(), String> {
    let l = limits();
    let bound = l.write_buffer + l.max_message_size + 64 * 512 + 4096;
    if s.pending().len() > bound {
        return Err(format!("output buffer {} over {bound}", s.pending().len()));
    }
    if s.closing().is_some() && s.wants_mailbox() {
        s.mailbox_empty(now);
    }
    let n = s.pending().len().min(take);
    if n > 0 {
        down.extend_from_slice(&s.pending()[..n]);
        s.written(n, now);
    }
    if s.pending().is_empty() {
        s.write_flushed(now);
        if s.wants_notify() {
            s.notified();
            s.write_flushed(now);
        }
    } else {
        s.write_blocked(now);
    }
    if s.wants_shutdown() {
        s.shutdown_done(now);
    }
    if s.wants_read() && (!up.bytes.is_empty() || up.eof) {
        let before = (up.bytes.len(), s.closing(), s.finished(), s.pending().len());
        let taken = s.read_from(up, now);
        let after = (up.bytes.len(), s.closing(), s.finished(), s.pending().len());
        if taken == 0 && before == after && s.wants_read() {
            return Err("a read with input waiting took nothing and changed nothing".into());
        }
    }
    if let Some(at) = s.poll_timeout() {
        if at <= now {
            s.handle_timeout(now);
            let moved = s.poll_timeout().is_none_or(|next| next > now);
            if !moved && s.closing().is_none() {
                return Err("a due timer did not move on".into());
            }
        }
    }
    while s.poll_command().is_some() {}
    Ok(())
}

pub fn check(input: &[u8]) -> Result<(), String> {
    let l = limits();
    let t0 = Instant::now();
    let mut now = t0;
    let mut s = Session::new(
        1,
        RoomId::parse("room").map_err(|e| e.to_string())?,
        PeerId::parse("me").map_err(|e| e.to_string())?,
        &l,
        Arc::new(Metrics::new(l.peer_queue)),
        Vec::new(),
        now,
    );
    let mut client = WebSocketContext::new(Role::Client, None);
    let (mut up, mut down) = (Feed::default(), Vec::new());
    let mut bytes = input.iter().copied();
    let mut take = usize::MAX;
    while let Some(op) = bytes.next() {
        let arg = usize::from(bytes.next().unwrap_or(0));
        match op % 10 {
            0 | 1 => {
                let text: String = bytes.by_ref().take(arg).map(char::from).collect();
                let msg = match op % 4 {
                    0 => Message::text(text),
                    1 => Message::Ping(text.into_bytes().into()),
                    _ => Message::text(format!(
                        r#"{{"type":"offer","offer":{{}},"target_peer_id":"p{arg}","x":{text:?}}}"#
                    )),
                };
                let _ = client.write(&mut up, msg);
                let _ = client.flush(&mut up);
            }
            2 => up.bytes.extend(bytes.by_ref().take(arg)),
            3 => now += Duration::from_millis(arg as u64 * 97),
            4 => take = [0, 1, 100, usize::MAX][arg % 4],
            // The driver moves queued messages only while the session wants them.
            5 if s.wants_mailbox() => s.deliver(Text::relayed("x".repeat(arg * 16), now, 0), now),
            6 => s.set_paused(arg % 2 == 0),
            7 if arg == 7 => s.close(
                [
                    CloseReason::Kicked,
                    CloseReason::SlowConsumer,
                    CloseReason::GoingAway,
                ][arg % 3],
                now,
            ),
            8 if arg == 8 => {
                let _ = client.close(&mut up, None);
                let _ = client.flush(&mut up);
            }
            9 if arg == 9 => up.eof = true,
            _ => {}
        }
        turn(&mut s, &mut up, &mut down, take, now)?;
    }
    // The end: the client stops, the router lets it go on (a pause ends when the
    // target drains or is evicted), time passes; the session must finish.
    up.eof = true;
    s.set_paused(false);
    for _ in 0..1000 {
        if s.finished().is_some() {
            break;
        }
        now += Duration::from_millis(250);
        turn(&mut s, &mut up, &mut down, usize::MAX, now)?;
    }
    let reason = s.finished().ok_or("the session never finished")?;
    let code = reason.close_code();
    let client_code = matches!(reason, CloseReason::ClientClosed(_));
    if !(SERVER_CODES.contains(&code) || client_code || reason == CloseReason::Disconnected) {
        return Err(format!("finished with {reason:?} ({code})"));
    }
    // What the client received decodes, and a close frame carries that code.
    let mut from_server = Feed {
        bytes: down.into(),
        eof: true,
    };
    let mut sink = Vec::new();
    loop {
        let mut io = Duplex {
            r: &mut from_server,
            w: &mut sink,
        };
        match client.read(&mut io) {
            Ok(Message::Close(Some(frame))) => {
                let got = u16::from(frame.code);
                if !client_code && got != code {
                    return Err(format!("close frame {got}, reason {reason:?}"));
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

struct Duplex<'a> {
    r: &'a mut Feed,
    w: &'a mut Vec<u8>,
}
impl Read for Duplex<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.r.read(buf)
    }
}
impl io::Write for Duplex<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.w.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub const DICTIONARY: &[&[u8]] = &[
    &[0x81, 0x85],
    &[0x88, 0x80],
    &[0x89, 0x80],
    &[0x82, 0x80],
    &[0x01, 0x10],
    &[0x80, 0x7f],
    &[3, 255],
    &[4, 1],
    &[4, 0],
    &[7, 7],
    &[8, 8],
    &[9, 9],
    b"{\"type\":\"ping\"}",
];

pub fn generate() -> BoxedStrategy<Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..600).boxed()
}
