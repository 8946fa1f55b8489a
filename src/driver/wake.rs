//! Waking one session thread that is blocked in `ppoll(2)` on its own socket.
//!
//! A session is one thread that must wake for either of two things: bytes on its
//! socket, or a message the router queued for it. `ppoll` waits for the first; a
//! thread-directed signal (`SIGURG`, blocked except inside `ppoll`) interrupts it for
//! the second. That costs no file descriptor per session (an eventfd would double the
//! descriptors a 10,000-peer server needs) and no periodic wake-ups: the router sends
//! the signal only when the thread is actually parked.
//!
//! `pthread_kill` is safe because the thread cannot retire (exit) while a waker that
//! saw it parked is still signalling (`in_flight`); the owner never waits on a waker
//! otherwise, so nothing spins, even with every thread on one core.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{fence, AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const RUNNING: u8 = 0;
const PARKED: u8 = 1;
const WAKING: u8 = 2;
const RETIRED: u8 = 3;

/// The signal used to interrupt `ppoll`. Its default action is "ignore", so a stray
/// one can do no harm; the server installs a no-op handler so it interrupts `ppoll`.
const WAKE_SIGNAL: libc::c_int = libc::SIGURG;

extern "C" fn on_wake_signal(_: libc::c_int) {}

/// Installs the wake signal's handler, once per process. A handler that a host
/// program already installed is never overwritten: the server refuses to start
/// instead, with a clear error (chaining a foreign handler from ours could call it
/// for our wake-ups, which it does not expect).
pub fn install() -> io::Result<()> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT
        .get_or_init(|| {
            // SAFETY: sigaction with a null new action only reads the current one
            // into a zeroed, valid struct.
            let current = unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(WAKE_SIGNAL, std::ptr::null(), &mut old) != 0 {
                    return Err(io::Error::last_os_error().to_string());
                }
                old.sa_sigaction
            };
            let ours = on_wake_signal as *const () as libc::sighandler_t;
            if current != libc::SIG_DFL && current != libc::SIG_IGN && current != ours {
                return Err("SIGURG already has a handler in this process; the server \
                            needs SIGURG to wake its session threads"
                    .to_owned());
            }
            // SAFETY: a zeroed sigaction is valid; the handler is async-signal-safe
            // (empty).
            let rc = unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = ours;
                libc::sigemptyset(&mut action.sa_mask);
                // No SA_RESTART: ppoll must return EINTR.
                action.sa_flags = 0;
                libc::sigaction(WAKE_SIGNAL, &action, std::ptr::null_mut())
            };
            if rc != 0 {
                return Err(io::Error::last_os_error().to_string());
            }
            Ok(())
        })
        .clone()
        .map_err(io::Error::other)
}

/// The handle other threads use to wake the owning thread.
pub struct Waker {
    state: AtomicU8,
    /// Wakers between "saw PARKED" and "done signalling": the owner may not exit
    /// while any is in flight.
    in_flight: AtomicU32,
    thread: libc::pthread_t,
}

impl Waker {
    /// Wakes the owner if it is parked; otherwise it will see the new work anyway.
    pub fn wake(&self) {
        // Pairs with the fence in `Parker::park`: either the owner sees our new work
        // when it re-checks, or we see PARKED here.
        fence(Ordering::SeqCst);
        if self.state.load(Ordering::SeqCst) != PARKED {
            return;
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if self
            .state
            .compare_exchange(PARKED, WAKING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            // SAFETY: the owner cannot retire (and exit) while `in_flight` is non-zero,
            // and it was not retired when the exchange succeeded.
            unsafe {
                libc::pthread_kill(self.thread, WAKE_SIGNAL);
            }
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The owning thread's side: blocks the wake signal outside `ppoll`. It must stay
/// on the thread that made it (the signal is sent to that thread): not `Send`.
pub struct Parker {
    waker: Arc<Waker>,
    /// The thread's signal mask with the wake signal unblocked, for `ppoll`.
    poll_mask: libc::sigset_t,
    _not_send: PhantomData<*const ()>,
}

impl Parker {
    /// Sets up the calling thread; the returned parker must stay on this thread.
    pub fn for_current_thread() -> io::Result<Parker> {
        install()?;
        // SAFETY: plain libc calls on valid, initialised signal sets.
        let poll_mask = unsafe {
            let mut block: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut block);
            libc::sigaddset(&mut block, WAKE_SIGNAL);
            let mut old: libc::sigset_t = std::mem::zeroed();
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old);
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            libc::sigdelset(&mut old, WAKE_SIGNAL);
            old
        };
        Ok(Parker {
            _not_send: PhantomData,
            waker: Arc::new(Waker {
                state: AtomicU8::new(RUNNING),
                in_flight: AtomicU32::new(0),
                // SAFETY: always safe.
                thread: unsafe { libc::pthread_self() },
            }),
            poll_mask,
        })
    }

    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// Announces that the thread is about to wait. The caller must re-check for work
    /// after this and before [`Parker::poll`], so a wake between the two is not lost
    /// (the signal stays pending and interrupts the poll at once).
    pub fn park(&self) {
        self.waker.state.store(PARKED, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Waits until `fd` has one of `events`, a wake-up arrives, or `timeout` passes.
    /// Returns the ready events (0 on timeout or wake-up).
    pub fn poll(
        &self,
        fd: BorrowedFd<'_>,
        events: libc::c_short,
        timeout: Duration,
    ) -> libc::c_short {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            // Infallible where c_long is 64-bit; on 32-bit hosts (a Raspberry Pi) the
            // value is still below 1e9 and fits.
            #[allow(clippy::unnecessary_fallible_conversions)]
            tv_nsec: libc::c_long::try_from(timeout.subsec_nanos()).unwrap_or(0),
        };
        // SAFETY: one valid pollfd, a valid timespec and signal mask for the call.
        let n = unsafe { libc::ppoll(&mut pfd, 1, &ts, &self.poll_mask) };
        if n > 0 {
            pfd.revents
        } else {
            0
        }
    }

    /// Back to running. A signal a waker sent meanwhile stays pending and at worst
    /// ends the next poll early.
    pub fn unpark(&self) {
        self.waker.state.store(RUNNING, Ordering::SeqCst);
    }
}

impl Drop for Parker {
    /// After this no waker signals the thread (which may then exit).
    fn drop(&mut self) {
        self.waker.state.store(RETIRED, Ordering::SeqCst);
        // A waker that saw PARKED before the store may still be signalling; on a
        // single core it needs the CPU to finish, hence yield rather than spin.
        while self.waker.in_flight.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    use std::time::Instant;

    /// Far beyond any scheduling delay: a poll that waits this long was not woken.
    const LONG: Duration = Duration::from_secs(30);

    #[test]
    fn a_wake_between_park_and_poll_is_not_lost() {
        let (a, _b) = UnixStream::pair().unwrap();
        let parker = Parker::for_current_thread().unwrap();
        let waker = parker.waker();
        parker.park();
        waker.wake(); // the signal stays pending: it is blocked outside ppoll
        let started = Instant::now();
        assert_eq!(parker.poll(a.as_fd(), libc::POLLIN, LONG), 0);
        assert!(started.elapsed() < LONG);
        parker.unpark();
    }

    #[test]
    fn a_wake_from_another_thread_ends_the_poll() {
        let (a, _b) = UnixStream::pair().unwrap();
        let parker = Parker::for_current_thread().unwrap();
        let waker = parker.waker();
        parker.park();
        let t = std::thread::spawn(move || waker.wake());
        let started = Instant::now();
        parker.poll(a.as_fd(), libc::POLLIN, LONG);
        assert!(started.elapsed() < LONG);
        parker.unpark();
        t.join().unwrap();
    }

    #[test]
    fn a_running_thread_is_not_signalled_and_readiness_is_reported() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let parker = Parker::for_current_thread().unwrap();
        // Not parked: a wake-up is a no-op (the thread sees its work when it checks).
        parker.waker().wake();
        b.write_all(b"x").unwrap();
        parker.park();
        let ready = parker.poll(a.as_fd(), libc::POLLIN, LONG);
        parker.unpark();
        assert_eq!(ready & libc::POLLIN, libc::POLLIN);
    }
}
