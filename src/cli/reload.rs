//! SIGHUP: the flags and environment the server started with are parsed again, which
//! reads `--tls-cert`/`--tls-key`, `--auth-secret-file`, `--auth-public-key` and
//! `--turn-secret-file` again, and the running server takes the new TLS configuration
//! and keys ([`webrtc_signaling::Server::reload`]). Sessions stay up. Anything that
//! fails leaves the running settings as they were.

use log::{error, info};
use webrtc_signaling::Server;

use super::{systemd, Cli};

/// Reloads and logs the outcome; tells systemd (`RELOADING=1`, then `READY=1`).
pub fn on_sighup(server: &Server, args: &[String], env: &[(String, String)]) {
    let _ = systemd::notify(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}",
        systemd::monotonic_usec()
    ));
    match reload(server, args, env) {
        Ok(done) if done.is_empty() => info!("SIGHUP: nothing to reload"),
        Ok(done) => info!("SIGHUP: reloaded {}", done.join(", ")),
        Err(e) => error!("SIGHUP: reload failed, the running settings stay: {e}"),
    }
    let _ = systemd::notify("READY=1");
}

fn reload(
    server: &Server,
    args: &[String],
    env: &[(String, String)],
) -> Result<Vec<String>, String> {
    match Cli::parse(args.iter().cloned(), env.iter().cloned()) {
        Ok(Cli::Run(run)) => server.reload(&run.config).map_err(|e| e.to_string()),
        Ok(_) => Err("the command line no longer runs the server".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}
