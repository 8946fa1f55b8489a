//! Who may connect: room tokens (JWT, `--auth-secret`/`--auth-public-key`), admin
//! tokens for the REST listings, and the Origin allow-list (`--allowed-origin`,
//! `--public-origin`).
//!
//! Tokens another application mints with the same secret or issuer must not work
//! here by accident: `--auth-audience`/`--auth-issuer` make every token name this
//! deployment, and an admin token must carry the audience [`ADMIN_AUDIENCE`] beside
//! `admin: true`, which no other application has a reason to put in its tokens.
//! HS256 secrets shorter than the hash (32 bytes, RFC 7518 §3.2) are refused.
//!
//! No I/O: the HTTP layer hands in the token and headers, this module answers yes or
//! no with a reason for the log. The token's form and signature are `jwt`'s (HS256,
//! RS256, ES256, each key for one; `alg: none` or any other is refused); the claims,
//! their times, audience and issuer are checked here.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::jwt::{self, JwtError, VerifyKey};

/// The audience an admin token must carry (beside `admin: true`).
pub const ADMIN_AUDIENCE: &str = "webrtc-signaling:admin";

/// Shortest HS256 secret accepted: the size of the hash (RFC 7518 §3.2).
pub const MIN_SECRET_LEN: usize = 32;

/// Longest clock skew `--auth-leeway` may allow: beyond it an expired token lives on.
pub const MAX_LEEWAY_SECS: u64 = 300;

/// The claims the server reads. `room` and `peer` name the one session a token admits;
/// `admin: true` with the audience [`ADMIN_AUDIENCE`] opens the REST room listings and
/// admin actions.
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
    /// Not before, seconds since the Unix epoch (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Audiences: one string or a list (RFC 7519 §4.1.3).
    #[serde(default, skip_serializing_if = "Audience::is_empty")]
    pub aud: Audience,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// The `aud` claim: absent, one string, or a list of strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn is_empty(&self) -> bool {
        match self {
            Audience::None => true,
            Audience::One(_) => false,
            Audience::Many(v) => v.is_empty(),
        }
    }

    pub fn contains(&self, aud: &str) -> bool {
        match self {
            Audience::None => false,
            Audience::One(a) => a == aud,
            Audience::Many(v) => v.iter().any(|a| a == aud),
        }
    }

    /// `auds` as a claim (one string when there is one).
    pub fn of(auds: &[&str]) -> Audience {
        match auds {
            [] => Audience::None,
            [one] => Audience::One((*one).to_owned()),
            many => Audience::Many(many.iter().map(|a| (*a).to_owned()).collect()),
        }
    }
}

impl Claims {
    /// The claims of an admin token for a server with `audience` configured (or not).
    pub fn admin(exp: u64, audience: Option<&str>) -> Claims {
        let mut auds = vec![ADMIN_AUDIENCE];
        auds.extend(audience);
        Claims {
            admin: true,
            exp,
            aud: Audience::of(&auds),
            ..Claims::default()
        }
    }
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
    WrongAudience,
    WrongIssuer,
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
                write!(f, "token algorithm {alg:?} is not accepted")
            }
            AuthError::WrongRoom => f.write_str("token is for another room"),
            AuthError::WrongPeer => f.write_str("token is for another peer"),
            AuthError::NotAdmin => write!(
                f,
                "token is not an admin token (admin: true and audience {ADMIN_AUDIENCE:?})"
            ),
            AuthError::WrongAudience => f.write_str("token is for another audience"),
            AuthError::WrongIssuer => f.write_str("token is from another issuer"),
        }
    }
}

impl std::error::Error for AuthError {}

/// The keys tokens are checked with, the clock-skew allowance, and the audience and
/// issuer every token must name (if configured).
pub struct Verifier {
    /// At most one key per algorithm.
    keys: Vec<VerifyKey>,
    leeway_secs: u64,
    audience: Option<String>,
    issuer: Option<String>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The keys' algorithms only, never a secret.
        f.debug_struct("Verifier")
            .field("keys", &self.keys)
            .field("leeway_secs", &self.leeway_secs)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl Verifier {
    /// `secret` for HS256 (at least [`MIN_SECRET_LEN`] bytes); `public_key_pem` (an
    /// RSA or EC P-256 `PUBLIC KEY`) for RS256 or ES256. At least one must be given.
    pub fn new(
        secret: Option<&[u8]>,
        public_key_pem: Option<&[u8]>,
        leeway_secs: u64,
    ) -> Result<Verifier, String> {
        if !jwt::SUPPORTED {
            return Err(jwt::UNSUPPORTED.to_owned());
        }
        if leeway_secs > MAX_LEEWAY_SECS {
            return Err(format!(
                "the token leeway ({leeway_secs} s) must be at most {MAX_LEEWAY_SECS} s"
            ));
        }
        let mut keys = Vec::new();
        if let Some(secret) = secret {
            check_secret(secret)?;
            keys.push(VerifyKey::hs256(secret));
        }
        if let Some(pem) = public_key_pem {
            keys.push(VerifyKey::from_public_pem(pem)?);
        }
        if keys.is_empty() {
            return Err("no secret and no public key".to_owned());
        }
        Ok(Verifier {
            keys,
            leeway_secs,
            audience: None,
            issuer: None,
        })
    }

    /// Every token must carry `audience` in its `aud` (`--auth-audience`).
    pub fn with_audience(mut self, audience: Option<String>) -> Self {
        self.audience = audience;
        self
    }

    /// Every token must have `iss` equal to `issuer` (`--auth-issuer`).
    pub fn with_issuer(mut self, issuer: Option<String>) -> Self {
        self.issuer = issuer;
        self
    }

    /// The configured audience, if any (what `token` puts in the tokens it mints).
    pub fn audience(&self) -> Option<&str> {
        self.audience.as_deref()
    }

    /// Checks signature, expiry (and `nbf` if present), audience and issuer, and
    /// returns the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let claims = jwt::verify(token, &self.keys).map_err(|e| match e {
            JwtError::Malformed => AuthError::Malformed,
            JwtError::UnsupportedAlgorithm(alg) => AuthError::UnsupportedAlgorithm(alg),
            JwtError::BadSignature => AuthError::BadSignature,
        })?;
        // `exp` is required: a token without it does not parse.
        let claims: Claims = serde_json::from_slice(&claims).map_err(|_| AuthError::Malformed)?;
        let now = now_secs();
        if claims.exp.saturating_add(self.leeway_secs) < now {
            return Err(AuthError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(self.leeway_secs))
        {
            return Err(AuthError::NotYetValid);
        }
        if let Some(aud) = &self.audience {
            if !claims.aud.contains(aud) {
                return Err(AuthError::WrongAudience);
            }
        }
        if self.issuer.is_some() && claims.iss != self.issuer {
            return Err(AuthError::WrongIssuer);
        }
        Ok(claims)
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

    /// The REST room listings and admin actions: a valid token with `admin: true` and
    /// the audience [`ADMIN_AUDIENCE`].
    pub fn check_admin(&self, token: Option<&str>) -> Result<(), AuthError> {
        let claims = self.verify(token.ok_or(AuthError::Missing)?)?;
        if claims.admin && claims.aud.contains(ADMIN_AUDIENCE) {
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

/// Refuses an HS256 secret shorter than [`MIN_SECRET_LEN`] bytes.
pub fn check_secret(secret: &[u8]) -> Result<(), String> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(format!(
            "the auth secret is {} bytes; HS256 needs at least {MIN_SECRET_LEN} (RFC 7518 \
             §3.2), e.g. the output of `openssl rand -base64 32`",
            secret.len()
        ));
    }
    Ok(())
}

/// Signs `claims` with HS256 (what `webrtc-signaling token` prints).
pub fn mint(secret: &[u8], claims: &Claims) -> Result<String, String> {
    check_secret(secret)?;
    jwt::sign_hs256(secret, claims)
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
/// signaling sessions from a browser; and `--public-origin`: the origins this server
/// itself is reached at, whose pages (the built-in client) may always.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins {
    allowed: Vec<String>,
    public: Vec<String>,
}

impl Origins {
    /// Whether there is no allow-list (every origin may).
    pub fn is_empty(&self) -> bool {
        self.allowed.is_empty()
    }

    /// Whether `origin` is on the list itself (CORS: the server's own pages need none).
    pub fn lists(&self, origin: &str) -> bool {
        self.allowed.contains(&normalise(origin))
    }

    /// Adds an allowed origin from the command line, normalised (lower case, no
    /// trailing `/`).
    pub fn add(&mut self, origin: &str) -> Result<(), String> {
        self.allowed.push(parse_origin(origin)?);
        Ok(())
    }

    /// Forgets the allow-list (a command-line list replaces the environment's).
    pub fn clear_allowed(&mut self) {
        self.allowed.clear();
    }

    /// Forgets the server's own origins (a command-line list replaces the environment's).
    pub fn clear_public(&mut self) {
        self.public.clear();
    }

    /// Adds an origin the server is reached at (`--public-origin`).
    pub fn add_public(&mut self, origin: &str) -> Result<(), String> {
        let o = parse_origin(origin)?;
        if o == "null" {
            return Err("a public origin is scheme://host[:port], not null".to_owned());
        }
        self.public.push(o);
        Ok(())
    }

    /// May a request with this `Origin` (and `Host`) open a session? With no list
    /// every origin may. A request without `Origin` is not from a browser page (browsers
    /// always send it on WebSocket upgrades) and is let through: the list protects
    /// visitors' browsers, it cannot stop other programs, which can send any header.
    ///
    /// The server's own pages may: those of a `--public-origin`, and, without one, a
    /// page whose Origin is the Host it asks, when that host is an IP address or
    /// `localhost`. A host *name* in `Host` proves nothing: DNS rebinding points an
    /// attacker's name at this server, and the browser then sends that name in both
    /// headers. An IP address or `localhost` cannot be rebound.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        if self.allowed.is_empty() {
            return true;
        }
        let origin = normalise(origin);
        if self.allowed.contains(&origin) || self.public.contains(&origin) {
            return true;
        }
        if !self.public.is_empty() {
            return false;
        }
        let own_host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        match (own_host, host) {
            (Some(o), Some(h)) => o == h.trim().to_ascii_lowercase() && is_literal_host(o),
            _ => false,
        }
    }
}

fn parse_origin(origin: &str) -> Result<String, String> {
    let o = normalise(origin);
    let ok = o == "null"
        || ["http://", "https://"].iter().any(|s| {
            o.strip_prefix(s)
                .is_some_and(|h| !h.is_empty() && !h.contains('/'))
        });
    if ok {
        Ok(o)
    } else {
        Err(format!(
            "{origin:?} is not an origin (scheme://host[:port], e.g. https://example.com)"
        ))
    }
}

/// `host[:port]` whose host is an IP address (`[v6]` included) or `localhost`.
fn is_literal_host(host_port: &str) -> bool {
    let host = match host_port.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || port.starts_with(':') => {
                return v6.parse::<std::net::Ipv6Addr>().is_ok();
            }
            _ => return false,
        },
        None => host_port.split(':').next().unwrap_or(""),
    };
    host == "localhost" || host.parse::<std::net::Ipv4Addr>().is_ok()
}

fn normalise(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

#[cfg(test)]
#[path = "access_tests.rs"]
mod tests;
