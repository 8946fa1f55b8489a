//! The binary's logger: simplelog's human lines (`--log-format text`, the default,
//! `2025-01-31T12:00:00.123Z [INFO] listening on …`, UTC) or
//! one JSON object per line (`--log-format json`) for log collectors, both on stderr.
//!
//! A JSON line looks like
//!
//! ```text
//! {"ts":"2025-01-31T12:00:00.123Z","level":"info","target":"webrtc_signaling::session","thread":"conn","msg":"session start room=r peer=p remote=127.0.0.1:5000"}
//! ```
//!
//! `ts` is UTC (RFC 3339, milliseconds), `level` one of `error` `warn` `info` `debug`
//! `trace`, `target` the module that logged, `thread` the thread's name (`conn` for
//! connection and session threads, `router`, `accept`, `main`). Each line is written
//! with one `write` call on a locked stderr, so lines from different threads never
//! interleave.
//!
//! Both formats go through [`Filtered`]: `--log-level` is a level, optionally with
//! levels for named targets (`debug,rustls=trace`). tungstenite logs frames with their
//! payloads (SDP, ICE addresses) at debug and trace: it stays at `info` unless named
//! (`--log-level trace,tungstenite=trace`). And every message has its control and
//! bidirectional characters escaped (`webrtc_signaling::logsafe`), whoever logged it.

use std::io::{IsTerminal, Write};
use std::time::SystemTime;

use log::{LevelFilter, Log, Metadata, Record};
use time::macros::format_description;
use time::OffsetDateTime;
use webrtc_signaling::logsafe;

/// How the binary writes its log lines to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// simplelog's human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (`ts`, `level`, `target`, `thread`, `msg`).
    Json,
}

/// Targets that log message payloads: capped at `info` unless named in the spec.
const PAYLOAD_TARGETS: [&str; 1] = ["tungstenite"];

/// `--log-level`: a level for everything, and levels for named targets (a target
/// names a module path prefix, e.g. `tungstenite` or `webrtc_signaling::core`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelSpec {
    pub default: LevelFilter,
    /// Longest prefix first.
    pub targets: Vec<(String, LevelFilter)>,
}

impl LevelSpec {
    /// Parses `info` or `debug,tungstenite=trace,rustls=warn`.
    pub fn parse(v: &str) -> Result<LevelSpec, String> {
        let level = |s: &str| match s.trim().to_ascii_lowercase().as_str() {
            l @ ("off" | "error" | "warn" | "info" | "debug" | "trace") => {
                Ok(l.parse::<LevelFilter>().unwrap_or(LevelFilter::Info))
            }
            other => Err(format!("{other:?} is not a log level")),
        };
        let mut parts = v.split(',');
        let default = level(parts.next().unwrap_or(""))?;
        let mut targets = Vec::new();
        for part in parts {
            let (target, l) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not TARGET=LEVEL"))?;
            let target = target.trim();
            if target.is_empty() {
                return Err(format!("{part:?} names no target"));
            }
            targets.push((target.to_owned(), level(l)?));
        }
        for t in PAYLOAD_TARGETS {
            if !targets.iter().any(|(n, _)| n == t) {
                targets.push((t.to_owned(), default.min(LevelFilter::Info)));
            }
        }
        targets.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
        Ok(LevelSpec { default, targets })
    }

    /// The level in force for `target`.
    pub fn level(&self, target: &str) -> LevelFilter {
        self.targets
            .iter()
            .find(|(n, _)| {
                target
                    .strip_prefix(n.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
            })
            .map_or(self.default, |(_, l)| *l)
    }

    /// The most verbose level anything may log at.
    pub fn max(&self) -> LevelFilter {
        self.targets
            .iter()
            .map(|(_, l)| *l)
            .fold(self.default, std::cmp::max)
    }
}

/// Installs the process-wide logger. Fails only if one is already installed.
pub fn init(format: LogFormat, spec: LevelSpec) -> Result<(), log::SetLoggerError> {
    let max = spec.max();
    let inner: Box<dyn Log> = match format {
        LogFormat::Text => {
            // Date, time and zone on every line (UTC, as in the JSON format): a line
            // copied out of the journal or a file still says when it happened.
            let config = simplelog::ConfigBuilder::new()
                .set_target_level(LevelFilter::Off)
                .set_thread_level(LevelFilter::Off)
                .set_time_format_custom(format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
                ))
                .build();
            let color = if std::io::stderr().is_terminal() {
                simplelog::ColorChoice::Auto
            } else {
                simplelog::ColorChoice::Never
            };
            simplelog::TermLogger::new(max, config, simplelog::TerminalMode::Stderr, color)
        }
        LogFormat::Json => Box::new(JsonLogger::new(max)),
    };
    log::set_boxed_logger(Box::new(Filtered { spec, inner }))?;
    log::set_max_level(max);
    Ok(())
}

/// Applies the per-target levels and escapes every message (see the module docs).
pub struct Filtered {
    spec: LevelSpec,
    inner: Box<dyn Log>,
}

impl Log for Filtered {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.spec.level(metadata.target()) && self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let text = record.args().to_string();
        if !text.chars().any(logsafe::is_unsafe) {
            return self.inner.log(record);
        }
        let escaped = escape_unsafe(&text);
        self.inner.log(
            &Record::builder()
                .metadata(record.metadata().clone())
                .args(format_args!("{escaped}"))
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Only the unsafe characters (the library escaped client text already, backslashes
/// included; escaping those again would double them).
fn escape_unsafe(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if logsafe::is_unsafe(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// `--log-format json`.
pub struct JsonLogger {
    level: LevelFilter,
}

impl JsonLogger {
    pub fn new(level: LevelFilter) -> Self {
        JsonLogger { level }
    }
}

impl Log for JsonLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = json_line(record, SystemTime::now());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// One record as a JSON object and a newline, keys in a fixed order (`ts` first).
pub fn json_line(record: &Record, now: SystemTime) -> String {
    let thread = std::thread::current();
    let fields = [
        ("ts", rfc3339_millis(now)),
        ("level", record.level().as_str().to_ascii_lowercase()),
        ("target", record.target().to_owned()),
        ("thread", thread.name().unwrap_or("?").to_owned()),
        ("msg", record.args().to_string()),
    ];
    let mut line = String::with_capacity(160);
    for (i, (key, value)) in fields.iter().enumerate() {
        line.push(if i == 0 { '{' } else { ',' });
        line.push_str(&format!("\"{key}\":"));
        // serde_json escapes quotes, backslashes and control characters.
        line.push_str(&serde_json::to_string(value).unwrap_or_else(|_| "\"\"".into()));
    }
    line.push_str("}\n");
    line
}

/// `2025-01-31T12:00:00.123Z` (UTC).
pub fn rfc3339_millis(t: SystemTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from(t)
        .format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_are_utc_rfc3339_with_millis() {
        let at = |s: u64, ms: u64| {
            rfc3339_millis(UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z"); // leap day
        assert_eq!(at(1_700_000_000, 123), "2023-11-14T22:13:20.123Z");
        assert_eq!(at(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000Z"); // 2100: no leap day
    }

    #[test]
    fn a_line_is_one_json_object_with_the_message_escaped() {
        let args = format_args!("quote \" backslash \\ newline \n tab \t é");
        let record = Record::builder()
            .args(args)
            .level(log::Level::Warn)
            .target("webrtc_signaling::test")
            .build();
        let line = json_line(&record, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ts"], "2023-11-14T22:13:20.000Z");
        assert_eq!(v["level"], "warn");
        assert_eq!(v["target"], "webrtc_signaling::test");
        assert_eq!(v["msg"], "quote \" backslash \\ newline \n tab \t é");
        assert!(v["thread"].is_string());
        assert!(line.starts_with(r#"{"ts":"2023-11-14T22:13:20.000Z","level":"warn","#));
    }

    #[test]
    fn level_specs_cap_tungstenite_unless_named() {
        let s = LevelSpec::parse("trace").unwrap();
        assert_eq!(
            s.level("webrtc_signaling::driver::conn"),
            LevelFilter::Trace
        );
        assert_eq!(s.level("tungstenite::protocol"), LevelFilter::Info);
        assert_eq!(s.level("tungstenitex"), LevelFilter::Trace);
        assert_eq!(s.max(), LevelFilter::Trace);
        let s = LevelSpec::parse("warn,tungstenite=trace,webrtc_signaling::core=debug").unwrap();
        assert_eq!(s.level("tungstenite::protocol"), LevelFilter::Trace);
        assert_eq!(
            s.level("webrtc_signaling::core::router"),
            LevelFilter::Debug
        );
        assert_eq!(s.level("webrtc_signaling::server"), LevelFilter::Warn);
        assert_eq!(s.max(), LevelFilter::Trace);
        assert_eq!(
            LevelSpec::parse("off").unwrap().level("tungstenite"),
            LevelFilter::Off
        );
        for bad in ["loud", "info,x", "info,=debug", "info,x=loud"] {
            assert!(LevelSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn escaping_keeps_backslashes_and_escapes_controls_and_bidi() {
        assert_eq!(escape_unsafe("a\\b\n\u{202e}"), "a\\b\\u{a}\\u{202e}");
    }

    #[test]
    fn level_filter_applies() {
        let logger = JsonLogger::new(LevelFilter::Info);
        let meta = |level| Metadata::builder().level(level).build();
        assert!(logger.enabled(&meta(log::Level::Error)));
        assert!(logger.enabled(&meta(log::Level::Info)));
        assert!(!logger.enabled(&meta(log::Level::Debug)));
    }
}
