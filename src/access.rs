//! Who may connect: room tokens (JWT, `--auth-secret`/`--auth-public-key`), admin
//! tokens for the REST listings, and the Origin allow-list (`--allowed-origin`).
//!
//! No I/O: the HTTP layer hands in the token and headers, this module answers yes or
//! no with a reason for the log. Token parsing and signature checks are jsonwebtoken's
//! (its HMAC check is constant-time); `alg: none` has no `Algorithm` variant there, so
//! such a token never parses.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The claims the server reads. `room` and `peer` name the one session a token admits;
/// `admin: true` opens the REST room listings and admin actions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
    /// Expiry, seconds since the Unix epoch (required).
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// Why a token was not accepted (logged; the client only sees `unauthorized`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Malformed,
    Expired,
    NotYetValid,
    BadSignature,
    /// The token's algorithm has no key configured (e.g. RS256 without a public key).
    UnsupportedAlgorithm(String),
    WrongRoom,
    WrongPeer,
    NotAdmin,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Missing => f.write_str("no token"),
            AuthError::Malformed => f.write_str("malformed token"),
            AuthError::Expired => f.write_str("expired token"),
            AuthError::NotYetValid => f.write_str("token not valid yet (nbf)"),
            AuthError::BadSignature => f.write_str("bad token signature"),
            AuthError::UnsupportedAlgorithm(alg) => {
                write!(f, "token algorithm {alg} is not accepted")
            }
            AuthError::WrongRoom => f.write_str("token is for another room"),
            AuthError::WrongPeer => f.write_str("token is for another peer"),
            AuthError::NotAdmin => f.write_str("token has no admin claim"),
        }
    }
}

impl std::error::Error for AuthError {}

/// The keys tokens are checked with, and the clock-skew allowance.
pub struct Verifier {
    hs256: Option<DecodingKey>,
    rsa: Option<DecodingKey>,
    ec: Option<DecodingKey>,
    leeway_secs: u64,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("hs256", &self.hs256.is_some())
            .field("rsa", &self.rsa.is_some())
            .field("ec", &self.ec.is_some())
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

impl Verifier {
    /// `secret` for HS256; `public_key_pem` (an RSA or EC P-256 `PUBLIC KEY`) for RS256
    /// or ES256. At least one must be given.
    pub fn new(
        secret: Option<&[u8]>,
        public_key_pem: Option<&[u8]>,
        leeway_secs: u64,
    ) -> Result<Verifier, String> {
        let mut v = Verifier {
            hs256: secret.map(DecodingKey::from_secret),
            rsa: None,
            ec: None,
            leeway_secs,
        };
        if let Some(pem) = public_key_pem {
            // The PEM label does not say which kind of key it is; the parsers do.
            if let Ok(k) = DecodingKey::from_ec_pem(pem) {
                v.ec = Some(k);
            } else if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
                v.rsa = Some(k);
            } else {
                return Err("not an RSA or EC public key in PEM".to_owned());
            }
        }
        if v.hs256.is_none() && v.rsa.is_none() && v.ec.is_none() {
            return Err("no secret and no public key".to_owned());
        }
        Ok(v)
    }

    /// Checks signature, expiry (and `nbf` if present) and returns the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::RS256 => self.rsa.as_ref(),
            Algorithm::ES256 => self.ec.as_ref(),
            _ => None,
        }
        .ok_or_else(|| AuthError::UnsupportedAlgorithm(format!("{:?}", header.alg)))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway_secs;
        validation.validate_nbf = true;
        // Identity services add an audience of their own; this server does not check it.
        validation.validate_aud = false;
        match jsonwebtoken::decode::<Claims>(token, key, &validation) {
            Ok(data) => Ok(data.claims),
            Err(e) => Err(match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                _ => AuthError::Malformed,
            }),
        }
    }

    /// A signaling session: the token must name exactly this room and peer.
    pub fn check_peer(&self, token: Option<&str>, room: &str, peer: &str) -> Result<(), AuthError> {
        let claims = self.verify(token.ok_or(AuthError::Missing)?)?;
        if claims.room.as_deref() != Some(room) {
            return Err(AuthError::WrongRoom);
        }
        if claims.peer.as_deref() != Some(peer) {
            return Err(AuthError::WrongPeer);
        }
        Ok(())
    }

    /// The REST room listings and admin actions: a valid token with `admin: true`.
    pub fn check_admin(&self, token: Option<&str>) -> Result<(), AuthError> {
        let claims = self.verify(token.ok_or(AuthError::Missing)?)?;
        if claims.admin {
            Ok(())
        } else {
            Err(AuthError::NotAdmin)
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Signs `claims` with HS256 (what `webrtc-signaling token` prints).
pub fn mint(secret: &[u8], claims: &Claims) -> Result<String, String> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| e.to_string())
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let (scheme, token) = header?.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The access rules in force, built once at start from `config::AccessPolicy`.
#[derive(Debug, Default)]
pub struct Access {
    /// Room tokens: when set, every session needs `?token=` for its room and peer
    /// (else 4401) and the REST room listings an admin token.
    pub verifier: Option<Verifier>,
    /// Browsers on other origins get 4403 `origin_not_allowed`.
    pub origins: Origins,
    /// `DELETE /webrtc/rooms/...` may end sessions.
    pub admin: bool,
}

/// `--allowed-origin`: the exact origins (`scheme://host[:port]`) that may open
/// signaling sessions from a browser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins(Vec<String>);

impl Origins {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `origin` is on the list itself (CORS: the server's own pages need none).
    pub fn lists(&self, origin: &str) -> bool {
        self.0.contains(&normalise(origin))
    }

    /// Adds an origin from the command line, normalised (lower case, no trailing `/`).
    pub fn add(&mut self, origin: &str) -> Result<(), String> {
        let o = normalise(origin);
        let ok = o == "null"
            || ["http://", "https://"].iter().any(|s| {
                o.strip_prefix(s)
                    .is_some_and(|h| !h.is_empty() && !h.contains('/'))
            });
        if !ok {
            return Err(format!(
                "{origin:?} is not an origin (scheme://host[:port], e.g. https://example.com)"
            ));
        }
        self.0.push(o);
        Ok(())
    }

    /// May a request with this `Origin` (and `Host`) open a session? With no list
    /// every origin may. A request without `Origin` is not from a browser page (browsers
    /// always send it on WebSocket upgrades) and is let through: the list protects
    /// visitors' browsers, it cannot stop other programs, which can send any header.
    /// The server's own pages (Origin host equal to the Host header) always may.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        if self.0.is_empty() {
            return true;
        }
        let origin = normalise(origin);
        if self.0.contains(&origin) {
            return true;
        }
        let own_host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        matches!((own_host, host), (Some(o), Some(h)) if o == h.trim().to_ascii_lowercase())
    }
}

fn normalise(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(room: &str, peer: &str, exp: u64) -> Claims {
        Claims {
            room: Some(room.into()),
            peer: Some(peer.into()),
            exp,
            ..Claims::default()
        }
    }

    fn verifier() -> Verifier {
        Verifier::new(Some(b"s3cret"), None, 5).unwrap()
    }

    #[test]
    fn minted_token_admits_its_room_and_peer_only() {
        let t = mint(b"s3cret", &claims("r", "p", now_secs() + 60)).unwrap();
        let v = verifier();
        assert_eq!(v.check_peer(Some(&t), "r", "p"), Ok(()));
        assert_eq!(v.check_peer(Some(&t), "r2", "p"), Err(AuthError::WrongRoom));
        assert_eq!(v.check_peer(Some(&t), "r", "p2"), Err(AuthError::WrongPeer));
        assert_eq!(v.check_peer(None, "r", "p"), Err(AuthError::Missing));
        assert_eq!(v.check_admin(Some(&t)), Err(AuthError::NotAdmin));
    }

    #[test]
    fn expiry_honours_the_leeway() {
        let v = verifier();
        let within = mint(b"s3cret", &claims("r", "p", now_secs() - 2)).unwrap();
        assert_eq!(v.check_peer(Some(&within), "r", "p"), Ok(()));
        let past = mint(b"s3cret", &claims("r", "p", now_secs() - 30)).unwrap();
        assert_eq!(v.check_peer(Some(&past), "r", "p"), Err(AuthError::Expired));
    }

    #[test]
    fn wrong_secret_alg_none_and_garbage_are_refused() {
        let v = verifier();
        let other = mint(b"other", &claims("r", "p", now_secs() + 60)).unwrap();
        assert_eq!(v.verify(&other), Err(AuthError::BadSignature));
        // {"alg":"none","typ":"JWT"} . {"room":"r","peer":"p","exp":9999999999} . (empty)
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.\
                    eyJyb29tIjoiciIsInBlZXIiOiJwIiwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert_eq!(v.verify(none), Err(AuthError::Malformed));
        assert_eq!(v.verify("not-a-token"), Err(AuthError::Malformed));
        assert_eq!(v.verify(""), Err(AuthError::Missing));
    }

    #[test]
    fn admin_claim_opens_admin_checks() {
        let t = mint(
            b"s3cret",
            &Claims {
                admin: true,
                exp: now_secs() + 60,
                ..Claims::default()
            },
        )
        .unwrap();
        assert_eq!(verifier().check_admin(Some(&t)), Ok(()));
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
    }

    #[test]
    fn origins() {
        let mut o = Origins::default();
        assert!(o.allows(Some("https://evil.example"), None));
        o.add("https://App.example/").unwrap();
        assert!(o.add("app.example").is_err());
        assert!(o.add("https://app.example/path").is_err());
        assert!(o.allows(Some("https://app.example"), Some("signal.example")));
        assert!(!o.allows(Some("https://evil.example"), Some("signal.example")));
        assert!(!o.allows(Some("http://app.example"), Some("signal.example")));
        assert!(!o.allows(Some("null"), Some("signal.example")));
        assert!(o.allows(None, Some("signal.example")));
        // The server's own client page.
        assert!(o.allows(
            Some("https://signal.example:8443"),
            Some("signal.example:8443")
        ));
    }
}
