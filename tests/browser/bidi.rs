//! A small synchronous WebDriver BiDi client on tungstenite, and a headless
//! Firefox launcher: Debian's `firefox-esr` with `--remote-debugging-port`
//! (its built-in BiDi endpoint; no geckodriver), a throw-away profile whose
//! `user.js` turns on fake media devices, and the browser closed, killed by
//! PID if needed, and its profile removed on drop.
//!
//! Pages are top-level browsing contexts (one window each) addressed by their
//! context id. Events that arrive while waiting for a command's answer are
//! kept until a test asks for them.

use std::cell::RefCell;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use super::common::{tail, ChildGuard, Driver, Tab};

/// Preferences of every test profile (written to `user.js`).
///
/// Firefox reaches for the network on its own at start-up (remote settings,
/// telemetry, captive-portal checks, updates); nothing can leave the test's
/// network namespace, but the attempts cost time and log noise, so they are
/// switched off. The media ones replace Chromium's fake-device flags.
pub const FIREFOX_PREFS: &[(&str, &str)] = &[
    // Fake camera and microphone, granted without a prompt.
    ("media.navigator.streams.fake", "true"),
    ("media.navigator.permission.disabled", "true"),
    // Host candidates as plain addresses, not mDNS names (as a capturing page
    // gets them anyway); the namespace has no mDNS responder to ask.
    ("media.peerconnection.ice.obfuscate_host_addresses", "false"),
    // Pages play remote audio: keep it silent, as Chromium's --mute-audio.
    ("media.volume_scale", "\"0.0\""),
    // Shutdown in about 1.4 s instead of 4.5 s.
    ("toolkit.shutdown.fastShutdownStage", "3"),
    ("browser.shell.checkDefaultBrowser", "false"),
    ("browser.startup.homepage_override.mstone", "\"ignore\""),
    ("browser.startup.page", "0"),
    ("browser.newtabpage.enabled", "false"),
    ("browser.aboutwelcome.enabled", "false"),
    ("datareporting.policy.dataSubmissionEnabled", "false"),
    ("datareporting.healthreport.uploadEnabled", "false"),
    ("toolkit.telemetry.enabled", "false"),
    ("toolkit.telemetry.reportingpolicy.firstRun", "false"),
    ("app.update.disabledForTesting", "true"),
    ("app.normandy.enabled", "false"),
    ("messaging-system.rsexperimentloader.enabled", "false"),
    ("services.settings.server", "\"data:,#remote-settings-off\""),
    ("network.captive-portal-service.enabled", "false"),
    ("network.connectivity-service.enabled", "false"),
    ("network.dns.disablePrefetch", "true"),
    ("network.prefetch-next", "false"),
    ("browser.safebrowsing.malware.enabled", "false"),
    ("browser.safebrowsing.phishing.enabled", "false"),
    ("browser.safebrowsing.downloads.enabled", "false"),
    ("browser.safebrowsing.blockedURIs.enabled", "false"),
    ("extensions.update.enabled", "false"),
    ("extensions.getAddons.cache.enabled", "false"),
    ("dom.push.connection.enabled", "false"),
    ("browser.backup.enabled", "false"),
];

pub type BidiResult<T> = Result<T, String>;

/// One BiDi event (`method` and `params` as sent).
#[derive(Debug, Clone)]
pub struct Event {
    pub method: String,
    pub params: Value,
}

struct Conn {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    events: Vec<Event>,
}

pub struct Firefox {
    conn: RefCell<Conn>,
    child: Option<Child>,
    dir: PathBuf,
}

static PROFILE_SEQ: AtomicUsize = AtomicUsize::new(0);

impl Firefox {
    /// Starts `binary` headless on a fresh profile with [`FIREFOX_PREFS`]
    /// and `extra_prefs` (which win), connects to its BiDi endpoint (the port
    /// is read from `WebDriverBiDiServer.json` in the profile) and opens a
    /// session that receives log entries (uncaught exceptions).
    pub fn launch(binary: &Path, extra_prefs: &[(&str, &str)]) -> BidiResult<Firefox> {
        let dir = std::env::temp_dir().join(format!(
            "webrtc-signaling-firefox-{}-{}",
            std::process::id(),
            PROFILE_SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let profile = dir.join("profile");
        std::fs::create_dir_all(&profile)
            .map_err(|e| format!("create {}: {e}", profile.display()))?;
        let user_js: String = FIREFOX_PREFS
            .iter()
            .chain(extra_prefs)
            .map(|(k, v)| format!("user_pref({}, {v});\n", json!(k)))
            .collect();
        std::fs::write(profile.join("user.js"), user_js)
            .map_err(|e| format!("write user.js: {e}"))?;
        let stderr = std::fs::File::create(dir.join("firefox-stderr.log"))
            .map_err(|e| format!("create stderr log: {e}"))?;
        let child = Command::new(binary)
            .args(["--headless", "--no-remote", "--new-instance", "--profile"])
            .arg(&profile)
            .args(["--remote-debugging-port=0", "about:blank"])
            // A private home: nothing is read from or written to the user's.
            .env("HOME", &dir)
            .env("MOZ_CRASHREPORTER_DISABLE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", binary.display()))?;
        // From here on, Drop of a half-built value must still clean up.
        let mut guard = ChildGuard {
            child: Some(child),
            dir: Some(dir.clone()),
        };

        let port_file = profile.join("WebDriverBiDiServer.json");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                if let Some(port) = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["ws_port"].as_u64())
                    .and_then(|p| u16::try_from(p).ok())
                {
                    break port;
                }
            }
            if let Some(status) = guard
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!(
                    "firefox exited early ({status}); stderr:\n{}",
                    tail(&dir.join("firefox-stderr.log"), 40)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "firefox did not write WebDriverBiDiServer.json within 30 s; stderr:\n{}",
                    tail(&dir.join("firefox-stderr.log"), 40)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        };

        let stream = TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| format!("connect to BiDi port {port}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).ok();
        let url = format!("ws://127.0.0.1:{port}/session");
        let (ws, _) = tungstenite::client::client(url.as_str(), stream)
            .map_err(|e| format!("BiDi WebSocket handshake with {url}: {e}"))?;
        let child = guard.child.take();
        guard.dir = None; // owned by the Firefox value from here on
        let ff = Firefox {
            conn: RefCell::new(Conn {
                ws,
                next_id: 1,
                events: Vec::new(),
            }),
            child,
            dir,
        };
        ff.call("session.new", json!({ "capabilities": {} }))?;
        ff.call("session.subscribe", json!({ "events": ["log.entryAdded"] }))?;
        Ok(ff)
    }

    /// Sends one command and waits (at most 60 s) for its answer.
    pub fn call(&self, method: &str, params: Value) -> BidiResult<Value> {
        let mut conn = self.conn.borrow_mut();
        let id = conn.next_id;
        conn.next_id += 1;
        let msg = json!({ "id": id, "method": method, "params": params });
        conn.ws
            .send(Message::text(msg.to_string()))
            .map_err(|e| format!("{method}: send: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if Instant::now() > deadline {
                return Err(format!("{method}: no answer within 60 s"));
            }
            let frame = conn.ws.read().map_err(|e| format!("{method}: read: {e}"))?;
            let text = match frame {
                Message::Text(t) => t.to_string(),
                Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                Message::Close(_) => return Err(format!("{method}: BiDi socket closed")),
                _ => continue,
            };
            let v: Value =
                serde_json::from_str(&text).map_err(|e| format!("{method}: bad JSON: {e}"))?;
            match v.get("type").and_then(Value::as_str) {
                Some("success") if v.get("id").and_then(Value::as_u64) == Some(id) => {
                    return Ok(v.get("result").cloned().unwrap_or(Value::Null));
                }
                Some("error") if v.get("id").and_then(Value::as_u64) == Some(id) => {
                    return Err(format!(
                        "{method}: {}: {}",
                        v["error"].as_str().unwrap_or("error"),
                        v["message"].as_str().unwrap_or_default()
                    ));
                }
                Some("event") => conn.events.push(Event {
                    method: v["method"].as_str().unwrap_or_default().to_string(),
                    params: v.get("params").cloned().unwrap_or(Value::Null),
                }),
                _ => {}
            }
        }
    }

    /// Uncaught exceptions (log entries of type `javascript`) and
    /// console.error() calls of `context` seen so far (they stay stored).
    pub fn exceptions(&self, context: &str) -> Vec<Value> {
        self.conn
            .borrow()
            .events
            .iter()
            .filter(|e| {
                e.method == "log.entryAdded"
                    && e.params["source"]["context"] == context
                    && (e.params["type"] == "javascript"
                        || (e.params["type"] == "console" && e.params["level"] == "error"))
            })
            .map(|e| e.params.clone())
            .collect()
    }

    /// The last lines of Firefox's stderr (for failure reports).
    pub fn stderr_tail(&self, lines: usize) -> String {
        tail(&self.dir.join("firefox-stderr.log"), lines)
    }
}

impl Drop for Firefox {
    fn drop(&mut self) {
        if let Ok(mut conn) = self.conn.try_borrow_mut() {
            // Ask politely first; the answer is not awaited.
            let _ = conn.ws.send(Message::text(
                r#"{"id":0,"method":"browser.close","params":{}}"#,
            ));
            let _ = conn.ws.flush();
        }
        let _ = ChildGuard {
            child: self.child.take(),
            dir: Some(self.dir.clone()),
        };
    }
}

/// [`Driver`] of a Firefox: one new window per page.
pub struct FirefoxDriver(pub Rc<Firefox>);

impl Driver for FirefoxDriver {
    fn name(&self) -> &'static str {
        "firefox"
    }

    fn open_tab(&self, url: &str, init_script: Option<&str>) -> Result<Rc<dyn Tab>, String> {
        let ff = &self.0;
        let r = ff.call("browsingContext.create", json!({ "type": "window" }))?;
        let context = r["context"]
            .as_str()
            .ok_or("browsingContext.create: no context")?
            .to_string();
        ff.call(
            "browsingContext.setViewport",
            json!({ "context": context, "viewport": { "width": 1280, "height": 800 } }),
        )?;
        if let Some(src) = init_script {
            ff.call(
                "script.addPreloadScript",
                json!({ "functionDeclaration": format!("() => {{ {src}\n}}"), "contexts": [context] }),
            )?;
        }
        ff.call(
            "browsingContext.navigate",
            json!({ "context": context, "url": url, "wait": "complete" }),
        )?;
        Ok(Rc::new(FirefoxTab {
            ff: Rc::clone(ff),
            context,
        }))
    }

    fn stderr_tail(&self, lines: usize) -> String {
        self.0.stderr_tail(lines)
    }
}

struct FirefoxTab {
    ff: Rc<Firefox>,
    context: String,
}

impl FirefoxTab {
    fn perform(&self, actions: Value) -> Result<(), String> {
        self.ff
            .call(
                "input.performActions",
                json!({ "context": self.context, "actions": actions }),
            )
            .map(|_| ())
    }
}

impl Tab for FirefoxTab {
    fn eval(&self, js: &str) -> Result<Value, String> {
        // BiDi answers with its own serialisation of values; JSON text is
        // simpler to compare, and what the CDP side returns too.
        let expression = format!(
            "Promise.resolve(({js}\n)).then(v => JSON.stringify(v === undefined ? null : v))"
        );
        let r = self.ff.call(
            "script.evaluate",
            json!({
                "expression": expression,
                "target": { "context": self.context },
                "awaitPromise": true,
                "resultOwnership": "none",
            }),
        )?;
        if r["type"] == "exception" {
            return Err(format!("{js}: {}", r["exceptionDetails"]));
        }
        let text = r["result"]["value"].as_str().unwrap_or("null");
        serde_json::from_str(text).map_err(|e| format!("{js}: result is not JSON: {e}"))
    }

    fn insert_text(&self, text: &str) -> Result<(), String> {
        let keys: Vec<Value> = text
            .chars()
            .flat_map(|c| {
                let c = c.to_string();
                [
                    json!({ "type": "keyDown", "value": c }),
                    json!({ "type": "keyUp", "value": c }),
                ]
            })
            .collect();
        self.perform(json!([{ "type": "key", "id": "keyboard", "actions": keys }]))
    }

    fn click_at(&self, x: f64, y: f64) -> Result<(), String> {
        self.perform(json!([{
            "type": "pointer",
            "id": "mouse",
            "parameters": { "pointerType": "mouse" },
            "actions": [
                { "type": "pointerMove", "x": x.round() as i64, "y": y.round() as i64, "origin": "viewport" },
                { "type": "pointerDown", "button": 0 },
                { "type": "pointerUp", "button": 0 },
            ],
        }]))
    }

    fn close(&self) -> Result<(), String> {
        self.ff
            .call("browsingContext.close", json!({ "context": self.context }))
            .map(|_| ())
    }

    fn exceptions(&self) -> Vec<String> {
        // Flush: events sent before this answer are read by now.
        let _ = self
            .ff
            .call("browsingContext.getTree", json!({ "maxDepth": 0 }));
        self.ff
            .exceptions(&self.context)
            .iter()
            .map(|e| format!("{}: {} {}", e["type"], e["text"], e["stackTrace"]))
            .collect()
    }

    fn screenshot(&self) -> Result<Vec<u8>, String> {
        let r = self.ff.call(
            "browsingContext.captureScreenshot",
            json!({ "context": self.context }),
        )?;
        super::common::base64_decode(r["data"].as_str().unwrap_or_default())
    }
}
