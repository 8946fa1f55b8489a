//! What the real-browser tests share, whichever browser drives the page:
//! the re-execution of one test inside a private network namespace, the
//! server under test, and `Page`, the user's view of the client page
//! (PROTOCOL.md section 7 ids only) on top of a small per-browser [`Tab`]
//! (DevTools for Chromium in cdp.rs, WebDriver BiDi for Firefox in bidi.rs).
#![allow(dead_code)]

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use webrtc_signaling::{Config, Server};

use super::bidi::{Firefox, FirefoxDriver};
use super::cdp::{Chromium, ChromiumDriver};

/// Generous deadlines: they bound a failure, they do not pace the test.
pub const SHORT: Duration = Duration::from_secs(10);
pub const MEDIA: Duration = Duration::from_secs(45);
pub const POLL: Duration = Duration::from_millis(100);

/// =1: print every page's #status, #peers, videos and #log tail at the end
/// of each scenario (they are always printed when a scenario fails).
pub const LOGS_ENV: &str = "WEBRTC_SIGNALING_BROWSER_LOGS";

// ---------------------------------------------------------------------------
// Browsers

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Chromium,
    Firefox,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Chromium => "Chromium",
            Kind::Firefox => "Firefox",
        }
    }

    /// The browser binary, if installed.
    pub fn find(self) -> Option<PathBuf> {
        // The real binaries, not Debian's wrapper scripts (which add flags).
        let candidates: &[&str] = match self {
            Kind::Chromium => &["/usr/lib/chromium/chromium", "/usr/bin/chromium"],
            Kind::Firefox => &["/usr/lib/firefox-esr/firefox-esr", "/usr/bin/firefox-esr"],
        };
        candidates.iter().map(PathBuf::from).find(|p| p.is_file())
    }

    fn install_hint(self) -> &'static str {
        match self {
            Kind::Chromium => "Debian: apt-get install chromium",
            Kind::Firefox => "Debian: apt-get install firefox-esr",
        }
    }
}

/// One page of a browser, as the browser's protocol sees it.
pub trait Tab {
    /// The JSON value of the JavaScript expression `js` (a promise is
    /// awaited); an exception is an error.
    fn eval(&self, js: &str) -> Result<Value, String>;
    /// Types `text` into the focused element.
    fn insert_text(&self, text: &str) -> Result<(), String>;
    /// A left click at viewport coordinates.
    fn click_at(&self, x: f64, y: f64) -> Result<(), String>;
    /// Closes the page as a user closing its tab would.
    fn close(&self) -> Result<(), String>;
    /// Uncaught exceptions of the page so far (everything the browser sent
    /// before this call is included).
    fn exceptions(&self) -> Vec<String>;
    /// A PNG of the viewport.
    fn screenshot(&self) -> Result<Vec<u8>, String>;
}

/// Opens pages in one running browser.
pub trait Driver {
    fn name(&self) -> &'static str;
    /// A new window showing `url`; `init_script` (statements) runs in every
    /// document of it before the page's own scripts.
    fn open_tab(&self, url: &str, init_script: Option<&str>) -> Result<Rc<dyn Tab>, String>;
    fn stderr_tail(&self, lines: usize) -> String;
}

struct PageEntry {
    label: String,
    tab: Rc<dyn Tab>,
    open: bool,
}

/// One running browser and the pages it has opened.
pub struct Browser {
    driver: Box<dyn Driver>,
    pages: RefCell<Vec<PageEntry>>,
}

impl Browser {
    pub fn new(driver: Box<dyn Driver>) -> Browser {
        Browser {
            driver,
            pages: Default::default(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.driver.name()
    }

    /// A new tab showing `url`; `init_script` runs before the page's own.
    pub fn open(&self, label: &str, url: &str, init_script: Option<&str>) -> Page<'_> {
        let tab = self
            .driver
            .open_tab(url, init_script)
            .unwrap_or_else(|e| panic!("{} page {label}: {e}", self.name()));
        self.pages.borrow_mut().push(PageEntry {
            label: label.to_string(),
            tab: Rc::clone(&tab),
            open: true,
        });
        let page = Page {
            b: self,
            label: label.to_string(),
            tab,
        };
        page.wait(
            "the client page has loaded",
            "document.readyState === 'complete' && typeof WebRTCSignalingClient === 'function' \
             && !!document.getElementById('status')",
            SHORT,
        );
        page
    }

    /// No uncaught exception and no console.error() in any page so far, and
    /// no negotiation error in the #log of the open ones.
    pub fn assert_no_exceptions(&self) {
        self.assert_no_exceptions_but(&[]);
    }

    /// As [`Browser::assert_no_exceptions`], but problems that contain one of
    /// `expected` (what the scenario itself provokes) are allowed.
    pub fn assert_no_exceptions_but(&self, expected: &[&str]) {
        for p in self.pages.borrow().iter() {
            let mut problems = p.tab.exceptions();
            if p.open {
                problems.extend(negotiation_errors(&*p.tab));
            }
            problems.retain(|e| !expected.iter().any(|x| e.contains(x)));
            assert!(
                problems.is_empty(),
                "{} page {}: uncaught exception(s) or negotiation error(s): {}",
                self.name(),
                p.label,
                problems.join("\n")
            );
        }
    }

    /// Status, peers, videos and log tail of every open page (for failure
    /// messages).
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for p in self.pages.borrow().iter().filter(|p| p.open) {
            let text = match p.tab.eval(PAGE_STATE_JS) {
                Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string()),
                Err(e) => e,
            };
            out.push_str(&format!(
                "\n--- {} page {} ---\n{text}\n",
                self.name(),
                p.label
            ));
            for e in p.tab.exceptions() {
                out.push_str(&format!("exception: {e}\n"));
            }
        }
        out.push_str(&format!(
            "--- {} stderr (tail) ---\n{}\n",
            self.name(),
            self.driver.stderr_tail(15)
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

/// The frame counter of a <video>: Firefox keeps
/// `getVideoPlaybackQuality().totalVideoFrames` at 0 for a live MediaStream
/// and counts the frames it shows in `mozPaintedFrames` instead.
const FRAMES_JS: &str = "(typeof v.mozPaintedFrames === 'number' ? v.mozPaintedFrames : \
                         v.getVideoPlaybackQuality().totalVideoFrames)";

const PAGE_STATE_JS: &str = "(() => { const s = document.getElementById('status'); \
     return { status: s.dataset.state + ': ' + s.textContent, \
       peers: [...document.querySelectorAll('#peers li')].map(l => l.dataset.peerId + ' ' + (l.dataset.connection || '')), \
       videos: [...document.querySelectorAll('#remote-videos video')].map(v => v.dataset.peerId + ' ' + v.videoWidth + 'x' + v.videoHeight + ' frames=' + \
         (typeof v.mozPaintedFrames === 'number' ? v.mozPaintedFrames : v.getVideoPlaybackQuality().totalVideoFrames)), \
       log: [...document.querySelectorAll('#log div')].slice(-40).map(d => d.textContent) }; })()";

/// JS expression: facts about the remote <video> of `peer` (null if absent).
pub fn video_probe_js(peer: &str) -> String {
    let sel = format!("#remote-videos video[data-peer-id={}]", json!(peer));
    format!(
        "((v) => v ? {{ w: v.videoWidth, h: v.videoHeight, frames: {FRAMES_JS}, \
           frozen: !v.srcObject || !v.srcObject.getVideoTracks().some(t => t.readyState === 'live' && !t.muted) }} \
         : null)(document.querySelector({}))",
        json!(sel)
    )
}

/// The "error ..." lines WebRTCPeerMesh wrote to #log (a step of the
/// negotiation failed).
fn negotiation_errors(tab: &dyn Tab) -> Vec<String> {
    let js =
        "[...document.querySelectorAll('#log div')].map(d => d.textContent.replace(/^\\S+ /, '')) \
              .filter(t => t.startsWith('error ')).map(t => '#log: ' + t)";
    match tab.eval(js) {
        Ok(v) => serde_json::from_value(v).unwrap_or_default(),
        Err(e) => vec![format!("reading #log: {e}")],
    }
}

fn log_count_js(text: &str) -> String {
    format!(
        "[...document.querySelectorAll('#log div')].filter(d => d.textContent.includes({})).length",
        json!(text)
    )
}

/// One client page, driven through the ids of PROTOCOL.md section 7.
pub struct Page<'b> {
    b: &'b Browser,
    pub label: String,
    tab: Rc<dyn Tab>,
}

impl Page<'_> {
    pub fn browser_name(&self) -> &'static str {
        self.b.name()
    }

    pub fn try_eval(&self, js: &str) -> Result<Value, String> {
        self.tab.eval(js)
    }

    pub fn eval(&self, js: &str) -> Value {
        self.try_eval(js).unwrap_or_else(|e| self.fail(&e))
    }

    /// Polls `js` until it is truthy; panics with diagnostics at the deadline.
    pub fn wait(&self, what: &str, js: &str, timeout: Duration) {
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
    pub fn fail(&self, msg: &str) -> ! {
        panic!("{} page {}: {msg}", self.b.name(), self.label);
    }

    /// Types like a user: focus the input, select its text, type `text`.
    pub fn type_into(&self, id: &str, text: &str) {
        self.eval(&format!(
            "(() => {{ const e = document.getElementById({}); e.focus(); e.select(); return true; }})()",
            json!(id)
        ));
        self.tab
            .insert_text(text)
            .unwrap_or_else(|e| self.fail(&format!("typing into #{id}: {e}")));
        let value = self.eval(&format!("document.getElementById({}).value", json!(id)));
        if value != json!(text) {
            self.fail(&format!("typing {text:?} into #{id} left {value}"));
        }
    }

    /// A real mouse click in the middle of the (enabled, visible) element.
    pub fn click(&self, id: &str) {
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
        self.tab
            .click_at(x, y)
            .unwrap_or_else(|e| self.fail(&format!("clicking #{id}: {e}")));
    }

    /// (data-state, text) of #status.
    pub fn status(&self) -> (String, String) {
        let v = self.eval(
            "[document.getElementById('status').dataset.state, document.getElementById('status').textContent]",
        );
        (
            v[0].as_str().unwrap_or_default().to_string(),
            v[1].as_str().unwrap_or_default().to_string(),
        )
    }

    pub fn wait_status(&self, text: &str) {
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

    /// Waits until #status is in the error state and its text contains `what`.
    pub fn wait_error(&self, what: &str) {
        self.wait(
            &format!("#status shows an error with {what:?}"),
            &format!(
                "(() => {{ const s = document.getElementById('status'); \
                   return s.dataset.state === 'error' && s.textContent.includes({}); }})()",
                json!(what)
            ),
            SHORT,
        );
    }

    /// data-peer-id of the #peers items, in order (and each item's text is its id).
    pub fn peers(&self) -> Vec<String> {
        let v = self.eval(
            "[...document.querySelectorAll('#peers li')].map(l => l.dataset.peerId === l.textContent ? l.dataset.peerId : 'MISMATCH:' + l.dataset.peerId + '/' + l.textContent)",
        );
        serde_json::from_value(v).unwrap_or_default()
    }

    pub fn assert_peers(&self, expected: &[&str]) {
        let got = self.peers();
        if got != expected {
            self.fail(&format!("#peers is {got:?}, expected {expected:?}"));
        }
    }

    pub fn wait_peers(&self, expected: &[&str]) {
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
    pub fn assert_remote_videos(&self, expected: &[&str]) {
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

    /// The remote <video> of `peer` has a size and shows new frames,
    /// continuously over two seconds (frame counter rising in each second).
    pub fn assert_video_flowing(&self, peer: &str) {
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
        let mut last = f0;
        let deadline = t0 + MEDIA;
        // Two windows of at least one second each, new frames in both.
        while marks.len() < 3 {
            std::thread::sleep(POLL);
            let f = frames();
            let due = t0 + Duration::from_secs(marks.len() as u64);
            if f < last {
                // The sender restarted its video: the counter starts again.
                marks = vec![f];
            } else if Instant::now() >= due && marks.last().is_some_and(|&m| f > m) {
                marks.push(f);
            }
            last = f;
            if Instant::now() > deadline {
                self.fail(&format!(
                    "the video from {peer} does not show new frames (frame counts {marks:?}, now {f})"
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

    /// Waits until the remote <video> of `peer` has a size, a live unmuted
    /// track and has shown a frame (a lighter check than
    /// [`Page::assert_video_flowing`]).
    pub fn wait_video_arrives(&self, peer: &str) {
        let started = Instant::now();
        self.wait(
            &format!("the video from {peer} arrives"),
            &format!(
                "((v) => !!v && v.w > 0 && v.frames > 0 && !v.frozen)({})",
                video_probe_js(peer)
            ),
            MEDIA,
        );
        println!(
            "    {}: video from {peer} within {} ms",
            self.label,
            started.elapsed().as_millis()
        );
    }

    /// Waits until the remote <video> of `peer` has no live, unmuted track.
    pub fn wait_video_stopped(&self, peer: &str) {
        self.wait(
            &format!("{peer}'s video stops"),
            &format!("{}.frozen", video_probe_js(peer)),
            MEDIA,
        );
    }

    /// How many lines of the page's #log contain `text`.
    pub fn log_count(&self, text: &str) -> u64 {
        self.eval(&log_count_js(text)).as_u64().unwrap_or(0)
    }

    /// Waits until at least `n` lines of the page's #log contain `text`.
    pub fn wait_log_count(&self, text: &str, n: u64) {
        self.wait(
            &format!("#log has {n} line(s) with {text:?}"),
            &format!("{} >= {n}", log_count_js(text)),
            MEDIA,
        );
    }

    pub fn assert_no_exceptions(&self) {
        let mut problems = self.tab.exceptions();
        problems.extend(negotiation_errors(&*self.tab));
        if !problems.is_empty() {
            self.fail(&format!(
                "uncaught exception(s) or negotiation error(s): {}",
                problems.join("\n")
            ));
        }
    }

    /// Closes the tab (as a user closing it would).
    pub fn close(&self) {
        self.tab
            .close()
            .unwrap_or_else(|e| self.fail(&format!("closing: {e}")));
        for p in self.b.pages.borrow_mut().iter_mut() {
            if Rc::ptr_eq(&p.tab, &self.tab) {
                p.open = false;
            }
        }
    }

    pub fn screenshot(&self, path: &Path) {
        // Wait for a fresh frame before capturing.
        self.eval(
            "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))",
        );
        let png = self
            .tab
            .screenshot()
            .unwrap_or_else(|e| self.fail(&format!("screenshot: {e}")));
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

// ---------------------------------------------------------------------------
// The server under test

pub struct Env {
    pub server: Server,
    pub base: String,
    /// The browser of `browser()`: the one the test file is about.
    pub kind: Kind,
    /// Where scenario (a) saves a PNG of the call, if anywhere.
    pub screenshot: Option<PathBuf>,
}

impl Env {
    fn start(kind: Kind, screenshot: Option<PathBuf>) -> Env {
        let server = Server::start(test_config()).expect("start the signaling server");
        let base = format!("http://{}", server.local_addr());
        Env {
            server,
            base,
            kind,
            screenshot,
        }
    }

    pub fn client_url(&self, query: &str) -> String {
        format!("{}/webrtc/client{}", self.base, query)
    }

    /// The test file's browser, as every scenario gets it.
    pub fn browser(&self) -> Browser {
        match self.kind {
            Kind::Chromium => self.chromium_with(&[]),
            Kind::Firefox => self.firefox_with(&[]),
        }
    }

    pub fn chromium(&self) -> Browser {
        self.chromium_with(&[])
    }

    /// A Chromium with `extra_flags` beside the usual ones.
    pub fn chromium_with(&self, extra_flags: &[&str]) -> Browser {
        let bin = Kind::Chromium.find().expect("Chromium (checked before)");
        let c = Chromium::launch_with(&bin, extra_flags).unwrap_or_else(|e| panic!("{e}"));
        Browser::new(Box::new(ChromiumDriver(Rc::new(c))))
    }

    pub fn firefox(&self) -> Browser {
        self.firefox_with(&[])
    }

    /// A Firefox whose profile has `extra_prefs` (user.js syntax values)
    /// beside the usual ones.
    pub fn firefox_with(&self, extra_prefs: &[(&str, &str)]) -> Browser {
        let bin = Kind::Firefox.find().expect("Firefox (checked before)");
        let f = Firefox::launch(&bin, extra_prefs).unwrap_or_else(|e| panic!("{e}"));
        Browser::new(Box::new(FirefoxDriver(Rc::new(f))))
    }
}

/// 127.0.0.1, an ephemeral port, everything else default.
pub fn test_config() -> Config {
    Config {
        bind: "127.0.0.1".parse().expect("an IP address"),
        port: 0,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------
// Outer process: prerequisites, skip, re-execution in a network namespace

/// The network a test file's browsers live in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Net {
    /// Loopback only: enough for Chromium (`--allow-loopback-in-peer-connection`).
    Loopback,
    /// Loopback, and a default route through a veth pair whose both ends are
    /// in the namespace (192.0.2.1, a documentation address; the gateway
    /// 192.0.2.2 does not exist, so nothing goes anywhere; no IPv6 link-local
    /// addresses, which nothing would use). Firefox gathers no host
    /// candidate for a page that is not capturing when there is no default
    /// route, and by default offers no loopback ones.
    VethDefaultRoute,
}

impl Net {
    fn setup_script(self) -> &'static str {
        match self {
            Net::Loopback => "ip link set lo up",
            Net::VethDefaultRoute => {
                "ip link set lo up && \
                 ip link add wrtc0 type veth peer name wrtc1 && \
                 ip link set wrtc0 addrgenmode none && ip link set wrtc1 addrgenmode none && \
                 ip addr add 192.0.2.1/24 dev wrtc0 && \
                 ip link set wrtc0 up && ip link set wrtc1 up && \
                 ip route add default via 192.0.2.2 dev wrtc0"
            }
        }
    }

    fn interfaces(self) -> &'static [&'static str] {
        match self {
            Net::Loopback => &["lo"],
            Net::VethDefaultRoute => &["lo", "wrtc0", "wrtc1"],
        }
    }
}

/// What a test file needs and how it is told apart from the others.
pub struct Suite {
    /// Set (to "1") in the re-executed test inside the namespace.
    pub inner_env: &'static str,
    /// =1: a missing prerequisite fails the test instead of skipping it.
    pub require_env: &'static str,
    /// =<path>: scenario (a) saves a PNG of the call there.
    pub screenshot_env: &'static str,
    /// The browser of `Env::browser()`.
    pub kind: Kind,
    pub net: Net,
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `scenario` for the test `test_name`: outside, checks what it needs
/// (`needs`: browsers) and re-executes this test binary for that one test in
/// a fresh network namespace; inside, starts the server and runs it.
pub fn run(suite: &Suite, needs: &[Kind], test_name: &str, title: &str, scenario: fn(&Env)) {
    if std::env::var_os(suite.inner_env).is_some() {
        run_inside(suite, title, scenario);
        return;
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let unshare_args = match prerequisites(suite.net, needs) {
        Ok(a) => a,
        Err(why) => {
            if std::env::var(suite.require_env).as_deref() == Ok("1") {
                panic!(
                    "browser test {test_name} cannot run: {why} ({}=1 makes this a failure)",
                    suite.require_env
                );
            }
            println!("SKIPPED browser test {test_name}: {why}");
            return;
        }
    };
    let exe = std::env::current_exe().expect("current_exe");
    let started = Instant::now();
    let mut child = Command::new("unshare")
        .args(&unshare_args)
        .args(["--", "sh", "-c"])
        .arg(format!(r#"{} && exec "$0" "$@""#, suite.net.setup_script()))
        .arg(&exe)
        .args([
            test_name,
            "--exact",
            "--nocapture",
            "--quiet",
            "--test-threads=1",
        ])
        .env(suite.inner_env, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn unshare");
    // Relay the inner output through print! so libtest captures it as usual.
    let err = child.stderr.take().expect("piped stderr");
    let err_relay = std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("{line}");
        }
    });
    let mut ran = false;
    let out = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(out).lines().map_while(Result::ok) {
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

/// unshare options that give a namespace set up as `net` wants, or why the
/// test cannot run. The namespace check is done once per test binary.
fn prerequisites(net: Net, needs: &[Kind]) -> Result<Vec<&'static str>, String> {
    for kind in needs {
        if kind.find().is_none() {
            return Err(format!(
                "{} not found ({})",
                kind.name(),
                kind.install_hint()
            ));
        }
    }
    static CHECK: OnceLock<Result<Vec<&'static str>, String>> = OnceLock::new();
    CHECK
        .get_or_init(|| {
            // Root: plain `unshare -n`; otherwise an unprivileged user namespace.
            let mut why = Vec::new();
            for args in [vec!["-n"], vec!["-r", "-n"]] {
                let out = Command::new("unshare")
                    .args(&args)
                    .args(["--", "sh", "-c", net.setup_script()])
                    .stdin(Stdio::null())
                    .output();
                match out {
                    Ok(o) if o.status.success() => return Ok(args),
                    Ok(o) => why.push(format!(
                        "`unshare {}` with `{}` failed: {}",
                        args.join(" "),
                        net.setup_script(),
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
        .clone()
}

// ---------------------------------------------------------------------------
// Inner process: the scenario itself

fn run_inside(suite: &Suite, title: &str, scenario: fn(&Env)) {
    let mut ifaces = interfaces();
    ifaces.sort();
    assert_eq!(
        ifaces,
        suite.net.interfaces(),
        "the browser tests must run in a network namespace of their own ({:?})",
        suite.net
    );
    let started = Instant::now();
    let screenshot = std::env::var_os(suite.screenshot_env).map(PathBuf::from);
    let env = Env::start(suite.kind, screenshot);
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

// ---------------------------------------------------------------------------
// Process and file helpers of the browser launchers

/// Waits a little for the browser to exit, kills it by PID otherwise, and
/// removes its directory.
pub struct ChildGuard {
    pub child: Option<Child>,
    pub dir: Option<PathBuf>,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        let Some(dir) = self.dir.take() else { return };
        for _ in 0..20 {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

/// The last `lines` lines of a log file (D-Bus complaints left out).
pub fn tail(path: &Path, lines: usize) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    let all: Vec<&str> = s.lines().filter(|l| !l.contains("dbus")).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Standard base64 (screenshots come as base64 from both protocols).
pub fn base64_decode(input: &str) -> Result<Vec<u8>, String> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some((c - b'A') as u32),
            b'a'..=b'z' => Some((c - b'a' + 26) as u32),
            b'0'..=b'9' => Some((c - b'0' + 52) as u32),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in input.as_bytes() {
        if c == b'=' {
            break;
        }
        if c.is_ascii_whitespace() {
            continue;
        }
        let v = val(c).ok_or_else(|| format!("invalid base64 byte {c:#x}"))?;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_round_trip_examples() {
        assert_eq!(super::base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(super::base64_decode("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(super::base64_decode("aA==").unwrap(), b"h");
        assert_eq!(super::base64_decode("").unwrap(), b"");
    }
}
