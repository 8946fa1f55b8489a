//! Server configuration: every limit with its default, and the command-line/env parser.
//!
//! Each flag `--some-flag` can also be set with `WEBRTC_SIGNALING_SOME_FLAG`; a flag on
//! the command line wins over the environment.
//!
//! [`Limits`] is the part of the configuration every connection thread sees (the
//! server keeps it in its shared state), so it also carries the settings the HTTP layer
//! reads per request: the admin switch and the TURN REST secret.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::access::{self, Claims, Origins, Verifier};
use crate::protocol::{PeerId, RoomId};

/// Every bound on memory, threads and time. Defaults suit a small host.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Signaling sessions at once; the next one is refused with 4503 `server_full`.
    pub max_connections: usize,
    /// Connections not (yet) in a session: REST requests and handshakes in progress.
    /// Beyond `max_connections + max_http_connections` new TCP connections are closed at once.
    pub max_http_connections: usize,
    /// Peers per room; the next one is refused with 4503 `room_full`.
    pub max_room_peers: usize,
    /// Largest frame or message a client may send (bytes); over it: 1009.
    pub max_message_size: usize,
    /// Messages queued for one peer; a peer whose queue overflows is a slow consumer (1008).
    pub peer_queue: usize,
    /// Commands queued for the router thread; connection threads wait when it is full.
    pub router_queue: usize,
    /// Messages per second per session (token bucket refill); 0 turns rate limiting off.
    pub rate_per_sec: u32,
    /// Token bucket size: how many messages a session may send in a burst.
    pub rate_burst: u32,
    /// Dropped messages in a row after which the session is closed with 4429.
    pub rate_strikes: u32,
    /// No frame from the client for this long: 4408 `timeout`.
    pub idle_timeout: Duration,
    /// How often the server sends a WebSocket ping (keeps healthy idle clients alive).
    pub ping_interval: Duration,
    /// A socket write blocked for this long marks the peer a slow consumer.
    pub write_timeout: Duration,
    /// How long a closing session waits for the client's close reply.
    pub close_timeout: Duration,
    /// Largest HTTP request head (bytes); over it: 431.
    pub http_head_max: usize,
    /// Time allowed to receive a whole request head (and keep-alive idle time).
    pub http_head_timeout: Duration,
    /// tungstenite read buffer per session (bytes).
    pub read_buffer: usize,
    /// tungstenite write buffer per session (bytes): frames are coalesced up to this size.
    pub write_buffer: usize,
    /// Stack of each connection thread (one per REST connection or session).
    pub thread_stack: usize,
    /// `--admin`: `DELETE /webrtc/rooms/{room}[/peers/{peer}]` may end sessions; when
    /// off (the default) those requests get 403 `admin_disabled`.
    pub admin: bool,
    /// `--turn-secret`: the shared secret of coturn's `use-auth-secret`. When set,
    /// `GET /webrtc/ice-servers` mints fresh time-limited credentials for every
    /// `turn:`/`turns:` URL on each request (they win over static ones).
    pub turn_secret: Option<Secret>,
    /// `--turn-ttl`: lifetime of those credentials.
    pub turn_ttl: Duration,
    /// Room tokens, built by `Server::start` from `Config::auth_*`: when set, every
    /// session needs `?token=` for its room and peer (else 4401) and the REST room
    /// listings an admin token.
    pub auth: Option<Arc<Verifier>>,
    /// `--allowed-origin`: browsers on other origins get 4403 `origin_not_allowed`.
    pub allowed_origins: Origins,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_http_connections: 64,
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
            admin: false,
            turn_secret: None,
            turn_ttl: Duration::from_secs(86_400),
            auth: None,
            allowed_origins: Origins::default(),
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

/// How the binary writes its log lines to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// simplelog's human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (`ts`, `level`, `target`, `thread`, `msg`).
    Json,
}

/// Everything `Server::start` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: IpAddr,
    pub port: u16,
    pub limits: Limits,
    /// STUN/TURN URLs announced by `GET /webrtc/ice-servers`. Empty by default: the
    /// server never names a third-party STUN server on its own.
    pub ice_servers: Vec<String>,
    /// Static long-term credentials announced with every `turn:`/`turns:` URL.
    pub turn_username: Option<String>,
    pub turn_credential: Option<String>,
    /// Log level for the binary (`error`, `warn`, `info`, `debug`, `trace`, `off`).
    pub log_level: String,
    /// Log line format for the binary.
    pub log_format: LogFormat,
    /// `--tls-cert`/`--tls-key`: PEM certificate chain and private key; TLS on `port`
    /// (or on `tls_port` beside plain `port`).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// `--tls-self-signed`: make a certificate for this host at start-up.
    pub tls_self_signed: bool,
    /// `--tls-port`: serve TLS here and plain TCP on `port`.
    pub tls_port: Option<u16>,
    /// `--auth-secret`: HS256 key of room tokens (turns authorisation on).
    pub auth_secret: Option<Secret>,
    /// `--auth-public-key`: an RSA or EC P-256 public key (PEM text) for RS256/ES256
    /// tokens (turns authorisation on).
    pub auth_public_key: Option<Vec<u8>>,
    /// `--auth-leeway`: clock skew allowed on `exp` and `nbf`.
    pub auth_leeway: Duration,
}

impl Config {
    /// Whether TLS is configured (certificate files or self-signed).
    pub fn tls_enabled(&self) -> bool {
        self.tls_self_signed || self.tls_cert.is_some()
    }

    /// Whether room tokens are required (a secret or a public key is set).
    pub fn auth_enabled(&self) -> bool {
        self.auth_secret.is_some() || self.auth_public_key.is_some()
    }

    /// The token verifier the `auth_*` fields describe, if any.
    pub fn verifier(&self) -> Result<Option<Verifier>, String> {
        if !self.auth_enabled() {
            return Ok(None);
        }
        Verifier::new(
            self.auth_secret.as_ref().map(|s| s.expose().as_bytes()),
            self.auth_public_key.as_deref(),
            self.auth_leeway.as_secs(),
        )
        .map(Some)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 8000,
            limits: Limits::default(),
            ice_servers: Vec::new(),
            turn_username: None,
            turn_credential: None,
            log_level: "info".to_owned(),
            log_format: LogFormat::Text,
            tls_cert: None,
            tls_key: None,
            tls_self_signed: false,
            tls_port: None,
            auth_secret: None,
            auth_public_key: None,
            auth_leeway: Duration::from_secs(30),
        }
    }
}

/// What the command line asked for.
#[derive(Debug)]
pub enum Cli {
    Run(Box<Config>),
    /// `webrtc-signaling token ...`: print a signed token.
    Token(TokenRequest),
    /// `webrtc-signaling token --help`.
    TokenHelp,
    Help,
    Version,
}

/// A flag that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

type Setter = fn(&mut Config, &str) -> Result<(), String>;

struct Flag {
    name: &'static str,
    /// What the value looks like in `--help`; empty for a switch, which takes no value
    /// on the command line (`--admin`, or `--admin=false`) and `1`/`0`, `true`/`false`,
    /// `yes`/`no` or `on`/`off` in the environment.
    value: &'static str,
    help: &'static str,
    set: Setter,
}

fn num<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a valid number"))
}

fn secs(v: &str) -> Result<Duration, String> {
    let s: f64 = num(v)?;
    if !(0.0..=86_400.0 * 365.0).contains(&s) || s.is_nan() {
        return Err(format!("{v:?} is not a valid number of seconds"));
    }
    Ok(Duration::from_secs_f64(s))
}

fn switch(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{v:?} is not true or false")),
    }
}

fn secret(v: &str) -> Result<Secret, String> {
    if v.is_empty() {
        return Err("the secret is empty".to_owned());
    }
    Ok(Secret::new(v))
}

/// Reads a secret from a file (surrounding whitespace, such as the final newline that
/// editors and `echo` add, is not part of it).
fn secret_file(path: &str) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    secret(text.trim()).map_err(|e| format!("{path:?}: {e}"))
}

fn positive(v: &str) -> Result<usize, String> {
    match num::<usize>(v)? {
        0 => Err("must be at least 1".to_owned()),
        n => Ok(n),
    }
}

macro_rules! flag {
    ($name:literal, $value:literal, $help:literal, |$c:ident, $v:ident| $body:expr) => {
        Flag {
            name: $name,
            value: $value,
            help: $help,
            set: |$c: &mut Config, $v: &str| {
                $body;
                Ok(())
            },
        }
    };
}

const FLAGS: &[Flag] = &[
    flag!("bind", "ADDR", "address to listen on [0.0.0.0]", |c, v| c
        .bind =
        v.parse()
            .map_err(|_| format!("{v:?} is not an IP address"))?),
    flag!(
        "port",
        "N",
        "TCP port; 0 picks a free one [8000]",
        |c, v| c.port = num(v)?
    ),
    flag!(
        "stun",
        "URL",
        "STUN server for /webrtc/ice-servers, e.g. stun:host:3478 (repeatable) [none]",
        |c, v| c.ice_servers.push(ice_url(v, "stun")?)
    ),
    flag!(
        "turn",
        "URL",
        "TURN server for /webrtc/ice-servers (repeatable) [none]",
        |c, v| c.ice_servers.push(ice_url(v, "turn")?)
    ),
    flag!(
        "turn-username",
        "NAME",
        "username announced with the --turn servers [none]",
        |c, v| c.turn_username = Some(v.to_owned())
    ),
    flag!(
        "turn-credential",
        "SECRET",
        "credential announced with the --turn servers [none]",
        |c, v| c.turn_credential = Some(v.to_owned())
    ),
    flag!(
        "turn-secret",
        "SECRET",
        "shared secret (coturn static-auth-secret): per-request TURN credentials that \
         expire; wins over --turn-username/--turn-credential [none]",
        |c, v| c.limits.turn_secret = Some(secret(v)?)
    ),
    flag!(
        "turn-secret-file",
        "PATH",
        "read --turn-secret from this file (surrounding whitespace ignored) [none]",
        |c, v| c.limits.turn_secret = Some(secret_file(v)?)
    ),
    flag!(
        "turn-ttl",
        "SECS",
        "lifetime of the credentials made with --turn-secret [86400]",
        |c, v| c.limits.turn_ttl = Duration::from_secs(ttl(v)?)
    ),
    flag!(
        "tls-cert",
        "PATH",
        "PEM certificate chain: serve https:// and wss:// (with --tls-key) [off]",
        |c, v| c.tls_cert = Some(PathBuf::from(v))
    ),
    flag!(
        "tls-key",
        "PATH",
        "PEM private key of --tls-cert [none]",
        |c, v| c.tls_key = Some(PathBuf::from(v))
    ),
    flag!(
        "tls-self-signed",
        "",
        "TLS with a certificate made at start for this host's names (fingerprint \
         logged; browsers will ask to trust it) [off]",
        |c, v| c.tls_self_signed = switch(v)?
    ),
    flag!(
        "tls-port",
        "N",
        "serve TLS on this port and plain HTTP on --port; without it TLS is on --port \
         [none]",
        |c, v| c.tls_port = Some(num(v)?)
    ),
    flag!(
        "auth-secret",
        "SECRET",
        "require ?token= (HS256 JWT with room, peer, exp) on every session, and an \
         admin token on the REST room listings [off]",
        |c, v| c.auth_secret = Some(secret(v)?)
    ),
    flag!(
        "auth-secret-file",
        "PATH",
        "read --auth-secret from this file (surrounding whitespace ignored) [none]",
        |c, v| c.auth_secret = Some(secret_file(v)?)
    ),
    flag!(
        "auth-public-key",
        "PATH",
        "also accept RS256/ES256 tokens signed for this PEM public key [none]",
        |c, v| c.auth_public_key =
            Some(std::fs::read(v).map_err(|e| format!("cannot read {v:?}: {e}"))?)
    ),
    flag!(
        "auth-leeway",
        "SECS",
        "clock skew allowed on token exp/nbf [30]",
        |c, v| c.auth_leeway = Duration::from_secs(num(v)?)
    ),
    flag!(
        "allowed-origin",
        "URL",
        "browser Origin allowed to open sessions, e.g. https://app.example \
         (repeatable); others get 4403 [any]",
        |c, v| c.limits.allowed_origins.add(v)?
    ),
    flag!(
        "admin",
        "",
        "let DELETE /webrtc/rooms/... end sessions (with --auth-secret: admin token only) [off]",
        |c, v| c.limits.admin = switch(v)?
    ),
    flag!(
        "max-connections",
        "N",
        "signaling sessions at once; more get 4503 server_full [1024]",
        |c, v| c.limits.max_connections = positive(v)?
    ),
    flag!(
        "max-http-connections",
        "N",
        "connections in REST or handshake at once, on top of the sessions [64]",
        |c, v| c.limits.max_http_connections = positive(v)?
    ),
    flag!(
        "max-room-peers",
        "N",
        "peers per room; more get 4503 room_full [32]",
        |c, v| c.limits.max_room_peers = positive(v)?
    ),
    flag!(
        "max-message-size",
        "BYTES",
        "largest frame or message from a client; more get 1009 [65536]",
        |c, v| c.limits.max_message_size = positive(v)?
    ),
    flag!(
        "peer-queue",
        "N",
        "messages queued per peer (a full queue and a full socket: slow consumer) [64]",
        |c, v| c.limits.peer_queue = positive(v)?
    ),
    flag!(
        "router-queue",
        "N",
        "commands queued for the router thread [4096]",
        |c, v| c.limits.router_queue = positive(v)?
    ),
    flag!(
        "rate-limit",
        "N",
        "messages per second per session, 0 = unlimited [100]",
        |c, v| c.limits.rate_per_sec = num(v)?
    ),
    flag!(
        "rate-burst",
        "N",
        "messages a session may send in a burst [200]",
        |c, v| c.limits.rate_burst = num::<u32>(v)?.max(1)
    ),
    flag!(
        "rate-strikes",
        "N",
        "dropped messages in a row before close 4429 [20]",
        |c, v| c.limits.rate_strikes = num::<u32>(v)?.max(1)
    ),
    flag!(
        "idle-timeout",
        "SECS",
        "close a session silent this long with 4408 [60]",
        |c, v| c.limits.idle_timeout = secs(v)?
    ),
    flag!(
        "ping-interval",
        "SECS",
        "send a WebSocket ping this often [20]",
        |c, v| c.limits.ping_interval = secs(v)?
    ),
    flag!(
        "write-timeout",
        "SECS",
        "a write blocked this long makes the peer a slow consumer [10]",
        |c, v| c.limits.write_timeout = secs(v)?
    ),
    flag!(
        "close-timeout",
        "SECS",
        "wait this long for the client's close reply [1]",
        |c, v| c.limits.close_timeout = secs(v)?
    ),
    flag!(
        "http-head-max",
        "BYTES",
        "largest HTTP request head; more get 431 [8192]",
        |c, v| c.limits.http_head_max = positive(v)?
    ),
    flag!(
        "http-head-timeout",
        "SECS",
        "time to send a request head, and keep-alive idle time [10]",
        |c, v| c.limits.http_head_timeout = secs(v)?
    ),
    flag!(
        "read-buffer",
        "BYTES",
        "WebSocket read buffer per session [4096]",
        |c, v| c.limits.read_buffer = positive(v)?
    ),
    flag!(
        "write-buffer",
        "BYTES",
        "WebSocket write buffer per session [16384]",
        |c, v| c.limits.write_buffer = positive(v)?
    ),
    flag!(
        "thread-stack",
        "BYTES",
        "stack size of connection threads, at least 65536 [131072]",
        |c, v| c.limits.thread_stack = num::<usize>(v)?.max(64 * 1024)
    ),
    flag!(
        "log-level",
        "LEVEL",
        "off, error, warn, info, debug or trace [info]",
        |c, v| c.log_level = log_level(v)?
    ),
    flag!(
        "log-format",
        "FORMAT",
        "text (human) or json (one object per line, for log collectors) [text]",
        |c, v| c.log_format = log_format(v)?
    ),
];

fn ttl(v: &str) -> Result<u64, String> {
    match num::<u64>(v)? {
        n @ 1..=31_536_000 => Ok(n),
        _ => Err(format!("{v:?} is not between 1 and 31536000 seconds")),
    }
}

fn log_format(v: &str) -> Result<LogFormat, String> {
    match v.to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("{v:?} is not a log format (text or json)")),
    }
}

fn ice_url(v: &str, scheme: &str) -> Result<String, String> {
    let ok = v.starts_with(&format!("{scheme}:")) || v.starts_with(&format!("{scheme}s:"));
    if ok && v.len() > scheme.len() + 1 {
        Ok(v.to_owned())
    } else {
        Err(format!("{v:?} must start with {scheme}: or {scheme}s:"))
    }
}

fn log_level(v: &str) -> Result<String, String> {
    let v = v.to_ascii_lowercase();
    match v.as_str() {
        "off" | "error" | "warn" | "info" | "debug" | "trace" => Ok(v),
        _ => Err(format!("{v:?} is not a log level")),
    }
}

fn env_name(flag: &str) -> String {
    format!(
        "WEBRTC_SIGNALING_{}",
        flag.replace('-', "_").to_ascii_uppercase()
    )
}

/// The `--help` text.
pub fn help() -> String {
    let mut out = String::from(
        "webrtc-signaling: a small WebRTC signaling server (rooms, relay, REST) on one port\n\n\
         USAGE: webrtc-signaling [FLAGS]\n\
         \x20      webrtc-signaling token --room ROOM --peer PEER [--ttl 1h]  (token --help)\n\n\
         Every flag can also be set in the environment: --max-room-peers 8 is\n\
         WEBRTC_SIGNALING_MAX_ROOM_PEERS=8 (repeatable flags take a comma-separated list,\n\
         a switch such as --admin takes 1 or 0).\n\
         Flags on the command line win. Defaults in brackets.\n\nFLAGS:\n",
    );
    for f in FLAGS {
        let left = format!("  --{} {}", f.name, f.value);
        let left = left.trim_end();
        out.push_str(&format!("{left:<32} {}\n", f.help));
        out.push_str(&format!("{:<32} env {}\n", "", env_name(f.name)));
    }
    out.push_str(&format!("{:<32} print this help\n", "  -h, --help"));
    out.push_str(&format!("{:<32} print the version\n", "  -V, --version"));
    out
}

impl Cli {
    /// Parses flags from `args` (without the program name) over values from `env`.
    pub fn parse<I, E>(args: I, env: E) -> Result<Cli, ConfigError>
    where
        I: IntoIterator<Item = String>,
        E: IntoIterator<Item = (String, String)>,
    {
        let mut args = args.into_iter().peekable();
        let env: Vec<(String, String)> = env.into_iter().collect();
        if args.peek().map(String::as_str) == Some("token") {
            args.next();
            return TokenRequest::parse(args, &env);
        }
        let mut config = Config::default();
        apply_env(&mut config, &env, FLAGS.iter())?;
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "-h" | "--help" => return Ok(Cli::Help),
                "-V" | "--version" => return Ok(Cli::Version),
                _ => {}
            }
            let Some(body) = arg.strip_prefix("--") else {
                return Err(ConfigError(format!(
                    "unexpected argument {arg:?} (see --help)"
                )));
            };
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (body, None),
            };
            let Some(flag) = FLAGS.iter().find(|f| f.name == name) else {
                return Err(ConfigError(format!("unknown flag --{name} (see --help)")));
            };
            let value = match inline.or_else(|| {
                if flag.value.is_empty() {
                    Some("true".to_owned())
                } else {
                    args.next()
                }
            }) {
                Some(v) => v,
                None => {
                    return Err(ConfigError(format!(
                        "--{name} needs a value ({})",
                        flag.value
                    )))
                }
            };
            (flag.set)(&mut config, &value).map_err(|e| ConfigError(format!("--{name}: {e}")))?;
        }
        let has_turn = config.ice_servers.iter().any(|u| u.starts_with("turn"));
        let has_static = config.turn_username.is_some() && config.turn_credential.is_some();
        let has_secret = config.limits.turn_secret.is_some();
        if has_turn && !has_static && !has_secret {
            // Browsers reject a turn: URL without credentials (RTCPeerConnection throws).
            return Err(ConfigError(
                "--turn needs --turn-secret (or --turn-secret-file), or --turn-username and \
                 --turn-credential"
                    .to_owned(),
            ));
        }
        if has_secret && !has_turn {
            return Err(ConfigError(
                "--turn-secret makes credentials for --turn servers, but there are none".to_owned(),
            ));
        }
        config.check_tls_and_auth().map_err(ConfigError)?;
        Ok(Cli::Run(Box::new(config)))
    }
}

/// Applies the environment variables of `flags` to `config`.
fn apply_env<'a>(
    config: &mut Config,
    env: &[(String, String)],
    flags: impl Iterator<Item = &'a Flag>,
) -> Result<(), ConfigError> {
    for f in flags {
        let name = env_name(f.name);
        if let Some((_, value)) = env.iter().find(|(k, _)| *k == name) {
            let repeatable = matches!(f.name, "stun" | "turn" | "allowed-origin");
            let values: Vec<&str> = if repeatable {
                value.split(',').filter(|s| !s.trim().is_empty()).collect()
            } else {
                vec![value.as_str()]
            };
            for v in values {
                (f.set)(config, v.trim()).map_err(|e| ConfigError(format!("{name}: {e}")))?;
            }
        }
    }
    Ok(())
}

impl Config {
    fn check_tls_and_auth(&self) -> Result<(), String> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("--tls-cert and --tls-key go together".to_owned());
        }
        if self.tls_self_signed && self.tls_cert.is_some() {
            return Err("--tls-self-signed or --tls-cert/--tls-key, not both".to_owned());
        }
        if self.tls_port.is_some() && !self.tls_enabled() {
            return Err("--tls-port needs --tls-cert/--tls-key or --tls-self-signed".to_owned());
        }
        if self.tls_enabled() && !cfg!(feature = "tls") {
            return Err("this build has no TLS (cargo feature `tls`)".to_owned());
        }
        self.verifier().map(|_| ())
    }
}

/// `webrtc-signaling token --room R --peer P [--ttl 1h] [--admin]`: the claims to
/// sign and the secret (from `--auth-secret[-file]` or their environment variables).
#[derive(Debug)]
pub struct TokenRequest {
    pub claims: Claims,
    pub secret: Secret,
}

/// `--help` of the `token` subcommand.
pub const TOKEN_HELP: &str = "\
webrtc-signaling token: print a room token (HS256 JWT) for a server run with --auth-secret

USAGE: webrtc-signaling token --room ROOM --peer PEER [--ttl 1h] [--auth-secret SECRET]
       webrtc-signaling token --admin [--ttl 1h] [--auth-secret SECRET]

  --room ROOM, --peer PEER   the one session the token admits
  --admin                    a token for the REST room listings and admin actions
  --ttl DURATION             lifetime: 90, 90s, 30m, 1h or 7d [1h]
  --auth-secret SECRET       env WEBRTC_SIGNALING_AUTH_SECRET
  --auth-secret-file PATH    env WEBRTC_SIGNALING_AUTH_SECRET_FILE

Connect with ws://HOST:8000/webrtc/signaling/ROOM/PEER?token=TOKEN, or call the REST
listings with the header 'Authorization: Bearer TOKEN'.
";

impl TokenRequest {
    fn parse<I: Iterator<Item = String>>(
        mut args: I,
        env: &[(String, String)],
    ) -> Result<Cli, ConfigError> {
        let err = |m: String| ConfigError(m);
        // The secret flags are the server's own (same env variables, same file rules).
        let secret_flags = || FLAGS.iter().filter(|f| f.name.starts_with("auth-secret"));
        let mut keys = Config::default();
        apply_env(&mut keys, env, secret_flags())?;
        let (mut room, mut peer, mut admin) = (None, None, false);
        let mut ttl = 3600;
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (arg.clone(), None),
            };
            if matches!(name.as_str(), "-h" | "--help") {
                return Ok(Cli::TokenHelp);
            }
            if name == "--admin" {
                admin = switch(inline.as_deref().unwrap_or("true"))
                    .map_err(|e| err(format!("--admin: {e}")))?;
                continue;
            }
            let value = inline
                .or_else(|| args.next())
                .ok_or_else(|| err(format!("{name} needs a value (see token --help)")))?;
            let wrap = |e: String| err(format!("{name}: {e}"));
            match name.as_str() {
                "--room" => room = Some(RoomId::parse(&value).map_err(|e| wrap(e.to_string()))?),
                "--peer" => peer = Some(PeerId::parse(&value).map_err(|e| wrap(e.to_string()))?),
                "--ttl" => ttl = duration(&value).map_err(wrap)?,
                flag => match secret_flags().find(|f| flag.strip_prefix("--") == Some(f.name)) {
                    Some(f) => (f.set)(&mut keys, &value).map_err(wrap)?,
                    None => {
                        return Err(err(format!("unknown token flag {name} (see token --help)")))
                    }
                },
            }
        }
        if room.is_some() != peer.is_some() || (room.is_none() && !admin) {
            return Err(err(
                "token needs --room and --peer (or --admin); see token --help".to_owned(),
            ));
        }
        let secret = keys.auth_secret.ok_or_else(|| {
            err(
                "token needs --auth-secret, --auth-secret-file or WEBRTC_SIGNALING_AUTH_SECRET"
                    .to_owned(),
            )
        })?;
        let now = access::now_secs();
        Ok(Cli::Token(TokenRequest {
            claims: Claims {
                room: room.map(|r| r.as_str().to_owned()),
                peer: peer.map(|p| p.as_str().to_owned()),
                admin,
                exp: now + ttl,
                iat: Some(now),
            },
            secret,
        }))
    }
}

/// `90`, `90s`, `30m`, `1h`, `7d` as seconds (at least 1, at most a year).
fn duration(v: &str) -> Result<u64, String> {
    let v = v.trim();
    let (digits, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{v:?} is not a duration (90, 90s, 30m, 1h, 7d)"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("{v:?} is not a duration (90, 90s, 30m, 1h, 7d)")),
    };
    match secs {
        1..=31_536_000 => Ok(secs),
        _ => Err(format!("{v:?} is not between 1 second and a year")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let cli = Cli::parse(
            args.iter().map(|s| s.to_string()),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )?;
        match cli {
            Cli::Run(c) => Ok(*c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = parse(&[], &[]).unwrap();
        assert_eq!(c.port, 8000);
        assert_eq!(c.bind.to_string(), "0.0.0.0");
        assert!(c.ice_servers.is_empty());
        assert_eq!(c.limits.max_message_size, 65536);
    }

    #[test]
    fn flags_beat_env() {
        let c = parse(
            &[
                "--port",
                "9000",
                "--idle-timeout=2.5",
                "--stun",
                "stun:a:3478",
            ],
            &[
                ("WEBRTC_SIGNALING_PORT", "7000"),
                ("WEBRTC_SIGNALING_BIND", "127.0.0.1"),
                ("WEBRTC_SIGNALING_TURN", "turn:x:3478,turns:y:5349"),
                ("WEBRTC_SIGNALING_TURN_USERNAME", "u"),
                ("WEBRTC_SIGNALING_TURN_CREDENTIAL", "p"),
            ],
        )
        .unwrap();
        assert_eq!(c.port, 9000);
        assert_eq!(c.bind.to_string(), "127.0.0.1");
        assert_eq!(c.limits.idle_timeout, Duration::from_millis(2500));
        assert_eq!(
            c.ice_servers,
            ["turn:x:3478", "turns:y:5349", "stun:a:3478"]
        );
    }

    #[test]
    fn errors_are_clear() {
        assert_eq!(
            parse(&["--port", "x"], &[]).unwrap_err().to_string(),
            "--port: \"x\" is not a valid number"
        );
        assert!(parse(&["--nope"], &[])
            .unwrap_err()
            .0
            .contains("unknown flag"));
        assert!(parse(&["--port"], &[])
            .unwrap_err()
            .0
            .contains("needs a value"));
        assert!(parse(&["--stun", "http://x"], &[]).is_err());
        assert!(parse(&["--turn", "turn:x"], &[])
            .unwrap_err()
            .0
            .contains("--turn-username"));
        assert!(parse(&["--max-connections", "0"], &[]).is_err());
        assert!(parse(&[], &[("WEBRTC_SIGNALING_PORT", "-1")])
            .unwrap_err()
            .0
            .starts_with("WEBRTC_SIGNALING_PORT"));
    }

    #[test]
    fn turn_secret_makes_turn_urls_valid_and_stays_out_of_debug() {
        let c = parse(&["--turn", "turn:t:3478", "--turn-secret", "s3cret"], &[]).unwrap();
        assert_eq!(c.limits.turn_secret, Some(Secret::new("s3cret")));
        assert_eq!(c.limits.turn_ttl, Duration::from_secs(86_400));
        assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
        // Static credentials may stay configured; the secret wins at request time.
        let c = parse(
            &[
                "--turn-ttl",
                "600",
                "--turn-username",
                "u",
                "--turn-credential",
                "p",
            ],
            &[
                ("WEBRTC_SIGNALING_TURN", "turn:t:3478,turns:t:5349"),
                ("WEBRTC_SIGNALING_TURN_SECRET", "from-env"),
            ],
        )
        .unwrap();
        assert_eq!(c.limits.turn_secret, Some(Secret::new("from-env")));
        assert_eq!(c.limits.turn_ttl, Duration::from_secs(600));
        assert_eq!(c.turn_username.as_deref(), Some("u"));
    }

    #[test]
    fn turn_secret_file_is_read_and_trimmed() {
        let path = std::env::temp_dir().join(format!(
            "webrtc-signaling-secret-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, "  file-secret\n").unwrap();
        let path_str = path.to_str().unwrap();
        let c = parse(
            &["--turn", "turn:t:3478", "--turn-secret-file", path_str],
            &[],
        );
        std::fs::write(&path, "\n").unwrap();
        let empty = parse(
            &["--turn", "turn:t:3478", "--turn-secret-file", path_str],
            &[],
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            c.unwrap().limits.turn_secret,
            Some(Secret::new("file-secret"))
        );
        assert!(empty.unwrap_err().0.contains("the secret is empty"));
        let missing = parse(
            &["--turn", "turn:t:3478", "--turn-secret-file", path_str],
            &[],
        );
        assert!(missing
            .unwrap_err()
            .0
            .starts_with("--turn-secret-file: cannot read"));
    }

    #[test]
    fn turn_secret_errors() {
        assert!(parse(&["--turn-secret", "s"], &[])
            .unwrap_err()
            .0
            .contains("there are none"));
        assert!(parse(&["--turn", "turn:t", "--turn-secret", ""], &[])
            .unwrap_err()
            .0
            .contains("empty"));
        assert!(parse(
            &["--turn", "turn:t", "--turn-secret", "s", "--turn-ttl", "0"],
            &[]
        )
        .is_err());
        assert!(parse(&["--turn", "turn:t", "--turn-username", "u"], &[])
            .unwrap_err()
            .0
            .contains("--turn-secret"));
    }

    #[test]
    fn admin_is_a_switch() {
        assert!(!parse(&[], &[]).unwrap().limits.admin);
        let c = parse(&["--admin", "--port", "9"], &[]).unwrap();
        assert!(c.limits.admin);
        assert_eq!(c.port, 9, "a switch does not take the next argument");
        assert!(
            !parse(&["--admin=false"], &[("WEBRTC_SIGNALING_ADMIN", "1")])
                .unwrap()
                .limits
                .admin
        );
        for yes in ["1", "true", "YES", "on"] {
            assert!(
                parse(&[], &[("WEBRTC_SIGNALING_ADMIN", yes)])
                    .unwrap()
                    .limits
                    .admin
            );
        }
        assert!(parse(&[], &[("WEBRTC_SIGNALING_ADMIN", "maybe")]).is_err());
        assert!(help().contains("  --admin   "), "{}", help());
    }

    #[test]
    fn log_format() {
        assert_eq!(parse(&[], &[]).unwrap().log_format, LogFormat::Text);
        assert_eq!(
            parse(&["--log-format", "JSON"], &[]).unwrap().log_format,
            LogFormat::Json
        );
        assert_eq!(
            parse(&[], &[("WEBRTC_SIGNALING_LOG_FORMAT", "json")])
                .unwrap()
                .log_format,
            LogFormat::Json
        );
        assert_eq!(
            parse(&["--log-format", "xml"], &[]).unwrap_err().0,
            "--log-format: \"xml\" is not a log format (text or json)"
        );
    }

    #[test]
    fn help_lists_every_flag_and_env() {
        let h = help();
        for f in FLAGS {
            assert!(h.contains(&format!("--{}", f.name)));
            assert!(h.contains(&env_name(f.name)));
        }
        assert!(matches!(
            Cli::parse(["--help".to_string()], []).unwrap(),
            Cli::Help
        ));
    }
}
