//! The ES module in Node: the package the server serves (`/webrtc/client/package.json`,
//! `signaling.mjs`, `signaling.js`, `signaling.d.ts`) is vendored into a temporary
//! `node_modules` the way an app would, and tests/node/module_test.mjs drives it
//! against the real server; the Node example of docs/browser-client.md runs as it is
//! written; tests/node/types_test.ts type-checks against the served signaling.d.ts
//! (tsc from target/node-deps, which .ci/run installs). Needs `node` (20 or later);
//! prints why it skips otherwise, and WEBRTC_SIGNALING_REQUIRE_NODE=1 (set by
//! .ci/run) makes that a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const REQUIRE_ENV: &str = "WEBRTC_SIGNALING_REQUIRE_NODE";
const DOC: &str = include_str!("../docs/browser-client.md");

fn node() -> Option<PathBuf> {
    let out = Command::new("node").arg("--version").output().ok()?;
    out.status.success().then(|| PathBuf::from("node"))
}

fn skip_or_fail(why: &str) {
    if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
        panic!("{why} ({REQUIRE_ENV}=1 makes this a failure)");
    }
    println!("SKIPPED node module test: {why}");
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "webrtc-signaling-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Downloads the package files from the server into `dir`.
fn vendor(addr: std::net::SocketAddr, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for file in [
        "package.json",
        "signaling.mjs",
        "signaling.js",
        "signaling.d.ts",
    ] {
        let resp = common::get(addr, &format!("/webrtc/client/{file}"));
        assert_eq!(resp.status, 200, "GET /webrtc/client/{file}");
        std::fs::write(dir.join(file), &resp.body).unwrap();
    }
}

/// Node's flags for a global WebSocket: none on Node 22, `--experimental-websocket`
/// on Node 20; on older Node (Debian 12 ships 18) the `ws` package that .ci/run
/// installs into target/node-deps is copied into `dir` and made the global by a
/// preloaded module. `None`: no WebSocket at all.
fn websocket_flags(node: &Path, dir: &Path) -> Option<Vec<String>> {
    for flags in [&[][..], &["--experimental-websocket"][..]] {
        let out = Command::new(node)
            .args(flags)
            .args(["-e", "process.stdout.write(typeof WebSocket)"])
            .output()
            .expect("run node");
        if String::from_utf8_lossy(&out.stdout) == "function" {
            return Some(flags.iter().map(|f| f.to_string()).collect());
        }
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/node-deps/node_modules/ws");
    if !ws.join("package.json").is_file() {
        return None;
    }
    let status = Command::new("cp")
        .arg("-r")
        .arg(&ws)
        .arg(dir.join("node_modules"))
        .status()
        .expect("cp");
    assert!(status.success());
    std::fs::write(
        dir.join("ws-global.mjs"),
        "import { WebSocket } from 'ws';\nglobalThis.WebSocket = WebSocket;\n",
    )
    .unwrap();
    Some(vec!["--import".into(), "./ws-global.mjs".into()])
}

/// Runs `node flags script args` in `dir`, killed after a deadline; (success, output).
fn run_node(node: &Path, dir: &Path, script: &str, args: &[&str]) -> (bool, String) {
    std::fs::create_dir_all(dir.join("node_modules")).unwrap();
    let Some(flags) = websocket_flags(node, dir) else {
        let why = "this Node has no WebSocket and the ws package is not in target/node-deps \
                   (npm install --prefix target/node-deps ws, as .ci/run does)";
        skip_or_fail(why);
        return (true, "skipped".into());
    };
    let child = Command::new(node)
        .args(flags)
        .arg("--no-warnings")
        .arg(script)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send(());
        out
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let out = waiter.join().unwrap().expect("node output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_es_module_drives_the_server_from_node() {
    let Some(node) = node() else {
        return skip_or_fail("node is not installed (apt-get install nodejs)");
    };
    let server = common::start();
    let addr = server.local_addr();
    let dir = TempDir::new("node-module");
    vendor(addr, &dir.0.join("node_modules/webrtc-signaling-client"));
    std::fs::write(
        dir.0.join("module_test.mjs"),
        include_str!("node/module_test.mjs"),
    )
    .unwrap();
    let base = format!("ws://{addr}");
    let (ok, out) = run_node(&node, &dir.0, "module_test.mjs", &[&base]);
    assert!(ok, "the Node test failed:\n{out}");
    if out == "skipped" {
        return;
    }
    assert!(out.contains("node module test: ok"), "{out}");
    println!("{}", out.trim());
}

/// The Node example of docs/browser-client.md, as written there (only the server's
/// address is this test's).
#[test]
fn the_documented_node_example_runs() {
    let Some(node) = node() else {
        return skip_or_fail("node is not installed (apt-get install nodejs)");
    };
    let start = DOC
        .find("```js node-example")
        .expect("docs/browser-client.md has a ```js node-example block");
    let body = &DOC[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    let example = &body[..body.find("```").unwrap()];
    assert!(example.contains("ws://localhost:8000"), "{example}");
    let server = common::start();
    let addr = server.local_addr();
    let (_peer, _) = common::Client::join(addr, "room1", "peer1");
    let dir = TempDir::new("node-example");
    vendor(addr, &dir.0.join("vendor/webrtc-signaling"));
    let script = example.replace("ws://localhost:8000", &format!("ws://{addr}"));
    std::fs::write(dir.0.join("example.mjs"), script).unwrap();
    let (ok, out) = run_node(&node, &dir.0, "example.mjs", &[]);
    assert!(ok, "the documented example failed:\n{out}");
    if out == "skipped" {
        return;
    }
    assert!(out.contains("in the room: [ 'peer1' ]"), "{out}");
}

/// The TypeScript declarations: a strict compile of tests/node/types_test.ts against
/// the package as served, with `@ts-expect-error` lines proving misuses are refused.
#[test]
fn the_typescript_declarations_type_check() {
    let tsc = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/node-deps/node_modules/.bin/tsc");
    if !tsc.is_file() {
        return skip_or_fail(
            "tsc is not in target/node-deps (npm install --prefix target/node-deps typescript, as .ci/run does)",
        );
    }
    let server = common::start();
    let dir = TempDir::new("node-types");
    vendor(
        server.local_addr(),
        &dir.0.join("node_modules/webrtc-signaling-client"),
    );
    std::fs::write(
        dir.0.join("types_test.ts"),
        include_str!("node/types_test.ts"),
    )
    .unwrap();
    let out = Command::new(&tsc)
        .args([
            "--noEmit",
            "--strict",
            "--target",
            "es2022",
            "--module",
            "nodenext",
            "--moduleResolution",
            "nodenext",
            "--lib",
            "es2022,dom",
            "types_test.ts",
        ])
        .current_dir(&dir.0)
        .output()
        .expect("run tsc");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "tsc found errors:\n{text}");
}
