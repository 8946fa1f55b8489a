//! The built-in page on a phone-sized screen, and CORS as a browser enforces it, in
//! real Chromium (tests/browser/cdp.rs) inside a loopback-only network namespace,
//! the way tests/browser.rs runs (same prerequisites, skips and
//! WEBRTC_SIGNALING_REQUIRE_BROWSER=1). Scenarios run one at a time.
//!
//! WEBRTC_SIGNALING_PHONE_SCREENSHOT=<path> saves the phone screenshot there (else
//! target/phone-screenshot.png).

#[path = "browser/cdp.rs"]
#[allow(dead_code)] // the helpers tests/browser.rs uses and this file does not
mod cdp;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use cdp::Chromium;
use serde_json::{json, Value};
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

// ---------------------------------------------------------------------------
// The same outer/inner runner as tests/browser.rs.

static SERIAL: Mutex<()> = Mutex::new(());

fn run(test_name: &str, scenario: fn(&Path)) {
    if let Some(chromium) = std::env::var_os(INNER_ENV) {
        let ifaces = std::fs::read_to_string("/proc/self/net/dev").unwrap_or_default();
        let names: Vec<&str> = ifaces
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(str::trim)
            .collect();
        assert_eq!(names, ["lo"], "loopback only");
        scenario(Path::new(&chromium));
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (chromium, unshare_args) = match prerequisites() {
        Ok(p) => p.clone(),
        Err(why) => {
            if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
                panic!("browser test {test_name} cannot run: {why} ({REQUIRE_ENV}=1)");
            }
            println!("SKIPPED browser test {test_name}: {why}");
            return;
        }
    };
    let started = Instant::now();
    let mut child = Command::new("unshare")
        .args(unshare_args)
        .args(["--", "sh", "-c", r#"ip link set lo up && exec "$0" "$@""#])
        .arg(std::env::current_exe().unwrap())
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
    let err = child.stderr.take().unwrap();
    let relay = std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("{line}");
        }
    });
    let mut ran = false;
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        let line = line.trim_start_matches('.');
        ran |= line.starts_with("test result: ok. 1 passed");
        if !line.starts_with("running 1 test")
            && !line.starts_with("test result:")
            && !line.trim().is_empty()
        {
            println!("{line}");
        }
    }
    let _ = relay.join();
    let status = child.wait().unwrap();
    assert!(
        status.success() && ran,
        "browser scenario {test_name} failed ({status})"
    );
    println!(
        "browser scenario {test_name}: PASS ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
}

fn prerequisites() -> &'static Result<(PathBuf, Vec<&'static str>), String> {
    static CHECK: OnceLock<Result<(PathBuf, Vec<&'static str>), String>> = OnceLock::new();
    CHECK.get_or_init(|| {
        let chromium = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or("Chromium not found (Debian: apt-get install chromium)")?;
        for args in [vec!["-n"], vec!["-r", "-n"]] {
            let ok = Command::new("unshare")
                .args(&args)
                .args(["--", "sh", "-c", "ip link set lo up"])
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return Ok((chromium, args));
            }
        }
        Err("no network namespace available (unshare -n)".to_string())
    })
}

struct Browser {
    cdp: Chromium,
    sessions: std::cell::RefCell<Vec<(String, String)>>,
}

struct Page<'b> {
    b: &'b Browser,
    label: String,
    session: String,
}

impl Browser {
    fn launch(chromium: &Path, flags: &[&str]) -> Browser {
        Browser {
            cdp: Chromium::launch_with(chromium, flags).unwrap_or_else(|e| panic!("{e}")),
            sessions: Default::default(),
        }
    }

    /// A tab on `url`, at `size` as a touch phone (before the page loads) if given.
    fn open(
        &self,
        label: &str,
        url: &str,
        size: Option<(u32, u32)>,
        init: Option<&str>,
    ) -> Page<'_> {
        let (_, session) = self.cdp.new_tab().unwrap_or_else(|e| panic!("{e}"));
        self.sessions
            .borrow_mut()
            .push((label.into(), session.clone()));
        let page = Page {
            b: self,
            label: label.into(),
            session,
        };
        page.cmd("Runtime.enable", json!({}));
        page.cmd("Page.enable", json!({}));
        if let Some(src) = init {
            page.cmd(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({ "source": src }),
            );
        }
        if let Some((w, h)) = size {
            page.cmd(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": w, "height": h, "deviceScaleFactor": 3, "mobile": true }),
            );
            page.cmd(
                "Emulation.setTouchEmulationEnabled",
                json!({ "enabled": true, "maxTouchPoints": 5 }),
            );
        }
        page.cmd("Page.navigate", json!({ "url": url }));
        page.wait(
            "the page has loaded",
            "document.readyState === 'complete' && !!document.getElementById('status')",
            SHORT,
        );
        page
    }

    fn assert_no_exceptions(&self) {
        for (label, session) in self.sessions.borrow().iter() {
            let _ = self.cdp.call(
                Some(session),
                "Runtime.evaluate",
                json!({"expression": "0"}),
            );
            let thrown = self.cdp.events(session, "Runtime.exceptionThrown");
            assert!(
                thrown.is_empty(),
                "page {label}: {:?}",
                thrown.iter().map(|e| &e.params).collect::<Vec<_>>()
            );
        }
    }
}

impl Page<'_> {
    fn cmd(&self, method: &str, params: Value) -> Value {
        self.b
            .cdp
            .call(Some(&self.session), method, params)
            .unwrap_or_else(|e| panic!("page {}: {e}", self.label))
    }

    fn eval(&self, js: &str) -> Value {
        let r = self.cmd(
            "Runtime.evaluate",
            json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("page {}: {js}: {ex}", self.label);
        }
        r["result"].get("value").cloned().unwrap_or(Value::Null)
    }

    fn wait(&self, what: &str, js: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.eval(js) != json!(true) {
            if Instant::now() > deadline {
                let log = self.eval("document.getElementById('log').textContent.slice(-1500)");
                panic!(
                    "page {}: timed out waiting until {what}; log: {log}",
                    self.label
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// A real tap (or click) in the middle of the element.
    fn click(&self, id: &str) {
        let r = self.eval(&format!(
            "(() => {{ const e = document.getElementById({}); if (!e || e.disabled) return null; \
               e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
               return {{x: r.left + r.width / 2, y: r.top + r.height / 2}}; }})()",
            json!(id)
        ));
        let (Some(x), Some(y)) = (r["x"].as_f64(), r["y"].as_f64()) else {
            panic!("page {}: cannot click #{id}", self.label);
        };
        for kind in ["mousePressed", "mouseReleased"] {
            self.cmd(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            );
        }
    }

    /// No horizontal scrolling: nothing is wider than the screen.
    fn assert_fits(&self) {
        let v = self.eval(
            "({ scroll: document.documentElement.scrollWidth, width: window.innerWidth, \
                wide: [...document.querySelectorAll('body *')].filter(e => { \
                  const r = e.getBoundingClientRect(); return r.width > 0 && (r.right > window.innerWidth + 0.5 || r.left < -0.5); \
                }).map(e => e.id || e.tagName).slice(0, 5) })",
        );
        assert_eq!(v["width"], json!(PHONE.0), "the phone viewport");
        assert!(
            v["scroll"].as_u64() <= v["width"].as_u64(),
            "page {}: horizontal scroll: {v}",
            self.label
        );
        assert_eq!(
            v["wide"],
            json!([]),
            "page {}: elements past the edge: {v}",
            self.label
        );
    }

    /// The control is shown, inside the screen's width once scrolled to, at least
    /// 32 px tall (a finger), and nothing covers its middle.
    fn assert_reachable(&self, id: &str) {
        let v = self.eval(&format!(
            "(() => {{ const e = document.getElementById({}); if (!e) return 'missing'; \
               e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
               if (r.width === 0 || r.height === 0) return 'hidden'; \
               if (r.left < 0 || r.right > window.innerWidth || r.top < 0 || r.bottom > window.innerHeight) return 'off screen ' + JSON.stringify(r); \
               if (r.height < 32) return 'too small ' + r.height; \
               const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2); \
               return hit === e || e.contains(hit) ? 'ok' : 'covered by ' + (hit && (hit.id || hit.tagName)); }})()",
            json!(id)
        ));
        assert_eq!(
            v,
            json!("ok"),
            "page {}: #{id} is not reachable",
            self.label
        );
    }

    fn assert_video_flowing(&self, peer: &str) {
        let frames = format!(
            "(() => {{ const v = document.querySelector('#remote-videos video[data-peer-id={}]'); \
               return v && v.videoWidth > 0 ? v.getVideoPlaybackQuality().totalVideoFrames : -1; }})()",
            json!(peer)
        );
        self.wait(
            &format!("video from {peer}"),
            &format!("{frames} > 0"),
            MEDIA,
        );
        let first = self.eval(&frames).as_i64().unwrap_or(-1);
        let deadline = Instant::now() + MEDIA;
        loop {
            let now = self.eval(&frames).as_i64().unwrap_or(-1);
            if now > first + 5 {
                println!(
                    "    {}: video from {peer} flowing ({first} -> {now} frames)",
                    self.label
                );
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "page {}: no new frames from {peer} ({first} -> {now})",
                    self.label
                );
            }
            std::thread::sleep(POLL);
        }
    }

    fn screenshot(&self, path: &Path) {
        self.eval(
            "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))",
        );
        let r = self.cmd("Page.captureScreenshot", json!({ "format": "png" }));
        let png = cdp::base64_decode(r["data"].as_str().unwrap_or_default()).unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        // Width from the IHDR chunk: the phone's CSS width at 3 device pixels each.
        let width = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
        assert_eq!(width, PHONE.0 * 3, "a phone-sized screenshot");
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(path, &png).unwrap();
        println!("    phone screenshot saved to {}", path.display());
    }
}
