//! Request framing (RFC 9112 §6.3): where one request ends and the next begins, and
//! whether the connection may carry another. Pure, so the connection thread and the
//! fuzz target (`tests/fuzz/http.rs`, against a reference reading of the RFC) split a
//! pipelined stream with the same function.
//!
//! No endpoint takes a body. A request that has one is still answered, but the
//! connection then ends (with a lingering close, so the unread body cannot turn the
//! close into a reset that destroys the answer): the server never has to find the end
//! of a body, so it cannot disagree about it with a proxy. What cannot be framed
//! without doubt (two different lengths, a length beside `Transfer-Encoding`, a
//! coding other than a final `chunked`, a bad length, no `Host`, two `Host`s) is 400,
//! then the connection ends.

use super::head::{self, Head, HeadError};

/// What follows a request head on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding` ending in `chunked`.
    Chunked,
}

/// One step through the bytes a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The head is not complete yet (and within `max` bytes so far).
    Partial,
    /// The head exceeds `max` bytes or [`head::MAX_HEADERS`] fields: 431, close.
    TooLarge,
    /// Not a request we can frame: 400 with this message, close.
    Bad(&'static str),
    /// A request of `len` head bytes. With `keep_alive`, the next request starts right
    /// after the head; otherwise the connection ends after the answer.
    Request {
        head: Head,
        len: usize,
        body: Body,
        keep_alive: bool,
    },
}

/// The next request at the start of `buf`, whose head may take at most `max` bytes.
pub fn next(buf: &[u8], max: usize) -> Step {
    let window = &buf[..buf.len().min(max)];
    match head::parse(window) {
        Ok(None) if buf.len() >= max => Step::TooLarge,
        Ok(None) => Step::Partial,
        Err(HeadError::TooLarge) => Step::TooLarge,
        Err(HeadError::Malformed) => Step::Bad("malformed HTTP request"),
        Ok(Some((head, len))) => match body(&head) {
            Err(why) => Step::Bad(why),
            Ok(body) => {
                let keep_alive = body == Body::None && head.keep_alive();
                Step::Request {
                    head,
                    len,
                    body,
                    keep_alive,
                }
            }
        },
    }
}

/// The body a head announces (RFC 9112 §6.3), or why the request cannot be framed.
/// Also checks `Host` (§3.2): exactly one, with a valid value.
pub fn body(head: &Head) -> Result<Body, &'static str> {
    let mut hosts = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("host"));
    match (hosts.next(), hosts.next()) {
        (None, _) => return Err("the request has no Host header"),
        (Some(_), Some(_)) => return Err("the request has more than one Host header"),
        (Some((_, v)), None) if !valid_host(v) => return Err("the Host header is not valid"),
        _ => {}
    }
    let lengths = values(head, "content-length");
    let codings = values(head, "transfer-encoding");
    if !codings.is_empty() {
        if !lengths.is_empty() {
            return Err("Content-Length and Transfer-Encoding together");
        }
        if head.minor_version == 0 {
            return Err("Transfer-Encoding in an HTTP/1.0 request");
        }
        let chunked = |c: &str| c.eq_ignore_ascii_case("chunked");
        let last_only = codings.last().is_some_and(|c| chunked(c))
            && codings.iter().filter(|c| chunked(c)).count() == 1;
        return if last_only {
            Ok(Body::Chunked)
        } else {
            Err("Transfer-Encoding does not end in chunked")
        };
    }
    let Some(first) = lengths.first() else {
        return Ok(Body::None);
    };
    if lengths.iter().any(|l| l != first) {
        return Err("Content-Length values differ");
    }
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return Err("Content-Length is not a number");
    }
    match first.parse::<u64>() {
        Ok(0) => Ok(Body::None),
        Ok(n) => Ok(Body::Length(n)),
        Err(_) => Err("Content-Length is too large"),
    }
}

/// Every element of every `name` field line (comma-separated lists, RFC 9110 §5.6.1),
/// trimmed, empty elements skipped; a line with no element at all counts as one empty
/// element, so an empty `Content-Length` is refused rather than ignored.
fn values<'a>(head: &'a Head, name: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    for (_, v) in head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
    {
        let before = out.len();
        out.extend(
            v.split(',')
                .map(|e| e.trim_matches([' ', '\t']))
                .filter(|e| !e.is_empty()),
        );
        if out.len() == before {
            out.push("");
        }
    }
    out
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2): a registered name or
/// IPv4 address, or an IPv6 literal in brackets; then digits after a colon.
fn valid_host(v: &str) -> bool {
    let (host_ok, rest) = match v.strip_prefix('[') {
        Some(literal) => match literal.split_once(']') {
            Some((ip, rest)) => (
                !ip.is_empty()
                    && ip
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.'),
                rest,
            ),
            None => return false,
        },
        None => {
            let end = v.find(':').unwrap_or(v.len());
            let name = &v[..end];
            let name_ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b));
            (name_ok, &v[end..])
        }
    };
    let port_ok = match rest.strip_prefix(':') {
        Some(port) => port.bytes().all(|b| b.is_ascii_digit()),
        None => rest.is_empty(),
    };
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(s: &str) -> Step {
        next(s.as_bytes(), 8192)
    }

    fn framed(s: &str) -> Result<(Body, bool), &'static str> {
        match step(s) {
            Step::Request {
                body, keep_alive, ..
            } => Ok((body, keep_alive)),
            Step::Bad(why) => Err(why),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lengths_and_codings() {
        let h = "GET / HTTP/1.1\r\nHost: h\r\n";
        assert_eq!(framed(&format!("{h}\r\n")), Ok((Body::None, true)));
        assert_eq!(
            framed(&format!("{h}Content-Length: 0\r\n\r\n")),
            Ok((Body::None, true))
        );
        assert_eq!(
            framed(&format!("{h}Content-Length: 3\r\n\r\n")),
            Ok((Body::Length(3), false))
        );
        assert_eq!(
            framed(&format!(
                "{h}Content-Length: 3\r\nContent-Length: 3\r\n\r\n"
            )),
            Ok((Body::Length(3), false))
        );
        assert_eq!(
            framed(&format!("{h}Content-Length: 3, 3\r\n\r\n")),
            Ok((Body::Length(3), false))
        );
        for bad in [
            "3\r\nContent-Length: 4",
            "3, 4",
            "-1",
            "+3",
            "0x3",
            "",
            "3 3",
            "99999999999999999999",
        ] {
            assert!(
                framed(&format!("{h}Content-Length: {bad}\r\n\r\n")).is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(
            framed(&format!("{h}Transfer-Encoding: gzip, chunked\r\n\r\n")),
            Ok((Body::Chunked, false))
        );
        for bad in [
            "Transfer-Encoding: chunked\r\nContent-Length: 3",
            "Content-Length: 0\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: chunked, gzip",
            "Transfer-Encoding: chunked, chunked",
            "Transfer-Encoding: gzip",
            "Transfer-Encoding: ",
        ] {
            assert!(framed(&format!("{h}{bad}\r\n\r\n")).is_err(), "{bad:?}");
        }
        assert!(framed("GET / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
    }

    #[test]
    fn host_is_required_once() {
        assert!(framed("GET / HTTP/1.1\r\n\r\n").is_err());
        assert!(framed("GET / HTTP/1.0\r\n\r\n").is_err());
        assert!(framed("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n").is_err());
        assert!(framed("GET / HTTP/1.1\r\nHost: a b\r\n\r\n").is_err());
        assert!(framed("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n").is_err());
        assert!(framed("GET / HTTP/1.1\r\nHost: \r\n\r\n").is_err());
        assert!(framed("GET / HTTP/1.1\r\nHost: [x\r\n\r\n").is_err());
        assert!(framed("GET / HTTP/1.1\r\nHost: a:b:c\r\n\r\n").is_err());
        assert_eq!(
            framed("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"),
            Ok((Body::None, true))
        );
        assert_eq!(
            framed("GET / HTTP/1.0\r\nHost: h\r\n\r\n"),
            Ok((Body::None, false))
        );
    }

    #[test]
    fn partial_and_too_large_heads() {
        assert_eq!(step("GET / HTTP/1.1\r\nHost: h\r\n"), Step::Partial);
        assert_eq!(next(b"GET / HTTP/1.1\r\nHost: h\r\n", 10), Step::TooLarge);
        let (full, _) = ("GET / HTTP/1.1\r\nHost: h\r\n\r\n", ());
        assert!(matches!(
            next(full.as_bytes(), full.len()),
            Step::Request { .. }
        ));
        assert_eq!(next(full.as_bytes(), full.len() - 1), Step::TooLarge);
    }
}
