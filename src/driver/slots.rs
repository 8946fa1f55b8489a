//! Connection slots: how many connections may be in their HTTP phase (TLS handshake,
//! request heads, REST answers, upgrades) and how many in sessions, each bounded on
//! its own so that neither kind can starve the other; an optional cap per client
//! address; and the registry of idle keep-alive connections that new work may evict.
//!
//! A connection takes an HTTP slot when it is accepted and trades it for a session
//! slot when it upgrades. When every HTTP slot is taken, the oldest idle keep-alive
//! connection (one waiting for its next request with nothing received) is evicted
//! (without one, the accept thread waits a moment for a slot to free, then refuses):
//! its socket is shut down from the accept thread, which wakes its thread's blocking
//! read with an end of stream, and its slot passes to the new connection at once.
//! Slow heads and handshakes are not evicted: the head deadline bounds them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::config::Limits;

/// Why a new connection gets no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Every HTTP slot is busy (none idle).
    Http,
    /// The client address has its `--max-connections-per-ip` open.
    Address,
}

/// The slot counts and the idle registry.
pub struct Slots {
    http_cap: usize,
    session_cap: usize,
    /// 0: no cap per address.
    per_ip_cap: usize,
    state: Mutex<State>,
    /// Signalled when an HTTP slot frees or a connection goes idle.
    freed: Condvar,
}

#[derive(Default)]
struct State {
    http: usize,
    sessions: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// Idle keep-alive connections by slot id (ids grow, so the first is the oldest
    /// to have gone idle): its socket and address.
    idle: BTreeMap<u64, (RawFd, IpAddr)>,
    /// Evicted connections whose slot already belongs to another connection.
    evicted: HashSet<u64>,
    next_id: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Http,
    Session,
}

/// One connection's slot; given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    ip: IpAddr,
    phase: Phase,
}

impl Slots {
    pub fn new(limits: &Limits) -> Arc<Slots> {
        Arc::new(Slots {
            http_cap: limits.max_http_connections,
            session_cap: limits.max_connections,
            per_ip_cap: limits.max_connections_per_ip,
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent under every panic (plain counters): go on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An HTTP slot for a new connection from `ip`, evicting the oldest idle
    /// keep-alive connection (of that address, when the address is at its cap) if
    /// that is the only way.
    #[cfg(test)]
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Full> {
        self.admit_by(ip, Instant::now())
    }

    /// [`Slots::admit`], waiting until `deadline` for an HTTP slot to free: a burst of
    /// new connections (a class opening its laptops) waits in the listen backlog while
    /// the handshakes ahead of it finish, instead of getting 503.
    pub fn admit_by(self: &Arc<Self>, ip: IpAddr, deadline: Instant) -> Result<Slot, Full> {
        let mut st = self.lock();
        let id = loop {
            match self.take(&mut st, ip) {
                Err(Full::Http) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Full::Http);
                    }
                    st = match self.freed.wait_timeout(st, left) {
                        Ok((st, _)) => st,
                        Err(e) => e.into_inner().0,
                    };
                }
                taken => break taken?,
            }
        };
        drop(st);
        Ok(Slot {
            slots: self.clone(),
            id,
            ip,
            phase: Phase::Http,
        })
    }

    /// The counting part of [`Slots::admit`] (no `Slot` exists until the lock is
    /// released: dropping one takes the lock): the new slot's id.
    fn take(&self, st: &mut State, ip: IpAddr) -> Result<u64, Full> {
        let id = st.next_id;
        st.next_id += 1;
        if self.per_ip_cap > 0 && st.per_ip.get(&ip).copied().unwrap_or(0) >= self.per_ip_cap {
            // Same address: the counts stay as they are.
            return st.evict_oldest(Some(ip)).map(|_| id).ok_or(Full::Address);
        }
        if st.http < self.http_cap {
            st.http += 1;
        } else {
            let old = st.evict_oldest(None).ok_or(Full::Http)?;
            st.release_ip(old);
        }
        *st.per_ip.entry(ip).or_default() += 1;
        Ok(id)
    }

    /// Evicts every idle keep-alive connection (the server is stopping).
    pub fn evict_idle(&self) {
        let mut st = self.lock();
        while let Some(ip) = st.evict_oldest(None) {
            // Their slots go to nobody: count them free now.
            st.http -= 1;
            st.release_ip(ip);
        }
        self.freed.notify_all();
    }

    /// Connections in their HTTP phase, and in sessions.
    #[cfg(test)]
    pub fn counts(&self) -> (usize, usize) {
        let st = self.lock();
        (st.http, st.sessions)
    }
}

impl State {
    /// Shuts the oldest idle connection (of `ip` only, if given) and marks its slot as
    /// passed on; its address.
    fn evict_oldest(&mut self, ip: Option<IpAddr>) -> Option<IpAddr> {
        let id = *self
            .idle
            .iter()
            .find(|(_, (_, a))| ip.is_none_or(|ip| *a == ip))?
            .0;
        let (fd, addr) = self.idle.remove(&id)?;
        // SAFETY: shutdown(2) takes no memory from us. `fd` is open and still the
        // evicted connection's: a connection deregisters (under this lock) before its
        // socket can be closed, see `Idle`.
        unsafe {
            libc::shutdown(fd, libc::SHUT_RDWR);
        }
        self.evicted.insert(id);
        Some(addr)
    }

    fn release_ip(&mut self, ip: IpAddr) {
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

impl Slot {
    /// Registers the connection as idle (waiting for its next request, nothing
    /// received) until the returned guard is finished or dropped. `None`: it has
    /// been evicted already.
    ///
    /// `socket` must outlive the guard: only then is the registered descriptor still
    /// this connection's when the accept thread shuts it. The callers keep the socket
    /// in a variable declared before the guard, so it is dropped after it, panics
    /// included.
    pub fn idle(&self, socket: &impl AsRawFd) -> Option<Idle<'_>> {
        let mut st = self.slots.lock();
        if st.evicted.contains(&self.id) {
            return None;
        }
        st.idle.insert(self.id, (socket.as_raw_fd(), self.ip));
        self.slots.freed.notify_one();
        Some(Idle { slot: self })
    }

    /// Trades the HTTP slot for a session slot; `false` if every session slot is
    /// taken (the connection keeps its HTTP slot and is refused).
    pub fn enter_session(&mut self) -> bool {
        let mut st = self.slots.lock();
        if self.phase == Phase::Session || st.evicted.contains(&self.id) {
            return self.phase == Phase::Session;
        }
        if st.sessions >= self.slots.session_cap {
            return false;
        }
        st.sessions += 1;
        st.http -= 1;
        self.phase = Phase::Session;
        self.slots.freed.notify_one();
        true
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut st = self.slots.lock();
        st.idle.remove(&self.id);
        if st.evicted.remove(&self.id) {
            return;
        }
        match self.phase {
            Phase::Http => {
                st.http -= 1;
                self.slots.freed.notify_one();
            }
            Phase::Session => st.sessions -= 1,
        }
        st.release_ip(self.ip);
    }
}

/// An idle registration (see [`Slot::idle`]).
pub struct Idle<'a> {
    slot: &'a Slot,
}

impl Idle<'_> {
    /// Ends the idle wait: `false` if the connection was evicted meanwhile (its slot
    /// belongs to another connection now: it must close without answering).
    pub fn finish(self) -> bool {
        let mut st = self.slot.slots.lock();
        st.idle.remove(&self.slot.id);
        !st.evicted.contains(&self.slot.id)
    }
}

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        self.slot.slots.lock().idle.remove(&self.slot.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn slots(http: usize, sessions: usize, per_ip: usize) -> Arc<Slots> {
        Slots::new(&Limits {
            max_http_connections: http,
            max_connections: sessions,
            max_connections_per_ip: per_ip,
            ..Limits::default()
        })
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    /// A connected socket pair: (server side, client side).
    fn socket_pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (l.accept().unwrap().0, c)
    }

    #[test]
    fn http_and_session_slots_are_counted_apart() {
        let s = slots(2, 1, 0);
        let mut a = s.admit(ip(1)).unwrap();
        let b = s.admit(ip(1)).unwrap();
        assert_eq!(s.admit(ip(2)).err(), Some(Full::Http));
        assert!(a.enter_session());
        assert_eq!(s.counts(), (1, 1));
        let mut c = s.admit(ip(2)).unwrap();
        assert!(!c.enter_session(), "the one session slot is taken");
        drop((a, b, c));
        assert_eq!(s.counts(), (0, 0));
    }

    #[test]
    fn the_oldest_idle_connection_is_evicted_and_its_slot_passed_on() {
        let s = slots(2, 10, 0);
        let (sock_a, mut client_a) = socket_pair();
        let (sock_b, _client_b) = socket_pair();
        let a = s.admit(ip(1)).unwrap();
        let b = s.admit(ip(2)).unwrap();
        let idle_a = a.idle(&sock_a).unwrap();
        let idle_b = b.idle(&sock_b).unwrap();
        let c = s.admit(ip(3)).unwrap();
        // a's client sees the end of the stream; a learns it was evicted.
        let mut byte = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut client_a, &mut byte).unwrap(), 0);
        assert!(!idle_a.finish());
        assert!(idle_b.finish(), "b was idle for less time");
        assert!(
            a.idle(&sock_a).is_none(),
            "an evicted connection stays evicted"
        );
        assert_eq!(s.admit(ip(4)).err(), Some(Full::Http), "nobody idle now");
        drop(a);
        assert_eq!(s.counts(), (2, 0), "the evicted slot is c's now");
        drop((b, c));
        assert_eq!(s.counts(), (0, 0));
    }

    #[test]
    fn a_new_connection_waits_for_a_slot_to_free() {
        let s = slots(1, 10, 0);
        let a = s.admit(ip(1)).unwrap();
        let waiter = {
            let s = s.clone();
            std::thread::spawn(move || {
                let far = Instant::now() + std::time::Duration::from_secs(30);
                s.admit_by(ip(2), far).map(|_| ())
            })
        };
        drop(a);
        assert_eq!(waiter.join().unwrap(), Ok(()));
    }

    #[test]
    fn the_cap_per_address_evicts_that_address_only() {
        let s = slots(10, 10, 2);
        let (sock, _client) = socket_pair();
        let a1 = s.admit(ip(1)).unwrap();
        let _a2 = s.admit(ip(1)).unwrap();
        assert_eq!(s.admit(ip(1)).err(), Some(Full::Address));
        let b = s.admit(ip(2)).unwrap();
        let _idle_b = b.idle(&sock).unwrap();
        assert_eq!(s.admit(ip(1)).err(), Some(Full::Address), "b is not a's");
        let idle_a = a1.idle(&sock).unwrap();
        let _a3 = s.admit(ip(1)).unwrap();
        assert!(!idle_a.finish());
        assert_eq!(s.counts(), (3, 0));
    }
}
