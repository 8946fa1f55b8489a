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

use std::io::{IsTerminal, Write};
use std::time::SystemTime;

use log::{LevelFilter, Log, Metadata, Record};
use time::macros::format_description;
use time::OffsetDateTime;

/// How the binary writes its log lines to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// simplelog's human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (`ts`, `level`, `target`, `thread`, `msg`).
    Json,
}

/// Installs the process-wide logger. Fails only if one is already installed.
pub fn init(format: LogFormat, level: LevelFilter) -> Result<(), log::SetLoggerError> {
    match format {
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
            simplelog::TermLogger::init(level, config, simplelog::TerminalMode::Stderr, color)
        }
        LogFormat::Json => {
            log::set_boxed_logger(Box::new(JsonLogger::new(level)))?;
            log::set_max_level(level);
            Ok(())
        }
    }
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
    fn level_filter_applies() {
        let logger = JsonLogger::new(LevelFilter::Info);
        let meta = |level| Metadata::builder().level(level).build();
        assert!(logger.enabled(&meta(log::Level::Error)));
        assert!(logger.enabled(&meta(log::Level::Info)));
        assert!(!logger.enabled(&meta(log::Level::Debug)));
    }
}
