//! The bridge between the router and Redis (PROTOCOL.md §9): two threads with one
//! connection each, talking to the router only through channels, so the router never
//! touches the network.
//!
//! - `redis-writer` carries out the router's cluster outputs in the order they were
//!   decided (claims and leaves as scripts, relays and kept messages as stream
//!   entries, batched in one pipeline), refreshes this instance's liveness and
//!   removes vanished instances; after a (re)connection it re-announces the local
//!   members and hands the router a snapshot of the cluster.
//! - `redis-reader` follows this instance's inbox stream and hands every event to the
//!   router, in order.
//!
//! While Redis is unreachable the writer answers what it cannot do (claims refused
//! with 1013, relays with `peer_unreachable`), keeps the leaves for later, and retries
//! the connection with a capped backoff.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};
use log::{info, warn};
use redis::Value;

use super::inbox;
use super::router::RouterHandle;
use super::scripts::{inbox, Scripts};
use crate::core::cluster::{
    kept_fields, kick_fields, relay_fields, ClusterEvent, ClusterOut, InstanceId, Presence,
};
use crate::metrics::Metrics;
use crate::protocol::{CloseReason, PeerId, RoomId};

/// Entries an inbox keeps (approximately) for a reader that lags.
const INBOX_MAXLEN: usize = 10_000;
/// Outputs written in one pipeline.
const BATCH: usize = 256;
/// How long a Redis command may take before the connection counts as lost.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the reader blocks for new entries (then asks again).
pub(super) const READ_BLOCK: Duration = Duration::from_secs(5);
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What the bridge needs to know.
#[derive(Clone)]
pub struct BridgeConfig {
    pub url: String,
    pub me: InstanceId,
    pub ttl: Duration,
    pub max_room_peers: usize,
}

/// Stops the writer after it has written what the router decided last.
pub enum Control {
    Stop(Sender<()>),
}

/// The running bridge.
pub struct Bridge {
    pub control: Sender<Control>,
    /// Whether the cluster is usable (for `/healthz`).
    pub up: Arc<AtomicBool>,
    writer: Option<JoinHandle<()>>,
}

impl Bridge {
    /// Waits (at most `wait`) for the writer to say goodbye to the cluster.
    pub fn stop(&mut self, wait: Duration) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.control.send(Control::Stop(tx)).is_ok() && rx.recv_timeout(wait).is_ok() {
            if let Some(w) = self.writer.take() {
                let _ = w.join();
            }
        }
    }
}

pub(super) fn connect(url: &str, read_timeout: Duration) -> redis::RedisResult<redis::Connection> {
    use crate::redis_url::{self, Addr};
    use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};
    // Checked at start-up (Config::validate), so an error here is a bug, not input.
    let parsed = redis_url::parse(url).map_err(|e| {
        redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "--redis", e))
    })?;
    let addr = match parsed.addr {
        Addr::Tcp { host, port } => ConnectionAddr::Tcp(host, port),
        Addr::Unix(path) => ConnectionAddr::Unix(path.into()),
    };
    let mut settings = RedisConnectionInfo::default().set_db(parsed.db);
    if let Some(u) = parsed.username {
        settings = settings.set_username(u);
    }
    if let Some(p) = parsed.password {
        settings = settings.set_password(p);
    }
    let info: ConnectionInfo = addr.into_connection_info()?.set_redis_settings(settings);
    let client = redis::Client::open(info)?;
    let con = client.get_connection_with_timeout(COMMAND_TIMEOUT)?;
    con.set_read_timeout(Some(read_timeout))?;
    con.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    Ok(con)
}

/// Starts both threads. `outputs`: the router's cluster outputs.
pub fn spawn(
    cfg: BridgeConfig,
    router: RouterHandle,
    outputs: Receiver<ClusterOut>,
    metrics: Arc<Metrics>,
) -> std::io::Result<Bridge> {
    let (control, control_rx) = crossbeam_channel::bounded(1);
    let up = Arc::new(AtomicBool::new(false));
    let reader_ok = Arc::new(AtomicBool::new(false));
    let reader = {
        let (cfg, router, ok) = (cfg.clone(), router.clone(), reader_ok.clone());
        std::thread::Builder::new()
            .name("redis-reader".into())
            .stack_size(256 * 1024)
            .spawn(move || inbox::read_loop(&cfg, &router, &ok))?
    };
    drop(reader);
    let writer = {
        let up = up.clone();
        std::thread::Builder::new()
            .name("redis-writer".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                Writer {
                    cfg,
                    router,
                    outputs,
                    control: control_rx,
                    metrics,
                    up,
                    reader_ok,
                    scripts: Scripts::new(),
                    leaves: Vec::new(),
                }
                .run()
            })?
    };
    Ok(Bridge {
        control,
        up,
        writer: Some(writer),
    })
}

struct Writer {
    cfg: BridgeConfig,
    router: RouterHandle,
    outputs: Receiver<ClusterOut>,
    control: Receiver<Control>,
    metrics: Arc<Metrics>,
    up: Arc<AtomicBool>,
    reader_ok: Arc<AtomicBool>,
    scripts: Scripts,
    /// Leaves decided while Redis was unreachable, in order.
    leaves: Vec<ClusterOut>,
}

/// Why the writer's connection is no good any more.
struct Lost;

impl Writer {
    fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let con = match connect(&self.cfg.url, COMMAND_TIMEOUT) {
                Ok(c) => c,
                Err(e) => {
                    warn!("redis: cannot connect to the cluster ({e}); retrying in {backoff:?}");
                    if self.wait_offline(backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            match self.serve(con) {
                Ok(()) => return,
                Err(Lost) => {
                    self.set_up(false);
                    let _ = self.router.cluster(ClusterEvent::Down);
                    warn!("redis: connection lost; new sessions get 1013 until it is back");
                }
            }
        }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Release);
        self.metrics.set_redis_up(up);
    }

    /// Without Redis: answers what cannot be done, until `wait` passes. `true`: stop.
    fn wait_offline(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            select! {
                recv(self.outputs) -> out => match out {
                    Ok(out) => self.fail(out),
                    Err(_) => return true,
                },
                recv(self.control) -> c => {
                    if let Ok(Control::Stop(done)) = c {
                        let _ = done.send(());
                    }
                    return true;
                },
                default(deadline.saturating_duration_since(Instant::now())) => return false,
            }
        }
    }

    /// An output that cannot reach Redis.
    fn fail(&mut self, out: ClusterOut) {
        let event = match out {
            ClusterOut::Claim { session, .. } => ClusterEvent::ClaimFailed {
                session,
                reason: CloseReason::TryAgainLater,
            },
            ClusterOut::Relay {
                session, target, ..
            } => ClusterEvent::RelayFailed { session, target },
            ClusterOut::Leave {
                room, peer, seq, ..
            } => {
                // Kept for later; the session need not wait for that (the ack drops).
                self.leaves.push(ClusterOut::Leave {
                    room,
                    peer,
                    seq,
                    ack: None,
                });
                return;
            }
            // Members are re-announced on the next connection anyway; kept relays and
            // kicks for another instance cannot wait for one.
            _ => return,
        };
        let _ = self.router.cluster(event);
    }

    /// Connected: register, re-announce, then carry out outputs until the
    /// connection is lost (`Err`) or the server stops (`Ok`).
    fn serve(&mut self, mut con: redis::Connection) -> Result<(), Lost> {
        self.heartbeat(&mut con)?;
        if self.router.cluster(ClusterEvent::Connected).is_err() {
            return Ok(());
        }
        let every = self.cfg.ttl / 6;
        let mut next_beat = Instant::now() + every;
        let mut registered = false;
        loop {
            let wait = next_beat.saturating_duration_since(Instant::now());
            select! {
                recv(self.outputs) -> out => {
                    let Ok(first) = out else { return Ok(()) };
                    let mut batch = vec![first];
                    while batch.len() < BATCH {
                        match self.outputs.try_recv() {
                            Ok(o) => batch.push(o),
                            Err(_) => break,
                        }
                    }
                    for out in &batch {
                        if let ClusterOut::Reannounce { members } = out {
                            self.reannounce(&mut con, members)?;
                            registered = true;
                        }
                    }
                    self.write(&mut con, batch)?;
                }
                recv(self.control) -> c => {
                    // The router has decided its last outputs (shutdown): write them.
                    while let Ok(out) = self.outputs.try_recv() {
                        self.write(&mut con, vec![out])?;
                    }
                    let _ = self.scripts.goodbye.arg(INBOX_MAXLEN).arg(&*self.cfg.me).invoke::<Value>(&mut con);
                    self.set_up(false);
                    if let Ok(Control::Stop(done)) = c {
                        let _ = done.send(());
                    }
                    return Ok(());
                }
                default(wait) => {}
            }
            if Instant::now() >= next_beat {
                next_beat = Instant::now() + every;
                let alive = self.heartbeat(&mut con)?;
                if registered
                    && self.up.load(Ordering::Acquire) != self.reader_ok.load(Ordering::Acquire)
                {
                    // The reader lost (or regained) its connection: start over, so the
                    // router hears Down, then a fresh snapshot.
                    return Err(Lost);
                }
                self.metrics.set_instances(alive.len());
                let _ = self.router.cluster(ClusterEvent::Instances { alive });
            }
        }
    }

    fn timed<T>(&self, f: impl FnOnce() -> redis::RedisResult<T>) -> Result<T, Lost> {
        let started = Instant::now();
        let r = f();
        self.metrics.redis_command(started.elapsed());
        r.map_err(|e| {
            warn!("redis: {e}");
            Lost
        })
    }

    fn heartbeat(&self, con: &mut redis::Connection) -> Result<Vec<InstanceId>, Lost> {
        let alive_ms = (self.cfg.ttl / 2).as_millis().max(1) as u64;
        let v: Value = self.timed(|| {
            self.scripts
                .heartbeat
                .arg(INBOX_MAXLEN)
                .arg(&*self.cfg.me)
                .arg(alive_ms)
                .invoke(con)
        })?;
        Ok(strings(&v).into_iter().map(InstanceId::from).collect())
    }

    /// After a (re)connection: the leaves decided offline, the local members, then the
    /// whole cluster for the router; full service from there.
    fn reannounce(
        &mut self,
        con: &mut redis::Connection,
        members: &[(Presence, Option<String>)],
    ) -> Result<(), Lost> {
        let leaves = std::mem::take(&mut self.leaves);
        self.write(con, leaves)?;
        let alive_ms = (self.cfg.ttl / 2).as_millis().max(1) as u64;
        let mut inv = self.scripts.reannounce.prepare_invoke();
        inv.arg(INBOX_MAXLEN).arg(&*self.cfg.me).arg(alive_ms);
        for (p, tok) in members {
            inv.arg(p.room.as_str())
                .arg(p.peer.as_str())
                .arg(p.seq)
                .arg(tok.as_deref().unwrap_or(""));
        }
        let conflicts: Value = self.timed(|| inv.invoke(con))?;
        for c in strings(&conflicts) {
            warn!("redis: {c} was taken by another instance during the outage");
        }
        let snap: Value = self.timed(|| self.scripts.snapshot.arg(INBOX_MAXLEN).invoke(con))?;
        let flat = strings(&snap);
        let snapshot = flat
            .chunks_exact(4)
            .filter_map(|c| {
                Some(Presence {
                    room: RoomId::parse(&c[0]).ok()?,
                    peer: PeerId::parse(&c[1]).ok()?,
                    seq: c[2].parse::<f64>().ok()? as u64,
                    instance: InstanceId::from(c[3].as_str()),
                })
            })
            .collect();
        let alive = self.heartbeat(con)?;
        self.metrics.set_instances(alive.len());
        self.set_up(true);
        info!(
            "redis: instance {} in the cluster ({} instances alive)",
            self.cfg.me,
            alive.len()
        );
        let _ = self.router.cluster(ClusterEvent::Up { snapshot, alive });
        Ok(())
    }

    /// Carries out `batch` in order; consecutive stream entries go in one pipeline.
    fn write(&mut self, con: &mut redis::Connection, batch: Vec<ClusterOut>) -> Result<(), Lost> {
        let mut pipe = redis::pipe();
        let mut queued: Vec<ClusterOut> = Vec::new();
        let mut iter = batch.into_iter().peekable();
        while let Some(out) = iter.next() {
            match &out {
                ClusterOut::Relay {
                    instance,
                    room,
                    from,
                    from_seq,
                    target,
                    text,
                    ..
                } => {
                    let f = relay_fields(room, from, *from_seq, target, text.as_str());
                    xadd(&mut pipe, instance, &f);
                    queued.push(out);
                }
                ClusterOut::Kept {
                    instance,
                    room,
                    peer,
                    texts,
                } => {
                    for t in texts {
                        xadd(
                            &mut pipe,
                            instance,
                            &kept_fields(room, peer, Some(t.as_str())),
                        );
                    }
                    xadd(&mut pipe, instance, &kept_fields(room, peer, None));
                    queued.push(out);
                }
                ClusterOut::Kick {
                    instance,
                    room,
                    peer,
                } => {
                    xadd(&mut pipe, instance, &kick_fields(room, peer.as_ref()));
                    queued.push(out);
                }
                _ => {
                    self.flush(con, &mut pipe, &mut queued)?;
                    self.script(con, out)?;
                }
            }
            if iter.peek().is_none() {
                self.flush(con, &mut pipe, &mut queued)?;
            }
        }
        Ok(())
    }

    fn flush(
        &mut self,
        con: &mut redis::Connection,
        pipe: &mut redis::Pipeline,
        queued: &mut Vec<ClusterOut>,
    ) -> Result<(), Lost> {
        if queued.is_empty() {
            return Ok(());
        }
        let relays = queued
            .iter()
            .filter(|o| matches!(o, ClusterOut::Relay { .. }))
            .count();
        let sent = self.timed(|| pipe.query::<Value>(con));
        *pipe = redis::pipe();
        match sent {
            Ok(_) => {
                self.metrics.cross_sent(relays);
                queued.clear();
                Ok(())
            }
            Err(Lost) => {
                for out in queued.drain(..) {
                    self.fail(out);
                }
                Err(Lost)
            }
        }
    }

    fn script(&mut self, con: &mut redis::Connection, out: ClusterOut) -> Result<(), Lost> {
        match out {
            ClusterOut::Claim {
                session,
                room,
                peer,
                token_hash,
                resume_hash,
            } => {
                let r: Result<Value, Lost> = self.timed(|| {
                    self.scripts
                        .claim
                        .arg(INBOX_MAXLEN)
                        .arg(&*self.cfg.me)
                        .arg(room.as_str())
                        .arg(peer.as_str())
                        .arg(session)
                        .arg(token_hash.as_deref().unwrap_or(""))
                        .arg(resume_hash.as_deref().unwrap_or(""))
                        .arg(self.cfg.max_room_peers)
                        .invoke(con)
                });
                let reason = match r.as_ref().map(strings) {
                    Ok(v) if v.first().map(String::as_str) == Some("taken") => {
                        CloseReason::PeerIdTaken
                    }
                    Ok(v) if v.first().map(String::as_str) == Some("full") => CloseReason::RoomFull,
                    // Claimed: the event comes back through the inbox.
                    Ok(_) => return Ok(()),
                    Err(_) => CloseReason::TryAgainLater,
                };
                let _ = self
                    .router
                    .cluster(ClusterEvent::ClaimFailed { session, reason });
                r.map(|_| ())
            }
            ClusterOut::Leave {
                room,
                peer,
                seq,
                ack,
            } => {
                // The session waits for this: the id is free everywhere once dropped.
                let _ack = ack;
                let leave = ClusterOut::Leave {
                    room: room.clone(),
                    peer: peer.clone(),
                    seq,
                    ack: None,
                };
                let r: Result<Value, Lost> = self.timed(|| {
                    self.scripts
                        .leave
                        .arg(INBOX_MAXLEN)
                        .arg(&*self.cfg.me)
                        .arg(room.as_str())
                        .arg(peer.as_str())
                        .arg(seq)
                        .invoke(con)
                });
                if r.is_err() {
                    self.leaves.push(leave);
                }
                r.map(|_| ())
            }
            // Handled before the batch (it needs the reply).
            ClusterOut::Reannounce { .. } => Ok(()),
            other => {
                self.fail(other);
                Ok(())
            }
        }
    }
}

fn xadd(pipe: &mut redis::Pipeline, instance: &str, fields: &[(&'static str, String)]) {
    let cmd = pipe
        .cmd("XADD")
        .arg(inbox(instance))
        .arg("MAXLEN")
        .arg("~")
        .arg(INBOX_MAXLEN)
        .arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(v.as_str());
    }
    cmd.ignore();
}

/// The strings of a flat reply (an array of bulk strings, or one).
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) | Value::Set(items) => items.iter().filter_map(string).collect(),
        other => string(other).into_iter().collect(),
    }
}

pub(super) fn string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}
