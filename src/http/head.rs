//! HTTP/1.1 request heads: parsed from bytes by a pure function, so the rules can be
//! tested (and fuzzed) without a socket. Parsing itself is httparse's; on top of it
//! two rules of RFC 9112 that httparse leaves lenient are strict here, so that a proxy
//! in front cannot split a stream differently from us: lines end in CRLF (no bare LF,
//! §2.2), and the request target is visible ASCII (§3.2). What a head means for the
//! body and the connection is [`super::framing`]'s.

/// Most headers a request may carry; more is 431.
pub const MAX_HEADERS: usize = 64;

/// A parsed request head, owned so the read buffer can be reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    /// The request target: path and query, as sent.
    pub target: String,
    pub minor_version: u8,
    pub headers: Vec<(String, String)>,
}

/// Why no head could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// More bytes or headers than allowed: 431.
    TooLarge,
    /// Not HTTP: 400.
    Malformed,
}

/// Parses the head at the start of `buf`: `Ok(None)` if it is not complete yet, else
/// the head and how many bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    // httparse is shown only the bytes before the first bare LF: a head that needs
    // more than those has a bare LF in it, and an earlier fault is reported first.
    let bare_lf = first_bare_lf(buf);
    // httparse takes any byte above 0x7F in the target and says so only once the head
    // is complete; an incomplete head with one is already not a request.
    if target_so_far(buf).iter().any(|b| !b.is_ascii_graphic()) {
        return Err(HeadError::Malformed);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&buf[..bare_lf.unwrap_or(buf.len())]) {
        Ok(httparse::Status::Complete(len)) => {
            let target = req.path.unwrap_or("");
            let head = Head {
                method: req.method.unwrap_or("").to_owned(),
                target: target.to_owned(),
                minor_version: req.version.unwrap_or(1),
                headers: req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect(),
            };
            Ok(Some((head, len)))
        }
        Ok(httparse::Status::Partial) if bare_lf.is_some() => Err(HeadError::Malformed),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(_) => Err(HeadError::Malformed),
    }
}

/// The request target as far as it has arrived: between the first and the second
/// space of the request line (after the empty lines a client may send before it).
fn target_so_far(buf: &[u8]) -> &[u8] {
    let mut line = buf;
    while let Some(rest) = line.strip_prefix(b"\r\n") {
        line = rest;
    }
    let line = &line[..line
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(line.len())];
    let Some(sp) = line.iter().position(|&b| b == b' ') else {
        return &[];
    };
    let rest = &line[sp + 1..];
    &rest[..rest.iter().position(|&b| b == b' ').unwrap_or(rest.len())]
}

/// Where the first LF not preceded by CR is: httparse takes it as a line end, a proxy
/// may not.
fn first_bare_lf(bytes: &[u8]) -> Option<usize> {
    bytes
        .iter()
        .enumerate()
        .position(|(i, &b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
}

impl Head {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether any `name` header lists `token` (comma-separated, case-insensitive).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Whether the client lets the connection carry another request after this one
    /// (the body, if any, is [`super::framing`]'s business).
    pub fn keep_alive(&self) -> bool {
        if self.header_has_token("connection", "close") {
            return false;
        }
        self.minor_version >= 1 || self.header_has_token("connection", "keep-alive")
    }

    /// `GET` with `Upgrade: websocket` and `Connection: upgrade`.
    pub fn is_websocket_upgrade(&self) -> bool {
        self.header_has_token("upgrade", "websocket")
            && self.header_has_token("connection", "upgrade")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_head_is_parsed_and_the_rest_left() {
        let buf = b"GET /x?y=1 HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\n\r\nNEXT";
        let (head, len) = parse(buf).unwrap().unwrap();
        assert_eq!(&buf[len..], b"NEXT");
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/x?y=1");
        assert_eq!(head.header("HOST"), Some("h"));
        assert!(head.header_has_token("connection", "upgrade"));
        assert!(head.keep_alive());
        assert!(!head.is_websocket_upgrade());
    }

    #[test]
    fn partial_malformed_and_oversized_heads() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: h\r\n"), Ok(None));
        assert_eq!(parse(b"\x16\x03\x01 hello"), Err(HeadError::Malformed));
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(parse(many.as_bytes()), Err(HeadError::TooLarge));
    }

    #[test]
    fn keep_alive_rules() {
        let head = |s: &str| parse(s.as_bytes()).unwrap().unwrap().0;
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive());
        assert!(!head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive());
    }

    #[test]
    fn bare_lf_and_non_ascii_targets_are_malformed() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\nHost: h\n\n"),
            Err(HeadError::Malformed)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: h\n\r\n"),
            Err(HeadError::Malformed)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nX: a\n"),
            Err(HeadError::Malformed)
        );
        assert_eq!(
            parse("GET /\u{e9} HTTP/1.1\r\nHost: h\r\n\r\n".as_bytes()),
            Err(HeadError::Malformed)
        );
        // Known before the head is complete.
        assert_eq!(parse("GET /\u{e9}".as_bytes()), Err(HeadError::Malformed));
    }
}
