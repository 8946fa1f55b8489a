//! The `pairs` payload: ice_candidate messages of an exact size carrying a sequence
//! number and a send timestamp, and their fast and full checks on arrival.

use std::fmt::Write as _;

use serde_json::Value;

pub const CANDIDATE: &str = "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 10.0.0.2 rport 46154 generation 0 ufrag EsAw";
pub const SEQ_KEY: &str = "\"seq\":";
pub const TS_KEY: &str = "\"ts\":";

/// Builds candidate messages of exactly `size` bytes (or the minimum, if larger).
pub struct CandidateWriter {
    pub head: String,
    pub size: usize,
}

impl CandidateWriter {
    pub fn new(size: usize) -> CandidateWriter {
        let head = format!(
            "{{\"type\":\"ice_candidate\",\"target_peer_id\":\"b\",\"candidate\":{{\"candidate\":\"{CANDIDATE}\",\"sdpMLineIndex\":0,\"sdpMid\":\"0\",\"usernameFragment\":\"EsAw\",{SEQ_KEY}"
        );
        CandidateWriter { head, size }
    }

    /// Smallest message (seq and timestamp of typical width, no padding).
    pub fn min_size(&self) -> usize {
        CandidateWriter {
            head: self.head.clone(),
            size: 0,
        }
        .build(1_000_000, 1_000_000_000_000)
        .len()
    }

    pub fn build(&self, seq: u64, ts: u64) -> String {
        let mut s = String::with_capacity(self.size.max(self.head.len() + 64));
        s.push_str(&self.head);
        let _ = write!(s, "{seq},{TS_KEY}{ts}");
        // `,"pad":""}}` is 11 bytes.
        let fixed = s.len() + 11;
        if self.size > fixed {
            s.push_str(",\"pad\":\"");
            s.extend(std::iter::repeat_n('x', self.size - fixed));
            s.push_str("\"}}");
        } else {
            s.push_str("}}");
        }
        s
    }
}

/// Parses the unsigned integer right after `key`; tries `hint` (its offset in the
/// message as sent, which the server keeps) before searching.
pub fn field_after(text: &str, key: &str, hint: usize) -> Option<u64> {
    let start = if text.get(hint..hint + key.len()) == Some(key) {
        hint + key.len()
    } else {
        text.find(key)? + key.len()
    };
    let digits = text.as_bytes()[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    text[start..start + digits].parse().ok()
}

pub fn decimal_len(mut n: u64) -> usize {
    let mut l = 1;
    while n >= 10 {
        n /= 10;
        l += 1;
    }
    l
}

pub fn valid_candidate(text: &str, seq: u64, ts: u64) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    v["type"] == "ice_candidate"
        && v["from_peer_id"] == "a"
        && v["target_peer_id"] == "b"
        && v["candidate"]["candidate"] == CANDIDATE
        && v["candidate"]["sdpMLineIndex"] == 0
        && v["candidate"]["sdpMid"] == "0"
        && v["candidate"]["usernameFragment"] == "EsAw"
        && v["candidate"]["seq"] == seq
        && v["candidate"]["ts"] == ts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_size_and_fields() {
        let w = CandidateWriter::new(300);
        let m = w.build(12345, 987654321);
        assert_eq!(m.len(), 300);
        let hint = w.head.len() - SEQ_KEY.len();
        assert_eq!(field_after(&m, SEQ_KEY, hint), Some(12345));
        assert_eq!(
            field_after(&m, TS_KEY, hint + SEQ_KEY.len() + 5 + 1),
            Some(987654321)
        );
        let relayed = format!("{},\"from_peer_id\":\"a\"}}", &m[..m.len() - 1]);
        assert!(valid_candidate(&relayed, 12345, 987654321));
        assert!(w.min_size() < 300);
    }
}
