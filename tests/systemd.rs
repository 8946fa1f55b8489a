//! `contrib/webrtc-signaling.service`: the hardening it promises, settings the server
//! understands, and `systemd-analyze verify` (where installed; it prints why it
//! skips otherwise, and WEBRTC_SIGNALING_REQUIRE_SYSTEMD=1 makes that a failure).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

const UNIT: &str = include_str!("../contrib/webrtc-signaling.service");
const BIN: &str = env!("CARGO_BIN_EXE_webrtc-signaling");
const REQUIRE_ENV: &str = "WEBRTC_SIGNALING_REQUIRE_SYSTEMD";

/// The unit with its commented-out optional settings (TURN, admin) switched on.
fn unit_with_options() -> String {
    UNIT.lines()
        .map(|l| {
            l.strip_prefix('#')
                .filter(|rest| {
                    rest.starts_with("Environment=") || rest.starts_with("LoadCredential=")
                })
                .unwrap_or(l)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn directives(unit: &str) -> Vec<(&str, &str)> {
    unit.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .collect()
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "webrtc-signaling-unit-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn unit_has_the_promised_hardening() {
    let d = directives(UNIT);
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
        ("SystemCallFilter", "@system-service"),
        ("CapabilityBoundingSet", ""),
        ("KillSignal", "SIGTERM"),
    ] {
        assert!(
            d.contains(&(key, value)),
            "the unit lacks {key}={value}:\n{UNIT}"
        );
    }
}

#[test]
fn every_environment_line_is_a_setting_the_server_accepts() {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("turn-secret"), "s3cret\n").unwrap();
    std::fs::write(
        dir.0.join("auth-secret"),
        "auth-s3cret-auth-s3cret-auth-s3cret\n",
    )
    .unwrap();
    let unit = unit_with_options();
    let env: Vec<(String, String)> = directives(&unit)
        .into_iter()
        .filter(|(k, _)| *k == "Environment")
        .map(|(_, kv)| {
            let (k, v) = kv.split_once('=').expect("Environment=NAME=value");
            // %d is systemd's credentials directory.
            (k.to_owned(), v.replace("%d", dir.0.to_str().unwrap()))
        })
        .collect();
    assert!(env.iter().all(|(k, _)| k.starts_with("WEBRTC_SIGNALING_")));
    let help = run(&["--help"], &[]);
    for (k, _) in &env {
        assert!(
            help.contains(&format!("env {k}\n")),
            "{k} is not a flag's variable"
        );
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let settings = run(&["--check-config"], &env);
    for expected in [
        "log_format: Json",
        "admin: true",
        "turn_secret: Some(\n",
        "auth_secret: Some(\n",
        "\"turn:turn.example.org:3478?transport=udp\"",
        "\"turn:turn.example.org:3478?transport=tcp\"",
        &format!("{:?}", dir.0.join("tls-cert")),
        &format!("{:?}", dir.0.join("tls-key")),
        "allowed_origins: Origins {\n",
    ] {
        assert!(
            settings.contains(expected),
            "{expected:?} not in the unit's settings:\n{settings}"
        );
    }
    assert!(
        !settings.contains("s3cret"),
        "a secret was printed:\n{settings}"
    );
}

/// Runs the binary with only `env` for environment and returns what it printed; it
/// must exit 0.
fn run(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run the binary");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn systemd_analyze() -> Option<PathBuf> {
    ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

fn verify(analyze: &Path, dir: &Path, name: &str, unit: &str) {
    // verify checks that ExecStart exists: point it at the binary under test.
    let unit: String = unit
        .lines()
        .map(|l| {
            if l.starts_with("ExecStart=") {
                format!("ExecStart={BIN}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, unit).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // verify exits 0 on unknown keys and bad values, but names them: any output fails.
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify {name}: {}\n{text}",
        out.status
    );
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let Some(analyze) = systemd_analyze() else {
        if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
            panic!("systemd-analyze is not installed ({REQUIRE_ENV}=1 makes this a failure)");
        }
        println!("SKIPPED systemd-analyze verify: systemd-analyze is not installed (apt package systemd)");
        return;
    };
    let dir = TempDir::new();
    verify(&analyze, &dir.0, "webrtc-signaling.service", UNIT);
    verify(
        &analyze,
        &dir.0,
        "webrtc-signaling-options.service",
        &unit_with_options(),
    );
}
