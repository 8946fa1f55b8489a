//! Validation of what a client sends (PROTOCOL.md §4, §5): one text frame in, a relay
//! ready to deliver or the error to answer with. No I/O.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{scan, ErrorCode, PeerId, RelayKind};

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
                    clip(other)
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
            format!("peer {:?} is not in this room", clip(&target)),
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
/// That member is cut out of the text and every other member is kept byte for byte,
/// in its place (keys as the sender escaped them, values as sent, duplicates of
/// fields the server does not read included). `text` is a valid JSON object here
/// (serde has read all of it), and the fields the server reads appear once (serde
/// refuses a duplicate of them), so there is exactly one member to cut.
fn rewrite_with_sender(text: &str, from: &PeerId) -> Result<String, Rejection> {
    let members = top_level_members(text).ok_or_else(|| {
        Rejection::new(ErrorCode::InvalidJson, "the message is not a JSON object")
    })?;
    let mut out = String::with_capacity(text.len() + from.as_str().len() + 20);
    out.push('{');
    for member in members {
        let name = serde_json::from_str::<Cow<'_, str>>(&member[..string_len(member)]);
        if name.as_deref().ok() == Some("from_peer_id") {
            continue;
        }
        out.push_str(member);
        out.push(',');
    }
    out.push_str("\"from_peer_id\":\"");
    out.push_str(from.as_str());
    out.push_str("\"}");
    Ok(out)
}

/// The length of the JSON string at the start of `s` (0 if there is none).
fn string_len(s: &str) -> usize {
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate().skip(1) {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return i + 1,
            _ => {}
        }
    }
    0
}

/// The text of each member (`"key": value`, without the whitespace around it) of
/// the JSON object `text`, in order; `None` if `text` is not an object. A scan of
/// depth and strings only: `text` has been validated already.
fn top_level_members(text: &str) -> Option<Vec<&str>> {
    let body = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let (mut members, mut start, mut depth) = (Vec::new(), 0, 0usize);
    for (i, b) in scan::outside_strings(body.as_bytes()) {
        match b {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.checked_sub(1)?,
            b',' if depth == 0 => {
                members.push(body[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = body[start..].trim();
    if !last.is_empty() {
        members.push(last);
    }
    Some(members)
}

/// Longest piece of client text echoed in an error: a reply must stay small whatever
/// the client sent, or a flood of bad messages would fill the sender's own socket.
const ECHO_MAX: usize = 64;

fn clip(s: &str) -> Cow<'_, str> {
    if s.len() <= ECHO_MAX {
        return Cow::Borrowed(s);
    }
    let mut end = ECHO_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}
