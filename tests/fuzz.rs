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
