//! A host program that already handles SIGURG (the signal that wakes session
//! threads) keeps its handler: the server refuses to start instead of overwriting
//! it. In a test binary of its own, as the handler is process-wide.

use webrtc_signaling::{Config, Server};

extern "C" fn host_handler(_: libc::c_int) {}

#[test]
fn a_foreign_sigurg_handler_is_kept_and_start_fails_clearly() {
    // SAFETY: installs an empty, async-signal-safe handler from a zeroed sigaction.
    let rc = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = host_handler as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGURG, &action, std::ptr::null_mut())
    };
    assert_eq!(rc, 0);
    let config = Config {
        bind: "127.0.0.1".parse().unwrap(),
        port: 0,
        ..Config::default()
    };
    let err = match Server::start(config) {
        Ok(_) => panic!("the server started over the host's SIGURG handler"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("SIGURG"), "{err}");
    // SAFETY: reads the current action into a zeroed struct.
    let current = unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGURG, std::ptr::null(), &mut old);
        old.sa_sigaction
    };
    assert_eq!(current, host_handler as *const () as libc::sighandler_t);
}
