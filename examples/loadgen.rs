//! `loadgen`: a load and latency tool to run against a webrtc-signaling deployment.
//!
//! `cargo run --release --example loadgen -- <pairs|roundtrip|idle|join> [options]`;
//! `--help` documents every mode and flag, `docs/loadgen.md` every figure.
//!
//! Synchronous threads only (no async runtime): tungstenite clients on blocking
//! sockets, a condition variable for the pairs' in-flight window, and `poll(2)` over
//! many non-blocking sockets for the idle peers. `wss://` runs the same clients over
//! a rustls connection (ring provider); `--auth-secret` mints a room token per peer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, OtherError,
    RootCertStore, SignatureScheme, StreamOwned,
};
use serde_json::{json, Value};
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<Conn>;

const HELP: &str = "\
loadgen: load and latency tool for a webrtc-signaling server (PROTOCOL.md wire protocol)

USAGE:
  cargo run --release --example loadgen -- <MODE> [OPTIONS]

MODES:
  pairs      N pairs, each in its own room; in each pair a sender thread pipelines
             ice_candidate messages to its partner (a receiver thread), at most W in
             flight; measures relayed msgs/s and send->receive latency for --secs after
             --warmup, then drains and checks zero loss and per-pair order.
  roundtrip  one pair: A sends an offer (~2.4 KB SDP) to B, B answers (~2.4 KB) as
             soon as it has it; the round trip A->B->A, --iters times.
  idle       N idle peers in rooms of two, held --hold seconds while answering the
             server's WebSocket pings; how many connected and how many stayed connected.
  join       sequential joins into a room with one resident peer; latency from TCP
             connect to the `existing_peers` message, then a polite close.

OPTIONS (every mode):
  --url URL            server base URL [ws://127.0.0.1:8000], ws:// or wss://; the
                       tool appends /webrtc/signaling/{room}/{peer} (a path prefix is
                       kept, e.g. a reverse proxy's /sig)
  --auth-secret S      the server's --auth-secret: every connection carries
                       ?token=JWT (HS256; claims room, peer, exp now+1h) minted here
  --server-pid PID     the server's process on this host: its VmRSS, VmHWM and Threads
                       (/proc/PID/status) before and after, and its CPU seconds
                       (utime+stime, /proc/PID/stat) over the measured interval
  --json               print only the final JSON line on stdout
  --connect-timeout S  TCP connect, TLS handshake, WebSocket upgrade and first-message
                       timeout, each [5]
  -h, --help           this text

wss:// (needs exactly one; there are no system roots to trust):
  --fingerprint FP     accept only a server certificate whose SHA-256 is FP
                       (AB:CD:..., as the server logs it; case and colons ignored)
  --ca FILE            trust the CA certificate(s) in this PEM file (the CA that
                       issued the server's --tls-cert); the URL's host must match
  --insecure           accept any certificate (handshake signatures still checked)

pairs:
  --pairs N            pairs (2N connections, 2N threads) [50]
  --secs T             measured seconds [10]
  --warmup T           seconds of load before measuring [1]
  --window W           messages in flight per pair; the sender blocks when W are
                       unacknowledged by its receiver [64]
  --payload-bytes B    size of each ice_candidate message as sent, JSON text bytes; a
                       realistic ~250 B candidate plus a sequence number, a send
                       timestamp and padding [300]
  --drain T            seconds to wait for in-flight messages after the load stops [5]
roundtrip:
  --iters N            measured round trips [10000]
  --warmup N           unmeasured round trips first [500]
idle:
  --peers N            idle peers, two per room [1000]
  --hold T             seconds to hold them once all have connected [10]
join:
  --joins N            measured joins [2000]
  --warmup N           unmeasured joins first [100]

OUTPUT:
  Human-readable lines on stdout (progress on stderr), then one JSON line with every
  figure (`--json`: the JSON line only). Latencies are measured on this process's
  monotonic clock; percentiles are nearest-rank over every sample.

EXIT STATUS:
  0 ran and every check passed; 1 could not run (bad URL, refused connection, server
  error); 2 usage error; 3 ran but a check failed (loss, order, unexpected messages,
  failed joins, peers that did not connect or did not stay connected).

SERVER FLAGS:
  The server rate-limits each session (--rate-limit 100 msgs/s by default): `pairs` and
  `roundtrip` exceed that at once, so run the server with --rate-limit 0 for them.
  `idle --peers N` needs --max-connections >= N and enough file descriptors on both
  sides (this tool raises its own soft RLIMIT_NOFILE to the hard limit at start).

EXAMPLES:
  target/release/webrtc-signaling --bind 127.0.0.1 --port 8123 --max-connections 20000 --rate-limit 0 &
  cargo run --release --example loadgen -- pairs --url ws://127.0.0.1:8123 --pairs 50 --secs 10 --server-pid $!

  target/release/webrtc-signaling --bind 127.0.0.1 --port 8443 --rate-limit 0 \\
      --tls-self-signed --auth-secret s3cret-s3cret-s3cret-s3cret-s3cret &     # logs: TLS certificate SHA-256 fingerprint AB:CD:...
  cargo run --release --example loadgen -- roundtrip --url wss://127.0.0.1:8443 \\
      --fingerprint AB:CD:... --auth-secret s3cret-s3cret-s3cret-s3cret-s3cret
";

// ---------------------------------------------------------------------------
// Errors and exit status

enum Fail {
    Usage(String),
    Fatal(String),
}

impl From<String> for Fail {
    fn from(s: String) -> Self {
        Fail::Fatal(s)
    }
}

type Res<T> = Result<T, Fail>;

const EXIT_CHECK_FAILED: u8 = 3;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_CHECK_FAILED),
        Err(Fail::Usage(m)) => {
            eprintln!("loadgen: {m}\n(see `loadgen --help`)");
            ExitCode::from(2)
        }
        Err(Fail::Fatal(m)) => {
            eprintln!("loadgen: error: {m}");
            ExitCode::from(1)
        }
    }
}

// ---------------------------------------------------------------------------
// Options

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Pairs,
    Roundtrip,
    Idle,
    Join,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Pairs => "pairs",
            Mode::Roundtrip => "roundtrip",
            Mode::Idle => "idle",
            Mode::Join => "join",
        }
    }
    fn flags(self) -> &'static [&'static str] {
        match self {
            Mode::Pairs => &[
                "--pairs",
                "--secs",
                "--warmup",
                "--window",
                "--payload-bytes",
                "--drain",
            ],
            Mode::Roundtrip => &["--iters", "--warmup"],
            Mode::Idle => &["--peers", "--hold"],
            Mode::Join => &["--joins", "--warmup"],
        }
    }
}

struct Opts {
    mode: Mode,
    url: String,
    auth_secret: Option<String>,
    tls: TlsTrust,
    server_pid: Option<u32>,
    json: bool,
    connect_timeout: Duration,
    pairs: usize,
    secs: f64,
    warmup_secs: f64,
    window: u64,
    payload_bytes: usize,
    drain: f64,
    iters: usize,
    warmup_iters: usize,
    peers: usize,
    hold: f64,
    joins: usize,
}

fn parse_args(args: Vec<String>) -> Res<Option<Opts>> {
    if args.is_empty() {
        return Err(Fail::Usage(
            "missing mode: pairs, roundtrip, idle or join".into(),
        ));
    }
    if args
        .iter()
        .any(|a| a == "-h" || a == "--help" || a == "help")
    {
        print!("{HELP}");
        return Ok(None);
    }
    let mode = match args[0].as_str() {
        "pairs" => Mode::Pairs,
        "roundtrip" => Mode::Roundtrip,
        "idle" => Mode::Idle,
        "join" => Mode::Join,
        other => {
            return Err(Fail::Usage(format!(
                "unknown mode `{other}`: expected pairs, roundtrip, idle or join"
            )))
        }
    };
    let mut o = Opts {
        mode,
        url: "ws://127.0.0.1:8000".into(),
        auth_secret: None,
        tls: TlsTrust::Unset,
        server_pid: None,
        json: false,
        connect_timeout: Duration::from_secs(5),
        pairs: 50,
        secs: 10.0,
        warmup_secs: 1.0,
        window: 64,
        payload_bytes: 300,
        drain: 5.0,
        iters: 10_000,
        warmup_iters: if mode == Mode::Join { 100 } else { 500 },
        peers: 1000,
        hold: 10.0,
        joins: 2000,
    };
    let mut it = args.into_iter().skip(1);
    while let Some(arg) = it.next() {
        if arg == "--json" {
            o.json = true;
            continue;
        }
        if arg == "--insecure" {
            o.tls = o.tls.set(TlsTrust::Insecure)?;
            continue;
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let common = [
            "--url",
            "--server-pid",
            "--connect-timeout",
            "--auth-secret",
            "--ca",
            "--fingerprint",
        ];
        if !common.contains(&flag.as_str()) && !mode.flags().contains(&flag.as_str()) {
            return Err(Fail::Usage(if flag.starts_with('-') {
                format!(
                    "{flag} is not an option of `{}` (its options: {}, and --url, --auth-secret, --ca, --fingerprint, --insecure, --server-pid, --connect-timeout, --json)",
                    mode.name(),
                    mode.flags().join(", ")
                )
            } else {
                format!("unexpected argument `{flag}`")
            }));
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .ok_or_else(|| Fail::Usage(format!("{flag} needs a value")))?,
        };
        match flag.as_str() {
            "--url" => o.url = value,
            "--auth-secret" if value.is_empty() => {
                return Err(Fail::Usage("--auth-secret needs a non-empty secret".into()))
            }
            "--auth-secret" => o.auth_secret = Some(value),
            "--ca" => o.tls = o.tls.set(TlsTrust::Ca(value))?,
            "--fingerprint" => o.tls = o.tls.set(TlsTrust::Fingerprint(normalize_fp(&value)?))?,
            "--server-pid" => o.server_pid = Some(num(&flag, &value, 1, u32::MAX as u64)? as u32),
            "--connect-timeout" => {
                o.connect_timeout = Duration::from_secs_f64(secs(&flag, &value, 0.01, 600.0)?)
            }
            "--pairs" => o.pairs = num(&flag, &value, 1, 100_000)? as usize,
            "--secs" => o.secs = secs(&flag, &value, 0.1, 86_400.0)?,
            "--warmup" if mode == Mode::Pairs => o.warmup_secs = secs(&flag, &value, 0.0, 3600.0)?,
            "--warmup" => o.warmup_iters = num(&flag, &value, 0, 10_000_000)? as usize,
            "--window" => o.window = num(&flag, &value, 1, 1_000_000)?,
            "--payload-bytes" => o.payload_bytes = num(&flag, &value, 1, 16 << 20)? as usize,
            "--drain" => o.drain = secs(&flag, &value, 0.1, 3600.0)?,
            "--iters" => o.iters = num(&flag, &value, 1, 100_000_000)? as usize,
            "--peers" => o.peers = num(&flag, &value, 1, 1_000_000)? as usize,
            "--hold" => o.hold = secs(&flag, &value, 0.0, 86_400.0)?,
            "--joins" => o.joins = num(&flag, &value, 1, 100_000_000)? as usize,
            _ => unreachable!("flag list and match disagree: {flag}"),
        }
    }
    Ok(Some(o))
}

fn num(flag: &str, v: &str, min: u64, max: u64) -> Res<u64> {
    let n: u64 = v
        .replace('_', "")
        .parse()
        .map_err(|_| Fail::Usage(format!("{flag} wants a whole number, not `{v}`")))?;
    if n < min || n > max {
        return Err(Fail::Usage(format!(
            "{flag} must be in {min}..={max}, not {n}"
        )));
    }
    Ok(n)
}

fn secs(flag: &str, v: &str, min: f64, max: f64) -> Res<f64> {
    let s: f64 = v
        .parse()
        .map_err(|_| Fail::Usage(format!("{flag} wants seconds, not `{v}`")))?;
    if !(min..=max).contains(&s) {
        return Err(Fail::Usage(format!(
            "{flag} must be in {min}..={max} seconds, not {v}"
        )));
    }
    Ok(s)
}

// ---------------------------------------------------------------------------
// Target URL and connections

#[derive(Clone)]
struct Target {
    /// `wss://` (TLS) rather than `ws://`.
    secure: bool,
    /// `host[:port]` as the user wrote it (the Host header).
    authority: String,
    /// The host alone, without brackets or port (the TLS server name).
    host: String,
    /// Path prefix before `/webrtc/signaling`, "" or "/something".
    prefix: String,
    /// Resolved addresses, the one that answered the probe first.
    addrs: Vec<SocketAddr>,
    /// For `wss://`: the rustls client configuration and server name (SNI).
    tls: Option<TlsClient>,
    /// `--auth-secret`: a token is minted for every connection.
    auth_secret: Option<Arc<[u8]>>,
}

impl Target {
    fn parse(url: &str) -> Res<Target> {
        let (secure, rest) = if let Some(r) = url.strip_prefix("ws://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("wss://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            return Err(Fail::Usage(format!("{url}: use a WebSocket URL, ws://{r}")));
        } else if let Some(r) = url.strip_prefix("https://") {
            return Err(Fail::Usage(format!(
                "{url}: use a WebSocket URL, wss://{r}"
            )));
        } else {
            return Err(Fail::Usage(format!(
                "--url {url}: expected ws://HOST:PORT or wss://HOST:PORT (optionally followed by a path prefix)"
            )));
        };
        let scheme = if secure { "wss" } else { "ws" };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(Fail::Usage(format!(
                "--url {url}: expected {scheme}://HOST:PORT"
            )));
        }
        if path.contains(['?', '#']) {
            return Err(Fail::Usage(format!(
                "--url {url}: no query or fragment, please (the tool builds the signaling path itself)"
            )));
        }
        // Forgive a URL that already names the signaling endpoint.
        let mut prefix = path.trim_end_matches('/').to_string();
        if let Some(i) = prefix.find("/webrtc/signaling") {
            prefix.truncate(i);
        } else if let Some(i) = prefix.find("/webrtc/client") {
            prefix.truncate(i);
        }
        let default_port = if secure { 443 } else { 80 };
        let (with_port, host) = if let Some(bracketed) = authority.strip_prefix('[') {
            let host = bracketed.split(']').next().unwrap_or_default().to_string();
            if authority.contains("]:") {
                (authority.to_string(), host)
            } else {
                (format!("{authority}:{default_port}"), host)
            }
        } else if let Some((host, _port)) = authority.rsplit_once(':') {
            (authority.to_string(), host.to_string())
        } else {
            (format!("{authority}:{default_port}"), authority.to_string())
        };
        let addrs: Vec<SocketAddr> = with_port
            .to_socket_addrs()
            .map_err(|e| Fail::Fatal(format!("--url {url}: cannot resolve `{authority}`: {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(Fail::Fatal(format!(
                "--url {url}: `{authority}` resolves to no address"
            )));
        }
        Ok(Target {
            secure,
            authority: authority.to_string(),
            host,
            prefix,
            addrs,
            tls: None,
            auth_secret: None,
        })
    }

    /// Applies `--auth-secret` and the TLS trust flags; wss:// needs exactly one of
    /// --ca, --fingerprint, --insecure, and ws:// none.
    fn configure(&mut self, o: &Opts) -> Res<()> {
        self.auth_secret = o.auth_secret.as_ref().map(|s| Arc::from(s.as_bytes()));
        if !self.secure {
            return match o.tls.flag() {
                None => Ok(()),
                Some(flag) => Err(Fail::Usage(format!(
                    "{flag} applies to wss:// URLs only, and --url is {}",
                    self.base()
                ))),
            };
        }
        let name = ServerName::try_from(self.host.clone()).map_err(|_| {
            Fail::Usage(format!(
                "--url {}: `{}` is not a valid TLS server name",
                self.base(),
                self.host
            ))
        })?;
        let config = client_config(&o.tls, &self.base())?;
        self.tls = Some(TlsClient { config, name });
        Ok(())
    }

    /// The signaling URL of one peer, without a token.
    fn url(&self, room: &str, peer: &str) -> String {
        format!(
            "{}://{}{}/webrtc/signaling/{room}/{peer}",
            self.scheme(),
            self.authority,
            self.prefix
        )
    }

    /// The URL requested: with `?token=` (a JWT for this room and peer, valid for an
    /// hour) when --auth-secret is set. Never printed: a token is a credential.
    fn request_url(&self, room: &str, peer: &str) -> Result<String, String> {
        let mut url = self.url(room, peer);
        if let Some(secret) = &self.auth_secret {
            let claims = webrtc_signaling::access::Claims {
                room: Some(room.to_string()),
                peer: Some(peer.to_string()),
                exp: webrtc_signaling::access::now_secs() + 3600,
                ..Default::default()
            };
            let token = webrtc_signaling::access::mint(secret, &claims)
                .map_err(|e| format!("minting a token: {e}"))?;
            // A JWT is base64url and dots: nothing to percent-encode.
            url.push_str("?token=");
            url.push_str(&token);
        }
        Ok(url)
    }

    fn scheme(&self) -> &'static str {
        if self.secure {
            "wss"
        } else {
            "ws"
        }
    }

    fn base(&self) -> String {
        format!("{}://{}{}", self.scheme(), self.authority, self.prefix)
    }
}

// ---------------------------------------------------------------------------
// TLS (wss://): rustls with the ring provider, and the stream type for both schemes

/// How a wss:// server's certificate is trusted (--ca, --fingerprint, --insecure).
#[derive(Clone, Debug, PartialEq, Eq)]
enum TlsTrust {
    Unset,
    /// A PEM file of certificates to trust (a CA, or the server's own certificate).
    Ca(String),
    /// The leaf certificate's SHA-256, 64 upper-case hex digits without colons.
    Fingerprint(String),
    /// Any certificate (handshake signatures are still verified).
    Insecure,
}

impl TlsTrust {
    fn set(&self, new: TlsTrust) -> Res<TlsTrust> {
        match self.flag() {
            None => Ok(new),
            Some(old) if new.flag() == Some(old) => {
                Err(Fail::Usage(format!("{old} is given twice")))
            }
            Some(old) => Err(Fail::Usage(format!(
                "{old} and {} exclude one another: give one of --ca, --fingerprint, --insecure",
                new.flag().unwrap_or_default()
            ))),
        }
    }

    fn flag(&self) -> Option<&'static str> {
        match self {
            TlsTrust::Unset => None,
            TlsTrust::Ca(_) => Some("--ca"),
            TlsTrust::Fingerprint(_) => Some("--fingerprint"),
            TlsTrust::Insecure => Some("--insecure"),
        }
    }
}

#[derive(Clone)]
struct TlsClient {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `AB:CD:...` (any case, colons optional) as 64 upper-case hex digits.
fn normalize_fp(v: &str) -> Res<String> {
    let hex: String = v
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Fail::Usage(format!(
            "--fingerprint {v}: expected a SHA-256 fingerprint, 32 hex bytes such as AB:CD:… (the server logs `TLS certificate SHA-256 fingerprint …` at start)"
        )));
    }
    Ok(hex)
}

/// SHA-256 of a DER certificate as `AB:CD:...`, the format the server logs
/// (`webrtc_signaling::tls::fingerprint`, which exists only with the `tls` feature;
/// this uses rustls' own SHA-256 so the tool builds either way).
fn fingerprint(der: &[u8]) -> String {
    let rustls::SupportedCipherSuite::Tls13(suite) =
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
    else {
        unreachable!("a TLS 1.3 suite")
    };
    let digest = suite.common.hash_provider.hash(der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

fn client_config(trust: &TlsTrust, base: &str) -> Res<Arc<ClientConfig>> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Fail::Fatal(format!("TLS setup: {e}")))?;
    let config = match trust {
        TlsTrust::Unset => {
            return Err(Fail::Usage(format!(
                "--url {base}: wss:// needs to know which server certificate to trust (this tool has no system roots): \
                 --fingerprint AB:CD:… to accept only the certificate with that SHA-256 (a --tls-self-signed server logs it at start), \
                 --ca FILE to trust the CA certificates of a PEM file (the issuer of the server's --tls-cert), \
                 or --insecure to accept any certificate"
            )))
        }
        TlsTrust::Ca(file) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(file)
                .map_err(|e| Fail::Usage(format!("--ca {file}: {e}")))?;
            for cert in certs {
                let cert = cert.map_err(|e| Fail::Usage(format!("--ca {file}: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| Fail::Usage(format!("--ca {file}: {e}")))?;
            }
            if roots.is_empty() {
                return Err(Fail::Usage(format!(
                    "--ca {file}: no CERTIFICATE in this PEM file"
                )));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsTrust::Fingerprint(want) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(LooseVerifier {
                provider,
                fingerprint: Some(want.clone()),
            }))
            .with_no_client_auth(),
        TlsTrust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(LooseVerifier {
                provider,
                fingerprint: None,
            }))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// `--insecure` (any certificate) and `--fingerprint` (only the leaf with that
/// SHA-256): no chain, name or expiry checks, but the handshake signatures are
/// verified, so the server must hold the certificate's private key.
#[derive(Debug)]
struct LooseVerifier {
    provider: Arc<CryptoProvider>,
    fingerprint: Option<String>,
}

impl ServerCertVerifier for LooseVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(want) = &self.fingerprint {
            let got = fingerprint(end_entity);
            if got.replace(':', "") != *want {
                let want = want
                    .as_bytes()
                    .chunks(2)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect::<Vec<_>>()
                    .join(":");
                return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    OtherError(Arc::new(io::Error::other(format!(
                        "the server's certificate has SHA-256 fingerprint {got}, not the --fingerprint {want}"
                    )))),
                )));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The client's byte stream: a plain TCP socket, or rustls over one. Socket options
/// (timeouts, non-blocking mode, the fd for epoll) always act on the TCP socket.
enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => &t.sock,
        }
    }

    fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(d)
    }

    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.tcp().set_nonblocking(nonblocking)
    }
}

impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp().as_raw_fd()
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(t) => t.flush(),
        }
    }
}

/// The TLS handshake over a connected socket, within `timeout` in all (each read
/// and write gets what is left of it); the socket keeps `timeout` as its read and
/// write timeouts afterwards.
fn tls_handshake(
    tls: &TlsClient,
    sock: TcpStream,
    timeout: Duration,
) -> Result<StreamOwned<ClientConnection, TcpStream>, ConnErr> {
    let conn = ClientConnection::new(tls.config.clone(), tls.name.clone())
        .map_err(|e| ConnErr::Tls(e.to_string()))?;
    let mut s = StreamOwned::new(conn, sock);
    let deadline = Instant::now() + timeout;
    while s.conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ConnErr::Tls("no TLS handshake within the timeout".into()));
        }
        let step = s
            .sock
            .set_read_timeout(Some(left))
            .and_then(|()| s.sock.set_write_timeout(Some(left)))
            .and_then(|()| s.conn.complete_io(&mut s.sock));
        match step {
            Ok((0, 0)) if s.conn.is_handshaking() => {
                return Err(ConnErr::Tls(
                    "the server closed the connection during the TLS handshake (not a TLS port? a plain server wants ws://)".into(),
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(ConnErr::Tls(tls_error(&e))),
        }
    }
    let restore = s
        .sock
        .set_read_timeout(Some(timeout))
        .and_then(|()| s.sock.set_write_timeout(Some(timeout)));
    restore.map_err(ConnErr::Tcp)?;
    Ok(s)
}

fn tls_error(e: &io::Error) -> String {
    if is_timeout(e) {
        return "no TLS handshake within the timeout".into();
    }
    if let Some(re) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return match re {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(o))) => {
                o.to_string()
            }
            rustls::Error::InvalidCertificate(_) => format!(
                "{re} (for a --tls-self-signed server use --fingerprint with the fingerprint it logs, or --insecure)"
            ),
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                format!("{re} (not a TLS server? a plain server wants ws://)")
            }
            _ => re.to_string(),
        };
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => format!(
            "{e} (the server closed the connection during the TLS handshake: not a TLS port? a plain server wants ws://)"
        ),
        _ => format!("{e}{}", fd_hint(e)),
    }
}

/// Why a connection did not become a session.
enum ConnErr {
    /// TCP connect failed.
    Tcp(io::Error),
    /// The TLS handshake failed (certificate, timeout, not a TLS server).
    Tls(String),
    /// The HTTP upgrade failed (status, reset, timeout).
    Handshake(String),
    /// The server admitted the socket and then refused the session (PROTOCOL.md §5).
    Refused { close: Option<u16>, code: String },
    /// Something else arrived instead of `existing_peers`.
    Unexpected(String),
}

impl ConnErr {
    /// Short key for grouping counts.
    fn key(&self) -> String {
        match self {
            ConnErr::Tcp(e) => format!("tcp connect: {}", io_kind(e)),
            ConnErr::Tls(m) => format!("tls: {m}"),
            ConnErr::Handshake(m) => format!("handshake: {m}"),
            ConnErr::Refused { close, code } => match close {
                Some(c) => format!("{c} {code}"),
                None => code.clone(),
            },
            ConnErr::Unexpected(m) => format!("unexpected: {m}"),
        }
    }

    /// A sentence for a fatal error, with a hint where one helps.
    fn explain(&self, addr: SocketAddr) -> String {
        match self {
            ConnErr::Tcp(e) if e.kind() == io::ErrorKind::ConnectionRefused => format!(
                "connection refused by {addr}: nothing listens there (is the server running, on this address and port?)"
            ),
            ConnErr::Tcp(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => {
                format!("no answer from {addr} within the connect timeout (firewall, wrong host?)")
            }
            ConnErr::Tcp(e) => format!("cannot connect to {addr}: {e}{}", fd_hint(e)),
            ConnErr::Tls(m) => format!("TLS handshake with {addr} failed: {m}"),
            ConnErr::Handshake(m) => format!("WebSocket upgrade at {addr} failed: {m}"),
            ConnErr::Refused { .. } => {
                format!("the server refused the session: {}{}", self.key(), close_hint(&self.key()))
            }
            ConnErr::Unexpected(m) => format!(
                "expected `existing_peers` as the first message, got {m} (is this a webrtc-signaling server?)"
            ),
        }
    }
}

fn io_kind(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EMFILE) | Some(libc::ENFILE) => "too many open files".into(),
        Some(libc::EADDRNOTAVAIL) => "no free local port".into(),
        _ => format!("{:?}", e.kind()),
    }
}

fn fd_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            " (out of file descriptors: raise the hard RLIMIT_NOFILE, e.g. `ulimit -Hn`, or use fewer connections)"
        }
        Some(libc::EADDRNOTAVAIL) => {
            " (out of local ports: widen net.ipv4.ip_local_port_range or use fewer connections)"
        }
        _ => "",
    }
}

/// A hint for a close code or error code the server sent.
fn close_hint(key: &str) -> &'static str {
    if key.contains("server_full") {
        " (raise the server's --max-connections)"
    } else if key.contains("room_full") {
        " (raise the server's --max-room-peers)"
    } else if key.contains("rate_limited") {
        " (the server limits messages per session: run it with --rate-limit 0 for load tests)"
    } else if key.contains("slow_consumer") {
        " (this tool did not read fast enough: is it CPU-bound? see loadgen CPU)"
    } else if key.contains("unauthorized") {
        " (the server wants room tokens: --auth-secret with the server's own --auth-secret)"
    } else if key.contains("peer_id_taken") {
        " (another client uses the same room and peer ids: run one loadgen at a time per room prefix)"
    } else {
        ""
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

struct Session {
    ws: Ws,
    existing_peers: Vec<String>,
}

/// TCP connect, TLS handshake (wss://), WebSocket upgrade, then wait for
/// `existing_peers`. The socket is left blocking with `timeout` as its read and write
/// timeouts.
fn connect(
    t: &Target,
    room: &str,
    peer: &str,
    cfg: WebSocketConfig,
    timeout: Duration,
) -> Result<Session, ConnErr> {
    let mut last = None;
    let mut stream = None;
    for addr in &t.addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let stream = match stream {
        Some(s) => s,
        None => return Err(ConnErr::Tcp(last.expect("at least one address"))),
    };
    let setup = || -> io::Result<()> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))
    };
    setup().map_err(ConnErr::Tcp)?;
    let stream = match &t.tls {
        None => Conn::Plain(stream),
        Some(tls) => Conn::Tls(Box::new(tls_handshake(tls, stream, timeout)?)),
    };
    let url = t.request_url(room, peer).map_err(ConnErr::Handshake)?;
    let mut ws = match tungstenite::client::client_with_config(url, stream, Some(cfg)) {
        Ok((ws, _response)) => ws,
        Err(HandshakeError::Interrupted(_)) => {
            return Err(ConnErr::Handshake(
                "no HTTP answer within the timeout".into(),
            ))
        }
        Err(HandshakeError::Failure(e)) => return Err(ConnErr::Handshake(handshake_error(e))),
    };
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => {
                let v: Value = serde_json::from_str(text.as_str())
                    .map_err(|_| ConnErr::Unexpected(clip(text.as_str())))?;
                match v["type"].as_str() {
                    Some("existing_peers") => {
                        let peers = v["peers"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|p| p.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default();
                        return Ok(Session {
                            ws,
                            existing_peers: peers,
                        });
                    }
                    Some("error") => {
                        let code = v["code"].as_str().unwrap_or("error").to_string();
                        // The close frame follows (PROTOCOL.md §5); pick its code up.
                        let close = read_close_code(&mut ws);
                        return Err(ConnErr::Refused { close, code });
                    }
                    _ => return Err(ConnErr::Unexpected(clip(text.as_str()))),
                }
            }
            Ok(Message::Close(f)) => {
                return Err(ConnErr::Refused {
                    close: f.as_ref().map(|f| u16::from(f.code)),
                    code: f
                        .map(|f| f.reason.as_str().to_string())
                        .unwrap_or_else(|| "closed".into()),
                })
            }
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {
                return Err(ConnErr::Unexpected(
                    "nothing within the timeout after the upgrade".into(),
                ))
            }
            Err(e) => return Err(ConnErr::Unexpected(format!("a broken connection ({e})"))),
        }
    }
}

fn read_close_code(ws: &mut Ws) -> Option<u16> {
    for _ in 0..16 {
        match ws.read() {
            Ok(Message::Close(f)) => return f.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    None
}

fn handshake_error(e: tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Http(resp) => {
            let body = resp
                .body()
                .as_deref()
                .map(|b| clip(&String::from_utf8_lossy(b)))
                .unwrap_or_default();
            let hint = match resp.status().as_u16() {
                400 if body.contains("tls_required") => " (this port speaks TLS: use wss://)",
                404 => " (wrong path prefix in --url, or not a webrtc-signaling server?)",
                401 | 403 => {
                    " (the server wants a room token: --auth-secret with the server's secret?)"
                }
                400 => " (the server rejected the room or peer id?)",
                503 => " (server overloaded or shutting down)",
                _ => "",
            };
            format!("HTTP {}{hint} {body}", resp.status())
        }
        tungstenite::Error::Io(e) if is_timeout(&e) => "no HTTP answer within the timeout".into(),
        tungstenite::Error::Io(e) => format!(
            "{e}{}{}",
            fd_hint(&e),
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
            ) {
                " (the server closed the connection: over its --max-connections + --max-http-connections, or not a WebSocket server?)"
            } else {
                ""
            }
        ),
        tungstenite::Error::Protocol(p) => format!("{p} (not a WebSocket server?)"),
        other => other.to_string(),
    }
}

fn clip(s: &str) -> String {
    let s = s.trim();
    if s.len() <= 160 {
        s.to_string()
    } else {
        let mut end = 160;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

/// One probe connection so that a wrong URL or a missing server is one clear error,
/// not N of them. Keeps the address that answered first.
fn probe(t: &mut Target, prefix: &str, timeout: Duration) -> Res<()> {
    let mut errors = Vec::new();
    for addr in t.addrs.clone() {
        let one = Target {
            addrs: vec![addr],
            ..t.clone()
        };
        match connect(
            &one,
            &format!("{prefix}-probe"),
            "probe",
            ws_config(4096),
            timeout,
        ) {
            Ok(mut s) => {
                polite_close(&mut s.ws, Duration::from_secs(1));
                t.addrs = vec![addr];
                return Ok(());
            }
            Err(e) => errors.push(e.explain(addr)),
        }
    }
    Err(Fail::Fatal(format!("{}: {}", t.base(), errors.join("; "))))
}

/// Close frame, then wait (bounded) for the server's reply so the server sees a
/// clean close rather than a reset.
fn polite_close(ws: &mut Ws, wait: Duration) {
    let _ = ws.get_mut().set_read_timeout(Some(wait));
    if ws.close(None).is_err() {
        return;
    }
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(_) => continue,
            Err(_) => return,
        }
    }
}

fn ws_config(read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(1 << 20))
}

/// Room ids unique to this run (PROTOCOL.md §2: 1-64 of `A-Za-z0-9._~-`).
fn run_prefix() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() % 100_000_000)
        .unwrap_or(0);
    format!("lg{}-{t}", std::process::id())
}

// ---------------------------------------------------------------------------
// Clocks, percentiles, formatting

fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Nearest-rank percentile of a sorted slice.
fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Summary {
    n: usize,
    p50: u64,
    p90: u64,
    p99: u64,
    max: u64,
    mean: f64,
}

impl Summary {
    /// `samples` in nanoseconds; `true_max` overrides the max when samples were
    /// saturated or thinned.
    fn of(mut samples: Vec<u64>, true_max: Option<u64>) -> Summary {
        samples.sort_unstable();
        let n = samples.len();
        let mean = if n == 0 {
            0.0
        } else {
            samples.iter().map(|&v| v as f64).sum::<f64>() / n as f64
        };
        Summary {
            n,
            p50: pct(&samples, 50.0),
            p90: pct(&samples, 90.0),
            p99: pct(&samples, 99.0),
            max: true_max.unwrap_or_else(|| samples.last().copied().unwrap_or(0)),
            mean,
        }
    }

    fn line(&self) -> String {
        format!(
            "p50 {}  p90 {}  p99 {}  max {}  (mean {}, {} samples)",
            dur(self.p50),
            dur(self.p90),
            dur(self.p99),
            dur(self.max),
            dur(self.mean as u64),
            int(self.n as u64)
        )
    }

    fn json(&self) -> Value {
        json!({
            "samples": self.n,
            "p50": us(self.p50), "p90": us(self.p90), "p99": us(self.p99),
            "max": us(self.max), "mean": us(self.mean as u64),
        })
    }
}

fn us(ns: u64) -> f64 {
    (ns as f64 / 100.0).round() / 10.0
}

fn dur(ns: u64) -> String {
    if ns < 10_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else if ns < 1_000_000 {
        format!("{:.0} µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.2} s", ns as f64 / 1e9)
    }
}

fn int(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// What the tool prints: human lines (unless --json) and the JSON object.
struct Out {
    json_only: bool,
    doc: serde_json::Map<String, Value>,
}

impl Out {
    fn line(&self, s: impl AsRef<str>) {
        if !self.json_only {
            println!("{}", s.as_ref());
        }
    }
    fn progress(&self, s: impl AsRef<str>) {
        if !self.json_only {
            eprintln!("  .. {}", s.as_ref());
        }
    }
    fn set(&mut self, k: &str, v: Value) {
        self.doc.insert(k.to_string(), v);
    }
    fn finish(self) {
        println!("{}", Value::Object(self.doc));
    }
}

// ---------------------------------------------------------------------------
// /proc: the server's memory, threads and CPU; the machine's MemAvailable

#[derive(Clone, Copy, Default)]
struct ProcSnap {
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
    cpu_ticks: u64,
    at: Option<Instant>,
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn proc_snap(pid: &str) -> Option<ProcSnap> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l[name.len()..].split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(ProcSnap {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        threads: field("Threads:"),
        cpu_ticks: utime + stime,
        at: Some(Instant::now()),
    })
}

fn mem_available_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The server (with `--server-pid`) and this process, sampled together.
struct Watch {
    server_pid: Option<u32>,
}

#[derive(Clone, Copy, Default)]
struct Snap {
    server: Option<ProcSnap>,
    own: Option<ProcSnap>,
    mem_available_kib: Option<u64>,
}

impl Watch {
    fn new(server_pid: Option<u32>) -> Res<Watch> {
        if let Some(pid) = server_pid {
            if proc_snap(&pid.to_string()).is_none() {
                return Err(Fail::Usage(format!(
                    "--server-pid {pid}: no such process readable in /proc on this host (the server must run on this machine)"
                )));
            }
        }
        Ok(Watch { server_pid })
    }

    fn snap(&self) -> Snap {
        Snap {
            server: self.server_pid.and_then(|p| proc_snap(&p.to_string())),
            own: proc_snap("self"),
            mem_available_kib: mem_available_kib(),
        }
    }

    fn server_name(&self) -> Option<String> {
        let pid = self.server_pid?;
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Server's open-file soft limit, to warn when N connections will not fit.
    fn server_nofile(&self) -> Option<u64> {
        let pid = self.server_pid?;
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line["Max open files".len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

fn snap_json(s: &ProcSnap) -> Value {
    json!({"rss_kib": s.rss_kib, "hwm_kib": s.hwm_kib, "threads": s.threads})
}

fn snap_line(s: &ProcSnap) -> String {
    format!(
        "RSS {}  HWM {}  threads {}",
        mib(s.rss_kib),
        mib(s.hwm_kib),
        s.threads
    )
}

/// CPU seconds between two snapshots and the share of one core.
fn cpu(a: &ProcSnap, b: &ProcSnap) -> (f64, f64) {
    let secs = b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / clk_tck();
    let wall = match (a.at, b.at) {
        (Some(x), Some(y)) => y.duration_since(x).as_secs_f64(),
        _ => 0.0,
    };
    (secs, if wall > 0.0 { 100.0 * secs / wall } else { 0.0 })
}

/// Prints and records the server's before/after figures and both CPU figures over
/// `[m0, m1]` (the measured interval).
fn report_procs(out: &mut Out, watch: &Watch, before: &Snap, m0: &Snap, m1: &Snap) {
    if let (Some(b), Some(a0), Some(a1)) = (before.server, m0.server, m1.server) {
        let (cpu_s, cpu_pct) = cpu(&a0, &a1);
        out.line(format!(
            "server pid {} ({}):\n  before {}",
            watch.server_pid.unwrap_or(0),
            watch.server_name().unwrap_or_default(),
            snap_line(&b)
        ));
        out.line(format!("  after  {}", snap_line(&a1)));
        out.line(format!(
            "server CPU over the measured interval: {cpu_s:.2} s ({cpu_pct:.0}% of one core)"
        ));
        out.set(
            "server",
            json!({
                "pid": watch.server_pid, "before": snap_json(&b), "after": snap_json(&a1),
                "cpu_s": round3(cpu_s), "cpu_pct": round1(cpu_pct),
            }),
        );
    } else if watch.server_pid.is_some() {
        out.line("server: /proc figures unavailable (did the server exit?)");
    }
    if let (Some(a0), Some(a1)) = (m0.own, m1.own) {
        let (cpu_s, cpu_pct) = cpu(&a0, &a1);
        out.line(format!(
            "loadgen CPU over the measured interval: {cpu_s:.2} s ({cpu_pct:.0}% of one core)"
        ));
        out.set(
            "loadgen",
            json!({"cpu_s": round3(cpu_s), "cpu_pct": round1(cpu_pct), "rss_kib": a1.rss_kib}),
        );
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

// ---------------------------------------------------------------------------
// RLIMIT_NOFILE

/// Raises the soft open-files limit to the hard one; warns when `need` exceeds it.
fn raise_nofile(out: &mut Out, need: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
            out.progress(format!(
                "raised the soft RLIMIT_NOFILE from {before} to the hard limit {}",
                lim.rlim_max
            ));
        } else {
            lim.rlim_cur = before;
        }
    }
    out.set(
        "rlimit_nofile",
        json!({"before": before, "now": lim.rlim_cur, "need": need}),
    );
    if lim.rlim_cur < need {
        eprintln!(
            "loadgen: warning: this run needs about {need} file descriptors but RLIMIT_NOFILE is {} (hard {}): raise the hard limit (`ulimit -Hn`, LimitNOFILE=) or expect `too many open files`",
            lim.rlim_cur, lim.rlim_max
        );
    }
}

// ---------------------------------------------------------------------------
// Entry

fn run(args: Vec<String>) -> Res<bool> {
    let Some(o) = parse_args(args)? else {
        return Ok(true);
    };
    if o.mode == Mode::Pairs {
        let min = CandidateWriter::new(o.payload_bytes).min_size();
        if o.payload_bytes < min {
            return Err(Fail::Usage(format!(
                "--payload-bytes {}: a candidate message with its sequence number and timestamp needs at least {min}",
                o.payload_bytes
            )));
        }
    }
    let mut target = Target::parse(&o.url)?;
    target.configure(&o)?;
    let watch = Watch::new(o.server_pid)?;
    let mut out = Out {
        json_only: o.json,
        doc: serde_json::Map::new(),
    };
    out.set("mode", json!(o.mode.name()));
    out.set("url", json!(target.base()));
    let need = match o.mode {
        Mode::Pairs => 2 * o.pairs as u64 + 32,
        Mode::Idle => o.peers as u64 + 32,
        _ => 64,
    };
    raise_nofile(&mut out, need);
    if let Some(lim) = watch.server_nofile() {
        let conns = match o.mode {
            Mode::Pairs => 2 * o.pairs as u64,
            Mode::Idle => o.peers as u64,
            _ => 2,
        };
        if lim < conns + 16 {
            eprintln!(
                "loadgen: warning: the server's open-files limit is {lim}, below the {conns} connections of this run: raise it (ulimit -n / LimitNOFILE=) before starting the server"
            );
        }
    }
    let prefix = run_prefix();
    now_ns(); // start the clock
    let result = probe(&mut target, &prefix, o.connect_timeout).and_then(|()| {
        out.progress(format!(
            "{} answers at {} (room prefix {prefix})",
            target.base(),
            target.addrs[0]
        ));
        match o.mode {
            Mode::Pairs => pairs(&o, &target, &prefix, &watch, &mut out),
            Mode::Roundtrip => roundtrip(&o, &target, &prefix, &watch, &mut out),
            Mode::Idle => idle(&o, &target, &prefix, &watch, &mut out),
            Mode::Join => join(&o, &target, &prefix, &watch, &mut out),
        }
    });
    match result {
        Ok(ok) => {
            out.finish();
            Ok(ok)
        }
        Err(Fail::Fatal(m)) => {
            // Scripts still get their JSON line, with the reason.
            out.set("ok", json!(false));
            out.set("error", json!(m));
            out.finish();
            Err(Fail::Fatal(m))
        }
        Err(usage) => Err(usage),
    }
}

/// Connects the two peers of one room: `a` first, then `b`; `a` then sees
/// `peer_joined b`.
fn connect_pair(
    t: &Target,
    room: &str,
    cfg: WebSocketConfig,
    timeout: Duration,
) -> Result<(Ws, Ws), String> {
    let addr = t.addrs[0];
    let a = connect(t, room, "a", cfg, timeout).map_err(|e| e.explain(addr))?;
    if !a.existing_peers.is_empty() {
        return Err(format!(
            "room {room} is not empty ({:?}): another client uses it",
            a.existing_peers
        ));
    }
    let b = connect(t, room, "b", cfg, timeout).map_err(|e| e.explain(addr))?;
    if b.existing_peers != ["a"] {
        return Err(format!(
            "room {room}: b expected existing_peers [\"a\"], got {:?}",
            b.existing_peers
        ));
    }
    let mut a = a.ws;
    match next_json(&mut a) {
        Ok(v) if v["type"] == "peer_joined" && v["peer_id"] == "b" => {}
        Ok(v) => return Err(format!("room {room}: a expected peer_joined b, got {v}")),
        Err(e) => return Err(format!("room {room}: a expected peer_joined b: {e}")),
    }
    Ok((a, b.ws))
}

/// Next text message as JSON (pings are answered by tungstenite as it reads).
fn next_json(ws: &mut Ws) -> Result<Value, String> {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                return serde_json::from_str(t.as_str())
                    .map_err(|_| format!("not JSON: {}", clip(t.as_str())))
            }
            Ok(Message::Close(f)) => {
                return Err(format!("closed by the server: {}", close_desc(f)))
            }
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {
                return Err("timed out waiting for a message".into())
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn close_desc(f: Option<tungstenite::protocol::CloseFrame>) -> String {
    match f {
        Some(f) => format!("{} {}", u16::from(f.code), f.reason.as_str()),
        None => "close without a code".into(),
    }
}

// ---------------------------------------------------------------------------
// pairs

const CANDIDATE: &str = "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 10.0.0.2 rport 46154 generation 0 ufrag EsAw";
const SEQ_KEY: &str = "\"seq\":";
const TS_KEY: &str = "\"ts\":";

/// Builds candidate messages of exactly `size` bytes (or the minimum, if larger).
struct CandidateWriter {
    head: String,
    size: usize,
}

impl CandidateWriter {
    fn new(size: usize) -> CandidateWriter {
        let head = format!(
            "{{\"type\":\"ice_candidate\",\"target_peer_id\":\"b\",\"candidate\":{{\"candidate\":\"{CANDIDATE}\",\"sdpMLineIndex\":0,\"sdpMid\":\"0\",\"usernameFragment\":\"EsAw\",{SEQ_KEY}"
        );
        CandidateWriter { head, size }
    }

    /// Smallest message (seq and timestamp of typical width, no padding).
    fn min_size(&self) -> usize {
        CandidateWriter {
            head: self.head.clone(),
            size: 0,
        }
        .build(1_000_000, 1_000_000_000_000)
        .len()
    }

    fn build(&self, seq: u64, ts: u64) -> String {
        let mut s = String::with_capacity(self.size.max(self.head.len() + 64));
        s.push_str(&self.head);
        let _ = write!(s, "{seq},{TS_KEY}{ts}");
        // `,"pad":""}}` is 11 bytes.
        let fixed = s.len() + 11;
        if self.size > fixed {
            s.push_str(",\"pad\":\"");
            s.extend(std::iter::repeat_n('x', self.size - fixed));
            s.push_str("\"}}");
        } else {
            s.push_str("}}");
        }
        s
    }
}

/// Parses the unsigned integer right after `key`; tries `hint` (its offset in the
/// message as sent, which the server keeps) before searching.
fn field_after(text: &str, key: &str, hint: usize) -> Option<u64> {
    let start = if text.get(hint..hint + key.len()) == Some(key) {
        hint + key.len()
    } else {
        text.find(key)? + key.len()
    };
    let digits = text.as_bytes()[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    text[start..start + digits].parse().ok()
}

/// One pair's shared state: the receiver's progress gates the sender's window.
struct PairShared {
    sent: AtomicU64,
    received: AtomicU64,
    sender_done: AtomicBool,
    sender_waiting: AtomicBool,
    receiver_done: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl PairShared {
    fn new() -> PairShared {
        PairShared {
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            sender_done: AtomicBool::new(false),
            sender_waiting: AtomicBool::new(false),
            receiver_done: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// Receiver: one more message arrived.
    fn ack(&self, received: u64) {
        self.received.store(received, Ordering::SeqCst);
        if self.sender_waiting.load(Ordering::SeqCst) {
            let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_one();
        }
    }

    /// Receiver: it has everything, or gave up.
    fn set_receiver_done(&self) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.receiver_done.store(true, Ordering::SeqCst);
        self.wake.notify_all();
    }

    /// Sender: blocks until the receiver is done (it always ends: at the latest at
    /// the drain deadline).
    fn wait_receiver_done(&self) {
        let mut g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        while !self.receiver_done.load(Ordering::SeqCst) {
            g = self
                .wake
                .wait_timeout(g, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Sender: blocks until fewer than `window` of the first `sent` are unreceived, or
    /// `stop`. The SeqCst flag/counter pair plus the re-check under the lock means a
    /// wake-up cannot be lost; the timeout only bounds the reaction to `stop`.
    fn wait_window(&self, sent: u64, window: u64, stop: &AtomicBool) {
        let full = || sent - self.received.load(Ordering::SeqCst) >= window;
        self.sender_waiting.store(true, Ordering::SeqCst);
        if full() {
            let mut g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            while full() && !stop.load(Ordering::SeqCst) {
                g = self
                    .wake
                    .wait_timeout(g, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        self.sender_waiting.store(false, Ordering::SeqCst);
    }
}

struct Global {
    start: Mutex<bool>,
    started: Condvar,
    stop: AtomicBool,
    /// Send timestamps at or after this are measured (u64::MAX: not yet).
    measure_from_ns: AtomicU64,
    /// Receivers give up waiting for stragglers at this time (u64::MAX: not yet).
    drain_until_ns: AtomicU64,
}

impl Global {
    fn open_start(&self) {
        *self.start.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.started.notify_all();
    }

    fn wait_start(&self) {
        let mut go = self.start.lock().unwrap_or_else(|e| e.into_inner());
        while !*go {
            go = self.started.wait(go).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[derive(Default)]
struct SendResult {
    sent: u64,
    /// Error codes and close reasons the sender's own socket received.
    events: BTreeMap<String, u64>,
    failure: Option<String>,
}

#[derive(Default)]
struct RecvResult {
    received: u64,
    order_violations: u64,
    duplicates: u64,
    invalid: u64,
    validated: u64,
    unexpected: BTreeMap<String, u64>,
    samples: Vec<u32>,
    stride: u64,
    max_ns: u64,
    failure: Option<String>,
}

fn sender(
    mut ws: Ws,
    shared: Arc<PairShared>,
    g: Arc<Global>,
    writer: Arc<CandidateWriter>,
    window: u64,
) -> SendResult {
    let mut r = SendResult::default();
    g.wait_start();
    let mut seq = 0u64;
    let mut next_check = Instant::now() + Duration::from_millis(100);
    'outer: while !g.stop.load(Ordering::Relaxed) {
        let received = shared.received.load(Ordering::SeqCst);
        let free = window - (seq - received);
        if free == 0 {
            shared.wait_window(seq, window, &g.stop);
            continue;
        }
        for _ in 0..free {
            let text = writer.build(seq, now_ns());
            if let Err(e) = ws.write(Message::text(text)) {
                r.failure = Some(format!("write: {e}"));
                break 'outer;
            }
            seq += 1;
        }
        if let Err(e) = ws.flush() {
            r.failure = Some(format!("write: {e}"));
            break;
        }
        shared.sent.store(seq, Ordering::SeqCst);
        // Now and then, read what the server sent this peer (errors such as
        // rate_limited, a close, pings to answer) without blocking.
        if Instant::now() >= next_check {
            next_check = Instant::now() + Duration::from_millis(100);
            if let Err(e) = drain_nonblocking(&mut ws, &mut r.events) {
                r.failure = Some(e);
                break;
            }
        }
    }
    shared.sent.store(seq, Ordering::SeqCst);
    shared.sender_done.store(true, Ordering::SeqCst);
    r.sent = seq;
    let _ = drain_nonblocking(&mut ws, &mut r.events);
    // Keep the session until the receiver has everything (or gives up): closing now
    // would put a `peer_left a` in front of the receiver, counted as unexpected.
    shared.wait_receiver_done();
    let _ = ws.get_mut().set_nonblocking(false);
    polite_close(&mut ws, Duration::from_millis(500));
    r
}

/// Reads whatever is already buffered for this socket without blocking; records
/// `error` codes, closes and other messages by kind. Err when the session ended.
fn drain_nonblocking(ws: &mut Ws, events: &mut BTreeMap<String, u64>) -> Result<(), String> {
    ws.get_mut()
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;
    let result = loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                let key = match serde_json::from_str::<Value>(t.as_str()) {
                    Ok(v) if v["type"] == "error" => {
                        format!("error {}", v["code"].as_str().unwrap_or("?"))
                    }
                    Ok(v) => v["type"].as_str().unwrap_or("?").to_string(),
                    Err(_) => "not JSON".into(),
                };
                *events.entry(key).or_default() += 1;
            }
            Ok(Message::Close(f)) => {
                let d = close_desc(f);
                *events.entry(format!("close {d}")).or_default() += 1;
                break Err(format!("the server closed the sender: {d}"));
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => break Ok(()),
            Err(e) => break Err(format!("read: {e}")),
        }
    };
    let _ = ws.get_mut().set_nonblocking(false);
    result
}

fn receiver(
    mut ws: Ws,
    shared: Arc<PairShared>,
    g: Arc<Global>,
    seq_hint: usize,
    sample_cap: usize,
) -> RecvResult {
    let mut r = RecvResult {
        stride: 1,
        samples: Vec::with_capacity(sample_cap.min(1 << 16)),
        ..RecvResult::default()
    };
    let _ = ws
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(100)));
    let mut next = 0u64;
    let mut kept = 0u64;
    let ts_hint_base = seq_hint; // the timestamp follows the sequence number
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                let now = now_ns();
                let text = t.as_str();
                if !text.starts_with("{\"type\":\"ice_candidate\"") {
                    let key = match serde_json::from_str::<Value>(text) {
                        Ok(v) if v["type"] == "error" => {
                            format!("error {}", v["code"].as_str().unwrap_or("?"))
                        }
                        Ok(v) => format!(
                            "{} {}",
                            v["type"].as_str().unwrap_or("?"),
                            v["peer_id"].as_str().unwrap_or("")
                        )
                        .trim_end()
                        .to_string(),
                        Err(_) => "not JSON".into(),
                    };
                    *r.unexpected.entry(key).or_default() += 1;
                    continue;
                }
                let seq = field_after(text, SEQ_KEY, seq_hint);
                let seq_len = seq.map(decimal_len).unwrap_or(0);
                let ts = field_after(text, TS_KEY, ts_hint_base + SEQ_KEY.len() + seq_len + 1);
                let (Some(seq), Some(ts)) = (seq, ts) else {
                    r.invalid += 1;
                    continue;
                };
                // Every 1024th message is checked in full: every field kept, plus
                // from_peer_id.
                if seq % 1024 == 0 {
                    r.validated += 1;
                    if !valid_candidate(text, seq, ts) {
                        r.invalid += 1;
                    }
                }
                if seq == next {
                    next += 1;
                } else if seq > next {
                    r.order_violations += 1;
                    next = seq + 1;
                } else {
                    r.order_violations += 1;
                    r.duplicates += 1;
                }
                r.received += 1;
                shared.ack(r.received);
                if ts >= g.measure_from_ns.load(Ordering::Relaxed) {
                    let lat = now.saturating_sub(ts);
                    r.max_ns = r.max_ns.max(lat);
                    if kept % r.stride == 0 {
                        if r.samples.len() >= sample_cap {
                            // Thin to every other sample, uniformly over time.
                            let mut i = 0;
                            r.samples.retain(|_| {
                                i += 1;
                                i % 2 == 1
                            });
                            r.stride *= 2;
                        }
                        if kept % r.stride == 0 {
                            r.samples.push(lat.min(u32::MAX as u64) as u32);
                        }
                    }
                    kept += 1;
                }
            }
            Ok(Message::Close(f)) => {
                r.failure = Some(format!("closed by the server: {}", close_desc(f)));
                break;
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
            Err(e) => {
                r.failure = Some(format!("read: {e}"));
                break;
            }
        }
        if shared.sender_done.load(Ordering::SeqCst)
            && r.received >= shared.sent.load(Ordering::SeqCst)
        {
            break;
        }
        if now_ns() >= g.drain_until_ns.load(Ordering::SeqCst) {
            break;
        }
    }
    shared.set_receiver_done();
    polite_close(&mut ws, Duration::from_millis(500));
    r
}

fn decimal_len(mut n: u64) -> usize {
    let mut l = 1;
    while n >= 10 {
        n /= 10;
        l += 1;
    }
    l
}

fn valid_candidate(text: &str, seq: u64, ts: u64) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    v["type"] == "ice_candidate"
        && v["from_peer_id"] == "a"
        && v["target_peer_id"] == "b"
        && v["candidate"]["candidate"] == CANDIDATE
        && v["candidate"]["sdpMLineIndex"] == 0
        && v["candidate"]["sdpMid"] == "0"
        && v["candidate"]["usernameFragment"] == "EsAw"
        && v["candidate"]["seq"] == seq
        && v["candidate"]["ts"] == ts
}

fn pairs(o: &Opts, t: &Target, prefix: &str, watch: &Watch, out: &mut Out) -> Res<bool> {
    let writer = Arc::new(CandidateWriter::new(o.payload_bytes));
    let seq_hint = writer.head.len() - SEQ_KEY.len();
    out.line(format!(
        "pairs: {} {} ({} connections), window {}, {}-byte ice_candidate messages, {:.1} s measured after {:.1} s warm-up, at {}",
        o.pairs,
        if o.pairs == 1 { "pair" } else { "pairs" },
        2 * o.pairs,
        o.window,
        o.payload_bytes,
        o.secs,
        o.warmup_secs,
        t.base()
    ));
    let before = watch.snap();
    let cfg = ws_config(64 * 1024);
    let g = Arc::new(Global {
        start: Mutex::new(false),
        started: Condvar::new(),
        stop: AtomicBool::new(false),
        measure_from_ns: AtomicU64::new(u64::MAX),
        drain_until_ns: AtomicU64::new(u64::MAX),
    });
    // Samples kept in memory: at most ~8M in all (4 bytes each), thinned uniformly.
    let sample_cap = (8_000_000 / o.pairs).max(1024);
    let mut shared = Vec::with_capacity(o.pairs);
    let mut senders = Vec::with_capacity(o.pairs);
    let mut receivers = Vec::with_capacity(o.pairs);
    out.progress(format!("connecting {} pairs", o.pairs));
    let c0 = Instant::now();
    for i in 0..o.pairs {
        let room = format!("{prefix}-p{i}");
        let (a, b) = match connect_pair(t, &room, cfg, o.connect_timeout) {
            Ok(ab) => ab,
            Err(e) => {
                g.stop.store(true, Ordering::SeqCst);
                g.open_start();
                g.drain_until_ns.store(0, Ordering::SeqCst);
                return Err(Fail::Fatal(format!("pair {i} of {}: {e}", o.pairs)));
            }
        };
        let s = Arc::new(PairShared::new());
        shared.push(s.clone());
        let (gs, ws_writer) = (g.clone(), writer.clone());
        let s2 = s.clone();
        let window = o.window;
        senders.push(
            thread::Builder::new()
                .name(format!("send-{i}"))
                .stack_size(256 * 1024)
                .spawn(move || sender(a, s2, gs, ws_writer, window))
                .map_err(|e| format!("spawning a thread: {e}"))?,
        );
        let gr = g.clone();
        receivers.push(
            thread::Builder::new()
                .name(format!("recv-{i}"))
                .stack_size(256 * 1024)
                .spawn(move || receiver(b, s, gr, seq_hint, sample_cap))
                .map_err(|e| format!("spawning a thread: {e}"))?,
        );
    }
    let connect_secs = c0.elapsed().as_secs_f64();
    out.progress(format!(
        "connected in {connect_secs:.2} s; warming up for {:.1} s",
        o.warmup_secs
    ));
    g.open_start();
    thread::sleep(Duration::from_secs_f64(o.warmup_secs));
    let total_received = || -> u64 {
        shared
            .iter()
            .map(|s| s.received.load(Ordering::SeqCst))
            .sum()
    };
    let total_sent = || -> u64 { shared.iter().map(|s| s.sent.load(Ordering::SeqCst)).sum() };
    g.measure_from_ns.store(now_ns(), Ordering::SeqCst);
    let m0 = watch.snap();
    let (r0, s0, t0) = (total_received(), total_sent(), Instant::now());
    out.progress(format!("measuring for {:.1} s", o.secs));
    thread::sleep(Duration::from_secs_f64(o.secs));
    let (r1, s1, elapsed) = (total_received(), total_sent(), t0.elapsed());
    let m1 = watch.snap();
    g.stop.store(true, Ordering::SeqCst);
    g.drain_until_ns
        .store(now_ns() + (o.drain * 1e9) as u64, Ordering::SeqCst);
    out.progress("stopped; draining");
    let sends: Vec<SendResult> = senders
        .into_iter()
        .map(|h| {
            h.join().unwrap_or_else(|_| SendResult {
                failure: Some("sender thread panicked".into()),
                ..SendResult::default()
            })
        })
        .collect();
    let recvs: Vec<RecvResult> = receivers
        .into_iter()
        .map(|h| {
            h.join().unwrap_or_else(|_| RecvResult {
                failure: Some("receiver thread panicked".into()),
                stride: 1,
                ..RecvResult::default()
            })
        })
        .collect();

    let secs = elapsed.as_secs_f64();
    let relayed = r1 - r0;
    let rate = relayed as f64 / secs;
    let send_rate = (s1 - s0) as f64 / secs;
    // Merge samples at one common stride so every pair weighs what it relayed.
    let stride = recvs.iter().map(|r| r.stride).max().unwrap_or(1);
    let mut samples: Vec<u64> = Vec::new();
    for r in &recvs {
        let step = (stride / r.stride.max(1)) as usize;
        samples.extend(r.samples.iter().step_by(step.max(1)).map(|&v| v as u64));
    }
    let true_max = recvs.iter().map(|r| r.max_ns).max().unwrap_or(0);
    let lat = Summary::of(samples, Some(true_max));
    let sent_total: u64 = sends.iter().map(|s| s.sent).sum();
    let recv_total: u64 = recvs.iter().map(|r| r.received).sum();
    let lost: u64 = sends
        .iter()
        .zip(&recvs)
        .map(|(s, r)| s.sent.saturating_sub(r.received))
        .sum();
    let order: u64 = recvs.iter().map(|r| r.order_violations).sum();
    let dups: u64 = recvs.iter().map(|r| r.duplicates).sum();
    let invalid: u64 = recvs.iter().map(|r| r.invalid).sum();
    let validated: u64 = recvs.iter().map(|r| r.validated).sum();
    let mut events: BTreeMap<String, u64> = BTreeMap::new();
    for s in &sends {
        for (k, v) in &s.events {
            *events.entry(format!("sender got {k}")).or_default() += v;
        }
    }
    for r in &recvs {
        for (k, v) in &r.unexpected {
            *events.entry(format!("receiver got {k}")).or_default() += v;
        }
    }
    let failures: Vec<String> = sends
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.failure.as_ref().map(|f| format!("pair {i} sender: {f}")))
        .chain(recvs.iter().enumerate().filter_map(|(i, r)| {
            r.failure
                .as_ref()
                .map(|f| format!("pair {i} receiver: {f}"))
        }))
        .collect();
    let ok = lost == 0 && order == 0 && invalid == 0 && events.is_empty() && failures.is_empty();

    out.line(format!(
        "relayed: {} msgs in {secs:.2} s = {} msgs/s (sent {} msgs/s)",
        int(relayed),
        int(rate as u64),
        int(send_rate as u64)
    ));
    out.line(format!("latency send->receive: {}", lat.line()));
    out.line(format!(
        "check: sent {}, received {}, lost {lost}, order violations {order} (duplicates {dups}), invalid {invalid} of {} fully validated -> {}",
        int(sent_total),
        int(recv_total),
        int(validated),
        if ok { "OK" } else { "FAILED" }
    ));
    for (k, v) in &events {
        out.line(format!("  {k}: {v}{}", close_hint(k)));
    }
    for f in failures.iter().take(10) {
        out.line(format!("  {f}{}", close_hint(f)));
    }
    if failures.len() > 10 {
        out.line(format!("  ... and {} more", failures.len() - 10));
    }
    report_procs(out, watch, &before, &m0, &m1);
    out.set(
        "params",
        json!({"pairs": o.pairs, "window": o.window, "payload_bytes": o.payload_bytes,
               "secs": o.secs, "warmup_secs": o.warmup_secs}),
    );
    out.set("connect_secs", json!(round3(connect_secs)));
    out.set("measured_secs", json!(round3(secs)));
    out.set("relayed", json!(relayed));
    out.set("msgs_per_sec", json!(rate.round()));
    out.set("sent_per_sec", json!(send_rate.round()));
    out.set("latency_us", lat.json());
    out.set(
        "check",
        json!({"ok": ok, "sent": sent_total, "received": recv_total, "lost": lost,
               "order_violations": order, "duplicates": dups, "invalid": invalid,
               "validated": validated, "events": events, "failures": failures}),
    );
    out.set("ok", json!(ok));
    Ok(ok)
}

// ---------------------------------------------------------------------------
// roundtrip

/// A ~2.4 KB SDP body shaped like a browser's audio+video offer.
fn sdp(setup: &str) -> String {
    let mut s = String::from(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS stream0\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
         a=ice-ufrag:EsAw\r\na=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\na=ice-options:trickle\r\n\
         a=fingerprint:sha-256 DA:7B:57:DC:28:CE:04:4F:31:79:85:C4:31:67:EB:27:58:29:ED:77:2A:0D:24:AE:ED:AD:30:BC:BD:F1:9C:02\r\n",
    );
    let _ = write!(
        s,
        "a=setup:{setup}\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n"
    );
    let lines = [
        "a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n",
        "a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 goog-remb\r\na=rtcp-fb:96 ccm fir\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n",
        "a=ssrc:3735928559 cname:4TOk42mSjXCkVIa6\r\na=ssrc:3735928559 msid:stream0 track0\r\n",
    ];
    let mut i = 0;
    while s.len() < 2400 {
        s.push_str(lines[i % lines.len()]);
        i += 1;
    }
    s
}

fn roundtrip(o: &Opts, t: &Target, prefix: &str, watch: &Watch, out: &mut Out) -> Res<bool> {
    let offer =
        json!({"type":"offer","offer":{"type":"offer","sdp":sdp("actpass")},"target_peer_id":"b"})
            .to_string();
    let answer = json!({"type":"answer","answer":{"type":"answer","sdp":sdp("active")},"target_peer_id":"a"}).to_string();
    out.line(format!(
        "roundtrip: offer ({} B) a->b, answer ({} B) b->a; {} round trips after {} warm-up, at {}",
        offer.len(),
        answer.len(),
        o.iters,
        o.warmup_iters,
        t.base()
    ));
    let before = watch.snap();
    let room = format!("{prefix}-rt");
    let (mut a, mut b) = connect_pair(t, &room, ws_config(64 * 1024), o.connect_timeout)?;
    let mut samples = Vec::with_capacity(o.iters);
    let mut m0 = watch.snap();
    let mut t0 = Instant::now();
    for i in 0..o.warmup_iters + o.iters {
        if i == o.warmup_iters {
            m0 = watch.snap();
            t0 = Instant::now();
        }
        let start = now_ns();
        a.send(Message::text(offer.as_str()))
            .map_err(|e| format!("a: sending the offer: {e}"))?;
        if let Err(e) = expect_relay(&mut b, "offer", i % 100 == 0) {
            // The reason is often on a's socket (e.g. `rate_limited`).
            let mut seen = BTreeMap::new();
            let _ = drain_nonblocking(&mut a, &mut seen);
            let why: Vec<String> = seen
                .keys()
                .map(|k| format!("{k}{}", close_hint(k)))
                .collect();
            return Err(Fail::Fatal(if why.is_empty() {
                format!("round trip {i}: b: {e}")
            } else {
                format!("round trip {i}: b: {e}; a got: {}", why.join(", "))
            }));
        }
        b.send(Message::text(answer.as_str()))
            .map_err(|e| format!("b: sending the answer: {e}"))?;
        expect_relay(&mut a, "answer", i % 100 == 0)
            .map_err(|e| format!("round trip {i}: a: {e}"))?;
        if i >= o.warmup_iters {
            samples.push(now_ns() - start);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let m1 = watch.snap();
    polite_close(&mut a, Duration::from_millis(500));
    polite_close(&mut b, Duration::from_millis(500));
    let n = samples.len();
    let lat = Summary::of(samples, None);
    out.line(format!("round trip a->b->a: {}", lat.line()));
    out.line(format!(
        "{} round trips in {secs:.2} s = {} round trips/s",
        int(n as u64),
        int((n as f64 / secs) as u64)
    ));
    report_procs(out, watch, &before, &m0, &m1);
    out.set(
        "params",
        json!({"iters": o.iters, "warmup": o.warmup_iters,
               "offer_bytes": offer.len(), "answer_bytes": answer.len()}),
    );
    out.set("measured_secs", json!(round3(secs)));
    out.set("round_trip_us", lat.json());
    out.set("ok", json!(true));
    Ok(true)
}

/// Reads until a text message; it must be the relayed `kind` (checked in full when
/// `full`).
fn expect_relay(ws: &mut Ws, kind: &str, full: bool) -> Result<(), String> {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                let text = t.as_str();
                let head = format!("{{\"type\":\"{kind}\"");
                if !text.starts_with(&head) || full {
                    let v: Value = serde_json::from_str(text)
                        .map_err(|_| format!("not JSON: {}", clip(text)))?;
                    if v["type"] == "error" {
                        let code = v["code"].as_str().unwrap_or("?");
                        return Err(format!(
                            "the server answered error {code}{}",
                            close_hint(code)
                        ));
                    }
                    let from = if kind == "offer" { "a" } else { "b" };
                    if v["type"] != kind || v["from_peer_id"] != from || !v[kind]["sdp"].is_string()
                    {
                        return Err(format!("expected a relayed {kind}, got {}", clip(text)));
                    }
                }
                return Ok(());
            }
            Ok(Message::Close(f)) => {
                let d = close_desc(f);
                return Err(format!("closed by the server: {d}{}", close_hint(&d)));
            }
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {
                return Err(format!("no {kind} within the timeout"))
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

// ---------------------------------------------------------------------------
// idle

struct IdlePeer {
    idx: usize,
    ws: Ws,
    alive: bool,
    end: Option<String>,
    peer_left: u32,
}

#[derive(Default)]
struct IdleStats {
    alive: u64,
    pings: u64,
    messages: BTreeMap<String, u64>,
    dropped: BTreeMap<String, u64>,
    poll_error: Option<String>,
    /// Per peer: (index, still connected, `peer_left` messages received).
    peers: Vec<(usize, bool, u32)>,
    /// The sockets still open when the hold ended.
    open: Vec<Ws>,
}

/// One of a few threads that each hold many idle sockets: `epoll(7)` over all of
/// them (blocking, no busy loop, no per-wake scan of every socket), and on readiness
/// read every complete frame, which also makes tungstenite answer the server's pings.
fn idle_poller(rx: crossbeam_channel::Receiver<(usize, Ws)>, stop: Arc<AtomicBool>) -> IdleStats {
    let mut st = IdleStats::default();
    let mut peers: Vec<IdlePeer> = Vec::new();
    // SAFETY: epoll_create1 has no preconditions; the descriptor is closed below.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        st.poll_error = Some(format!("epoll_create1: {}", io::Error::last_os_error()));
        // Still take the sockets so they are counted (as not held).
        while let Ok((idx, ws)) = rx.recv() {
            peers.push(IdlePeer {
                idx,
                ws,
                alive: false,
                end: Some("not polled".into()),
                peer_left: 0,
            });
        }
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut feeding = ep >= 0;
    loop {
        if ep < 0 {
            break;
        }
        while feeding {
            match rx.try_recv() {
                Ok((idx, mut ws)) => {
                    let _ = ws.get_mut().set_nonblocking(true);
                    let mut ev = libc::epoll_event {
                        events: libc::EPOLLIN as u32,
                        u64: peers.len() as u64,
                    };
                    // SAFETY: `ep` and the socket are open descriptors; `ev` is valid.
                    let rc = unsafe {
                        libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, ws.get_ref().as_raw_fd(), &mut ev)
                    };
                    let failed =
                        (rc != 0).then(|| format!("epoll_ctl: {}", io::Error::last_os_error()));
                    let mut p = IdlePeer {
                        idx,
                        ws,
                        alive: failed.is_none(),
                        end: failed,
                        peer_left: 0,
                    };
                    // Whatever is already buffered (by tungstenite, or decrypted by
                    // rustls) would not wake epoll: read it now.
                    if p.alive {
                        service_idle(&mut p, &mut st);
                        if !p.alive {
                            // SAFETY: as above; a null event is allowed for EPOLL_CTL_DEL.
                            unsafe {
                                libc::epoll_ctl(
                                    ep,
                                    libc::EPOLL_CTL_DEL,
                                    p.ws.get_ref().as_raw_fd(),
                                    std::ptr::null_mut(),
                                )
                            };
                        }
                    }
                    peers.push(p);
                }
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => feeding = false,
            }
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        // Short timeout only while sockets are still being handed over.
        let timeout = if feeding { 50 } else { 200 };
        // SAFETY: `events` is a valid buffer of `events.len()` epoll_event.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, timeout) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            st.poll_error = Some(format!("epoll_wait: {e}"));
            break;
        }
        for ev in &events[..n as usize] {
            let Some(p) = peers.get_mut(ev.u64 as usize) else {
                continue;
            };
            if !p.alive {
                continue;
            }
            service_idle(p, &mut st);
            if !p.alive {
                // SAFETY: as above; a null event is allowed for EPOLL_CTL_DEL.
                unsafe {
                    libc::epoll_ctl(
                        ep,
                        libc::EPOLL_CTL_DEL,
                        p.ws.get_ref().as_raw_fd(),
                        std::ptr::null_mut(),
                    )
                };
            }
        }
    }
    if ep >= 0 {
        // SAFETY: `ep` is our epoll descriptor, closed once.
        unsafe { libc::close(ep) };
    }
    for mut p in peers {
        st.peers.push((p.idx, p.alive, p.peer_left));
        if p.alive {
            st.alive += 1;
            // Closed by the caller once every poller has stopped reading, so that no
            // peer sees its partner leave while it is still being counted.
            st.open.push(p.ws);
        } else {
            let reason = p.end.take().unwrap_or_else(|| "closed".into());
            *st.dropped.entry(reason).or_default() += 1;
        }
    }
    st
}

fn service_idle(p: &mut IdlePeer, st: &mut IdleStats) {
    loop {
        match p.ws.read() {
            Ok(Message::Text(t)) => {
                let kind = match serde_json::from_str::<Value>(t.as_str()) {
                    Ok(v) if v["type"] == "error" => {
                        format!("error {}", v["code"].as_str().unwrap_or("?"))
                    }
                    Ok(v) => v["type"].as_str().unwrap_or("?").to_string(),
                    Err(_) => "not JSON".into(),
                };
                if kind == "peer_left" {
                    p.peer_left += 1;
                }
                *st.messages.entry(kind).or_default() += 1;
            }
            Ok(Message::Ping(_)) => st.pings += 1,
            Ok(Message::Close(f)) => {
                p.alive = false;
                p.end = Some(format!("closed by the server: {}", close_desc(f)));
                return;
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => return,
            Err(e) => {
                p.alive = false;
                p.end = Some(format!("connection lost: {e}"));
                return;
            }
        }
    }
}

fn idle(o: &Opts, t: &Target, prefix: &str, watch: &Watch, out: &mut Out) -> Res<bool> {
    out.line(format!(
        "idle: {} peers in rooms of two, held {:.1} s once connected, at {}",
        o.peers,
        o.hold,
        t.base()
    ));
    let before = watch.snap();
    let npollers = o.peers.div_ceil(1000).clamp(1, 4);
    let stop = Arc::new(AtomicBool::new(false));
    let mut txs = Vec::new();
    let mut pollers = Vec::new();
    for i in 0..npollers {
        let (tx, rx) = crossbeam_channel::unbounded();
        txs.push(tx);
        let stop = stop.clone();
        pollers.push(
            thread::Builder::new()
                .name(format!("idle-{i}"))
                .stack_size(256 * 1024)
                .spawn(move || idle_poller(rx, stop))
                .map_err(|e| format!("spawning a thread: {e}"))?,
        );
    }
    // Small client buffers: 10,000 peers at tungstenite's default 128 KiB would be
    // 1.3 GB in this process.
    let cfg = ws_config(4096);
    let mut connected = 0u64;
    let mut failed: BTreeMap<String, u64> = BTreeMap::new();
    let mut consecutive_failures = 0;
    let mut connect_lat = Vec::with_capacity(o.peers);
    let mut gave_up = false;
    out.progress(format!(
        "connecting {} peers ({} poller threads)",
        o.peers, npollers
    ));
    let c0 = Instant::now();
    for i in 0..o.peers {
        let room = format!("{prefix}-i{}", i / 2);
        let peer = if i % 2 == 0 { "a" } else { "b" };
        let s0 = now_ns();
        match connect(t, &room, peer, cfg, o.connect_timeout) {
            Ok(s) => {
                connect_lat.push(now_ns() - s0);
                connected += 1;
                consecutive_failures = 0;
                let _ = txs[i % npollers].send((i, s.ws));
            }
            Err(e) => {
                *failed.entry(e.key()).or_default() += 1;
                consecutive_failures += 1;
                if consecutive_failures >= 50 {
                    gave_up = true;
                    break;
                }
            }
        }
        if !o.json && (i + 1) % 1000 == 0 {
            eprintln!("  .. {} / {} connected", connected, o.peers);
        }
    }
    drop(txs);
    let connect_secs = c0.elapsed().as_secs_f64();
    let held = watch.snap();
    out.progress(format!(
        "{connected} connected in {connect_secs:.2} s; holding for {:.1} s",
        o.hold
    ));
    thread::sleep(Duration::from_secs_f64(o.hold));
    let after = watch.snap();
    stop.store(true, Ordering::SeqCst);
    let mut st = IdleStats::default();
    for p in pollers {
        let s = p.join().unwrap_or_else(|_| IdleStats {
            poll_error: Some("poller thread panicked".into()),
            ..IdleStats::default()
        });
        st.alive += s.alive;
        st.pings += s.pings;
        for (k, v) in s.messages {
            *st.messages.entry(k).or_default() += v;
        }
        for (k, v) in s.dropped {
            *st.dropped.entry(k).or_default() += v;
        }
        if s.poll_error.is_some() {
            st.poll_error = s.poll_error;
        }
        st.peers.extend(s.peers);
        st.open.extend(s.open);
    }
    // A close frame each, no waiting: thousands of closes go out at once, and the
    // server ends those sessions.
    for ws in &mut st.open {
        let _ = ws.close(None);
        let _ = ws.flush();
    }
    st.open.clear();
    // A `peer_left` for a partner this tool still holds is a server-side anomaly
    // (the server ended a session whose client is still connected).
    let mut alive = vec![false; o.peers];
    for &(i, a, _) in &st.peers {
        alive[i] = a;
    }
    let spurious: Vec<usize> = st
        .peers
        .iter()
        .filter(|&&(i, _, left)| left > 0 && alive.get(i ^ 1).copied().unwrap_or(false))
        .map(|&(i, _, _)| i)
        .collect();
    let lat = Summary::of(connect_lat, None);
    let ok = connected == o.peers as u64
        && st.alive == connected
        && st.poll_error.is_none()
        && spurious.is_empty();
    out.line(format!(
        "connected: {} of {} in {connect_secs:.2} s ({} peers/s); connect->existing_peers {}",
        int(connected),
        int(o.peers as u64),
        int((connected as f64 / connect_secs.max(1e-9)) as u64),
        lat.line()
    ));
    for (k, v) in &failed {
        out.line(format!("  not connected: {v} x {k}{}", close_hint(k)));
    }
    if gave_up {
        out.line("  gave up after 50 failures in a row");
    }
    out.line(format!(
        "stayed connected for the {:.1} s hold: {} of {} -> {}",
        o.hold,
        int(st.alive),
        int(connected),
        if ok { "OK" } else { "FAILED" }
    ));
    for (k, v) in &st.dropped {
        out.line(format!("  dropped: {v} x {k}{}", close_hint(k)));
    }
    if let Some(e) = &st.poll_error {
        out.line(format!("  poll(2) failed: {e}"));
    }
    if !spurious.is_empty() {
        out.line(format!(
            "  {} peers got peer_left for a partner this tool still holds open (server-side anomaly), e.g. rooms {}",
            spurious.len(),
            spurious
                .iter()
                .take(5)
                .map(|i| format!("{prefix}-i{}", i / 2))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.line(format!(
        "received while held: {} WebSocket pings (answered), messages {:?}",
        int(st.pings),
        st.messages
    ));
    // Memory: the server's RSS per connected peer, and the machine's MemAvailable
    // drop (which also holds the kernel's socket buffers and this process).
    let mut mem = serde_json::Map::new();
    if let (Some(b), Some(h), Some(a)) = (before.server, held.server, after.server) {
        let per_peer = if connected > 0 {
            h.rss_kib.saturating_sub(b.rss_kib) as f64 / connected as f64
        } else {
            0.0
        };
        let (cpu_s, cpu_pct) = cpu(&h, &a);
        out.line(format!(
            "server pid {} ({}):",
            watch.server_pid.unwrap_or(0),
            watch.server_name().unwrap_or_default()
        ));
        out.line(format!("  before       {}", snap_line(&b)));
        out.line(format!("  connected    {}", snap_line(&h)));
        out.line(format!("  after hold   {}", snap_line(&a)));
        out.line(format!(
            "  RSS per connected peer: {per_peer:.1} KiB; CPU during the hold {cpu_s:.2} s ({cpu_pct:.1}% of one core)"
        ));
        let reused = b.hwm_kib > b.rss_kib + b.rss_kib / 2 + 1024;
        if reused {
            out.line(format!(
                "  note: before this run the server's RSS ({}) was well below its high-water mark ({}): memory from earlier load is kept by its allocator and reused, so the per-peer figure is low; restart the server for a clean one",
                mib(b.rss_kib),
                mib(b.hwm_kib)
            ));
        }
        out.set(
            "server",
            json!({"pid": watch.server_pid, "before": snap_json(&b), "connected": snap_json(&h),
                   "rss_reused_from_earlier_load": reused,
                   "after": snap_json(&a), "rss_per_peer_kib": round1(per_peer),
                   "cpu_s": round3(cpu_s), "cpu_pct": round1(cpu_pct)}),
        );
        if let (Some(m0), Some(m1), Some(o0), Some(o1)) = (
            before.mem_available_kib,
            held.mem_available_kib,
            before.own,
            held.own,
        ) {
            let drop = m0.saturating_sub(m1);
            let own = o1.rss_kib.saturating_sub(o0.rss_kib);
            let server = h.rss_kib.saturating_sub(b.rss_kib);
            let rest = drop.saturating_sub(own + server);
            out.line(format!(
                "  machine MemAvailable dropped {} while connecting: server RSS +{}, loadgen RSS +{}, the rest ({}, {:.1} KiB per peer) is mostly kernel: both ends' sockets and the server's thread stacks and page tables",
                mib(drop),
                mib(server),
                mib(own),
                mib(rest),
                if connected > 0 { rest as f64 / connected as f64 } else { 0.0 }
            ));
            mem.insert("mem_available_drop_kib".into(), json!(drop));
            mem.insert("server_rss_delta_kib".into(), json!(server));
            mem.insert("loadgen_rss_delta_kib".into(), json!(own));
            mem.insert("rest_kib".into(), json!(rest));
        }
    } else if watch.server_pid.is_some() {
        out.line("server: /proc figures unavailable (did the server exit?)");
    }
    if let (Some(o0), Some(o1)) = (held.own, after.own) {
        let (cpu_s, cpu_pct) = cpu(&o0, &o1);
        out.line(format!(
            "loadgen: RSS {}, CPU during the hold {cpu_s:.2} s ({cpu_pct:.1}% of one core)",
            mib(o1.rss_kib)
        ));
        out.set(
            "loadgen",
            json!({"rss_kib": o1.rss_kib, "cpu_s": round3(cpu_s), "cpu_pct": round1(cpu_pct)}),
        );
    }
    out.set("params", json!({"peers": o.peers, "hold_secs": o.hold}));
    out.set("connected", json!(connected));
    out.set("stayed_connected", json!(st.alive));
    out.set("connect_secs", json!(round3(connect_secs)));
    out.set("connect_us", lat.json());
    out.set("not_connected", json!(failed));
    out.set("dropped", json!(st.dropped));
    out.set("spurious_peer_left", json!(spurious.len()));
    out.set("pings_answered", json!(st.pings));
    out.set("messages", json!(st.messages));
    if !mem.is_empty() {
        out.set("memory", Value::Object(mem));
    }
    out.set("ok", json!(ok));
    Ok(ok)
}

// ---------------------------------------------------------------------------
// join

fn join(o: &Opts, t: &Target, prefix: &str, watch: &Watch, out: &mut Out) -> Res<bool> {
    out.line(format!(
        "join: {} sequential joins (after {} warm-up) into a room with one resident peer, at {}",
        o.joins,
        o.warmup_iters,
        t.base()
    ));
    let before = watch.snap();
    let room = format!("{prefix}-join");
    let cfg = ws_config(4096);
    let addr = t.addrs[0];
    let resident =
        connect(t, &room, "resident", cfg, o.connect_timeout).map_err(|e| e.explain(addr))?;
    // The resident reads (peer_joined / peer_left for every joiner, pings) so that
    // its socket never fills.
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let mut rws = resident.ws;
    let reader = thread::Builder::new()
        .name("resident".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let _ = rws
                .get_mut()
                .set_read_timeout(Some(Duration::from_millis(100)));
            let mut seen: BTreeMap<String, u64> = BTreeMap::new();
            let mut end = None;
            while !stop2.load(Ordering::SeqCst) {
                match rws.read() {
                    Ok(Message::Text(t)) => {
                        let kind = serde_json::from_str::<Value>(t.as_str())
                            .ok()
                            .and_then(|v| v["type"].as_str().map(str::to_string))
                            .unwrap_or_else(|| "not JSON".into());
                        *seen.entry(kind).or_default() += 1;
                    }
                    Ok(Message::Close(f)) => {
                        end = Some(close_desc(f));
                        break;
                    }
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
                    Err(e) => {
                        end = Some(e.to_string());
                        break;
                    }
                }
            }
            if end.is_none() {
                polite_close(&mut rws, Duration::from_millis(500));
            }
            (seen, end)
        })
        .map_err(|e| format!("spawning a thread: {e}"))?;
    let mut samples = Vec::with_capacity(o.joins);
    let mut failed: BTreeMap<String, u64> = BTreeMap::new();
    let mut wrong_peers = 0u64;
    let mut m0 = watch.snap();
    let mut t0 = Instant::now();
    let mut consecutive = 0;
    for i in 0..o.warmup_iters + o.joins {
        if i == o.warmup_iters {
            m0 = watch.snap();
            t0 = Instant::now();
        }
        let start = now_ns();
        match connect(t, &room, &format!("j{i}"), cfg, o.connect_timeout) {
            Ok(mut s) => {
                let lat = now_ns() - start;
                consecutive = 0;
                if s.existing_peers != ["resident"] {
                    wrong_peers += 1;
                }
                if i >= o.warmup_iters {
                    samples.push(lat);
                }
                polite_close(&mut s.ws, Duration::from_secs(2));
            }
            Err(e) => {
                if i == 0 {
                    stop.store(true, Ordering::SeqCst);
                    return Err(Fail::Fatal(format!(
                        "the first join failed: {}",
                        e.explain(addr)
                    )));
                }
                *failed.entry(e.key()).or_default() += 1;
                consecutive += 1;
                if consecutive >= 50 {
                    break;
                }
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let m1 = watch.snap();
    // Give the resident a moment to see the last peer_left.
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let (seen, end) = reader
        .join()
        .unwrap_or_else(|_| (BTreeMap::new(), Some("resident thread panicked".into())));
    let n = samples.len() as u64;
    let lat = Summary::of(samples, None);
    let attempts = (o.warmup_iters + o.joins) as u64;
    let joined_seen = seen.get("peer_joined").copied().unwrap_or(0);
    let nfailed: u64 = failed.values().sum();
    let ok = nfailed == 0 && wrong_peers == 0 && end.is_none() && joined_seen == attempts;
    out.line(format!("connect->existing_peers: {}", lat.line()));
    out.line(format!(
        "{} joins in {secs:.2} s = {} joins/s (each followed by a close handshake)",
        int(n),
        int((n as f64 / secs.max(1e-9)) as u64)
    ));
    out.line(format!(
        "check: failed {nfailed}, existing_peers not [\"resident\"] {wrong_peers}, resident saw {:?} of {attempts} joins{} -> {}",
        seen,
        end.as_ref().map(|e| format!(", resident lost: {e}")).unwrap_or_default(),
        if ok { "OK" } else { "FAILED" }
    ));
    for (k, v) in &failed {
        out.line(format!("  failed: {v} x {k}{}", close_hint(k)));
    }
    report_procs(out, watch, &before, &m0, &m1);
    out.set(
        "params",
        json!({"joins": o.joins, "warmup": o.warmup_iters}),
    );
    out.set("measured_secs", json!(round3(secs)));
    out.set("join_us", lat.json());
    out.set(
        "check",
        json!({"ok": ok, "failed": failed, "wrong_existing_peers": wrong_peers,
               "resident_saw": seen, "resident_lost": end}),
    );
    out.set("ok", json!(ok));
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(pct(&v, 50.0), 50);
        assert_eq!(pct(&v, 99.0), 99);
        assert_eq!(pct(&v, 100.0), 100);
        assert_eq!(pct(&[7], 99.0), 7);
        assert_eq!(pct(&[], 50.0), 0);
    }

    #[test]
    fn candidate_size_and_fields() {
        let w = CandidateWriter::new(300);
        let m = w.build(12345, 987654321);
        assert_eq!(m.len(), 300);
        let hint = w.head.len() - SEQ_KEY.len();
        assert_eq!(field_after(&m, SEQ_KEY, hint), Some(12345));
        assert_eq!(
            field_after(&m, TS_KEY, hint + SEQ_KEY.len() + 5 + 1),
            Some(987654321)
        );
        let relayed = format!("{},\"from_peer_id\":\"a\"}}", &m[..m.len() - 1]);
        assert!(valid_candidate(&relayed, 12345, 987654321));
        assert!(w.min_size() < 300);
    }

    #[test]
    fn urls() {
        let t = Target::parse("ws://127.0.0.1:8123").ok().unwrap();
        assert_eq!(t.url("r", "p"), "ws://127.0.0.1:8123/webrtc/signaling/r/p");
        let t = Target::parse("ws://127.0.0.1:8123/sig/webrtc/signaling/x")
            .ok()
            .unwrap();
        assert_eq!(
            t.url("r", "p"),
            "ws://127.0.0.1:8123/sig/webrtc/signaling/r/p"
        );
        let t = Target::parse("wss://localhost:8443/sig").ok().unwrap();
        assert!(t.secure);
        assert_eq!(t.host, "localhost");
        assert_eq!(
            t.url("r", "p"),
            "wss://localhost:8443/sig/webrtc/signaling/r/p"
        );
        let t = Target::parse("wss://[::1]:8443").ok().unwrap();
        assert_eq!(t.host, "::1");
        assert!(ServerName::try_from(t.host.clone()).is_ok());
        assert!(Target::parse("wss://127.0.0.1").is_ok());
        assert!(Target::parse("127.0.0.1:80").is_err());
        assert!(sdp("actpass").len() >= 2400);
    }

    #[test]
    fn tokens_in_the_url() {
        let mut t = Target::parse("ws://127.0.0.1:8123").ok().unwrap();
        t.auth_secret = Some(Arc::from(&b"s3cret-s3cret-s3cret-s3cret-s3cret"[..]));
        let url = t.request_url("room1", "a").unwrap();
        let (path, token) = url.split_once("?token=").unwrap();
        assert_eq!(path, "ws://127.0.0.1:8123/webrtc/signaling/room1/a");
        let v = webrtc_signaling::access::Verifier::new(
            Some(b"s3cret-s3cret-s3cret-s3cret-s3cret"),
            None,
            0,
        )
        .unwrap();
        assert!(v.check_peer(Some(token), "room1", "a").is_ok());
        assert!(v.check_peer(Some(token), "room1", "b").is_err());
    }

    #[test]
    fn fingerprints() {
        let fp = "ab:".repeat(31) + "ab";
        assert_eq!(normalize_fp(&fp).ok().unwrap(), "AB".repeat(32));
        assert_eq!(
            normalize_fp(&"Ab".repeat(32)).ok().unwrap(),
            "AB".repeat(32)
        );
        assert!(normalize_fp("AB:CD").is_err());
        assert!(normalize_fp(&"ZZ".repeat(32)).is_err());
        // The SHA-256 of "abc" (FIPS 180-2), in the server's format.
        assert_eq!(
            fingerprint(b"abc"),
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
        #[cfg(feature = "tls")]
        assert_eq!(
            fingerprint(b"abc"),
            webrtc_signaling::tls::fingerprint(b"abc")
        );
    }

    #[test]
    fn tls_flags() {
        let opts = |args: &[&str]| {
            parse_args(args.iter().map(|s| s.to_string()).collect())
                .ok()
                .flatten()
        };
        assert!(opts(&["pairs", "--insecure", "--ca", "x.pem"]).is_none());
        let o = opts(&["pairs", "--url", "wss://127.0.0.1:1"]).unwrap();
        let mut t = Target::parse(&o.url).ok().unwrap();
        assert!(matches!(t.configure(&o), Err(Fail::Usage(_))));
        let o = opts(&["pairs", "--url", "wss://127.0.0.1:1", "--insecure"]).unwrap();
        assert!(t.configure(&o).is_ok() && t.tls.is_some());
        let o = opts(&["pairs", "--url", "ws://127.0.0.1:1", "--insecure"]).unwrap();
        let mut t = Target::parse(&o.url).ok().unwrap();
        assert!(t.configure(&o).is_err());
    }
}
