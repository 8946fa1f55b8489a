//! The HTTP head parser and framing decision (`http::framing::next`, the function the
//! connection thread uses) against a strict reading of RFC 9112 written here from
//! the RFC text: a pipelined stream must split into the same requests with the same
//! fields, bodies and keep-alive decisions, and stop the same way.

use proptest::prelude::*;
use webrtc_signaling::http_pure::framing::{self, Body, Step};
use webrtc_signaling::http_pure::route::{self, Route};

const MAX: usize = 8192;
const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Request {
        method: String,
        target: String,
        minor: u8,
        headers: Vec<(String, String)>,
        body: Body,
        keep_alive: bool,
    },
    Partial,
    TooLarge,
    Bad,
}

fn product(mut input: &[u8]) -> Vec<Out> {
    let mut outs = Vec::new();
    loop {
        match framing::next(input, MAX) {
            Step::Request {
                head,
                len,
                body,
                keep_alive,
            } => {
                assert!(len > 0 && len <= input.len().min(MAX));
                let (path, _) = webrtc_signaling::query::split_target(&head.target);
                if let Route::Signaling { room, peer } = route::route(&head.method, path) {
                    assert_eq!(path, format!("/webrtc/signaling/{room}/{peer}"));
                }
                outs.push(Out::Request {
                    method: head.method,
                    target: head.target,
                    minor: head.minor_version,
                    headers: head.headers,
                    body,
                    keep_alive,
                });
                if !keep_alive || input.len() == len {
                    return outs;
                }
                input = &input[len..];
            }
            Step::Partial => return push(outs, Out::Partial),
            Step::TooLarge => return push(outs, Out::TooLarge),
            Step::Bad(_) => return push(outs, Out::Bad),
        }
    }
}

fn push(mut outs: Vec<Out>, out: Out) -> Vec<Out> {
    outs.push(out);
    outs
}

// ------------------------------------------------------------ the reference

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What the reference head parser found.
enum Ref {
    Head(Out, usize),
    Partial,
    Bad,
    TooMany,
}

/// A cursor over the bytes: `None` from a helper means "ran out" (partial).
struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cur<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    /// CRLF: Some(true) yes, Some(false) not a line end, None: ran out.
    fn crlf(&mut self) -> Option<bool> {
        match self.peek()? {
            b'\r' => {
                let next = *self.b.get(self.i + 1)?;
                if next == b'\n' {
                    self.i += 2;
                    Some(true)
                } else {
                    Some(false)
                }
            }
            _ => Some(false),
        }
    }
}

/// RFC 9112 §2-§5, strictly: request-line = method SP request-target SP HTTP-version
/// CRLF (one empty line before it is ignored, §2.2), then field lines `token ":" OWS
/// value OWS CRLF` with no obs-fold, then CRLF. The target is 1*VCHAR (unknown forms
/// are the router's 404). Only HTTP/1.0 and HTTP/1.1.
fn reference_head(b: &[u8]) -> Ref {
    let mut c = Cur { b, i: 0 };
    macro_rules! more {
        ($e:expr) => {
            match $e {
                Some(v) => v,
                None => return Ref::Partial,
            }
        };
    }
    while c.b[c.i..].starts_with(b"\r\n") {
        c.i += 2;
    }
    if c.b[c.i..] == *b"\r" {
        return Ref::Partial;
    }
    let start = c.i;
    while is_tchar(more!(c.peek())) {
        c.i += 1;
    }
    if c.i == start || more!(c.peek()) != b' ' {
        return Ref::Bad;
    }
    let method = String::from_utf8_lossy(&b[start..c.i]).into_owned();
    c.i += 1;
    let start = c.i;
    while more!(c.peek()).is_ascii_graphic() {
        c.i += 1;
    }
    if c.i == start || more!(c.peek()) != b' ' {
        return Ref::Bad;
    }
    let target = String::from_utf8_lossy(&b[start..c.i]).into_owned();
    c.i += 1;
    for &want in b"HTTP/1." {
        if more!(c.peek()) != want {
            return Ref::Bad;
        }
        c.i += 1;
    }
    let minor = match more!(c.peek()) {
        b'0' => 0,
        b'1' => 1,
        _ => return Ref::Bad,
    };
    c.i += 1;
    if !more!(c.crlf()) {
        return Ref::Bad;
    }
    let mut headers = Vec::new();
    loop {
        if more!(c.crlf()) {
            break;
        }
        let start = c.i;
        while is_tchar(more!(c.peek())) {
            c.i += 1;
        }
        if c.i == start || more!(c.peek()) != b':' {
            return Ref::Bad;
        }
        let name = String::from_utf8_lossy(&b[start..c.i]).into_owned();
        c.i += 1;
        let start = c.i;
        loop {
            match more!(c.peek()) {
                b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => c.i += 1,
                b'\r' => break,
                _ => return Ref::Bad,
            }
        }
        let value = &b[start..c.i];
        if !more!(c.crlf()) {
            return Ref::Bad;
        }
        // The field line over the limit is read whole first (a broken one is 400
        // like any other), then refused for the count: 431.
        if headers.len() == MAX_HEADERS {
            return Ref::TooMany;
        }
        let trimmed = value.trim_ascii();
        headers.push((name, String::from_utf8_lossy(trimmed).into_owned()));
    }
    Ref::Head(
        Out::Request {
            method,
            target,
            minor,
            headers,
            body: Body::None,
            keep_alive: false,
        },
        c.i,
    )
}

fn list<'a>(headers: &'a [(String, String)], name: &str) -> Option<Vec<&'a str>> {
    let lines: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect();
    if lines.is_empty() {
        return None;
    }
    // RFC 9110 §5.6.1: elements separated by commas, empty ones ignored; a line
    // with no element at all is an empty (invalid) element here.
    Some(
        lines
            .iter()
            .flat_map(|l| {
                let els: Vec<&str> = l
                    .split(',')
                    .map(|e| e.trim_matches([' ', '\t']))
                    .filter(|e| !e.is_empty())
                    .collect();
                if els.is_empty() {
                    vec![""]
                } else {
                    els
                }
            })
            .collect(),
    )
}

/// RFC 9110 §7.2 / RFC 3986 §3.2.2: uri-host [ ":" port ], host not empty.
fn host_ok(v: &str) -> bool {
    let (host, rest) = match v.strip_prefix('[') {
        Some(r) => match r.split_once(']') {
            Some((lit, rest)) => {
                let ok = !lit.is_empty()
                    && lit
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
                if !ok {
                    return false;
                }
                ("[]", rest)
            }
            None => return false,
        },
        None => match v.find(':') {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, ""),
        },
    };
    let reg_name = |h: &str| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b))
    };
    if host != "[]" && !reg_name(host) {
        return false;
    }
    match rest.strip_prefix(':') {
        Some(port) => port.bytes().all(|b| b.is_ascii_digit()),
        None => rest.is_empty(),
    }
}

/// RFC 9112 §6.1, §6.3 and §3.2 on a parsed head.
fn reference_framing(headers: &[(String, String)], minor: u8) -> Option<Body> {
    let hosts: Vec<&(String, String)> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
        .collect();
    if hosts.len() != 1 || !host_ok(&hosts[0].1) {
        return None; // §3.2: 400
    }
    let te = list(headers, "transfer-encoding");
    let cl = list(headers, "content-length");
    if let Some(te) = te {
        // §6.1: TE with CL, TE in HTTP/1.0, or chunked not (only) final: 400.
        if cl.is_some() || minor == 0 {
            return None;
        }
        let n = te
            .iter()
            .filter(|c| c.eq_ignore_ascii_case("chunked"))
            .count();
        let last = te.last().is_some_and(|c| c.eq_ignore_ascii_case("chunked"));
        return (n == 1 && last).then_some(Body::Chunked);
    }
    match cl {
        None => Some(Body::None),
        Some(values) => {
            // §6.3 item 5 and RFC 9110 §8.6: identical values may be taken as one.
            if values.iter().any(|v| *v != values[0]) {
                return None;
            }
            if values[0].is_empty() || !values[0].bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            match values[0].parse::<u64>().ok()? {
                0 => Some(Body::None),
                n => Some(Body::Length(n)),
            }
        }
    }
}

fn reference(mut input: &[u8]) -> Vec<Out> {
    let mut outs = Vec::new();
    loop {
        let window = &input[..input.len().min(MAX)];
        match reference_head(window) {
            Ref::Head(
                Out::Request {
                    method,
                    target,
                    minor,
                    headers,
                    ..
                },
                len,
            ) => {
                let Some(body) = reference_framing(&headers, minor) else {
                    return push(outs, Out::Bad);
                };
                let tokens = list(&headers, "connection").unwrap_or_default();
                let has = |t: &str| tokens.iter().any(|x| x.eq_ignore_ascii_case(t));
                // §9.3: 1.1 persists unless "close"; 1.0 only with "keep-alive".
                // A body is never read: the connection ends after the answer.
                let keep_alive =
                    body == Body::None && !has("close") && (minor == 1 || has("keep-alive"));
                outs.push(Out::Request {
                    method,
                    target,
                    minor,
                    headers,
                    body,
                    keep_alive,
                });
                if !keep_alive || input.len() == len {
                    return outs;
                }
                input = &input[len..];
            }
            Ref::Head(..) => unreachable!(),
            Ref::Partial if input.len() >= MAX => return push(outs, Out::TooLarge),
            Ref::Partial => return push(outs, Out::Partial),
            Ref::TooMany => return push(outs, Out::TooLarge),
            Ref::Bad => return push(outs, Out::Bad),
        }
    }
}

pub fn check(input: &[u8]) -> Result<(), String> {
    let ours = product(input);
    let theirs = reference(input);
    // An incomplete head that already holds a byte the RFC forbids: the parser may
    // wait for the rest before saying 400. No request is served either way.
    let lenient_tail = ours.len() == theirs.len()
        && ours[..ours.len() - 1] == theirs[..theirs.len() - 1]
        && ours.last() == Some(&Out::Partial)
        && theirs.last() == Some(&Out::Bad);
    if ours == theirs || lenient_tail {
        Ok(())
    } else {
        Err(format!(
            "split differs:\n ours:      {ours:?}\n reference: {theirs:?}"
        ))
    }
}

pub const DICTIONARY: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b",",
    b"GET ",
    b"HEAD ",
    b"POST ",
    b" HTTP/1.1\r\n",
    b" HTTP/1.0\r\n",
    b"Host: h\r\n",
    b"Host: ",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked\r\n",
    b"Connection: close\r\n",
    b"Connection: keep-alive\r\n",
    b"chunked",
    b"0",
    b"5",
    b"\r\n\r\n",
    b"\x80",
    b"\x7f",
    b"\0",
    b"[::1]",
    b"Upgrade: websocket\r\n",
];

/// Pipelined requests built from plausible and broken parts.
pub fn generate() -> BoxedStrategy<Vec<u8>> {
    let method = prop::sample::select(vec![
        "GET", "HEAD", "POST", "DELETE", "OPTIONS", "G@T", "", "get",
    ]);
    let target = prop::sample::select(vec![
        "/",
        "/healthz",
        "/webrtc/rooms",
        "/webrtc/rooms/r/peers",
        "/webrtc/signaling/r/p?token=x",
        "*",
        "/\u{e9}",
        "/a b",
        "http://h/x",
        "",
    ]);
    let version = prop::sample::select(vec![
        "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "http/1.1",
    ]);
    let header = prop::sample::select(vec![
        "Host: h",
        "Host: h",
        "Host: [::1]:8000",
        "Host: a:b:c",
        "Host: ",
        "Host: h/x",
        "Host:h:",
        "Content-Length: 0",
        "Content-Length: 5",
        "Content-Length: 5, 5",
        "Content-Length: 5,6",
        "Content-Length: +5",
        "Content-Length:",
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: gzip",
        "Transfer-Encoding: gzip, chunked",
        "Connection: close",
        "Connection: keep-alive",
        "Connection: Upgrade",
        "Upgrade: websocket",
        " folded",
        "X : y",
        "X: a\tb ",
        "X:\x7f",
        "X:\u{e9}",
        ": empty",
        "X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ]);
    let eol = prop::sample::select(vec!["\r\n", "\r\n", "\r\n", "\r\n", "\n", "\r", "\r\r\n"]);
    let request = (
        method,
        target,
        version,
        prop::collection::vec(header, 0..8),
        eol,
        any::<bool>(),
        0usize..8,
    )
        .prop_map(|(m, t, v, hs, eol, blank, body)| {
            let mut r = String::new();
            if blank {
                r.push_str("\r\n");
            }
            r.push_str(&format!("{m} {t} {v}\r\n"));
            for h in hs {
                r.push_str(h);
                r.push_str(eol);
            }
            r.push_str("\r\n");
            r.push_str(&"b".repeat(body));
            r.into_bytes()
        });
    prop::collection::vec(request, 1..4)
        .prop_map(|rs| rs.concat())
        .boxed()
}
