//! Unit tests of the command line.

use super::*;

fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Run, ConfigError> {
    let cli = Cli::parse(
        args.iter().map(|s| s.to_string()),
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )?;
    match cli {
        Cli::Run(r) => Ok(*r),
        other => panic!("{other:?}"),
    }
}

#[test]
fn defaults() {
    let c = parse(&[], &[]).unwrap();
    assert_eq!(c.config.port, 8000);
    assert_eq!(c.config.bind.to_string(), "0.0.0.0");
    assert!(c.config.ice.servers.is_empty());
    assert_eq!(c.config.limits.max_message_size, 65536);
}

#[test]
fn flags_beat_env() {
    let c = parse(
        &[
            "--port",
            "9000",
            "--idle-timeout=2.5",
            "--stun",
            "stun:a:3478",
        ],
        &[
            ("WEBRTC_SIGNALING_PORT", "7000"),
            ("WEBRTC_SIGNALING_BIND", "127.0.0.1"),
            ("WEBRTC_SIGNALING_TURN", "turn:x:3478,turns:y:5349"),
            ("WEBRTC_SIGNALING_TURN_USERNAME", "u"),
            ("WEBRTC_SIGNALING_TURN_CREDENTIAL", "p"),
        ],
    )
    .unwrap();
    assert_eq!(c.config.port, 9000);
    assert_eq!(c.config.bind.to_string(), "127.0.0.1");
    assert_eq!(c.config.limits.idle_timeout, Duration::from_millis(2500));
    assert_eq!(
        c.config.ice.servers,
        ["turn:x:3478", "turns:y:5349", "stun:a:3478"]
    );
}

#[test]
fn errors_are_clear() {
    assert_eq!(
        parse(&["--port", "x"], &[]).unwrap_err().to_string(),
        "--port: \"x\" is not a valid number"
    );
    assert!(parse(&["--nope"], &[])
        .unwrap_err()
        .0
        .contains("unknown flag"));
    assert!(parse(&["--port"], &[])
        .unwrap_err()
        .0
        .contains("needs a value"));
    assert!(parse(&["--stun", "http://x"], &[]).is_err());
    assert!(parse(&["--turn", "turn:x"], &[])
        .unwrap_err()
        .0
        .contains("--turn-username"));
    assert!(parse(&["--max-connections", "0"], &[]).is_err());
    assert!(parse(&[], &[("WEBRTC_SIGNALING_PORT", "-1")])
        .unwrap_err()
        .0
        .starts_with("WEBRTC_SIGNALING_PORT"));
}

#[test]
fn turn_secret_makes_turn_urls_valid_and_stays_out_of_debug() {
    let c = parse(&["--turn", "turn:t:3478", "--turn-secret", "s3cret"], &[]).unwrap();
    assert_eq!(c.config.ice.turn_secret, Some(Secret::new("s3cret")));
    assert_eq!(c.config.ice.turn_ttl, Duration::from_secs(86_400));
    assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
    // Static credentials may stay configured; the secret wins at request time.
    let c = parse(
        &[
            "--turn-ttl",
            "600",
            "--turn-username",
            "u",
            "--turn-credential",
            "p",
        ],
        &[
            ("WEBRTC_SIGNALING_TURN", "turn:t:3478,turns:t:5349"),
            ("WEBRTC_SIGNALING_TURN_SECRET", "from-env"),
        ],
    )
    .unwrap();
    assert_eq!(c.config.ice.turn_secret, Some(Secret::new("from-env")));
    assert_eq!(c.config.ice.turn_ttl, Duration::from_secs(600));
    assert_eq!(c.config.ice.turn_username.as_deref(), Some("u"));
}

#[test]
fn turn_secret_file_is_read_and_trimmed() {
    let path = std::env::temp_dir().join(format!(
        "webrtc-signaling-secret-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&path, "  file-secret\n").unwrap();
    let path_str = path.to_str().unwrap();
    let c = parse(
        &["--turn", "turn:t:3478", "--turn-secret-file", path_str],
        &[],
    );
    std::fs::write(&path, "\n").unwrap();
    let empty = parse(
        &["--turn", "turn:t:3478", "--turn-secret-file", path_str],
        &[],
    );
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        c.unwrap().config.ice.turn_secret,
        Some(Secret::new("file-secret"))
    );
    assert!(empty.unwrap_err().0.contains("the secret is empty"));
    let missing = parse(
        &["--turn", "turn:t:3478", "--turn-secret-file", path_str],
        &[],
    );
    assert!(missing
        .unwrap_err()
        .0
        .starts_with("--turn-secret-file: cannot read"));
}

#[test]
fn turn_secret_errors() {
    assert!(parse(&["--turn-secret", "s"], &[])
        .unwrap_err()
        .0
        .contains("there are none"));
    assert!(parse(&["--turn", "turn:t", "--turn-secret", ""], &[])
        .unwrap_err()
        .0
        .contains("empty"));
    assert!(parse(
        &["--turn", "turn:t", "--turn-secret", "s", "--turn-ttl", "0"],
        &[]
    )
    .is_err());
    assert!(parse(&["--turn", "turn:t", "--turn-username", "u"], &[])
        .unwrap_err()
        .0
        .contains("--turn-secret"));
}

#[test]
fn admin_is_a_switch() {
    assert!(!parse(&[], &[]).unwrap().config.access.admin);
    let c = parse(&["--admin", "--port", "9"], &[]).unwrap();
    assert!(c.config.access.admin);
    assert_eq!(c.config.port, 9, "a switch does not take the next argument");
    assert!(
        !parse(&["--admin=false"], &[("WEBRTC_SIGNALING_ADMIN", "1")])
            .unwrap()
            .config
            .access
            .admin
    );
    for yes in ["1", "true", "YES", "on"] {
        assert!(
            parse(&[], &[("WEBRTC_SIGNALING_ADMIN", yes)])
                .unwrap()
                .config
                .access
                .admin
        );
    }
    assert!(parse(&[], &[("WEBRTC_SIGNALING_ADMIN", "maybe")]).is_err());
    assert!(help().contains("  --admin   "), "{}", help());
}

#[test]
fn log_format() {
    assert_eq!(parse(&[], &[]).unwrap().log_format, LogFormat::Text);
    assert_eq!(
        parse(&["--log-format", "JSON"], &[]).unwrap().log_format,
        LogFormat::Json
    );
    assert_eq!(
        parse(&[], &[("WEBRTC_SIGNALING_LOG_FORMAT", "json")])
            .unwrap()
            .log_format,
        LogFormat::Json
    );
    assert_eq!(
        parse(&["--log-format", "xml"], &[]).unwrap_err().0,
        "--log-format: \"xml\" is not a log format (text or json)"
    );
}

#[test]
fn help_lists_every_flag_and_env() {
    let h = help();
    for f in FLAGS {
        assert!(h.contains(&format!("--{}", f.name)));
        assert!(h.contains(&env_name(f.name)));
    }
    assert!(matches!(
        Cli::parse(["--help".to_string()], []).unwrap(),
        Cli::Help
    ));
}

#[test]
fn a_short_idle_timeout_brings_the_ping_interval_under_it() {
    let c = parse(&["--idle-timeout", "5"], &[]).unwrap();
    assert_eq!(c.config.limits.ping_interval, Duration::from_millis(2500));
    let e = parse(&["--idle-timeout", "5", "--ping-interval", "20"], &[]).unwrap_err();
    assert!(e.0.contains("shorter than the idle timeout"), "{e}");
    let c = parse(&["--idle-timeout", "5", "--ping-interval", "0"], &[]).unwrap();
    assert_eq!(c.config.limits.ping_interval, Duration::ZERO);
}

#[test]
fn durations_take_units_in_every_flag() {
    let c = parse(
        &[
            "--idle-timeout",
            "2m",
            "--ping-interval",
            "500ms",
            "--turn",
            "turn:t",
            "--turn-secret",
            "s",
            "--turn-ttl",
            "1h",
            "--auth-secret",
            "k-k-k-k-k-k-k-k-k-k-k-k-k-k-k-k-k",
            "--auth-leeway",
            "1m",
            "--http-head-timeout",
            "1.5",
        ],
        &[("WEBRTC_SIGNALING_WRITE_TIMEOUT", "30s")],
    )
    .unwrap();
    let l = &c.config.limits;
    assert_eq!(l.idle_timeout, Duration::from_secs(120));
    assert_eq!(l.ping_interval, Duration::from_millis(500));
    assert_eq!(l.write_timeout, Duration::from_secs(30));
    assert_eq!(l.http_head_timeout, Duration::from_millis(1500));
    assert_eq!(c.config.ice.turn_ttl, Duration::from_secs(3600));
    assert_eq!(c.config.access.auth_leeway, Duration::from_secs(60));
    assert!(parse(&["--idle-timeout", "5 minutes"], &[]).is_err());
    assert!(help().contains("A DURATION is seconds (2.5) or has a unit"));
}

#[test]
fn a_repeatable_flag_on_the_command_line_replaces_the_environment_list() {
    let env = [
        (
            "WEBRTC_SIGNALING_ALLOWED_ORIGIN",
            "https://a.example,https://b.example",
        ),
        ("WEBRTC_SIGNALING_STUN", "stun:env:3478"),
        ("WEBRTC_SIGNALING_TURN", "turn:env:3478"),
        ("WEBRTC_SIGNALING_TURN_SECRET", "s"),
        ("WEBRTC_SIGNALING_TRUSTED_PROXY", "10.0.0.1"),
    ];
    let c = parse(
        &[
            "--allowed-origin",
            "https://c.example",
            "--allowed-origin",
            "https://d.example",
            "--stun",
            "stun:cli:3478",
        ],
        &env,
    )
    .unwrap();
    let o = &c.config.access.allowed_origins;
    assert!(o.lists("https://c.example") && o.lists("https://d.example"));
    assert!(
        !o.lists("https://a.example"),
        "the environment's list is replaced"
    );
    // --stun replaced the environment's STUN servers only; its TURN servers stay.
    assert_eq!(c.config.ice.servers, ["turn:env:3478", "stun:cli:3478"]);
    let proxies = &c.config.trusted_proxies;
    assert!(proxies.trusts("10.0.0.1".parse().unwrap()));
    let c = parse(&["--trusted-proxy", "127.0.0.0/8"], &env).unwrap();
    assert!(!c.config.trusted_proxies.trusts("10.0.0.1".parse().unwrap()));
    assert!(c
        .config
        .trusted_proxies
        .trusts("127.0.0.2".parse().unwrap()));
}
