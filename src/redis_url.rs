//! `--redis` addresses, read once and checked at start-up. Pure.
//!
//! Our own reading of the two forms we document, instead of the `redis` crate's URL
//! parser: that one pulls the `url` crate with IDNA and Unicode normalisation tables
//! (about 80 KB of the binary) for host names a Redis address never has.

use std::fmt;

/// Where Redis listens.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Addr {
    Tcp { host: String, port: u16 },
    Unix(String),
}

/// A parsed `--redis` value. `Debug` hides the password: it may reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub addr: Addr,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisUrl")
            .field("addr", &self.addr)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .finish()
    }
}

/// The address for a log line: the password shows as `…`.
impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.addr {
            Addr::Unix(path) => write!(f, "unix://{path}?db={}", self.db),
            Addr::Tcp { host, port } => {
                f.write_str("redis://")?;
                match (&self.username, &self.password) {
                    (None, None) => {}
                    (user, pass) => {
                        f.write_str(user.as_deref().unwrap_or(""))?;
                        f.write_str(if pass.is_some() { ":…@" } else { "@" })?;
                    }
                }
                if host.contains(':') {
                    write!(f, "[{host}]:{port}/{}", self.db)
                } else {
                    write!(f, "{host}:{port}/{}", self.db)
                }
            }
        }
    }
}

pub const DEFAULT_PORT: u16 = 6379;

/// Reads `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]` or `unix://PATH[?db=DB]`.
/// The error says what is wrong without repeating the value (it may hold a password).
pub fn parse(s: &str) -> Result<RedisUrl, String> {
    if s.starts_with("rediss://") {
        return Err(
            "rediss:// (TLS to Redis) is not supported by this build; use redis:// \
                    on a private network or a TLS tunnel"
                .into(),
        );
    }
    if let Some(rest) = s.strip_prefix("unix://") {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !path.starts_with('/') {
            return Err("unix:// needs an absolute socket path".into());
        }
        let mut db = 0;
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            match kv.split_once('=') {
                Some(("db", v)) => db = number(v)?,
                _ => return Err(format!("unix://: unknown parameter {:?}", key(kv))),
            }
        }
        return Ok(RedisUrl {
            addr: Addr::Unix(decode(path)?),
            db,
            username: None,
            password: None,
        });
    }
    let rest = s
        .strip_prefix("redis://")
        .ok_or("expected redis://HOST:PORT[/DB] or unix://PATH")?;
    if rest.contains(['?', '#']) {
        return Err("redis://: query and fragment parameters are not supported".into());
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => {
            let (user, pass) = u.split_once(':').unwrap_or((u, ""));
            let nonempty = |v: &str| -> Result<Option<String>, String> {
                Ok(Some(decode(v)?).filter(|v| !v.is_empty()))
            };
            (nonempty(user)?, nonempty(pass)?)
        }
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (ip, after) = v6
            .split_once(']')
            .ok_or("redis://: unclosed [ in the host")?;
        let port = match after {
            "" => DEFAULT_PORT,
            p => port(p.strip_prefix(':').ok_or("redis://: junk after ]")?)?,
        };
        (ip.to_owned(), port)
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h.to_owned(), port(p)?),
            None => (hostport.to_owned(), DEFAULT_PORT),
        }
    };
    if host.is_empty() {
        return Err("redis://: no host".into());
    }
    if host.contains(|c: char| c.is_whitespace() || c == '%' || c == '[' || c == ']') {
        return Err("redis://: bad host".into());
    }
    let db = match path {
        "" => 0,
        p => number(p)?,
    };
    Ok(RedisUrl {
        addr: Addr::Tcp { host, port },
        db,
        username,
        password,
    })
}

fn port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!("redis://: bad port {:?}", key(p))),
    }
}

fn number(v: &str) -> Result<i64, String> {
    match v.parse::<i64>() {
        Ok(n) if n >= 0 && v.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!("bad database number {:?}", key(v))),
    }
}

/// At most 16 characters of something a user typed, for an error message.
fn key(v: &str) -> String {
    v.chars().take(16).collect()
}

/// RFC 3986 percent-decoding (no `+` for space: this is not a query string).
fn decode(v: &str) -> Result<String, String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("bad percent-encoding")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-encoding is not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Addr {
        Addr::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn the_documented_forms() {
        let u = parse("redis://127.0.0.1:6379").unwrap();
        assert_eq!(
            (u.addr, u.db, u.username, u.password),
            (tcp("127.0.0.1", 6379), 0, None, None)
        );
        let u = parse("redis://redis.internal/3").unwrap();
        assert_eq!((u.addr, u.db), (tcp("redis.internal", DEFAULT_PORT), 3));
        let u = parse("redis://[::1]:7000/1").unwrap();
        assert_eq!((u.addr, u.db), (tcp("::1", 7000), 1));
        let u = parse("redis://[::1]").unwrap();
        assert_eq!(u.addr, tcp("::1", DEFAULT_PORT));
        let u = parse("unix:///run/redis/redis.sock?db=2").unwrap();
        assert_eq!(
            (u.addr, u.db),
            (Addr::Unix("/run/redis/redis.sock".into()), 2)
        );
    }

    #[test]
    fn credentials_are_percent_decoded_and_hidden_from_debug() {
        let u = parse("redis://app:p%40ss%3Aword@h:1/0").unwrap();
        assert_eq!(u.username.as_deref(), Some("app"));
        assert_eq!(u.password.as_deref(), Some("p@ss:word"));
        assert!(!format!("{u:?}").contains("p@ss"));
        let u = parse("redis://:secret@h").unwrap();
        assert_eq!((u.username, u.password.as_deref()), (None, Some("secret")));
        // '+' stays '+' outside a query string.
        assert_eq!(
            parse("redis://:a+b@h").unwrap().password.as_deref(),
            Some("a+b")
        );
    }

    #[test]
    fn bad_values_are_refused_without_echoing_the_password() {
        for bad in [
            "http://h:1",
            "redis://",
            "redis://:6379",
            "redis://h:0",
            "redis://h:70000",
            "redis://h:+1",
            "redis://h:1/x",
            "redis://h:1/-1",
            "redis://h:1/0?protocol=resp3",
            "redis://[::1",
            "redis://[::1]x",
            "redis://h%20:1",
            "redis://:%zz@h",
            "redis://:%ff@h",
            "unix://relative.sock",
            "unix:///s?x=1",
            "rediss://h:1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let e = parse("redis://:hunter2hunter2@h:notaport").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn the_log_form_hides_the_password() {
        let shown = |s: &str| parse(s).unwrap().to_string();
        assert_eq!(shown("redis://app:hunter2@h:1/2"), "redis://app:…@h:1/2");
        assert_eq!(shown("redis://:hunter2@[::1]"), "redis://:…@[::1]:6379/0");
        assert_eq!(shown("redis://h"), "redis://h:6379/0");
        assert_eq!(shown("unix:///run/r.sock"), "unix:///run/r.sock?db=0");
    }
}
