//! The `webrtc-signaling` binary: flags, logging, `Server::start`, signals, and the
//! exit status.

mod cli;

use std::process::ExitCode;

use log::error;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use webrtc_signaling::Server;

use cli::Cli;

/// Exit status when the server cannot go on (sysexits' EX_SOFTWARE): a supervisor
/// such as systemd's `Restart=on-failure` starts it again.
const EXIT_FAILED: u8 = 70;

fn main() -> ExitCode {
    let run = match cli::Cli::parse(std::env::args().skip(1), std::env::vars()) {
        Ok(Cli::Run(run)) => *run,
        Ok(Cli::Help) => {
            print!("{}", cli::help());
            return ExitCode::SUCCESS;
        }
        Ok(Cli::TokenHelp) => {
            print!("{}", cli::token::TOKEN_HELP);
            return ExitCode::SUCCESS;
        }
        Ok(Cli::Token(req)) => {
            return match webrtc_signaling::access::mint(req.secret.expose().as_bytes(), &req.claims)
            {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("webrtc-signaling: cannot sign the token: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Ok(Cli::Check(run)) => {
            println!("{run:#?}");
            return ExitCode::SUCCESS;
        }
        Ok(Cli::Version) => {
            println!("webrtc-signaling {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("webrtc-signaling: {e}");
            return ExitCode::from(2);
        }
    };
    // First thing after the flags: a SIGTERM that arrives while we start up (a
    // supervisor that gives up early) must still end in a clean exit 0.
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("webrtc-signaling: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = cli::logging::init(run.log_format, run.log_level.clone());
    #[allow(unused_mut)]
    let mut config = run.config;
    // Debug builds only: lets the tests prove that a router failure ends the process
    // with EXIT_FAILED. Release builds have no such switch.
    #[cfg(debug_assertions)]
    if let Ok(room) = std::env::var("WEBRTC_SIGNALING_DEBUG_PANIC_ROOM") {
        config.hooks.router_join = Some(std::sync::Arc::new(move |r| {
            if r.as_str() == room {
                panic!("WEBRTC_SIGNALING_DEBUG_PANIC_ROOM: router failure on purpose");
            }
        }));
    }
    if config.access.admin && !config.access.auth_enabled() {
        log::warn!(
            "--admin: DELETE /webrtc/rooms/... can end sessions, with no token: \
             keep this port away from untrusted clients"
        );
    }
    if config.ice.turn_secret.is_some() && !config.access.auth_enabled() {
        log::warn!(
            "--turn-secret without --auth-secret/--auth-public-key: anyone who can reach \
             /webrtc/ice-servers gets TURN relay credentials valid for {} s; turn auth on, \
             or keep this port away from untrusted clients",
            config.ice.turn_ttl.as_secs()
        );
    }
    if config.ice.turn_secret.is_some() {
        log::info!(
            "TURN credentials: time-limited, {} s, minted per request",
            config.ice.turn_ttl.as_secs()
        );
    }
    let server = match Server::start(config) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A failed router ends the wait for signals: the process must not live on as a
    // zombie that accepts connections it cannot serve.
    let failure = server.failure();
    let signals_handle = signals.handle();
    let watcher = std::thread::Builder::new()
        .name("supervisor".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            failure.wait();
            signals_handle.close();
        });
    if let Err(e) = watcher {
        error!("cannot start the supervisor thread: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(sig) = signals.forever().next() {
        log::info!("signal {sig}: shutting down");
    }
    let failed = server.failed();
    server.shutdown();
    if failed {
        error!("exiting after a router failure");
        return ExitCode::from(EXIT_FAILED);
    }
    ExitCode::SUCCESS
}
