//! Server → client messages, serialised once per event. No I/O.

use super::{ErrorCode, PeerId};
use serde::Serialize;

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Out<'a> {
    ExistingPeers {
        peers: &'a [&'a PeerId],
        #[serde(skip_serializing_if = "Option::is_none")]
        resume_token: Option<&'a str>,
    },
    PeerJoined {
        peer_id: &'a PeerId,
    },
    PeerLeft {
        peer_id: &'a PeerId,
    },
    Error {
        code: &'a str,
        message: &'a str,
    },
}

fn to_text(out: &Out<'_>) -> String {
    // Serialising these plain structs into a String cannot fail.
    serde_json::to_string(out).unwrap_or_default()
}

/// The first message of a session; with the resume grace on it carries the token
/// that may take this peer over (PROTOCOL.md §8).
pub fn existing_peers(peers: &[&PeerId], resume_token: Option<&str>) -> String {
    to_text(&Out::ExistingPeers {
        peers,
        resume_token,
    })
}

pub fn peer_joined(peer_id: &PeerId) -> String {
    to_text(&Out::PeerJoined { peer_id })
}

pub fn peer_left(peer_id: &PeerId) -> String {
    to_text(&Out::PeerLeft { peer_id })
}

pub fn error(code: ErrorCode, message: &str) -> String {
    to_text(&Out::Error {
        code: code.as_str(),
        message,
    })
}

pub const PONG: &str = r#"{"type":"pong"}"#;
