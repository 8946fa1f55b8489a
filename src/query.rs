//! Query strings (`?token=…&resume=…`): one parser for every parameter the server
//! reads, and redaction for logs. Pure.

use std::borrow::Cow;

/// The percent-decoded value of the first `name=` parameter of `query` (the part of
/// a request target after `?`, without a fragment).
pub fn param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

/// Splits a request target into path and query.
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    let target = target.split('#').next().unwrap_or("");
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

/// Parameters whose values are credentials: never logged.
const SECRET_PARAMS: [&str; 2] = ["token", "resume"];

/// `target` with the values of credential parameters hidden, for logs.
pub fn redact(target: &str) -> Cow<'_, str> {
    let Some((base, query)) = target.split_once('?') else {
        return target.into();
    };
    let secret = |kv: &str| {
        SECRET_PARAMS
            .iter()
            .any(|p| kv.strip_prefix(p).is_some_and(|rest| rest.starts_with('=')))
    };
    if !query.split('&').any(secret) {
        return target.into();
    }
    let query: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if secret(kv) => format!("{k}=…").into(),
            _ => kv.into(),
        })
        .collect();
    format!("{base}?{}", query.join("&")).into()
}

fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_found_and_decoded() {
        let q = Some("a=1&token=x%2By+z&peer=p&token=second");
        assert_eq!(param(q, "token").as_deref(), Some("x+y z"));
        assert_eq!(param(q, "peer").as_deref(), Some("p"));
        assert_eq!(param(q, "nope"), None);
        assert_eq!(param(None, "token"), None);
        assert_eq!(
            param(Some("token=%zz%4"), "token").as_deref(),
            Some("%zz%4")
        );
    }

    #[test]
    fn targets_split_at_the_first_question_mark_and_drop_fragments() {
        assert_eq!(split_target("/a?b=c?d#e"), ("/a", Some("b=c?d")));
        assert_eq!(split_target("/a#x?y"), ("/a", None));
    }

    #[test]
    fn credentials_never_reach_a_log_line() {
        assert_eq!(redact("/x?token=abc&a=1"), "/x?token=…&a=1");
        assert_eq!(
            redact("/x?a=1&resume=r&tokens=keep"),
            "/x?a=1&resume=…&tokens=keep"
        );
        assert_eq!(redact("/plain"), "/plain");
    }
}
