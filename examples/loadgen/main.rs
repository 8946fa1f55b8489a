//! `loadgen`: a load and latency tool to run against a webrtc-signaling deployment;
//! this file owns the entry point: exit status, option checks that span modes, the
//! probe of every URL, and dispatch to the mode modules.
//!
//! `cargo run --release --example loadgen -- <pairs|roundtrip|idle|join|soak> [options]`;
//! `--help` documents every mode and flag, `docs/loadgen.md` every figure.
//!
//! Synchronous threads only (no async runtime): tungstenite clients on blocking
//! sockets, a condition variable for the pairs' in-flight window, and `epoll(7)` over
//! many non-blocking sockets for the idle and soak peers. `wss://` runs the same clients over
//! a rustls connection (ring provider); `--auth-secret` mints a room token per peer.

mod candidate;
mod idle;
mod join;
mod net;
mod opts;
mod pairs;
mod poller;
mod procs;
mod report;
mod roundtrip;
mod soak;
mod soak_peer;
mod soak_report;
mod soak_worker;

mod target;
mod tls;

use std::process::ExitCode;

use serde_json::json;

use candidate::CandidateWriter;
use net::{probe, run_prefix};
use opts::{parse_args, Mode, Opts};
use procs::{raise_nofile, Watch};
use report::{now_ns, Out};
use target::{bases, Target};

/// How a run that could not finish ends: a usage error exits 2 with a pointer to
/// `--help`; a fatal one exits 1, after the JSON line that carries its reason.
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

/// Ran, but a check failed: distinct from 1 so that scripts can tell "the server
/// misbehaved" from "the tool could not run".
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
    let mut targets = Vec::with_capacity(o.urls.len());
    for url in &o.urls {
        let mut target = Target::parse(url)?;
        target.configure(&o)?;
        targets.push(target);
    }
    let watch = Watch::new(o.server_pid)?;
    let mut out = Out {
        json_only: o.json,
        doc: serde_json::Map::new(),
    };
    out.set("mode", json!(o.mode.name()));
    // One URL keeps the JSON of a single-server run as it always was.
    out.set("url", json!(bases(&targets).join(",")));
    if targets.len() > 1 {
        out.set("urls", json!(bases(&targets)));
    }
    let need = match o.mode {
        Mode::Pairs => 2 * o.pairs as u64 + 32,
        Mode::Idle | Mode::Soak => o.peers as u64 + 32,
        _ => 64,
    };
    raise_nofile(&mut out, need);
    if let Some(lim) = watch.server_nofile() {
        let conns = match o.mode {
            Mode::Pairs => 2 * o.pairs as u64,
            Mode::Idle | Mode::Soak => o.peers as u64,
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
    let result = probe_all(&mut targets, &prefix, &o, &mut out).and_then(|()| {
        let t = &targets;
        match o.mode {
            Mode::Pairs => pairs::run(&o, t, &prefix, &watch, &mut out),
            Mode::Roundtrip => roundtrip::run(&o, t, &prefix, &watch, &mut out),
            Mode::Idle => idle::run(&o, t, &prefix, &watch, &mut out),
            Mode::Join => join::run(&o, t, &prefix, &watch, &mut out),
            Mode::Soak => soak::run(&o, t, &prefix, &watch, &mut out),
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

/// Every URL is probed before any load, so that one instance missing from a
/// cluster is one clear error rather than a share of failed peers.
fn probe_all(targets: &mut [Target], prefix: &str, o: &Opts, out: &mut Out) -> Res<()> {
    for (i, target) in targets.iter_mut().enumerate() {
        // Distinct probe rooms: an instance may not have heard of the previous
        // probe's leave yet.
        let room = match i {
            0 => prefix.to_string(),
            _ => format!("{prefix}-u{i}"),
        };
        probe(target, &room, o.connect_timeout)?;
        out.progress(format!(
            "{} answers at {} (room prefix {prefix})",
            target.base(),
            target.addrs[0]
        ));
    }
    Ok(())
}
