//! The body of `GET /webrtc/ice-servers` (PROTOCOL.md §6), with time-limited TURN
//! credentials in the TURN REST format that coturn checks with `use-auth-secret`:
//!
//! ```text
//! username   = "<unix expiry>:<user>"
//! credential = base64(HMAC-SHA1(secret, username))
//! ```
//!
//! No I/O and no clock: callers pass the time and the user part, so every function
//! here is pure and unit-tested. The HMAC, SHA-1 and base64 come from RustCrypto's
//! `hmac` and `sha1` and the `base64` crate (`sha1` is the one tungstenite already
//! uses for the WebSocket handshake): a credential that coturn refuses because of a
//! hand-rolled HMAC detail would be hard to see, and these are the reviewed versions.
//!
//! ```
//! use webrtc_signaling::ice;
//! let c = ice::turn_rest_credential("s3cret", 1_700_000_000, "peer1");
//! assert_eq!(c.username, "1700000000:peer1");
//! assert_eq!(c.credential.len(), 28); // base64 of a 20-byte HMAC-SHA1
//! ```

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha1::Sha1;

use crate::config::{IceSettings, Secret};
use crate::protocol::PeerId;

/// One username/credential pair for the TURN servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredential {
    pub username: String,
    pub credential: String,
}

/// The TURN REST credential for `user`, valid until `expiry_unix` (seconds since the
/// epoch). coturn refuses it once its clock passes `expiry_unix`.
pub fn turn_rest_credential(secret: &str, expiry_unix: u64, user: &str) -> TurnCredential {
    let username = format!("{expiry_unix}:{user}");
    // HMAC takes a key of any length: new_from_slice cannot fail for it.
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    TurnCredential {
        username,
        credential,
    }
}

/// The body, typed so its keys come out in the order PROTOCOL.md §6 shows them.
#[derive(Serialize, Deserialize)]
struct Body {
    #[serde(rename = "iceServers")]
    ice_servers: Vec<Entry>,
    ttl: u64,
}

/// What `/webrtc/ice-servers` answers with: the body built at start, and what mints
/// per-request credentials.
#[derive(Debug)]
pub struct Ice {
    pub static_json: String,
    pub turn_secret: Option<Secret>,
    pub turn_ttl: Duration,
}

/// One `RTCIceServer`.
#[derive(Serialize, Deserialize)]
struct Entry {
    urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    credential: Option<String>,
}

impl Entry {
    fn is_turn(&self) -> bool {
        self.urls.iter().any(|u| is_turn(u))
    }
}

/// The body without per-request credentials: every `--stun`/`--turn` URL in its own
/// entry, static `--turn-username`/`--turn-credential` on the TURN ones, `"ttl":0`.
/// Built once at start; [`with_turn_credentials`] adds fresh credentials to it.
pub fn static_json(config: &IceSettings) -> String {
    let ice_servers = config
        .servers
        .iter()
        .map(|url| {
            let mut entry = Entry {
                urls: vec![url.clone()],
                username: None,
                credential: None,
            };
            if entry.is_turn() {
                entry.username = config.turn_username.clone();
                entry.credential = config.turn_credential.clone();
                if entry.username.is_none() || entry.credential.is_none() {
                    (entry.username, entry.credential) = (None, None);
                }
            }
            entry
        })
        .collect();
    to_json(&Body {
        ice_servers,
        ttl: 0,
    })
}

/// `base` (a [`static_json`] body) with one fresh credential pair, valid for `ttl`
/// from `now_unix`, on every TURN entry (replacing static ones), and `"ttl"` set.
pub fn with_turn_credentials(
    base: &str,
    secret: &Secret,
    ttl: Duration,
    now_unix: u64,
    user: &str,
) -> String {
    let Ok(mut body) = serde_json::from_str::<Body>(base) else {
        return base.to_owned();
    };
    body.ttl = ttl.as_secs();
    let cred = turn_rest_credential(secret.expose(), now_unix.saturating_add(body.ttl), user);
    for entry in body.ice_servers.iter_mut().filter(|e| e.is_turn()) {
        entry.username = Some(cred.username.clone());
        entry.credential = Some(cred.credential.clone());
    }
    to_json(&body)
}

fn to_json(body: &Body) -> String {
    // Only strings and numbers: serialising cannot fail.
    serde_json::to_string(body).unwrap_or_default()
}

/// The user part of the username: the `peer` parameter of `query` (the part of the
/// path after `?`) when it is a valid peer id (PROTOCOL.md §2, so it never contains
/// the `:` separator), else `None` (the caller then uses [`random_user`]).
pub fn user_from_query(query: Option<&str>) -> Option<String> {
    crate::query::param(query, "peer")
        .and_then(|v| PeerId::parse(&v).ok())
        .map(|p| p.as_str().to_owned())
}

/// 16 hex digits from the operating system's random source (the user part only has
/// to tell allocations apart in coturn's logs; it is not a secret).
pub fn random_user() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness (should not happen on Linux): the clock still differs.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        bytes = nanos.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_turn(url: &str) -> bool {
    url.starts_with("turn:") || url.starts_with("turns:")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn config(urls: &[&str]) -> IceSettings {
        IceSettings {
            servers: urls.iter().map(|s| s.to_string()).collect(),
            ..IceSettings::default()
        }
    }

    /// One request's body, as the HTTP handler builds it.
    fn json(c: &IceSettings, now_unix: u64, user: &str) -> String {
        let secret = c.turn_secret.as_ref().unwrap();
        with_turn_credentials(&static_json(c), secret, c.turn_ttl, now_unix, user)
    }

    #[test]
    fn credential_matches_the_turn_rest_formula() {
        // Cross-checked with: printf %s '1700000000:peer1' |
        //   openssl dgst -sha1 -hmac s3cret -binary | base64
        let c = turn_rest_credential("s3cret", 1_700_000_000, "peer1");
        assert_eq!(c.username, "1700000000:peer1");
        assert_eq!(c.credential, "HpKpttwpok0UAohEbHcnLDkuXNs=");
        // RFC 2202 test case 2 (HMAC-SHA1, key "Jefe"), base64 of
        // effcdf6ae5eb2fa2d27416d5f184df9c259a7c79.
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()),
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
    }

    #[test]
    fn static_body_is_what_the_server_always_served() {
        assert_eq!(static_json(&config(&[])), r#"{"iceServers":[],"ttl":0}"#);
        let mut c = config(&["stun:s:3478", "turn:t:3478"]);
        assert_eq!(
            serde_json::from_str::<Value>(&static_json(&c)).unwrap(),
            json!({"iceServers": [{"urls": ["stun:s:3478"]}, {"urls": ["turn:t:3478"]}], "ttl": 0})
        );
        c.turn_username = Some("u".into());
        c.turn_credential = Some("p".into());
        assert_eq!(
            serde_json::from_str::<Value>(&static_json(&c)).unwrap(),
            json!({"iceServers": [
                {"urls": ["stun:s:3478"]},
                {"urls": ["turn:t:3478"], "username": "u", "credential": "p"}
            ], "ttl": 0})
        );
    }

    #[test]
    fn half_static_credentials_are_not_announced() {
        let mut c = config(&["turn:t:3478"]);
        c.turn_username = Some("u".into());
        assert_eq!(
            static_json(&c),
            r#"{"iceServers":[{"urls":["turn:t:3478"]}],"ttl":0}"#
        );
    }

    #[test]
    fn secret_mints_one_pair_for_every_turn_entry_and_wins_over_static() {
        let mut c = config(&["stun:s:3478", "turn:t:3478", "turns:t:5349"]);
        c.turn_username = Some("static".into());
        c.turn_credential = Some("static".into());
        c.turn_secret = Some(Secret::new("s3cret"));
        c.turn_ttl = Duration::from_secs(600);
        let body: Value = serde_json::from_str(&json(&c, 1_699_999_400, "peer1")).unwrap();
        let cred = json!("HpKpttwpok0UAohEbHcnLDkuXNs=");
        assert_eq!(
            body,
            json!({"iceServers": [
                {"urls": ["stun:s:3478"]},
                {"urls": ["turn:t:3478"], "username": "1700000000:peer1", "credential": cred},
                {"urls": ["turns:t:5349"], "username": "1700000000:peer1", "credential": cred}
            ], "ttl": 600})
        );
        // Keys in the order of PROTOCOL.md §6.
        assert!(json(&c, 1_699_999_400, "peer1").starts_with(
            r#"{"iceServers":[{"urls":["stun:s:3478"]},{"urls":["turn:t:3478"],"username":"1700000000:peer1","credential":""#
        ));
        // A later request gets a later expiry.
        let later: Value = serde_json::from_str(&json(&c, 1_699_999_401, "peer1")).unwrap();
        assert_eq!(
            later["iceServers"][1]["username"],
            json!("1700000001:peer1")
        );
    }

    #[test]
    fn user_part_comes_from_a_valid_peer_parameter_only() {
        assert_eq!(user_from_query(Some("peer=p1")).as_deref(), Some("p1"));
        assert_eq!(
            user_from_query(Some("x=1&peer=a.b_c~d-e")).as_deref(),
            Some("a.b_c~d-e")
        );
        for bad in [
            None,
            Some(""),
            Some("peer="),
            Some("peer=a:b"),
            Some("peer=%3A"),
            Some("peerx=a"),
        ] {
            assert_eq!(user_from_query(bad), None, "{bad:?}");
        }
        let long = format!("peer={}", "a".repeat(65));
        assert_eq!(user_from_query(Some(&long)), None);
        let (a, b) = (random_user(), random_user());
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
