//! A real `redis-server` for the cluster tests, on a free loopback port, in a
//! directory of its own, stopped (by PID) when dropped. Without `redis-server` the
//! tests print why and skip, unless WEBRTC_SIGNALING_REQUIRE_REDIS=1.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const REQUIRE_ENV: &str = "WEBRTC_SIGNALING_REQUIRE_REDIS";

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

fn redis_server() -> Option<PathBuf> {
    ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

impl Redis {
    /// A running server, or `None` (the test skips) when redis-server is missing.
    pub fn start(test: &str) -> Option<Redis> {
        Redis::start_with(test, &[])
    }

    /// As `start`, with more redis-server arguments (e.g. `--requirepass`).
    pub fn start_with(test: &str, args: &[&str]) -> Option<Redis> {
        let Some(bin) = redis_server() else {
            if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
                panic!("redis-server is not installed ({REQUIRE_ENV}=1 makes this a failure)");
            }
            println!("SKIPPED {test}: redis-server is not installed (apt package redis-server)");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("wsig-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut r = Redis {
            child: None,
            port,
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        r.spawn(&bin);
        Some(r)
    }

    fn spawn(&mut self, bin: &std::path::Path) {
        let mut child = Command::new(bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--logfile", ""])
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        // It says when it listens; the rest of its log is drained in the background.
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if line.contains("Ready to accept connections") {
                    let _ = tx.send(());
                }
            }
        });
        self.child = Some(child);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("redis-server did not become ready");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL: an outage, nothing saved).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again, empty, on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let bin = redis_server().expect("redis-server");
        self.spawn(&bin);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
