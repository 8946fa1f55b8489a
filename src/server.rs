//! The listener: accepts TCP connections, gives each its own thread, and owns start-up
//! and graceful shutdown. Also the state every connection shares (none of it room state).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use log::{info, warn};

use crate::config::{Config, Limits};
use crate::http;
use crate::metrics::Metrics;
use crate::router::{self, Command, Envelope, Router, RouterLimits};
use crate::session::SessionMailbox;
use crate::transport::TlsConfig;

/// State shared by all connection threads: configuration, the router's inbox and
/// counters. Room state lives only in the router thread.
pub struct Shared {
    pub limits: Limits,
    pub ice_json: String,
    pub router: Sender<Envelope<SessionMailbox>>,
    /// The `/metrics` series; the router holds the same instance.
    pub metrics: Arc<Metrics>,
    next_session: AtomicU64,
    connections: AtomicUsize,
    /// Connection threads parked waiting for their next connection.
    spare_threads: AtomicUsize,
    sessions: Mutex<usize>,
    sessions_zero: Condvar,
    stopping: AtomicBool,
}

impl Shared {
    pub fn next_session(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Counts a session's threads so shutdown can wait for them.
    pub fn session_token(self: &Arc<Self>) -> Option<SessionToken> {
        let mut n = self.sessions.lock().ok()?;
        *n += 1;
        Some(SessionToken(Arc::new(TokenInner(self.clone()))))
    }
}

/// Held by both threads of a session; the last one dropped ends the session's count.
#[derive(Clone)]
pub struct SessionToken(#[allow(dead_code)] Arc<TokenInner>);

pub struct TokenInner(Arc<Shared>);

impl Drop for TokenInner {
    fn drop(&mut self) {
        if let Ok(mut n) = self.0.sessions.lock() {
            *n -= 1;
            if *n == 0 {
                self.0.sessions_zero.notify_all();
            }
        }
    }
}

/// Decrements the connection count when a connection thread ends (or panics).
struct ConnectionGuard(Arc<Shared>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A running server. Dropping it shuts it down.
pub struct Server {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    tls_fingerprint: Option<String>,
    /// Every listener's address and accept thread.
    accept: Mutex<Vec<(SocketAddr, JoinHandle<()>)>>,
}

/// A bound listener and whether it speaks TLS.
struct Listener {
    socket: TcpListener,
    addr: SocketAddr,
    tls: Option<TlsConfig>,
}

fn listen(bind: IpAddr, port: u16, tls: Option<TlsConfig>) -> io::Result<Listener> {
    let socket = TcpListener::bind((bind, port))?;
    let addr = socket.local_addr()?;
    // std listens with a backlog of 128; a burst of joins (a class opening its
    // laptops, a load test) would see dropped SYNs and one-second retries.
    // Calling listen(2) again on a listening socket only raises the backlog.
    // SAFETY: a valid listening socket owned by `socket`.
    unsafe {
        libc::listen(std::os::fd::AsRawFd::as_raw_fd(&socket), LISTEN_BACKLOG);
    }
    Ok(Listener { socket, addr, tls })
}

/// The TLS configuration `config` asks for, and the certificate's fingerprint.
#[cfg(feature = "tls")]
fn tls_setup(config: &Config) -> io::Result<Option<(TlsConfig, String)>> {
    let setup = if config.tls_self_signed {
        let setup = crate::tls::self_signed()?;
        info!(
            "TLS: self-signed certificate for {}",
            setup.self_signed_names.join(", ")
        );
        setup
    } else if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        crate::tls::from_files(cert, key)?
    } else {
        return Ok(None);
    };
    info!("TLS certificate SHA-256 fingerprint {}", setup.fingerprint);
    Ok(Some((setup.config, setup.fingerprint)))
}

#[cfg(not(feature = "tls"))]
fn tls_setup(config: &Config) -> io::Result<Option<(TlsConfig, String)>> {
    if config.tls_enabled() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this build has no TLS (cargo feature `tls`)",
        ));
    }
    Ok(None)
}

impl Server {
    /// Binds the port and starts the router and accept threads.
    pub fn start(config: Config) -> io::Result<Server> {
        let tls = tls_setup(&config)?;
        let fingerprint = tls.as_ref().map(|(_, f)| f.clone());
        let tls = tls.map(|(c, _)| c);
        let mut listeners = Vec::new();
        match config.tls_port {
            // TLS beside plain.
            Some(port) if tls.is_some() => {
                listeners.push(listen(config.bind, config.port, None)?);
                listeners.push(listen(config.bind, port, tls)?);
            }
            // TLS alone, or plain alone.
            _ => listeners.push(listen(config.bind, config.port, tls)?),
        }
        let local_addr = listeners[0].addr;
        let tls_addr = listeners.iter().find(|l| l.tls.is_some()).map(|l| l.addr);
        let mut limits = config.limits.clone();
        let verifier = config
            .verifier()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if let Some(v) = verifier {
            limits.auth = Some(Arc::new(v));
        }
        let (router_tx, router_rx) = bounded(limits.router_queue);
        let metrics = Arc::new(Metrics::new(limits.peer_queue));
        let state = Router::<SessionMailbox>::with_metrics(
            RouterLimits {
                max_sessions: limits.max_connections,
                max_room_peers: limits.max_room_peers,
            },
            metrics.clone(),
        );
        std::thread::Builder::new()
            .name("router".into())
            .stack_size(256 * 1024)
            .spawn(move || router::run(state, router_rx))?;
        let shared = Arc::new(Shared {
            ice_json: crate::ice::static_json(&config),
            limits,
            router: router_tx,
            metrics,
            next_session: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            spare_threads: AtomicUsize::new(0),
            sessions: Mutex::new(0),
            sessions_zero: Condvar::new(),
            stopping: AtomicBool::new(false),
        });
        let mut accept = Vec::new();
        for listener in listeners {
            let addr = listener.addr;
            let tls_note = if listener.tls.is_some() {
                " (TLS: https://, wss://)"
            } else {
                ""
            };
            let shared = shared.clone();
            let handle = std::thread::Builder::new()
                .name("accept".into())
                .stack_size(128 * 1024)
                .spawn(move || accept_loop(listener.socket, listener.tls, shared))?;
            info!("listening on {addr}{tls_note}");
            accept.push((addr, handle));
        }
        if shared.limits.auth.is_some() {
            info!("auth: sessions need ?token=, REST room listings an admin token");
        }
        if !shared.limits.allowed_origins.is_empty() {
            info!("origins: browser pages from other origins get 4403");
        }
        Ok(Server {
            shared,
            local_addr,
            tls_addr,
            tls_fingerprint: fingerprint,
            accept: Mutex::new(accept),
        })
    }

    /// The address of `--port` (useful with port 0): TLS if TLS runs alone.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address serving TLS, if any (`--port`, or `--tls-port` beside plain).
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// SHA-256 fingerprint of the TLS certificate (`AB:CD:...`), if TLS is on.
    pub fn tls_fingerprint(&self) -> Option<&str> {
        self.tls_fingerprint.as_deref()
    }

    /// Stops accepting, closes every session with `going_away` (1001) and waits for the
    /// sessions to finish their closing handshake, at most about two close timeouts.
    pub fn shutdown(&self) {
        if self.shared.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
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
        let _ = self.shared.router.send(Envelope {
            cmd: Command::Shutdown,
            reply: None,
        });
        let limits = &self.shared.limits;
        let deadline = Instant::now() + limits.close_timeout * 2;
        if let Ok(mut n) = self.shared.sessions.lock() {
            while *n > 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    warn!("{} sessions still closing at shutdown", *n);
                    break;
                }
                match self.shared.sessions_zero.wait_timeout(n, left) {
                    Ok((guard, _)) => n = guard,
                    Err(_) => return,
                }
            }
        }
        info!("stopped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

fn accept_loop(listener: TcpListener, tls: Option<TlsConfig>, shared: Arc<Shared>) {
    let cap = shared.limits.max_connections + shared.limits.max_http_connections;
    // Zero capacity: a hand-off succeeds only if a spare thread is waiting right now.
    let (spares_tx, spares_rx) = bounded::<Conn>(0);
    loop {
        let (stream, remote) = match listener.accept() {
            Ok(pair) => pair,
            Err(e) if shared.is_stopping() => {
                let _ = e;
                return;
            }
            Err(e) => {
                match e.kind() {
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => {}
                    _ => {
                        // Out of file descriptors or memory: retrying at once would spin.
                        warn!("accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                continue;
            }
        };
        if shared.is_stopping() {
            return;
        }
        if shared.connections.fetch_add(1, Ordering::AcqRel) >= cap {
            shared.connections.fetch_sub(1, Ordering::AcqRel);
            warn!("connection from {remote} dropped: {cap} connections open");
            continue;
        }
        let guard = ConnectionGuard(shared.clone());
        // Small frames must not wait for delayed ACKs (Nagle would add ~40 ms stalls).
        let _ = stream.set_nodelay(true);
        // A spare thread parked in `recv` takes the connection at once; otherwise a
        // new thread is started for it.
        let conn = Conn {
            stream,
            remote,
            tls: tls.clone(),
            guard,
        };
        let conn = match spares_tx.try_send(conn) {
            Ok(()) => continue,
            Err(e) => e.into_inner(),
        };
        let shared = shared.clone();
        let spares = spares_rx.clone();
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .stack_size(shared.limits.thread_stack)
            .spawn(move || connection_thread(conn, &shared, &spares));
        if let Err(e) = spawned {
            warn!("cannot start a thread for {remote}: {e}");
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
    guard: ConnectionGuard,
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
fn connection_thread(first: Conn, shared: &Arc<Shared>, spares: &Receiver<Conn>) {
    let mut conn = first;
    loop {
        {
            let Conn {
                stream,
                remote,
                tls,
                guard,
            } = conn;
            let _guard = guard;
            http::serve(stream, tls.as_ref(), remote, shared.clone());
        }
        if shared.is_stopping()
            || shared.spare_threads.fetch_add(1, Ordering::AcqRel) >= MAX_SPARE_THREADS
        {
            shared.spare_threads.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let next = spares.recv_timeout(SPARE_IDLE);
        shared.spare_threads.fetch_sub(1, Ordering::AcqRel);
        match next {
            Ok(c) => conn = c,
            Err(_) => return,
        }
    }
}
