//! The `webrtc-signaling` binary: flags, logging, `Server::start`, and signals.

use std::process::ExitCode;

use log::{error, LevelFilter};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use webrtc_signaling::{Cli, Server};

fn main() -> ExitCode {
    let config = match Cli::parse(std::env::args().skip(1), std::env::vars()) {
        Ok(Cli::Run(config)) => *config,
        Ok(Cli::Help) => {
            print!("{}", webrtc_signaling::config::help());
            return ExitCode::SUCCESS;
        }
        Ok(Cli::TokenHelp) => {
            print!("{}", webrtc_signaling::config::TOKEN_HELP);
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
    let level = config.log_level.parse().unwrap_or(LevelFilter::Info);
    let _ = webrtc_signaling::logging::init(config.log_format, level);
    if config.limits.admin && !config.auth_enabled() {
        log::warn!(
            "--admin: DELETE /webrtc/rooms/... can end sessions, with no token: \
             keep this port away from untrusted clients"
        );
    }
    if config.limits.turn_secret.is_some() {
        log::info!(
            "TURN credentials: time-limited, {} s, minted per request",
            config.limits.turn_ttl.as_secs()
        );
    }
    let server = match Server::start(config) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(sig) = signals.forever().next() {
        log::info!("signal {sig}: shutting down");
    }
    server.shutdown();
    ExitCode::SUCCESS
}
