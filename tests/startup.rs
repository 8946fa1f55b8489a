//! What the binary says when it starts, as an operator reads it: the version, every
//! listening URL and the client page, a date, time and zone on every text line, and
//! the address a failed bind could not take.

mod common;

use std::net::TcpListener;

use common::Process;

/// `2025-01-31T12:00:00.123Z [INFO] ...`
fn has_utc_timestamp(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z'
        && b[..4].iter().all(u8::is_ascii_digit)
}

#[test]
fn start_up_names_the_version_the_urls_and_the_client_page() {
    let mut server = Process::spawn(&["--ops-bind", "127.0.0.1:0"], &[]);
    let addr = server.addr();
    let version = format!("webrtc-signaling {} starting", env!("CARGO_PKG_VERSION"));
    server.wait_line("the version", |l| l.contains(&version));
    let urls = format!("serving http://{addr}, ws://{addr}/webrtc/signaling/{{room}}/{{peer}}");
    server.wait_line("the URLs", |l| l.contains(&urls));
    let page = format!("client page: http://{addr}/webrtc/client");
    server.wait_line("the client page", |l| l.contains(&page));
    server.wait_line("the ops listener", |l| {
        l.contains("serving ops: http://127.0.0.1:")
    });
    server.signal("TERM");
    let (code, _, lines) = server.wait_exit();
    assert_eq!(code, Some(0));
    for line in &lines {
        assert!(has_utc_timestamp(line), "no date, time and zone: {line:?}");
    }
}

#[test]
fn a_port_in_use_is_named() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let server = Process::spawn(&["--port", &port], &[]);
    let (code, _, lines) = server.wait_exit();
    assert_eq!(code, Some(1), "{lines:#?}");
    let want = format!("cannot listen on 127.0.0.1:{port}");
    assert!(lines.iter().any(|l| l.contains(&want)), "{lines:#?}");
}
