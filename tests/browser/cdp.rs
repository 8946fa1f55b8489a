//! A small synchronous Chrome DevTools Protocol client on tungstenite, and a
//! headless Chromium launcher (fresh profile in a temporary directory; the
//! browser is closed, killed by PID if needed, and its profile removed on drop).
//!
//! One WebSocket to the browser target; pages are attached with
//! `Target.attachToTarget {flatten: true}` and addressed by `sessionId`.
//! Events that arrive while waiting for a command's answer are kept, per
//! session, until a test asks for them.

use std::cell::RefCell;
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

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
    /// to its DevTools endpoint (read from `DevToolsActivePort`).
    pub fn launch(binary: &Path) -> CdpResult<Chromium> {
        Self::launch_with(binary, &[])
    }

    /// As [`Chromium::launch`], with `extra_flags` after [`CHROMIUM_FLAGS`]
    /// (e.g. `--ignore-certificate-errors` for a self-signed server).
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

/// Waits a little for the browser to exit, kills it by PID otherwise, and
/// removes the profile directory.
struct ChildGuard {
    child: Option<Child>,
    dir: Option<PathBuf>,
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

fn tail(path: &Path, lines: usize) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    let all: Vec<&str> = s.lines().filter(|l| !l.contains("dbus")).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Standard base64 (for `Page.captureScreenshot`).
pub fn base64_decode(input: &str) -> CdpResult<Vec<u8>> {
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
