//! webrtc-signaling: a room-based WebRTC signaling server, synchronous and threaded.
//!
//! ```no_run
//! let mut config = webrtc_signaling::Config::default();
//! config.port = 0;
//! let server = webrtc_signaling::Server::start(config)?;
//! println!("listening on {}", server.local_addr());
//! server.shutdown();
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Layers, inner to outer: [`protocol`] (the wire contract, no I/O) ← [`core`] (the
//! pure state machines: rooms, one session's rules, admission) ← `driver` (the router
//! thread, connection and session threads, sockets, wake-ups) and `http` (requests,
//! routes, REST answers) ← `server` (listeners, lifecycle). Beside them: [`config`]
//! (plain data), [`access`] (tokens, origins), [`ice`] (TURN credentials), [`query`],
//! [`metrics`]. ARCHITECTURE.md draws the threads and channels.

pub mod access;
pub mod config;
pub mod core;
mod driver;
#[doc(hidden)]
pub mod hooks;
mod http;
pub mod ice;
pub mod jwt;
pub mod logsafe;
pub mod metrics;
pub mod protocol;
pub mod proxy;
pub mod query;
pub mod redis_url;
mod server;
#[cfg(feature = "tls")]
pub mod tls;
mod urls;

/// The pure parts of the HTTP layer, for the fuzz targets in `tests/fuzz` (not a
/// stable API).
#[doc(hidden)]
pub mod http_pure {
    pub use crate::http::{framing, head, route};
}

pub use config::{
    AccessPolicy, ClusterSettings, Config, ConfigError, IceSettings, Limits, Secret, TlsSettings,
};
pub use server::Server;
