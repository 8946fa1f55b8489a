//! What `Server::start` takes: plain data with defaults for a small host, and the
//! check that catches settings contradicting each other. Flags and the environment
//! are the binary's business (src/cli).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::access::{Origins, Verifier};
use crate::hooks::Hooks;
use crate::proxy::TrustedProxies;

/// Every bound on memory, threads and time.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Signaling sessions at once; the next one is refused with 4503 `server_full`.
    pub max_connections: usize,
    /// Connections not (yet) in a session: TLS handshakes, request heads, REST
    /// requests, idle keep-alive. Counted apart from sessions; when all are taken the
    /// oldest idle keep-alive connection is closed for a new one, and without one the
    /// new connection gets 503.
    pub max_http_connections: usize,
    /// Open connections (HTTP and sessions) from one IP address; 0: no cap.
    pub max_connections_per_ip: usize,
    /// Requests answered on one keep-alive connection before it is closed.
    pub http_max_requests: usize,
    /// Peers per room; the next one is refused with 4503 `room_full`.
    pub max_room_peers: usize,
    /// Largest frame or message a client may send (bytes); over it: 1009.
    pub max_message_size: usize,
    /// Messages queued for one peer. Beyond it messages wait in the router (and their
    /// senders pause); a peer whose socket is full meanwhile is a slow consumer (1008).
    pub peer_queue: usize,
    /// Commands queued for the router thread; connection threads wait when it is full.
    /// Also the most messages that may wait in the router for one slow peer.
    pub router_queue: usize,
    /// Messages per second per session (token bucket refill); 0 turns rate limiting off.
    pub rate_per_sec: u32,
    /// Token bucket size: how many messages a session may send in a burst.
    pub rate_burst: u32,
    /// Dropped messages in a row after which the session is closed with 4429.
    pub rate_strikes: u32,
    /// No frame from the client for this long: 4408 `timeout`.
    pub idle_timeout: Duration,
    /// How often the server sends a WebSocket ping (0: never). Must be shorter than
    /// `idle_timeout`, or clients that only answer pings are timed out.
    pub ping_interval: Duration,
    /// A socket that refuses data this long marks the peer a slow consumer; an HTTP
    /// response not written whole within it ends its connection.
    pub write_timeout: Duration,
    /// How long a closing session waits for the client's close reply.
    pub close_timeout: Duration,
    /// Largest HTTP request head (bytes); over it: 431.
    pub http_head_max: usize,
    /// Time allowed to receive a whole request head (and keep-alive idle time).
    pub http_head_timeout: Duration,
    /// WebSocket read buffer per session (bytes).
    pub read_buffer: usize,
    /// Output bytes per session above which it stops taking queued messages and
    /// reading its client (frames coalesce below it).
    pub write_buffer: usize,
    /// Stack of each connection thread (one per REST connection or session).
    pub thread_stack: usize,
    /// How long a peer whose session ended for a network reason is held for a resume
    /// (PROTOCOL.md §8); zero turns resuming off.
    pub resume_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_http_connections: 64,
            max_connections_per_ip: 0,
            http_max_requests: 100,
            max_room_peers: 32,
            max_message_size: 64 * 1024,
            peer_queue: 64,
            router_queue: 4096,
            rate_per_sec: 100,
            rate_burst: 200,
            rate_strikes: 20,
            idle_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(20),
            write_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(1),
            http_head_max: 8 * 1024,
            http_head_timeout: Duration::from_secs(10),
            read_buffer: 4 * 1024,
            write_buffer: 16 * 1024,
            thread_stack: 128 * 1024,
            resume_grace: Duration::from_secs(10),
        }
    }
}

/// A secret that `Debug` (and so any logged config) never shows.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Who may open sessions and call the REST room listings and admin actions.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    /// HS256 key of room tokens (turns authorisation on).
    pub auth_secret: Option<Secret>,
    /// An RSA or EC P-256 public key (PEM text) for RS256/ES256 tokens (turns
    /// authorisation on).
    pub auth_public_key: Option<Vec<u8>>,
    /// Clock skew allowed on `exp` and `nbf` (default 30 s, at most
    /// [`crate::access::MAX_LEEWAY_SECS`]).
    pub auth_leeway: Duration,
    /// Every token's `aud` must contain this (`--auth-audience`).
    pub auth_audience: Option<String>,
    /// Every token's `iss` must be this (`--auth-issuer`).
    pub auth_issuer: Option<String>,
    /// Browsers on other origins get 4403 `origin_not_allowed` (empty: any origin);
    /// with the origins the server itself is reached at (`--public-origin`).
    pub allowed_origins: Origins,
    /// `DELETE /webrtc/rooms/{room}[/peers/{peer}]` may end sessions; when off those
    /// requests get 403 `admin_disabled`.
    pub admin: bool,
}

impl AccessPolicy {
    /// Whether room tokens are required (a secret or a public key is set).
    pub fn auth_enabled(&self) -> bool {
        self.auth_secret.is_some() || self.auth_public_key.is_some()
    }

    /// The token verifier this policy describes, if any.
    pub fn verifier(&self) -> Result<Option<Verifier>, String> {
        if !self.auth_enabled() && (self.auth_audience.is_some() || self.auth_issuer.is_some()) {
            return Err("--auth-audience and --auth-issuer need --auth-secret or \
                        --auth-public-key"
                .to_owned());
        }
        if !self.auth_enabled() {
            return Ok(None);
        }
        Verifier::new(
            self.auth_secret.as_ref().map(|s| s.expose().as_bytes()),
            self.auth_public_key.as_deref(),
            self.auth_leeway.as_secs(),
        )
        .map(|v| {
            Some(
                v.with_audience(self.auth_audience.clone())
                    .with_issuer(self.auth_issuer.clone()),
            )
        })
    }
}

/// What `GET /webrtc/ice-servers` announces.
#[derive(Debug, Clone, PartialEq)]
pub struct IceSettings {
    /// STUN/TURN URLs. Empty by default: the server never names a third-party STUN
    /// server on its own.
    pub servers: Vec<String>,
    /// Static long-term credentials announced with every `turn:`/`turns:` URL.
    pub turn_username: Option<String>,
    pub turn_credential: Option<String>,
    /// The shared secret of coturn's `use-auth-secret`: fresh time-limited
    /// credentials per request for every `turn:`/`turns:` URL (they win over static ones).
    pub turn_secret: Option<Secret>,
    /// Lifetime of those credentials.
    pub turn_ttl: Duration,
}

impl Default for IceSettings {
    fn default() -> Self {
        IceSettings {
            servers: Vec::new(),
            turn_username: None,
            turn_credential: None,
            turn_secret: None,
            turn_ttl: Duration::from_secs(86_400),
        }
    }
}

/// Built-in TLS (feature `tls`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain and private key: TLS on `port` (or on `port` below).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Make a certificate for this host at start-up.
    pub self_signed: bool,
    /// Serve TLS here and plain TCP on `Config::port`.
    pub port: Option<u16>,
}

impl TlsSettings {
    /// Whether TLS is configured (certificate files or self-signed).
    pub fn enabled(&self) -> bool {
        self.self_signed || self.cert.is_some()
    }
}

/// Several instances sharing rooms through one Redis (PROTOCOL.md §9).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSettings {
    /// `redis://HOST:PORT[/DB]`; `None`: a single instance, nothing external.
    pub redis: Option<String>,
    /// An instance gone this long (without a goodbye) has its peers leave; Redis
    /// unreachable this long after a restart, the same for instances that never
    /// came back.
    pub ttl: Duration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            redis: None,
            ttl: Duration::from_secs(10),
        }
    }
}

/// Everything `Server::start` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: IpAddr,
    pub port: u16,
    pub limits: Limits,
    pub access: AccessPolicy,
    pub ice: IceSettings,
    pub tls: TlsSettings,
    pub cluster: ClusterSettings,
    /// Peers whose `X-Forwarded-For`/`Forwarded` headers name the client (logs and
    /// per-client decisions); empty: no header is believed.
    pub trusted_proxies: TrustedProxies,
    /// A second listener for `/metrics` and the admin API; the public port then
    /// serves neither.
    pub ops_bind: Option<SocketAddr>,
    /// Test-only interception points; empty in production.
    #[doc(hidden)]
    pub hooks: Hooks,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 8000,
            limits: Limits::default(),
            access: AccessPolicy {
                auth_leeway: Duration::from_secs(30),
                ..AccessPolicy::default()
            },
            ice: IceSettings::default(),
            tls: TlsSettings::default(),
            cluster: ClusterSettings::default(),
            trusted_proxies: TrustedProxies::default(),
            ops_bind: None,
            hooks: Hooks::default(),
        }
    }
}

/// Settings that cannot work together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Catches contradictions before anything starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: &str| Err(ConfigError(m.to_owned()));
        let l = &self.limits;
        if !l.ping_interval.is_zero() && l.ping_interval >= l.idle_timeout {
            return Err(ConfigError(format!(
                "the ping interval ({:?}) must be shorter than the idle timeout ({:?}), \
                 or clients that only answer pings are timed out",
                l.ping_interval, l.idle_timeout
            )));
        }
        if l.idle_timeout.is_zero() {
            return err("the idle timeout must be above 0");
        }
        for (name, v) in [
            ("max connections", l.max_connections),
            ("max room peers", l.max_room_peers),
            ("max message size", l.max_message_size),
            ("peer queue", l.peer_queue),
            ("router queue", l.router_queue),
            ("read buffer", l.read_buffer),
            ("write buffer", l.write_buffer),
            ("HTTP head max", l.http_head_max),
            ("max HTTP connections", l.max_http_connections),
            ("HTTP max requests", l.http_max_requests),
        ] {
            if v == 0 {
                return Err(ConfigError(format!("the {name} must be at least 1")));
            }
        }
        let tls = &self.tls;
        if tls.cert.is_some() != tls.key.is_some() {
            return err("--tls-cert and --tls-key go together");
        }
        if tls.self_signed && tls.cert.is_some() {
            return err("--tls-self-signed or --tls-cert/--tls-key, not both");
        }
        if tls.port.is_some() && !tls.enabled() {
            return err("--tls-port needs --tls-cert/--tls-key or --tls-self-signed");
        }
        if tls.enabled() && !cfg!(feature = "tls") {
            return err("this build has no TLS (cargo feature `tls`)");
        }
        let ice = &self.ice;
        let has_turn = ice.servers.iter().any(|u| u.starts_with("turn"));
        let has_static = ice.turn_username.is_some() && ice.turn_credential.is_some();
        if has_turn && !has_static && ice.turn_secret.is_none() {
            // Browsers reject a turn: URL without credentials (RTCPeerConnection throws).
            return err(
                "--turn needs --turn-secret (or --turn-secret-file), or --turn-username and \
                 --turn-credential",
            );
        }
        if ice.turn_secret.is_some() && !has_turn {
            return err("--turn-secret makes credentials for --turn servers, but there are none");
        }
        if let Some(url) = &self.cluster.redis {
            if let Err(e) = crate::redis_url::parse(url) {
                return Err(ConfigError(format!("--redis: {e}")));
            }
            if self.cluster.ttl < Duration::from_secs(1) {
                return err("--cluster-ttl must be at least 1 second");
            }
            if !cfg!(feature = "cluster") {
                return err("this build has no --redis support (cargo feature `cluster`)");
            }
        }
        self.access.verifier().map_err(ConfigError)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
        assert_eq!(Config::default().port, 8000);
    }

    #[test]
    fn a_ping_interval_not_below_the_idle_timeout_is_refused() {
        let mut c = Config::default();
        c.limits.idle_timeout = Duration::from_secs(5);
        let e = c.validate().unwrap_err();
        assert!(e.0.contains("shorter than the idle timeout"), "{e}");
        c.limits.ping_interval = Duration::from_secs(2);
        assert_eq!(c.validate(), Ok(()));
        c.limits.ping_interval = Duration::ZERO;
        assert_eq!(c.validate(), Ok(()), "no pings at all is a choice");
    }

    #[test]
    fn tls_and_turn_contradictions_are_refused() {
        let mut c = Config::default();
        c.tls.cert = Some("c.pem".into());
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.tls.port = Some(8443);
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.ice.servers.push("turn:t:3478".into());
        assert!(c.validate().unwrap_err().0.contains("--turn-secret"));
        c.ice.turn_secret = Some(Secret::new("s"));
        assert_eq!(c.validate(), Ok(()));
        c.ice.servers.clear();
        assert!(c.validate().unwrap_err().0.contains("there are none"));
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let mut c = Config::default();
        c.ice.turn_secret = Some(Secret::new("s3cret"));
        c.access.auth_secret = Some(Secret::new("other-s3cret-other-s3cret-other-s3cret"));
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
