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
//! Modules, inner to outer: [`protocol`] (wire types, no I/O) ← [`router`] (room state
//! machine, no I/O) ← `session` (socket threads) ← `http` (requests, REST) ← `server`
//! (listener, lifecycle), with `transport` (plain or TLS bytes under both) and
//! [`access`] (room tokens, Origin allow-list; no I/O); beside them [`ice`] (the ICE server list and TURN REST
//! credentials, no I/O), [`metrics`] (the `/metrics` series, atomics only on the relay
//! path) and [`config`]. See ARCHITECTURE.md for the threads and channels.

pub mod access;
pub mod config;
mod http;
pub mod ice;
pub mod logging;
pub mod metrics;
pub mod protocol;
pub mod router;
mod server;
mod session;
#[cfg(feature = "tls")]
pub mod tls;
mod transport;
mod wake;

pub use config::{Cli, Config, ConfigError, Limits, LogFormat, Secret, TokenRequest};
pub use server::Server;
