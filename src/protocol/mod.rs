//! The wire contract of PROTOCOL.md: identifiers, messages, error and close codes. No I/O.
//!
//! Everything a client sends is validated here, once; the rest of the server only
//! sees typed values ([`RoomId`], [`PeerId`], [`Inbound`]) and ready-to-send frames.

use std::fmt;
use std::sync::Arc;

/// Longest `room_id` / `peer_id` (PROTOCOL.md §2).
pub const MAX_ID_LEN: usize = 64;

/// Why an identifier was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    Empty,
    TooLong,
    BadChar,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdError::Empty => "must not be empty",
            IdError::TooLong => "must be at most 64 characters",
            IdError::BadChar => "may only contain A-Z a-z 0-9 . _ ~ -",
        })
    }
}

fn check_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    let ok = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(IdError::BadChar)
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        /// Cloning is a reference-count increment, so ids travel in commands for free.
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `s` against PROTOCOL.md §2.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check_id(s)?;
                Ok($name(Arc::from(s)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A validated `room_id`.
    RoomId
);
id_type!(
    /// A validated `peer_id`.
    PeerId
);

/// The `code` of an `{"type":"error"}` message (PROTOCOL.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidJson,
    InvalidMessage,
    UnknownType,
    PeerNotFound,
    RateLimited,
    InvalidRoomId,
    InvalidPeerId,
    Unauthorized,
    OriginNotAllowed,
    Kicked,
    PeerIdTaken,
    ServerFull,
    RoomFull,
    MessageTooLarge,
    GoingAway,
    Timeout,
    SlowConsumer,
    ProtocolError,
    InternalError,
    /// §8: a resume took this peer over (4410).
    Replaced,
    /// §9: the cluster's Redis is unreachable (1013).
    TryAgainLater,
    /// §9: the target is on another instance and Redis is unreachable.
    PeerUnreachable,
}

impl ErrorCode {
    /// Every code, in declaration order (`code as usize` is its index here).
    pub const ALL: [ErrorCode; 22] = [
        ErrorCode::InvalidJson,
        ErrorCode::InvalidMessage,
        ErrorCode::UnknownType,
        ErrorCode::PeerNotFound,
        ErrorCode::RateLimited,
        ErrorCode::InvalidRoomId,
        ErrorCode::InvalidPeerId,
        ErrorCode::Unauthorized,
        ErrorCode::OriginNotAllowed,
        ErrorCode::Kicked,
        ErrorCode::PeerIdTaken,
        ErrorCode::ServerFull,
        ErrorCode::RoomFull,
        ErrorCode::MessageTooLarge,
        ErrorCode::GoingAway,
        ErrorCode::Timeout,
        ErrorCode::SlowConsumer,
        ErrorCode::ProtocolError,
        ErrorCode::InternalError,
        ErrorCode::Replaced,
        ErrorCode::TryAgainLater,
        ErrorCode::PeerUnreachable,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::PeerNotFound => "peer_not_found",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::InvalidRoomId => "invalid_room_id",
            ErrorCode::InvalidPeerId => "invalid_peer_id",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::OriginNotAllowed => "origin_not_allowed",
            ErrorCode::Kicked => "kicked",
            ErrorCode::PeerIdTaken => "peer_id_taken",
            ErrorCode::ServerFull => "server_full",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::GoingAway => "going_away",
            ErrorCode::Timeout => "timeout",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::ProtocolError => "protocol_error",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::Replaced => "replaced",
            ErrorCode::TryAgainLater => "try_again_later",
            ErrorCode::PeerUnreachable => "peer_unreachable",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a session ended. The server-side reasons carry the close code and error
/// code of PROTOCOL.md §5; this is the only table of them in the crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    InvalidRoomId,
    InvalidPeerId,
    Unauthorized,
    OriginNotAllowed,
    Kicked,
    PeerIdTaken,
    RateLimited,
    ServerFull,
    RoomFull,
    MessageTooLarge,
    GoingAway,
    Timeout,
    SlowConsumer,
    /// The client broke the WebSocket protocol (bad framing, unmasked frame, ...).
    ProtocolError,
    /// A bug on our side (a panicking connection thread): 1011.
    Internal,
    /// §8: a resume took this peer over: 4410.
    Replaced,
    /// §9: the cluster's Redis is unreachable: 1013.
    TryAgainLater,
    /// The client sent a close frame with this code (echoed back).
    ClientClosed(u16),
    /// The TCP connection ended or failed without a close frame.
    Disconnected,
}

impl CloseReason {
    /// The WebSocket close code sent in the close frame.
    pub fn close_code(self) -> u16 {
        match self {
            CloseReason::InvalidRoomId | CloseReason::InvalidPeerId => 4400,
            CloseReason::Unauthorized => 4401,
            CloseReason::OriginNotAllowed | CloseReason::Kicked => 4403,
            CloseReason::PeerIdTaken => 4409,
            CloseReason::RateLimited => 4429,
            CloseReason::ServerFull | CloseReason::RoomFull => 4503,
            CloseReason::MessageTooLarge => 1009,
            CloseReason::GoingAway => 1001,
            CloseReason::Timeout => 4408,
            CloseReason::SlowConsumer => 1008,
            CloseReason::ProtocolError => 1002,
            CloseReason::Internal => 1011,
            CloseReason::Replaced => 4410,
            CloseReason::TryAgainLater => 1013,
            CloseReason::ClientClosed(code) => code,
            CloseReason::Disconnected => 1006,
        }
    }

    /// The error code announced before the close frame; `None` when the client
    /// ended the session itself.
    pub const fn error_code(self) -> Option<ErrorCode> {
        Some(match self {
            CloseReason::InvalidRoomId => ErrorCode::InvalidRoomId,
            CloseReason::InvalidPeerId => ErrorCode::InvalidPeerId,
            CloseReason::Unauthorized => ErrorCode::Unauthorized,
            CloseReason::OriginNotAllowed => ErrorCode::OriginNotAllowed,
            CloseReason::Kicked => ErrorCode::Kicked,
            CloseReason::PeerIdTaken => ErrorCode::PeerIdTaken,
            CloseReason::RateLimited => ErrorCode::RateLimited,
            CloseReason::ServerFull => ErrorCode::ServerFull,
            CloseReason::RoomFull => ErrorCode::RoomFull,
            CloseReason::MessageTooLarge => ErrorCode::MessageTooLarge,
            CloseReason::GoingAway => ErrorCode::GoingAway,
            CloseReason::Timeout => ErrorCode::Timeout,
            CloseReason::SlowConsumer => ErrorCode::SlowConsumer,
            CloseReason::ProtocolError => ErrorCode::ProtocolError,
            CloseReason::Internal => ErrorCode::InternalError,
            CloseReason::Replaced => ErrorCode::Replaced,
            CloseReason::TryAgainLater => ErrorCode::TryAgainLater,
            CloseReason::ClientClosed(_) | CloseReason::Disconnected => return None,
        })
    }

    /// The human sentence of the `error` message.
    pub fn message(self) -> &'static str {
        match self {
            CloseReason::InvalidRoomId => {
                "room_id must be 1-64 characters from A-Z a-z 0-9 . _ ~ -"
            }
            CloseReason::InvalidPeerId => {
                "peer_id must be 1-64 characters from A-Z a-z 0-9 . _ ~ -"
            }
            CloseReason::Unauthorized => "a valid token for this room and peer is required",
            CloseReason::OriginNotAllowed => "this Origin may not open signaling sessions",
            CloseReason::Kicked => "an operator removed this peer",
            CloseReason::PeerIdTaken => "this peer_id is already connected in this room",
            CloseReason::RateLimited => "too many messages: the session kept exceeding its rate",
            CloseReason::ServerFull => "the server has reached its connection limit",
            CloseReason::RoomFull => "the room has reached its peer limit",
            CloseReason::MessageTooLarge => "a frame or message exceeded the size limit",
            CloseReason::GoingAway => "the server is shutting down",
            CloseReason::Timeout => "no frame received within the idle timeout",
            CloseReason::SlowConsumer => "the peer did not read its messages fast enough",
            CloseReason::ProtocolError => "the WebSocket protocol was violated",
            CloseReason::Internal => "internal server error",
            CloseReason::Replaced => "a new session resumed this peer",
            CloseReason::TryAgainLater => "the service is unavailable for a moment: try again",
            CloseReason::ClientClosed(_) => "closed by the client",
            CloseReason::Disconnected => "connection lost",
        }
    }
}

impl CloseReason {
    /// Whether the session ended for a network reason (PROTOCOL.md §8): its peer is
    /// held for the resume grace instead of leaving at once.
    pub const fn is_resumable(self) -> bool {
        matches!(
            self,
            CloseReason::Disconnected | CloseReason::Timeout | CloseReason::SlowConsumer
        )
    }

    /// A short name for logs and metrics: the error code, or `client_closed` /
    /// `disconnected` when the client ended the session.
    pub const fn label(self) -> &'static str {
        match self.error_code() {
            Some(code) => code.as_str(),
            None => match self {
                CloseReason::Disconnected => "disconnected",
                _ => "client_closed",
            },
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Disconnected => f.write_str(self.label()),
            _ => write!(f, "{} ({})", self.label(), self.close_code()),
        }
    }
}

/// The relayed message types of PROTOCOL.md §4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayKind {
    Offer,
    Answer,
    IceCandidate,
}

impl RelayKind {
    /// Every kind, in declaration order (`kind as usize` is its index here).
    pub const ALL: [RelayKind; 3] = [RelayKind::Offer, RelayKind::Answer, RelayKind::IceCandidate];

    pub const fn as_str(self) -> &'static str {
        match self {
            RelayKind::Offer => "offer",
            RelayKind::Answer => "answer",
            RelayKind::IceCandidate => "ice_candidate",
        }
    }
}

mod inbound;
pub mod outbound;
pub mod scan;

pub use inbound::{parse_inbound, Inbound, Rejection};

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
