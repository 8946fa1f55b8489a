//! Percent-decoding (`query::param`), log redaction (`query::redact`: a credential
//! never reaches a log line) and escaping (`logsafe::escape`), `Origin` checks
//! (`access::Origins`) and the TURN username (`ice`: exactly one `:`).
//!
//! The input is split at `|` into a request target, an Origin and a Host.

use proptest::prelude::*;
use webrtc_signaling::access::Origins;
use webrtc_signaling::{ice, logsafe, query};

fn reference_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next()? {
            '\\' => out.push('\\'),
            'u' => {
                if it.next()? != '{' {
                    return None;
                }
                let hex: String = it.by_ref().take_while(|&c| c != '}').collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

fn literal_host(h: &str) -> bool {
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split_once(']').is_some_and(|(ip, port)| {
            ip.parse::<std::net::Ipv6Addr>().is_ok() && (port.is_empty() || port.starts_with(':'))
        });
    }
    let host = h.split(':').next().unwrap_or("");
    host == "localhost" || host.parse::<std::net::Ipv4Addr>().is_ok()
}

pub fn check(input: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(input);
    let mut parts = text.splitn(3, '|');
    let target = parts.next().unwrap_or("");
    let origin = parts.next();
    let host = parts.next();

    // Percent-decoding.
    let (_, q) = query::split_target(target);
    let first = q.and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "token")
    });
    let want = first.map(|(_, v)| reference_decode(v));
    if query::param(q, "token") != want {
        return Err(format!(
            "param(token) = {:?}, expected {want:?}",
            query::param(q, "token")
        ));
    }
    // Redaction: every credential parameter's value is hidden, the rest kept.
    let red = query::redact(target);
    if let Some((_, rq)) = red.split_once('?') {
        let orig: Vec<&str> = target
            .split_once('?')
            .map(|(_, q)| q.split('&').collect())
            .unwrap_or_default();
        let got: Vec<&str> = rq.split('&').collect();
        if orig.len() != got.len() {
            return Err(format!("redact changed the parameters: {red:?}"));
        }
        for (o, g) in orig.iter().zip(&got) {
            let secret = ["token=", "resume="].iter().any(|p| o.starts_with(p));
            let ok = if secret {
                g.ends_with("=…")
                    && g.split_once('=').map(|x| x.0) == o.split_once('=').map(|x| x.0)
            } else {
                o == g
            };
            if !ok {
                return Err(format!("redact: {o:?} became {g:?}"));
            }
        }
    }
    // Escaping: nothing unsafe survives, and the original can be read back.
    let esc = logsafe::escape(&red);
    if let Some(c) = esc.chars().find(|&c| logsafe::is_unsafe(c)) {
        return Err(format!("escape left {c:?}"));
    }
    if unescape(&esc).as_deref() != Some(&*red) {
        return Err(format!("escape is not reversible: {esc:?}"));
    }

    // Origins: with an allow-list, a browser page passes only if listed or, with no
    // public origin, at an IP address or localhost equal to Host.
    let mut o = Origins::default();
    o.add("https://app.example").map_err(|e| e.to_string())?;
    let _ = Origins::default().add(target);
    let allowed = o.allows(origin, host);
    if let Some(origin) = origin {
        let n = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        let own = n
            .strip_prefix("http://")
            .or_else(|| n.strip_prefix("https://"))
            .is_some_and(|h| {
                host.is_some_and(|host| host.trim().to_ascii_lowercase() == h) && literal_host(h)
            });
        if allowed != (n == "https://app.example" || own) {
            return Err(format!("Origins::allows({origin:?}, {host:?}) = {allowed}"));
        }
    } else if !allowed {
        return Err("a request without Origin was refused".into());
    }

    // TURN: the user part never adds a colon.
    let user = ice::user_from_query(q);
    let user = user.unwrap_or_else(ice::random_user);
    let cred = ice::turn_rest_credential("turn-secret", 1_700_000_000, &user);
    if cred.username.matches(':').count() != 1 || !cred.username.starts_with("1700000000:") {
        return Err(format!("TURN username {:?}", cred.username));
    }
    Ok(())
}

pub const DICTIONARY: &[&[u8]] = &[
    b"?",
    b"&",
    b"=",
    b"token=",
    b"resume=",
    b"peer=",
    b"%",
    b"%3A",
    b"%zz",
    b"+",
    b"#",
    b"|",
    b"http://",
    b"https://",
    b"127.0.0.1",
    b"[::1]",
    b"localhost",
    b":8000",
    b"/",
    b"\xe2\x80\xae",
    b"\n",
    b"\\",
    b"\x1b[31m",
    b"null",
];

pub fn generate() -> BoxedStrategy<Vec<u8>> {
    let param = prop::sample::select(vec![
        "token=abc",
        "token=a%2Bb+c",
        "resume=r",
        "peer=p1",
        "peer=a:b",
        "peer=%3A",
        "tokens=x",
        "token",
        "=v",
        "token=%zz%4",
        "token=\u{202e}x",
        "x=1",
    ]);
    let origin = prop::sample::select(vec![
        "https://app.example",
        "HTTPS://App.Example/",
        "http://127.0.0.1:8000",
        "http://[::1]:8000",
        "http://localhost:8000",
        "http://signal.example:8000",
        "null",
        "http://127.0.0.1.evil:8000",
        "",
    ]);
    let host = prop::sample::select(vec![
        "127.0.0.1:8000",
        "[::1]:8000",
        "localhost:8000",
        "signal.example:8000",
        "127.0.0.1.evil:8000",
        "",
    ]);
    (prop::collection::vec(param, 0..5), origin, host)
        .prop_map(|(ps, o, h)| format!("/webrtc/ice-servers?{}|{o}|{h}", ps.join("&")).into_bytes())
        .boxed()
}
