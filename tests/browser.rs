//! Real-browser tests of the built-in client (`/webrtc/client`,
//! static/client.html + static/signaling.js) against the real server.
//!
//! Each scenario drives Debian's Chromium headless over the DevTools
//! protocol (tests/browser/cdp.rs), through the element ids of PROTOCOL.md
//! section 7 only. WebRTC must not touch any real network: every #[test]
//! re-executes this test binary, for that one test, inside a fresh network
//! namespace holding only a loopback interface
//! (`unshare -n -- sh -c 'ip link set lo up && exec "$0" "$@"' <exe> <test> --exact`);
//! the server (Server::start on 127.0.0.1:0) and Chromium run in there.
//!
//! Skips (prints why, passes) when Chromium or `unshare -n` is missing,
//! unless WEBRTC_SIGNALING_REQUIRE_BROWSER=1 (then a skip is a failure).
//! WEBRTC_SIGNALING_SCREENSHOT=<path> saves a PNG of the two-peer call.
//! Scenarios run one at a time (they share the machine's cores).

#[path = "browser/cdp.rs"]
mod cdp;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use cdp::Chromium;
use serde_json::{json, Value};
use webrtc_signaling::access::{self, Claims};
use webrtc_signaling::{Config, Secret, Server};

/// Set (to the Chromium binary) in the re-executed test inside the namespace.
const INNER_ENV: &str = "WEBRTC_SIGNALING_BROWSER_NETNS";
const REQUIRE_ENV: &str = "WEBRTC_SIGNALING_REQUIRE_BROWSER";
const SCREENSHOT_ENV: &str = "WEBRTC_SIGNALING_SCREENSHOT";
/// =1: print every page's #status, #peers, videos and #log tail at the end
/// of each scenario (they are always printed when a scenario fails).
const LOGS_ENV: &str = "WEBRTC_SIGNALING_BROWSER_LOGS";

/// Generous deadlines: they bound a failure, they do not pace the test.
const SHORT: Duration = Duration::from_secs(10);
const MEDIA: Duration = Duration::from_secs(45);
const POLL: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------
// Scenarios

macro_rules! browser_test {
    ($name:ident, $title:expr) => {
        #[test]
        fn $name() {
            run(stringify!($name), $title, scenario::$name);
        }
    };
}

browser_test!(a_seed_two_tabs_see_each_other, "(a) seed steps, two tabs");
browser_test!(b_late_video_one_side_only, "(b) late video, one side only");
browser_test!(c_three_peers_full_mesh, "(c) three peers, full mesh");
browser_test!(
    d_closed_tab_leaves_and_rejoins,
    "(d) closed tab leaves, id rejoins"
);
browser_test!(e_duplicate_peer_id_refused, "(e) duplicate peer id refused");
browser_test!(f_no_camera_still_receives, "(f) no camera, still receives");
browser_test!(
    g_stop_and_restart_video,
    "(g) stop/restart video, both sides"
);
browser_test!(
    h_client_plumbing,
    "(h) token, ice-servers, disconnect, shutdown"
);
browser_test!(
    i_https_wss_with_tokens_and_origins,
    "(i) https/wss, tokens, origin allow-list"
);

mod scenario {
    use super::*;

    /// The seed's manual steps: open two tabs, type room/peer, Connect,
    /// Start Video in each; both see the other's video.
    pub fn a_seed_two_tabs_see_each_other(env: &Env) {
        let b = env.browser();
        let p1 = b.open("peer1", &env.client_url(""), None);
        let p2 = b.open("peer2", &env.client_url(""), None);
        for (p, id) in [(&p1, "peer1"), (&p2, "peer2")] {
            p.type_into("room-id", "room1");
            p.type_into("peer-id", id);
            p.click("connect");
            p.wait_status("connected");
            p.click("start-video");
            p.wait(
                "the local preview plays",
                "document.getElementById('local-video').videoWidth > 0",
                MEDIA,
            );
        }
        p1.assert_peers(&["peer2"]);
        p2.assert_peers(&["peer1"]);
        p1.assert_video_flowing("peer2");
        p2.assert_video_flowing("peer1");
        p1.assert_remote_videos(&["peer2"]);
        p2.assert_remote_videos(&["peer1"]);
        if let Some(path) = std::env::var_os(SCREENSHOT_ENV) {
            p1.screenshot(Path::new(&path));
        }
        b.assert_no_exceptions();
    }

    /// One side starts video only after both are in the room, the other
    /// never does: the non-sending side still shows decoding video.
    pub fn b_late_video_one_side_only(env: &Env) {
        let b = env.browser();
        // "anna" < "bert": the late sender is the impolite peer.
        let anna = b.open(
            "anna",
            &env.client_url("?room=late&peer=anna&autoconnect=1"),
            None,
        );
        anna.wait_status("connected");
        let bert = b.open(
            "bert",
            &env.client_url("?room=late&peer=bert&autoconnect=1"),
            None,
        );
        bert.wait_status("connected");
        anna.wait_peers(&["bert"]);
        bert.wait_peers(&["anna"]);
        // Known peers get their <video> at join, before any track.
        anna.assert_remote_videos(&["bert"]);
        bert.assert_remote_videos(&["anna"]);

        bert.click("start-video");
        anna.assert_video_flowing("bert");
        anna.assert_remote_videos(&["bert"]);
        bert.assert_remote_videos(&["anna"]);
        b.assert_no_exceptions();
    }

    /// Three peers in one room: each sees two remote videos, in join order.
    /// peer-a starts its camera before connecting, the others after.
    pub fn c_three_peers_full_mesh(env: &Env) {
        let b = env.browser();
        let pa = b.open("peer-a", &env.client_url("?room=mesh&peer=peer-a"), None);
        pa.click("start-video");
        pa.wait(
            "the local preview plays",
            "document.getElementById('local-video').videoWidth > 0",
            MEDIA,
        );
        pa.click("connect");
        pa.wait_status("connected");
        let pb = b.open(
            "peer-b",
            &env.client_url("?room=mesh&peer=peer-b&autoconnect=1"),
            None,
        );
        pb.wait_status("connected");
        let pc = b.open(
            "peer-c",
            &env.client_url("?room=mesh&peer=peer-c&autoconnect=1"),
            None,
        );
        pc.wait_status("connected");
        pb.click("start-video");
        pc.click("start-video");

        pa.wait_peers(&["peer-b", "peer-c"]);
        pb.wait_peers(&["peer-a", "peer-c"]);
        pc.wait_peers(&["peer-a", "peer-b"]);
        for (p, others) in [
            (&pa, ["peer-b", "peer-c"]),
            (&pb, ["peer-a", "peer-c"]),
            (&pc, ["peer-a", "peer-b"]),
        ] {
            for o in others {
                p.assert_video_flowing(o);
            }
            p.assert_remote_videos(&others);
        }
        b.assert_no_exceptions();
    }

    /// A closed tab disappears from the others' #peers and #remote-videos
    /// within 5 s, and the same id can join again (and gets video again).
    pub fn d_closed_tab_leaves_and_rejoins(env: &Env) {
        let b = env.browser();
        let url = |id: &str| env.client_url(&format!("?room=leave&peer={id}&autoconnect=1"));
        let p1 = b.open("p1", &url("p1"), None);
        p1.wait_status("connected");
        p1.click("start-video");
        let p2 = b.open("p2", &url("p2"), None);
        p2.wait_status("connected");
        let p3 = b.open("p3", &url("p3"), None);
        p3.wait_status("connected");
        p3.click("start-video");
        p3.assert_video_flowing("p1");
        p1.assert_video_flowing("p3");
        p1.wait_peers(&["p2", "p3"]);
        p2.wait_peers(&["p1", "p3"]);
        p3.assert_no_exceptions();

        let closed_at = Instant::now();
        p3.close();
        let gone = "!document.querySelector('#peers li[data-peer-id=\"p3\"]') && \
                    !document.querySelector('#remote-videos video[data-peer-id=\"p3\"]')";
        p1.wait(
            "p3 gone from #peers and #remote-videos",
            gone,
            Duration::from_secs(5),
        );
        p2.wait(
            "p3 gone from #peers and #remote-videos",
            gone,
            Duration::from_secs(5),
        );
        println!(
            "    p3 disappeared from the other pages {} ms after its tab closed",
            closed_at.elapsed().as_millis()
        );
        p1.assert_peers(&["p2"]);
        p2.assert_peers(&["p1"]);
        p1.assert_remote_videos(&["p2"]);
        p2.assert_remote_videos(&["p1"]);

        let p3 = b.open("p3 again", &url("p3"), None);
        p3.wait_status("connected");
        p3.wait_peers(&["p1", "p2"]);
        p1.wait_peers(&["p2", "p3"]);
        p2.wait_peers(&["p1", "p3"]);
        p3.assert_video_flowing("p1");
        p3.assert_remote_videos(&["p1", "p2"]);
        p1.assert_remote_videos(&["p2", "p3"]);
        b.assert_no_exceptions();
    }

    /// A second session with a connected peer id is refused; the page says
    /// so in #status; the first session is untouched.
    pub fn e_duplicate_peer_id_refused(env: &Env) {
        let b = env.browser();
        let url = env.client_url("?room=dup&peer=peer1&autoconnect=1");
        let first = b.open("first", &url, None);
        first.wait_status("connected");
        let second = b.open("second", &url, None);
        second.wait(
            "#status shows the refusal",
            "(() => { const s = document.getElementById('status'); \
             return s.dataset.state === 'error' && s.textContent.includes('peer_id_taken (4409)'); })()",
            SHORT,
        );
        println!("    #status of the refused page: {:?}", second.status().1);
        second.wait(
            "Connect is usable again",
            "!document.getElementById('connect').disabled",
            SHORT,
        );
        second.assert_peers(&[]);
        second.assert_remote_videos(&[]);
        // The first session still works: a newcomer sees it.
        let third = b.open(
            "third",
            &env.client_url("?room=dup&peer=peer2&autoconnect=1"),
            None,
        );
        third.wait_status("connected");
        third.wait_peers(&["peer1"]);
        first.wait_peers(&["peer2"]);
        assert_eq!(first.status(), ("connected".into(), "connected".into()));
        b.assert_no_exceptions();
    }

    /// getUserMedia rejects with NotFoundError: #status shows the error, and
    /// the page still receives the other peer's video.
    pub fn f_no_camera_still_receives(env: &Env) {
        let b = env.browser();
        let cam = b.open(
            "cam",
            &env.client_url("?room=nocam&peer=cam&autoconnect=1"),
            None,
        );
        cam.wait_status("connected");
        cam.click("start-video");
        let no_camera = "if (navigator.mediaDevices) { \
             navigator.mediaDevices.getUserMedia = function () { \
               return Promise.reject(new DOMException('Requested device not found', 'NotFoundError')); \
             }; }";
        let nocam = b.open(
            "nocam",
            &env.client_url("?room=nocam&peer=nocam&autoconnect=1"),
            Some(no_camera),
        );
        nocam.wait_status("connected");
        nocam.click("start-video");
        nocam.wait(
            "#status shows the media error",
            "(() => { const s = document.getElementById('status'); \
             return s.dataset.state === 'error' && s.textContent.includes('NotFoundError'); })()",
            SHORT,
        );
        println!(
            "    #status of the camera-less page: {:?}",
            nocam.status().1
        );
        nocam.assert_video_flowing("cam");
        nocam.assert_remote_videos(&["cam"]);
        cam.assert_remote_videos(&["nocam"]);
        b.assert_no_exceptions();
    }

    /// Stop Video ends the local tracks; the remote <video> stays; starting
    /// again renegotiates; both sides switching at once (offer collision).
    pub fn g_stop_and_restart_video(env: &Env) {
        let b = env.browser();
        let p1 = b.open(
            "peer1",
            &env.client_url("?room=toggle&peer=peer1&autoconnect=1"),
            None,
        );
        let p2 = b.open(
            "peer2",
            &env.client_url("?room=toggle&peer=peer2&autoconnect=1"),
            None,
        );
        p1.wait_status("connected");
        p2.wait_status("connected");
        p1.click("start-video");
        p2.click("start-video");
        p1.assert_video_flowing("peer2");
        p2.assert_video_flowing("peer1");

        p1.click("stop-video");
        p1.wait(
            "the camera is off",
            "document.getElementById('local-video').srcObject === null && \
             !document.getElementById('start-video').disabled",
            SHORT,
        );
        p2.wait(
            "peer1's video stops",
            &format!("{}.frozen", video_probe_js("peer1")),
            MEDIA,
        );
        p2.assert_remote_videos(&["peer1"]);
        p1.assert_video_flowing("peer2");

        // Both at once: peer1 starts while peer2 stops (renegotiation glare).
        p1.click("start-video");
        p2.click("stop-video");
        p2.assert_video_flowing("peer1");
        p1.wait(
            "peer2's video stops",
            &format!("{}.frozen", video_probe_js("peer2")),
            MEDIA,
        );
        p2.click("start-video");
        p1.assert_video_flowing("peer2");
        p2.assert_video_flowing("peer1");
        p1.assert_remote_videos(&["peer2"]);
        p2.assert_remote_videos(&["peer1"]);
        b.assert_no_exceptions();
    }

    /// What the page does around the call: `?token=` goes onto the signaling
    /// URL (ws: for an http: page), /webrtc/ice-servers is fetched on every
    /// Connect and used, a failed fetch falls back to no ICE servers with a
    /// log line, Disconnect/Connect works, and a server shutdown shows as
    /// `going_away (1001)`.
    pub fn h_client_plumbing(env: &Env) {
        // A server of its own: configured ICE servers, and shut down below.
        let mut cfg = Config {
            bind: "127.0.0.1".parse().unwrap(),
            port: 0,
            ..Config::default()
        };
        cfg.ice.servers = vec!["stun:127.0.0.1:9".to_string()]; // loopback; no call is made
        let server = Server::start(cfg).expect("start the signaling server");
        let base = format!("http://{}", server.local_addr());
        // Records the URLs the page opens; `__failIce` makes the ICE fetch fail.
        let spy = |fail_ice: bool| {
            format!(
                "window.__failIce = {fail_ice}; window.__ws = []; window.__fetches = []; \
                 const W = window.WebSocket; \
                 window.WebSocket = class extends W {{ \
                   constructor(u, p) {{ super(u, p); window.__ws.push(String(u)); }} }}; \
                 const F = window.fetch; \
                 window.fetch = function (u, o) {{ window.__fetches.push(String(u)); \
                   if (window.__failIce && String(u).includes('/webrtc/ice-servers')) \
                     return Promise.reject(new TypeError('simulated network error')); \
                   return F.call(this, u, o); }};"
            )
        };
        let ice_fetches =
            "window.__fetches.filter(u => u.startsWith('/webrtc/ice-servers')).length";
        let b = env.browser();
        let a = b.open(
            "a",
            &format!("{base}/webrtc/client?room=plumb&peer=a&token=s3cr%20t"),
            Some(&spy(false)),
        );
        a.click("connect");
        a.wait_status("connected");
        let expected_ws = format!(
            "ws://{}/webrtc/signaling/plumb/a?token=s3cr%20t",
            server.local_addr()
        );
        assert_eq!(a.eval("window.__ws"), json!([expected_ws]));
        assert_eq!(a.eval(ice_fetches), json!(1));
        a.wait(
            "the log names the configured ICE server",
            "document.getElementById('log').textContent.includes('ICE servers: stun:127.0.0.1:9')",
            SHORT,
        );

        let bee = b.open(
            "b",
            &format!("{base}/webrtc/client?room=plumb&peer=b&autoconnect=1"),
            Some(&spy(true)),
        );
        bee.wait_status("connected");
        bee.wait(
            "the log says the ICE fetch failed and no ICE servers are used",
            "document.getElementById('log').textContent.includes('could not fetch /webrtc/ice-servers') && \
             document.getElementById('log').textContent.includes('using {\"iceServers\":[]}')",
            SHORT,
        );
        assert_eq!(
            bee.eval("window.__ws.length === 1 && window.__ws[0].startsWith('ws://') && !window.__ws[0].includes('token')"),
            json!(true)
        );
        a.wait_peers(&["b"]);
        bee.wait_peers(&["a"]);

        a.click("disconnect");
        a.wait_status("disconnected");
        a.assert_peers(&[]);
        a.assert_remote_videos(&[]);
        bee.wait_peers(&[]);
        bee.assert_remote_videos(&[]);
        a.click("connect");
        a.wait_status("connected");
        assert_eq!(a.eval(ice_fetches), json!(2), "one ICE fetch per Connect");
        assert_eq!(a.eval("window.__ws.length"), json!(2));
        a.wait_peers(&["b"]);
        bee.wait_peers(&["a"]);

        server.shutdown();
        for p in [&a, &bee] {
            p.wait(
                "#status shows the shutdown",
                "(() => { const s = document.getElementById('status'); \
                 return s.dataset.state === 'error' && s.textContent.includes('going_away (1001)'); })()",
                SHORT,
            );
            p.assert_peers(&[]);
            p.assert_remote_videos(&[]);
        }
        println!("    #status after the server shut down: {:?}", a.status().1);
        b.assert_no_exceptions();
    }

    /// The client served over https: by a server with a self-signed
    /// certificate, token auth and an Origin allow-list that does not name
    /// the page (it is admitted as the server's own page): a call works over
    /// wss:, a token for another peer id and a missing token are refused
    /// with `unauthorized (4401)`, a page of another origin gets 4403.
    pub fn i_https_wss_with_tokens_and_origins(env: &Env) {
        const SECRET: &str = "browser-test-secret-browser-test-secret";
        let mut cfg = Config {
            bind: "127.0.0.1".parse().unwrap(),
            port: 0,
            ..Config::default()
        };
        cfg.tls.self_signed = true;
        cfg.access.auth_secret = Some(Secret::new(SECRET));
        cfg.access
            .allowed_origins
            .add("https://app.example")
            .expect("a valid origin");
        let server = Server::start(cfg).expect("start the TLS signaling server");
        let addr = server.tls_addr().expect("TLS is on");
        assert_eq!(addr, server.local_addr(), "TLS runs alone on `port`");
        let fingerprint = server.tls_fingerprint().expect("a certificate fingerprint");
        println!("    https://{addr}: self-signed certificate, SHA-256 {fingerprint}");
        let token = |peer: &str| {
            let claims = Claims {
                room: Some("room1".into()),
                peer: Some(peer.into()),
                exp: access::now_secs() + 600,
                ..Default::default()
            };
            access::mint(SECRET.as_bytes(), &claims).expect("mint a token")
        };
        let url = |peer: &str, token: Option<&str>| {
            let token = token.map(|t| format!("&token={t}")).unwrap_or_default();
            format!("https://{addr}/webrtc/client?room=room1&peer={peer}{token}&autoconnect=1")
        };
        // Records the URLs of the WebSockets the page opens.
        let spy = "window.__ws = []; const W = window.WebSocket; \
                   window.WebSocket = class extends W { \
                     constructor(u, p) { super(u, p); window.__ws.push(String(u)); } };";
        let refused = |what: &str| {
            format!(
                "(() => {{ const s = document.getElementById('status'); \
                 return s.dataset.state === 'error' && s.textContent.includes({}); }})()",
                json!(what)
            )
        };

        let b = env.browser_with(&["--ignore-certificate-errors"]);
        let (t1, t2) = (token("peer1"), token("peer2"));
        let p1 = b.open("peer1", &url("peer1", Some(&t1)), Some(spy));
        let p2 = b.open("peer2", &url("peer2", Some(&t2)), Some(spy));
        for (p, id, t) in [(&p1, "peer1", &t1), (&p2, "peer2", &t2)] {
            assert_eq!(
                p.eval("location.protocol === 'https:' && window.isSecureContext"),
                json!(true),
                "page {id}: an https: page in a secure context"
            );
            p.wait_status("connected");
            assert_eq!(
                p.eval("window.__ws"),
                json!([format!(
                    "wss://{addr}/webrtc/signaling/room1/{id}?token={t}"
                )]),
                "page {id}: the signaling socket is wss: and carries the token"
            );
            p.wait(
                "the token-authorised ICE server fetch succeeded",
                "document.getElementById('log').textContent.includes('ICE servers: ')",
                SHORT,
            );
            p.click("start-video");
            p.wait(
                "the local preview plays",
                "document.getElementById('local-video').videoWidth > 0",
                MEDIA,
            );
        }
        println!("    signaling URL of peer1: {}", p1.eval("window.__ws[0]"));
        p1.wait_peers(&["peer2"]);
        p2.wait_peers(&["peer1"]);
        p1.assert_video_flowing("peer2");
        p2.assert_video_flowing("peer1");
        p1.assert_remote_videos(&["peer2"]);
        p2.assert_remote_videos(&["peer1"]);

        // A valid token, but for another peer id than the page asks for.
        let mallory = token("mallory");
        let p3 = b.open("peer3", &url("peer3", Some(&mallory)), Some(spy));
        p3.wait(
            "#status shows the refusal",
            &refused("unauthorized (4401)"),
            SHORT,
        );
        println!(
            "    #status with mallory's token as peer3: {:?}",
            p3.status().1
        );
        assert_eq!(
            p3.eval("window.__ws.length === 1 && window.__ws[0].startsWith('wss://')"),
            json!(true)
        );
        // No token at all: /webrtc/ice-servers answers 401, the session 4401.
        let p4 = b.open("peer4", &url("peer4", None), Some(spy));
        p4.wait(
            "#status shows the refusal",
            &refused("unauthorized (4401)"),
            SHORT,
        );
        p4.wait(
            "the log says the ICE server fetch was refused",
            "document.getElementById('log').textContent.includes('could not fetch /webrtc/ice-servers (HTTP 401)')",
            SHORT,
        );
        println!("    #status without a token: {:?}", p4.status().1);
        for p in [&p3, &p4] {
            p.wait(
                "Connect is usable again",
                "!document.getElementById('connect').disabled",
                SHORT,
            );
            p.assert_peers(&[]);
            p.assert_remote_videos(&[]);
        }

        // The allow-list is on: a page of another origin (the plain http
        // server of this test), even with a valid token, gets 4403.
        let foreign = b.open("foreign origin", &env.client_url(""), None);
        foreign.eval(&format!(
            "(() => {{ window.__probe = null; \
               const w = new WebSocket({}); \
               w.onclose = e => {{ window.__probe = {{ code: e.code, reason: e.reason }}; }}; \
               return true; }})()",
            json!(format!(
                "wss://{addr}/webrtc/signaling/room1/peer5?token={}",
                token("peer5")
            ))
        ));
        foreign.wait("the wss: socket is closed", "window.__probe", SHORT);
        let probe = foreign.eval("window.__probe");
        println!("    wss: socket from {}: closed with {probe}", env.base);
        assert_eq!(probe["code"], json!(4403), "a foreign origin is refused");

        // The call is untouched by the refused sessions.
        p1.assert_peers(&["peer2"]);
        p2.assert_peers(&["peer1"]);
        assert_eq!(p1.status(), ("connected".into(), "connected".into()));
        assert_eq!(p2.status(), ("connected".into(), "connected".into()));
        b.assert_no_exceptions();
        server.shutdown();
    }
}

// ---------------------------------------------------------------------------
// Outer process: prerequisites, skip, re-execution in a network namespace

static SERIAL: Mutex<()> = Mutex::new(());

fn run(test_name: &str, title: &str, scenario: fn(&Env)) {
    if let Some(chromium) = std::env::var_os(INNER_ENV) {
        run_inside(title, Path::new(&chromium), scenario);
        return;
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (chromium, unshare_args) = match prerequisites() {
        Ok(p) => p.clone(),
        Err(why) => {
            if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
                panic!("browser test {test_name} cannot run: {why} ({REQUIRE_ENV}=1 makes this a failure)");
            }
            println!("SKIPPED browser test {test_name}: {why}");
            return;
        }
    };
    let exe = std::env::current_exe().expect("current_exe");
    let started = Instant::now();
    let mut child = Command::new("unshare")
        .args(unshare_args)
        .args(["--", "sh", "-c", r#"ip link set lo up && exec "$0" "$@""#])
        .arg(&exe)
        .args([
            test_name,
            "--exact",
            "--nocapture",
            "--quiet",
            "--test-threads=1",
        ])
        .env(INNER_ENV, &chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn unshare");
    // Relay the inner output through print! so libtest captures it as usual.
    let err = child.stderr.take().unwrap();
    let err_relay = std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("{line}");
        }
    });
    let mut ran = false;
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        // libtest's own lines (`--quiet`: a "." per test) are not relayed.
        let line = line.trim_start_matches('.');
        if line.starts_with("test result: ok. 1 passed") {
            ran = true;
        }
        if !line.starts_with("running 1 test")
            && !line.starts_with("test result:")
            && !line.trim().is_empty()
        {
            println!("{line}");
        }
    }
    let _ = err_relay.join();
    let status = child.wait().expect("wait for the namespaced test");
    assert!(
        status.success() && ran,
        "browser scenario {title} failed inside its network namespace ({status}); see the output above"
    );
    println!(
        "browser scenario {title}: PASS ({:.1} s with browser start-up)",
        started.elapsed().as_secs_f64()
    );
}

/// (chromium binary, unshare options), checked once.
fn prerequisites() -> &'static Result<(PathBuf, Vec<&'static str>), String> {
    static CHECK: OnceLock<Result<(PathBuf, Vec<&'static str>), String>> = OnceLock::new();
    CHECK.get_or_init(|| {
        let chromium = find_chromium()
            .ok_or_else(|| "Chromium not found (Debian: apt-get install chromium)".to_string())?;
        // Root: plain `unshare -n`; otherwise an unprivileged user namespace.
        let mut why = Vec::new();
        for args in [vec!["-n"], vec!["-r", "-n"]] {
            let out = Command::new("unshare")
                .args(&args)
                .args(["--", "sh", "-c", "ip link set lo up"])
                .stdin(Stdio::null())
                .output();
            match out {
                Ok(o) if o.status.success() => return Ok((chromium, args)),
                Ok(o) => why.push(format!(
                    "`unshare {}` failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => why.push(format!("cannot run unshare: {e}")),
            }
        }
        Err(format!(
            "no network namespace available ({})",
            why.join("; ")
        ))
    })
}

fn find_chromium() -> Option<PathBuf> {
    // The real binary, not Debian's wrapper script (which adds its own flags).
    ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------
// Inner process: the scenario itself

fn run_inside(title: &str, chromium: &Path, scenario: fn(&Env)) {
    let ifaces = interfaces();
    assert_eq!(
        ifaces,
        vec!["lo".to_string()],
        "the browser tests must run in a network namespace with loopback only"
    );
    let started = Instant::now();
    let env = Env::start(chromium);
    scenario(&env);
    env.server.shutdown();
    println!(
        "    {title}: scenario done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Network interfaces of this process's namespace (/proc/self/net/dev).
fn interfaces() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/net/dev").unwrap_or_default();
    text.lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

pub struct Env {
    server: Server,
    base: String,
    chromium: PathBuf,
}

impl Env {
    fn start(chromium: &Path) -> Env {
        let cfg = Config {
            bind: "127.0.0.1".parse().unwrap(),
            port: 0,
            ..Config::default()
        };
        let server = Server::start(cfg).expect("start the signaling server");
        let base = format!("http://{}", server.local_addr());
        Env {
            server,
            base,
            chromium: chromium.to_path_buf(),
        }
    }

    fn client_url(&self, query: &str) -> String {
        format!("{}/webrtc/client{}", self.base, query)
    }

    fn browser(&self) -> Browser {
        Browser::new(Chromium::launch(&self.chromium))
    }

    /// A browser with `extra_flags` beside the usual ones.
    fn browser_with(&self, extra_flags: &[&str]) -> Browser {
        Browser::new(Chromium::launch_with(&self.chromium, extra_flags))
    }
}

pub struct Browser {
    cdp: Chromium,
    /// (label, target, session, open) of every page, for diagnostics.
    pages: std::cell::RefCell<Vec<(String, String, String, bool)>>,
}

impl Browser {
    fn new(cdp: cdp::CdpResult<Chromium>) -> Browser {
        Browser {
            cdp: cdp.unwrap_or_else(|e| panic!("{e}")),
            pages: Default::default(),
        }
    }

    /// A new tab showing `url`; `init_script` runs before the page's own.
    fn open(&self, label: &str, url: &str, init_script: Option<&str>) -> Page<'_> {
        let (target, session) = self.cdp.new_tab().unwrap_or_else(|e| panic!("{e}"));
        self.pages
            .borrow_mut()
            .push((label.to_string(), target.clone(), session.clone(), true));
        let page = Page {
            b: self,
            label: label.to_string(),
            target,
            session,
        };
        page.cmd("Runtime.enable", json!({}));
        page.cmd("Page.enable", json!({}));
        if let Some(src) = init_script {
            page.cmd(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({ "source": src }),
            );
        }
        page.cmd("Page.navigate", json!({ "url": url }));
        page.wait(
            "the client page has loaded",
            "document.readyState === 'complete' && typeof WebRTCSignalingClient === 'function' \
             && !!document.getElementById('status')",
            SHORT,
        );
        page
    }

    /// No uncaught exception (`Runtime.exceptionThrown`) in any page so far.
    fn assert_no_exceptions(&self) {
        let pages = self.pages.borrow().clone();
        for (label, _, session, open) in pages {
            if open {
                // Flush: events sent before this answer are read by now.
                let _ = self.cdp.call(
                    Some(&session),
                    "Runtime.evaluate",
                    json!({"expression": "0"}),
                );
            }
            let thrown = self.cdp.events(&session, "Runtime.exceptionThrown");
            assert!(
                thrown.is_empty(),
                "page {label}: uncaught exception(s): {}",
                thrown
                    .iter()
                    .map(|e| e.params["exceptionDetails"].to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }

    /// Status, peers and log tail of every open page (for failure messages).
    fn diagnostics(&self) -> String {
        let pages = self.pages.borrow().clone();
        let mut out = String::new();
        for (label, _, session, open) in pages {
            if !open {
                continue;
            }
            let js = "JSON.stringify({status: document.getElementById('status').dataset.state + ': ' + \
                      document.getElementById('status').textContent, \
                      peers: [...document.querySelectorAll('#peers li')].map(l => l.dataset.peerId + ' ' + (l.dataset.connection || '')), \
                      videos: [...document.querySelectorAll('#remote-videos video')].map(v => v.dataset.peerId + ' ' + v.videoWidth + 'x' + v.videoHeight + ' frames=' + (v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : '?')), \
                      log: [...document.querySelectorAll('#log div')].slice(-40).map(d => d.textContent)})";
            let r = self.cdp.call(
                Some(&session),
                "Runtime.evaluate",
                json!({"expression": js, "returnByValue": true}),
            );
            let text = match r {
                Ok(v) => v["result"]["value"].as_str().unwrap_or("?").to_string(),
                Err(e) => e,
            };
            let pretty = serde_json::from_str::<Value>(&text)
                .map(|v| serde_json::to_string_pretty(&v).unwrap())
                .unwrap_or(text);
            out.push_str(&format!("\n--- page {label} ---\n{pretty}\n"));
            for e in self.cdp.events(&session, "Runtime.exceptionThrown") {
                out.push_str(&format!("exception: {}\n", e.params["exceptionDetails"]));
            }
        }
        out.push_str(&format!(
            "--- chromium stderr (tail) ---\n{}\n",
            self.cdp.stderr_tail(15)
        ));
        out
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var(LOGS_ENV).as_deref() == Ok("1") {
            println!("state of the pages:{}", self.diagnostics());
        }
    }
}

pub struct Page<'b> {
    b: &'b Browser,
    label: String,
    target: String,
    session: String,
}

/// JS expression: facts about the remote <video> of `peer` (null if absent).
fn video_probe_js(peer: &str) -> String {
    let sel = format!("#remote-videos video[data-peer-id={}]", json!(peer));
    format!(
        "((v) => v ? {{ w: v.videoWidth, h: v.videoHeight, \
           frames: v.getVideoPlaybackQuality().totalVideoFrames, \
           frozen: !v.srcObject || !v.srcObject.getVideoTracks().some(t => t.readyState === 'live' && !t.muted) }} \
         : null)(document.querySelector({}))",
        json!(sel)
    )
}

impl Page<'_> {
    fn cmd(&self, method: &str, params: Value) -> Value {
        self.b
            .cdp
            .call(Some(&self.session), method, params)
            .unwrap_or_else(|e| panic!("page {}: {e}", self.label))
    }

    fn try_eval(&self, js: &str) -> Result<Value, String> {
        let r = self.b.cdp.call(
            Some(&self.session),
            "Runtime.evaluate",
            json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
        )?;
        if let Some(ex) = r.get("exceptionDetails") {
            return Err(format!("{js}: {ex}"));
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    fn eval(&self, js: &str) -> Value {
        self.try_eval(js)
            .unwrap_or_else(|e| panic!("page {}: {e}", self.label))
    }

    /// Polls `js` until it is truthy; panics with diagnostics at the deadline.
    fn wait(&self, what: &str, js: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(js);
            let truthy = match &v {
                Value::Bool(b) => *b,
                Value::Null => false,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return;
            }
            if Instant::now() > deadline {
                self.fail(&format!("timed out after {timeout:?} waiting until {what}"));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Panics; the Browser prints every page's state when it is dropped.
    fn fail(&self, msg: &str) -> ! {
        panic!("page {}: {msg}", self.label);
    }

    /// Types like a user: focus the input, select its text, insert `text`.
    fn type_into(&self, id: &str, text: &str) {
        self.eval(&format!(
            "(() => {{ const e = document.getElementById({}); e.focus(); e.select(); return true; }})()",
            json!(id)
        ));
        self.cmd("Input.insertText", json!({ "text": text }));
        let value = self.eval(&format!("document.getElementById({}).value", json!(id)));
        assert_eq!(value, json!(text), "page {}: typing into #{id}", self.label);
    }

    /// A real mouse click in the middle of the (enabled, visible) element.
    fn click(&self, id: &str) {
        let r = self.eval(&format!(
            "(() => {{ const e = document.getElementById({}); if (!e) return 'missing'; \
               if (e.disabled) return 'disabled'; e.scrollIntoView({{block: 'center'}}); \
               const r = e.getBoundingClientRect(); \
               return {{x: r.left + r.width / 2, y: r.top + r.height / 2}}; }})()",
            json!(id)
        ));
        let (Some(x), Some(y)) = (r["x"].as_f64(), r["y"].as_f64()) else {
            self.fail(&format!("cannot click #{id}: {r}"));
        };
        for kind in ["mousePressed", "mouseReleased"] {
            self.cmd(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            );
        }
    }

    /// (data-state, text) of #status.
    fn status(&self) -> (String, String) {
        let v = self.eval(
            "[document.getElementById('status').dataset.state, document.getElementById('status').textContent]",
        );
        (
            v[0].as_str().unwrap_or_default().to_string(),
            v[1].as_str().unwrap_or_default().to_string(),
        )
    }

    fn wait_status(&self, text: &str) {
        self.wait(
            &format!("#status is {text}"),
            &format!(
                "(() => {{ const s = document.getElementById('status'); \
                   return s.dataset.state === {t} && s.textContent === {t}; }})()",
                t = json!(text)
            ),
            SHORT,
        );
    }

    /// data-peer-id of the #peers items, in order (and each item's text is its id).
    fn peers(&self) -> Vec<String> {
        let v = self.eval(
            "[...document.querySelectorAll('#peers li')].map(l => l.dataset.peerId === l.textContent ? l.dataset.peerId : 'MISMATCH:' + l.dataset.peerId + '/' + l.textContent)",
        );
        serde_json::from_value(v).unwrap_or_default()
    }

    fn assert_peers(&self, expected: &[&str]) {
        let got = self.peers();
        if got != expected {
            self.fail(&format!("#peers is {got:?}, expected {expected:?}"));
        }
    }

    fn wait_peers(&self, expected: &[&str]) {
        let want = json!(expected).to_string();
        self.wait(
            &format!("#peers is {want}"),
            &format!(
                "JSON.stringify([...document.querySelectorAll('#peers li')].map(l => l.dataset.peerId)) === {}",
                json!(want)
            ),
            SHORT,
        );
        self.assert_peers(expected);
    }

    /// #remote-videos holds exactly one <video data-peer-id> per expected peer, and nothing else.
    fn assert_remote_videos(&self, expected: &[&str]) {
        let v = self.eval(
            "[...document.querySelectorAll('#remote-videos video')].map(v => v.dataset.peerId || '')",
        );
        let mut got: Vec<String> = serde_json::from_value(v).unwrap_or_default();
        got.sort();
        let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        want.sort();
        if got != want {
            self.fail(&format!(
                "#remote-videos has videos for {got:?}, expected exactly {want:?}"
            ));
        }
    }

    /// The remote <video> of `peer` has a size and decodes new frames,
    /// continuously over two seconds (frame counter rising in each second).
    fn assert_video_flowing(&self, peer: &str) {
        let probe = video_probe_js(peer);
        self.wait(
            &format!("the video from {peer} has a size"),
            &format!("(({probe}) || {{}}).w > 0"),
            MEDIA,
        );
        let frames = || -> i64 {
            let v = self.eval(&probe);
            v["frames"].as_i64().unwrap_or(-1)
        };
        let t0 = Instant::now();
        let f0 = frames();
        let mut marks = vec![f0];
        let deadline = t0 + MEDIA;
        // Two windows of at least one second each, new frames in both.
        while marks.len() < 3 {
            std::thread::sleep(POLL);
            let f = frames();
            let due = t0 + Duration::from_secs(marks.len() as u64);
            if Instant::now() >= due && f > *marks.last().unwrap() {
                marks.push(f);
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "the video from {peer} does not decode new frames (frame counts {marks:?}, now {f})"
                ));
            }
        }
        let w = self.eval(&probe);
        println!(
            "    {}: video from {peer} {}x{}, {} new frames in {:.1} s",
            self.label,
            w["w"],
            w["h"],
            marks[2] - marks[0],
            t0.elapsed().as_secs_f64()
        );
    }

    fn assert_no_exceptions(&self) {
        let _ = self.try_eval("0");
        let thrown = self.b.cdp.events(&self.session, "Runtime.exceptionThrown");
        if !thrown.is_empty() {
            self.fail(&format!(
                "uncaught exception(s): {:?}",
                thrown.iter().map(|e| &e.params).collect::<Vec<_>>()
            ));
        }
    }

    /// Closes the tab (as a user closing it would).
    fn close(&self) {
        self.b
            .cdp
            .close_tab(&self.target)
            .unwrap_or_else(|e| panic!("page {}: {e}", self.label));
        for p in self.b.pages.borrow_mut().iter_mut() {
            if p.2 == self.session {
                p.3 = false;
            }
        }
    }

    fn screenshot(&self, path: &Path) {
        self.cmd(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false }),
        );
        // Wait for a fresh frame at the new size before capturing.
        self.eval(
            "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))",
        );
        let r = self.cmd("Page.captureScreenshot", json!({ "format": "png" }));
        let png = cdp::base64_decode(r["data"].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("screenshot: {e}"));
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(path, &png)
            .unwrap_or_else(|e| panic!("write screenshot {}: {e}", path.display()));
        println!(
            "    screenshot of {} saved to {}",
            self.label,
            path.display()
        );
    }
}
