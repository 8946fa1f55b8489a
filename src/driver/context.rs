//! What every connection thread shares: settings, the router's handle, counters and
//! the shutdown switch. No room state: that lives in the router thread alone.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::router::RouterHandle;
use super::slots::Slots;
use super::swap::Swap;
use crate::access::Access;
use crate::config::Limits;
use crate::core::router::{Command, Reply};
use crate::hooks::Hooks;
use crate::http::{Backend, Health};
use crate::ice::Ice;
use crate::metrics::Metrics;
use crate::proxy::TrustedProxies;

/// How long a REST request waits for the router before answering 503.
const ROUTER_WAIT: Duration = Duration::from_secs(2);

pub struct Context {
    pub limits: Limits,
    /// Replaced by a reload (new token keys); read once per request.
    pub access: Swap<Arc<Access>>,
    /// Replaced by a reload (a new TURN secret); read once per request.
    pub ice: Swap<Arc<Ice>>,
    /// `--trusted-proxy`: whose forwarding headers name the client.
    pub proxies: TrustedProxies,
    pub router: RouterHandle,
    /// The `/metrics` series; the router holds the same instance.
    pub metrics: Arc<Metrics>,
    pub hooks: Hooks,
    next_session: AtomicU64,
    /// HTTP and session slots of the open connections.
    pub slots: Arc<Slots>,
    /// Connection threads parked waiting for their next connection.
    pub spare_threads: AtomicUsize,
    sessions: Mutex<usize>,
    sessions_zero: Condvar,
    stopping: AtomicBool,
    /// With `--redis`: whether the cluster is usable.
    pub cluster_up: Option<Arc<AtomicBool>>,
}

impl Context {
    pub fn new(
        limits: Limits,
        access: Access,
        ice: Ice,
        router: RouterHandle,
        metrics: Arc<Metrics>,
        hooks: Hooks,
    ) -> Self {
        Context {
            slots: Slots::new(&limits),
            limits,
            access: Swap::new(Arc::new(access)),
            ice: Swap::new(Arc::new(ice)),
            proxies: TrustedProxies::default(),
            router,
            metrics,
            hooks,
            next_session: AtomicU64::new(1),
            spare_threads: AtomicUsize::new(0),
            sessions: Mutex::new(0),
            sessions_zero: Condvar::new(),
            stopping: AtomicBool::new(false),
            cluster_up: None,
        }
    }

    pub fn next_session(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Marks the server as stopping; `true` if it already was.
    pub fn stop(&self) -> bool {
        self.stopping.swap(true, Ordering::AcqRel)
    }

    /// Counts a session so shutdown can wait for it; the count drops with the token.
    pub fn session_token(self: &Arc<Self>) -> Option<SessionToken> {
        let mut n = self.sessions.lock().ok()?;
        *n += 1;
        Some(SessionToken(self.clone()))
    }

    /// Waits until every session has finished, at most until `deadline`; `false` if
    /// some are still closing.
    pub fn wait_sessions(&self, deadline: Instant) -> bool {
        let Ok(mut n) = self.sessions.lock() else {
            return false;
        };
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!("{} sessions still closing at shutdown", *n);
                return false;
            }
            match self.sessions_zero.wait_timeout(n, left) {
                Ok((guard, _)) => n = guard,
                Err(_) => return false,
            }
        }
        true
    }
}

/// Held by a session's thread for its whole life.
pub struct SessionToken(Arc<Context>);

impl Drop for SessionToken {
    fn drop(&mut self) {
        if let Ok(mut n) = self.0.sessions.lock() {
            *n -= 1;
            if *n == 0 {
                self.0.sessions_zero.notify_all();
            }
        }
    }
}

impl Backend for Context {
    fn ask(&self, cmd: Command) -> Option<Reply> {
        self.router.ask(cmd, None, Some(ROUTER_WAIT))
    }

    fn access(&self) -> Arc<Access> {
        self.access.get()
    }

    fn ice(&self) -> Arc<Ice> {
        self.ice.get()
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn health(&self) -> Health {
        if self.is_stopping() {
            Health::Stopping
        } else if self.router.failed() {
            Health::Failed
        } else if self
            .cluster_up
            .as_ref()
            .is_some_and(|up| !up.load(Ordering::Acquire))
        {
            Health::ClusterDown
        } else {
            Health::Ok
        }
    }
}
