//! The `webrtc-signaling` binary: flags, logging, `Server::start`, signals, and the
//! exit status.

mod cli;

use std::process::ExitCode;

use log::{error, info};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use webrtc_signaling::Server;

use cli::Cli;

/// Exit status when the server cannot go on (sysexits' EX_SOFTWARE): a supervisor
/// such as systemd's `Restart=on-failure` starts it again.
const EXIT_FAILED: u8 = 70;

/// glibc's tunable for the blocks each thread keeps for itself (its tcache).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TCACHE_TUNABLE: &str = "glibc.malloc.tcache_count";

/// Starts the server again (same process, same arguments) with glibc's per-thread
/// cache of freed blocks turned off, unless `GLIBC_TUNABLES` already says how many
/// blocks that cache keeps (the operator's choice wins; it also ends the loop).
///
/// Why: with a thread per connection, every session thread keeps up to 7 freed
/// blocks of each small size for itself, for hours: the HTTP phase's request head
/// and buffers, messages it delivered. Measured at 10,000 idle peers that was 4.4 KiB
/// of 19 KiB per peer, and no measurable change in relay throughput without it (the
/// shared arenas serve the allocations instead; 50-pair throughput runs with and
/// without were within the machine's noise). glibc reads tunables only at start-up
/// and `mallopt` has no such setting, hence the exec. Nothing has been opened or
/// started yet; descriptors passed by systemd (socket activation) stay open across
/// exec, and the pid stays the same.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn without_thread_caches() {
    use std::os::unix::process::CommandExt;
    // SAFETY: getauxval has no preconditions.
    if unsafe { libc::getauxval(libc::AT_SECURE) } != 0 {
        // A privileged start: glibc would drop the tunable, and we would loop.
        return;
    }
    let tunables = match std::env::var("GLIBC_TUNABLES") {
        Ok(t) if t.contains(TCACHE_TUNABLE) => return,
        Ok(t) if !t.is_empty() => format!("{t}:{TCACHE_TUNABLE}=0"),
        Ok(_) | Err(std::env::VarError::NotPresent) => format!("{TCACHE_TUNABLE}=0"),
        Err(std::env::VarError::NotUnicode(_)) => return,
    };
    let mut argv = std::env::args_os();
    let Some(arg0) = argv.next() else {
        return;
    };
    let error = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(argv)
        .env("GLIBC_TUNABLES", tunables)
        .exec();
    // Still here: the exec failed, and the server runs with the caches.
    eprintln!("webrtc-signaling: cannot restart without glibc's thread caches: {error}");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn without_thread_caches() {}

fn main() -> ExitCode {
    // Kept for SIGHUP, which parses them again (re-reading the files they name).
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let run = match cli::Cli::parse(args.iter().cloned(), env.iter().cloned()) {
        Ok(Cli::Run(run)) => {
            without_thread_caches();
            *run
        }
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
    // supervisor that gives up early) must still end in a clean exit 0, and a SIGHUP
    // (a reload) must not kill the process.
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("webrtc-signaling: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = cli::logging::init(run.log_format, run.log_level.clone());
    info!(
        "webrtc-signaling {} starting (pid {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );
    // systemd socket activation: listening sockets handed over as descriptors 3, 4.
    let inherited = match cli::systemd::listeners() {
        Ok(l) => l,
        Err(e) => {
            error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !inherited.is_empty() {
        info!(
            "systemd socket activation: {} listening socket(s) passed in; --bind/--port \
             (and --tls-port) are not bound here",
            inherited.len()
        );
    }
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
    let server = match Server::start_with_listeners(config, inherited) {
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
    if let Err(e) = cli::systemd::notify("READY=1\nSTATUS=serving") {
        log::warn!("cannot tell systemd that the server is ready: {e}");
    }
    for sig in signals.forever() {
        if sig == SIGHUP {
            cli::reload::on_sighup(&server, &args, &env);
            continue;
        }
        info!("signal {sig}: shutting down");
        break;
    }
    let _ = cli::systemd::notify("STOPPING=1");
    let failed = server.failed();
    server.shutdown();
    if failed {
        error!("exiting after a router failure");
        return ExitCode::from(EXIT_FAILED);
    }
    ExitCode::SUCCESS
}
