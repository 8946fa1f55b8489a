//! systemd without systemd: readiness (`NOTIFY_SOCKET`, path and abstract) read by a
//! datagram socket of the test's own, socket activation (`LISTEN_FDS`) with a listener
//! the test binds and passes as descriptor 3, and `systemd-analyze verify` of the
//! socket unit beside the service (where installed; WEBRTC_SIGNALING_REQUIRE_SYSTEMD=1
//! makes a skip a failure).

mod common;

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use common::{Client, Process, DEADLINE};

const BIN: &str = env!("CARGO_BIN_EXE_webrtc-signaling");

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("webrtc-signaling-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The next datagram on `sock` (bounded by the deadline).
fn next_state(sock: &UnixDatagram) -> String {
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 512];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the deadline");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn readiness_over(sock: &UnixDatagram, notify_socket: &str) {
    let mut server = Process::spawn(&[], &[("NOTIFY_SOCKET", notify_socket)]);
    let ready = next_state(sock);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    // Ready means serving: a session works at once.
    let addr = server.addr();
    let (_c, peers) = Client::join(addr, "room", "a");
    assert!(peers.is_empty());
    server.signal("HUP");
    let reloading = next_state(sock);
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    assert_eq!(next_state(sock), "READY=1");
    server.signal("TERM");
    assert_eq!(next_state(sock), "STOPPING=1");
    let (code, _, lines) = server.wait_exit();
    assert_eq!(code, Some(0), "{lines:#?}");
}

#[test]
fn readiness_reload_and_stopping_reach_a_path_notify_socket() {
    let dir = temp_dir("notify");
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    readiness_over(&sock, path.to_str().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn readiness_reaches_an_abstract_notify_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("webrtc-signaling-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    readiness_over(&sock, &format!("@{name}"));
}

/// The binary started the way systemd starts it for a socket unit: the listener as
/// descriptor 3, LISTEN_FDS=1 and LISTEN_PID set to the server's own pid (`sh` sets
/// it to `$$` and `exec`s, which keeps the pid).
fn activated(listener: Option<&TcpListener>) -> Process {
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        r#"export LISTEN_PID=$$ LISTEN_FDS=1; exec "$0" "$@""#,
        BIN,
    ])
    .args(["--bind", "127.0.0.1", "--port", "0"]);
    if let Some(l) = listener {
        let fd = l.as_raw_fd();
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if fd == 3 {
                    // dup2 onto itself keeps close-on-exec: clear it.
                    libc::fcntl(3, libc::F_SETFD, 0);
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    Process::from_command(cmd)
}

#[test]
fn socket_activation_serves_on_the_passed_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut server = activated(Some(&listener));
    server.wait_line("the activation notice", |l| {
        l.contains("systemd socket activation: 1 listening socket(s)")
    });
    assert_eq!(
        server.addr(),
        addr,
        "the server listens where systemd bound"
    );
    drop(listener); // the server holds its own copy
    let (_a, _) = Client::join(addr, "room", "a");
    let (_b, peers) = Client::join(addr, "room", "b");
    assert_eq!(peers, ["a"]);
    server.signal("TERM");
    let (code, _, lines) = server.wait_exit();
    assert_eq!(code, Some(0), "{lines:#?}");
}

#[test]
fn a_descriptor_that_is_not_a_listening_socket_is_a_clear_error() {
    let server = activated(None);
    let (code, _, lines) = server.wait_exit();
    assert_eq!(code, Some(1), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("LISTEN_FDS descriptor 3")),
        "{lines:#?}"
    );
}

#[test]
fn systemd_analyze_verify_accepts_the_socket_unit() {
    let Some(analyze) = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    else {
        if std::env::var("WEBRTC_SIGNALING_REQUIRE_SYSTEMD").as_deref() == Ok("1") {
            panic!("systemd-analyze is not installed (WEBRTC_SIGNALING_REQUIRE_SYSTEMD=1)");
        }
        println!("SKIPPED systemd-analyze verify: not installed (apt package systemd)");
        return;
    };
    let dir = temp_dir("socket-unit");
    let service = include_str!("../contrib/webrtc-signaling.service").replace(
        "ExecStart=/usr/local/bin/webrtc-signaling",
        &format!("ExecStart={BIN}"),
    );
    std::fs::write(dir.join("webrtc-signaling.service"), service).unwrap();
    std::fs::write(
        dir.join("webrtc-signaling.socket"),
        include_str!("../contrib/webrtc-signaling.socket"),
    )
    .unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(dir.join("webrtc-signaling.socket"))
        .arg(dir.join("webrtc-signaling.service"))
        .output()
        .expect("run systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "{}\n{text}",
        out.status
    );
    let _ = std::fs::remove_dir_all(&dir);
}
