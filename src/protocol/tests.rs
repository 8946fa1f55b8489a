//! Unit tests of identifiers, validation and the close table.

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
    let text =
        r#"{"type":"answer","answer":{"n":123456789012345678901234567890},"target_peer_id":"p2"}"#;
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
fn a_replaced_from_peer_id_leaves_every_other_member_as_sent() {
    let text = "{ \"x\" : [1,2.50,\"a,b\\\"}\"], \"from_peer_id\":\"evil\",\"type\":\"offer\",\
                \"offer\":{\"sdp\":\"v=0\"},\"x\":\"dup\",\"k:\\u0065\":1e3,\"target_peer_id\":\"p2\"}";
    let Inbound::Relay { frame, .. } = parse_inbound(text, &peer("me")).unwrap() else {
        panic!("not a relay");
    };
    assert_eq!(
        frame,
        "{\"x\" : [1,2.50,\"a,b\\\"}\"],\"type\":\"offer\",\"offer\":{\"sdp\":\"v=0\"},\
         \"x\":\"dup\",\"k:\\u0065\":1e3,\"target_peer_id\":\"p2\",\"from_peer_id\":\"me\"}"
    );
    // Escaped, the key is still from_peer_id.
    let text = r#"{"from\u005fpeer_id":"evil","type":"ping"}"#;
    assert_eq!(parse_inbound(text, &peer("me")), Ok(Inbound::Ping));
    let text = r#"{"type":"offer","offer":{},"target_peer_id":"p2","from\u005fpeer_id":"e"}"#;
    let Inbound::Relay { frame, .. } = parse_inbound(text, &peer("me")).unwrap() else {
        panic!("not a relay");
    };
    assert_eq!(
        frame,
        r#"{"type":"offer","offer":{},"target_peer_id":"p2","from_peer_id":"me"}"#
    );
}

#[test]
fn duplicates_of_the_fields_the_server_reads_are_refused() {
    for text in [
        r#"{"type":"offer","type":"ping","offer":{},"target_peer_id":"p2"}"#,
        r#"{"type":"offer","offer":{},"target_peer_id":"p2","target_peer_id":"p3"}"#,
        r#"{"type":"offer","offer":{},"target_peer_id":"p2","from_peer_id":"a","from_peer_id":"b"}"#,
        r#"{"type":"offer","offer":{},"offer":1,"target_peer_id":"p2"}"#,
        r#"{"type":"offer","offer":{},"target_peer_id":"p2","t\u0061rget_peer_id":"p3"}"#,
    ] {
        let e = parse_inbound(text, &peer("me")).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidMessage, "{text}: {e:?}");
    }
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
    let (kind, _, _) = relay(r#"{"type":"\u006fffer","offer":{},"target_peer_id":"p"}"#).unwrap();
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
        outbound::existing_peers(&[&peer("a"), &peer("b")], None),
        r#"{"type":"existing_peers","peers":["a","b"]}"#
    );
    assert_eq!(
        outbound::existing_peers(&[], Some("tok")),
        r#"{"type":"existing_peers","peers":[],"resume_token":"tok"}"#
    );
    assert_eq!(
        outbound::peer_left(&peer("a")),
        r#"{"type":"peer_left","peer_id":"a"}"#
    );
}

#[test]
fn errors_echo_at_most_a_short_piece_of_the_client_text() {
    let long = "x".repeat(100_000);
    let r = parse_inbound(&format!(r#"{{"type":"{long}"}}"#), &peer("me")).unwrap_err();
    assert_eq!(r.code, ErrorCode::UnknownType);
    assert!(r.message.len() < 200, "{}", r.message.len());
    let r = parse_inbound(
        &format!(
            r#"{{"type":"offer","offer":{{}},"target_peer_id":"{}é"}}"#,
            "é".repeat(40)
        ),
        &peer("me"),
    )
    .unwrap_err();
    assert_eq!(r.code, ErrorCode::PeerNotFound);
    assert!(r.message.len() < 200);
}
