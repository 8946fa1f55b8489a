//! The command line of the binary: every flag with its environment variable and
//! help line, parsed into the library's [`Config`] plus the logging settings. The
//! `token` subcommand is in [`token`], the log format in [`logging`].
//!
//! Each flag `--some-flag` can also be set with `WEBRTC_SIGNALING_SOME_FLAG`; a flag
//! on the command line wins over the environment (a repeatable one replaces the
//! environment's list). Durations: [`duration`]; systemd: [`systemd`]; SIGHUP:
//! [`reload`].

pub mod duration;
pub mod logging;
pub mod reload;
pub mod systemd;
pub mod token;

use std::path::PathBuf;
use std::time::Duration;

use webrtc_signaling::{Config, ConfigError, Secret};

pub use logging::LogFormat;
pub use token::TokenRequest;

/// What the command line asked for.
#[derive(Debug)]
pub enum Cli {
    Run(Box<Run>),
    /// `webrtc-signaling token ...`: print a signed token.
    Token(TokenRequest),
    /// `webrtc-signaling token --help`.
    TokenHelp,
    /// `--check-config`: print the effective settings and exit.
    Check(Box<Run>),
    Help,
    Version,
}

/// Run the server: its configuration and how to log.
#[derive(Debug)]
pub struct Run {
    pub config: Config,
    /// `error`, `warn`, `info`, `debug`, `trace` or `off`, then optionally
    /// `,TARGET=LEVEL` pairs.
    pub log_level: logging::LevelSpec,
    pub log_format: LogFormat,
    /// `--ping-interval` was given (else it follows a short `--idle-timeout`).
    ping_set: bool,
}

impl Default for Run {
    fn default() -> Self {
        Run {
            config: Config::default(),
            log_level: logging::LevelSpec::parse("info").unwrap_or(logging::LevelSpec {
                default: log::LevelFilter::Info,
                targets: Vec::new(),
            }),
            log_format: LogFormat::Text,
            ping_set: false,
        }
    }
}

type Setter = fn(&mut Run, &str) -> Result<(), String>;

pub(crate) struct Flag {
    pub(crate) name: &'static str,
    /// What the value looks like in `--help`; empty for a switch, which takes no value
    /// on the command line (`--admin`, or `--admin=false`) and `1`/`0`, `true`/`false`,
    /// `yes`/`no` or `on`/`off` in the environment.
    value: &'static str,
    help: &'static str,
    pub(crate) set: Setter,
}

fn num<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a valid number"))
}

/// A duration flag: seconds, or with a unit (`500ms`, `90s`, `30m`, `1h`, `7d`).
fn secs(v: &str) -> Result<Duration, String> {
    duration::parse(v, Duration::from_secs(86_400 * 365))
}

pub(crate) fn switch(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{v:?} is not true or false")),
    }
}

pub(crate) fn secret(v: &str) -> Result<Secret, String> {
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
            set: |$c: &mut Run, $v: &str| {
                $body;
                Ok(())
            },
        }
    };
}

pub(crate) const FLAGS: &[Flag] = &[
    flag!(
        "bind",
        "ADDR",
        "address to listen on (ignored under systemd socket activation) [0.0.0.0]",
        |c, v| c.config.bind = v
            .parse()
            .map_err(|_| format!("{v:?} is not an IP address"))?
    ),
    flag!(
        "port",
        "N",
        "TCP port; 0 picks a free one (ignored under systemd socket activation) [8000]",
        |c, v| c.config.port = num(v)?
    ),
    flag!(
        "ops-bind",
        "ADDR:PORT",
        "a second listener for /metrics and the admin API, e.g. 127.0.0.1:9100; the \
         public port then serves neither [none]",
        |c, v| c.config.ops_bind = Some(
            v.trim()
                .parse()
                .map_err(|_| format!("{v:?} is not ADDR:PORT (e.g. 127.0.0.1:9100)"))?
        )
    ),
    flag!(
        "trusted-proxy",
        "ADDR",
        "a reverse proxy (address or network, e.g. 127.0.0.1 or 10.0.0.0/8) whose \
         X-Forwarded-For/Forwarded name the client in logs (repeatable) [none]",
        |c, v| c.config.trusted_proxies.add(v)?
    ),
    flag!(
        "stun",
        "URL",
        "STUN server for /webrtc/ice-servers, e.g. stun:host:3478 (repeatable) [none]",
        |c, v| c.config.ice.servers.push(ice_url(v, "stun")?)
    ),
    flag!(
        "turn",
        "URL",
        "TURN server for /webrtc/ice-servers (repeatable) [none]",
        |c, v| c.config.ice.servers.push(ice_url(v, "turn")?)
    ),
    flag!(
        "turn-username",
        "NAME",
        "username announced with the --turn servers [none]",
        |c, v| c.config.ice.turn_username = Some(v.to_owned())
    ),
    flag!(
        "turn-credential",
        "SECRET",
        "credential announced with the --turn servers [none]",
        |c, v| c.config.ice.turn_credential = Some(v.to_owned())
    ),
    flag!(
        "turn-secret",
        "SECRET",
        "shared secret (coturn static-auth-secret): per-request TURN credentials that \
         expire; wins over --turn-username/--turn-credential [none]",
        |c, v| c.config.ice.turn_secret = Some(secret(v)?)
    ),
    flag!(
        "turn-secret-file",
        "PATH",
        "read --turn-secret from this file (surrounding whitespace ignored) [none]",
        |c, v| c.config.ice.turn_secret = Some(secret_file(v)?)
    ),
    flag!(
        "turn-ttl",
        "DURATION",
        "lifetime of the credentials made with --turn-secret [86400]",
        |c, v| c.config.ice.turn_ttl = ttl(v)?
    ),
    flag!(
        "tls-cert",
        "PATH",
        "PEM certificate chain: serve https:// and wss:// (with --tls-key) [off]",
        |c, v| c.config.tls.cert = Some(PathBuf::from(v))
    ),
    flag!(
        "tls-key",
        "PATH",
        "PEM private key of --tls-cert [none]",
        |c, v| c.config.tls.key = Some(PathBuf::from(v))
    ),
    flag!(
        "tls-self-signed",
        "",
        "TLS with a certificate made at start for this host's names (fingerprint \
         logged; browsers will ask to trust it) [off]",
        |c, v| c.config.tls.self_signed = switch(v)?
    ),
    flag!(
        "tls-port",
        "N",
        "serve TLS on this port and plain HTTP on --port; without it TLS is on --port \
         [none]",
        |c, v| c.config.tls.port = Some(num(v)?)
    ),
    flag!(
        "auth-secret",
        "SECRET",
        "require ?token= (HS256 JWT with room, peer, exp) on every session, and an \
         admin token on the REST room listings [off]",
        |c, v| c.config.access.auth_secret = Some(secret(v)?)
    ),
    flag!(
        "auth-secret-file",
        "PATH",
        "read --auth-secret from this file (surrounding whitespace ignored) [none]",
        |c, v| c.config.access.auth_secret = Some(secret_file(v)?)
    ),
    flag!(
        "auth-public-key",
        "PATH",
        "also accept RS256/ES256 tokens signed for this PEM public key [none]",
        |c, v| c.config.access.auth_public_key =
            Some(std::fs::read(v).map_err(|e| format!("cannot read {v:?}: {e}"))?)
    ),
    flag!(
        "auth-leeway",
        "DURATION",
        "clock skew allowed on token exp/nbf (whole seconds), at most 300 [30]",
        |c, v| c.config.access.auth_leeway = leeway(v)?
    ),
    flag!(
        "auth-audience",
        "AUD",
        "every token's aud must contain this (token mints it); admin tokens also carry \
         webrtc-signaling:admin [not checked]",
        |c, v| c.config.access.auth_audience = Some(non_empty(v)?)
    ),
    flag!(
        "auth-issuer",
        "ISS",
        "every token's iss must be this (token mints it) [not checked]",
        |c, v| c.config.access.auth_issuer = Some(non_empty(v)?)
    ),
    flag!(
        "allowed-origin",
        "URL",
        "browser Origin allowed to open sessions, e.g. https://app.example \
         (repeatable); others get 4403 [any]",
        |c, v| c.config.access.allowed_origins.add(v)?
    ),
    flag!(
        "public-origin",
        "URL",
        "origin this server is reached at, e.g. https://signal.example (repeatable): its \
         pages pass --allowed-origin; without it only pages at an IP address or \
         localhost count as the server's own [none]",
        |c, v| c.config.access.allowed_origins.add_public(v)?
    ),
    flag!(
        "admin",
        "",
        "let DELETE /webrtc/rooms/... end sessions (with --auth-secret: admin token only) [off]",
        |c, v| c.config.access.admin = switch(v)?
    ),
    flag!(
        "max-connections",
        "N",
        "signaling sessions at once; more get 4503 server_full [1024]",
        |c, v| c.config.limits.max_connections = positive(v)?
    ),
    flag!(
        "max-http-connections",
        "N",
        "connections in TLS handshake, request head, REST or keep-alive at once, on top \
         of the sessions; when all are busy the oldest idle keep-alive one is closed for \
         a new one, else the new one gets 503 [64]",
        |c, v| c.config.limits.max_http_connections = positive(v)?
    ),
    flag!(
        "max-connections-per-ip",
        "N",
        "open connections (HTTP and sessions) from one IP address, 0 = no cap [0]",
        |c, v| c.config.limits.max_connections_per_ip = num(v)?
    ),
    flag!(
        "http-max-requests",
        "N",
        "requests answered on one keep-alive connection before it is closed [100]",
        |c, v| c.config.limits.http_max_requests = positive(v)?
    ),
    flag!(
        "max-room-peers",
        "N",
        "peers per room; more get 4503 room_full [32]",
        |c, v| c.config.limits.max_room_peers = positive(v)?
    ),
    flag!(
        "max-message-size",
        "BYTES",
        "largest frame or message from a client; more get 1009 [65536]",
        |c, v| c.config.limits.max_message_size = positive(v)?
    ),
    flag!(
        "peer-queue",
        "N",
        "messages queued per peer; beyond it senders pause, and a peer whose socket is \
         full meanwhile is a slow consumer [64]",
        |c, v| c.config.limits.peer_queue = positive(v)?
    ),
    flag!(
        "router-queue",
        "N",
        "commands queued for the router thread, and most messages held back for one \
         slow peer [4096]",
        |c, v| c.config.limits.router_queue = positive(v)?
    ),
    flag!(
        "rate-limit",
        "N",
        "messages per second per session, 0 = unlimited [100]",
        |c, v| c.config.limits.rate_per_sec = num(v)?
    ),
    flag!(
        "rate-burst",
        "N",
        "messages a session may send in a burst [200]",
        |c, v| c.config.limits.rate_burst = num::<u32>(v)?.max(1)
    ),
    flag!(
        "rate-strikes",
        "N",
        "dropped messages in a row before close 4429 [20]",
        |c, v| c.config.limits.rate_strikes = num::<u32>(v)?.max(1)
    ),
    flag!(
        "idle-timeout",
        "DURATION",
        "close a session silent this long with 4408 [60]",
        |c, v| c.config.limits.idle_timeout = secs(v)?
    ),
    flag!(
        "ping-interval",
        "DURATION",
        "send a WebSocket ping this often, 0 = never; below --idle-timeout (without \
         this flag: at most half of it) [20]",
        |c, v| {
            c.config.limits.ping_interval = secs(v)?;
            c.ping_set = true;
        }
    ),
    flag!(
        "resume-grace",
        "DURATION",
        "hold a peer whose connection dropped this long for its reconnect (resume_token); \
         the room sees peer_left only after it, 0 = off [10]",
        |c, v| c.config.limits.resume_grace = secs(v)?
    ),
    flag!(
        "write-timeout",
        "DURATION",
        "a write blocked this long makes the peer a slow consumer; an HTTP response not \
         written whole by then ends its connection [10]",
        |c, v| c.config.limits.write_timeout = secs(v)?
    ),
    flag!(
        "close-timeout",
        "DURATION",
        "wait this long for the client's close reply [1]",
        |c, v| c.config.limits.close_timeout = secs(v)?
    ),
    flag!(
        "http-head-max",
        "BYTES",
        "largest HTTP request head; more get 431 [8192]",
        |c, v| c.config.limits.http_head_max = positive(v)?
    ),
    flag!(
        "http-head-timeout",
        "DURATION",
        "time to send a request head, and keep-alive idle time [10]",
        |c, v| c.config.limits.http_head_timeout = secs(v)?
    ),
    flag!(
        "read-buffer",
        "BYTES",
        "WebSocket read buffer per session [4096]",
        |c, v| c.config.limits.read_buffer = positive(v)?
    ),
    flag!(
        "write-buffer",
        "BYTES",
        "output bytes per session above which it waits for its socket [16384]",
        |c, v| c.config.limits.write_buffer = positive(v)?
    ),
    flag!(
        "thread-stack",
        "BYTES",
        "stack size of connection threads, at least 65536 [131072]",
        |c, v| c.config.limits.thread_stack = num::<usize>(v)?.max(64 * 1024)
    ),
    flag!(
        "redis",
        "URL",
        "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] or unix://PATH: share rooms with every \
         instance started with the same Redis, behind any load balancer (PROTOCOL.md §9) \
         [none: one instance]",
        |c, v| c.config.cluster.redis = Some(v.to_owned())
    ),
    flag!(
        "cluster-ttl",
        "DURATION",
        "with --redis: an instance gone this long without a goodbye has its peers \
         leave [10]",
        |c, v| c.config.cluster.ttl = secs(v)?
    ),
    flag!(
        "log-level",
        "LEVEL",
        "off, error, warn, info, debug or trace, then optionally ,TARGET=LEVEL pairs \
         (tungstenite logs frame payloads: it stays at info unless named, e.g. \
         debug,tungstenite=trace) [info]",
        |c, v| c.log_level = logging::LevelSpec::parse(v)?
    ),
    flag!(
        "log-format",
        "FORMAT",
        "text (human) or json (one object per line, for log collectors) [text]",
        |c, v| c.log_format = log_format(v)?
    ),
];

/// `--auth-leeway`: whole seconds, at most `MAX_LEEWAY_SECS` (beyond it an expired
/// token lives on).
fn leeway(v: &str) -> Result<Duration, String> {
    let max = webrtc_signaling::access::MAX_LEEWAY_SECS;
    let d = duration::parse(v, Duration::from_secs(max))?;
    Ok(Duration::from_secs(d.as_secs()))
}

fn non_empty(v: &str) -> Result<String, String> {
    match v.trim() {
        "" => Err("must not be empty".to_owned()),
        v => Ok(v.to_owned()),
    }
}

/// `--turn-ttl`: whole seconds, 1 s to a year (credentials carry a Unix time).
fn ttl(v: &str) -> Result<Duration, String> {
    let d = duration::parse(v, Duration::from_secs(31_536_000))?;
    if d.as_secs() == 0 {
        return Err(format!("{v:?} is shorter than 1 second"));
    }
    Ok(Duration::from_secs(d.as_secs()))
}

/// The repeatable flags, and how to forget the values the environment gave one when
/// the command line names it (the command line replaces the list, it does not add).
type Forget = fn(&mut Run);
const REPEATABLE: &[(&str, Forget)] = &[
    ("stun", |c| {
        c.config.ice.servers.retain(|u| !u.starts_with("stun"))
    }),
    ("turn", |c| {
        c.config.ice.servers.retain(|u| !u.starts_with("turn"))
    }),
    ("allowed-origin", |c| {
        c.config.access.allowed_origins.clear_allowed()
    }),
    ("public-origin", |c| {
        c.config.access.allowed_origins.clear_public()
    }),
    ("trusted-proxy", |c| {
        c.config.trusted_proxies = Default::default()
    }),
];

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
         Flags on the command line win; a repeatable flag there replaces the environment's\n\
         list. A DURATION is seconds (2.5) or has a unit: 500ms, 90s, 30m, 1h, 7d.\n\
         SIGHUP re-reads the TLS certificate and key and the secret files.\n\
         Defaults in brackets.\n\nFLAGS:\n",
    );
    for f in FLAGS {
        let left = format!("  --{} {}", f.name, f.value);
        let left = left.trim_end();
        out.push_str(&format!("{left:<32} {}\n", f.help));
        out.push_str(&format!("{:<32} env {}\n", "", env_name(f.name)));
    }
    out.push_str(&format!(
        "{:<32} check the flags and environment, print the settings (secrets hidden), exit\n",
        "  --check-config"
    ));
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
            return token::parse(args, &env);
        }
        let mut run = Run::default();
        let mut check = false;
        apply_env(&mut run, &env, FLAGS.iter())?;
        let mut replaced: Vec<&str> = Vec::new();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "-h" | "--help" => return Ok(Cli::Help),
                "-V" | "--version" => return Ok(Cli::Version),
                "--check-config" => {
                    check = true;
                    continue;
                }
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
            if let Some((_, forget)) = REPEATABLE.iter().find(|(n, _)| *n == flag.name) {
                if !replaced.contains(&flag.name) {
                    forget(&mut run);
                    replaced.push(flag.name);
                }
            }
            (flag.set)(&mut run, &value).map_err(|e| ConfigError(format!("--{name}: {e}")))?;
        }
        let limits = &mut run.config.limits;
        if !run.ping_set && limits.ping_interval >= limits.idle_timeout {
            // Only --idle-timeout was given: keep healthy clients alive under it.
            limits.ping_interval = limits.idle_timeout / 2;
        }
        run.config.validate()?;
        Ok(if check {
            Cli::Check(Box::new(run))
        } else {
            Cli::Run(Box::new(run))
        })
    }
}

/// Applies the environment variables of `flags` to `run`.
pub(crate) fn apply_env<'a>(
    run: &mut Run,
    env: &[(String, String)],
    flags: impl Iterator<Item = &'a Flag>,
) -> Result<(), ConfigError> {
    for f in flags {
        let name = env_name(f.name);
        if let Some((_, value)) = env.iter().find(|(k, _)| *k == name) {
            let repeatable = REPEATABLE.iter().any(|(n, _)| *n == f.name);
            let values: Vec<&str> = if repeatable {
                value.split(',').filter(|s| !s.trim().is_empty()).collect()
            } else {
                vec![value.as_str()]
            };
            for v in values {
                (f.set)(run, v.trim()).map_err(|e| ConfigError(format!("{name}: {e}")))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
