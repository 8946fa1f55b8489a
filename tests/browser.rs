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
//! The scenarios but (i) are shared with Firefox (tests/browser/scenarios.rs,
//! also run by tests/firefox.rs).
//!
//! Skips (prints why, passes) when Chromium or `unshare -n` is missing,
//! unless WEBRTC_SIGNALING_REQUIRE_BROWSER=1 (then a skip is a failure).
//! WEBRTC_SIGNALING_SCREENSHOT=<path> saves a PNG of the two-peer call.
//! Scenarios run one at a time (they share the machine's cores).

#[path = "browser/bidi.rs"]
mod bidi;
#[path = "browser/cdp.rs"]
mod cdp;
#[path = "browser/common.rs"]
mod common;
#[path = "browser/relay.rs"]
mod relay;
#[path = "browser/scenarios.rs"]
mod scenarios;

use serde_json::json;
use webrtc_signaling::access::{self, Claims};
use webrtc_signaling::{Config, Secret, Server};

use common::{Env, Kind, Net, Suite, MEDIA, SHORT};

const SUITE: Suite = Suite {
    inner_env: "WEBRTC_SIGNALING_BROWSER_NETNS",
    require_env: "WEBRTC_SIGNALING_REQUIRE_BROWSER",
    screenshot_env: "WEBRTC_SIGNALING_SCREENSHOT",
    kind: Kind::Chromium,
    net: Net::Loopback,
};

// ---------------------------------------------------------------------------
// Scenarios

macro_rules! browser_test {
    ($name:ident, $title:expr) => {
        #[test]
        fn $name() {
            common::run(
                &SUITE,
                &[Kind::Chromium],
                stringify!($name),
                $title,
                scenario::$name,
            );
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
browser_test!(j_offer_collision, "(j) offer collisions, both sides");
browser_test!(
    q_signaling_drop_keeps_the_call,
    "(q) signaling drop: reconnect, resume, call kept"
);
browser_test!(
    l_join_with_cameras_on,
    "(l) join with cameras on, four times"
);

mod scenario {
    use super::*;

    pub use scenarios::{
        a_seed_two_tabs_see_each_other, b_late_video_one_side_only, c_three_peers_full_mesh,
        d_closed_tab_leaves_and_rejoins, e_duplicate_peer_id_refused, f_no_camera_still_receives,
        g_stop_and_restart_video, q_signaling_drop_keeps_the_call,
    };

    /// (j) with both pages in one Chromium.
    pub fn j_offer_collision(env: &Env) {
        let b = env.browser();
        scenarios::offer_collision(env, &b, &b);
    }

    /// (l) with both pages in one Chromium.
    pub fn l_join_with_cameras_on(env: &Env) {
        let b = env.browser();
        scenarios::join_with_cameras_on(env, "cams", &b, &b);
    }

    /// (h) with ICE servers configured: the page logs and uses them.
    pub fn h_client_plumbing(env: &Env) {
        let mut cfg = common::test_config();
        cfg.ice.servers = vec!["stun:127.0.0.1:9".to_string()]; // loopback; no call is made
        let server = Server::start(cfg).expect("start the signaling server");
        scenarios::h_client_plumbing(env, &server, "stun:127.0.0.1:9");
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

        let b = env.chromium_with(&["--ignore-certificate-errors"]);
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
