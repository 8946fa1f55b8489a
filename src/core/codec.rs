//! The WebSocket codec in memory: tungstenite's framing fed from the client's bytes
//! and writing into the session's output buffer, never into a socket. Pure.

use std::io::{self, Read, Write};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::Message;

use crate::config::Limits;
use crate::protocol::{outbound, CloseReason};

/// Reads from the client's bytes, writes into the session's output buffer.
pub struct Duplex<'a, R> {
    pub src: &'a mut R,
    pub out: &'a mut Vec<u8>,
    /// Bytes read from `src` so far.
    pub read: usize,
}

impl<R: Read> Read for Duplex<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.src.read(buf)?;
        self.read += n;
        Ok(n)
    }
}

impl<R> Write for Duplex<'_, R> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A source with nothing to read, for writes that read nothing.
pub struct Dry;

impl Read for Dry {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

/// The codec configuration: frames go straight into the session's buffer (tungstenite
/// keeps none of its own), messages and frames are bounded by `--max-message-size`.
pub fn ws_config(limits: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(limits.read_buffer)
        .write_buffer_size(0)
        .max_write_buffer_size(limits.max_message_size + 1024)
        .max_message_size(Some(limits.max_message_size))
        .max_frame_size(Some(limits.max_message_size))
}

/// The `error` message (when the reason has an error code) and the close frame that
/// end a session for `reason`.
pub fn closing_messages(reason: CloseReason) -> (Option<Message>, CloseFrame) {
    let error = reason
        .error_code()
        .map(|code| Message::text(outbound::error(code, reason.message())));
    let frame = CloseFrame {
        code: CloseCode::from(reason.close_code()),
        reason: reason.error_code().map_or("", |c| c.as_str()).into(),
    };
    (error, frame)
}
