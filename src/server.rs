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
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Server {
    /// Binds the port and starts the router and accept threads.
    pub fn start(config: Config) -> io::Result<Server> {
        let listener = TcpListener::bind((config.bind, config.port))?;
        let local_addr = listener.local_addr()?;
        // std listens with a backlog of 128; a burst of joins (a class opening its
        // laptops, a load test) would see dropped SYNs and one-second retries.
        // Calling listen(2) again on a listening socket only raises the backlog.
        // SAFETY: a valid listening socket owned by `listener`.
        unsafe {
            libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), LISTEN_BACKLOG);
        }
        let limits = config.limits.clone();
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
        let accept = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("accept".into())
                .stack_size(128 * 1024)
                .spawn(move || accept_loop(listener, shared))?
        };
        info!("listening on {local_addr}");
        Ok(Server {
            shared,
            local_addr,
            accept: Mutex::new(Some(accept)),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every session with `going_away` (1001) and waits for the
    /// sessions to finish their closing handshake, at most about two close timeouts.
    pub fn shutdown(&self) {
        if self.shared.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        // Wake the accept thread out of accept(2) with a connection of our own.
        let _ = TcpStream::connect_timeout(&wake_addr(self.local_addr), Duration::from_secs(1));
        if let Some(handle) = self.accept.lock().ok().and_then(|mut h| h.take()) {
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

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
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
                guard,
            } = conn;
            let _guard = guard;
            http::serve(stream, remote, shared.clone());
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
