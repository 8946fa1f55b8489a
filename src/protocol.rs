//! The wire contract of PROTOCOL.md: identifiers, messages, error and close codes. No I/O.
//!
//! Everything a client sends is validated here, once; the rest of the server only
//! sees typed values ([`RoomId`], [`PeerId`], [`Inbound`]) and ready-to-send frames.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

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
}

impl ErrorCode {
    /// Every code, in declaration order (`code as usize` is its index here).
    pub const ALL: [ErrorCode; 19] = [
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
            CloseReason::ClientClosed(_) => "closed by the client",
            CloseReason::Disconnected => "connection lost",
        }
    }
}

impl CloseReason {
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

/// A validated client message.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// `{"type":"ping"}`: answered with `{"type":"pong"}`.
    Ping,
    /// A message to relay; `frame` is the text to deliver, `from_peer_id` included.
    Relay {
        kind: RelayKind,
        target: PeerId,
        frame: String,
    },
}

/// A message that was refused; the session goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
}

impl Rejection {
    fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Rejection {
            code,
            message: message.into(),
        }
    }
}

fn some_raw<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// The fields the server looks at; every other field is skipped (but its syntax checked).
/// `some_raw` keeps an explicit `null` apart from a missing field.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "type", borrow, default, deserialize_with = "some_raw")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "some_raw")]
    target_peer_id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "some_raw")]
    from_peer_id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "some_raw")]
    offer: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "some_raw")]
    answer: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "some_raw")]
    candidate: Option<&'a RawValue>,
}

fn raw_string(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    if !text.contains('\\') {
        return Some(Cow::Borrowed(&text[1..text.len() - 1]));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

/// Validates one text frame from `from` (PROTOCOL.md §4, §5).
///
/// The relayed frame is the sender's own text with `from_peer_id` appended, so every
/// field (numbers, key order, unicode escapes) reaches the target exactly as sent.
pub fn parse_inbound(text: &str, from: &PeerId) -> Result<Inbound, Rejection> {
    if !text.trim_start().starts_with('{') {
        return Err(Rejection::new(
            ErrorCode::InvalidJson,
            "the message is not a JSON object",
        ));
    }
    let fields: Fields<'_> = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            Rejection::new(ErrorCode::InvalidMessage, format!("malformed message: {e}"))
        } else {
            Rejection::new(
                ErrorCode::InvalidJson,
                format!("the message is not valid JSON: {e}"),
            )
        }
    })?;
    let kind = fields
        .kind
        .and_then(raw_string)
        .ok_or_else(|| Rejection::new(ErrorCode::InvalidMessage, "\"type\" must be a string"))?;
    let (kind, payload, field) = match &*kind {
        "ping" => return Ok(Inbound::Ping),
        "offer" => (RelayKind::Offer, fields.offer, "offer"),
        "answer" => (RelayKind::Answer, fields.answer, "answer"),
        "ice_candidate" => (RelayKind::IceCandidate, fields.candidate, "candidate"),
        other => {
            return Err(Rejection::new(
                ErrorCode::UnknownType,
                format!(
                    "unknown message type {:?}: expected offer, answer, ice_candidate or ping",
                    other
                ),
            ))
        }
    };
    let payload_ok = match payload.map(RawValue::get) {
        Some(p) if p.starts_with('{') => true,
        Some("null") => kind == RelayKind::IceCandidate,
        _ => false,
    };
    if !payload_ok {
        let what = if kind == RelayKind::IceCandidate {
            "a JSON object or null"
        } else {
            "a JSON object"
        };
        return Err(Rejection::new(
            ErrorCode::InvalidMessage,
            format!("\"{field}\" must be {what}"),
        ));
    }
    let target = fields.target_peer_id.and_then(raw_string).ok_or_else(|| {
        Rejection::new(
            ErrorCode::InvalidMessage,
            "\"target_peer_id\" must be a string",
        )
    })?;
    let target = PeerId::parse(&target).map_err(|_| {
        Rejection::new(
            ErrorCode::PeerNotFound,
            format!("peer {:?} is not in this room", &*target),
        )
    })?;
    let frame = if fields.from_peer_id.is_some() {
        rewrite_with_sender(text, from)?
    } else {
        append_sender(text, from)
    };
    Ok(Inbound::Relay {
        kind,
        target,
        frame,
    })
}

/// The common case: no `from_peer_id` in the message, so appending one is exact.
fn append_sender(text: &str, from: &PeerId) -> String {
    let body = text.trim_end();
    // A valid object ends with '}' and has at least "type", so a comma is always right.
    let body = &body[..body.len() - 1];
    let mut out = String::with_capacity(body.len() + from.as_str().len() + 20);
    out.push_str(body);
    out.push_str(",\"from_peer_id\":\"");
    // Ids are URL-unreserved characters: nothing to escape.
    out.push_str(from.as_str());
    out.push_str("\"}");
    out
}

/// The rare case: the sender supplied its own `from_peer_id`; the server's value wins.
/// Values are kept as raw JSON text, so nothing but that field changes.
fn rewrite_with_sender(text: &str, from: &PeerId) -> Result<String, Rejection> {
    let mut map: std::collections::BTreeMap<String, &RawValue> = serde_json::from_str(text)
        .map_err(|e| Rejection::new(ErrorCode::InvalidJson, format!("invalid JSON: {e}")))?;
    map.remove("from_peer_id");
    let mut out = serde_json::to_string(&map)
        .map_err(|e| Rejection::new(ErrorCode::InvalidMessage, format!("{e}")))?;
    out.truncate(out.len() - 1);
    if !map.is_empty() {
        out.push(',');
    }
    out.push_str("\"from_peer_id\":\"");
    out.push_str(from.as_str());
    out.push_str("\"}");
    Ok(out)
}

/// Server → client messages, serialised once per event.
pub mod outbound {
    use super::{ErrorCode, PeerId};
    use serde::Serialize;

    #[derive(Serialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum Out<'a> {
        ExistingPeers { peers: &'a [&'a PeerId] },
        PeerJoined { peer_id: &'a PeerId },
        PeerLeft { peer_id: &'a PeerId },
        Error { code: &'a str, message: &'a str },
    }

    fn to_text(out: &Out<'_>) -> String {
        // Serialising these plain structs into a String cannot fail.
        serde_json::to_string(out).unwrap_or_default()
    }

    pub fn existing_peers(peers: &[&PeerId]) -> String {
        to_text(&Out::ExistingPeers { peers })
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn peer(s: &str) -> PeerId {
        PeerId::parse(s).unwrap()
    }

    fn relay(text: &str) -> Result<(RelayKind, String, Value), Rejection> {
        match parse_inbound(text, &peer("me"))? {
            Inbound::Relay {
                kind,
                target,
                frame,
            } => Ok((
                kind,
                target.to_string(),
                serde_json::from_str(&frame).unwrap(),
            )),
            Inbound::Ping => panic!("ping"),
        }
    }

    fn code(text: &str) -> ErrorCode {
        parse_inbound(text, &peer("me")).unwrap_err().code
    }

    #[test]
    fn ids_follow_section_2() {
        assert!(PeerId::parse("aZ09._~-").is_ok());
        assert_eq!(PeerId::parse("").unwrap_err(), IdError::Empty);
        assert_eq!(
            PeerId::parse(&"a".repeat(65)).unwrap_err(),
            IdError::TooLong
        );
        assert!(PeerId::parse(&"a".repeat(64)).is_ok());
        for bad in ["a b", "a/b", "é", "a%20", "a+b", "a?b"] {
            assert_eq!(PeerId::parse(bad).unwrap_err(), IdError::BadChar, "{bad}");
        }
    }

    #[test]
    fn relay_keeps_every_field_and_adds_sender() {
        let (kind, target, v) = relay(
            r#"{"type":"offer","offer":{"type":"offer","sdp":"v=0\r\n"},"target_peer_id":"p2","x":[1,2.50,{"é":"☃"}]}"#,
        )
        .unwrap();
        assert_eq!(kind, RelayKind::Offer);
        assert_eq!(target, "p2");
        assert_eq!(
            v,
            json!({"type":"offer","offer":{"type":"offer","sdp":"v=0\r\n"},"target_peer_id":"p2","x":[1,2.50,{"é":"☃"}],"from_peer_id":"me"})
        );
    }

    #[test]
    fn big_numbers_are_relayed_verbatim() {
        let text = r#"{"type":"answer","answer":{"n":123456789012345678901234567890},"target_peer_id":"p2"}"#;
        match parse_inbound(text, &peer("me")).unwrap() {
            Inbound::Relay { frame, .. } => {
                assert!(frame.contains("123456789012345678901234567890"))
            }
            Inbound::Ping => panic!(),
        }
    }

    #[test]
    fn sender_supplied_from_peer_id_is_overwritten() {
        let (_, _, v) = relay(
            r#"{"from_peer_id":"evil","type":"ice_candidate","candidate":null,"target_peer_id":"p2"}"#,
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"type":"ice_candidate","candidate":null,"target_peer_id":"p2","from_peer_id":"me"})
        );
    }

    #[test]
    fn ping_and_errors() {
        assert_eq!(
            parse_inbound(r#" {"type":"ping"} "#, &peer("me")).unwrap(),
            Inbound::Ping
        );
        assert_eq!(code("not json"), ErrorCode::InvalidJson);
        assert_eq!(code("[1]"), ErrorCode::InvalidJson);
        assert_eq!(code("\"x\""), ErrorCode::InvalidJson);
        assert_eq!(code("{\"type\":"), ErrorCode::InvalidJson);
        assert_eq!(code("{} x"), ErrorCode::InvalidJson);
        assert_eq!(code("{}"), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":1}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":"hello"}"#), ErrorCode::UnknownType);
        assert_eq!(
            code(r#"{"type":"offer","target_peer_id":"p"}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"offer","offer":"sdp","target_peer_id":"p"}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"offer","offer":null,"target_peer_id":"p"}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"offer","offer":{}}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"offer","offer":{},"target_peer_id":3}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"offer","offer":{},"target_peer_id":"no such/peer"}"#),
            ErrorCode::PeerNotFound
        );
        assert_eq!(
            code(r#"{"type":"offer","type":"offer","offer":{},"target_peer_id":"p"}"#),
            ErrorCode::InvalidMessage
        );
    }

    #[test]
    fn escaped_type_is_understood() {
        let (kind, _, _) =
            relay(r#"{"type":"\u006fffer","offer":{},"target_peer_id":"p"}"#).unwrap();
        assert_eq!(kind, RelayKind::Offer);
    }

    #[test]
    fn all_tables_are_indexed_by_discriminant() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(*code as usize, i, "{code}");
        }
        for (i, kind) in RelayKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i, "{}", kind.as_str());
        }
    }

    #[test]
    fn close_table() {
        assert_eq!(CloseReason::PeerIdTaken.close_code(), 4409);
        assert_eq!(
            CloseReason::PeerIdTaken.error_code(),
            Some(ErrorCode::PeerIdTaken)
        );
        assert_eq!(CloseReason::ClientClosed(1000).error_code(), None);
        assert_eq!(CloseReason::PeerIdTaken.to_string(), "peer_id_taken (4409)");
        assert_eq!(
            outbound::error(ErrorCode::Timeout, "x"),
            r#"{"type":"error","code":"timeout","message":"x"}"#
        );
        assert_eq!(
            outbound::existing_peers(&[&peer("a"), &peer("b")]),
            r#"{"type":"existing_peers","peers":["a","b"]}"#
        );
        assert_eq!(
            outbound::peer_left(&peer("a")),
            r#"{"type":"peer_left","peer_id":"a"}"#
        );
    }
}
