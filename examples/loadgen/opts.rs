//! Command line: the `--help` text, the modes and their flags, and the parsed options.

use std::time::Duration;

use crate::tls::{normalize_fp, TlsTrust};
use crate::{Fail, Res};

pub const HELP: &str = "\
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
  soak       N peers in rooms of --room-size, each sending offers to its room-mates
             at --rate for --secs while peers leave and rejoin (--churn-per-sec);
             counts every relay per sender and receiver: lost, duplicated, reordered,
             relays after peer_left; delivery latency; existing_peers consistency.

OPTIONS (every mode):
  --url URL            server base URL [ws://127.0.0.1:8000], ws:// or wss://; the
                       tool appends /webrtc/signaling/{room}/{peer} (a path prefix is
                       kept, e.g. a reverse proxy's /sig). Repeat it, or give a
                       comma-separated list, for several instances of one cluster:
                       peers are spread round-robin over the URLs
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
  --cross              the two peers of each pair on different URLs: pair i's sender
                       on url[i % n], its receiver on url[(i+1) % n] (without it,
                       both on url[i % n])
roundtrip:
  --iters N            measured round trips [10000]
  --warmup N           unmeasured round trips first [500]
  --cross              A on the first URL, B on the second
idle:
  --peers N            idle peers, two per room [1000]
  --hold T             seconds to hold them once all have connected [10]
join:
  --joins N            measured joins [2000]
  --warmup N           unmeasured joins first [100]
soak:
  --peers N            peers, spread round-robin over the URLs [300]
  --room-size N        peers per room (the last room may have fewer) [4]
  --rate R             offers per second sent by each peer, to its room-mates in
                       turn [5]
  --churn-per-sec C    leaves and rejoins per second (one peer at a time closes, then
                       rejoins the same room as the same peer id, on the next URL) [1]
  --secs T             seconds of load [30]
  --drain T            seconds to wait for in-flight relays and room events [5]

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

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pairs,
    Roundtrip,
    Idle,
    Join,
    Soak,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Pairs => "pairs",
            Mode::Roundtrip => "roundtrip",
            Mode::Idle => "idle",
            Mode::Join => "join",
            Mode::Soak => "soak",
        }
    }
    pub fn flags(self) -> &'static [&'static str] {
        match self {
            Mode::Pairs => &[
                "--pairs",
                "--secs",
                "--warmup",
                "--window",
                "--payload-bytes",
                "--drain",
                "--cross",
            ],
            Mode::Roundtrip => &["--iters", "--warmup", "--cross"],
            Mode::Idle => &["--peers", "--hold"],
            Mode::Join => &["--joins", "--warmup"],
            Mode::Soak => &[
                "--peers",
                "--room-size",
                "--rate",
                "--churn-per-sec",
                "--secs",
                "--drain",
            ],
        }
    }
}

pub struct Opts {
    pub mode: Mode,
    /// One or more base URLs (several: instances of one cluster).
    pub urls: Vec<String>,
    pub auth_secret: Option<String>,
    pub tls: TlsTrust,
    pub server_pid: Option<u32>,
    pub json: bool,
    pub connect_timeout: Duration,
    pub pairs: usize,
    pub secs: f64,
    pub warmup_secs: f64,
    pub window: u64,
    pub payload_bytes: usize,
    pub drain: f64,
    pub iters: usize,
    pub warmup_iters: usize,
    pub peers: usize,
    pub hold: f64,
    pub joins: usize,
    pub cross: bool,
    pub room_size: usize,
    pub rate: f64,
    pub churn_per_sec: f64,
}

pub fn parse_args(args: Vec<String>) -> Res<Option<Opts>> {
    if args.is_empty() {
        return Err(Fail::Usage(
            "missing mode: pairs, roundtrip, idle, join or soak".into(),
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
        "soak" => Mode::Soak,
        other => {
            return Err(Fail::Usage(format!(
                "unknown mode `{other}`: expected pairs, roundtrip, idle, join or soak"
            )))
        }
    };
    let mut o = Opts {
        mode,
        urls: Vec::new(),
        auth_secret: None,
        tls: TlsTrust::Unset,
        server_pid: None,
        json: false,
        connect_timeout: Duration::from_secs(5),
        pairs: 50,
        secs: if mode == Mode::Soak { 30.0 } else { 10.0 },
        warmup_secs: 1.0,
        window: 64,
        payload_bytes: 300,
        drain: 5.0,
        iters: 10_000,
        warmup_iters: if mode == Mode::Join { 100 } else { 500 },
        peers: if mode == Mode::Soak { 300 } else { 1000 },
        hold: 10.0,
        joins: 2000,
        cross: false,
        room_size: 4,
        rate: 5.0,
        churn_per_sec: 1.0,
    };
    let mut it = args.into_iter().skip(1);
    while let Some(arg) = it.next() {
        if arg == "--json" {
            o.json = true;
            continue;
        }
        if arg == "--cross" && mode.flags().contains(&"--cross") {
            o.cross = true;
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
            "--url" => {
                // Repeatable and comma-separated alike: both spellings are common in
                // scripts that list a cluster's instances.
                for url in value.split(',').map(str::trim) {
                    if url.is_empty() {
                        return Err(Fail::Usage(format!("--url {value}: an empty URL")));
                    }
                    o.urls.push(url.to_string());
                }
            }
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
            "--cross" => return Err(Fail::Usage("--cross takes no value".into())),
            "--room-size" => o.room_size = num(&flag, &value, 2, 10_000)? as usize,
            "--rate" => o.rate = rate(&flag, &value, 0.01, 10_000.0)?,
            "--churn-per-sec" => o.churn_per_sec = rate(&flag, &value, 0.0, 10_000.0)?,
            _ => unreachable!("flag list and match disagree: {flag}"),
        }
    }
    if o.urls.is_empty() {
        o.urls.push("ws://127.0.0.1:8000".into());
    }
    Ok(Some(o))
}

pub fn num(flag: &str, v: &str, min: u64, max: u64) -> Res<u64> {
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

pub fn rate(flag: &str, v: &str, min: f64, max: f64) -> Res<f64> {
    let r: f64 = v
        .parse()
        .map_err(|_| Fail::Usage(format!("{flag} wants a number per second, not `{v}`")))?;
    if !(min..=max).contains(&r) {
        return Err(Fail::Usage(format!(
            "{flag} must be in {min}..={max} per second, not {v}"
        )));
    }
    Ok(r)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> Res<Option<Opts>> {
        parse_args(args.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn several_urls_and_cross() {
        let o = opts(&[
            "soak",
            "--url",
            "ws://127.0.0.1:1, ws://127.0.0.1:2",
            "--url=ws://[::1]:3",
        ])
        .ok()
        .flatten()
        .unwrap();
        assert_eq!(
            o.urls,
            ["ws://127.0.0.1:1", "ws://127.0.0.1:2", "ws://[::1]:3"]
        );
        assert_eq!((o.peers, o.secs, o.room_size), (300, 30.0, 4));
        let o = opts(&["idle"]).ok().flatten().unwrap();
        assert_eq!((o.urls.len(), o.peers), (1, 1000));
        assert!(opts(&["pairs", "--cross"]).ok().flatten().unwrap().cross);
        assert!(
            opts(&["roundtrip", "--cross"])
                .ok()
                .flatten()
                .unwrap()
                .cross
        );
        assert!(matches!(opts(&["join", "--cross"]), Err(Fail::Usage(_))));
        assert!(matches!(opts(&["pairs", "--cross=1"]), Err(Fail::Usage(_))));
        assert!(matches!(
            opts(&["soak", "--url", "ws://127.0.0.1:1,"]),
            Err(Fail::Usage(_))
        ));
        assert!(matches!(
            opts(&["soak", "--room-size", "1"]),
            Err(Fail::Usage(_))
        ));
        assert!(matches!(
            opts(&["soak", "--churn-per-sec", "x"]),
            Err(Fail::Usage(_))
        ));
        assert_eq!(
            opts(&["soak", "--churn-per-sec", "0"])
                .ok()
                .flatten()
                .unwrap()
                .churn_per_sec,
            0.0
        );
    }
}
