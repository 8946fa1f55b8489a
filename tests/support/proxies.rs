//! Running the reverse proxies of docs/production.md for a test: the config blocks
//! taken from the document, a temporary directory, nginx started on a free port.
//! Included with `#[path]` by tests/proxy.rs and tests/browser_phone.rs.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DOC: &str = include_str!("../../docs/production.md");

/// The body of the first ```` ```lang ```` block of docs/production.md.
pub fn doc_block(lang: &str) -> String {
    let fence = format!("```{lang}\n");
    let start = DOC
        .find(&fence)
        .unwrap_or_else(|| panic!("no {fence:?} block"))
        + fence.len();
    let len = DOC[start..].find("```").unwrap();
    DOC[start..start + len].to_owned()
}

pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(name: &str) -> Dir {
        let d =
            std::env::temp_dir().join(format!("webrtc-signaling-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    pub fn file(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A proxy process, killed on drop.
pub struct Proxy(pub Child, pub PathBuf);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (bounded) until `port` accepts connections, or fails with the proxy's log.
pub fn wait_listening(proxy: &mut Proxy, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        let exited = proxy.0.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let log = std::fs::read_to_string(&proxy.1).unwrap_or_default();
            panic!("the proxy is not listening on {port} ({exited:?}):\n{log}");
        }
        // Polling interval only; the loop is bounded by the deadline above.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// nginx with the document's site configuration in front of `upstream`, TLS with
/// this certificate chain and key; returns it and its port.
pub fn start_nginx(
    nginx: &Path,
    dir: &Dir,
    chain_pem: &str,
    key_pem: &str,
    upstream: SocketAddr,
) -> (Proxy, u16) {
    let cert = dir.file("fullchain.pem", chain_pem);
    let key = dir.file("privkey.pem", key_pem);
    let port = free_port();
    let site = doc_block("nginx")
        .replace("127.0.0.1:8000", &upstream.to_string())
        .replace("listen 443 ssl;", &format!("listen 127.0.0.1:{port} ssl;"))
        .replace(
            "/etc/letsencrypt/live/signal.example.org/fullchain.pem",
            &cert,
        )
        .replace("/etc/letsencrypt/live/signal.example.org/privkey.pem", &key);
    let site = dir.file("site.conf", &site);
    let d = dir.0.display();
    let log = dir.0.join("error.log");
    let conf = dir.file(
        "nginx.conf",
        &format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             include {site};\n}}\n"
        ),
    );
    let child = Command::new(nginx)
        .args(["-c", &conf, "-p", &dir.0.to_string_lossy()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let mut proxy = Proxy(child, log);
    wait_listening(&mut proxy, port);
    (proxy, port)
}
