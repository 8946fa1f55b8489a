//! Built without the `cluster` feature: no Redis bridge can exist (`Config::validate`
//! refuses `--redis` first); these are the types the server names.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use super::router::RouterHandle;
use crate::core::cluster::{ClusterOut, InstanceId};
use crate::metrics::Metrics;

#[allow(dead_code)] // the server fills it in; nothing reads it in this build
pub struct BridgeConfig {
    pub url: String,
    pub me: InstanceId,
    pub ttl: Duration,
    pub max_room_peers: usize,
}

pub struct Bridge {
    pub up: Arc<AtomicBool>,
}

impl Bridge {
    pub fn stop(&mut self, _wait: Duration) {}
}

pub fn spawn(
    _cfg: BridgeConfig,
    _router: RouterHandle,
    _outputs: Receiver<ClusterOut>,
    _metrics: Arc<Metrics>,
) -> std::io::Result<Bridge> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "this build has no --redis support (cargo feature `cluster`)",
    ))
}
