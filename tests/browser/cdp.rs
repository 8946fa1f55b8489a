//! A small synchronous Chrome DevTools Protocol client on tungstenite, and a
//! headless Chromium launcher (fresh profile in a temporary directory; the
//! browser is closed, killed by PID if needed, and its profile removed on drop).
//!
//! One WebSocket to the browser target; pages are attached with
//! `Target.attachToTarget {flatten: true}` and addressed by `sessionId`.
//! Events that arrive while waiting for a command's answer are kept, per
//! session, until a test asks for them.

use std::cell::{Cell, RefCell};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use super::common::{base64_decode, tail, ChildGuard, Driver, Tab};

/// Flags every test browser gets (see docs/browser-client.md).
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    // Several tabs play video at once: keep the ones not in front running.
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding",
    "--mute-audio",
    "--window-size=1280,860",
    "--remote-debugging-port=0",
];

pub type CdpResult<T> = Result<T, String>;

/// One DevTools event: the session it belongs to (None: browser target).
#[derive(Debug, Clone)]
pub struct Event {
    pub session: Option<String>,
    pub method: String,
    pub params: Value,
}

struct Conn {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    events: Vec<Event>,
}

pub struct Chromium {
    conn: RefCell<Conn>,
    child: Option<Child>,
    dir: PathBuf,
}

static PROFILE_SEQ: AtomicUsize = AtomicUsize::new(0);

impl Chromium {
    /// Starts `binary` headless with a fresh `--user-data-dir` and connects
    /// to its DevTools endpoint (read from `DevToolsActivePort`);
    /// `extra_flags` come after [`CHROMIUM_FLAGS`] (e.g.
    /// `--ignore-certificate-errors` for a self-signed server).
    pub fn launch_with(binary: &Path, extra_flags: &[&str]) -> CdpResult<Chromium> {
        let dir = std::env::temp_dir().join(format!(
            "webrtc-signaling-chromium-{}-{}",
            std::process::id(),
            PROFILE_SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let stderr = std::fs::File::create(dir.join("chromium-stderr.log"))
            .map_err(|e| format!("create stderr log: {e}"))?;
        let mut cmd = Command::new(binary);
        cmd.args(CHROMIUM_FLAGS)
            .args(extra_flags)
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", binary.display()))?;
        // From here on, Drop of a half-built value must still clean up.
        let mut guard = ChildGuard {
            child: Some(child),
            dir: Some(dir.clone()),
        };

        let port_file = dir.join("profile").join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let (port, path) = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    if let Ok(port) = port.trim().parse::<u16>() {
                        break (port, path.trim().to_string());
                    }
                }
            }
            if let Some(status) = guard.child.as_mut().unwrap().try_wait().ok().flatten() {
                return Err(format!(
                    "chromium exited early ({status}); stderr:\n{}",
                    tail(&dir.join("chromium-stderr.log"), 40)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "chromium did not write DevToolsActivePort within 30 s; stderr:\n{}",
                    tail(&dir.join("chromium-stderr.log"), 40)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        };

        let stream = TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| format!("connect to DevTools port {port}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).ok();
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (ws, _) = tungstenite::client::client(url.as_str(), stream)
            .map_err(|e| format!("DevTools WebSocket handshake with {url}: {e}"))?;
        let child = guard.child.take();
        guard.dir = None; // owned by the Chromium value from here on
        Ok(Chromium {
            conn: RefCell::new(Conn {
                ws,
                next_id: 1,
                events: Vec::new(),
            }),
            child,
            dir,
        })
    }

    /// Sends one command and waits (at most 60 s) for its answer.
    pub fn call(&self, session: Option<&str>, method: &str, params: Value) -> CdpResult<Value> {
        let mut conn = self.conn.borrow_mut();
        let id = conn.next_id;
        conn.next_id += 1;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
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
                Message::Close(_) => return Err(format!("{method}: DevTools socket closed")),
                _ => continue,
            };
            let v: Value =
                serde_json::from_str(&text).map_err(|e| format!("{method}: bad JSON: {e}"))?;
            if v.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(err) = v.get("error") {
                    return Err(format!("{method}: {err}"));
                }
                return Ok(v.get("result").cloned().unwrap_or(Value::Null));
            }
            if let Some(m) = v.get("method").and_then(Value::as_str) {
                conn.events.push(Event {
                    session: v
                        .get("sessionId")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    method: m.to_string(),
                    params: v.get("params").cloned().unwrap_or(Value::Null),
                });
            }
        }
    }

    /// The events seen so far for `session` whose method is `method`
    /// (they stay stored).
    pub fn events(&self, session: &str, method: &str) -> Vec<Event> {
        self.conn
            .borrow()
            .events
            .iter()
            .filter(|e| e.session.as_deref() == Some(session) && e.method == method)
            .cloned()
            .collect()
    }

    /// Opens a new tab on about:blank and attaches to it.
    /// Returns (targetId, sessionId).
    pub fn new_tab(&self) -> CdpResult<(String, String)> {
        let r = self.call(
            None,
            "Target.createTarget",
            json!({ "url": "about:blank", "newWindow": true, "width": 1280, "height": 860 }),
        )?;
        let target = r["targetId"]
            .as_str()
            .ok_or("createTarget: no targetId")?
            .to_string();
        let r = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        )?;
        let session = r["sessionId"]
            .as_str()
            .ok_or("attachToTarget: no sessionId")?
            .to_string();
        Ok((target, session))
    }

    pub fn close_tab(&self, target: &str) -> CdpResult<()> {
        self.call(None, "Target.closeTarget", json!({ "targetId": target }))
            .map(|_| ())
    }

    /// The last lines of Chromium's stderr (for failure reports).
    pub fn stderr_tail(&self, lines: usize) -> String {
        tail(&self.dir.join("chromium-stderr.log"), lines)
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        if let Ok(mut conn) = self.conn.try_borrow_mut() {
            // Ask politely first; the answer is not awaited.
            let _ = conn
                .ws
                .send(Message::text(r#"{"id":0,"method":"Browser.close"}"#));
            let _ = conn.ws.flush();
        }
        let _ = ChildGuard {
            child: self.child.take(),
            dir: Some(self.dir.clone()),
        };
    }
}

/// [`Driver`] of a Chromium: one new window per page.
pub struct ChromiumDriver(pub Rc<Chromium>);

impl Driver for ChromiumDriver {
    fn name(&self) -> &'static str {
        "chromium"
    }

    fn open_tab(&self, url: &str, init_script: Option<&str>) -> Result<Rc<dyn Tab>, String> {
        let (target, session) = self.0.new_tab()?;
        let tab = CdpTab {
            cdp: Rc::clone(&self.0),
            target,
            session,
            closed: Cell::new(false),
        };
        tab.cmd("Runtime.enable", json!({}))?;
        tab.cmd("Page.enable", json!({}))?;
        if let Some(src) = init_script {
            tab.cmd(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({ "source": src }),
            )?;
        }
        tab.cmd("Page.navigate", json!({ "url": url }))?;
        Ok(Rc::new(tab))
    }

    fn stderr_tail(&self, lines: usize) -> String {
        self.0.stderr_tail(lines)
    }
}

struct CdpTab {
    cdp: Rc<Chromium>,
    target: String,
    session: String,
    closed: Cell<bool>,
}

impl CdpTab {
    fn cmd(&self, method: &str, params: Value) -> CdpResult<Value> {
        self.cdp.call(Some(&self.session), method, params)
    }
}

impl Tab for CdpTab {
    fn eval(&self, js: &str) -> Result<Value, String> {
        let r = self.cmd(
            "Runtime.evaluate",
            json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
        )?;
        if let Some(ex) = r.get("exceptionDetails") {
            return Err(format!("{js}: {ex}"));
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    fn insert_text(&self, text: &str) -> Result<(), String> {
        self.cmd("Input.insertText", json!({ "text": text }))
            .map(|_| ())
    }

    fn click_at(&self, x: f64, y: f64) -> Result<(), String> {
        for kind in ["mousePressed", "mouseReleased"] {
            self.cmd(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )?;
        }
        Ok(())
    }

    fn close(&self) -> Result<(), String> {
        self.cdp.close_tab(&self.target)?;
        self.closed.set(true);
        Ok(())
    }

    fn exceptions(&self) -> Vec<String> {
        if !self.closed.get() {
            // Flush: events sent before this answer are read by now.
            let _ = self.cmd("Runtime.evaluate", json!({"expression": "0"}));
        }
        let thrown = self.cdp.events(&self.session, "Runtime.exceptionThrown");
        let console = self.cdp.events(&self.session, "Runtime.consoleAPICalled");
        thrown
            .iter()
            .map(|e| format!("exception: {}", e.params["exceptionDetails"]))
            .chain(
                console
                    .iter()
                    .filter(|e| e.params["type"] == "error")
                    .map(|e| format!("console.error: {}", e.params["args"])),
            )
            .collect()
    }

    fn screenshot(&self) -> Result<Vec<u8>, String> {
        self.cmd(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false }),
        )?;
        // Wait for a fresh frame at the new size before capturing.
        self.eval(
            "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))",
        )?;
        let r = self.cmd("Page.captureScreenshot", json!({ "format": "png" }))?;
        base64_decode(r["data"].as_str().unwrap_or_default())
    }
}
