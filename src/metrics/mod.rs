//! What `GET /metrics` shows, in the Prometheus text exposition format (0.0.4),
//! encoded by the `prometheus-client` crate.
//!
//! Nothing here may put a lock or an allocation on the relay path: every series that
//! a session or the router touches is an atomic created once at start-up. Labelled
//! counters are fixed arrays indexed by enum ([`ErrorCode`], [`RelayKind`], close
//! reason), never a `Family` looked up by a label `String`; the relay latency
//! histogram is ours ([`LatencyHistogram`]) because the crate's `Histogram` takes a
//! mutex on every observation. Scraping (encoding, reading `/proc`) allocates freely.
//! docs/metrics.md lists every series.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::protocol::{CloseReason, ErrorCode, RelayKind};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The `reason` label of the session counters: the error code of a server-side close,
/// or `client_closed` / `disconnected` when the client ended the session.
/// One reason of each kind, in the order of [`close_index`].
const CLOSE_KINDS: [CloseReason; 19] = [
    CloseReason::InvalidRoomId,
    CloseReason::InvalidPeerId,
    CloseReason::Unauthorized,
    CloseReason::OriginNotAllowed,
    CloseReason::Kicked,
    CloseReason::PeerIdTaken,
    CloseReason::RateLimited,
    CloseReason::ServerFull,
    CloseReason::RoomFull,
    CloseReason::MessageTooLarge,
    CloseReason::GoingAway,
    CloseReason::Timeout,
    CloseReason::SlowConsumer,
    CloseReason::ProtocolError,
    CloseReason::Internal,
    CloseReason::ClientClosed(1000),
    CloseReason::Disconnected,
    CloseReason::Replaced,
    CloseReason::TryAgainLater,
];

/// The `reason` label values, from protocol's one table of names.
pub const CLOSE_REASONS: [&str; CLOSE_KINDS.len()] = {
    let mut out = [""; CLOSE_KINDS.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = CLOSE_KINDS[i].label();
        i += 1;
    }
    out
};

/// Where `reason` counts in [`CLOSE_REASONS`].
fn close_index(reason: CloseReason) -> usize {
    match reason {
        CloseReason::InvalidRoomId => 0,
        CloseReason::InvalidPeerId => 1,
        CloseReason::Unauthorized => 2,
        CloseReason::OriginNotAllowed => 3,
        CloseReason::Kicked => 4,
        CloseReason::PeerIdTaken => 5,
        CloseReason::RateLimited => 6,
        CloseReason::ServerFull => 7,
        CloseReason::RoomFull => 8,
        CloseReason::MessageTooLarge => 9,
        CloseReason::GoingAway => 10,
        CloseReason::Timeout => 11,
        CloseReason::SlowConsumer => 12,
        CloseReason::ProtocolError => 13,
        CloseReason::Internal => 14,
        CloseReason::ClientClosed(_) => 15,
        CloseReason::Disconnected => 16,
        CloseReason::Replaced => 17,
        CloseReason::TryAgainLater => 18,
    }
}

const ERROR_CODES: [&str; ErrorCode::ALL.len()] = {
    let mut out = [""; ErrorCode::ALL.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = ErrorCode::ALL[i].as_str();
        i += 1;
    }
    out
};

const RELAY_KINDS: [&str; RelayKind::ALL.len()] = {
    let mut out = [""; RelayKind::ALL.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = RelayKind::ALL[i].as_str();
        i += 1;
    }
    out
};

/// Every series of the server. One instance per server, shared by the router, the
/// sessions and the HTTP handler.
pub struct Metrics {
    registry: Registry,
    sessions_active: Gauge,
    rooms_active: Gauge,
    sessions_opened: Counter,
    sessions_closed: CounterSet<{ CLOSE_REASONS.len() }>,
    sessions_refused: CounterSet<{ CLOSE_REASONS.len() }>,
    relayed: CounterSet<{ RELAY_KINDS.len() }>,
    errors: CounterSet<{ ERROR_CODES.len() }>,
    received_bytes: Counter,
    sent_bytes: Counter,
    relay_latency: LatencyHistogram,
    queue_high_water: Gauge,
    peers_suspended: Gauge,
    resumes: Counter,
    grace_expired: Counter,
    kept: Counter,
    kept_dropped: Counter,
    redis_up: Gauge,
    instances: Gauge,
    cross_sent: Counter,
    cross_received: Counter,
    bridge_latency: LatencyHistogram,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// `peer_queue`: the capacity of each session's outbound queue (`--peer-queue`),
    /// published beside its high-water mark.
    pub fn new(peer_queue: usize) -> Self {
        let m = Metrics {
            registry: Registry::default(),
            sessions_active: Gauge::default(),
            rooms_active: Gauge::default(),
            sessions_opened: Counter::default(),
            sessions_closed: CounterSet::new("reason", &CLOSE_REASONS),
            sessions_refused: CounterSet::new("reason", &CLOSE_REASONS),
            relayed: CounterSet::new("type", &RELAY_KINDS),
            errors: CounterSet::new("code", &ERROR_CODES),
            received_bytes: Counter::default(),
            sent_bytes: Counter::default(),
            relay_latency: LatencyHistogram::new(),
            queue_high_water: Gauge::default(),
            peers_suspended: Gauge::default(),
            resumes: Counter::default(),
            grace_expired: Counter::default(),
            kept: Counter::default(),
            kept_dropped: Counter::default(),
            redis_up: Gauge::default(),
            instances: Gauge::default(),
            cross_sent: Counter::default(),
            cross_received: Counter::default(),
            bridge_latency: LatencyHistogram::new(),
        };
        let mut registry = Registry::default();
        #[cfg(target_os = "linux")]
        registry.register_collector(Box::new(process::ProcessCollector));
        let r = registry.sub_registry_with_prefix("webrtc_signaling");
        r.register(
            "sessions_active",
            "Signaling sessions admitted to a room right now",
            m.sessions_active.clone(),
        );
        r.register(
            "rooms_active",
            "Rooms with at least one peer right now",
            m.rooms_active.clone(),
        );
        r.register(
            "sessions_opened",
            "Signaling sessions admitted to a room",
            m.sessions_opened.clone(),
        );
        r.register(
            "sessions_closed",
            "Admitted signaling sessions that ended, by reason (the close error code, or client_closed / disconnected)",
            m.sessions_closed.clone(),
        );
        r.register(
            "sessions_refused",
            "WebSocket upgrades refused before joining a room, by reason",
            m.sessions_refused.clone(),
        );
        r.register(
            "messages_relayed",
            "Messages queued for their target peer, by type",
            m.relayed.clone(),
        );
        r.register(
            "errors_sent",
            "Error messages sent to clients, by code",
            m.errors.clone(),
        );
        r.register(
            "received_bytes",
            "Bytes read from signaling WebSocket connections (frames, after the upgrade)",
            m.received_bytes.clone(),
        );
        r.register(
            "sent_bytes",
            "Bytes written to signaling WebSocket connections (frames, after the upgrade)",
            m.sent_bytes.clone(),
        );
        r.register(
            "relay_latency_seconds",
            "Time from the sender's session reading a relayed frame to the target's session handing it to its socket",
            m.relay_latency.clone(),
        );
        r.register(
            "peer_queue_high_water",
            "Most messages ever waiting in one session's outbound queue since start",
            m.queue_high_water.clone(),
        );
        r.register(
            "peers_suspended",
            "Peers whose session ended for a network reason, held for the resume grace (PROTOCOL.md §8)",
            m.peers_suspended.clone(),
        );
        r.register(
            "resumes",
            "Sessions that took a held peer over with its resume token",
            m.resumes.clone(),
        );
        r.register(
            "resume_grace_expired",
            "Held peers whose resume grace ran out (the room then heard peer_left)",
            m.grace_expired.clone(),
        );
        r.register(
            "kept_messages",
            "Relays kept for a held peer, to be delivered when it resumes",
            m.kept.clone(),
        );
        r.register(
            "kept_messages_dropped",
            "Kept relays dropped: beyond the peer-queue bound (oldest first), or from a peer that left",
            m.kept_dropped.clone(),
        );
        r.register(
            "redis_up",
            "1 while the cluster's Redis is reachable and this instance registered (PROTOCOL.md §9; 0 without --redis)",
            m.redis_up.clone(),
        );
        r.register(
            "cluster_instances",
            "Instances of the cluster alive, as last read from Redis",
            m.instances.clone(),
        );
        r.register(
            "cross_instance_relays_sent",
            "Relays handed to Redis for a peer on another instance",
            m.cross_sent.clone(),
        );
        r.register(
            "cross_instance_relays_received",
            "Relays from a peer on another instance delivered to a local peer",
            m.cross_received.clone(),
        );
        r.register(
            "redis_command_seconds",
            "Round trip of the bridge's Redis commands (a batch of relays, a claim, a leave)",
            m.bridge_latency.clone(),
        );
        let capacity: Gauge = Gauge::default();
        capacity.set(i64::try_from(peer_queue).unwrap_or(i64::MAX));
        r.register(
            "peer_queue_capacity",
            "Capacity of each session's outbound queue (--peer-queue)",
            capacity,
        );
        r.register(
            "build",
            "The running build: version, cargo features, target (always 1)",
            Info::new(build_labels()),
        );
        Metrics { registry, ..m }
    }

    /// [`Metrics::new`], plus the configured `--max-connections` and
    /// `--max-room-peers` as gauges (so dashboards can show use against the limit).
    pub fn with_limits(peer_queue: usize, max_sessions: usize, max_room_peers: usize) -> Self {
        let mut m = Metrics::new(peer_queue);
        let r = m.registry.sub_registry_with_prefix("webrtc_signaling");
        for (name, help, value) in [
            (
                "sessions_limit",
                "Signaling sessions allowed at once (--max-connections)",
                max_sessions,
            ),
            (
                "room_peers_limit",
                "Peers allowed per room (--max-room-peers)",
                max_room_peers,
            ),
        ] {
            let g: Gauge = Gauge::default();
            g.set(i64::try_from(value).unwrap_or(i64::MAX));
            r.register(name, help, g);
        }
        m
    }

    /// The whole exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// The router's view after a join or a removal.
    pub fn set_population(&self, sessions: usize, rooms: usize) {
        self.sessions_active
            .set(i64::try_from(sessions).unwrap_or(i64::MAX));
        self.rooms_active
            .set(i64::try_from(rooms).unwrap_or(i64::MAX));
    }

    /// The router's count of held peers.
    pub fn set_suspended(&self, n: usize) {
        self.peers_suspended
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn resumed(&self) {
        self.resumes.inc();
    }

    pub fn grace_expired(&self) {
        self.grace_expired.inc();
    }

    pub fn kept(&self) {
        self.kept.inc();
    }

    pub fn kept_dropped(&self, n: usize) {
        self.kept_dropped.inc_by(n as u64);
    }

    pub fn set_redis_up(&self, up: bool) {
        self.redis_up.set(i64::from(up));
    }

    pub fn set_instances(&self, n: usize) {
        self.instances.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn cross_sent(&self, n: usize) {
        self.cross_sent.inc_by(n as u64);
    }

    pub fn cross_received(&self) {
        self.cross_received.inc();
    }

    pub fn redis_command(&self, d: Duration) {
        self.bridge_latency.observe(d);
    }

    pub fn session_opened(&self) {
        self.sessions_opened.inc();
    }

    pub fn session_closed(&self, reason: CloseReason) {
        self.sessions_closed.inc(close_index(reason));
    }

    pub fn session_refused(&self, reason: CloseReason) {
        self.sessions_refused.inc(close_index(reason));
    }

    /// Only the router thread calls this (one router per `Metrics`), so the count needs
    /// no locked instruction.
    pub fn relayed(&self, kind: RelayKind) {
        self.relayed.inc_sole_writer(kind as usize);
    }

    pub fn error_sent(&self, code: ErrorCode) {
        self.errors.inc(code as usize);
    }

    pub fn received(&self, bytes: usize) {
        self.received_bytes.inc_by(bytes as u64);
    }

    pub fn sent(&self, bytes: usize) {
        self.sent_bytes.inc_by(bytes as u64);
    }

    pub fn relay_latency(&self, d: Duration) {
        self.relay_latency.observe(d);
    }

    /// A session's queue holds `len` messages: raise the high-water mark if needed
    /// (a plain load in the common case, an atomic max only for a new maximum).
    pub fn queue_len(&self, len: usize) {
        let len = i64::try_from(len).unwrap_or(i64::MAX);
        let mark = self.queue_high_water.inner();
        if len > mark.load(Ordering::Relaxed) {
            mark.fetch_max(len, Ordering::Relaxed);
        }
    }
}

/// The labels of `webrtc_signaling_build_info`.
fn build_labels() -> Vec<(&'static str, &'static str)> {
    vec![
        ("version", env!("CARGO_PKG_VERSION")),
        ("features", if cfg!(feature = "tls") { "tls" } else { "" }),
        ("arch", std::env::consts::ARCH),
        ("os", std::env::consts::OS),
    ]
}

/// The conventional `process_*` series, read from `/proc/self` at each scrape.
#[cfg(target_os = "linux")]
mod process;
mod series;

use series::CounterSet;
pub use series::LatencyHistogram;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_tables_match_the_protocol() {
        for code in ErrorCode::ALL {
            assert_eq!(ERROR_CODES[code as usize], code.as_str());
        }
        for kind in RelayKind::ALL {
            assert_eq!(RELAY_KINDS[kind as usize], kind.as_str());
        }
        // Every server-side reason (the ones with an error code).
        for r in CLOSE_KINDS.into_iter().filter(|r| r.error_code().is_some()) {
            assert_eq!(
                CLOSE_REASONS[close_index(r)],
                r.error_code().unwrap().as_str()
            );
        }
        assert_eq!(
            CLOSE_REASONS[close_index(CloseReason::ClientClosed(4000))],
            "client_closed"
        );
        assert_eq!(
            CLOSE_REASONS[close_index(CloseReason::Disconnected)],
            "disconnected"
        );
    }

    #[test]
    fn exposition_has_every_series() {
        let m = Metrics::new(256);
        m.set_population(3, 2);
        m.session_opened();
        m.session_closed(CloseReason::ClientClosed(1000));
        m.session_refused(CloseReason::RoomFull);
        m.relayed(RelayKind::IceCandidate);
        m.error_sent(ErrorCode::InvalidJson);
        m.received(10);
        m.sent(20);
        m.relay_latency(Duration::from_micros(30));
        m.relay_latency(Duration::from_secs(60));
        m.queue_len(7);
        m.queue_len(3);
        let text = m.encode();
        for line in [
            "# TYPE webrtc_signaling_sessions_active gauge",
            "webrtc_signaling_sessions_active 3",
            "webrtc_signaling_rooms_active 2",
            "webrtc_signaling_sessions_opened_total 1",
            "webrtc_signaling_sessions_closed_total{reason=\"client_closed\"} 1",
            "webrtc_signaling_sessions_closed_total{reason=\"disconnected\"} 0",
            "webrtc_signaling_sessions_refused_total{reason=\"room_full\"} 1",
            "webrtc_signaling_messages_relayed_total{type=\"ice_candidate\"} 1",
            "webrtc_signaling_messages_relayed_total{type=\"offer\"} 0",
            "webrtc_signaling_errors_sent_total{code=\"invalid_json\"} 1",
            "webrtc_signaling_received_bytes_total 10",
            "webrtc_signaling_sent_bytes_total 20",
            "# TYPE webrtc_signaling_relay_latency_seconds histogram",
            "webrtc_signaling_relay_latency_seconds_bucket{le=\"2.5e-05\"} 0",
            "webrtc_signaling_relay_latency_seconds_bucket{le=\"5e-05\"} 1",
            "webrtc_signaling_relay_latency_seconds_bucket{le=\"10\"} 1",
            "webrtc_signaling_relay_latency_seconds_bucket{le=\"+Inf\"} 2",
            "webrtc_signaling_relay_latency_seconds_count 2",
            "webrtc_signaling_peer_queue_high_water 7",
            "webrtc_signaling_peer_queue_capacity 256",
            "# TYPE process_cpu_seconds_total counter",
            "# TYPE process_resident_memory_bytes gauge",
            "# TYPE process_threads gauge",
            "# TYPE process_open_fds gauge",
            "# TYPE process_start_time_seconds gauge",
            &format!(
                "webrtc_signaling_build_info{{version=\"{}\",features=\"tls\",arch=\"{}\",os=\"linux\"}} 1",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::ARCH
            ),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }
}
