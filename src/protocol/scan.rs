//! Looking at JSON text without parsing it: the bytes outside its strings, and how
//! deep its arrays and objects nest (checked before a recursive parser sees
//! untrusted text).

/// The bytes of `json` outside its strings (quotes included neither), with their
/// offsets.
pub fn outside_strings(json: &[u8]) -> impl Iterator<Item = (usize, u8)> + '_ {
    let (mut in_string, mut escaped) = (false, false);
    json.iter().enumerate().filter_map(move |(i, &b)| {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            None
        } else if b == b'"' {
            in_string = true;
            None
        } else {
            Some((i, b))
        }
    })
}

/// Whether the arrays and objects of `json` nest deeper than `max`.
pub fn nests_deeper(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    outside_strings(json).any(|(_, b)| {
        match b {
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        depth > max
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_skipped_with_their_escapes() {
        let text = br#"{"a":"[{\"]","b":[1]}"#;
        let seen: Vec<u8> = outside_strings(text).map(|(_, b)| b).collect();
        assert_eq!(seen, b"{:,:[1]}");
    }

    #[test]
    fn depth_counts_arrays_and_objects_not_brackets_in_strings() {
        assert!(!nests_deeper(br#"{"aud":["a","b"]}"#, 2));
        assert!(nests_deeper(br#"{"aud":[["a"]]}"#, 2));
        assert!(!nests_deeper(br#"{"x":"[[[[[[["}"#, 1));
        assert!(nests_deeper(&[b'['; 17], 16));
    }
}
