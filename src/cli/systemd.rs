//! systemd integration without a daemon or a library: readiness (`Type=notify`: a
//! datagram with `READY=1`, `RELOADING=1`, `STOPPING=1` to `$NOTIFY_SOCKET`, a path or
//! an abstract `@name`) and socket activation (`LISTEN_PID`/`LISTEN_FDS`: listening
//! sockets from descriptor 3 on, so a `.socket` unit can bind port 443 for an
//! unprivileged service). Both are a few system calls; see sd_notify(3) and
//! sd_listen_fds(3) for the conventions followed here.

use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixDatagram;

/// Where `LISTEN_FDS` descriptors start (SD_LISTEN_FDS_START).
const FIRST_FD: RawFd = 3;

/// Sends `state` to the service manager; does nothing outside systemd. Failures are
/// returned for the log: readiness is best effort, never a reason to stop serving.
pub fn notify(state: &str) -> io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            sock.send_to(state.as_bytes(), &path)?;
        }
    }
    Ok(())
}

/// `RELOADING=1` wants the time of the reload (systemd 253's `Type=notify-reload`).
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1000
}

/// The listening sockets systemd passed to this process (none if `LISTEN_PID` is not
/// this process: the variables were meant for a parent). Each must be a listening
/// TCP socket; they are taken over (close-on-exec, blocking accept).
pub fn listeners() -> Result<Vec<TcpListener>, String> {
    let Ok(pid) = std::env::var("LISTEN_PID") else {
        return Ok(Vec::new());
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(Vec::new());
    }
    let n: RawFd = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| (1..=64).contains(n))
        .ok_or("LISTEN_PID is set but LISTEN_FDS is not a count of sockets")?;
    let mut out = Vec::new();
    for fd in FIRST_FD..FIRST_FD + n {
        check_listening_tcp(fd).map_err(|e| format!("LISTEN_FDS descriptor {fd}: {e}"))?;
        // SAFETY: systemd hands this descriptor to us; nothing else in this process
        // owns it (checked above to be an open listening socket).
        let listener = unsafe { TcpListener::from_raw_fd(fd) };
        // SAFETY: fcntl on a descriptor we now own.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        listener
            .set_nonblocking(false)
            .map_err(|e| format!("LISTEN_FDS descriptor {fd}: {e}"))?;
        out.push(listener);
    }
    Ok(out)
}

fn sockopt(fd: RawFd, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writing an int option.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(v)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn check_listening_tcp(fd: RawFd) -> Result<(), String> {
    let e = |e: io::Error| e.to_string();
    let domain = sockopt(fd, libc::SO_DOMAIN).map_err(e)?;
    let kind = sockopt(fd, libc::SO_TYPE).map_err(e)?;
    let listening = sockopt(fd, libc::SO_ACCEPTCONN).map_err(e)?;
    if !matches!(domain, libc::AF_INET | libc::AF_INET6) || kind != libc::SOCK_STREAM {
        return Err("not a TCP socket (use ListenStream=PORT or ADDR:PORT)".into());
    }
    if listening != 1 {
        return Err("not a listening socket".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tcp_listener_passes_the_check_and_a_stream_does_not() {
        use std::os::fd::AsRawFd;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(check_listening_tcp(l.as_raw_fd()), Ok(()));
        let (a, _b) = UnixDatagram::pair().unwrap();
        assert!(check_listening_tcp(a.as_raw_fd()).is_err());
        assert!(monotonic_usec() > 0);
    }
}
