//! The built-in page on a phone-sized screen, and CORS as a browser enforces it, in
//! real Chromium (tests/browser/cdp.rs) inside a loopback-only network namespace,
//! the way tests/browser.rs runs (same prerequisites, skips and
//! WEBRTC_SIGNALING_REQUIRE_BROWSER=1). Scenarios run one at a time.
//!
//! WEBRTC_SIGNALING_PHONE_SCREENSHOT=<path> saves the phone screenshot there (else
//! target/phone-screenshot.png).

#[path = "browser/bidi.rs"]
#[allow(dead_code)] // the Firefox driver: the shared harness names it
mod bidi;
#[path = "browser/cdp.rs"]
#[allow(dead_code)] // the helpers tests/browser.rs uses and this file does not
mod cdp;
#[path = "browser/common.rs"]
mod common;
#[path = "browser/phone_harness.rs"]
mod harness;
#[path = "support/proxies.rs"]
mod proxies;
#[path = "support/tls_client.rs"]
mod tls_client;

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::{run, Browser, Page};
use serde_json::json;
use webrtc_signaling::{Config, Server};

const INNER_ENV: &str = "WEBRTC_SIGNALING_BROWSER_NETNS";
const REQUIRE_ENV: &str = "WEBRTC_SIGNALING_REQUIRE_BROWSER";
const SCREENSHOT_ENV: &str = "WEBRTC_SIGNALING_PHONE_SCREENSHOT";
const SHORT: Duration = Duration::from_secs(10);
const MEDIA: Duration = Duration::from_secs(45);
const POLL: Duration = Duration::from_millis(100);
/// An iPhone 12-14 class screen, in CSS pixels.
const PHONE: (u32, u32) = (390, 844);

#[test]
fn phone_layout_and_call_controls() {
    run("phone_layout_and_call_controls", scenario_phone);
}

#[test]
fn cors_as_a_browser_enforces_it() {
    run("cors_as_a_browser_enforces_it", scenario_cors);
}

#[test]
fn the_page_under_a_prefix_behind_nginx() {
    run("the_page_under_a_prefix_behind_nginx", scenario_prefix);
}

fn start_server(f: impl FnOnce(&mut Config)) -> Server {
    let mut cfg = Config {
        bind: "127.0.0.1".parse().unwrap(),
        port: 0,
        ..Config::default()
    };
    f(&mut cfg);
    Server::start(cfg).expect("start the signaling server")
}

/// Every interactive control: (element id, needs local media).
const CONTROLS: &[(&str, bool)] = &[
    ("room-id", false),
    ("peer-id", false),
    ("connect", false),
    ("disconnect", false),
    ("start-video", false),
    ("stop-video", false),
    ("copy-invite", false),
    ("mute-audio", true),
    ("toggle-camera", true),
    ("switch-camera", true),
];

fn scenario_phone(chromium: &Path) {
    let server = start_server(|_| {});
    let base = format!("http://{}/webrtc/client", server.local_addr());
    // Chromium's fake cameras: the second of three is a depth camera (Y16) whose
    // frames no encoder takes; a phone's front and back cameras are colour ones, so
    // the page is shown the first and the third.
    let b = Browser::launch(
        chromium,
        &["--use-fake-device-for-media-stream=device-count=3"],
    );
    let two_cameras = "(() => { const md = navigator.mediaDevices; const e = md.enumerateDevices.bind(md); \
        md.enumerateDevices = () => e().then(l => l.filter(d => d.label !== 'fake_device_1')); })();";
    let phone = b.open(
        "phone",
        &format!("{base}?room=phone&peer=anna"),
        Some(PHONE),
        Some(two_cameras),
    );
    let desk = b.open(
        "desk",
        &format!("{base}?room=phone&peer=bert&autoconnect=1"),
        None,
        None,
    );

    assert_eq!(
        phone
            .eval("document.querySelector('link[rel=icon]').href.startsWith('data:image/svg+xml')"),
        json!(true),
        "an inline favicon: no request for /favicon.ico"
    );
    assert_eq!(
        phone.eval("document.getElementById('log-panel').open"),
        json!(false),
        "the log starts folded on a phone"
    );
    phone.assert_fits();
    phone.click("connect");
    phone.wait(
        "connected",
        "document.getElementById('status').dataset.state === 'connected'",
        SHORT,
    );
    desk.wait(
        "connected",
        "document.getElementById('status').dataset.state === 'connected'",
        SHORT,
    );
    phone.click("start-video");
    desk.click("start-video");
    phone.wait(
        "the local preview plays",
        "document.getElementById('local-video').videoWidth > 0",
        MEDIA,
    );
    phone.wait(
        "the switch button appears (two cameras)",
        "!document.getElementById('switch-camera').hidden",
        SHORT,
    );
    desk.assert_video_flowing("anna");
    phone.assert_video_flowing("bert");
    phone.assert_fits();
    for (id, _) in CONTROLS {
        phone.assert_reachable(id);
    }

    // Front/back: another device, and the other side keeps receiving video.
    let device = "document.getElementById('local-video').srcObject.getVideoTracks()[0].getSettings().deviceId";
    let before = phone.eval(device);
    phone.click("switch-camera");
    phone.wait(
        "the camera switched",
        &format!("{device} !== {before}"),
        SHORT,
    );
    desk.assert_video_flowing("anna");

    // Mute and camera: the tracks are disabled, nothing is renegotiated.
    let track = |kind: &str| {
        format!("document.getElementById('local-video').srcObject.get{kind}Tracks()[0].enabled")
    };
    phone.click("mute-audio");
    assert_eq!(phone.eval(&track("Audio")), json!(false));
    assert_eq!(
        phone.eval("document.getElementById('mute-audio').getAttribute('aria-pressed')"),
        json!("true")
    );
    phone.click("mute-audio");
    assert_eq!(phone.eval(&track("Audio")), json!(true));
    phone.click("toggle-camera");
    assert_eq!(phone.eval(&track("Video")), json!(false));
    assert_eq!(
        phone.eval("document.querySelector('.tile.local').classList.contains('no-video')"),
        json!(true)
    );
    phone.click("toggle-camera");
    assert_eq!(phone.eval(&track("Video")), json!(true));
    desk.assert_video_flowing("anna");

    phone.click("copy-invite");
    phone.wait(
        "the invite link is copied and logged",
        &format!(
            "document.getElementById('invite-note').textContent !== '' && \
             document.getElementById('log').textContent.includes({})",
            json!(format!("invite link: {base}?room=phone"))
        ),
        SHORT,
    );
    let wake = phone.eval("document.body.dataset.wakeLock");
    println!("    screen wake lock during the call: {wake}");
    assert!(
        matches!(wake.as_str(), Some("on" | "denied" | "unsupported")),
        "{wake}"
    );

    let path = std::env::var_os(SCREENSHOT_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/phone-screenshot.png")
        });
    phone.wait(
        "bert's tile shows his video, not the placeholder",
        "!document.querySelector('[data-tile-for=bert]').classList.contains('no-video')",
        SHORT,
    );
    phone.eval("window.scrollTo(0, 0) || true");
    phone.screenshot(&path);
    b.assert_no_exceptions();
    server.shutdown();
}

fn scenario_cors(chromium: &Path) {
    let app = start_server(|_| {});
    let foreign = start_server(|_| {});
    let app_origin = format!("http://{}", app.local_addr());
    let api = start_server(|c| {
        c.access.allowed_origins.add(&app_origin).unwrap();
        c.ice.servers.push("stun:127.0.0.1:9".into());
    });
    let url = format!("http://{}/webrtc/ice-servers", api.local_addr());
    let b = Browser::launch(chromium, &[]);
    let probe = |page: &Page<'_>| {
        page.eval(&format!(
            "Promise.all([ \
               fetch({u}).then(r => r.json()).then(j => 'read ' + j.iceServers.length, e => 'blocked: ' + e.name), \
               fetch({u}, {{ headers: {{ Authorization: 'Bearer x' }} }}).then(r => 'read ' + r.status, e => 'blocked: ' + e.name) \
             ])",
            u = json!(url)
        ))
    };
    let allowed = b.open(
        "app origin",
        &format!("{app_origin}/webrtc/client"),
        None,
        None,
    );
    let got = probe(&allowed);
    println!("    from {app_origin} (listed): {got}");
    assert_eq!(
        got,
        json!(["read 1", "read 200"]),
        "a listed origin reads, preflight included"
    );
    let other = format!("http://{}", foreign.local_addr());
    let refused = b.open(
        "foreign origin",
        &format!("{other}/webrtc/client"),
        None,
        None,
    );
    let got = probe(&refused);
    println!("    from {other} (not listed): {got}");
    assert_eq!(got, json!(["blocked: TypeError", "blocked: TypeError"]));
    b.assert_no_exceptions();
}

/// docs/production.md's nginx configuration (TLS, `/signal/`) in front of the server:
/// two pages under the prefix call each other; the script, `ice-servers`, the
/// signaling socket and the ES module all go through the prefix.
fn scenario_prefix(chromium: &Path) {
    let Some(nginx) = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    else {
        if std::env::var("WEBRTC_SIGNALING_REQUIRE_PROXIES").as_deref() == Ok("1") {
            panic!("nginx is not installed (WEBRTC_SIGNALING_REQUIRE_PROXIES=1)");
        }
        println!("    SKIPPED: nginx is not installed (apt-get install nginx-light)");
        return;
    };
    let server = start_server(|c| c.ice.servers.push("stun:127.0.0.1:9".into()));
    let dir = proxies::Dir::new("browser-nginx");
    let leaf = tls_client::Ca::new().leaf();
    let (_nginx, port) = proxies::start_nginx(
        &nginx,
        &dir,
        &leaf.chain_pem,
        &leaf.key_pem,
        server.local_addr(),
    );
    let base = format!("https://localhost:{port}/signal/webrtc/client");
    let spy = "window.__ws = []; const W = window.WebSocket; \
               window.WebSocket = class extends W { constructor(u, p) { super(u, p); window.__ws.push(String(u)); } };";
    let b = Browser::launch(chromium, &["--ignore-certificate-errors"]);
    let a = b.open(
        "a",
        &format!("{base}?room=pre&peer=a&autoconnect=1"),
        None,
        Some(spy),
    );
    let c = b.open(
        "c",
        &format!("{base}?room=pre&peer=c&autoconnect=1"),
        None,
        Some(spy),
    );
    for p in [&a, &c] {
        p.wait(
            "connected",
            "document.getElementById('status').dataset.state === 'connected'",
            SHORT,
        );
        p.wait(
            "ICE servers fetched through the prefix",
            "document.getElementById('log').textContent.includes('ICE servers: stun:127.0.0.1:9')",
            SHORT,
        );
        p.click("start-video");
    }
    assert_eq!(
        a.eval("window.__ws"),
        json!([format!(
            "wss://localhost:{port}/signal/webrtc/signaling/pre/a"
        )])
    );
    a.assert_video_flowing("c");
    c.assert_video_flowing("a");
    let module_url = a.eval(&format!(
        "import({}).then(m => new m.WebRTCSignalingClient().url('r', 'p'))",
        json!(format!(
            "https://localhost:{port}/signal/webrtc/client/signaling.mjs"
        ))
    ));
    assert_eq!(
        module_url,
        json!(format!(
            "wss://localhost:{port}/signal/webrtc/signaling/r/p"
        )),
        "the ES module finds the server under the prefix it came from"
    );
    b.assert_no_exceptions();
    server.shutdown();
}
