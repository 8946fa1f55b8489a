//! The server's life: binds the listeners, starts the router and accept threads,
//! gives each accepted connection a thread (a parked spare one when there is one),
//! and shuts everything down in order.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver};
use log::{info, warn};

use crate::access::Access;
use crate::config::Config;
use crate::core::cluster::InstanceId;
use crate::core::router::{Command, Router, RouterLimits};
use crate::driver::bridge::{self, Bridge, BridgeConfig};
use crate::driver::context::Context;
use crate::driver::router::{self as router_thread, Failure};
use crate::driver::slots::{Full, Slot};
use crate::driver::swap::Swap;
use crate::driver::transport::TlsConfig;
use crate::driver::{accept, conn, stack, wake};
use crate::http::Side;
use crate::ice::Ice;
use crate::metrics::Metrics;

/// The TLS configuration, replaced by a reload; read once per accepted connection.
type SharedTls = Arc<Swap<TlsConfig>>;

/// A running server. Dropping it shuts it down.
pub struct Server {
    ctx: Arc<Context>,
    failure: Arc<Failure>,
    bridge: Mutex<Option<Bridge>>,
    local_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    ops_addr: Option<SocketAddr>,
    /// What the accept threads read; a reload replaces it (feature `tls`).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    tls: Option<SharedTls>,
    tls_fingerprint: Swap<Option<String>>,
    /// Every listener's address and accept thread.
    accept: Mutex<Vec<(SocketAddr, JoinHandle<()>)>>,
}

/// A bound listener, whether it speaks TLS, and what it serves.
struct Listener {
    socket: TcpListener,
    addr: SocketAddr,
    tls: Option<SharedTls>,
    side: Side,
}

/// Binds `addr`; a failure names the address ("address in use" alone does not say
/// which of the listeners could not start).
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

fn listen(socket: TcpListener, tls: Option<SharedTls>, side: Side) -> io::Result<Listener> {
    let addr = socket.local_addr()?;
    // std listens with a backlog of 128; a burst of joins (a class opening its
    // laptops, a load test) would see dropped SYNs and one-second retries.
    // Calling listen(2) again on a listening socket only raises the backlog.
    // SAFETY: the descriptor belongs to `socket`, which outlives the call.
    let rc = unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&socket), LISTEN_BACKLOG) };
    if rc != 0 {
        warn!(
            "cannot raise the listen backlog of {addr}: {}",
            io::Error::last_os_error()
        );
    }
    Ok(Listener {
        socket,
        addr,
        tls,
        side,
    })
}

/// The TLS configuration `config` asks for, and the certificate's fingerprint.
#[cfg(feature = "tls")]
fn tls_setup(config: &Config) -> io::Result<Option<(TlsConfig, String)>> {
    let setup = if config.tls.self_signed {
        let setup = crate::tls::self_signed()?;
        info!(
            "TLS: self-signed certificate for {}",
            setup.self_signed_names.join(", ")
        );
        setup
    } else if let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) {
        crate::tls::from_files(cert, key)?
    } else {
        return Ok(None);
    };
    info!("TLS certificate SHA-256 fingerprint {}", setup.fingerprint);
    Ok(Some((setup.config, setup.fingerprint)))
}

#[cfg(not(feature = "tls"))]
fn tls_setup(config: &Config) -> io::Result<Option<(TlsConfig, String)>> {
    if config.tls.enabled() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this build has no TLS (cargo feature `tls`)",
        ));
    }
    Ok(None)
}

impl Server {
    /// Checks `config`, binds the port and starts the router and accept threads.
    pub fn start(config: Config) -> io::Result<Server> {
        Server::start_with_listeners(config, Vec::new())
    }

    /// As [`Server::start`], on listening sockets made elsewhere (systemd socket
    /// activation) instead of binding `--bind`/`--port`: the first takes the role of
    /// `--port`, a second that of `--tls-port`. `--ops-bind` is always bound here.
    pub fn start_with_listeners(config: Config, inherited: Vec<TcpListener>) -> io::Result<Server> {
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // Sessions are woken with a signal: find out now if that cannot work here.
        wake::install()?;
        let tls = tls_setup(&config)?;
        let fingerprint = tls.as_ref().map(|(_, f)| f.clone());
        let tls: Option<SharedTls> = tls.map(|(c, _)| Arc::new(Swap::new(c)));
        let public = if config.ops_bind.is_some() {
            Side::Public
        } else {
            Side::All
        };
        let want = if config.tls.port.is_some() && tls.is_some() {
            2
        } else {
            1
        };
        if !inherited.is_empty() && inherited.len() != want {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} listening sockets were passed in, this configuration takes {want} \
                     (--port{})",
                    inherited.len(),
                    if want == 2 { " and --tls-port" } else { "" }
                ),
            ));
        }
        let mut sockets = inherited.into_iter();
        let mut socket = |port: u16| match sockets.next() {
            Some(s) => Ok(s),
            None => bind(SocketAddr::new(config.bind, port)),
        };
        let mut listeners = Vec::new();
        match config.tls.port {
            // TLS beside plain.
            Some(port) if tls.is_some() => {
                listeners.push(listen(socket(config.port)?, None, public)?);
                listeners.push(listen(socket(port)?, tls.clone(), public)?);
            }
            // TLS alone, or plain alone.
            _ => listeners.push(listen(socket(config.port)?, tls.clone(), public)?),
        }
        if let Some(ops) = config.ops_bind {
            listeners.push(listen(bind(ops)?, None, Side::Ops)?);
        }
        let local_addr = listeners[0].addr;
        let tls_addr = listeners.iter().find(|l| l.tls.is_some()).map(|l| l.addr);
        let ops_addr = listeners
            .iter()
            .find(|l| l.side == Side::Ops)
            .map(|l| l.addr);
        let limits = config.limits.clone();
        let access = Access {
            verifier: config
                .access
                .verifier()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
            origins: config.access.allowed_origins.clone(),
            admin: config.access.admin,
        };
        let metrics = Arc::new(Metrics::with_limits(
            limits.peer_queue,
            limits.max_connections,
            limits.max_room_peers,
        ));
        let router_limits = RouterLimits {
            max_sessions: limits.max_connections,
            max_room_peers: limits.max_room_peers,
            peer_queue: limits.peer_queue,
            max_backlog: limits.router_queue,
            resume_grace: limits.resume_grace,
        };
        let cluster = config.cluster.redis.as_ref().map(|url| {
            let me = InstanceId::from(instance_id());
            let (tx, rx) = bounded(limits.router_queue);
            (url.clone(), me, tx, rx)
        });
        let router = match &cluster {
            Some((_, me, _, _)) => Router::clustered(
                router_limits,
                metrics.clone(),
                me.clone(),
                config.cluster.ttl,
            ),
            None => Router::with_metrics(router_limits, metrics.clone()),
        };
        let (router, _thread) = router_thread::spawn(
            router,
            limits.router_queue,
            config.hooks.router_join.clone(),
            cluster.as_ref().map(|(_, _, tx, _)| tx.clone()),
        )?;
        let failure = router.failure();
        let bridge = match cluster {
            Some((url, me, _, rx)) => {
                // Checked by Config::validate; the log form hides the password.
                let at = crate::redis_url::parse(&url).map_or_else(|e| e, |u| u.to_string());
                info!("cluster: instance {me}, Redis at {at}");
                Some(bridge::spawn(
                    BridgeConfig {
                        url,
                        me,
                        ttl: config.cluster.ttl,
                        max_room_peers: limits.max_room_peers,
                    },
                    router.clone(),
                    rx,
                    metrics.clone(),
                )?)
            }
            None => None,
        };
        let ice = Ice {
            static_json: crate::ice::static_json(&config.ice),
            turn_secret: config.ice.turn_secret.clone(),
            turn_ttl: config.ice.turn_ttl,
        };
        let auth = access.verifier.is_some();
        let origins = !access.origins.is_empty();
        let mut ctx = Context::new(limits, access, ice, router, metrics, config.hooks.clone());
        ctx.cluster_up = bridge.as_ref().map(|b| b.up.clone());
        ctx.proxies = config.trusted_proxies.clone();
        let ctx = Arc::new(ctx);
        let mut accept = Vec::new();
        for listener in listeners {
            let (addr, tls_on, side) = (listener.addr, listener.tls.is_some(), listener.side);
            let note = crate::urls::listening(addr, tls_on, side);
            let ctx = ctx.clone();
            let handle = std::thread::Builder::new()
                .name("accept".into())
                .stack_size(128 * 1024)
                .spawn(move || accept_loop(listener.socket, listener.tls, listener.side, ctx))?;
            // The address alone ends the line (scripts read it); the URLs follow.
            let tls_note = if tls_on {
                " (TLS: https://, wss://)"
            } else {
                ""
            };
            info!("listening on {addr}{tls_note}");
            info!("serving {note}");
            if side != Side::Ops {
                info!("client page: {}", crate::urls::client_page(addr, tls_on));
            }
            accept.push((addr, handle));
        }
        if !config.trusted_proxies.is_empty() {
            info!("trusted proxies: their X-Forwarded-For/Forwarded name the client");
        }
        if auth {
            info!("auth: sessions need ?token=, REST room listings an admin token");
        }
        if origins {
            info!("origins: browser pages from other origins get 4403");
        }
        Ok(Server {
            ctx,
            failure,
            bridge: Mutex::new(bridge),
            local_addr,
            tls_addr,
            ops_addr,
            tls,
            tls_fingerprint: Swap::new(fingerprint),
            accept: Mutex::new(accept),
        })
    }

    /// Re-reads what may change under a running server (SIGHUP): the TLS certificate
    /// and key files, the token keys and the TURN secret, from `config` (the binary
    /// parses its flags again, which reads the files again). Sessions are not touched:
    /// each keeps the TLS state it started with; new connections and requests get the
    /// new settings. On an error nothing changes. Returns what was reloaded.
    pub fn reload(&self, config: &Config) -> io::Result<Vec<String>> {
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
        config.validate().map_err(|e| invalid(e.to_string()))?;
        let mut done = Vec::new();
        // Build everything first, then swap: a bad certificate changes nothing.
        #[allow(unused_mut)] // set only with the `tls` feature
        let mut new_tls: Option<(&SharedTls, TlsConfig, String)> = None;
        #[cfg(feature = "tls")]
        if let (Some(shared), Some(cert), Some(key)) =
            (&self.tls, &config.tls.cert, &config.tls.key)
        {
            let setup = crate::tls::from_files(cert, key)?;
            new_tls = Some((shared, setup.config, setup.fingerprint));
        }
        let current = self.ctx.access.get();
        let access = Access {
            verifier: config.access.verifier().map_err(invalid)?,
            origins: current.origins.clone(),
            admin: current.admin,
        };
        let ice = Ice {
            static_json: crate::ice::static_json(&config.ice),
            turn_secret: config.ice.turn_secret.clone(),
            turn_ttl: config.ice.turn_ttl,
        };
        if let Some((shared, tls, fingerprint)) = new_tls {
            shared.set(tls);
            done.push(format!("TLS certificate (SHA-256 {fingerprint})"));
            self.tls_fingerprint.set(Some(fingerprint));
        }
        if access.verifier.is_some() {
            done.push("token keys".to_owned());
        }
        self.ctx.access.set(Arc::new(access));
        if ice.turn_secret.is_some() {
            done.push("TURN secret".to_owned());
        }
        self.ctx.ice.set(Arc::new(ice));
        Ok(done)
    }

    /// Whether the router thread has failed (the server cannot work any more; its
    /// `/healthz` answers 503). The binary exits with a non-zero status then.
    pub fn failed(&self) -> bool {
        self.failure.is_set()
    }

    /// Blocks until the router thread fails (for the binary's supervisor duty).
    pub fn wait_failure(&self) {
        self.failure.wait();
    }

    /// A handle that can wait for a router failure from another thread.
    pub fn failure(&self) -> Arc<Failure> {
        self.failure.clone()
    }

    /// The address of `--port` (useful with port 0): TLS if TLS runs alone.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address serving TLS, if any (`--port`, or `--tls-port` beside plain).
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The `--ops-bind` listener's address, if any.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops_addr
    }

    /// SHA-256 fingerprint of the TLS certificate (`AB:CD:...`), if TLS is on (the
    /// current one, after a reload).
    pub fn tls_fingerprint(&self) -> Option<String> {
        self.tls_fingerprint.get()
    }

    /// Stops accepting, closes every session with `going_away` (1001) and waits for the
    /// sessions to finish their closing handshake, at most about two close timeouts.
    pub fn shutdown(&self) {
        if self.ctx.stop() {
            return;
        }
        // Idle keep-alive connections would otherwise wait out their head timeout.
        self.ctx.slots.evict_idle();
        let accept = self
            .accept
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default();
        for (addr, handle) in accept {
            // Wake the accept thread out of accept(2) with a connection of our own.
            let _ = TcpStream::connect_timeout(&wake_addr(addr), Duration::from_secs(1));
            let _ = handle.join();
        }
        let _ = self.ctx.router.send(Command::Shutdown);
        let deadline = Instant::now() + self.ctx.limits.close_timeout * 2;
        self.ctx.wait_sessions(deadline);
        // The cluster hears every peer leave, then this instance's goodbye.
        if let Some(mut bridge) = self.bridge.lock().ok().and_then(|mut b| b.take()) {
            bridge.stop(self.ctx.limits.close_timeout * 2);
        }
        info!("stopped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A random id for this run of the process (16 hex digits).
fn instance_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        bytes = std::process::id()
            .to_le_bytes()
            .repeat(2)
            .try_into()
            .unwrap_or_default();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

fn accept_loop(listener: TcpListener, tls: Option<SharedTls>, side: Side, ctx: Arc<Context>) {
    // Zero capacity: a hand-off succeeds only if a spare thread is waiting right now.
    let (spares_tx, spares_rx) = bounded::<Conn>(0);
    let mut backoff = accept::Backoff::default();
    // One log line per interval for each kind of trouble.
    let mut log_accept = accept::Every::default();
    let mut log_full = accept::Every::default();
    let mut log_spawn = accept::Every::default();
    loop {
        let (stream, remote) = match listener.accept() {
            Ok(pair) => pair,
            Err(_) if ctx.is_stopping() => return,
            Err(e) => {
                if !matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) {
                    // Out of file descriptors or memory: retrying at once would spin.
                    if let Some(n) = log_accept.tick(Instant::now()) {
                        warn!("accept failed: {e}; backing off{}", accept::held(n));
                    }
                    std::thread::sleep(backoff.failed());
                }
                continue;
            }
        };
        backoff.reset();
        if ctx.is_stopping() {
            return;
        }
        // A burst waits (in the listen backlog) while the handshakes ahead finish;
        // a second at most, never longer than a head may take.
        let wait = ctx.limits.http_head_timeout.min(Duration::from_secs(1));
        let slot = match ctx.slots.admit_by(remote.ip(), Instant::now() + wait) {
            Ok(slot) => slot,
            Err(full) => {
                let why = match full {
                    Full::Http => "every HTTP connection slot is busy",
                    Full::Address => "too many connections from this address",
                };
                if let Some(n) = log_full.tick(Instant::now()) {
                    warn!("connection from {remote} refused: {why}{}", accept::held(n));
                }
                accept::refuse(stream, tls.is_none(), why);
                continue;
            }
        };
        // Small frames must not wait for delayed ACKs (Nagle would add ~40 ms stalls).
        let _ = stream.set_nodelay(true);
        // A spare thread parked in `recv` takes the connection at once; otherwise a
        // new thread is started for it.
        let conn = Conn {
            stream,
            remote,
            // The configuration in force now: a reload affects the next connection.
            tls: tls.as_ref().map(|t| t.get()),
            side,
            slot,
        };
        let conn = match spares_tx.try_send(conn) {
            Ok(()) => continue,
            Err(e) => e.into_inner(),
        };
        // The connection waits here while the thread starts, so that it comes back if
        // the thread cannot be made and is refused properly instead of dropped.
        let handoff = Arc::new(Mutex::new(Some(conn)));
        let (ctx2, spares, mine) = (ctx.clone(), spares_rx.clone(), handoff.clone());
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .stack_size(ctx.limits.thread_stack)
            .spawn(move || {
                let first = mine.lock().ok().and_then(|mut c| c.take());
                if let Some(first) = first {
                    connection_thread(first, &ctx2, &spares);
                }
            });
        if let Err(e) = spawned {
            let back = handoff.lock().ok().and_then(|mut c| c.take());
            if let Some(n) = log_spawn.tick(Instant::now()) {
                warn!("cannot start a thread for {remote}: {e}{}", accept::held(n));
            }
            if let Some(conn) = back {
                accept::refuse(
                    conn.stream,
                    tls.is_none(),
                    "the server cannot start a thread",
                );
            }
        }
    }
}

/// Pending connections the kernel may queue for `accept` (capped by somaxconn).
const LISTEN_BACKLOG: libc::c_int = 1024;

/// An accepted connection on its way to a thread.
struct Conn {
    stream: TcpStream,
    remote: SocketAddr,
    tls: Option<TlsConfig>,
    side: Side,
    slot: Slot,
}

/// Threads kept parked for the next connections. Starting a thread costs tens of
/// microseconds, and on a busy core a new thread also queues behind the running ones
/// (the scheduler's start penalty), which showed as 4 ms joins; a parked thread is
/// woken like any other.
const MAX_SPARE_THREADS: usize = 8;
/// A spare thread that gets no connection for this long exits.
const SPARE_IDLE: Duration = Duration::from_secs(30);

/// One thread, one connection at a time; afterwards it waits as a spare (while fewer
/// than `MAX_SPARE_THREADS` do) for the next one.
fn connection_thread(first: Conn, ctx: &Arc<Context>, spares: &Receiver<Conn>) {
    let mut conn = first;
    loop {
        {
            let Conn {
                stream,
                remote,
                tls,
                side,
                slot,
            } = conn;
            if let Some(session) = conn::serve(stream, tls.as_ref(), remote, ctx, side, slot) {
                // The HTTP phase ran deeper than the session will: its stack pages go
                // back before the thread settles into a session for hours.
                stack::release_unused();
                session.run(ctx);
            }
        }
        if ctx.is_stopping()
            || ctx.spare_threads.fetch_add(1, Ordering::AcqRel) >= MAX_SPARE_THREADS
        {
            ctx.spare_threads.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let next = spares.recv_timeout(SPARE_IDLE);
        ctx.spare_threads.fetch_sub(1, Ordering::AcqRel);
        match next {
            Ok(c) => conn = c,
            Err(_) => return,
        }
    }
}
