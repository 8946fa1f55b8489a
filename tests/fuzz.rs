//! Fuzz and property targets on the stable toolchain (proptest), one test per target.
//! Each runs its seed corpus (`tests/fuzz/corpus/<target>/`) and then generated
//! inputs for `WEBRTC_SIGNALING_FUZZ_SECS` seconds (2 by default) on a 64 KiB stack;
//! README "Fuzzing" has the long runs.

#[path = "fuzz/harness.rs"]
mod harness;
#[path = "fuzz/http.rs"]
mod http;

use harness::{fuzz, SMALL_STACK};

#[test]
fn fuzz_http() {
    fuzz(
        "http",
        SMALL_STACK,
        http::DICTIONARY,
        http::generate(),
        http::check,
    );
}

#[path = "fuzz/inbound.rs"]
mod inbound;

#[test]
fn fuzz_inbound() {
    fuzz(
        "inbound",
        SMALL_STACK,
        inbound::DICTIONARY,
        inbound::generate(),
        inbound::check,
    );
}

#[path = "fuzz/text.rs"]
mod text;
#[path = "fuzz/tokens.rs"]
mod tokens;

#[test]
fn fuzz_text() {
    fuzz(
        "text",
        SMALL_STACK,
        text::DICTIONARY,
        text::generate(),
        text::check,
    );
}

#[test]
fn fuzz_tokens() {
    fuzz(
        "tokens",
        SMALL_STACK,
        tokens::DICTIONARY,
        tokens::generate(),
        tokens::check,
    );
}

/// Validly signed tokens nested 127 levels deep (in the header, in the claims) are
/// refused as malformed on a 64 KiB stack, before any JSON parser recurses into them
/// (serde_json's own limit is 128 levels, and in a debug build its recursion
/// overflowed this stack before the limit).
#[test]
fn tokens_nested_127_levels_are_refused_on_a_64_kib_stack() {
    let verified = std::thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(|| {
            let v = webrtc_signaling::access::Verifier::new(
                Some(b"fuzz-secret-fuzz-secret-fuzz-secret!"),
                None,
                0,
            )
            .expect("verifier")
            .with_audience(Some("sig.example".into()))
            .with_issuer(Some("https://id.example".into()));
            tokens::seeds()
                .into_iter()
                .map(|(name, t)| (name, v.verify(&String::from_utf8_lossy(&t)).err()))
                .collect::<Vec<_>>()
        })
        .expect("thread")
        .join()
        .expect("no panic, no overflow");
    for (name, result) in verified {
        assert_eq!(
            result,
            Some(webrtc_signaling::access::AuthError::Malformed),
            "{name}"
        );
    }
}

#[path = "fuzz/router.rs"]
mod router;

#[test]
fn fuzz_router() {
    fuzz(
        "router",
        256 * 1024,
        router::DICTIONARY,
        router::generate(),
        router::check,
    );
}

#[path = "fuzz/session.rs"]
mod session;

#[test]
fn fuzz_session() {
    fuzz(
        "session",
        SMALL_STACK,
        session::DICTIONARY,
        session::generate(),
        session::check,
    );
}
