//! The accept thread's rules for what goes wrong: a bounded back-off when accept(2)
//! fails (out of descriptors or memory: retrying at once would spin, and the pending
//! connections stay queued until descriptors are free again), the refusal of a
//! connection that gets no slot or no thread (503 on a plain listener), and log lines
//! for these at most once per interval, not once per connection.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use crate::http::response::{self, Resp};

/// First wait after a failed accept(2); it doubles with each failure in a row.
const BACKOFF_FIRST: Duration = Duration::from_millis(5);
/// Longest wait: how late the server may notice that descriptors are free again.
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// At most one log line per kind of trouble in this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Waits between failed accept(2) calls.
#[derive(Debug, Default)]
pub struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    /// Another failure in a row: how long to wait before the next try.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next.unwrap_or(BACKOFF_FIRST);
        self.next = Some((wait * 2).min(BACKOFF_MAX));
        wait
    }

    /// accept(2) worked again.
    pub fn reset(&mut self) {
        self.next = None;
    }
}

/// Lets one log line through per [`LOG_INTERVAL`] and counts the ones held back.
#[derive(Debug, Default)]
pub struct Every {
    last: Option<Instant>,
    held: u64,
}

impl Every {
    /// `Some(n)`: log now (`n` similar events were not logged since the last line).
    pub fn tick(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|at| now < at + LOG_INTERVAL) {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

/// " (N more since the last report)" or nothing.
pub fn held(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more since the last report)")
    }
}

/// Refuses a connection from the accept thread without blocking it: on a plain
/// listener a `503` (best effort: the socket buffer of a new connection takes it),
/// then a half-close; what the client already sent is read first so that closing
/// does not turn into a reset that destroys the answer. A TLS listener can only close.
pub fn refuse(stream: TcpStream, plain: bool, message: &str) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    if plain {
        let resp = Resp::error(503, "unavailable", message).with("Retry-After", "1");
        let _ = (&stream).write_all(&response::encode(resp, false, true));
    }
    let _ = stream.shutdown(Shutdown::Write);
    let mut sink = [0u8; 4096];
    // Bounded: only what has arrived already (non-blocking), at most 64 KiB.
    for _ in 0..16 {
        match (&stream).read(&mut sink) {
            Ok(1..) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_bound_and_resets() {
        let mut b = Backoff::default();
        let waits: Vec<_> = (0..10).map(|_| b.failed()).collect();
        assert_eq!(waits[0], BACKOFF_FIRST);
        assert_eq!(waits[1], BACKOFF_FIRST * 2);
        assert_eq!(*waits.last().unwrap(), BACKOFF_MAX);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        b.reset();
        assert_eq!(b.failed(), BACKOFF_FIRST);
    }

    #[test]
    fn one_line_per_interval_counting_the_rest() {
        let mut e = Every::default();
        let t0 = Instant::now();
        assert_eq!(e.tick(t0), Some(0));
        assert_eq!(e.tick(t0 + Duration::from_secs(1)), None);
        assert_eq!(e.tick(t0 + Duration::from_secs(9)), None);
        assert_eq!(e.tick(t0 + LOG_INTERVAL), Some(2));
        assert_eq!(held(2), " (2 more since the last report)");
        assert_eq!(held(0), "");
    }
}
