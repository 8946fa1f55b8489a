//! The outer/inner runner of tests/browser.rs (a loopback-only network namespace per
//! test, one scenario at a time), and a small page driver, for tests/browser_phone.rs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::cdp::Chromium;
use super::{INNER_ENV, MEDIA, PHONE, POLL, REQUIRE_ENV, SHORT};

static SERIAL: Mutex<()> = Mutex::new(());

pub fn run(test_name: &str, scenario: fn(&Path)) {
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

pub struct Browser {
    cdp: Chromium,
    sessions: std::cell::RefCell<Vec<(String, String)>>,
}

pub struct Page<'b> {
    b: &'b Browser,
    label: String,
    session: String,
}

impl Browser {
    pub fn launch(chromium: &Path, flags: &[&str]) -> Browser {
        Browser {
            cdp: Chromium::launch_with(chromium, flags).unwrap_or_else(|e| panic!("{e}")),
            sessions: Default::default(),
        }
    }

    /// A tab on `url`, at `size` as a touch phone (before the page loads) if given.
    pub fn open(
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

    pub fn assert_no_exceptions(&self) {
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

    pub fn eval(&self, js: &str) -> Value {
        let r = self.cmd(
            "Runtime.evaluate",
            json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("page {}: {js}: {ex}", self.label);
        }
        r["result"].get("value").cloned().unwrap_or(Value::Null)
    }

    pub fn wait(&self, what: &str, js: &str, timeout: Duration) {
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
    pub fn click(&self, id: &str) {
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
    pub fn assert_fits(&self) {
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
    pub fn assert_reachable(&self, id: &str) {
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

    pub fn assert_video_flowing(&self, peer: &str) {
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

    pub fn screenshot(&self, path: &Path) {
        self.eval(
            "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))",
        );
        let r = self.cmd("Page.captureScreenshot", json!({ "format": "png" }));
        let png = super::common::base64_decode(r["data"].as_str().unwrap_or_default()).unwrap();
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
