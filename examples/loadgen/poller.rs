//! `epoll(7)` for the threads that each hold many non-blocking sockets (`idle`,
//! `soak`), and an eventfd that lets another thread wake one of them.

use std::io;
use std::os::fd::RawFd;

pub use libc::epoll_event as Event;

pub const IN: u32 = libc::EPOLLIN as u32;
pub const OUT: u32 = libc::EPOLLOUT as u32;

pub fn event() -> Event {
    Event { events: 0, u64: 0 }
}

/// One epoll set; each registered descriptor carries a `u64` token of the caller's.
pub struct Epoll {
    fd: RawFd,
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 has no preconditions; the descriptor is closed in Drop.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll { fd })
    }

    fn ctl(&self, op: i32, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut ev = Event { events, u64: token };
        // SAFETY: `self.fd` is our epoll descriptor, `fd` an open descriptor of the
        // caller's, `ev` a valid event.
        if unsafe { libc::epoll_ctl(self.fd, op, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn add(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, events)
    }

    pub fn modify(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, events)
    }

    /// Errors ignored: the socket is being dropped or handed to another thread, and
    /// a stale registration would only produce a readiness nobody asks about.
    pub fn delete(&self, fd: RawFd) {
        // SAFETY: as in `ctl`; a null event is allowed for EPOLL_CTL_DEL.
        unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
    }

    /// Blocks up to `timeout_ms` (-1: no limit); the ready events are the first
    /// `n` of `events`. A signal's interruption is an empty wait.
    pub fn wait(&self, events: &mut [Event], timeout_ms: i32) -> io::Result<usize> {
        let max = events.len().min(i32::MAX as usize) as i32;
        // SAFETY: `events` is a valid buffer of at least `max` epoll_event.
        let n = unsafe { libc::epoll_wait(self.fd, events.as_mut_ptr(), max, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(n as usize)
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: our descriptor, closed once.
        unsafe { libc::close(self.fd) };
    }
}

/// An eventfd: `wake` from any thread makes the owner's epoll set readable, so a
/// command sent on a channel is seen at once rather than at the next timeout.
pub struct Waker {
    fd: RawFd,
}

impl Waker {
    pub fn new() -> io::Result<Waker> {
        // SAFETY: eventfd has no preconditions; the descriptor is closed in Drop.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Waker { fd })
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }

    pub fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a valid buffer to our eventfd. A full counter
        // (EAGAIN) already means "awake".
        unsafe { libc::write(self.fd, one.as_ptr().cast(), one.len()) };
    }

    /// Resets the counter so that the next wait blocks again.
    pub fn drain(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a valid buffer; EAGAIN when not woken.
        unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        // SAFETY: our descriptor, closed once.
        unsafe { libc::close(self.fd) };
    }
}
