//! The inbound message parser (`protocol::parse_inbound`): a relayed frame keeps every
//! member of the sender's object byte for byte and in order, minus any `from_peer_id`,
//! plus exactly one server-set `from_peer_id`; duplicates of the keys the server reads
//! are refused, so no receiver can read a different `type`, target or payload.

use proptest::prelude::*;
use webrtc_signaling::protocol::{parse_inbound, ErrorCode, Inbound, PeerId};

const READ: [&str; 6] = [
    "type",
    "target_peer_id",
    "from_peer_id",
    "offer",
    "answer",
    "candidate",
];

/// The reference splitter: top-level members of a JSON object as (decoded key, raw
/// member text), via serde_json's own reading of each value's extent.
fn members(text: &str) -> Option<Vec<(String, String)>> {
    // RawValue, not Value: building a Value recurses, and this runs on 64 KiB.
    let raw: &serde_json::value::RawValue = serde_json::from_str(text).ok()?;
    if !raw.get().starts_with('{') {
        return None;
    }
    let mut out = Vec::new();
    let body = text.trim();
    let mut rest = body.strip_prefix('{')?.trim_start();
    if rest.strip_prefix('}').is_some() {
        return Some(out);
    }
    loop {
        let mut de = serde_json::Deserializer::from_str(rest).into_iter::<String>();
        let key = de.next()?.ok()?;
        let key_len = de.byte_offset();
        let after = rest[key_len..].trim_start().strip_prefix(':')?.trim_start();
        let mut de =
            serde_json::Deserializer::from_str(after).into_iter::<&serde_json::value::RawValue>();
        let value = de.next()?.ok()?;
        let value_end = de.byte_offset();
        let member_len = (after.as_ptr() as usize - rest.as_ptr() as usize) + value_end;
        let _ = value;
        out.push((key, rest[..member_len].to_owned()));
        rest = rest[member_len..].trim_start();
        match rest.as_bytes().first()? {
            b',' => rest = rest[1..].trim_start(),
            b'}' => return Some(out),
            _ => return None,
        }
    }
}

pub fn check(input: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(input);
    let me = PeerId::parse("me").map_err(|e| e.to_string())?;
    let result = parse_inbound(&text, &me);
    let Some(sent) = members(&text) else {
        // Not a JSON object: never a relay.
        return match result {
            Ok(Inbound::Relay { .. }) => Err("a relay from a non-object".into()),
            _ => Ok(()),
        };
    };
    let dup = READ
        .iter()
        .any(|k| sent.iter().filter(|(n, _)| n == k).count() > 1);
    match result {
        Ok(_) if dup => Err("a duplicate key the server reads was accepted".into()),
        Err(e) if dup && e.code != ErrorCode::InvalidMessage => Err(format!(
            "a duplicate key gave {:?}, not invalid_message",
            e.code
        )),
        Ok(Inbound::Relay {
            kind,
            target,
            frame,
        }) => {
            let got = members(&frame).ok_or("the relayed frame is not an object")?;
            let from: Vec<_> = got.iter().filter(|(k, _)| k == "from_peer_id").collect();
            if from.len() != 1 || from[0].1 != r#""from_peer_id":"me""# {
                return Err(format!("from_peer_id members: {from:?}"));
            }
            let kept: Vec<_> = got
                .iter()
                .filter(|(k, _)| k != "from_peer_id")
                .map(|(_, m)| m.trim())
                .collect();
            let sent_kept: Vec<_> = sent
                .iter()
                .filter(|(k, _)| k != "from_peer_id")
                .map(|(_, m)| m.trim())
                .collect();
            if kept != sent_kept {
                return Err(format!(
                    "members changed:\n sent {sent_kept:?}\n got  {kept:?}"
                ));
            }
            // What a receiver reads (JSON.parse, last wins) is what the server used.
            let last = |k: &str| {
                got.iter()
                    .rev()
                    .find(|(n, _)| n == k)
                    .map(|(_, m)| m.clone())
            };
            let read = |k: &str| {
                last(k).and_then(|m| {
                    let mut de = serde_json::Deserializer::from_str(&m).into_iter::<String>();
                    de.next()?.ok()?;
                    let v = m[de.byte_offset()..].trim_start().strip_prefix(':')?.trim();
                    serde_json::from_str::<String>(v).ok()
                })
            };
            if read("type").as_deref() != Some(kind.as_str())
                || read("target_peer_id").as_deref() != Some(target.as_str())
            {
                return Err(format!(
                    "a receiver reads another type or target than {kind:?} to {target}"
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

pub const DICTIONARY: &[&[u8]] = &[
    b"\"type\"",
    b"\"from_peer_id\"",
    b"\"target_peer_id\"",
    b"\"offer\"",
    b"\"candidate\"",
    b"null",
    b"{}",
    b"[]",
    b",",
    b":",
    b"\"p2\"",
    b"\\u0065",
    b"\\\"",
    b"\"ping\"",
    b"\"ice_candidate\"",
    b" ",
    b"1e400",
    b"-0",
    b"\"\\ud800\"",
];

pub fn generate() -> BoxedStrategy<Vec<u8>> {
    let key = prop::sample::select(vec![
        "type",
        "type",
        "target_peer_id",
        "target_peer_id",
        "from_peer_id",
        "offer",
        "answer",
        "candidate",
        "x",
        "from\\u005fpeer_id",
        "typ\\u0065",
        "a,b",
        "k:v",
        "\\\"",
    ]);
    let value = prop::sample::select(vec![
        "\"offer\"",
        "\"answer\"",
        "\"ice_candidate\"",
        "\"ping\"",
        "\"p2\"",
        "\"me\"",
        "\"a:b\"",
        "{}",
        "{\"sdp\":\"v=0\\r\\n\"}",
        "null",
        "1",
        "2.50",
        "[1,{\"a\":\"}\"}]",
        "\"\\u00e9\"",
        "\"a,b}\"",
        "true",
        "[[[[[]]]]]",
    ]);
    let ws = prop::sample::select(vec!["", "", " ", "\n", "\t "]);
    prop::collection::vec((key, ws.clone(), value, ws), 0..8)
        .prop_map(|ms| {
            let body: Vec<String> = ms
                .iter()
                .map(|(k, w1, v, w2)| format!("{w1}\"{k}\"{w2}:{w1}{v}{w2}"))
                .collect();
            format!("{{{}}}", body.join(",")).into_bytes()
        })
        .boxed()
}
