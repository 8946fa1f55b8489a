//! Client text made safe for a log line: control characters (a newline would forge a
//! line, an escape sequence would drive the operator's terminal) and bidirectional
//! formatting characters (which make a line read differently from what it holds) are
//! written as `\u{..}` escapes. Everything a client chose (paths, origins, header
//! values, query values) goes through [`escape`] before it reaches a log macro. Pure.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a log line as it is.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c,
            // Bidirectional formatting (Unicode TR9): embeddings, overrides, isolates,
            // and the marks.
            '\u{200E}' | '\u{200F}' | '\u{061C}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}'
            // Line and paragraph separators end a line in some viewers.
            | '\u{2028}' | '\u{2029}')
}

/// `s` with every [`is_unsafe`] character and the backslash escaped (so an escape can
/// always be told from the client's own text); borrowed when nothing needs it.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c == '\\' || is_unsafe(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_are_escaped_and_the_rest_kept() {
        assert!(matches!(escape("/webrtc/rooms?x=é"), Cow::Borrowed(_)));
        assert_eq!(escape("a\nb\r\x1b[31m"), "a\\u{a}b\\u{d}\\u{1b}[31m");
        assert_eq!(escape("evil\u{202E}gpj.exe"), "evil\\u{202e}gpj.exe");
        assert_eq!(
            escape("\u{2066}x\u{2069}\u{200f}"),
            "\\u{2066}x\\u{2069}\\u{200f}"
        );
        assert_eq!(
            escape("a\\u{a}"),
            "a\\\\u{a}",
            "a forged escape stays visible"
        );
        assert_eq!(escape("\u{7f}\u{85}"), "\\u{7f}\\u{85}");
    }
}
